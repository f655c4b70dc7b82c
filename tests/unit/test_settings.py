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
    assert not s.vision  # off unless the operator says the served model takes images
    assert parse_settings({"endpoint_urls": "http://a:1/v1", "vision_support": "support"}).vision
    assert not parse_settings({"endpoint_urls": "http://a:1/v1", "vision_support": "no_support"}).vision


@pytest.mark.parametrize("creds,needle", [
    ({"timeouts": "idle=soon"}, "idle must be a number of seconds"),
    ({"timeouts": "idle=0"}, "idle must be between"),
    ({"timeouts": "stall=3"}, "is not one of connect=, first_token="),
    ({"served_model_name": "a b"}, "must not contain spaces"),
    ({"api_key": "a\nb"}, "line break"),
    ({"vision_support": "yes"}, "vision_support must be support or no_support"),
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
# URLs that pass urllib and then fail inside httpx or urllib at every request (an untyped
# exception): refused at parse, with what to fix
UNSENDABLE = [
    ("http://☃.invalid/v1", "'☃.invalid' is not a valid host name"),
    ("http://xn--zz--.invalid/v1", "'xn--zz--.invalid' is not a valid host name"),
    (f"http://ops:{SECRET}@[::1:8000/v1", "is not a valid URL"),
    (f"http://ops:{SECRET}@gpu\x07-1:8000/v1", "control character (U+0007)"),
    (f"http://ops:{SECRET}@gpu-1:8000/v1\x01", "control character (U+0001)"),
    (f"http://ops:{SECRET}\x7f@gpu-1:8000/v1", "control character (U+007F)"),
    (f"http://ops:{SECRET}@gpu-1:8000/v\x9f", "control character (U+009F)"),
]


@pytest.mark.parametrize("raw,needle", [
    (f"ops:{SECRET}@gpu-1:8000", "has no scheme: write it as http://gpu-1:8000/v1"),
    (f"ops:{SECRET}@gpu-1:8000/v1/", "has no scheme: write it as http://gpu-1:8000/v1"),
    (f"http://a:1/v1, ops:{SECRET}@gpu-2", "entry 2 ('gpu-2') has no scheme"),
    (f"ftp://ops:{SECRET}@gpu-1/v1", "scheme must be http or https"),
    *UNSENDABLE,
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


@pytest.mark.parametrize("raw,needle", UNSENDABLE)
def test_a_token_url_the_transport_cannot_send_fails_at_parse(raw, needle):
    with pytest.raises(ConfigError, match=re.escape(needle)) as e:
        parse_settings({"endpoint_urls": "http://a:1/v1", "auth_mode": "oauth2", "oauth2_token_url": raw,
                        "oauth2_client_id": "dify", "oauth2_client_secret": "x" * 8})
    assert SECRET not in str(e.value) and "oauth2_token_url" in str(e.value)


@pytest.mark.parametrize("raw", [
    "http://☃.invalid/v1", "http://xn--zz--.invalid/v1", "http://[::1:8000/v1", "http://gpu\x07-1/v1",
    "http://ü.example/v1", "http://[::1]:8000/v1", "http://a_b.local/v1", "http://gpu-1:8000/vé",
    "http://ops:pä@gpu-1/v1", "http://-bad.example/v1", "http://" + "x" * 70 + ".example/v1",
    "https://xn--tda.example:443/ds/v1", "http://10.0.0.1/v1", "http://exa%20mple/v1",
])
def test_what_parses_is_what_the_transport_sends(raw):
    """One rule for URLs: either parsing refuses it with a message, or httpx builds the request."""
    import httpx

    try:
        eps = parse_endpoints(raw)
    except ConfigError:
        return
    for ep in eps:
        for url in (ep.url + "/chat/completions", ep.root + "/health"):
            assert httpx.Request("POST", url).url.host


KEY = "sk-SECRET-5e1a"


@pytest.mark.parametrize("key,needle", [
    (KEY + "☃", "cannot be sent in an HTTP header"),  # not Latin-1
    (KEY + "é", "cannot be sent in an HTTP header"),  # Latin-1, still not what httpx sends
    (KEY + "\x01", "cannot be sent in an HTTP header"),
    (KEY + "\nx", "cannot be sent in an HTTP header"),
])
def test_an_api_key_that_cannot_be_a_header_fails_at_parse(key, needle):
    with pytest.raises(ConfigError, match=needle) as e:
        parse_settings({"endpoint_urls": "http://a:1/v1", "api_key": key})
    assert KEY not in str(e.value) and "api_key" in str(e.value)


@pytest.mark.parametrize("field,value,needle", [
    ("oauth2_client_secret", KEY + "☃", "oauth2_client_secret contains a character"),
    ("oauth2_client_secret", KEY + "\x00", "oauth2_client_secret contains a character"),
    ("oauth2_client_id", "dify☃", "oauth2_client_id contains a character"),
    ("oauth2_client_id", "dify:plugin", "oauth2_client_id must not contain ':'"),
])
def test_oauth2_client_fields_that_cannot_be_sent_fail_at_parse(field, value, needle):
    creds = {"endpoint_urls": "http://a:1/v1", "auth_mode": "oauth2", "oauth2_token_url": "https://idp/token",
             "oauth2_client_id": "dify", "oauth2_client_secret": "x" * 8, field: value}
    with pytest.raises(ConfigError, match=re.escape(needle)) as e:
        parse_settings(creds)
    assert KEY not in str(e.value)


def test_display_url_survives_what_urlsplit_refuses():
    from deepseek_engine.settings import display_url

    assert display_url(f"http://ops:{SECRET}@[::1:8000/v1?x=1") == "[::1:8000/v1"
    assert display_url(f"ops:{SECRET}@[::1") == "[::1"


def test_credential_secrets_cover_every_form_a_secret_is_sent_in():
    """What a request's secret scope holds, read from the raw credentials (so it also covers
    credentials that do not parse): each secret as typed and decoded, and the Basic values the
    plugin sends for a URL's user:password and for an OAuth2 client (scrub adds URL-encoding)."""
    import base64

    from deepseek_engine.settings import credential_secrets

    creds = {"endpoint_urls": "http://ops:p%2Fw-SECRET@gpu-1/v1, http://[::1:8000/v1 http://gpu-2/v1",
             "api_key": " sk-SECRET-key ", "oauth2_client_id": "dify", "oauth2_client_secret": "cs+SECRET",
             "tls_client_key": "-----BEGIN PRIVATE KEY-----\nMIIkeybody\n-----END PRIVATE KEY-----"}
    got = credential_secrets(creds)
    for s in ("p%2Fw-SECRET", "p/w-SECRET", base64.b64encode(b"ops:p/w-SECRET").decode(), "sk-SECRET-key",
              "cs+SECRET", base64.b64encode(b"dify:cs+SECRET").decode(), "MIIkeybody"):
        assert s in got, s
    assert all(len(s) >= 4 and "-----" not in s for s in got)  # the key's armor is no secret
    assert credential_secrets({"endpoint_urls": 7, "api_key": None}) == frozenset()


@pytest.mark.parametrize("raw,expected", [(None, None), ("", None), ("  ", None), ("power_of_two", "power_of_two"),
                                          (" round_robin ", "round_robin"),
                                          ("prefix_affinity", "prefix_affinity")])
def test_routing_policy_field(raw, expected):
    creds = {"endpoint_urls": "http://a:1/v1"} if raw is None else {"endpoint_urls": "http://a:1/v1",
                                                                    "routing_policy": raw}
    assert parse_settings(creds).routing_policy == expected  # None: the router's default


@pytest.mark.parametrize("raw", ["least_conn", "Round_Robin", "random"])
def test_routing_policy_names_the_choices(raw):
    with pytest.raises(ConfigError, match=f"^routing_policy must be one of power_of_two, round_robin, prefix_affinity, "
                                          f"got '{raw}'$"):
        parse_settings({"endpoint_urls": "http://a:1/v1", "routing_policy": raw})


def test_routing_policy_is_no_part_of_the_credential_identity():
    """The scope names who is asking (health, retry budget); the policy only orders requests."""
    one, two = (parse_settings({"endpoint_urls": "http://a:1/v1", "api_key": "k", "routing_policy": p})
                for p in ("power_of_two", "round_robin"))
    assert one.scope == two.scope and one.routing_policy != two.routing_policy
