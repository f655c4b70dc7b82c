"""A blackholed endpoint on loopback: connections to it time out instead of failing fast.

A listening socket that never accepts, its accept queue filled: Linux then drops further SYNs
(``tcp_abort_on_overflow`` is 0 by default), so a client's connect hangs until its own connect
timeout, as with a host that died or a firewall that drops packets. Checked by ``check()``.
"""

from __future__ import annotations

import socket
import time

__all__ = ["Blackhole"]


class Blackhole:
    def __init__(self, port: int = 0) -> None:
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", port))
        self._listener.listen(0)
        self.port = self._listener.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._fill: list[socket.socket] = []
        for _ in range(4):  # more than the queue holds: the rest wait in SYN retries
            s = socket.socket()
            s.setblocking(False)
            try:
                s.connect(("127.0.0.1", self.port))
            except BlockingIOError:
                pass
            self._fill.append(s)
        time.sleep(0.05)

    def check(self, timeout: float = 0.2) -> None:
        """Fail loudly when this machine answers the SYN anyway (the tests' premise)."""
        with socket.socket() as s:
            s.settimeout(timeout)
            try:
                s.connect(("127.0.0.1", self.port))
            except TimeoutError:
                return
            except OSError as e:
                raise AssertionError(f"a blackholed connect failed fast instead: {e}") from None
            raise AssertionError("a blackholed connect was accepted")

    def close(self) -> None:
        for s in self._fill:
            s.close()
        self._listener.close()

    def __enter__(self) -> Blackhole:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
