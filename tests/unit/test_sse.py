from hypothesis import given, strategies as st

from deepseek_engine.sse import SSEDecoder, iter_sse_data

STREAM = (
    b": keep-alive\n\n"
    b"data: {\"a\": 1}\n\n"
    b"event: message\nid: 7\nretry: 100\ndata: {\"b\":\n"
    b"data: 2}\n\n"
    b"data:no-space\r\n\r\n"
    b"data: caf\xc3\xa9 \xe4\xbd\xa0\xe5\xa5\xbd\r\r"
    b"data: [DONE]\n\n"
)
EXPECTED = ['{"a": 1}', '{"b":\n2}', "no-space", "café 你好", "[DONE]"]


def test_spec_cases():
    assert list(iter_sse_data([STREAM])) == EXPECTED


def test_comment_only_and_blank_events_yield_nothing():
    assert list(iter_sse_data([b": ping\n\n\n\n:another\n\n"])) == []


def test_unterminated_event_is_discarded_at_eof():
    assert list(iter_sse_data([b"data: 1\n\ndata: partial"])) == ["1"]


def test_crlf_split_between_reads():
    d = SSEDecoder()
    assert d.feed(b"data: x\r") == []
    assert d.feed(b"\n\r") == ["x"]
    assert d.feed(b"\ndata: y\n\n") == ["y"]


def test_line_separator_inside_json_is_not_a_line_end():
    s = '{"t": "a\u2028b\x0bc"}'
    assert list(iter_sse_data([f"data: {s}\n\n".encode()])) == [s]


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=12))
def test_any_split_of_the_bytes_gives_the_same_events(cuts):
    cuts = sorted(set(cuts))
    pieces = [STREAM[a:b] for a, b in zip([0, *cuts], [*cuts, len(STREAM)])]
    assert list(iter_sse_data(pieces)) == EXPECTED
