"""The fault matrix of issue 3, shared by the in-process (wire) and protocol tiers.

Each case: a simulator set-up, a fault for the user's request, and the outcome for a streaming
and for a blocking caller: "ok" (recovered transparently: the exact answer, no duplicated or
reordered tokens) or the error (engine class name, Dify class name), and the deadline it must
end within. Credentials use short timeouts so stalls end fast.
"""

from dataclasses import dataclass, field

REASONING = "Okay, the user sent me a message. I should reply with a short, friendly greeting."
ANSWER = "Hello! I am a simulated DeepSeek model. How can I help you today?"
WANT = f"<think>\n{REASONING}\n</think>\n\n{ANSWER}"
CREDS = {"timeouts": "idle=1 first_token=1.5 connect=2"}

OK = ("ok", "ok")
UNREACHABLE = ("UnreachableError", "InvokeConnectionError")
BROKEN = ("StreamBrokenError", "InvokeConnectionError")
IDLE = ("IdleTimeout", "InvokeConnectionError")
FIRST = ("FirstTokenTimeout", "InvokeConnectionError")
BAD = ("BadRequestError", "InvokeBadRequestError")
NOMODEL = ("ModelNotFoundError", "InvokeBadRequestError")
AUTH = ("AuthError", "InvokeAuthorizationError")


@dataclass(frozen=True)
class Case:
    name: str
    stream: tuple
    blocking: tuple
    within: float
    fault: dict | None = None
    sim: dict = field(default_factory=dict)
    creds: dict = field(default_factory=dict)
    prompt: str = "hi"
    refused: bool = False
    at_least: float = 0.0  # e.g. Retry-After honoured
    max_requests: int | None = None  # e.g. a 400 is never retried

    def __str__(self) -> str:
        return self.name


CASES = [
    Case("refused", UNREACHABLE, UNREACHABLE, 2.0, refused=True),
    Case("reset-before-headers", OK, OK, 2.0, fault=dict(kind="reset_before_headers")),
    Case("429-retry-after", OK, OK, 2.5, fault=dict(kind="status", status=429, headers={"Retry-After": "0.5"}),
         at_least=0.5),
    Case("500", OK, OK, 2.0, fault=dict(kind="status", status=500)),
    Case("503", OK, OK, 2.0, fault=dict(kind="status", status=503)),
    Case("html-502", OK, OK, 2.0, fault=dict(kind="html_502")),
    # after tokens were shown a stream is continued from the last one (streaming) or the
    # request retried (blocking): the user gets the exact answer either way
    Case("malformed-chunk", OK, OK, 2.0, fault=dict(kind="malformed_chunk", after=10)),
    Case("drop-mid-stream", OK, OK, 2.0, fault=dict(kind="drop_mid_stream", after=10)),
    # ... except a stall on the lone endpoint: likely stuck, so not asked to continue (a stall is
    # continued on another endpoint only): the typed error at the idle deadline
    Case("stall-mid-stream", IDLE, OK, 3.5, fault=dict(kind="stall_mid_stream", after=10, seconds=30)),
    # ... and when it keeps failing, the typed error (streaming: after two continuations)
    Case("drop-mid-stream-always", BROKEN, BROKEN, 3.0, fault=dict(kind="drop_mid_stream", after=10, count=9)),
    Case("stall-mid-stream-always", IDLE, IDLE, 6.0,
         fault=dict(kind="stall_mid_stream", after=10, seconds=30, count=9)),
    Case("no-done", OK, OK, 2.0, sim=dict(send_done=False)),
    # headers later than first_token on the lone endpoint: the typed error at that deadline, once
    # (retried there, the wait the operator set would double)
    Case("slow-headers", FIRST, FIRST, 2.5, fault=dict(kind="slow_headers", seconds=5), at_least=1.4),
    Case("context-overflow-400", BAD, BAD, 2.0, sim=dict(max_model_len=60), prompt="word " * 100,
         max_requests=1),
    Case("unknown-model-404", NOMODEL, NOMODEL, 2.0, creds=dict(served_model_name="no-such-model"),
         max_requests=0),
    Case("401", AUTH, AUTH, 2.0, sim=dict(api_key="right"), creds=dict(api_key="wrong-key"),
         max_requests=1),
]
