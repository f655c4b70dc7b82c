import pytest
from hypothesis import given
from hypothesis import strategies as st

from deepseek_engine.sse import EventTooLarge, SSEDecoder, iter_sse_data

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
    pieces = [STREAM[a:b] for a, b in zip([0, *cuts], [*cuts, len(STREAM)], strict=True)]
    assert list(iter_sse_data(pieces)) == EXPECTED


BOM = b"\xef\xbb\xbf"


def test_an_event_with_empty_or_blank_data_is_not_dispatched():
    stream = b"data:\n\ndata: \n\ndata:\ndata:\n\ndata:  \t\n\ndata: 1\n\n"
    assert list(iter_sse_data([stream])) == ["1"]


def test_empty_data_lines_inside_an_event_are_kept():
    assert list(iter_sse_data([b"data: a\ndata:\ndata: b\n\n"])) == ["a\n\nb"]


def test_a_leading_byte_order_mark_is_stripped_once():
    assert list(iter_sse_data([BOM + b"data: 1\n\n"])) == ["1"]
    assert list(iter_sse_data([BOM[:1], BOM[1:] + b"data: 1\n\n"])) == ["1"]
    # only at the very start: a BOM later (or a second one) is content, so the line's field name
    # is no longer "data" and the line is ignored
    assert list(iter_sse_data([BOM + BOM + b"data: 1\n\ndata: 2\n\n"])) == ["2"]
    assert list(iter_sse_data([b"data: 1\n\n" + BOM + b"data: 2\n\n"])) == ["1"]


def test_a_byte_order_mark_given_as_text_is_stripped_too():
    d = SSEDecoder()
    assert d.feed("") == []
    assert d.feed("\ufeffdata: 1\n\n") == ["1"]


@given(st.lists(st.integers(min_value=0, max_value=len(BOM + STREAM)), max_size=12),
       st.sampled_from([b"", b"data:\n\n", b": ping\ndata:\n\n"]))
def test_any_split_of_a_bom_stream_with_empty_events_gives_the_same_events(cuts, empty):
    stream = BOM + empty + STREAM.replace(b"data: [DONE]", empty + b"data: [DONE]")
    cuts = sorted({min(c, len(stream)) for c in cuts})
    pieces = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    assert list(iter_sse_data(pieces)) == EXPECTED


def test_a_line_longer_than_the_bound_raises_as_soon_as_it_passes_it():
    d = SSEDecoder(limit=100)
    d.feed(b"data: " + b"x" * 90)
    with pytest.raises(EventTooLarge, match="longer than 100 characters"):
        d.feed(b"x" * 20)  # no line end yet: refused before the rest arrives


def test_a_line_longer_than_the_bound_within_one_read_raises():
    with pytest.raises(EventTooLarge):
        SSEDecoder(limit=100).feed(b"data: " + b"x" * 200 + b"\n\n")
    d = SSEDecoder(limit=100)
    d.feed(b"data: " + b"x" * 60)
    with pytest.raises(EventTooLarge):  # the kept pieces joined with the read that ends the line
        d.feed(b"x" * 50 + b"\n")


def test_an_event_of_many_lines_is_bounded_as_a_whole():
    d = SSEDecoder(limit=100)
    d.feed(b"data: " + b"x" * 40 + b"\n" + b"data: " + b"x" * 40 + b"\n")
    with pytest.raises(EventTooLarge, match="an event longer than 100"):
        d.feed(b"data: " + b"x" * 40 + b"\n")


def test_a_line_or_event_at_the_bound_passes_whole_however_it_is_cut():
    payload = "x" * 94  # "data: " + 94 = 100 characters
    stream = f"data: {payload}\n\n".encode()
    for cut in range(0, len(stream), 7):
        d = SSEDecoder(limit=100)
        assert d.feed(stream[:cut]) + d.feed(stream[cut:]) == [payload]
    assert list(iter_sse_data([b"data: " + b"y" * (1 << 20) + b"\n\n"])) == ["y" * (1 << 20)]  # default bound
