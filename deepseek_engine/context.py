"""Fitting ``max_tokens`` into the server's context window, from the server's own refusal.

Dify sends the catalogue's default ``max_tokens`` (8192 for R1), sized for the model card's
128K context; a replica started with ``--max-model-len 4096`` refuses every such request. The
server's 400 names its limit (and, for some servers, the prompt's length), so the request can be
sent once more asking for what fits: what the server would have produced anyway, instead of an
error. Pure: the wordings are unit-tested without a server.
"""

from __future__ import annotations

import re

__all__ = ["max_tokens_that_fit"]

# (pattern, room from its groups) for each wording, newest first
_WORDINGS: tuple[tuple[re.Pattern[str], object], ...] = (
    # vLLM 0.11+: max_tokens alone over the limit; the prompt is then allowed to use up the rest
    (re.compile(r"max_tokens=(\d+) cannot be greater than max_model_len=(\d+)"),
     lambda _asked, limit: int(limit)),
    # vLLM 0.9-0.10: "... maximum context length is 4096 tokens and your request has 2778 input tokens"
    (re.compile(r"maximum context length is (\d+) tokens and your request has (\d+) input tokens"),
     lambda limit, prompt: int(limit) - int(prompt)),
    # vLLM up to 0.8: "... is 4096 tokens. However, you requested 8292 tokens (100 in the messages, ..."
    (re.compile(r"maximum context length is (\d+) tokens\. However, you requested \d+ tokens "
                r"\((\d+) in the messages"),
     lambda limit, prompt: int(limit) - int(prompt)),
    # SGLang: refuses prompt + max_new_tokens >= context_len, so one token less than the rest
    (re.compile(r"maximum context length of (\d+) tokens\. You requested a total of \d+ tokens: "
                r"(\d+) tokens from the input messages"),
     lambda limit, prompt: int(limit) - int(prompt) - 1),
)


def max_tokens_that_fit(message: str, asked: int | None) -> int | None:
    """The ``max_tokens`` the server's refusal ``message`` says it accepts, when that is at least
    1 and below ``asked``; None when the message is not such a refusal or nothing would fit (the
    prompt alone is too long: that error stands)."""
    if not isinstance(asked, int) or asked < 2:
        return None
    for pattern, room in _WORDINGS:
        m = pattern.search(message)
        if m is not None:
            fit = room(*m.groups())
            return fit if 1 <= fit < asked else None
    return None
