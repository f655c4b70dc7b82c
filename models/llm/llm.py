"""Dify's LLM interface over the engine: only translation happens here.

Prompt messages become OpenAI dicts, engine pieces become ``LLMResultChunk``s, engine errors
become the Dify error whose class makes Dify's own load balancing do the right thing.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Generator, Mapping
from pathlib import Path

import yaml
from dify_plugin import LargeLanguageModel
from dify_plugin.config.logger_format import plugin_logger_handler
from dify_plugin.entities import I18nObject
from dify_plugin.entities.model import (
    AIModelEntity,
    FetchFrom,
    ModelFeature,
    ModelPropertyKey,
    ModelType,
    ParameterRule,
)
from dify_plugin.entities.model.llm import LLMMode, LLMResult, LLMResultChunk, LLMResultChunkDelta, LLMUsage
from dify_plugin.entities.model.message import (
    AssistantPromptMessage,
    ImagePromptMessageContent,
    PromptMessage,
    PromptMessageTool,
    TextPromptMessageContent,
    ToolPromptMessage,
    UserPromptMessage,
)
from dify_plugin.errors.model import (
    CredentialsValidateFailedError,
    InvokeAuthorizationError,
    InvokeBadRequestError,
    InvokeConnectionError,
    InvokeError,
    InvokeRateLimitError,
    InvokeServerUnavailableError,
)

from deepseek_engine import (
    AuthError,
    BadRequestError,
    Completion,
    ConfigError,
    ConnectError,
    EngineError,
    Finished,
    RateLimitError,
    ServerError,
    Settings,
    StreamBrokenError,
    TimeoutError_,
    build_body,
)
from deepseek_engine.completion import family_for
from deepseek_engine.credentials import secrets_for, settings_for
from deepseek_engine.discovery import discovered_context, known_context
from deepseek_engine.errors import (
    SCRUB_FILTER,
    UnavailableError,
    public_message,
    report_thread_crash,
    report_unexpected,
    scoped,
    secret_scope,
)
from deepseek_engine.structured import STRUCTURED_PARAMETERS
from deepseek_engine.telemetry import configure
from deepseek_engine.thinking import SWITCH_PARAMETERS
from deepseek_engine.tokens import count_messages
from deepseek_engine.validation import validate_endpoints

# Dify class -> the engine errors it stands for, read in this order, the first match winning (as
# the SDK's _transform_invoke_error reads it, and to_dify_error): a subclass before its base.
# Connection-type failures must be InvokeConnectionError: only that, auth and rate-limit errors make
# Dify's load balancer cool a credential down and fail over.
_ERRORS: dict[type[InvokeError], list[type[Exception]]] = {
    InvokeConnectionError: [UnavailableError,  # 502/503/504 after every retry (a ServerError): fail over
                            ConnectError, TimeoutError_, StreamBrokenError],
    InvokeServerUnavailableError: [ServerError],
    InvokeAuthorizationError: [AuthError],
    InvokeRateLimitError: [RateLimitError],
    InvokeBadRequestError: [BadRequestError, ConfigError],
    InvokeError: [EngineError],
}

# what escapes everything else (a shape of answer nothing expected, or a bug): the serving side failed
_UNEXPECTED = InvokeServerUnavailableError

_TEMPLATE = Path(__file__).parent / "templates" / "customizable.yaml"
for _name in ("deepseek_engine", "deepseek_selfhosted"):  # to the daemon's log, as the SDK does
    _logger = logging.getLogger(_name)
    _logger.setLevel(logging.INFO)
    if plugin_logger_handler not in _logger.handlers:
        _logger.addHandler(plugin_logger_handler)
# Every record that reaches the daemon is scrubbed on the way: the loggers' own, their children's
# (filters on a logger do not apply to its children's records; a handler's do), and the SDK's.
plugin_logger_handler.addFilter(SCRUB_FILTER)
# A background thread (warm-up, discovery, probes) that dies of an exception nothing expected is
# reported like any other (scrubbed, one line, in the daemon's log), not printed raw to stderr.
threading.excepthook = report_thread_crash
configure()  # opt-in metrics and JSON logs, from the plugin's environment (its warnings logged)
_DEFAULT_CONTEXT = 32768
# The daemon reads the plugin's stdout in lines of at most 5 MiB and kills a plugin that writes a
# longer one: every chunk is one line. JSON writes a character in 6 bytes at most (a control
# character as \u0001), so a chunk of this many characters stays under 3 MiB.
_MAX_CHUNK_CHARS = 512 * 1024
_MAX_LINE_BYTES = 5 * 1024 * 1024 - 64 * 1024  # a blocking answer's one line, less the envelope
# the system fingerprint of an answer replayed from the answer cache (its usage: what it cost when generated)
_CACHED = "deepseek-answer-cache"


def _offload(fn, *args):
    """Run CPU-bound work (tokenising a long prompt) in gevent's OS-thread pool: every session
    and the heartbeat share one OS thread, and must not wait behind it."""
    import gevent

    return gevent.get_hub().threadpool.apply(fn, args)


def to_dify_error(e: EngineError, settings: Settings | None = None) -> InvokeError:
    """The Dify error for ``e``; its text never carries the credential's secrets, nor a token a
    server quoted back (some gateways echo the Authorization header in their error bodies)."""
    message = public_message(e, settings)
    for dify_cls, engine_classes in _ERRORS.items():
        if isinstance(e, tuple(engine_classes)):
            return dify_cls(message)
    return InvokeError(message)


@functools.cache
def _template_rules() -> tuple[dict, ...]:
    """The customizable model's parameter rules, read once (the SDK asks for the schema on
    every request)."""
    return tuple(yaml.safe_load(_TEMPLATE.read_text())["parameter_rules"])


_FITTED: dict[tuple[str, int], AIModelEntity] = {}


def _fitted(schema: AIModelEntity, context: int) -> AIModelEntity:
    """A catalogue ``schema`` for a server whose context is ``context`` tokens, when that is less
    than the model card's; max_tokens then defaults to half of it at most (the rest is the
    prompt's and the history's). Its maximum stays the card's: the SDK checks every request's
    parameters against it, and apps saved with more are fitted at the server (``context.py``).
    Cached: the SDK asks for the schema on every request."""
    declared = schema.model_properties.get(ModelPropertyKey.CONTEXT_SIZE)
    if not isinstance(declared, int) or context >= declared:
        return schema
    key = (schema.model, context)
    out = _FITTED.get(key)
    if out is None:
        out = schema.model_copy(deep=True)
        out.model_properties[ModelPropertyKey.CONTEXT_SIZE] = context
        for rule in out.parameter_rules:
            if rule.name == "max_tokens" and rule.default is not None:
                rule.default = min(rule.default, max(1, context // 2))
        _FITTED[key] = out
    return out


def _part(p: object) -> dict:
    """One part of a Dify message as OpenAI's. An image's ``data`` is its URL, or its base64 as a
    data URL (Dify sends either, by its MULTIMODAL_SEND_FORMAT); content no DeepSeek model takes
    (documents, audio, video) is refused rather than dropped unseen."""
    if isinstance(p, TextPromptMessageContent):
        return {"type": "text", "text": p.data}
    if isinstance(p, ImagePromptMessageContent):
        return {"type": "image_url", "image_url": {"url": p.data, "detail": p.detail.value}}
    name = getattr(p, "filename", "") or getattr(p, "mime_type", "") or "unnamed"
    raise BadRequestError(f"the conversation carries {getattr(p, 'type', type(p).__name__)} content ({name})",
                          hint="DeepSeek models take text and images only: remove the file, or turn it "
                               "into text first (e.g. with a document extractor)")


def _text(content: object) -> str | list[dict]:
    """A Dify message's content as OpenAI's: one string, or with images, parts in their order
    (whether and where an image may go is the engine's to say: deepseek_engine/images.py)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [_part(p) for p in content]
        if any(p["type"] == "image_url" for p in parts):
            return parts
        return "".join(p["text"] for p in parts)
    return ""


def to_openai_message(m: PromptMessage) -> dict:
    if isinstance(m, AssistantPromptMessage):
        out: dict = {"role": "assistant", "content": _text(m.content)}
        if m.tool_calls:
            out["tool_calls"] = [{"id": c.id, "type": "function",
                                  "function": {"name": c.function.name,
                                               "arguments": c.function.arguments}}
                                 for c in m.tool_calls]
        return out
    if isinstance(m, ToolPromptMessage):
        return {"role": "tool", "content": _text(m.content), "tool_call_id": m.tool_call_id}
    if isinstance(m, UserPromptMessage):
        return {"role": "user", "content": _text(m.content)}
    return {"role": "system", "content": _text(m.content)}  # system and developer


def to_openai_tool(t: PromptMessageTool) -> dict:
    return {"type": "function", "function": {"name": t.name, "description": t.description,
                                             "parameters": t.parameters}}


def _tool_calls(calls: list[dict]) -> list[AssistantPromptMessage.ToolCall]:
    return [AssistantPromptMessage.ToolCall(
        id=c["id"], type="function",
        function=AssistantPromptMessage.ToolCall.ToolCallFunction(
            name=c["function"]["name"], arguments=c["function"]["arguments"]))
        for c in calls]


class _Catalogue:
    """The predefined models by name and those that take images, as of one list of schemas
    (``of``: a list of the same schema objects, in the same order)."""

    __slots__ = ("by_name", "ids", "schemas", "vision")

    def __init__(self, schemas: list[AIModelEntity]) -> None:
        self.schemas = tuple(schemas)  # held, so that no other object takes one of their ids
        self.ids = tuple(map(id, schemas))
        self.by_name = {m.model: m for m in schemas}  # the last of a name wins, as in the SDK's lookup
        self.vision = tuple(m.model for m in schemas if ModelFeature.VISION in (m.features or ()))

    def of(self, schemas: list[AIModelEntity]) -> bool:
        return tuple(map(id, schemas)) == self.ids


_LAST_CATALOGUE: _Catalogue | None = None


class DeepSeekSelfHostedLLM(LargeLanguageModel):
    # -- invoke --------------------------------------------------------------------------
    def _invoke(self, model: str, credentials: dict, prompt_messages: list[PromptMessage],
                model_parameters: dict, tools: list[PromptMessageTool] | None = None,
                stop: list[str] | None = None, stream: bool = True, user: str | None = None,
                ) -> LLMResult | Generator[LLMResultChunk, None, None]:
        # blocking callers see nothing until the end, so the engine may retry at any point
        chunks = scoped(self._generate(model, credentials, prompt_messages, model_parameters, tools,
                                       stop, user, buffered=not stream), secrets_for(credentials))
        if stream:
            return chunks
        return self._collect(model, chunks)

    def _generate(self, model, credentials, prompt_messages, model_parameters, tools, stop, user,
                  buffered=False) -> Generator[LLMResultChunk, None, None]:
        # Everything runs inside the generator, so every failure (also mid-stream, which the SDK
        # does not map) reaches Dify as a typed error; _invoke runs it with the credentials'
        # secrets in scope, so that none reaches an error or a log line.
        completion = None
        try:
            completion = Completion(
                credentials, model, [to_openai_message(m) for m in prompt_messages], model_parameters,
                catalogue=self._is_predefined(model),
                tools=[to_openai_tool(t) for t in tools] if tools else None, stop=stop, user=user,
                buffered=buffered, max_chars=_MAX_CHUNK_CHARS, vision_models=self._vision_models(),
                offload=_offload)
            pieces = completion.pieces()
            try:
                for index, piece in enumerate(pieces):
                    if isinstance(piece, Finished):
                        yield LLMResultChunk(model=model, system_fingerprint=_CACHED if piece.cached else None,
                                             delta=LLMResultChunkDelta(
                            index=index, message=AssistantPromptMessage(
                                content=piece.text, tool_calls=_tool_calls(piece.tool_calls)),
                            usage=self._usage(piece.prompt_tokens, piece.completion_tokens),
                            finish_reason=piece.finish_reason))
                    else:
                        yield self._chunk(model, index, piece.text, piece.tool_calls)
            finally:
                pieces.close()  # when Dify stops reading, the engine closes the upstream stream
        except EngineError as e:
            raise to_dify_error(e, completion.settings if completion else None) from None
        except Exception as e:  # noqa: BLE001 - the last line of defence: typed, scrubbed, no traceback
            raise _UNEXPECTED(report_unexpected(e, completion.settings if completion else None)) from None

    def _usage(self, prompt_tokens: int, completion_tokens: int) -> LLMUsage:
        """Usage without prices: self-hosted models declare none, and the SDK's price lookup
        would fetch a customizable model's schema (a server call) at the end of every stream."""
        usage = LLMUsage.empty_usage()
        usage.prompt_tokens = prompt_tokens
        usage.completion_tokens = completion_tokens
        usage.total_tokens = prompt_tokens + completion_tokens
        usage.latency = time.perf_counter() - self.started_at
        return usage

    @staticmethod
    def _chunk(model: str, index: int, text: str, calls: list[dict]) -> LLMResultChunk:
        return LLMResultChunk(model=model, delta=LLMResultChunkDelta(
            index=index, message=AssistantPromptMessage(content=text, tool_calls=_tool_calls(calls))))

    @staticmethod
    def _collect(model: str, chunks: Generator[LLMResultChunk, None, None]) -> LLMResult:
        """Blocking mode: the same stream (so the idle deadline applies), gathered."""
        text: list[str] = []
        calls: list = []
        usage = fingerprint = None
        for c in chunks:
            text.append(c.delta.message.content or "")
            calls.extend(c.delta.message.tool_calls)
            usage = c.delta.usage or usage
            fingerprint = c.system_fingerprint or fingerprint
        result = LLMResult(model=model, message=AssistantPromptMessage(content="".join(text), tool_calls=calls),
                           usage=usage, system_fingerprint=fingerprint)
        # Dify reads one chunk of a blocking answer: it must fit one line (measured when it may not)
        chars = sum(map(len, text)) + sum(len(c.function.arguments) for c in calls)
        if chars > _MAX_CHUNK_CHARS:
            size = len(result.to_llm_result_chunk().model_dump_json().encode())
            if size > _MAX_LINE_BYTES:
                raise InvokeBadRequestError(f"the answer is {size:,} bytes, more than one message to Dify "
                                            f"may carry ({_MAX_LINE_BYTES:,}); turn streaming on, or lower "
                                            "max_tokens")
        return result

    # -- model resolution ----------------------------------------------------------------
    def _catalogue(self) -> _Catalogue:
        """The catalogue as a request reads it, worked out once per list of schemas, not scanned
        again for every request: the SDK makes an instance per request, each given a new list of
        the provider's same schema objects (``ModelFactory.get_instance``), so the view is kept
        process-wide for the last schemas seen (others, e.g. a test's, are read afresh)."""
        global _LAST_CATALOGUE
        schemas = self.predefined_models()
        seen = _LAST_CATALOGUE
        if seen is None or not seen.of(schemas):
            seen = _LAST_CATALOGUE = _Catalogue(schemas)
        return seen

    def _is_predefined(self, model: str) -> bool:
        return model in self._catalogue().by_name

    def _vision_models(self) -> tuple[str, ...]:
        """The catalogue entries that take images: those whose YAML declares vision."""
        return self._catalogue().vision

    # -- tokens --------------------------------------------------------------------------
    def get_num_tokens(self, model: str, credentials: dict, prompt_messages: list[PromptMessage],
                       tools: list[PromptMessageTool] | None = None) -> int:
        with secret_scope(secrets_for(credentials)):
            try:
                messages = build_body("x", [to_openai_message(m) for m in prompt_messages], {})["messages"]
                vocab = family_for(model, settings_for(credentials), catalogue=self._is_predefined(model)).tokenizer
                return _offload(count_messages, messages, [to_openai_tool(t) for t in tools] if tools else None,
                                vocab)
            except EngineError as e:  # content no model takes: as invoke would answer
                raise to_dify_error(e) from None
            except Exception as e:  # noqa: BLE001 - the last line of defence: typed and scrubbed
                raise _UNEXPECTED(report_unexpected(e)) from None

    # -- validation ----------------------------------------------------------------------
    def validate_credentials(self, model: str, credentials: Mapping) -> None:
        settings = None
        with secret_scope(secrets_for(credentials)):
            try:
                settings = settings_for(credentials)
                if self._is_predefined(model):
                    validate_endpoints(settings, wanted=settings.served_model_name, catalogue=model)
                    known_context(model, settings)  # read the served context for its schema
                else:
                    validate_endpoints(settings, wanted=settings.served_model_name or model,
                                       catalogue=None, need_context=settings.context_size is None)
            except EngineError as e:
                raise CredentialsValidateFailedError(public_message(e, settings)) from None
            except Exception as e:  # noqa: BLE001 - the last line of defence: typed and scrubbed
                raise CredentialsValidateFailedError(report_unexpected(e, settings)) from None

    # -- customizable models -------------------------------------------------------------
    def get_customizable_model_schema(self, model: str, credentials: Mapping) -> AIModelEntity:
        with secret_scope(secrets_for(credentials)):
            try:
                return self._customizable_schema(model, credentials)
            except Exception as e:  # noqa: BLE001 - the last line of defence: typed and scrubbed
                raise _UNEXPECTED(report_unexpected(e)) from None

    def _customizable_schema(self, model: str, credentials: Mapping) -> AIModelEntity:
        try:
            settings = settings_for(credentials)
        except ConfigError:
            settings = None
        context = settings.context_size if settings else None
        if context is None and settings is not None:
            context = discovered_context(model, settings)
        context = context or _DEFAULT_CONTEXT
        max_out = (settings.max_tokens_to_sample if settings else None) or min(8192, context)
        family = family_for(model, settings, catalogue=False) if settings else None
        rules = []
        for raw in _template_rules():
            rule = dict(raw)
            name = rule.get("name")
            if name == "max_tokens":
                rule["max"] = max_out
                rule["default"] = min(int(rule.get("default") or max_out), max_out)
            elif name in SWITCH_PARAMETERS:  # the switch of a thinking-on-demand model, its family's
                if family is None or not family.hybrid or (name == "reasoning_effort" and not family.efforts):
                    continue
                if name == "thinking":
                    rule["default"] = family.thinking_default
                else:
                    rule["options"], rule["default"] = list(family.efforts), family.effort_default
            elif name in STRUCTURED_PARAMETERS and not (settings and settings.structured_output):
                continue  # the model's switch: without the rules, Dify puts the schema in the prompt
            rules.append(ParameterRule(**rule))
        features = []
        if settings and settings.tool_calling:
            features += [ModelFeature.TOOL_CALL, ModelFeature.MULTI_TOOL_CALL,
                         ModelFeature.STREAM_TOOL_CALL]
        if family is None or family.thinking != "never" or settings.tool_calling:
            features.append(ModelFeature.AGENT_THOUGHT)
        if settings and settings.vision:
            features.append(ModelFeature.VISION)
        if settings and settings.structured_output:
            features.append(ModelFeature.STRUCTURED_OUTPUT)
        return AIModelEntity(
            model=model, label=I18nObject(en_US=model), model_type=ModelType.LLM,
            features=features, fetch_from=FetchFrom.CUSTOMIZABLE_MODEL,
            model_properties={ModelPropertyKey.MODE: LLMMode.CHAT.value,
                              ModelPropertyKey.CONTEXT_SIZE: context},
            parameter_rules=rules)

    def get_model_schema(self, model: str, credentials: Mapping | None = None) -> AIModelEntity | None:
        """A catalogue model as it is served. Dify sizes the history it sends, and lowers
        max_tokens, by the schema's context size: a replica started with a smaller
        ``--max-model-len`` than the model card's is announced with its own, or long
        conversations would be packed past it and refused."""
        schema = self._catalogue().by_name.get(model) or super().get_model_schema(model, credentials)
        if schema is None or not credentials or schema.fetch_from != FetchFrom.PREDEFINED_MODEL:
            return schema
        with secret_scope(secrets_for(credentials)):
            try:
                settings = settings_for(credentials)
            except ConfigError:
                return schema  # invoke and validation say what is wrong
            try:
                served = known_context(model, settings)
            except Exception as e:  # noqa: BLE001 - the catalogue's schema still serves; the log says why
                report_unexpected(e, settings)
                return schema
        return _fitted(schema, served) if served else schema

    # -- errors --------------------------------------------------------------------------
    @property
    def _invoke_error_mapping(self) -> dict[type[InvokeError], list[type[Exception]]]:
        return _ERRORS

    def _transform_invoke_error(self, error: Exception) -> InvokeError:
        # Our errors already carry an endpoint-specific message; the SDK's default would replace
        # it with a generic one prefixed "[models]".
        if isinstance(error, InvokeError):
            return error
        if isinstance(error, EngineError):
            return to_dify_error(error)
        return _UNEXPECTED(report_unexpected(error))  # the SDK's default would quote it raw
