"""Chat completions over a set of endpoints: one pooled client, typed errors, bounded waits.

``ChatClient.stream`` always streams (blocking callers aggregate), so the idle deadline protects
every call. A request is retried only while it has produced no output: the attempt that opens a
stream reads up to the first token before the caller sees anything.

The layers, outermost first, each named for its job (as httpx's ``send`` → ``_send_handling_auth``
→ ``_send_handling_redirects`` → ``_send_single_request``):

- ``ChatClient.stream`` (here): one request, continued on a cut after its first tokens (``resume.py``);
- ``failover.Failover``: the first endpoint that takes the request (retries, token refresh, max_tokens fit);
- ``attempt.Opener``: one POST to one endpoint, opened up to its first token;
- ``relay.relay``: the opened stream's deltas to the caller, the endpoint judged at its end;
- ``events.chat_events``: network reads to deltas (``sse.py``, ``protocol.py``);
- ``transport``: the pool, read deadlines, the one conversion of httpx's errors (``Words``), and
  every use of a dependency's internals; ``failures``: the words each failure ends with.

``listing.py`` serves the small JSON GETs (``get_json``, ``list_models``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import httpx

from .attempt import Opener
from .auth import Auth, NoAuth, StaticBearer, oauth2_source
from .errors import EngineError
from .failover import Failover
from .failures import all_failed, count_failure
from .headers import request_headers
from .health import HEALTH, HealthBook
from .listing import first_listing, get_json
from .probe import PROBER, Prober
from .protocol import ChatDelta
from .relay import relay
from .resume import (
    Progress,
    StartedOver,
    budget_spent,
    continuation_body,
    continuation_timeouts,
    continue_on,
    relabel,
    unless_started_over,
)
from .retry import RetryPolicy
from .routing import ROUTER, Prefix, Router
from .settings import Endpoint, Settings
from .telemetry import TELEMETRY
from .tls import build_context
from .transport import CLIENTS, ClientRegistry, sender, ssl_context_of

__all__ = ["ChatClient", "DEFAULT_POLICY", "all_failed", "make_auth"]

DEFAULT_POLICY = RetryPolicy()
log = logging.getLogger(__name__)


def make_auth(settings: Settings, client: httpx.Client) -> Auth:
    if settings.oauth2 is not None:
        o = settings.oauth2
        return oauth2_source(o.token_url, o.client_id, o.client_secret, o.scope, o.audience,
                             ssl_context_of(client), settings.tls.key)  # same trust as the endpoints
    if settings.api_key:
        return StaticBearer(settings.api_key)
    return NoAuth()


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
        self.http = registry.get(tls.key, lambda: build_context(tls))  # the pooled httpx.Client
        if prober is not None:
            prober.watch(settings.endpoints, self.http)
        self.auth = make_auth(settings, self.http)
        self.last_endpoint: Endpoint | None = None  # the endpoint that answered the last stream
        # True while the delta just yielded is followed by more that has already arrived (same
        # network read, h11's receive buffer or the socket): a caller may merge them into one
        # chunk without holding any token back for the network (events.Readiness)
        self.more_ready = False
        self.pending = 0  # deltas of the current network read not yielded yet
        # False once the last stream was continued, cut or ended early: not an answer to keep (answer_cache/)
        self.unbroken = True
        self._failover = Failover(settings.endpoints, health, self.scope, self.policy, self.auth)

    def headers(self) -> dict[str, str]:
        """The headers a request sends now, its credential's included (may fetch an OAuth2 token:
        its failures name the token endpoint, not a GPU endpoint)."""
        return request_headers(self.auth)

    # -- small JSON GETs (/models, /health, ...): listing.py ------------------------------
    def get_json(self, endpoint: Endpoint, url: str, timeout: float = 10.0) -> object:
        """A small JSON answer (``/models``, ...), ended by ``timeout`` seconds as a whole (connect,
        send and every read, a token refresh's second try included) and read to a few MiB."""
        return get_json(self.http, self.auth, endpoint, url, timeout, self.settings.timeouts.connect)

    def list_models(self, deadline: float | None = None) -> tuple[Endpoint, list[dict]]:
        """``/v1/models`` of the first endpoint that answers; each call ended as a whole by
        ``first_token`` (30 s at most), and the whole listing by ``deadline`` (monotonic) if given."""
        return first_listing(self.router.order(self.settings.endpoints, self.scope, self.settings.routing_policy),
                             lambda ep, timeout: self.get_json(ep, ep.url + "/models", timeout=timeout),
                             min(30.0, self.settings.timeouts.first_token), deadline, self._record_failure)

    def _record_failure(self, ep: Endpoint, e: EngineError) -> None:
        count_failure(self.health, self.scope, ep, e)

    # -- streamed chat -------------------------------------------------------------------
    def stream(self, body: dict, *, buffered: bool = False, request_id: str | None = None,
               resumable: bool = True) -> Iterator[ChatDelta]:
        """Deltas of one chat completion. ``buffered``: the caller shows nothing until the end
        (blocking mode), so a failure at any point may be retried, not just before the first
        token; the whole answer is read before the first delta is returned. A stream that breaks
        after its first tokens is continued (``resume.py``), on another endpoint when one is up,
        unless not ``resumable`` (a model whose server ignores ``continue_final_message``)."""
        settings = self.settings
        endpoints = settings.endpoints
        self.unbroken = True
        deadline = time.monotonic() + settings.timeouts.total
        prefix = Prefix(body, self.scope)  # hashed only if the credential's policy looks at it
        order = self.router.order(endpoints, self.scope, settings.routing_policy, prefix)
        self.policy.budget.record_request()
        headers = self.headers()
        if request_id:  # vLLM and SGLang log it: one id from Dify's logs to the GPU server's
            headers = {**headers, "X-Request-Id": request_id}
        failover = self._failover
        opener = Opener(sender(self.http), self.router, self, deadline, buffered)
        if self.health.available(order[0].url, self.scope, time.monotonic()):
            opened = failover.open(opener, body, order, headers, settings.timeouts)
        else:
            opened = failover.trial(opener, body, order[0], headers, settings.timeouts)
        self.router.served(opened.endpoint.url, prefix)  # its first token came: it holds the prompt
        idle = settings.timeouts.idle
        if buffered:  # read whole before the caller saw anything: retried from scratch instead
            self.last_endpoint = opened.endpoint
            self.router.reused(opened.endpoint.url, prefix, next(
                (d.usage for d in opened.pre if isinstance(d, ChatDelta) and d.usage), None))
            yield from relay(opened, deadline, self, idle, self.health, self.scope, self.router)
            return
        progress = Progress()
        resumes = 0
        cut: EngineError | None = None  # what broke the last stream
        while True:
            self.last_endpoint = ep = opened.endpoint
            deltas = relay(opened, deadline, self, idle, self.health, self.scope, self.router)
            try:
                for d in deltas if cut is None else unless_started_over(deltas, progress.shown()):
                    if resumes:
                        d = relabel(d, progress)
                    progress.record(d)
                    if d.usage:  # the last delta: how much of the prompt the server had cached
                        self.router.reused(ep.url, prefix if not resumes else None, d.usage)
                    yield d
                else:
                    return
            except StartedOver:
                self.unbroken = False
                log.warning("%s began the answer again instead of continuing it "
                            "(continue_final_message ignored)", ep.name)
            except EngineError as e:
                self.unbroken = False
                if progress.finished:  # only the usage or [DONE] was lost: the answer is whole
                    log.warning("stream from %s broke after its answer was complete: %s", ep.name, e.message)
                    return
                if budget_spent(body, progress):  # cut at its last token: finished, not continued
                    log.warning("stream from %s broke when its max_tokens were used up: %s", ep.name, e.message)
                    yield ChatDelta(finish_reason="length")
                    return
                if not resumable or not self.policy.may_resume(e, resumes):
                    raise
                again = continuation_body(body, progress)
                where = continue_on(e, ep, order)
                if again is None or not where:
                    raise
                TELEMETRY.attempt_failed(ep.name, e, retried=True)
                try:
                    opened = failover.open(opener, again, where, headers, continuation_timeouts(settings.timeouts))
                except EngineError as failed:
                    log.warning("could not continue the stream cut at %s: %s", ep.name, failed.message)
                    raise e from None  # the cut is what the user needs to hear about
                resumes, cut = resumes + 1, e
                log.warning("stream from %s broke after %d tokens (%s); continued on %s",
                            ep.name, progress.tokens, e.message, opened.endpoint.name)
                continue
            finally:
                deltas.close()  # the caller stopped reading: the upstream stream closes now
            raise cut  # what was shown stays, with the cut's error
