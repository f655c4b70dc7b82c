"""An opened stream's deltas, relayed to the caller; the endpoint judged when the stream ends.

What the attempt read before the caller saw anything comes first, then each further event, due
within ``idle`` seconds (never past the request's deadline). A stream that ends well counts for
its endpoint; a stall or a cut counts against it (a replica that breaks every stream part-way must
be ejected, not counted healthy at each first token). The response closes however the relay ends,
also when the caller stops reading early: the server then stops generating.
"""

from __future__ import annotations

from collections.abc import Iterator

from .attempt import Opened
from .errors import EngineError, StreamBrokenError, TotalTimeout
from .events import DONE, Readiness
from .failures import count_failure
from .health import HealthBook
from .protocol import ChatDelta
from .routing import Router
from .transport import idle_budget, set_read_budget

__all__ = ["relay"]


def relay(opened: Opened, deadline: float, ready: Readiness, idle: float, health: HealthBook, scope: str,
          router: Router) -> Iterator[ChatDelta]:
    ep = opened.endpoint
    try:
        yield from _deltas(opened, deadline, ready, idle)
    except EngineError as e:
        if not isinstance(e, TotalTimeout):  # a stall or a cut: the endpoint's doing
            count_failure(health, scope, ep, e)
        raise
    else:
        health.success(ep.url)
    finally:
        router.finished(ep.url)
        if opened.resp is not None:
            opened.resp.close()  # also when the caller stops early: the server stops generating


def _deltas(opened: Opened, deadline: float, ready: Readiness, idle: float) -> Iterator[ChatDelta]:
    events, pre, words = opened.events, opened.pre, opened.words
    finished = False
    last = len(pre) - 1
    for i, item in enumerate(pre):
        if item is DONE:
            return
        finished = finished or item.finish_reason is not None
        ready.more_ready = i < last or ready.pending > 0
        yield item
    words.started = True
    with words:  # one conversion for the whole loop: nothing per token
        while True:
            set_read_budget(idle_budget(idle, deadline))
            try:
                item = next(events, None)
            finally:
                set_read_budget(None)
            if item is None:
                if finished:
                    return  # no [DONE] (transformers serve), but the answer was complete
                raise StreamBrokenError("the stream ended before the answer was complete "
                                        "(the server closed it without a finish reason)",
                                        endpoint=opened.endpoint.name)
            if item is DONE:
                return
            finished = finished or item.finish_reason is not None
            yield item
