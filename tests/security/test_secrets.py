"""Issue 12, items 9-11 and the acceptance line: known secrets (an API key, a URL's user:password,
an OAuth2 client secret and the access tokens it buys, a TLS client key) fed through every failure
kind, by upstreams that quote the credentials back; nothing the plugin writes (protocol lines,
logs, stderr) holds one, and every failure reaches Dify as a typed error, never a traceback."""

from __future__ import annotations

import base64
import threading
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote

import pytest

from tests.protocol.harness import SessionTimeout, user_message
from tests.protocol.plugin_util import PROVIDER, free_url, running_plugin
from tests.security.certs import server_context
from tests.security.echo_upstream import KINDS, upstream
from tests.security.oauth_server import TokenServer
from tests.security.tls_gateway import TLSGateway

API_KEY = "sk-SECRET+key/7f3a9c"  # "+" and "/": its URL-encoded form differs
URL_USER, URL_PASSWORD = "ops", "pw-SECRET/url+90ab"  # typed percent-encoded in the URL
CLIENT_ID, CLIENT_SECRET = "dify-plugin", "cs-SECRET-oauth-51d2e8"
QUICK = {"timeouts": "idle=1 first_token=1.5 connect=2"}
INVOKE_ERRORS = {"InvokeConnectionError", "InvokeServerUnavailableError", "InvokeRateLimitError",
                 "InvokeAuthorizationError", "InvokeBadRequestError", "InvokeError"}


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def url_with_password(base_url: str) -> str:
    return base_url.replace("://", f"://{URL_USER}:{quote(URL_PASSWORD, safe='')}@", 1)


class Upstreams:
    """One echoing upstream per (credential kind, failure kind), an mTLS gateway in front of the
    OAuth2 ones, and the identity provider (which quotes the Authorization header in its errors)."""

    def __init__(self, pki) -> None:
        self.pki = pki
        self.idp = TokenServer(CLIENT_ID, CLIENT_SECRET, echo=True)
        self.servers: list = []
        self.gateways: list = []

    def creds(self, how: str, kind: str) -> dict:
        up = upstream(kind).__enter__()
        self.servers.append(up)
        if how == "api_key":
            return {"endpoint_urls": up.base_url, "api_key": API_KEY, **QUICK}
        if how == "url":
            return {"endpoint_urls": url_with_password(up.base_url), **QUICK}
        gw = TLSGateway(server_context(self.pki.server, client_ca=self.pki.ca), up._server.server_address[1])
        self.gateways.append(gw)
        return self.oauth2(gw.base_url)

    def oauth2(self, endpoint_urls: str, **extra) -> dict:
        return {"endpoint_urls": endpoint_urls, "auth_mode": "oauth2", "oauth2_token_url": self.idp.url,
                "oauth2_client_id": CLIENT_ID, "oauth2_client_secret": CLIENT_SECRET, "tls_mode": "custom",
                "tls_ca_bundle": self.pki.ca.cert, "tls_client_cert": self.pki.client.cert,
                "tls_client_key": self.pki.client.key, **QUICK, **extra}

    def secrets(self) -> list[str]:
        """Every form a secret could leave in: as typed, URL-encoded, and the Basic values."""
        raw = [API_KEY, URL_PASSWORD, CLIENT_SECRET, *self.idp.issued]
        out = {f for s in raw for f in (s, quote(s, safe=""))}
        out |= {b64(f"{URL_USER}:{URL_PASSWORD}"), b64(f"{CLIENT_ID}:{CLIENT_SECRET}")}
        out |= {line for line in self.pki.client.key.splitlines() if "-----" not in line}
        return sorted(out)

    def close(self) -> None:
        for gw in self.gateways:
            gw.close()
        for up in self.servers:
            up.__exit__(None, None, None)
        self.idp.close()


@pytest.fixture(scope="module")
def plugin():
    with running_plugin(DEEPSEEK_HEALTH_INTERVAL="0.5") as p:
        yield p


@pytest.fixture
def ups(pki):
    u = Upstreams(pki)
    try:
        yield u
    finally:
        u.close()


def written_by(plugin, sessions) -> str:
    """Everything the plugin wrote: the sessions' protocol lines, every log, stray output, stderr."""
    lines = [line for r in sessions for line in r.raw_lines]
    lines += [str(x) for x in (*plugin.logs, *plugin.non_json_lines, *plugin.plugin_errors,
                               *plugin.orphan_messages, *plugin.unknown_events)]
    return "\n".join(lines) + plugin.stderr_text


PIECE = 8  # a secret cut short (a clip, a library's shortened repr) leaks its head or tail


def leaked(text: str, secrets: list[str]) -> list[str]:
    """The secrets found whole or as a head or tail of PIECE characters or more, each shown as its
    first characters and the text just before it (where it leaked)."""
    found = []
    for s in secrets:
        for piece in {s, *(s[:k] for k in range(PIECE, len(s))), *(s[-k:] for k in range(PIECE, len(s)))}:
            if piece in text:
                at = text.index(piece)
                found.append(f"{s[:4]}... as {len(piece)} chars, after {text[max(0, at - 160):at]!r}")
                break
    return found


def assert_typed(result, allowed=INVOKE_ERRORS) -> None:
    err = result.error
    assert err is not None and err["error_type"] in allowed, err
    assert "Traceback" not in err["message"], err["message"]


# -- item 9: the log ---------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["api_key", "url", "oauth2"])
def test_an_in_band_error_quoting_the_credential_is_logged_scrubbed(plugin, ups, how):
    """The client logs the server's words when it continues a stream cut by an in-band error:
    they quote the Authorization header here, and the WARNING line must not."""
    before = len(plugin.logs)
    c = ups.creds(how, "inband-error-after-tokens")
    r = plugin.invoke_llm(PROVIDER, "deepseek-r1", c, [user_message("hi")], {}, timeout=60)
    assert_typed(r)
    logged = "\n".join(str(m["data"]["message"]) for m in plugin.logs[before:])
    assert "broke after" in logged  # the WARNING that quoted the server
    assert leaked(logged + r.error["message"], ups.secrets()) == []


# -- item 10: whatever raised it ---------------------------------------------------------------
@pytest.mark.parametrize("kind", ["finish-reason-dict", "usage-strings", "tool-call-echo",
                                  "non-streamed-malformed", "choices-string", "delta-string"])
@pytest.mark.parametrize("how", ["api_key", "url", "oauth2"])
def test_a_malformed_answer_quoting_the_credential_is_a_typed_scrubbed_error(plugin, ups, how, kind):
    before = len(plugin.logs)
    c = ups.creds(how, kind)
    for stream in (True, False):
        r = plugin.invoke_llm(PROVIDER, "deepseek-r1", c, [user_message("hi")], {}, stream=stream, timeout=60)
        if kind == "usage-strings":  # counts that cannot be true are dropped, counted offline
            assert r.error is None, r.error
            assert leaked(str(r.raw_lines), ups.secrets()) == []
            continue
        assert_typed(r)
        assert leaked(r.error["message"] + str(r.error["args"]), ups.secrets()) == []
        if r.error["message"].startswith("unexpected failure"):  # the last line of defence answered:
            logged = [str(m["data"]["message"]) for m in plugin.logs[before:]]  # and said what it caught
            assert any("unexpected" in m and "Error" in m for m in logged), logged
    assert leaked(written_by(plugin, []), ups.secrets()) == []


# -- item 11: credentials that cannot work fail validation, with what to fix --------------------
BAD_KEY = "sk-SECRET-bad-☃-1e2f"


@pytest.mark.parametrize("creds,needle", [
    ({"endpoint_urls": f"http://ops:{quote(URL_PASSWORD, safe='')}@☃.invalid:8000/v1"}, "not a valid host name"),
    ({"endpoint_urls": "http://xn--zz--.invalid/v1"}, "not a valid host name"),
    ({"endpoint_urls": f"http://ops:{quote(URL_PASSWORD, safe='')}@[::1:8000/v1"}, "is not a valid URL"),
    ({"endpoint_urls": f"http://ops:{quote(URL_PASSWORD, safe='')}@gpu\x07-1:8000/v1"}, "control character"),
    ({"endpoint_urls": "http://127.0.0.1:9/v1", "api_key": BAD_KEY}, "cannot be sent in an HTTP header"),
    ({"endpoint_urls": "http://127.0.0.1:9/v1", "auth_mode": "oauth2", "oauth2_token_url": "http://☃.invalid/t",
      "oauth2_client_id": CLIENT_ID, "oauth2_client_secret": CLIENT_SECRET}, "oauth2_token_url"),
    ({"endpoint_urls": "http://127.0.0.1:9/v1", "auth_mode": "oauth2", "oauth2_token_url": "http://127.0.0.1:9/t",
      "oauth2_client_id": CLIENT_ID, "oauth2_client_secret": CLIENT_SECRET + "☃"}, "oauth2_client_secret"),
])
def test_credentials_that_cannot_be_sent_fail_validation_with_a_message(plugin, creds, needle):
    secrets = [URL_PASSWORD, quote(URL_PASSWORD, safe=""), BAD_KEY, CLIENT_SECRET]
    for res in (plugin.validate_provider_credentials(PROVIDER, creds, timeout=30),
                plugin.validate_model_credentials(PROVIDER, "deepseek-r1", creds, timeout=30)):
        assert_typed(res, {"CredentialsValidateFailedError"})
        assert needle in res.error["message"] and leaked(str(res.error), secrets) == []
    r = plugin.invoke_llm(PROVIDER, "deepseek-r1", creds, [user_message("hi")], {}, timeout=30)
    assert_typed(r, {"InvokeBadRequestError"})
    assert needle in r.error["message"] and leaked(str(r.error), secrets) == []


# -- acceptance: every failure kind, every secret, everything written ----------------------------
def test_no_known_secret_in_anything_the_plugin_writes_under_every_failure_kind(ups):
    with running_plugin(DEEPSEEK_HEALTH_INTERVAL="0.5") as p:
        jobs = []  # (what, session thunk)
        for how in ("api_key", "url", "oauth2"):
            for kind in KINDS:
                c = ups.creds(how, kind)
                jobs.append((f"{how}/{kind}/validate", lambda c=c: p.validate_provider_credentials(PROVIDER, c)))
                jobs.append((f"{how}/{kind}/schema", lambda c=c: p.get_ai_model_schemas(PROVIDER, "my-model", c)))
                for stream in (True, False):
                    jobs.append((f"{how}/{kind}/invoke", lambda c=c, s=stream: p.invoke_llm(
                        PROVIDER, "deepseek-r1", c, [user_message("hi")], {}, stream=s)))
            refused = ups.creds(how, "http-500")
            refused["endpoint_urls"] = (url_with_password(free_url()) if how == "url" else
                                        free_url().replace("http://", "https://") if how == "oauth2" else free_url())
            jobs.append((f"{how}/refused", lambda c=refused: p.invoke_llm(PROVIDER, "deepseek-r1", c,
                                                                          [user_message("hi")], {})))
        bad = [ups.oauth2(ups.creds("api_key", "http-500")["endpoint_urls"], oauth2_client_secret=CLIENT_SECRET + "-x"),
               {"endpoint_urls": f"http://ops:{quote(URL_PASSWORD, safe='')}@[::1:8000/v1", **QUICK},
               {"endpoint_urls": f"http://ops:{quote(URL_PASSWORD, safe='')}@☃.invalid/v1", **QUICK},
               {"endpoint_urls": free_url(), "api_key": API_KEY + "☃", **QUICK},
               {"endpoint_urls": free_url(), "api_key": "\x01" + API_KEY, **QUICK}]
        for i, c in enumerate(bad):
            jobs.append((f"bad/{i}/validate", lambda c=c: p.validate_provider_credentials(PROVIDER, c)))
            jobs.append((f"bad/{i}/invoke",
                         lambda c=c: p.invoke_llm(PROVIDER, "deepseek-r1", c, [user_message("hi")], {})))
        lock = threading.Lock()
        results = []

        hung = []

        def run(job):
            what, thunk = job
            try:
                r = thunk()
            except SessionTimeout:
                hung.append(what)
                return
            with lock:
                results.append((what, r))

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(run, jobs))
        assert hung == []
        for what, r in results:
            assert r.ended, what
            if r.error is not None:
                allowed = {"CredentialsValidateFailedError"} if what.endswith("validate") else INVOKE_ERRORS
                assert r.error["error_type"] in allowed and "Traceback" not in r.error["message"], (what, r.error)
        # a successful validation answers the daemon with the credentials it validated (the
        # protocol): those lines are the daemon's own data, not something the plugin let slip
        sessions = [r for what, r in results if not (what.endswith("validate") and r.error is None)]
        assert len(ups.idp.issued) >= 1 and len(results) == len(jobs)
        written = written_by(p, sessions)
        assert len(written) > 50_000  # the scan saw real traffic, errors and logs
        assert leaked(written, ups.secrets() + [API_KEY + "☃", b64(f"{CLIENT_ID}:{CLIENT_SECRET}-x")]) == []
