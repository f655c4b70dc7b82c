"""TLS, mutual TLS and OAuth2 over real loopback sockets, each failure typed and actionable."""

import threading
import time

import pytest

from deepseek_engine import AnswerAssembler, ChatClient, build_body, parse_settings
from deepseek_engine.errors import AuthError, ConfigError, ConnectError, UnreachableError
from deepseek_engine.health import HealthBook
from deepseek_engine.retry import RetryPolicy
from deepseek_engine.transport import ClientRegistry
from deepseek_engine.validation import validate_endpoints
from deepseek_sim import SimConfig, Simulator
from tests.security.certs import issue, make_ca, server_context
from tests.security.oauth_server import TokenServer
from tests.security.tls_gateway import TLSGateway

WANT_END = "How can I help you today?"
BODY = build_body("deepseek-r1", [{"role": "user", "content": "hi"}], {})


def client(url, **creds):
    s = parse_settings({"endpoint_urls": url, **creds})
    return ChatClient(s, registry=ClientRegistry(), health=HealthBook(), prober=None,
                      policy=RetryPolicy(attempts=1))


def answer(c) -> str:
    a = AnswerAssembler(True)
    text = "".join(p.text for p in (a.feed(d) for d in c.stream(BODY)) if p)
    return text + a.finish().text


def custom(**kw):
    return {"tls_mode": "custom", **kw}


@pytest.fixture
def https_sim(pki):
    with Simulator(SimConfig(served_model="deepseek-r1"), ssl_context=server_context(pki.server)) as s:
        yield s


@pytest.fixture
def mtls_sim(pki):
    """An mTLS gateway (client certificate required) in front of a plain simulator."""
    with Simulator(SimConfig(served_model="deepseek-r1")) as s:
        gw = TLSGateway(server_context(pki.server, client_ca=pki.ca), s.port)
        try:
            yield gw
        finally:
            gw.close()


def test_https_with_the_custom_ca(https_sim, pki):
    assert answer(client(https_sim.base_url, **custom(tls_ca_bundle=pki.ca.cert))).endswith(WANT_END)


def test_pem_pasted_on_one_line_still_works(https_sim, pki):
    one_line = pki.ca.cert.replace("\n", " ")
    assert answer(client(https_sim.base_url, **custom(tls_ca_bundle=one_line))).endswith(WANT_END)


def test_system_cas_do_not_trust_a_private_ca(https_sim):
    with pytest.raises(UnreachableError, match="certificate is not trusted: set tls_ca_bundle"):
        answer(client(https_sim.base_url))


def test_wrong_ca(https_sim, pki):
    with pytest.raises(UnreachableError, match="tls_ca_bundle"):
        answer(client(https_sim.base_url, **custom(tls_ca_bundle=pki.rogue_ca.cert)))


def test_expired_server_certificate(pki):
    with Simulator(SimConfig(served_model="deepseek-r1"), ssl_context=server_context(pki.expired_server)) as s:
        with pytest.raises(UnreachableError, match="expired"):
            answer(client(s.base_url, **custom(tls_ca_bundle=pki.ca.cert)))


def test_verification_off_is_explicit_and_works(https_sim):
    assert answer(client(https_sim.base_url, **custom(tls_verify="false"))).endswith(WANT_END)


def test_mutual_tls(mtls_sim, pki):
    c = client(mtls_sim.base_url, **custom(tls_ca_bundle=pki.ca.cert, tls_client_cert=pki.client.cert,
                                           tls_client_key=pki.client.key))
    assert answer(c).endswith(WANT_END)


@pytest.mark.parametrize("who", ["none", "rogue"])
def test_server_rejects_the_client_certificate(mtls_sim, pki, who):
    extra = {} if who == "none" else dict(tls_client_cert=pki.rogue_client.cert, tls_client_key=pki.rogue_client.key)
    with pytest.raises(AuthError, match="rejected this client's TLS certificate"):
        answer(client(mtls_sim.base_url, **custom(tls_ca_bundle=pki.ca.cert, **extra)))


def _damaged(pem: str) -> str:
    lines = pem.splitlines()
    lines[2] = lines[2][:10] + "!!!!" + lines[2][14:]
    return "\n".join(lines)


@pytest.mark.parametrize("creds,needle", [
    (lambda p: dict(tls_ca_bundle="not a pem"), "tls_ca_bundle is not a PEM"),
    (lambda p: dict(tls_ca_bundle=_damaged(p.ca.cert)), "could not be read"),
    (lambda p: dict(tls_client_cert=p.client.cert), "tls_client_key is empty"),
    (lambda p: dict(tls_client_cert=p.client.cert, tls_client_key="garbage"), "not a PEM private key"),
    (lambda p: dict(tls_client_cert=p.client.cert, tls_client_key=p.rogue_client.key),
     "does not belong to tls_client_cert"),
])
def test_bad_tls_material_is_a_clear_config_error(pki, creds, needle):
    given = creds(pki)
    with pytest.raises(ConfigError, match=needle) as e:
        client("https://127.0.0.1:1/v1", **custom(**given))
    key = given.get("tls_client_key", "")
    material = [line for line in key.splitlines() if line.strip() and "-----" not in line]
    assert material or not key  # each case that passes a key is checked against its own lines
    assert [m for m in material if m in str(e.value)] == []  # no key material in messages


# -- OAuth2 client credentials ---------------------------------------------------------------
def oauth(sim, token_server, **extra):
    return {"auth_mode": "oauth2", "oauth2_token_url": token_server.url, "oauth2_client_id": "dify",
            "oauth2_client_secret": "s3cr3t-client", "oauth2_scope": "inference", **extra}


@pytest.fixture
def sim_and_idp():
    with Simulator(SimConfig(served_model="deepseek-r1", api_key="nothing-yet")) as sim:
        idp = TokenServer("dify", "s3cr3t-client", on_token=lambda t: setattr(sim.config, "api_key", t))
        try:
            yield sim, idp
        finally:
            idp.close()


def test_token_fetched_once_and_shared_by_concurrent_requests(sim_and_idp):
    sim, idp = sim_and_idp
    c = client(sim.base_url, **oauth(sim, idp))
    out = []
    threads = [threading.Thread(target=lambda: out.append(answer(c))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(out) == 8 and all(o.endswith(WANT_END) for o in out)
    assert len(idp.issued) == 1  # one fetch, not a stampede
    assert idp.requests[0]["form"]["scope"] == "inference"
    assert all(r.headers["authorization"] == f"Bearer {idp.issued[0]}" for r in sim.requests)


def test_expiring_tokens_are_renewed_before_expiry(sim_and_idp):
    sim, idp = sim_and_idp
    idp.expires_in = 2  # renewed once less than half its life is left
    c = client(sim.base_url, **oauth(sim, idp))
    answer(c)
    time.sleep(1.2)
    answer(c)
    assert len(idp.issued) == 2


def test_revoked_token_is_refreshed_once_on_401(sim_and_idp):
    sim, idp = sim_and_idp
    c = client(sim.base_url, **oauth(sim, idp))
    answer(c)
    sim.config.api_key = "revoked-by-the-gateway"
    assert answer(c).endswith(WANT_END)  # 401 → a fresh token → accepted
    assert len(idp.issued) == 2


def test_concurrent_401s_refetch_the_token_once(sim_and_idp):
    sim, idp = sim_and_idp
    c = client(sim.base_url, **oauth(sim, idp))
    answer(c)
    sim.config.api_key = "revoked-by-the-gateway"
    # a slow token endpoint: every request refused for the old token arrives while it answers
    idp.on_token = lambda t: (setattr(sim.config, "api_key", t), time.sleep(0.3))
    out, gate = [], threading.Barrier(8)

    def one():
        gate.wait()
        out.append(answer(c))

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(out) == 8 and all(o.endswith(WANT_END) for o in out)
    assert len(idp.issued) == 2  # the first token and exactly one refetch


def test_validation_passes_after_the_token_is_rotated(sim_and_idp):
    sim, idp = sim_and_idp
    settings = parse_settings({"endpoint_urls": sim.base_url, **oauth(sim, idp)})
    assert validate_endpoints(settings, wanted=None, catalogue=None)[0].id == "deepseek-r1"
    sim.config.api_key = "rotated-at-the-idp"  # the gateway no longer takes the cached token
    assert validate_endpoints(settings, wanted=None, catalogue=None)[0].id == "deepseek-r1"
    assert len(idp.issued) == 2  # GET /v1/models refused it once, then one refetch


def test_revoked_client_is_an_authorization_error(sim_and_idp):
    sim, idp = sim_and_idp
    idp.revoked = True
    with pytest.raises(AuthError, match="token endpoint refused the client \\(invalid_client") as e:
        answer(client(sim.base_url, **oauth(sim, idp)))
    assert "s3cr3t-client" not in str(e.value)


def test_oauth2_settings_validated():
    with pytest.raises(ConfigError, match="oauth2_token_url is empty"):
        parse_settings({"endpoint_urls": "http://a:1/v1", "auth_mode": "oauth2"})
    with pytest.raises(ConfigError, match="oauth2_client_secret is empty"):
        parse_settings({"endpoint_urls": "http://a:1/v1", "auth_mode": "oauth2",
                        "oauth2_token_url": "https://idp/token", "oauth2_client_id": "x"})


# -- OAuth2 over HTTPS: the token endpoint is trusted like the endpoints (docs/operators.md) ---
@pytest.fixture
def mtls_sim_and_https_idp(pki):
    """An mTLS gateway in front of a simulator that takes only the issued token, and a token
    endpoint over HTTPS with the test PKI's server certificate (the CA in tls_ca_bundle)."""
    with Simulator(SimConfig(served_model="deepseek-r1", api_key="nothing-yet")) as sim:
        gw = TLSGateway(server_context(pki.server, client_ca=pki.ca), sim.port)
        idp = TokenServer("dify", "s3cr3t-client", ssl_context=server_context(pki.server),
                          on_token=lambda t: setattr(sim.config, "api_key", t))
        try:
            yield sim, gw, idp
        finally:
            idp.close()
            gw.close()


def test_oauth2_token_endpoint_over_https_with_the_custom_ca(mtls_sim_and_https_idp, pki):
    sim, gw, idp = mtls_sim_and_https_idp
    assert idp.url.startswith("https://")
    c = client(gw.base_url, **oauth(sim, idp), **custom(tls_ca_bundle=pki.ca.cert,
                                                      tls_client_cert=pki.client.cert,
                                                      tls_client_key=pki.client.key))
    assert answer(c).endswith(WANT_END)
    assert len(idp.issued) == 1 and idp.handshake_failures == 0
    chats = [r for r in sim.requests if r.path.endswith("/chat/completions")]
    assert chats and all(r.headers["authorization"] == f"Bearer {idp.issued[0]}" for r in chats)


def _fetch_from_an_untrusted_token_endpoint(pki):
    """The endpoint is trusted (its CA is in tls_ca_bundle, mTLS gateway); the token endpoint's
    certificate comes from another CA. Returns (what answer() raised, token server, simulator)."""
    _, other_cert, other_key = make_ca("Other IdP CA")
    with Simulator(SimConfig(served_model="deepseek-r1", api_key="nothing-yet")) as sim:
        gw = TLSGateway(server_context(pki.server, client_ca=pki.ca), sim.port)
        idp = TokenServer("dify", "s3cr3t-client",
                          ssl_context=server_context(issue(other_cert, other_key, "127.0.0.1", server=True)))
        try:
            c = client(gw.base_url, **oauth(sim, idp), **custom(tls_ca_bundle=pki.ca.cert,
                                                              tls_client_cert=pki.client.cert,
                                                              tls_client_key=pki.client.key))
            with pytest.raises(Exception) as e:
                answer(c)
        finally:
            idp.close()
            gw.close()
    return e.value, idp, sim


def test_token_endpoint_outside_the_ca_bundle_fails_before_any_request(pki):
    err, idp, sim = _fetch_from_an_untrusted_token_endpoint(pki)
    assert idp.issued == [] and not idp.requests  # refused at the TLS handshake: nothing sent
    assert not [r for r in sim.requests if r.path.endswith("/chat/completions")]
    assert "s3cr3t-client" not in str(err) and "s3cr3t-client" not in repr(err)


def test_token_endpoint_outside_the_ca_bundle_is_a_typed_actionable_error(pki):
    err, idp, _ = _fetch_from_an_untrusted_token_endpoint(pki)
    assert isinstance(err, ConnectError), f"{type(err).__module__}.{type(err).__name__}: {err}"
    where = idp.url.split("://", 1)[1]  # display_url: scheme (and any credentials) dropped
    assert err.endpoint == where and where in str(err)
    assert "token endpoint" in str(err)
    assert "tls_ca_bundle" in str(err) and "certificate" in str(err)  # what is wrong, what to set
