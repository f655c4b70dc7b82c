import re

import pytest

from deepseek_engine.errors import ConfigError
from deepseek_engine.settings import parse_endpoints, parse_settings


def test_endpoint_list_syntax():
    eps = parse_endpoints("http://gpu-1:8000/v1, http://gpu-2:8000/v1/\nhttps://gw.example/ds/v1;http://gpu-3:8000")
    assert [e.url for e in eps] == ["http://gpu-1:8000/v1", "http://gpu-2:8000/v1",
                                    "https://gw.example/ds/v1", "http://gpu-3:8000/v1"]
    assert eps[0].root == "http://gpu-1:8000" and eps[0].name == "gpu-1:8000/v1"


def test_duplicates_collapse():
    assert len(parse_endpoints("http://a:1/v1 http://a:1/v1/")) == 1


@pytest.mark.parametrize("raw,needle", [
    ("", "endpoint_urls is empty"),
    ("gpu-1:8000", "has no scheme: write it as http://gpu-1:8000/v1"),
    ("ftp://gpu-1/v1", "scheme must be http or https"),
    ("http://gpu-1:99999/v1", "invalid port"),
    ("http://gpu-1:8000/v1?x=1", "query string"),
])
def test_bad_endpoints_say_what_to_do(raw, needle):
    with pytest.raises(ConfigError, match=needle.replace("?", r"\?")):
        parse_endpoints(raw)


def test_userinfo_never_in_names():
    (ep,) = parse_endpoints("http://user:s3cret@gpu-1:8000/v1")
    assert "s3cret" not in ep.name and "s3cret" not in ep.root


def test_settings_fields():
    s = parse_settings({"endpoint_urls": "http://a:1/v1", "api_key": "  k  ", "served_model_name": "",
                        "timeouts": "idle=5", "context_size": "4096"})
    assert s.api_key == "k" and s.served_model_name is None
    assert s.timeouts.idle == 5.0 and s.timeouts.first_token == 300.0 and s.context_size == 4096
    assert "sekrit" not in repr(parse_settings({"endpoint_urls": "http://a:1/v1", "api_key": "sekrit"}))


@pytest.mark.parametrize("creds,needle", [
    ({"timeouts": "idle=soon"}, "idle must be a number of seconds"),
    ({"timeouts": "idle=0"}, "idle must be between"),
    ({"timeouts": "stall=3"}, "is not one of connect=, first_token="),
    ({"served_model_name": "a b"}, "must not contain spaces"),
    ({"api_key": "a\nb"}, "line break"),
])
def test_bad_values(creds, needle):
    with pytest.raises(ConfigError, match=needle):
        parse_settings({"endpoint_urls": "http://a:1/v1", **creds})


def test_endpoint_options():
    eps = parse_endpoints("http://a:1/v1 weight=2 zone=eu-1\nhttp://b:1/v1 priority=1 zone=us, http://c:1/v1")
    assert [(e.weight, e.zone, e.priority) for e in eps] == [(2.0, "eu-1", 0), (1.0, "us", 1), (1.0, "", 0)]


@pytest.mark.parametrize("raw,needle", [
    ("weight=2 http://a:1/v1", "put options after the URL"),
    ("http://a:1/v1 weight=0", "weight must be a number above 0"),
    ("http://a:1/v1 priority=x", "priority must be 0"),
    ("http://a:1/v1 colour=red", "unknown option 'colour'"),
    ("http://a:1/v1 zone=a/b", "zone must be a short name"),
])
def test_bad_endpoint_options(raw, needle):
    with pytest.raises(ConfigError, match=needle):
        parse_endpoints(raw)


SECRET = "pw-SECRET-9f2c"


@pytest.mark.parametrize("raw,needle", [
    (f"ops:{SECRET}@gpu-1:8000", "has no scheme: write it as http://gpu-1:8000/v1"),
    (f"ops:{SECRET}@gpu-1:8000/v1/", "has no scheme: write it as http://gpu-1:8000/v1"),
    (f"http://a:1/v1, ops:{SECRET}@gpu-2", "entry 2 ('gpu-2') has no scheme"),
    (f"ftp://ops:{SECRET}@gpu-1/v1", "scheme must be http or https"),
])
def test_endpoint_errors_never_echo_a_password(raw, needle):
    with pytest.raises(ConfigError, match=re.escape(needle)) as e:
        parse_endpoints(raw)
    assert SECRET not in str(e.value)


@pytest.mark.parametrize("url", [
    f"ops:{SECRET}@idp.example.com/oauth2/token",  # no scheme
    f"https://ops:{SECRET}@",  # no host: nothing left to show but the password
    f"ftp://ops:{SECRET}@idp.example.com/token",
])
def test_token_url_errors_never_echo_a_password(url):
    creds = {"endpoint_urls": "http://a:1/v1", "auth_mode": "oauth2", "oauth2_token_url": url,
             "oauth2_client_id": "dify", "oauth2_client_secret": "x" * 8}
    with pytest.raises(ConfigError, match="oauth2_token_url must be an http\\(s\\) URL") as e:
        parse_settings(creds)
    assert SECRET not in str(e.value)
