"""deepseek_sim: a DeepSeek-style OpenAI-compatible endpoint simulator (stdlib only).

It imitates a self-hosted vLLM or SGLang server over a real loopback socket
(asyncio, raw HTTP/1.1, keep-alive, chunked SSE) for wire/protocol tests,
demos and benchmarks.

    from deepseek_sim import Simulator, SimConfig

    with Simulator(SimConfig(served_model="deepseek-r1", shape="reasoning")) as sim:
        sim.base_url             # "http://127.0.0.1:PORT/v1"
        sim.root_url             # "http://127.0.0.1:PORT"
        sim.inject("status", status=429, headers={"Retry-After": "1"})  # next chat request(s)
        sim.requests             # [RecordedRequest(method, path, headers, body, raw_body)]
        sim.connections_opened   # TCP connections accepted so far
        sim.open_connections     # TCP connections open now
        sim.in_flight            # chat requests being generated now
        sim.healthy = False      # /health answers 503
        sim.config.ttft = 0.5    # SimConfig is read per request, so it can change at run time

``Simulator(config, host="127.0.0.1", port=0)``; ``start()`` / ``stop()``; after
``stop()`` a second ``start()`` binds the same port again (a "cold endpoint").

SimConfig fields: served_model, max_model_len, flavor ("vllm" | "sglang"),
shape ("reasoning" | "reasoning_content" | "think_inline" | "think_close_only" |
"plain"), api_key, ttft, inter_token, chunk_tokens, usage ("on_request" |
"never" | "always_on_finish"), send_done, sse_quirks, num_running,
num_waiting, kv_usage, max_running, tool_parser (vLLM: False answers 400 to
tools with tool_choice "auto"), model_path (vLLM's /v1/models "root"), hybrid (a
thinking-on-demand family, "v3.1" | "v3.2" | "v3.2-speciale" | "v4" | "v4.1": the
reply reasons as ``chat_template_kwargs.thinking`` says, else at the server's
default for that family (thinking.HYBRID_DEFAULTS); thinking off, a plain answer),
tool_markup (None, or "v3" | "v31" | "v32" | "v4" | "v41": tool calls arrive
as that family's raw markup in content, as from a server with no tool parser
for it; see deepseek_sim/markup.py), prefix_caching, kv_blocks, block_size,
prefill_per_token (automatic prefix caching as vLLM v1 keeps it, deepseek_sim/prefix_cache.py:
cached_tokens in usage; vllm:prefix_cache_hits/_queries and cache_config_info in /metrics).

Every request is recorded with its parsed JSON body (``sim.requests``), so tests
check what a client sent (``chat_template_kwargs``, reasoning in the history, ...).

The vLLM flavour follows real vLLM 0.32 (tests/real/SIMULATOR_DIFFERENCES.md):
R1's whitespace around ``</think>`` stays on both sides of the reasoning cut;
``chunk_tokens`` tokens per delta whatever their kind (reasoning and content
in one delta, text on the finish chunk, "length" on the last token's chunk);
prompt + max_tokens over the context is generated up to the context's end.
The SGLang flavour keeps one kind per delta and a finish chunk of its own, and words its
context-length refusals as SGLang's tokenizer manager does (prompt + max_tokens >= context).

Endpoints: GET /health, GET /v1/models, POST /v1/chat/completions,
POST /tokenize, GET /metrics (and /ping, /version for vLLM). Unknown paths: 404.

Scripted replies (deterministic): a plain greeting; a ``get_weather`` tool call
when the request has ``tools`` (two calls with ``[[two tools]]``); "According to
the tool, <result>." after a ``tool`` message; endless " lorem ipsum" with
``[[long]]``; the user text verbatim with ``[[echo]]``; with ``[[N rounds]]`` and
tools, N tool calls in a row (an agent loop: one per request until N tool
results follow the user's message), each after its own reasoning. ``max_tokens`` is
honoured (finish_reason "length"); reasoning pieces count as tokens.
``count_tokens(text)`` is the tokenizer: each ``\\s*\\S+`` match is one token.

Faults, ``sim.inject(kind, count=1, **params)`` (FIFO, one entry per chat
request; ``sim.clear_faults()``, ``sim.pending_faults``):
  reset_before_headers                    TCP RST after reading the request
  status(status, headers=None, body=None) that status; default body = flavor error JSON
  html_502                                nginx-style HTML 502
  slow_headers(seconds)                   wait before the status line
  malformed_chunk(after=2, then="continue"|"end"|"drop")  a `data: {"id": broken` event
  drop_mid_stream(after=2, rst=False)     close without the terminating chunk
  stall_mid_stream(after=2, seconds=1.0)  pause, then continue
  no_done(after=None)                     clean end without usage and [DONE]
                                          (with after=N: clean end after N events)
  error_event(after=2, message=…)         in-band `data: {"error": …}`, [DONE], end
"after" counts data events sent (role chunk included). A fault whose "after"
lies beyond the stream fires just before the end. Non-stream requests: drop
sends half the body, stall delays the body after the headers, malformed sends
invalid JSON, error_event answers 500.

CLI: ``python -m deepseek_sim --port 8000 --model deepseek-r1 --shape reasoning``.
"""

from .config import FAULT_KINDS, Fault, RecordedRequest, SimConfig
from .script import SHAPES, count_tokens
from .server import Simulator

__all__ = ["FAULT_KINDS", "SHAPES", "Fault", "RecordedRequest", "SimConfig", "Simulator", "count_tokens"]
