"""What every protocol-tier test needs: this plugin started as the daemon starts it, free ports."""

from __future__ import annotations

import socket
from contextlib import contextmanager
from pathlib import Path

from harness import PluginProcess

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
