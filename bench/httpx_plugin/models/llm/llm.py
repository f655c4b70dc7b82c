"""The least an HTTP-streaming plugin can do in the Dify runtime: one process-wide httpx.Client
(keep-alive), ``iter_lines`` + ``json.loads``, one LLMResultChunk per delta with text, usage from
the server. The same client code as the in-process ``httpx`` contender of bench/perf/worker.py."""

import json
from collections.abc import Generator, Mapping

import httpx
from dify_plugin import LargeLanguageModel
from dify_plugin.entities.model.llm import LLMResultChunk, LLMResultChunkDelta
from dify_plugin.entities.model.message import AssistantPromptMessage, PromptMessage

_CLIENT = httpx.Client(trust_env=False, timeout=httpx.Timeout(60.0, connect=10.0))
_HEADERS = {"Accept": "text/event-stream", "Content-Type": "application/json"}
SERVED = "deepseek-ai/DeepSeek-R1"


class BareLLM(LargeLanguageModel):
    def _invoke(self, model, credentials, prompt_messages: list[PromptMessage], model_parameters,
                tools=None, stop=None, stream=True, user=None) -> Generator[LLMResultChunk, None, None]:
        body = {"model": SERVED, "stream": True, "stream_options": {"include_usage": True},
                "messages": [{"role": m.role.value, "content": m.content} for m in prompt_messages],
                **model_parameters}
        index = 0
        usage = None
        with _CLIENT.stream("POST", credentials["endpoint_url"] + "/chat/completions",
                            content=json.dumps(body).encode(), headers=_HEADERS) as r:
            r.raise_for_status()
            for line in r.iter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[6:]
                if data == "[DONE]":
                    continue  # read to the end of the body, so the connection goes back to the pool
                obj = json.loads(data)
                usage = obj.get("usage") or usage
                choices = obj.get("choices")
                if choices:
                    d = choices[0].get("delta") or {}
                    text = (d.get("reasoning") or "") + (d.get("content") or "")
                    if text:
                        yield LLMResultChunk(model=model, delta=LLMResultChunkDelta(
                            index=index, message=AssistantPromptMessage(content=text)))
                        index += 1
        usage = usage or {}
        yield LLMResultChunk(model=model, delta=LLMResultChunkDelta(
            index=index, message=AssistantPromptMessage(content=""),
            usage=self._calc_response_usage(model, credentials, usage.get("prompt_tokens", 0),
                                            usage.get("completion_tokens", 0)),
            finish_reason="stop"))

    def get_num_tokens(self, model, credentials, prompt_messages, tools=None) -> int:
        return 0

    def validate_credentials(self, model: str, credentials: Mapping) -> None:
        pass

    @property
    def _invoke_error_mapping(self):
        return {}
