"""What a request's setup works out once and keeps (issue 16: opening a request is most of the
plugin's CPU at short answers): each cache is keyed by everything its answer depends on, so
endpoints and credentials never share an entry, and bounded, as one process serves every
workspace."""

from __future__ import annotations

import select

from deepseek_engine import families, transport
from deepseek_engine.attempt import chat_url
from deepseek_engine.settings import display_url


def test_a_chat_url_is_parsed_once_per_base_url_and_never_shared_between_endpoints() -> None:
    a = chat_url("http://gpu-1:8000/v1")
    assert chat_url("http://gpu-1:8000/v1") is a  # parsed once, reused as it is
    assert str(a) == "http://gpu-1:8000/v1/chat/completions"
    others = {str(chat_url(u)) for u in ("http://gpu-2:8000/v1", "http://gpu-1:8001/v1",
                                         "http://gpu-1:8000/v2", "https://gpu-1:8000/v1",
                                         "http://alice:pw@gpu-1:8000/v1")}
    assert len(others) == 5 and str(a) not in others
    assert str(chat_url("http://alice:pw@gpu-1:8000/v1")).startswith("http://alice:pw@")  # as given
    assert chat_url.cache_info().maxsize == 1024  # bounded: endpoints come and go with credentials


def test_an_endpoints_shown_name_is_kept_per_whole_url_and_bounded() -> None:
    display_url.cache_clear()
    for url in ("http://gpu-1:8000/v1", "http://bob:secret@gpu-1:8000/v1", "gpu-9:8000/v1?x=1"):
        assert display_url(url) is display_url(url)
    assert display_url.cache_info().hits == 3  # each URL worked out once
    assert display_url("http://bob:secret@gpu-1:8000/v1") == "gpu-1:8000/v1"  # never user:password
    assert display_url("http://gpu-1:8000/v1") == "gpu-1:8000/v1"
    assert display_url("gpu-9:8000/v1?x=1") == "gpu-9:8000/v1"
    assert display_url.cache_info().maxsize == 1024


def test_family_matching_is_kept_per_name_and_bounded() -> None:
    families._matched.cache_clear()
    names = ["deepseek-r1", "DeepSeek-R1", "deepseek-ai/DeepSeek-V3.2", "my-alias", "deepseek-r1"]
    first = [families._matched(n) for n in names]
    assert families._matched.cache_info().hits == 1  # the repeated name only
    families._matched.cache_clear()
    assert [families._matched(n) for n in names] == first  # the same answers without the cache
    assert first[0] is not None and first[3] is None and first[2] is not first[0]
    assert families._matched.cache_info().maxsize == 1024


def test_the_os_poll_is_looked_up_once_and_stays_the_os_s() -> None:
    transport._os_poll.cache_clear()
    assert transport._os_poll() is select.poll  # no gevent in this tier: the OS's own
    assert transport._os_poll() is transport._os_poll()
