"""Bodies read with a cap, decompressed size included: an error page's first lines, a non-streamed
answer, /v1/models and /metrics up to a few MiB. A hostile upstream (a 1 MB gzip body that
inflates to 1 GiB, a 256 MiB error page) costs the process a few MiB, not gigabytes, and the
connection is closed once the cap is reached. The big bodies are made lazily, piece by piece, in
the loopback server: neither side ever holds them whole (except today's unbounded client)."""

import time
import zlib
from contextlib import contextmanager
from pathlib import Path

import pytest

from deepseek_engine import ChatClient, build_body, parse_settings
from deepseek_engine.errors import AuthError, ServerError, StreamBrokenError
from deepseek_engine.health import HealthBook
from deepseek_engine.probe import Prober
from deepseek_engine.retry import RetryBudget, RetryPolicy
from deepseek_engine.routing import Router
from tests.loopback import Loopback

MiB = 1 << 20
GROWTH = 100 * MiB  # peak RSS growth allowed while a hostile body is served (caps are 64 KiB..8 MiB)
BODY = build_body("deepseek-r1", [{"role": "user", "content": "hi"}], {"max_tokens": 4})


class Sent:
    """How many body bytes a lazy answer has produced so far."""
    count = 0


def _head(status: int, content_type: str, encoding: str | None = None) -> bytes:
    enc = f"content-encoding: {encoding}\r\n" if encoding else ""
    # no content-length: the body runs until the server closes (HTTP/1.1 allows it with close)
    return f"HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\n{enc}connection: close\r\n\r\n".encode()


def _flat_out(pieces, sent: Sent):
    for p in pieces:
        sent.count += len(p)
        yield 0  # no pause between pieces: as fast as the client reads
        yield p


def gzip_bomb(inflated: int = 1 << 30):
    """A gzip body of about ``inflated`` / 1000 bytes that inflates to ``inflated`` zero bytes. Past
    the first MiB, deflate's output for each further MiB of zeros is the same bytes, so the body is
    that block repeated, then the final block and the trailer (CRC of the zeros, worked out as the
    blocks go)."""
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    zeros = bytes(MiB)
    first = deflate.compress(zeros) + deflate.flush(zlib.Z_FULL_FLUSH)
    block = deflate.compress(zeros) + deflate.flush(zlib.Z_FULL_FLUSH)
    end = deflate.flush()
    yield b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + first
    crc = zlib.crc32(zeros)
    for _ in range(inflated // MiB - 1):
        crc = zlib.crc32(zeros, crc)
        yield block
    yield end + crc.to_bytes(4, "little") + (inflated & 0xFFFFFFFF).to_bytes(4, "little")


def flood(size: int, first: bytes = b"", fill: bytes = b"x"):
    """``first``, then ``fill`` repeated up to ``size`` bytes in all, one MiB a piece."""
    yield first
    piece = fill * (MiB // len(fill))
    for _ in range((size - len(first)) // len(piece)):
        yield piece


def _rss(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} in /proc/self/status")


@contextmanager
def peak_growth():
    """Yields a list that receives how far this process's peak RSS rose above its RSS at the start
    (Linux: writing 5 to clear_refs resets the peak, VmHWM, to the current RSS)."""
    Path("/proc/self/clear_refs").write_text("5")
    out: list[int] = []
    start = _rss("VmRSS")
    yield out
    out.append(_rss("VmHWM") - start)


def _served(answer, content_type="application/json", status=200, encoding=None, sent=None):
    """A Loopback answer: ``answer`` (pieces, made lazily) behind a head without content-length."""
    sent = sent or Sent()

    def reply(req):
        yield _head(status, content_type, encoding)
        yield from _flat_out(answer(), sent)
    return reply


def _client(srv, registry, **creds) -> ChatClient:
    settings = parse_settings({"endpoint_urls": srv.base_url, "timeouts": "connect=2 first_token=20 total=30",
                               **creds})
    return ChatClient(settings, registry=registry, health=HealthBook(), prober=None,
                      policy=RetryPolicy(attempts=1, budget=RetryBudget()))


def _ended_soon(call, seconds: float = 20.0):
    t = time.monotonic()
    try:
        call()
    finally:
        took = time.monotonic() - t
        assert took < seconds, f"{took:.1f}s"


@pytest.mark.parametrize("hostile", ["gzip bomb", "plain flood"])
def test_an_error_page_is_read_only_as_far_as_its_message_needs(registry, hostile):
    sent = Sent()
    if hostile == "gzip bomb":  # 1 MB on the wire, 1 GiB inflated
        reply = _served(gzip_bomb, "text/plain", 500, "gzip", sent)
    else:  # a 256 MiB error page
        reply = _served(lambda: flood(256 * MiB, b"upstream exploded: "), "text/plain", 500, sent=sent)
    with Loopback(reply) as srv:
        client = _client(srv, registry)
        with peak_growth() as growth, pytest.raises(ServerError, match="HTTP 500") as e:
            _ended_soon(lambda: list(client.stream(BODY)))
    assert growth[0] < GROWTH, f"peak RSS grew {growth[0] / MiB:.0f} MiB"
    assert e.value.endpoint == client.settings.endpoints[0].name
    if hostile == "plain flood":
        assert "upstream exploded" in e.value.message
        assert sent.count < 64 * MiB  # the connection was closed: the server stopped sending


@pytest.mark.parametrize("hostile", ["gzip bomb", "plain flood"])
def test_a_huge_non_streamed_answer_is_refused_with_a_typed_error(registry, hostile):
    start = b'{"choices":[{"index":0,"finish_reason":"stop","message":{"role":"assistant","content":"'
    if hostile == "gzip bomb":
        reply = _served(gzip_bomb, "application/json", 200, "gzip")
    else:
        reply = _served(lambda: flood(256 * MiB, start))
    with Loopback(reply) as srv:
        client = _client(srv, registry)
        with peak_growth() as growth, pytest.raises(StreamBrokenError, match="larger than 8 MiB"):
            _ended_soon(lambda: list(client.stream(BODY)))
    assert growth[0] < GROWTH, f"peak RSS grew {growth[0] / MiB:.0f} MiB"


def test_a_huge_models_list_is_refused_with_a_typed_error(registry):
    entry = b'{"id":"deepseek-r1","object":"model","max_model_len":4096},'
    with Loopback(_served(lambda: flood(256 * MiB, b'{"object":"list","data":[', entry))) as srv:
        client = _client(srv, registry)
        with peak_growth() as growth, pytest.raises(StreamBrokenError, match="larger than 4 MiB"):
            _ended_soon(client.list_models)
    assert growth[0] < GROWTH, f"peak RSS grew {growth[0] / MiB:.0f} MiB"


def test_a_models_error_page_that_inflates_to_a_gib_is_cut_short(registry):
    with Loopback(_served(gzip_bomb, "text/html", 401, "gzip")) as srv:
        client = _client(srv, registry, api_key="sk-bounded-test-key")
        with peak_growth() as growth, pytest.raises(AuthError, match="HTTP 401"):
            _ended_soon(client.list_models)
    assert growth[0] < GROWTH, f"peak RSS grew {growth[0] / MiB:.0f} MiB"


@pytest.mark.parametrize("hostile", ["gzip bomb", "plain flood"])
def test_a_huge_metrics_page_is_not_scraped(hostile):
    metrics = b"vllm:num_requests_running 3\nvllm:num_requests_waiting 0\n"
    if hostile == "gzip bomb":
        reply = _served(gzip_bomb, "text/plain", 200, "gzip")
    else:  # valid metrics at its start: today's scraper parsed the whole 64 MiB
        reply = _served(lambda: flood(64 * MiB, metrics, b"# padding\n"), "text/plain")
    book = HealthBook()
    router = Router(book)
    prober = Prober(book, router, health_interval=0, metrics_interval=0)
    with Loopback(reply) as srv:
        (ep,) = parse_settings({"endpoint_urls": srv.base_url}).endpoints
        prober.watch((ep,))  # the prober's own client
        with peak_growth() as growth:
            _ended_soon(lambda: prober.scrape(ep))
    assert growth[0] < GROWTH, f"peak RSS grew {growth[0] / MiB:.0f} MiB"
    assert router._s(ep.url).load is None


def _deflate(data: bytes, wbits: int) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, wbits)
    return c.compress(data) + c.flush()


@pytest.mark.parametrize("encoding,wbits", [("gzip", 31), ("x-gzip", 31), ("deflate", 15),
                                            ("deflate", -15), ("identity", None), (None, None)])
def test_a_compressed_error_page_still_explains_itself(registry, encoding, wbits):
    page = b'{"error":{"message":"model is loading, try again","code":503}}'
    body = _deflate(page, wbits) if wbits is not None else page
    head = _head(503, "application/json", encoding)
    with Loopback(lambda req: head + body) as srv:
        client = _client(srv, registry)
        with pytest.raises(ServerError, match="HTTP 503.*model is loading, try again"):
            list(client.stream(BODY))
