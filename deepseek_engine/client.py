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
from dataclasses import replace

import httpx

from .auth import Auth, NoAuth, StaticBearer, oauth2_source
from .body import ANSWER_CAP, ERROR_CAP, LISTING_CAP, read_capped, size
from .context import max_tokens_that_fit
from .errors import (AuthError, BadRequestError, ConnectError, EndpointsDownError, EngineError, FirstTokenTimeout,
                     IdleTimeout, RateLimitError, ServerError, StreamBrokenError, TimeoutError_, TotalTimeout,
                     UnreachableError, connection_reason, error_from_response, scrub, server_message)
from .health import HEALTH, HealthBook
from .probe import PROBER, Prober
from .routing import ROUTER, Router
from .protocol import ChatDelta, coalesce, parse_chunk, parse_completion, without_lone_surrogates
from .resume import (Progress, StartedOver, budget_spent, continuation_body, continuation_timeouts, continue_on,
                     relabel, unless_started_over)
from .retry import RetryPolicy
from .settings import Endpoint, Settings, Timeouts
from .sse import EventTooLarge, SSEDecoder
from .telemetry import TELEMETRY
from .tls import build_context
from .transport import CHECK_LOGS, CLIENTS, ClientRegistry, read_budget, readable_now, set_read_budget
from .transport import connect_timeout as _connect_timeout, connection_error as _connect_error

__all__ = ["ChatClient", "DEFAULT_POLICY", "all_failed", "make_auth"]

DEFAULT_POLICY = RetryPolicy()
_DONE = object()
log = logging.getLogger(__name__)
_MAX_RESUMES = 2  # continuations of one answer; a third cut is reported
_TRIAL_CONNECT = 2.0  # seconds to connect to an endpoint tried while set aside (health.begin_trial)
# what to do about a connection failure (EngineError.hint: after the message, kept short)
_CHECK_PROXY = "check the server's logs and the read timeout of any proxy in between"
_END_GRACE = 0.05  # seconds the body's end may take after [DONE] (the end waits that long at most)
_AFTER_DONE = 64 * 1024  # bytes read after [DONE] for the body's end; more is a server going on


def _loads(text: str) -> object:
    obj = json.loads(text)
    return without_lone_surrogates(obj) if "\\ud" in text or "\\uD" in text else obj


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


def _read_text(resp: httpx.Response, ep: Endpoint, cap: int = ERROR_CAP, what: str | None = None) -> str:
    """A non-streamed body, decompressed, its loss typed: an error page's first ``cap`` bytes (its
    message needs no more), or the whole of ``what`` (an answer), refused beyond ``cap``."""
    try:
        body = read_capped(resp, cap)
    except (httpx.RemoteProtocolError, httpx.ReadError):
        raise StreamBrokenError("the connection was cut off while the server's answer was read",
                                endpoint=ep.name, hint=CHECK_LOGS) from None
    except httpx.DecodingError as e:
        raise StreamBrokenError(f"the server's answer is garbled: {e}", endpoint=ep.name) from None
    if what is not None and not body.whole:
        raise StreamBrokenError(f"{what} is larger than {size(cap)}: refused", endpoint=ep.name,
                                hint="check what the server or a proxy in between sends")
    return body.text


def _sent_credential(headers: dict[str, str]) -> str:
    """The credential of a request's Authorization header (the token after "Bearer ", ...)."""
    return headers.get("Authorization", "").partition(" ")[2]


def _without_credentials(text: str, headers: dict[str, str]) -> str:
    """A server's own words without the credential this request sent: some gateways quote the
    Authorization header back in their error pages (a bare token, not only after "Bearer")."""
    sent = _sent_credential(headers)
    return scrub(text, [sent]) if sent else text


def _idle_budget(idle: float, deadline: float) -> tuple[None, float]:
    """The read budget for the next event of a stream that is answering: ``idle`` seconds from
    now however many reads it takes, never past ``deadline``. Per read, comments (keep-alives)
    or an event's bytes trickled one at a time kept a stalled stream open for ever."""
    return None, min(deadline, time.monotonic() + idle)


def _read_rest(reads: Iterator[bytes]) -> None:
    """The body's end after [DONE], when it comes within ``_END_GRACE``: the connection is then
    reused. A server that holds the body open or goes on sending is left as it is, and the
    caller's close drops the connection. (Only what was already in the socket was too little: a
    server's last chunk is often a write of its own, a few ms after [DONE] on a busy host.)"""
    seen = 0
    try:
        with read_budget(None, time.monotonic() + _END_GRACE):
            while seen <= _AFTER_DONE:
                raw = next(reads, None)
                if raw is None:
                    return
                seen += len(raw)
    except httpx.HTTPError:  # not here in time, or cut: the answer is whole, the connection closed
        return


class ChatClient:
    def __init__(self, settings: Settings, *, registry: ClientRegistry = CLIENTS,
                 health: HealthBook = HEALTH, policy: RetryPolicy = DEFAULT_POLICY,
                 prober: Prober | None = PROBER, router: Router | None = None) -> None:
        self.settings = settings
        self.scope = settings.scope
        self.registry = registry
        self.health = health
        self.policy = policy.scoped(settings.scope)
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
        """A small JSON answer (``/models``, ...), ended by ``timeout`` seconds as a whole (connect,
        send and every read, a token refresh's second try included) and read to a few MiB."""
        headers = self._headers
        deadline = time.monotonic() + timeout
        try:
            return self._get_json(endpoint, url, timeout, headers, deadline)
        except AuthError:
            fresh = self._fresh_headers(headers)
            if fresh is None:
                raise
            return self._get_json(endpoint, url, timeout, fresh, deadline)

    def _get_json(self, endpoint: Endpoint, url: str, timeout: float, headers: dict[str, str],
                  deadline: float) -> object:
        t = self.settings.timeouts
        route = "/" + url.rsplit("/", 1)[-1]
        try:
            with read_budget(None, deadline):  # the transport ends every operation by the deadline
                request = self._client.build_request("GET", url, headers=headers,
                                                     timeout=httpx.Timeout(timeout, connect=t.connect))
                resp = self._client.send(request, stream=True)
                if resp.status_code != 200:
                    raise error_from_response(resp.status_code,
                                              _without_credentials(_read_text(resp, endpoint), headers),
                                              endpoint.name, resp.headers.get("retry-after"))
                text = _read_text(resp, endpoint, LISTING_CAP, what=f"the answer of {route}")
        except httpx.ConnectTimeout:
            raise _connect_timeout(min(t.connect, timeout), endpoint) from None
        except httpx.TimeoutException:
            raise ConnectError(f"{route} did not answer within {timeout:.3g}s", endpoint=endpoint.name,
                               hint=CHECK_LOGS) from None
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.ConnectError) as e:
            raise _connect_error(e, endpoint) from None
        except httpx.HTTPError as e:
            raise ConnectError(f"could not connect: {connection_reason(e)}", endpoint=endpoint.name) from None
        try:
            return json.loads(text)
        except (ValueError, RecursionError):  # RecursionError: JSON nested thousands deep
            raise StreamBrokenError(f"{route} did not answer JSON: {server_message(text)[:120]}",
                                    endpoint=endpoint.name) from None

    def list_models(self, deadline: float | None = None) -> tuple[Endpoint, list[dict]]:
        """``/v1/models`` of the first endpoint that answers; each call ended as a whole by
        ``first_token`` (30 s at most), and the whole listing by ``deadline`` (monotonic) if given."""
        errors: list[EngineError] = []
        per_call = min(30.0, self.settings.timeouts.first_token)
        for ep in self.router.order(self.settings.endpoints, self.scope, self.settings.routing_policy):
            timeout = per_call if deadline is None else min(per_call, deadline - time.monotonic())
            if timeout <= 0:
                break  # out of time: the errors so far say why
            try:
                data = self.get_json(ep, ep.url + "/models", timeout=timeout)
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
        if e.retryable:  # the endpoint's fault (or this credential's with it), not the request's
            self.health.failure(ep.url, str(e.message)[:200], severe=isinstance(e, UnreachableError),
                                scope=self.scope if e.credential_fault else None, cause=e)

    # -- streamed chat -------------------------------------------------------------------
    def stream(self, body: dict, *, buffered: bool = False,
               request_id: str | None = None) -> Iterator[ChatDelta]:
        """Deltas of one chat completion. ``buffered``: the caller shows nothing until the end
        (blocking mode), so a failure at any point may be retried, not just before the first
        token; the whole answer is read before the first delta is returned. A stream that breaks
        after its first tokens is continued (``resume.py``), on another endpoint when one is up."""
        settings = self.settings
        endpoints = settings.endpoints
        deadline = time.monotonic() + settings.timeouts.total
        order = self.router.order(endpoints, self.scope, settings.routing_policy)
        self.policy.budget.record_request()
        headers = self._headers
        if request_id:  # vLLM and SGLang log it: one id from Dify's logs to the GPU server's
            headers = {**headers, "X-Request-Id": request_id}
        if self.health.available(order[0].url, self.scope, time.monotonic()):
            opened = self._start(body, order, deadline, buffered, headers, settings.timeouts)
        else:
            opened = self._trial(body, order[0], deadline, buffered, headers)
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

    def _trial(self, body: dict, ep: Endpoint, deadline: float, buffered: bool,
               headers: dict[str, str]):
        """Every endpoint is set aside: try ``ep``, back soonest, once and with a short connect
        deadline, or refuse at once when it was confirmed down moments ago or is being tried."""
        if not self.health.begin_trial(ep.url, self.scope):
            raise self._down_error()
        ok = False
        try:
            t = self.settings.timeouts
            opened = self._start(body, [ep], deadline, buffered, headers,
                                 replace(t, connect=min(t.connect, _TRIAL_CONNECT)), attempts=1)
            ok = True
            return opened
        finally:
            self.health.end_trial(ep.url, self.scope, ok)

    def _start(self, body: dict, order: list[Endpoint], deadline: float, buffered: bool,
               headers: dict[str, str], timeouts: Timeouts, attempts: int | None = None):
        """Open ``body``'s stream at the first endpoint that takes it (retries, failover,
        one token refresh, one ``max_tokens`` fit)."""
        payload = _encode(body)
        errors: list[EngineError] = []
        tried: list[Endpoint] = []
        refreshed = fitted = False

        def attempt():  # noqa: ANN202 - one try, at the next endpoint
            nonlocal headers, refreshed, payload, fitted
            ep = self._next(order, tried, errors)
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

        policy = self.policy if attempts is None else replace(self.policy, attempts=attempts)
        try:
            return policy.call(attempt, lambda: self._untried(order, tried), deadline)
        except EngineError as e:
            if e.retryable and len({x.endpoint for x in errors}) > 1:
                raise all_failed(errors) from None
            raise

    def _untried(self, order: list[Endpoint], tried: list[Endpoint]) -> bool:
        """Whether an available endpoint this request has not tried remains: retry at once then."""
        now = time.monotonic()
        return any(e not in tried and self.health.available(e.url, self.scope, now) for e in order)

    def _next(self, order: list[Endpoint], tried: list[Endpoint],
              errors: list[EngineError]) -> Endpoint | None:
        """An untried available endpoint, else a tried one that is still available and whose
        failure allows another try there (a 429 or 503 on a lone endpoint deserves a second look
        after backoff; a first-token timeout does not), else none."""
        now = time.monotonic()
        up = [e for e in order if self.health.available(e.url, self.scope, now)]
        for e in up:
            if e not in tried:
                return e
        if not tried:
            return order[0]  # all cooling down, but this request was let through: try one
        spent = {x.endpoint for x in errors if not x.retry_here}
        return next((e for e in up if e.name not in spent), None)

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
                    text = _read_text(resp, ep, ANSWER_CAP, what="the non-streamed answer")
                    try:
                        delta = parse_completion(_loads(text), ep.name)
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
                        batch.append(parse_chunk(_loads(data), ep.name))
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
                    _read_rest(reads)
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

    def _down_error(self) -> EngineError:
        """Why every endpoint is set aside, as the error the last failure of each was: a rate
        limit stays a rate limit (with the server's Retry-After), a TLS failure explains itself."""
        errors, parts = [], []
        for e in self.settings.endpoints:
            cause, reason, wait = self.health.why(e.url, self.scope)
            when = f"tried again in {wait:.1f}s" if wait > 0 else "being tried now"
            parts.append(f"{e.name} ({reason}; {when})")
            kind = type(cause) if cause is not None else UnreachableError
            errors.append(kind(f"{reason} (down: {when})", endpoint=e.name, status=getattr(cause, "status", None),
                               retry_after=wait if isinstance(cause, RateLimitError) else None,
                               hint=getattr(cause, "hint", None)))
        out = all_failed(errors, final=True)
        if len(errors) > 1 and isinstance(out, EndpointsDownError):
            out = EndpointsDownError("all endpoints are down: " + "; ".join(parts),
                                     hint="check that the servers are running and reachable")
        return out


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
