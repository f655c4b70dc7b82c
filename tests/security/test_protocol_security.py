"""Through the protocol tier: mTLS + OAuth2 streaming end to end, and a scan of everything the
plugin wrote (stdout protocol lines, logs, stderr) for the secrets it was given."""

from __future__ import annotations

import time

import pytest

from deepseek_sim import SimConfig, Simulator
from tests.fault_cases import CASES, CREDS, WANT
from tests.protocol import chunk_rules as cr
from tests.protocol.harness import user_message
from tests.protocol.plugin_util import PROVIDER, free_url, running_plugin
from tests.security.certs import server_context
from tests.security.oauth_server import TokenServer
from tests.security.tls_gateway import TLSGateway

API_KEY = "sk-SECRET-apikey-7f3a9c"
CLIENT_SECRET = "cs-SECRET-oauth-51d2e8"
URL_PASSWORD = "pw-SECRET-url-90ab"
LIVE_URL_PASSWORD = "pw-SECRET-live-url-3c5e"  # in the URL of an endpoint that answers
WRONG_KEY = "sk-SECRET-wrongkey-e41b"  # the fault matrix's refused key, scanned like the others


@pytest.fixture(scope="module")
def plugin():
    with running_plugin(DEEPSEEK_HEALTH_INTERVAL="0.2") as p:
        yield p


@pytest.fixture
def gateway_idp(pki):
    with Simulator(SimConfig(served_model="deepseek-r1", api_key="none-yet")) as sim:
        gw = TLSGateway(server_context(pki.server, client_ca=pki.ca), sim.port)
        idp = TokenServer("dify-plugin", CLIENT_SECRET, on_token=lambda t: setattr(sim.config, "api_key", t))
        try:
            yield sim, gw, idp
        finally:
            idp.close()
            gw.close()


def mtls_oauth(pki, gw, idp, **extra):
    return {"endpoint_urls": gw.base_url, "served_model_name": None, "auth_mode": "oauth2",
            "oauth2_token_url": idp.url, "oauth2_client_id": "dify-plugin",
            "oauth2_client_secret": CLIENT_SECRET, "tls_mode": "custom", "tls_ca_bundle": pki.ca.cert,
            "tls_client_cert": pki.client.cert, "tls_client_key": pki.client.key, **extra}


def test_mtls_and_oauth2_stream_end_to_end(plugin, pki, gateway_idp):
    sim, gw, idp = gateway_idp
    c = mtls_oauth(pki, gw, idp)
    res = plugin.validate_provider_credentials(PROVIDER, c)
    assert res.error is None, res.error
    result = plugin.invoke_llm(PROVIDER, "deepseek-r1", c, [user_message("hi")], {}, timeout=30)
    assert result.error is None, result.error
    assert cr.check_llm_stream(result) == [] and cr.collect_text(result) == WANT
    assert len(idp.issued) == 1  # validation's token reused by the invocation


def test_no_secret_in_anything_the_plugin_writes(plugin, pki, gateway_idp):
    sim, gw, idp = gateway_idp
    seen: list = []  # every session's raw protocol lines
    logs_before = len(plugin.logs)
    # the fault matrix, with an API key
    for case in CASES:
        with Simulator(SimConfig(served_model="deepseek-r1", **{"api_key": API_KEY, **case.sim})) as s:
            if case.fault:
                s.inject(**case.fault)
            wrong = {"api_key": WRONG_KEY} if "api_key" in case.creds else {}
            c = {"endpoint_urls": free_url(URL_PASSWORD) if case.refused else s.base_url,
                 "api_key": API_KEY, **CREDS, **case.creds, **wrong}
            for stream in (True, False):
                seen.append(plugin.invoke_llm(PROVIDER, "deepseek-r1", c, [user_message(case.prompt)], {},
                                              stream=stream, timeout=30))
    # an endpoint that answers, with user:password in its URL: validation, answers, then failures
    with Simulator(SimConfig(served_model="deepseek-r1")) as s:
        c = {"endpoint_urls": f"http://ops:{LIVE_URL_PASSWORD}@127.0.0.1:{s.port}/v1", **CREDS}
        ok = plugin.validate_provider_credentials(PROVIDER, c, timeout=30)
        assert ok.error is None, ok.error  # not scanned: the SDK answers with the daemon's credentials
        for stream in (True, False):
            seen.append(plugin.invoke_llm(PROVIDER, "deepseek-r1", c, [user_message("hi")], {},
                                          stream=stream, timeout=30))
            assert seen[-1].error is None, seen[-1].error
        s.inject("status", count=20, status=500)
        seen.append(plugin.invoke_llm(PROVIDER, "deepseek-r1", c, [user_message("hi")], {}, timeout=30))
        assert seen[-1].error["error_type"] == "InvokeServerUnavailableError"
    # the auth failures, each with the Dify error an invocation gets (validation: always
    # CredentialsValidateFailedError)
    bad = [
        (mtls_oauth(pki, gw, idp, oauth2_client_secret=CLIENT_SECRET + "-wrong"), "InvokeAuthorizationError"),
        (mtls_oauth(pki, gw, idp, tls_client_cert=pki.rogue_client.cert, tls_client_key=pki.rogue_client.key),
         "InvokeAuthorizationError"),
        (mtls_oauth(pki, gw, idp, tls_client_key=pki.rogue_client.key), "InvokeBadRequestError"),
        (mtls_oauth(pki, gw, idp, tls_client_key="-----BEGIN PRIVATE KEY-----\n" + CLIENT_SECRET),
         "InvokeBadRequestError"),
        ({"endpoint_urls": gw.base_url, "api_key": API_KEY}, "InvokeConnectionError"),  # not trusted
        ({"endpoint_urls": free_url(URL_PASSWORD), "api_key": API_KEY}, "InvokeConnectionError"),
    ]
    for c, invoke_error in bad:
        seen.append(plugin.validate_provider_credentials(PROVIDER, c, timeout=30))
        assert seen[-1].error["error_type"] == "CredentialsValidateFailedError", seen[-1].error
        seen.append(plugin.invoke_llm(PROVIDER, "deepseek-r1", c, [user_message("hi")], {}, timeout=30))
        assert seen[-1].error["error_type"] == invoke_error, seen[-1].error
    idp.revoked = True
    seen.append(plugin.invoke_llm(PROVIDER, "deepseek-r1", mtls_oauth(pki, gw, idp), [user_message("hi")], {},
                                  timeout=30))
    assert seen[-1].error["error_type"] == "InvokeAuthorizationError", seen[-1].error
    time.sleep(0.3)
    written = "\n".join(line for r in seen for line in r.raw_lines)
    written += "\n".join(map(str, plugin.logs[logs_before:] + plugin.non_json_lines + plugin.plugin_errors))
    written += plugin.stderr_text
    secrets = [API_KEY, CLIENT_SECRET, URL_PASSWORD, LIVE_URL_PASSWORD, WRONG_KEY, *idp.issued,
               *[line for line in pki.client.key.splitlines() if "-----" not in line],
               *[line for line in pki.rogue_client.key.splitlines() if "-----" not in line]]
    leaks = [s for s in secrets if s in written]
    assert leaks == [], f"{len(leaks)} secrets leaked"
    assert len(written) > 10_000  # the scan saw real traffic, errors and tracebacks


def test_verification_off_is_a_warning_in_the_plugin_log(plugin, pki):
    """Validation cannot hand a warning to the console: it passes, and the daemon's log says it."""
    with Simulator(SimConfig(served_model="deepseek-r1"), ssl_context=server_context(pki.server)) as sim:
        before = len(plugin.logs)
        c = {"endpoint_urls": sim.base_url, "tls_mode": "custom", "tls_verify": "false"}
        res = plugin.validate_provider_credentials(PROVIDER, c, timeout=30)
    assert res.error is None, res.error
    logged = [m["data"] for m in plugin.logs[before:] if "verification is OFF" in str(m.get("data"))]
    assert [d["level"] for d in logged] == ["WARNING"]
    assert f"127.0.0.1:{sim.port}/v1: insecure, for testing only" in logged[0]["message"]
