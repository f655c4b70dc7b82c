"""Through the protocol tier: mTLS + OAuth2 streaming end to end, and a scan of everything the
plugin wrote (stdout protocol lines, logs, stderr) for the secrets it was given."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "protocol"), str(HERE.parent)]

import chunk_rules as cr  # noqa: E402
from certs import server_context  # noqa: E402
from fault_cases import CASES, CREDS, WANT  # noqa: E402
from harness import user_message  # noqa: E402
from plugin_util import PROVIDER, free_url, running_plugin  # noqa: E402
from oauth_server import TokenServer  # noqa: E402
from tls_gateway import TLSGateway  # noqa: E402

from deepseek_sim import SimConfig, Simulator  # noqa: E402

API_KEY = "sk-SECRET-apikey-7f3a9c"
CLIENT_SECRET = "cs-SECRET-oauth-51d2e8"
URL_PASSWORD = "pw-SECRET-url-90ab"


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
            c = {"endpoint_urls": free_url(URL_PASSWORD) if case.refused else s.base_url,
                 "api_key": API_KEY, **CREDS, **case.creds}
            for stream in (True, False):
                seen.append(plugin.invoke_llm(PROVIDER, "deepseek-r1", c, [user_message(case.prompt)], {},
                                              stream=stream, timeout=30))
    # the auth failures
    bad = [
        mtls_oauth(pki, gw, idp, oauth2_client_secret=CLIENT_SECRET + "-wrong"),
        mtls_oauth(pki, gw, idp, tls_client_cert=pki.rogue_client.cert, tls_client_key=pki.rogue_client.key),
        mtls_oauth(pki, gw, idp, tls_client_key=pki.rogue_client.key),
        mtls_oauth(pki, gw, idp, tls_client_key="-----BEGIN PRIVATE KEY-----\n" + CLIENT_SECRET),
        {"endpoint_urls": gw.base_url, "api_key": API_KEY},  # not trusted
        {"endpoint_urls": free_url(URL_PASSWORD), "api_key": API_KEY},
    ]
    for c in bad:
        seen.append(plugin.validate_provider_credentials(PROVIDER, c, timeout=30))
        r = plugin.invoke_llm(PROVIDER, "deepseek-r1", c, [user_message("hi")], {}, timeout=30)
        assert r.error is not None
        seen.append(r)
    idp.revoked = True
    seen.append(plugin.invoke_llm(PROVIDER, "deepseek-r1", mtls_oauth(pki, gw, idp), [user_message("hi")], {},
                                  timeout=30))
    time.sleep(0.3)
    written = "\n".join(line for r in seen for line in r.raw_lines)
    written += "\n".join(map(str, plugin.logs[logs_before:] + plugin.non_json_lines + plugin.plugin_errors))
    written += plugin.stderr_text
    secrets = [API_KEY, CLIENT_SECRET, URL_PASSWORD, *idp.issued,
               *[line for line in pki.client.key.splitlines() if "-----" not in line],
               *[line for line in pki.rogue_client.key.splitlines() if "-----" not in line]]
    leaks = [s for s in secrets if s in written]
    assert leaks == [], f"{len(leaks)} secrets leaked"
    assert len(written) > 10_000  # the scan saw real traffic, errors and tracebacks
