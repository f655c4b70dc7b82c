"""Small JSON GETs (``/v1/models``, ...), and the model listing of the first endpoint that answers.

Each GET ends by its timeout as a whole (connect, send and every read, a token refresh's second
try included) and reads a few MiB at most (``body.py``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import httpx

from .auth import Auth
from .body import LISTING_CAP, read_text
from .errors import (
    AuthError,
    ConnectError,
    EngineError,
    StreamBrokenError,
    server_message,
)
from .failures import all_failed, status_error
from .headers import refreshed, request_headers
from .settings import Endpoint
from .transport import ANSWER, CHECK_LOGS, Words, read_budget

__all__ = ["get_json", "first_listing"]


class _GetWords(Words):
    __slots__ = ("route", "timeout")

    def __init__(self, endpoint: Endpoint, route: str, timeout: float, connect: float) -> None:
        super().__init__(endpoint.name, min(connect, timeout))
        self.route = route
        self.timeout = timeout

    def timed_out(self, e: httpx.TimeoutException) -> EngineError:  # a read, write or pool timeout
        return ConnectError(f"{self.route} did not answer within {self.timeout:.3g}s", endpoint=self.endpoint,
                            hint=CHECK_LOGS)


def get_json(http: httpx.Client, auth: Auth, endpoint: Endpoint, url: str, timeout: float,
             connect: float) -> object:
    """A small JSON answer (``/models``, ...), ended by ``timeout`` seconds as a whole; ``connect``:
    the connect timeout of the credential's settings. A refused token is refreshed once."""
    headers = request_headers(auth)
    deadline = time.monotonic() + timeout
    try:
        return _get_json(http, endpoint, url, timeout, connect, headers, deadline)
    except AuthError:
        fresh = refreshed(auth, headers)
        if fresh is None:
            raise
        return _get_json(http, endpoint, url, timeout, connect, fresh, deadline)


def _get_json(http: httpx.Client, endpoint: Endpoint, url: str, timeout: float, connect: float,
              headers: dict[str, str], deadline: float) -> object:
    route = "/" + url.rsplit("/", 1)[-1]
    # the transport ends every operation by the deadline
    with read_budget(None, deadline), _GetWords(endpoint, route, timeout, connect) as words:
        request = http.build_request("GET", url, headers=headers, timeout=httpx.Timeout(timeout, connect=connect))
        resp = http.send(request, stream=True)
        words.stage = ANSWER
        if resp.status_code != 200:
            raise status_error(resp, endpoint.name, headers)
        text = read_text(resp, endpoint.name, LISTING_CAP, what=f"the answer of {route}")
    try:
        return json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: JSON nested thousands deep
        raise StreamBrokenError(f"{route} did not answer JSON: {server_message(text)[:120]}",
                                endpoint=endpoint.name) from None


def first_listing(order: list[Endpoint], get: Callable[[Endpoint, float], object], per_call: float,
                  deadline: float | None, failed: Callable[[Endpoint, EngineError], None]
                  ) -> tuple[Endpoint, list[dict]]:
    """``/v1/models`` of the first endpoint in ``order`` that answers (``get(endpoint, timeout)``),
    each call ended by ``per_call`` seconds and the whole listing by ``deadline`` (monotonic) if
    given; ``failed(endpoint, error)`` hears of each failure (discovery is traffic too: a dead
    host is set aside)."""
    errors: list[EngineError] = []
    for ep in order:
        timeout = per_call if deadline is None else min(per_call, deadline - time.monotonic())
        if timeout <= 0:
            break  # out of time: the errors so far say why
        try:
            data = get(ep, timeout)
        except EngineError as e:
            errors.append(e)
            failed(ep, e)
            if not e.retryable:
                raise
            continue
        models = data.get("data") if isinstance(data, dict) else None
        if not isinstance(models, list):
            raise StreamBrokenError("/models did not return an OpenAI model list; is this "
                                    "a vLLM or SGLang endpoint?", endpoint=ep.name)
        return ep, [m for m in models if isinstance(m, dict)]
    raise all_failed(errors)
