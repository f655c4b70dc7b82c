"""``POST /v1/chat/completions``: checks, the batch a request waits for, and the answer, whole
(``chat.completion``) or streamed (``chat.completion.chunk`` events paced by ttft and
inter_token), as vLLM or SGLang shapes it."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import script, structured, thinking
from .config import Fault
from .deltas import Limited, sglang_deltas, vllm_deltas
from .errors import send_error
from .faults import answer_instead_of_body, answer_transport_fault, send_body_with_fault
from .httpio import Request, dumps, response_head, sleep_unless_gone
from .images import image_error
from .markup import as_markup
from .sse import EventStream
from .validation import authorized, max_tokens_of, sglang_request_error, vllm_request_error

if TYPE_CHECKING:
    from .server import Simulator

_TAIL_NULL = ',"logprobs":null,"finish_reason":null}]}'
_TAIL_VLLM = ',"logprobs":null,"finish_reason":null,"token_ids":null}]}'
_SSE_HEADERS = [
    ("content-type", "text/event-stream; charset=utf-8"),
    ("transfer-encoding", "chunked"),
    ("cache-control", "no-cache"),
]
_VLLM_SSE_HEADERS = [_SSE_HEADERS[0], _SSE_HEADERS[1], ("vary", "Origin")]


class Batch:
    """The server's batch: requests being generated, and those queued behind ``max_running``."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.waiting = 0
        self._slots: asyncio.Condition | None = None

    async def enter(self, capacity: Callable[[], int]) -> None:
        """Wait for a place in the batch; ``capacity()``: max_running now (0 = unlimited)."""
        if capacity() > 0:
            if self._slots is None:
                self._slots = asyncio.Condition()
            self.waiting += 1
            try:
                async with self._slots:
                    await self._slots.wait_for(lambda: self.in_flight < capacity())
                    self.in_flight += 1
            finally:
                self.waiting -= 1
        else:
            self.in_flight += 1

    async def leave(self) -> None:
        self.in_flight -= 1
        if self._slots is not None:
            async with self._slots:
                self._slots.notify()


async def answer(sim: Simulator, req: Request, body: Any, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, keep: bool) -> bool:
    """Answer one chat request; returns whether the connection stays open."""
    fault = sim.faults.take()
    done = await answer_transport_fault(fault, sim.config.flavor, reader, writer, keep)
    if done is not None:
        return done

    cfg = sim.config
    if not authorized(cfg, req):
        return await send_error(writer, cfg.flavor, 401, "Unauthorized", keep)
    vllm = cfg.flavor == "vllm"
    err = (vllm_request_error if vllm else sglang_request_error)(body, cfg) or image_error(body, cfg)
    refused = err is None and structured.refusal(body, cfg.grammar_backend, cfg.flavor)
    if refused:
        err = 400, refused, {}
    if err is not None:
        status, message, kw = err
        return await send_error(writer, cfg.flavor, status, message, keep, **kw)
    messages = body["messages"]
    max_tokens = max_tokens_of(body)
    n_prompt = script.prompt_tokens(messages)
    room = cfg.max_model_len - n_prompt
    if vllm and room <= 0:
        # vLLM counts the prompt up to the limit plus one, then gives up.
        seen = min(n_prompt, cfg.max_model_len + 1)
        msg = (f"This model's maximum context length is {cfg.max_model_len} tokens. However, your prompt "
               f"contains at least {seen} input tokens, which exceeds this limit even without any output "
               f"tokens. Please reduce the length of the input prompt. (parameter=input_tokens, value={seen})")
        return await send_error(writer, cfg.flavor, 400, msg, keep, param="input_tokens")
    if not vllm and n_prompt >= cfg.max_model_len:  # SGLang's tokenizer manager, word for word
        msg = (f"The input ({n_prompt} tokens) is longer than the model's context length "
               f"({cfg.max_model_len} tokens).")
        return await send_error(writer, cfg.flavor, 400, msg, keep)
    if not vllm and max_tokens is not None and n_prompt + max_tokens >= cfg.max_model_len:
        msg = (f"Requested token count exceeds the model's maximum context length of {cfg.max_model_len} "
               f"tokens. You requested a total of {n_prompt + max_tokens} tokens: {n_prompt} tokens from "
               f"the input messages and {max_tokens} tokens for the completion. Please reduce the number "
               f"of tokens in the input messages or the completion to fit within the limit.")
        return await send_error(writer, cfg.flavor, 400, msg, keep)
    # vLLM 0.32 accepts prompt + max_tokens over the context and stops generating at its end.
    limit = room if max_tokens is None else min(max_tokens, room)
    tool_reply = script.wants_tools(body)
    t0 = asyncio.get_running_loop().time()
    shape = thinking.shape_for(body, cfg.shape, cfg.hybrid, cfg.flavor)
    if cfg.grammar_backend == "ignored":  # a proxy before the server dropped the constraint
        body = {k: v for k, v in body.items() if k != "response_format"}
    pieces = Limited(as_markup(script.generate(body, shape, vllm), cfg.tool_markup), limit)
    await sim.batch.enter(lambda: sim.config.max_running)
    kv, blocks, cached = sim.kv, [], None
    try:
        if cfg.prefix_caching:
            blocks, cached = kv.admit(body, n_prompt)
            await kv.prefill(n_prompt - cached, cfg.prefill_per_token)
        if body.get("stream") is True:
            opts = body.get("stream_options") or {}
            include_usage = isinstance(opts, dict) and bool(opts.get("include_usage"))
            return await _stream(sim, reader, writer, keep, pieces, n_prompt, include_usage, fault, tool_reply, t0,
                                 cached)
        sim.metrics.observe_ttft(asyncio.get_running_loop().time() - t0 + cfg.ttft)
        return await _complete(sim, reader, writer, keep, pieces, n_prompt, fault, cached)
    except (ConnectionError, OSError):
        sim.metrics.finished["abort"] += 1  # the client went away mid-request
        raise
    finally:
        kv.release(blocks)
        await sim.batch.leave()
        sim.metrics.prompt_total += n_prompt
        sim.metrics.gen_total += pieces.n


def _usage(prompt: int, completion: int, cached: int | None) -> dict[str, Any]:
    """Token counts; with prefix caching, the prompt tokens reused (vLLM with
    --enable-prompt-tokens-details, SGLang with --enable-cache-report)."""
    usage: dict[str, Any] = {"prompt_tokens": prompt, "total_tokens": prompt + completion,
                             "completion_tokens": completion}
    if cached is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": cached}
    return usage


async def _complete(sim: Simulator, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, keep: bool,
                    pieces: Limited, n_prompt: int, fault: Fault | None, cached: int | None) -> bool:
    cfg = sim.config
    items = list(pieces)
    n = len(items)
    delay = cfg.ttft + max(0, n - 1) * cfg.inter_token  # the time a real server would generate for
    if delay > 0:
        await sleep_unless_gone(delay, reader, writer)
    done = await answer_instead_of_body(fault, cfg.flavor, writer, keep)
    if done is not None:
        return done

    reasoning, content, calls = [], [], {}
    for it in items:
        k = it[0]
        if k == "r":
            reasoning.append(it[1])
        elif k == "c":
            content.append(it[1])
        elif k == "th":
            calls[it[1]] = {"id": it[2], "type": "function", "function": {"name": it[3], "arguments": ""}}
        else:
            calls[it[1]]["function"]["arguments"] += it[2]
    finish = pieces.finish_reason
    sim.metrics.finished[finish] += 1
    text = "".join(content) if content else None
    thought = "".join(reasoning) if reasoning else None
    tool_calls = [calls[i] for i in sorted(calls)]
    choice: dict[str, Any] = {"index": 0, "message": None, "logprobs": None, "finish_reason": finish,
                              "stop_reason": None}
    out: dict[str, Any] = {"id": "chatcmpl-" + uuid.uuid4().hex, "object": "chat.completion",
                           "created": int(time.time()), "model": cfg.served_model, "choices": [choice]}
    if cfg.flavor == "vllm":
        if tool_calls and text is not None and not text.strip():
            text = None  # the "\n\n" before the call streams, but is not in the message
        message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None, "annotations": None,
                                   "audio": None, "function_call": None}
        if tool_calls:
            message["tool_calls"] = tool_calls
        # older vLLM: reasoning_content; a server without a reasoning parser still has "reasoning": null
        message["reasoning_content" if cfg.shape == "reasoning_content" else "reasoning"] = thought
        choice.update(token_ids=None, routed_experts=None)
        out["service_tier"] = None
    else:
        message = {"role": "assistant", "content": text}
        if cfg.shape in ("reasoning", "reasoning_content"):
            message[cfg.shape] = thought
        message["tool_calls"] = tool_calls
    choice["message"] = message
    out["usage"] = _usage(n_prompt, n, cached)
    if cfg.flavor == "vllm":
        out.update(prompt_logprobs=None, prompt_token_ids=None, prompt_text=None, kv_transfer_params=None,
                   ec_transfer_params=None, metrics=None)
    return await send_body_with_fault(fault, dumps(out).encode(), reader, writer, keep)


async def _stream(sim: Simulator, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, keep: bool,
                  pieces: Limited, n_prompt: int, include_usage: bool, fault: Fault | None, tool_reply: bool,
                  t0: float, cached: int | None) -> bool:
    cfg = sim.config
    vllm = cfg.flavor == "vllm"
    loop = asyncio.get_running_loop()
    cid = "chatcmpl-" + uuid.uuid4().hex
    created = int(time.time())
    model_json = dumps(cfg.served_model)
    head = '{"id":"%s","object":"chat.completion.chunk","created":%d,"model":%s' % (cid, created, model_json)
    pre = head + ',"choices":[{"index":0,"delta":'
    tail = _TAIL_VLLM if vllm else _TAIL_NULL
    rfield = cfg.shape if cfg.shape in ("reasoning", "reasoning_content") else None
    out = EventStream(reader, writer, fault, cfg.sse_quirks, cfg.send_done)

    # Headers go out at once (Starlette does); the role chunk waits for the first token.
    writer.write(response_head(200, _VLLM_SSE_HEADERS if vllm else _SSE_HEADERS, keep))
    await writer.drain()
    deadline = loop.time() + cfg.ttft
    await out.pace(deadline)
    sim.metrics.observe_ttft(loop.time() - t0)
    role = pre + '{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]'
    if await out.event(role + (',"prompt_token_ids":null,"prompt_text":null}' if vllm else "}")):
        return keep and out.result == "end"
    seen = 0
    deltas = vllm_deltas if vllm else sglang_deltas
    for delta, ntok, finish in deltas(pieces, max(1, cfg.chunk_tokens), rfield, tool_reply):
        if ntok:
            it = cfg.inter_token
            if it > 0:
                # The event leaves when its last token is generated; the first token is at ttft.
                deadline += (ntok - 1 if seen == 0 else ntok) * it
                await out.pace(deadline)
            seen += ntok
        if finish is not None:
            break
        if await out.event(pre + delta + tail):
            return keep and out.result == "end"

    sim.metrics.finished[finish] += 1
    usage = dumps(_usage(n_prompt, pieces.n, cached))
    no_done = out.kind == "no_done"
    usage_chunk = cfg.usage == "on_request" and include_usage and not no_done
    final = pre + delta + ',"logprobs":null,"finish_reason":"%s"' % finish
    final += ',"token_ids":null}]' if vllm else "}]"
    if cfg.usage == "always_on_finish" and not no_done:
        final += ',"usage":' + usage
    if vllm and not usage_chunk:
        final += ',"system_fingerprint":"%s"' % sim.fingerprint
    if await out.event(final + "}"):
        return keep and out.result == "end"
    if usage_chunk:
        last = head + ',"choices":[],"usage":' + usage
        if vllm:
            last += ',"system_fingerprint":"%s"' % sim.fingerprint
        if await out.event(last + "}"):
            return keep and out.result == "end"
    if cfg.send_done and not no_done:
        if await out.event("[DONE]"):
            return keep and out.result == "end"
    await out.finish()
    return keep and out.result == "end"
