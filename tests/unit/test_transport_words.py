"""transport.Words: the one place httpx's exceptions become the engine's typed errors, worded for
what the call was doing (failures.ChatWords for a chat request)."""

import time

import httpx
import pytest

from deepseek_engine.errors import (
    ConnectError,
    FirstTokenTimeout,
    IdleTimeout,
    StreamBrokenError,
    TotalTimeout,
    UnreachableError,
)
from deepseek_engine.failures import ChatWords
from deepseek_engine.settings import Endpoint, Timeouts
from deepseek_engine.transport import ANSWER, STREAM, Words

EP = Endpoint(url="http://gpu-1:8000/v1", name="gpu-1:8000/v1", root="http://gpu-1:8000")
T = Timeouts(connect=3, first_token=30, idle=5, total=600)


def raised(words: Words, exc: Exception) -> Exception:
    with pytest.raises(Exception) as e, words:
        raise exc
    assert e.value.__suppress_context__  # the engine's error alone reaches the user
    return e.value


def chat(stage: str = "sending", started: bool = False, deadline: float | None = None) -> ChatWords:
    w = ChatWords(EP, T, time.monotonic() + 600 if deadline is None else deadline)
    w.stage, w.started = stage, started
    return w


def test_a_cut_is_worded_by_how_far_the_call_got():
    sending = raised(chat(), httpx.ConnectError("[Errno 111] Connection refused"))
    assert isinstance(sending, UnreachableError) and sending.message == "could not connect: connection refused"
    closed = raised(chat(), httpx.RemoteProtocolError("Server disconnected"))
    assert type(closed) is ConnectError and "closed before the server answered" in closed.message
    answer = raised(chat(ANSWER), httpx.ReadError("reset"))
    assert isinstance(answer, StreamBrokenError) and "while the server's answer was read" in answer.message
    stream = raised(chat(STREAM, started=True), httpx.RemoteProtocolError("incomplete chunked read"))
    assert isinstance(stream, StreamBrokenError) and "cut off mid-stream" in stream.message
    assert all(e.endpoint == EP.name for e in (sending, closed, answer, stream))


def test_a_read_timeout_is_the_first_token_s_the_idle_gap_s_or_the_total_s():
    assert isinstance(raised(chat(), httpx.ReadTimeout("t")), FirstTokenTimeout)
    assert isinstance(raised(chat(STREAM), httpx.ReadTimeout("t")), FirstTokenTimeout)
    idle = raised(chat(STREAM, started=True), httpx.ReadTimeout("t"))
    assert isinstance(idle, IdleTimeout) and idle.message == "the stream stalled: nothing for 5s"
    late = raised(chat(STREAM, started=True, deadline=time.monotonic()), httpx.ReadTimeout("t"))
    assert isinstance(late, TotalTimeout) and "total timeout (600s)" in late.message


def test_connect_write_and_pool_timeouts_and_the_rest():
    connect = raised(chat(), httpx.ConnectTimeout("t"))
    assert isinstance(connect, UnreachableError) and connect.message == "could not connect within 3s"
    write = raised(chat(), httpx.WriteTimeout("timed out"))
    assert type(write) is ConnectError and write.message == "could not send the request: timed out"
    assert raised(chat(), httpx.UnsupportedProtocol("x")).message == "could not send the request: x"
    garbled = raised(chat(STREAM, started=True), httpx.DecodingError("bad gzip"))
    assert isinstance(garbled, StreamBrokenError) and garbled.message == "the server's answer is garbled: bad gzip"
    plain = raised(Words(EP.name, 2.0), httpx.UnsupportedProtocol("x"))
    assert type(plain) is ConnectError and plain.message == "could not connect: x"


def test_only_httpx_s_exceptions_are_converted():
    with pytest.raises(KeyError), chat():
        raise KeyError("not the transport's")
    with chat() as w:  # nothing raised: nothing to do
        pass
    assert w.stage == "sending"
