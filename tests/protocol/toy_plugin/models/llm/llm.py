"""Toy LLM: streams fixed text with no network I/O and no sleeps.

Controls (declared in ``toy-chat.yaml`` so the SDK's parameter filter lets them through):

* ``chunks`` (int, default 3): number of content chunks before the final usage chunk.
* ``chunk_text`` (text): the text of every content chunk; default = the text of the last user message.
* ``tool_calls`` (int, default 0): number of tool calls to emit, named after the request's tools
  (cycled), or ``toy_tool`` when the request has none. Arguments are ``{"i": <n>}``.
* ``tool_call_mode``: ``complete`` (default; each call whole in one chunk, the shape Dify's
  agents need) or ``incremental`` (OpenAI-style fragments: id+name first, then argument pieces
  with an empty id, which Dify merges only in its non-stream path).
* ``fail_after`` (int): raise ``InvokeConnectionError`` mid-stream after that many content chunks.
* ``ttft_ms``, ``gap_ms`` (int, default 0): pace the stream like a GPU server (first chunk after
  ``ttft_ms``, then one every ``gap_ms``, on a fixed schedule), with ``gevent.sleep``: the runtime's
  own cost for many concurrent paced streams, with no HTTP (the benchmark's concurrency floor).
* ``yield_every`` (int, default 0): call ``gevent.sleep(0)`` (a cooperative yield, no delay) after
  every that many content chunks, so concurrent sessions interleave the way they do when a real
  plugin waits on its HTTP stream. 0 = never yield (the pure SDK runtime floor: a session then
  runs to completion once it starts, since nothing in it blocks).

Usage: prompt_tokens = whitespace words in all prompt text; completion_tokens = number of content
chunks + number of tool calls. ``max_tokens``/``temperature`` are accepted and ignored.
With ``stream=False`` the whole answer comes back as one ``LLMResult`` (one chunk on the wire).
"""

import json
import time
from collections.abc import Generator, Mapping

import gevent
from dify_plugin import LargeLanguageModel
from dify_plugin.entities.model.llm import LLMResult, LLMResultChunk, LLMResultChunkDelta
from dify_plugin.entities.model.message import (
    AssistantPromptMessage,
    PromptMessage,
    PromptMessageTool,
    UserPromptMessage,
)
from dify_plugin.errors.model import (
    CredentialsValidateFailedError,
    InvokeBadRequestError,
    InvokeConnectionError,
    InvokeError,
)


def _text_of(message: PromptMessage) -> str:
    content = message.content
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for item in content:
        data = getattr(item, "data", None)
        if isinstance(data, str):
            parts.append(data)
    return "".join(parts)


def _count_words(prompt_messages: list[PromptMessage], tools: list[PromptMessageTool] | None) -> int:
    words = sum(len(_text_of(m).split()) for m in prompt_messages)
    if tools:
        words += sum(len(t.name.split()) + len((t.description or "").split()) for t in tools)
    return words


def _tool_call(call_id: str, name: str, arguments: str) -> AssistantPromptMessage.ToolCall:
    return AssistantPromptMessage.ToolCall(
        id=call_id,
        type="function",
        function=AssistantPromptMessage.ToolCall.ToolCallFunction(name=name, arguments=arguments),
    )


class ToyLargeLanguageModel(LargeLanguageModel):
    def _invoke(
        self,
        model: str,
        credentials: dict,
        prompt_messages: list[PromptMessage],
        model_parameters: dict,
        tools: list[PromptMessageTool] | None = None,
        stop: list[str] | None = None,
        stream: bool = True,
        user: str | None = None,
    ) -> LLMResult | Generator[LLMResultChunk, None, None]:
        n_chunks = int(model_parameters.get("chunks", 3))
        text = model_parameters.get("chunk_text")
        if text is None:
            last_user = next(
                (m for m in reversed(prompt_messages) if isinstance(m, UserPromptMessage)), None
            )
            text = _text_of(last_user) if last_user is not None else ""
        n_tools = int(model_parameters.get("tool_calls", 0))
        mode = model_parameters.get("tool_call_mode") or "complete"
        fail_after = model_parameters.get("fail_after")
        yield_every = int(model_parameters.get("yield_every") or 0)
        pace = (int(model_parameters.get("ttft_ms") or 0) / 1e3, int(model_parameters.get("gap_ms") or 0) / 1e3)
        names = [t.name for t in tools] if tools else ["toy_tool"]
        prompt_tokens = _count_words(prompt_messages, tools)
        completion_tokens = n_chunks + n_tools

        if not stream:
            if fail_after is not None and fail_after < n_chunks:
                raise InvokeConnectionError("toy: simulated failure")
            return LLMResult(
                model=model,
                message=AssistantPromptMessage(
                    content=text * n_chunks,
                    tool_calls=[
                        _tool_call(f"call_{i}", names[i % len(names)], json.dumps({"i": i}))
                        for i in range(n_tools)
                    ],
                ),
                usage=self._calc_response_usage(model, credentials, prompt_tokens, completion_tokens),
            )
        return self._stream(
            model, credentials, text, n_chunks, n_tools, mode, fail_after, yield_every, names,
            prompt_tokens, completion_tokens, pace,
        )

    def _stream(
        self, model, credentials, text, n_chunks, n_tools, mode, fail_after, yield_every, names,
        prompt_tokens, completion_tokens, pace=(0.0, 0.0),
    ) -> Generator[LLMResultChunk, None, None]:
        index = 0
        start = time.monotonic()
        for i in range(n_chunks):
            if pace != (0.0, 0.0):
                gevent.sleep(max(0.0, start + pace[0] + i * pace[1] - time.monotonic()))
            if fail_after is not None and i >= fail_after:
                raise InvokeConnectionError(f"toy: simulated mid-stream failure after {i} chunks")
            yield LLMResultChunk(
                model=model,
                delta=LLMResultChunkDelta(index=index, message=AssistantPromptMessage(content=text)),
            )
            index += 1
            if yield_every and index % yield_every == 0:
                gevent.sleep(0)
        for i in range(n_tools):
            name = names[i % len(names)]
            call_id = f"call_{i}"
            args = json.dumps({"i": i})
            if mode == "incremental":
                fragments = [
                    _tool_call(call_id, name, ""),
                    _tool_call("", "", args[: len(args) // 2]),
                    _tool_call("", "", args[len(args) // 2 :]),
                ]
            else:
                fragments = [_tool_call(call_id, name, args)]
            for fragment in fragments:
                yield LLMResultChunk(
                    model=model,
                    delta=LLMResultChunkDelta(
                        index=index, message=AssistantPromptMessage(content="", tool_calls=[fragment])
                    ),
                )
                index += 1
        yield LLMResultChunk(
            model=model,
            delta=LLMResultChunkDelta(
                index=index,
                message=AssistantPromptMessage(content=""),
                usage=self._calc_response_usage(model, credentials, prompt_tokens, completion_tokens),
                finish_reason="tool_calls" if n_tools else "stop",
            ),
        )

    def get_num_tokens(
        self,
        model: str,
        credentials: dict,
        prompt_messages: list[PromptMessage],
        tools: list[PromptMessageTool] | None = None,
    ) -> int:
        return _count_words(prompt_messages, tools)

    def validate_credentials(self, model: str, credentials: Mapping) -> None:
        if credentials.get("api_key") != "good":
            raise CredentialsValidateFailedError("invalid api_key (toy expects 'good')")

    @property
    def _invoke_error_mapping(self) -> dict[type[InvokeError], list[type[Exception]]]:
        return {
            InvokeConnectionError: [ConnectionError],
            InvokeBadRequestError: [ValueError],
        }
