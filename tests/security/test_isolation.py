"""Two credentials on one URL, sharing what one plugin process shares (the health book, the
router, the prober, the pools, the token cache): what one credential's settings cause stays its
own. (Served-model discovery: tests/protocol/test_isolation.py; a wrong CA:
tests/wire/test_health_wire.py.)"""

import time

import pytest

from deepseek_engine import AnswerAssembler, ChatClient, build_body, parse_settings
from deepseek_engine.errors import AuthError
from deepseek_engine.health import HealthBook
from deepseek_engine.probe import Prober
from deepseek_engine.retry import RetryBudget, RetryPolicy
from deepseek_engine.routing import Router
from deepseek_engine.transport import ClientRegistry
from deepseek_sim import SimConfig, Simulator
from tests.security.certs import server_context
from tests.security.oauth_server import TokenServer
from tests.security.tls_gateway import TLSGateway

WANT_END = "How can I help you today?"
BODY = build_body("deepseek-r1", [{"role": "user", "content": "hi"}], {})


class Process:
    """What the plugin process shares between every workspace's requests."""

    def __init__(self) -> None:
        self.book = HealthBook()
        self.router = Router(self.book)
        self.registry = ClientRegistry()
        self.prober = Prober(self.book, health_interval=0.1, metrics_interval=0, timeout=1.0)

    def client(self, url: str, **creds) -> ChatClient:
        settings = parse_settings({"endpoint_urls": url, "timeouts": "connect=2", **creds})
        return ChatClient(settings, registry=self.registry, health=self.book, router=self.router,
                          prober=self.prober, policy=RetryPolicy(backoff_base=0.01, backoff_cap=0.02,
                                                                 budget=RetryBudget(cap=100)))

    def close(self) -> None:
        self.prober.stop()
        self.registry.close()


@pytest.fixture
def process():
    p = Process()
    yield p
    p.close()


def answer(c: ChatClient) -> str:
    a = AnswerAssembler(True)
    text = "".join(p.text for p in (a.feed(d) for d in c.stream(BODY)) if p)
    return text + a.finish().text


def mtls(pki, pair=None, **extra) -> dict:
    pair = pair or pki.client
    return {"tls_mode": "custom", "tls_ca_bundle": pki.ca.cert, "tls_client_cert": pair.cert,
            "tls_client_key": pair.key, **extra}


@pytest.fixture
def gateway(pki):
    with Simulator(SimConfig(served_model="deepseek-r1")) as sim:
        gw = TLSGateway(server_context(pki.server, client_ca=pki.ca), sim.port)
        try:
            yield gw
        finally:
            gw.close()


def test_a_rogue_client_certificate_explains_itself_every_time_and_costs_others_nothing(process, pki, gateway):
    good = process.client(gateway.base_url, **mtls(pki))
    rogue = process.client(gateway.base_url, **mtls(pki, pki.rogue_client))
    assert answer(good).endswith(WANT_END)
    for _ in range(4):
        with pytest.raises(AuthError, match="rejected this client's TLS certificate"):
            answer(rogue)
        assert answer(good).endswith(WANT_END)
    time.sleep(0.3)  # probe rounds, through the rogue credential's pool (the latest watched)
    assert answer(good).endswith(WANT_END)
    assert process.book.available(gateway.base_url, good.scope, time.monotonic())


def test_a_pooled_connection_is_never_lent_to_another_credential(process, pki, gateway):
    """The gateway checked the first credential's certificate on its connection: a credential
    without one must never be sent over it, however the pool keeps connections alive."""
    good = process.client(gateway.base_url, **mtls(pki))
    bare = process.client(gateway.base_url, tls_mode="custom", tls_ca_bundle=pki.ca.cert)
    for _ in range(3):
        assert answer(good).endswith(WANT_END)
        with pytest.raises(AuthError):
            answer(bare)


def test_one_oauth2_clients_tokens_and_failures_stay_its_own(process):
    with Simulator(SimConfig(served_model="deepseek-r1")) as sim:
        a_idp = TokenServer("team-a", "secret-a-123")
        b_idp = TokenServer("team-b", "secret-b-456")
        try:
            def oauth(idp, cid, secret):
                return process.client(sim.base_url, auth_mode="oauth2", oauth2_token_url=idp.url,
                                      oauth2_client_id=cid, oauth2_client_secret=secret)

            a = oauth(a_idp, "team-a", "secret-a-123")
            b = oauth(b_idp, "team-b", "secret-b-456")
            for c in (a, b, a, b):
                assert answer(c).endswith(WANT_END)
            chats = [r for r in sim.requests if r.path.endswith("/chat/completions")]
            sent = [r.headers["authorization"] for r in chats]
            assert sent == [f"Bearer {t}" for t in (a_idp.issued[0], b_idp.issued[0])] * 2
            a_idp.revoked = True  # team A's client is refused from now on
            a.auth.invalidate(a_idp.issued[0])
            for _ in range(3):
                with pytest.raises(AuthError, match="token endpoint refused"):
                    answer(a)
                assert answer(b).endswith(WANT_END)
            assert process.book.available(sim.base_url, b.scope, time.monotonic())
        finally:
            a_idp.close()
            b_idp.close()
