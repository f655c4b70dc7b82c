"""Chat completions over a set of endpoints: one pooled client, typed errors, bounded waits.

``ChatClient.stream`` always streams (blocking callers aggregate), so the idle deadline protects
every call. A request is retried only while it has produced no output: the attempt that opens a
stream reads up to the first token before the caller sees anything.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator

import httpx

from .auth import Auth, NoAuth, StaticBearer, oauth2_source
from .context import max_tokens_that_fit
from .errors import (AuthError, BadRequestError, ConnectError, EndpointsDownError, EngineError, FirstTokenTimeout,
                     IdleTimeout, ServerError, StreamBrokenError, TimeoutError_, TotalTimeout,
                     UnreachableError, connection_reason, error_from_response, scrub,
                     server_message)
from .health import HEALTH, HealthBook
from .probe import PROBER, Prober
from .routing import ROUTER, Router
from .protocol import ChatDelta, coalesce, parse_chunk, parse_completion
from .resume import (Progress, StartedOver, budget_spent, continuation_body, continuation_timeouts, continue_on,
                     relabel, unless_started_over)
from .retry import RetryPolicy
from .settings import Endpoint, Settings, Timeouts
from .sse import EventTooLarge, SSEDecoder
from .telemetry import TELEMETRY
from .tls import build_context
from .transport import CLIENTS, ClientRegistry, read_budget, readable_now, set_read_budget

__all__ = ["ChatClient", "DEFAULT_POLICY", "all_failed", "make_auth"]

DEFAULT_POLICY = RetryPolicy()
_DONE = object()
log = logging.getLogger(__name__)
_MAX_RESUMES = 2  # continuations of one answer; a third cut is reported
# what to do about a connection failure (EngineError.hint: after the message, kept short)
_CHECK_SERVER = "check that the server is running and the URL and port are right"
_REASON_HINTS = {"host name not found": "check the host name in the URL",
                 "TLS certificate rejected": "check tls_ca_bundle, or the server's certificate"}
_CHECK_LOGS = "check the server's logs if it happens again"
_CHECK_PROXY = "check the server's logs and the read timeout of any proxy in between"
_END_GRACE = 0.01  # seconds a body's end that is arriving may take to be read after [DONE]
_AFTER_DONE = 64 * 1024  # bytes read after [DONE] for the body's end; more is a server going on


def _encode(body: dict) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def _receive_buffer(resp: httpx.Response):  # noqa: ANN202
    """h11's receive buffer under a streamed response (httpx 0.28 / httpcore 1.0), or None."""
    stream = resp.stream
    stream = getattr(stream, "_stream", stream)  # httpx.Client wraps the transport's stream once more
    try:
        return stream._httpcore_stream._stream._connection._h11_state._receive_buffer  # noqa: SLF001
    except AttributeError:
        return None


def _event_buffered(received) -> bool:  # noqa: ANN001
    """Whether h11's receive buffer already holds the end of a further SSE event (or of the body).

    After each HTTP chunk h11 keeps that chunk's trailing CRLF until the next read, so a non-empty
    buffer alone promises nothing: taking it as "more is ready" held every token until the next
    one arrived (found against real vLLM)."""
    data = received._data  # noqa: SLF001 - a bytearray; scanning a few hundred bytes costs < 1 us
    return b"\n\n" in data or b"\r\n\r\n" in data or b"\r\r" in data


def _socket_of(resp: httpx.Response):  # noqa: ANN202
    stream = resp.extensions.get("network_stream")
    try:
        return stream.get_extra_info("socket") if stream is not None else None
    except Exception:  # noqa: BLE001 - only an optimisation hint
        return None


def make_auth(settings: Settings, client: httpx.Client) -> Auth:
    if settings.oauth2 is not None:
        o = settings.oauth2
        verify = client._transport._pool._ssl_context  # noqa: SLF001 - same trust as the endpoints
        return oauth2_source(o.token_url, o.client_id, o.client_secret, o.scope, o.audience,
                             verify, settings.tls.key)
    if settings.api_key:
        return StaticBearer(settings.api_key)
    return NoAuth()


def _connect_error(e: httpx.HTTPError, ep: Endpoint) -> EngineError:
    text = str(e).lower()
    if "alert" in text and any(k in text for k in ("certificate", "unknown ca", "access denied",
                                                    "handshake failure")):
        return AuthError("the server rejected this client's TLS certificate (mutual TLS): check "
                         "tls_client_cert and tls_client_key, and that the server trusts their CA",
                         endpoint=ep.name)
    if "certificate_verify_failed" in text or "certificate verify failed" in text:
        why = "expired" if "expired" in text else "not trusted" if "issuer" in text or "self" in text \
            else "not valid for this host" if "hostname" in text or "ip address" in text else "rejected"
        return UnreachableError(f"the server's TLS certificate is {why}: set tls_ca_bundle to the CA "
                                "that signed it (or fix the server's certificate)", endpoint=ep.name)
    if isinstance(e, httpx.ConnectError):
        reason = connection_reason(e)
        return UnreachableError(f"could not connect: {reason}", endpoint=ep.name,
                                hint=_REASON_HINTS.get(reason, _CHECK_SERVER))
    return ConnectError("the connection closed before the server answered (reset or restarting)",
                        endpoint=ep.name, hint=_CHECK_LOGS)


def _read_text(resp: httpx.Response, ep: Endpoint) -> str:
    """A non-streamed body (an error, or an answer that ignored "stream"), its loss typed."""
    try:
        return resp.read().decode("utf-8", "replace")
    except (httpx.RemoteProtocolError, httpx.ReadError):
        raise StreamBrokenError("the connection was cut off while the server's answer was read",
                                endpoint=ep.name, hint=_CHECK_LOGS) from None


def _sent_credential(headers: dict[str, str]) -> str:
    """The credential of a request's Authorization header (the token after "Bearer ", ...)."""
    return headers.get("Authorization", "").partition(" ")[2]


def _without_credentials(text: str, headers: dict[str, str]) -> str:
    """A server's own words without the credential this request sent: some gateways quote the
    Authorization header back in their error pages (a bare token, not only after "Bearer")."""
    sent = _sent_credential(headers)
    return scrub(text, [sent]) if sent else text


def _connect_timeout(seconds: float, ep: Endpoint) -> UnreachableError:
    return UnreachableError(f"could not connect within {seconds:g}s", endpoint=ep.name,
                            hint="check the URL, and that no firewall drops the connection")


def _idle_budget(idle: float, deadline: float) -> tuple[None, float]:
    """The read budget for the next event of a stream that is answering: ``idle`` seconds from
    now however many reads it takes, never past ``deadline``. Per read, comments (keep-alives)
    or an event's bytes trickled one at a time kept a stalled stream open for ever."""
    return None, min(deadline, time.monotonic() + idle)


def _read_rest(reads: Iterator[bytes], sock) -> None:  # noqa: ANN001
    """The body's end after [DONE], if it is already here: the connection is then reused. Never
    waited for: a server that holds the body open or goes on sending is left as it is, and the
    caller's close drops the connection."""
    seen = 0
    try:
        while seen <= _AFTER_DONE:
            # a socket read only when bytes are waiting (a real poll), and then never a long one
            ready = sock is not None and readable_now(sock)
            with read_budget(None, time.monotonic() + (_END_GRACE if ready else 0.0)):
                raw = next(reads, None)
            if raw is None:
                return
            seen += len(raw)
    except httpx.HTTPError:  # not here yet, or cut: the answer is whole, the connection is closed
        return


class ChatClient:
    def __init__(self, settings: Settings, *, registry: ClientRegistry = CLIENTS,
                 health: HealthBook = HEALTH, policy: RetryPolicy = DEFAULT_POLICY,
                 prober: Prober | None = PROBER, router: Router | None = None) -> None:
        self.settings = settings
        self.registry = registry
        self.health = health
        self.policy = policy
        self.router = router or (ROUTER if health is HEALTH else Router(health))
        tls = settings.tls
        # build_context starts from the system's CA store (not certifi's copy)
        self._client = registry.get(tls.key, lambda: build_context(tls))
        if prober is not None:
            prober.watch(settings.endpoints, self._client)
        # identity: the stream is parsed from the raw body (iter_raw), and a gateway that gzips
        # an event stream also holds tokens back until its compressor flushes
        self._base_headers = {"Accept": "text/event-stream", "Accept-Encoding": "identity",
                              "Content-Type": "application/json"}
        self.auth = make_auth(settings, self._client)
        self.last_endpoint: Endpoint | None = None  # the endpoint that answered the last stream
        # True while the delta just yielded is followed by more that has already arrived (same
        # network read, h11's receive buffer or the socket): a caller may merge them into one
        # chunk without holding any token back for the network. httpx yields one item per HTTP
        # chunk, and vLLM (uvicorn) sends every SSE event as its own HTTP chunk, so merging per
        # ``iter_raw`` item alone never merges anything.
        self.more_ready = False
        self._pending = 0

    @property
    def _headers(self) -> dict[str, str]:
        # may fetch an OAuth2 token: its failures name the token endpoint, not a GPU endpoint
        return {**self._base_headers, **self.auth.headers()}

    def _fresh_headers(self, headers: dict[str, str]) -> dict[str, str] | None:
        """``headers`` with a fresh token after an endpoint refused theirs (revoked, rotated or
        expired early), or None when this auth cannot refresh. Only the refused token is dropped:
        N requests refused at once cause one refetch, not N."""
        if not self.auth.refreshable:
            return None
        self.auth.invalidate(_sent_credential(headers))
        return {**headers, **self.auth.headers()}

    # -- small JSON GETs (/models, /health, ...) -------------------------------------------
    def get_json(self, endpoint: Endpoint, url: str, timeout: float = 10.0) -> object:
        headers = self._headers
        try:
            return self._get_json(endpoint, url, timeout, headers)
        except AuthError:
            fresh = self._fresh_headers(headers)
            if fresh is None:
                raise
            return self._get_json(endpoint, url, timeout, fresh)

    def _get_json(self, endpoint: Endpoint, url: str, timeout: float, headers: dict[str, str]) -> object:
        t = self.settings.timeouts
        try:
            resp = self._client.get(url, headers=headers,
                                    timeout=httpx.Timeout(timeout, connect=t.connect))
        except httpx.ConnectTimeout:
            raise _connect_timeout(t.connect, endpoint) from None
        except httpx.TimeoutException as e:
            raise ConnectError(f"no answer within {timeout:g}s ({connection_reason(e)})",
                               endpoint=endpoint.name) from None
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.ConnectError) as e:
            raise _connect_error(e, endpoint) from None
        except httpx.HTTPError as e:
            raise ConnectError(f"could not connect: {connection_reason(e)}", endpoint=endpoint.name) from None
        if resp.status_code != 200:
            raise error_from_response(resp.status_code, _without_credentials(resp.text, headers), endpoint.name,
                                      resp.headers.get("retry-after"))
        try:
            return resp.json()
        except ValueError:
            raise StreamBrokenError(f"{url.rsplit('/', 1)[-1]} did not answer JSON: "
                                    f"{server_message(resp.text)[:120]}",
                                    endpoint=endpoint.name) from None

    def list_models(self) -> tuple[Endpoint, list[dict]]:
        """``/v1/models`` of the first endpoint that answers."""
        errors: list[EngineError] = []
        for ep in self.router.order(self.settings.endpoints):
            try:
                data = self.get_json(ep, ep.url + "/models", timeout=min(30.0, self.settings.timeouts.first_token))
            except EngineError as e:
                errors.append(e)
                self._record_failure(ep, e)  # discovery is traffic too: a dead host is set aside
                if not e.retryable:
                    raise
                continue
            models = data.get("data") if isinstance(data, dict) else None
            if not isinstance(models, list):
                raise StreamBrokenError("/models did not return an OpenAI model list; is this "
                                        "a vLLM or SGLang endpoint?", endpoint=ep.name)
            return ep, [m for m in models if isinstance(m, dict)]
        raise all_failed(errors)

    def _record_failure(self, ep: Endpoint, e: EngineError) -> None:
        if e.retryable:  # the endpoint's fault, not the request's
            self.health.failure(ep.url, str(e.message)[:200], severe=isinstance(e, UnreachableError))

    # -- streamed chat -------------------------------------------------------------------
    def stream(self, body: dict, *, buffered: bool = False,
               request_id: str | None = None) -> Iterator[ChatDelta]:
        """Deltas of one chat completion. ``buffered``: the caller shows nothing until the end
        (blocking mode), so a failure at any point may be retried, not just before the first
        token; the whole answer is read before the first delta is returned. A stream that breaks
        after its first tokens is continued (``resume.py``), on another endpoint when one is up."""
        settings = self.settings
        endpoints = settings.endpoints
        if self.health.all_down(endpoints):
            raise EndpointsDownError(self._down_message(endpoints),
                                     hint="check that the servers are running and reachable")
        deadline = time.monotonic() + settings.timeouts.total
        order = self.router.order(endpoints)
        self.policy.budget.record_request()
        headers = self._headers
        if request_id:  # vLLM and SGLang log it: one id from Dify's logs to the GPU server's
            headers = {**headers, "X-Request-Id": request_id}
        opened = self._start(body, order, deadline, buffered, headers, settings.timeouts)
        if buffered:  # read whole before the caller saw anything: retried from scratch instead
            self.last_endpoint = opened[0]
            yield from self._relay(*opened, deadline)
            return
        progress = Progress()
        resumes = 0
        cut: EngineError | None = None  # what broke the last stream
        while True:
            self.last_endpoint = ep = opened[0]
            relay = self._relay(*opened, deadline)
            try:
                for d in relay if cut is None else unless_started_over(relay, progress.shown()):
                    if resumes:
                        d = relabel(d, progress)
                    progress.record(d)
                    yield d
                else:
                    return
            except StartedOver:
                log.warning("%s began the answer again instead of continuing it "
                            "(continue_final_message ignored)", ep.name)
            except EngineError as e:
                if progress.finished:  # only the usage or [DONE] was lost: the answer is whole
                    log.warning("stream from %s broke after its answer was complete: %s", ep.name, e.message)
                    return
                if budget_spent(body, progress):  # cut at its last token: finished, not continued
                    log.warning("stream from %s broke when its max_tokens were used up: %s", ep.name, e.message)
                    yield ChatDelta(finish_reason="length")
                    return
                if not e.retryable or isinstance(e, TotalTimeout) or resumes >= _MAX_RESUMES:
                    raise
                again = continuation_body(body, progress)
                where = continue_on(e, ep, order)
                if again is None or not where:
                    raise
                TELEMETRY.attempt_failed(ep.name, e, retried=True)
                try:
                    opened = self._start(again, where, deadline, False, headers,
                                         continuation_timeouts(settings.timeouts))
                except EngineError as failed:
                    log.warning("could not continue the stream cut at %s: %s", ep.name, failed.message)
                    raise e from None  # the cut is what the user needs to hear about
                resumes, cut = resumes + 1, e
                log.warning("stream from %s broke after %d tokens (%s); continued on %s",
                            ep.name, progress.tokens, e.message, opened[0].name)
                continue
            finally:
                relay.close()  # the caller stopped reading: the upstream stream closes now
            raise cut  # what was shown stays, with the cut's error

    def _start(self, body: dict, order: list[Endpoint], deadline: float, buffered: bool,
               headers: dict[str, str], timeouts: Timeouts):
        """Open ``body``'s stream at the first endpoint that takes it (retries, failover,
        one token refresh, one ``max_tokens`` fit)."""
        payload = _encode(body)
        errors: list[EngineError] = []
        tried: list[Endpoint] = []
        refreshed = fitted = False

        def attempt():  # noqa: ANN202 - one try, at the next endpoint
            nonlocal headers, refreshed, payload, fitted
            ep = self._next(order, tried)
            if ep is None:  # every endpoint failed and is cooling down: stop here
                raise all_failed(errors, final=True)
            tried.append(ep)
            try:
                while True:  # the request as asked, then corrected once for each reason below
                    try:
                        return self._open(ep, payload, deadline, buffered, headers, timeouts)
                    except AuthError:
                        fresh = None if refreshed else self._fresh_headers(headers)
                        if fresh is None:
                            raise
                        refreshed, headers = True, fresh  # once per request, not per endpoint
                    except BadRequestError as e:
                        fit = None if fitted else max_tokens_that_fit(e.message, body.get("max_tokens"))
                        if fit is None:
                            raise
                        log.info("max_tokens %s lowered to %s to fit the context window of %s",
                                 body.get("max_tokens"), fit, ep.name)
                        fitted = True  # once per request: every endpoint gets the request that fits
                        payload = _encode({**body, "max_tokens": fit})
            except EngineError as e:
                errors.append(e)
                TELEMETRY.attempt_failed(ep.name, e, retried=e.retryable)
                self._record_failure(ep, e)
                raise

        try:
            return self.policy.call(attempt, lambda: self._untried(order, tried), deadline)
        except EngineError as e:
            if e.retryable and len({x.endpoint for x in errors}) > 1:
                raise all_failed(errors) from None
            raise

    def _untried(self, order: list[Endpoint], tried: list[Endpoint]) -> bool:
        """Whether an available endpoint this request has not tried remains: retry at once then."""
        now = time.monotonic()
        return any(e not in tried and self.health.state(e.url).available(now) for e in order)

    def _next(self, order: list[Endpoint], tried: list[Endpoint]) -> Endpoint | None:
        """An untried available endpoint, else a tried one that is still available (a 429 or
        503 on a lone endpoint deserves a second look after backoff), else none."""
        now = time.monotonic()
        up = [e for e in order if self.health.state(e.url).available(now)]
        for e in up:
            if e not in tried:
                return e
        if not tried:
            return order[0]  # all cooling down, but this request was let through: try one
        return up[0] if up else None

    def _open(self, ep: Endpoint, payload: bytes, deadline: float, buffered: bool,
              headers: dict[str, str], t: Timeouts):
        first = min(time.monotonic() + t.first_token, deadline)
        # Straight to the pool's transport: the client's cookie, redirect, auth and event-hook
        # layers do nothing here (no proxies either: trust_env is off) and cost about a tenth of a
        # short request (bench/run's profile). Client.get still serves the small JSON GETs.
        if ep.basic is not None:  # what httpx.Client does with a URL's user:password, and GETs still do
            headers = {**headers, "Authorization": f"Basic {ep.basic}"}
        request = httpx.Request("POST", ep.url + "/chat/completions", content=payload, headers=headers,
                                extensions={"timeout": {"connect": t.connect, "read": t.first_token,
                                                        "write": t.connect, "pool": t.connect}})
        set_read_budget((None, first))
        self.router.started(ep.url)
        began = time.monotonic()
        try:
            try:
                resp = self._client._transport.handle_request(request)  # noqa: SLF001
            except httpx.ConnectTimeout:
                raise _connect_timeout(t.connect, ep) from None
            except httpx.ReadTimeout:
                raise self._timeout(t, deadline, ep, started=False) from None
            except (httpx.RemoteProtocolError, httpx.ReadError, httpx.ConnectError) as e:
                raise _connect_error(e, ep) from None
            except httpx.HTTPError as e:
                raise ConnectError(f"could not send the request: {connection_reason(e)}",
                                   endpoint=ep.name) from None
            try:
                if resp.status_code != 200:
                    body = _without_credentials(_read_text(resp, ep), headers)
                    raise error_from_response(resp.status_code, body, ep.name,
                                              resp.headers.get("retry-after"))
                ctype = resp.headers.get("content-type", "")
                if "text/event-stream" not in ctype:
                    # a server or gateway that ignored "stream": take the whole answer
                    text = _read_text(resp, ep)
                    try:
                        delta = parse_completion(json.loads(text), ep.name)
                    except ValueError:
                        raise StreamBrokenError(f"expected an event stream, got {ctype or 'no content type'}: "
                                                f"{server_message(text)[:120]}", endpoint=ep.name) from None
                    except RecursionError:
                        raise StreamBrokenError("the server sent a malformed completion: JSON nested "
                                                "too deep", endpoint=ep.name) from None
                    resp.close()
                    self.router.observe_ttft(ep.url, time.monotonic() - began)
                    return ep, None, iter(()), [delta, _DONE]
                events = self._events(resp, ep)
                pre: list = []
                started = finished = False
                while True:
                    set_read_budget(_idle_budget(t.idle, deadline) if started else (None, first))
                    try:
                        item = next(events, None)
                    except httpx.ReadTimeout:
                        raise self._timeout(t, deadline, ep, started=started) from None
                    if item is None:  # the body ended without [DONE]
                        if buffered:
                            if not finished:
                                raise StreamBrokenError("the stream ended before the answer was "
                                                        "complete", endpoint=ep.name)
                            pre.append(_DONE)
                        break
                    pre.append(item)
                    if item is _DONE:
                        break
                    finished = finished or item.finish_reason is not None
                    if item.has_output and not started:
                        started = True
                        self.router.observe_ttft(ep.url, time.monotonic() - began)
                        if not buffered:
                            break  # from here on tokens reach the user: no more retries
                # _relay judges the endpoint when the stream ends (a replica that breaks every
                # stream part-way must be ejected, not counted healthy at each first token)
                return ep, resp, events, pre
            except httpx.ReadTimeout:
                resp.close()
                raise self._timeout(t, deadline, ep, started=False) from None
            except BaseException:
                resp.close()
                raise
        except BaseException:
            self.router.finished(ep.url)
            raise
        finally:
            set_read_budget(None)

    def _relay(self, ep: Endpoint, resp, events, pre: list, deadline: float) -> Iterator[ChatDelta]:
        try:
            yield from self._relay_items(ep, events, pre, deadline)
        except EngineError as e:
            if not isinstance(e, TotalTimeout):  # a stall or a cut: the endpoint's doing
                self._record_failure(ep, e)
            raise
        else:
            self.health.success(ep.url)
        finally:
            self.router.finished(ep.url)
            if resp is not None:
                resp.close()  # also when the caller stops early: the server stops generating

    def _relay_items(self, ep: Endpoint, events, pre: list, deadline: float) -> Iterator[ChatDelta]:
        idle = self.settings.timeouts.idle
        finished = False
        last = len(pre) - 1
        for i, item in enumerate(pre):
            if item is _DONE:
                return
            finished = finished or item.finish_reason is not None
            self.more_ready = i < last or self._pending > 0
            yield item
        while True:
            set_read_budget(_idle_budget(idle, deadline))
            try:
                item = next(events, None)
            except httpx.ReadTimeout:
                raise self._timeout(self.settings.timeouts, deadline, ep, started=True) from None
            finally:
                set_read_budget(None)
            if item is None:
                if finished:
                    return  # no [DONE] (transformers serve), but the answer was complete
                raise StreamBrokenError("the stream ended before the answer was complete "
                                        "(the server closed it without a finish reason)",
                                        endpoint=ep.name)
            if item is _DONE:
                return
            finished = finished or item.finish_reason is not None
            yield item

    def _events(self, resp: httpx.Response, ep: Endpoint) -> Iterator:
        decoder = SSEDecoder()
        # a gateway that compresses despite Accept-Encoding: identity is decoded (slower path)
        encoded = resp.headers.get("content-encoding", "identity").lower() not in ("", "identity")
        reads = resp.iter_bytes() if encoded else resp.iter_raw()
        received = _receive_buffer(resp)
        sock = _socket_of(resp)
        try:
            for raw in reads:
                try:
                    payloads = decoder.feed(raw)
                except EventTooLarge as e:
                    raise StreamBrokenError(f"the server sent {e}: not a chat stream",
                                            endpoint=ep.name) from None
                batch = []
                done = False
                for data in payloads:
                    if data == "[DONE]":
                        done = True
                        break
                    try:
                        batch.append(parse_chunk(json.loads(data), ep.name))
                    except Exception as e:  # noqa: BLE001 - typed below, whatever a payload trips
                        yield from coalesce(batch)  # what came before was fine: deliver it
                        if isinstance(e, EngineError):  # an in-band {"error"}, a malformed shape
                            raise
                        # bad JSON, JSON nested past the recursion limit, ...: the server's fault
                        raise StreamBrokenError(f"the server sent a malformed chunk: {data[:80]!r}",
                                                endpoint=ep.name) from None
                merged = coalesce(batch)  # one delta per network read, not one per token
                last = len(merged) - 1
                for i, delta in enumerate(merged):
                    self._pending = last - i
                    self.more_ready = (i < last or done or (received is not None and _event_buffered(received))
                                       or (sock is not None and readable_now(sock)))
                    yield delta
                if done:  # the end, whatever the server does next
                    _read_rest(reads, sock)
                    yield _DONE
                    return
        except (httpx.RemoteProtocolError, httpx.ReadError):
            raise StreamBrokenError("the connection was cut off mid-stream (server restarted "
                                    "or a proxy dropped it)", endpoint=ep.name,
                                    hint=_CHECK_PROXY) from None

    def _timeout(self, t: Timeouts, deadline: float, ep: Endpoint, *,
                 started: bool) -> TimeoutError_:
        if time.monotonic() >= deadline - 0.01:
            return TotalTimeout(f"the answer took longer than the total timeout ({t.total:g}s)",
                                endpoint=ep.name)
        if not started:
            return FirstTokenTimeout(f"no first token within {t.first_token:g}s (queueing + "
                                     "prefill); the server is overloaded or stuck",
                                     endpoint=ep.name)
        return IdleTimeout(f"the stream stalled: nothing for {t.idle:g}s", endpoint=ep.name,
                           hint="the server is overloaded or stuck (check its logs), or raise "
                                "idle= in timeouts")

    def _down_message(self, endpoints) -> str:
        parts = []
        for e in endpoints:
            h = self.health.state(e.url)
            wait = max(0.0, h.ejected_until - time.monotonic())
            when = "back when its /health answers" if h.probe_down else f"retried in {wait:.0f}s"
            parts.append(f"{e.name} ({h.last_error or 'failing'}; {when})")
        return "all endpoints are down: " + "; ".join(parts)


def all_failed(errors: list[EngineError], final: bool = False) -> EngineError:
    """One error for a request (or a validation) that failed on every endpoint, naming each."""
    if not errors:
        return EndpointsDownError("no endpoint answered")
    if len({e.endpoint for e in errors}) == 1:
        last = errors[-1]
        if final:
            last.retryable = False  # instance-level: stops tenacity, keeps the class
        return last
    seen: dict[str, str] = {}
    for e in errors:
        seen[e.endpoint or "?"] = e.message
    message = "every endpoint failed: " + "; ".join(f"{k}: {v}" for k, v in seen.items())
    kinds = {type(e) for e in errors}
    if all(issubclass(k, ServerError) for k in kinds):
        kinds = {kinds.pop() if len(kinds) == 1 else ServerError}  # 503 and 500: not all unavailable
    if len(kinds) == 1 and not issubclass(cls := kinds.pop(), ConnectError):
        # all rate limited, or all failing the same way: keep the class Dify reacts to
        last = errors[-1]
        out = cls(message, status=last.status, retry_after=last.retry_after)
        out.retryable = False
        return out
    return EndpointsDownError(message)
