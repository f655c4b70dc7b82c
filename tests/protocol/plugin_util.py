"""What every protocol-tier test needs: this plugin started as the daemon starts it, free ports,
and which of the requests a server recorded was made for an invoke."""

from __future__ import annotations

import json
import socket
from contextlib import contextmanager
from pathlib import Path

from tests.protocol.harness import PluginProcess

ROOT = Path(__file__).resolve().parents[2]
PROVIDER = "deepseek_selfhosted"


@contextmanager
def running_plugin(**env: str):
    p = PluginProcess(ROOT, env=env or None).start(ready_timeout=60)
    try:
        yield p
    finally:
        p.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_url(password: str | None = None) -> str:
    """A base URL nobody listens on (a refused endpoint); optionally with user:password."""
    auth = f"ops:{password}@" if password else ""
    return f"http://{auth}127.0.0.1:{free_port()}/v1"


def request_id(headers) -> str:
    """The ``X-Request-Id`` among ``headers``, whatever their case: the simulator and Loopback
    record lower-case names, the real tier's relay records them as sent."""
    return next((v for k, v in headers.items() if k.lower() == "x-request-id"), "")


def is_warm_up(body) -> bool:
    """One of the plugin's own one-token completions ("hi" or "ping", max_tokens 1): an endpoint's
    background warm-up, validation's ping, and the request-path runs after a provider is
    validated (these go through the adapter, so they carry an ``X-Request-Id`` as well)."""
    if isinstance(body, (bytes, str)):  # the simulator parses bodies; Loopback and the relay do not
        try:
            body = json.loads(body)
        except ValueError:
            return False
    return (isinstance(body, dict) and body.get("max_tokens") == 1
            and [m.get("content") for m in body.get("messages") or []] in (["hi"], ["ping"]))


def is_invoke(r) -> bool:
    """Whether a recorded request (simulator, Loopback or the real tier's relay) is a chat
    completion made for a Dify invoke: made through the plugin's adapter, so it carries its
    ``X-Request-Id`` (``dify-...``), and not a warm-up. Health probes, ``/metrics`` scrapes and
    ``/v1/models`` discovery arrive in any order relative to it."""
    return (r.path.endswith("/chat/completions") and request_id(r.headers).startswith("dify-")
            and not is_warm_up(r.body))


def invokes(requests: list, since: int = 0) -> list:
    """The chat completions made for Dify invokes among a server's recorded ``requests[since:]``."""
    return [r for r in requests[since:] if is_invoke(r)]


def last_invoke(requests: list):
    """The last chat completion made for a Dify invoke among a server's recorded ``requests``."""
    made = invokes(requests)
    if not made:
        raise LookupError(f"no invoke among {[(r.method, r.path) for r in requests]}")
    return made[-1]
