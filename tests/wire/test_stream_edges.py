"""Stream edges the simulator cannot time exactly, over a loopback server that sends each answer
in one write: what arrives in one network read together with an in-band error."""

import pytest

from deepseek_engine import AnswerAssembler, build_body
from deepseek_engine.errors import ServerError, StreamBrokenError
from tests.loopback import Loopback, response, sse
from tests.wire.wireutil import make_client


def _chunk(content=None, role=None) -> dict:
    delta = {k: v for k, v in (("role", role), ("content", content)) if v is not None}
    return {"id": "c", "object": "chat.completion.chunk", "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}


ERROR = {"error": {"message": "the engine died", "type": "InternalServerError", "code": 500}}


def _shown_then_error(client, **params):
    """(text shown, the error) of one streamed chat that fails mid-stream."""
    a = AnswerAssembler(expect_reasoning=False)
    text = ""
    with pytest.raises((ServerError, StreamBrokenError)) as e:
        for d in client.stream(build_body("m", [{"role": "user", "content": "hi"}], params)):
            p = a.feed(d)
            text += p.text if p else ""
    return text, e.value


@pytest.mark.parametrize("bad,exc", [(ERROR, ServerError), (b'{"id": broken', StreamBrokenError)])
def test_deltas_read_together_with_a_failing_chunk_are_delivered_first(registry, bad, exc):
    body = sse(_chunk("", role="assistant"), _chunk("Hello"), _chunk(" world"), bad, b"[DONE]")
    with Loopback(lambda req: response(200, body if not srv.requests[1:] else sse(bad), "text/event-stream")) as srv:
        text, err = _shown_then_error(make_client(srv.base_url, registry), max_tokens=50)
        # tokens were shown: never asked again from the start, only to continue (which fails here)
        assert all(b'"continue_final_message":true' in r.body for r in srv.requests[1:])
        # with what is left of the budget: two tokens, though they arrived as one delta
        assert all(b'"max_tokens":48' in r.body for r in srv.requests[1:]) and srv.requests[1:]
    assert text == "Hello world"
    assert type(err) is exc
    if exc is ServerError:
        assert "the engine died" in str(err)


def _one_event_per_read(events: bytes) -> list[bytes]:
    """An event-stream response in pieces, one event each, so the engine cannot merge them."""
    head, sep, body = response(200, events, "text/event-stream").partition(b"\r\n\r\n")
    return [head + sep, *(e + b"\n\n" for e in body.split(b"\n\n") if e)]


@pytest.mark.parametrize("shown,fresh", [(["Hello", " world"], ["Hello", " world", "!"]),
                                         (["H", "ello world"], ["H", "e", "llo", " world!"])],
                         ids=["same-split", "one-letter-first"])
def test_a_server_that_starts_over_instead_of_continuing_is_not_shown_twice(registry, shown, fresh):
    """A server that ignores continue_final_message answers from the start again: that answer is
    dropped and the user gets the error of the cut, with what was shown shown once (however its
    tokens are split: the fresh start is held back until it can be told)."""
    first = _one_event_per_read(sse(_chunk("", role="assistant"), *map(_chunk, shown), b'{"id": broken'))
    finish = {"id": "c", "object": "chat.completion.chunk", "model": "m",
              "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    again = _one_event_per_read(sse(_chunk("", role="assistant"), *map(_chunk, fresh), finish, b"[DONE]"))
    with Loopback(lambda req: again if srv.requests[1:] else first) as srv:
        text, err = _shown_then_error(make_client(srv.base_url, registry))
        assert len(srv.requests) == 2 and b'"continue_final_message":true' in srv.requests[1].body
    assert text == "Hello world" and type(err) is StreamBrokenError
