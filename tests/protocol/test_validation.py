"""Credential validation over several endpoints, as the daemon runs it: the replicas listed up to
the autoscaler's maximum need not all be there (docs/operators.md, section 3)."""

from __future__ import annotations

import pytest

from deepseek_sim import SimConfig, Simulator
from tests.protocol.plugin_util import PROVIDER, free_url, running_plugin

UNRESOLVABLE = "http://vllm-5.invalid:8000/v1"
KEY = "sk-validation-SECRET-7d1e"


@pytest.fixture(scope="module")
def plugin():
    with running_plugin() as p:
        yield p


def creds(*urls: str, **extra) -> dict:
    return {"endpoint_urls": ", ".join(urls), "api_key": KEY, "served_model_name": None, **extra}


def warnings(plugin, since: int) -> list[str]:
    return [str(m["data"]["message"]) for m in plugin.logs[since:]
            if m.get("data", {}).get("level") == "WARNING"]


@pytest.mark.parametrize("how", ["provider", "model"])
def test_one_live_endpoint_is_enough_and_the_others_are_logged(plugin, how):
    refused = free_url()
    with Simulator(SimConfig(served_model="deepseek-r1", api_key=KEY)) as sim:
        before = len(plugin.logs)
        urls = (UNRESOLVABLE, sim.base_url, refused)
        if how == "provider":
            res = plugin.validate_provider_credentials(PROVIDER, creds(*urls))
        else:
            res = plugin.validate_model_credentials(PROVIDER, "deepseek-r1", creds(*urls))
    assert res.error is None, res.error
    logged = warnings(plugin, before)
    (dns,) = [w for w in logged if "vllm-5.invalid:8000/v1" in w]
    (port,) = [w for w in logged if refused.split("//")[1] in w]
    assert "failed validation" in dns and "host name not found" in dns
    assert "failed validation" in port and "refused" in port
    assert "1 of 3 endpoints answered" in dns
    assert not [w for w in logged if f"127.0.0.1:{sim.port}/v1" in w]  # the live one passed
    assert KEY not in str(plugin.logs[before:])


def test_no_live_endpoint_fails_naming_each(plugin):
    refused = free_url()
    res = plugin.validate_provider_credentials(PROVIDER, creds(UNRESOLVABLE, refused))
    assert res.error["error_type"] == "CredentialsValidateFailedError"
    msg = res.error["message"]
    assert "vllm-5.invalid:8000/v1: could not connect: host name not found" in msg
    assert f"{refused.split('//')[1]}: could not connect: connection refused" in msg


def test_a_refused_key_fails_even_when_another_endpoint_passes(plugin):
    with Simulator(SimConfig(served_model="deepseek-r1", api_key=KEY)) as good, \
            Simulator(SimConfig(served_model="deepseek-r1", api_key="another-key")) as other:
        res = plugin.validate_provider_credentials(PROVIDER, creds(good.base_url, other.base_url))
    assert res.error["error_type"] == "CredentialsValidateFailedError"
    assert f"127.0.0.1:{other.port}/v1" in res.error["message"] and "HTTP 401" in res.error["message"]
    assert KEY not in str(res.raw_lines)
