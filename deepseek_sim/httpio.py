"""Minimal HTTP/1.1 framing over asyncio streams (just what the simulator needs)."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import Any

MAX_BODY = 64 * 1024 * 1024


class BadRequest(Exception):
    """The peer sent something that is not HTTP/1.x; answer 400 and close."""


@dataclass
class Request:
    method: str
    target: str
    path: str
    version: str
    headers: dict[str, str]
    body: bytes

    @property
    def keep_alive(self) -> bool:
        conn = self.headers.get("connection", "").lower()
        if self.version == "HTTP/1.0":
            return "keep-alive" in conn
        return "close" not in conn


async def read_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Request | None:
    """Read one request; None on a clean EOF between requests."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as e:
        if not e.partial.strip():
            return None
        raise BadRequest("truncated request head") from None
    except asyncio.LimitOverrunError:
        raise BadRequest("request head too large") from None
    lines = head.decode("latin-1").lstrip("\r\n").split("\r\n")
    try:
        method, target, version = lines[0].split(" ", 2)
    except ValueError:
        raise BadRequest("bad request line") from None
    if not version.startswith("HTTP/1."):
        raise BadRequest("unsupported protocol")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise BadRequest("bad header line")
        name = name.strip().lower()
        value = value.strip()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value

    if headers.get("expect", "").lower() == "100-continue":
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    body = b""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        parts = []
        size_total = 0
        while True:
            line = await reader.readuntil(b"\r\n")
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise BadRequest("bad chunk size") from None
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                    pass
                break
            size_total += size
            if size_total > MAX_BODY:
                raise BadRequest("body too large")
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
        body = b"".join(parts)
    elif "content-length" in headers:
        try:
            n = int(headers["content-length"])
        except ValueError:
            raise BadRequest("bad content-length") from None
        if n < 0 or n > MAX_BODY:
            raise BadRequest("bad content-length")
        body = await reader.readexactly(n) if n else b""
    return Request(method.upper(), target, target.split("?", 1)[0], version, headers, body)


def response_head(status: int, headers: list[tuple[str, str]], keep_alive: bool) -> bytes:
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    lines = [f"HTTP/1.1 {status} {reason}", "date: " + formatdate(usegmt=True)]
    names = set()
    for k, v in headers:
        names.add(k.lower())
        lines.append(f"{k}: {v}")
    if "server" not in names:
        lines.append("server: deepseek-sim")
    if "connection" not in names:
        lines.append("connection: " + ("keep-alive" if keep_alive else "close"))
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def chunk(data: bytes) -> bytes:
    """One chunked-transfer-encoding frame."""
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"


def reset(writer: asyncio.StreamWriter) -> None:
    """Abort the connection with a TCP RST (SO_LINGER 0), dropping unsent data."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.transport.abort()


def dumps(obj: Any) -> str:
    """JSON as the servers write it: compact and raw UTF-8, like pydantic's model_dump_json in
    vLLM/SGLang."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


async def send(writer: asyncio.StreamWriter, status: int, body: bytes, keep: bool,
               ctype: str = "application/json", extra: list[tuple[str, str]] | None = None) -> bool:
    """One whole response; returns ``keep`` (whether the connection stays open)."""
    headers = [("content-type", ctype), ("content-length", str(len(body)))]
    if extra:
        override = {k.lower() for k, _ in extra}
        headers = [h for h in headers if h[0] not in override] + list(extra)
    writer.write(response_head(status, headers, keep) + body)
    await writer.drain()
    return keep


async def sleep_unless_gone(seconds: float, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Sleep, but give up (ConnectionResetError) as soon as the client goes away.

    Long waits (ttft, stalls) must not keep a cancelled request "running":
    like uvicorn, a client EOF counts as a disconnect.
    """
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while True:
        left = end - loop.time()
        if left <= 0:
            return
        await asyncio.sleep(min(left, 0.05))
        if reader.at_eof() or writer.transport.is_closing():
            raise ConnectionResetError("client went away")
