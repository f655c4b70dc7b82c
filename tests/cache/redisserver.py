"""Real redis-server processes for the cache tier, each on its own loopback port and directory, and
a mute Redis: a socket that accepts and never answers (a Redis hanging)."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from pathlib import Path

__all__ = ["Mute", "RedisServer"]

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """``redis-server`` on 127.0.0.1:``port``; ``kill()`` it (SIGKILL, as a crash) and ``start()``
    it again on the same port. ``tls``: (certificate, key) PEM files: TLS only, on that port."""

    def __init__(self, binary: str, port: int | None = None, password: str | None = None,
                 tls: tuple[str, str] | None = None) -> None:
        self.binary = binary
        self.port = port or _free_port()
        self.password = password
        self.tls = tls
        self.dir = tempfile.mkdtemp(prefix="dshc-redis-")
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"{'rediss' if self.tls else 'redis'}://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        ports = ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", self.tls[0], "--tls-key-file",
                 self.tls[1], "--tls-auth-clients", "no"] if self.tls else ["--port", str(self.port)]
        args = [self.binary, *ports, "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", self.dir, "--maxmemory", "64mb",
                "--maxmemory-policy", "allkeys-lru"]
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited: {self.proc.stderr.read().decode()[:500]}")
            try:
                if self.command("PING") == b"+PONG\r\n" or b"NOAUTH" in self.command("PING"):
                    return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not answer PING within 10 s")

    def command(self, *words: str) -> bytes:
        """One inline command over a plain socket (no client library), its raw reply."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as plain:
            s = plain
            if self.tls:  # the helper only talks to its own server: no verification needed
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
                s = ctx.wrap_socket(plain)
            if self.password:
                s.sendall(f"AUTH {self.password}\r\n".encode())
                s.recv(64)
            s.sendall(" ".join(words).encode() + b"\r\n")
            return s.recv(1 << 20)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def close(self) -> None:
        self.kill()
        if self.proc and self.proc.stderr:
            self.proc.stderr.close()


class Mute:
    """Accepts every connection and never answers: each command waits for its deadline."""

    def __init__(self) -> None:
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.accepted: list[socket.socket] = []
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.accepted.append(conn)  # held open, never read from nor written to

    def close(self) -> None:
        self._stop = True
        self._listener.close()
        for c in self.accepted:
            c.close()

    def __enter__(self) -> Mute:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
