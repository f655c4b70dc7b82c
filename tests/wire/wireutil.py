"""Helpers for the wire tier."""

import socket

from deepseek_engine import AnswerAssembler, ChatClient, build_body, parse_settings
from deepseek_engine.health import HealthBook
from deepseek_engine.retry import RetryBudget, RetryPolicy
from tests.loopback import response

REASONING = "Okay, the user sent me a message. I should reply with a short, friendly greeting."
ANSWER = "Hello! I am a simulated DeepSeek model. How can I help you today?"
WANT = f"<think>\n{REASONING}\n</think>\n\n{ANSWER}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_client(urls, registry, **creds):
    if isinstance(urls, str):
        urls = [urls]
    settings = parse_settings({"endpoint_urls": ",".join(urls), **creds})
    policy = RetryPolicy(backoff_base=0.01, backoff_cap=0.05, retry_after_cap=0.5,
                         budget=RetryBudget(cap=100))
    return ChatClient(settings, registry=registry, health=HealthBook(), policy=policy, prober=None)


def run(client, content="hi", expect_reasoning=True, **params):
    """(text, assembler, deltas) of one streamed chat."""
    body = build_body("deepseek-r1", [{"role": "user", "content": content}], params)
    a = AnswerAssembler(expect_reasoning)
    text = ""
    for d in client.stream(body):
        p = a.feed(d)
        if p:
            text += p.text
    text += a.finish().text
    return text, a


def chunk(content=None, *, role=None, finish=None, tool_calls=None, usage=None) -> dict:
    delta = {k: v for k, v in (("role", role), ("content", content), ("tool_calls", tool_calls))
             if v is not None}
    out = {"id": "c", "object": "chat.completion.chunk", "model": "m",
           "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    if usage is not None:
        out = {**out, "choices": [], "usage": usage}
    return out


ROLE = chunk("", role="assistant")


def chat_only(answer):
    """A Loopback answer for chat completions; anything else (probes) is a 404."""
    return lambda req: answer(req) if req.path.endswith("/chat/completions") else response(404, b"{}")
