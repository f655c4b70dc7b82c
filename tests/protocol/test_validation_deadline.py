"""Validation ends within its deadline (15 s for each endpoint, endpoints side by side), whatever
the server's pace: a /v1/models or a chat check that trickles one byte every 2 s fails with a
message naming the endpoint, as the daemon sees it."""

from __future__ import annotations

import re

import pytest

from tests.loopback import Loopback, response
from tests.protocol.plugin_util import PROVIDER, running_plugin

EVERY = 2.0  # seconds between bytes, as the reproduction
HOLDS = 60.0  # how long each trickle would go on: longer than today's validation waits
BOUND = 25.0  # the 15 s deadline, plus the plugin's start of a session, on a busy machine
MODELS = b'{"object":"list","data":[{"id":"deepseek-r1","object":"model","max_model_len":4096}]}'
SSE_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n"


def trickle(head: bytes, body: bytes):
    """``head`` at once, then ``body`` one byte every ``EVERY`` seconds, for ``HOLDS`` seconds."""
    yield head
    for b in body[: int(HOLDS / EVERY)]:
        yield EVERY
        yield bytes([b])


def models_trickle(req):
    if req.path.endswith("/models"):
        whole = response(200, MODELS)
        return trickle(b"", whole)  # the status line too: nothing usable arrives in time
    return response(404, b'{"error":"not found"}')


def chat_trickle(req):
    if req.path.endswith("/models"):
        return response(200, MODELS)
    if req.path.endswith("/chat/completions"):  # comments only: bytes, but never an event
        return trickle(SSE_HEAD, b": keep-alive\n\n" * 10)
    return response(404, b'{"error":"not found"}')


@pytest.fixture(scope="module")
def plugin():
    with running_plugin() as p:
        yield p


def _validate(plugin, how: str, url: str):
    creds = {"endpoint_urls": url, "api_key": None, "served_model_name": None}
    if how == "provider":
        return plugin.validate_provider_credentials(PROVIDER, creds, timeout=HOLDS + 15)
    return plugin.validate_model_credentials(PROVIDER, "deepseek-r1", creds, timeout=HOLDS + 15)


@pytest.mark.parametrize("how", ["provider", "model"])
def test_a_trickling_models_list_fails_validation_within_the_deadline(plugin, how):
    with Loopback(models_trickle) as srv:
        res = _validate(plugin, how, srv.base_url)
    assert res.failure is None, res.failure
    assert res.duration < BOUND, f"{res.duration:.1f}s"
    assert res.error["error_type"] == "CredentialsValidateFailedError"
    msg = res.error["message"]
    assert srv.base_url.split("//")[1] in msg and "/models" in msg, msg
    assert re.search(r"within 1[45](\.\d)?s", msg), msg


def test_a_trickling_chat_check_fails_validation_within_the_deadline(plugin):
    with Loopback(chat_trickle) as srv:
        res = _validate(plugin, "provider", srv.base_url)
    assert res.failure is None, res.failure
    assert res.duration < BOUND, f"{res.duration:.1f}s"
    assert res.error["error_type"] == "CredentialsValidateFailedError"
    msg = res.error["message"]
    assert srv.base_url.split("//")[1] in msg and "one-token chat request within validation's 15s" in msg, msg
