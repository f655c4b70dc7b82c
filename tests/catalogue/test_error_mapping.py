"""Engine errors as Dify reads them: the SDK's own ``_transform_invoke_error`` (the base class's,
not our override) walks ``_invoke_error_mapping`` and takes the first Dify class whose engine
classes match. Every engine error class gets the Dify class that makes Dify's load balancing do
the right thing (README, "Errors"), and ``to_dify_error`` agrees with the mapping."""

from __future__ import annotations

import pytest
from dify_plugin.errors.model import (
    InvokeAuthorizationError,
    InvokeBadRequestError,
    InvokeConnectionError,
    InvokeError,
    InvokeRateLimitError,
    InvokeServerUnavailableError,
)
from dify_plugin.interfaces.model.large_language_model import LargeLanguageModel

from deepseek_engine import errors
from models.llm.llm import DeepSeekSelfHostedLLM, to_dify_error

# what each engine error must reach Dify as. Connection-type failures (and 502/503/504 still
# failing after every retry) are InvokeConnectionError: with auth and rate-limit errors, the only
# ones on which Dify cools a credential down and fails over.
EXPECTED: dict[str, type[InvokeError]] = {
    "EngineError": InvokeError,
    "ConfigError": InvokeBadRequestError,
    "ConnectError": InvokeConnectionError,
    "UnreachableError": InvokeConnectionError,
    "TLSError": InvokeConnectionError,
    "EndpointsDownError": InvokeConnectionError,
    "TimeoutError_": InvokeConnectionError,
    "FirstTokenTimeout": InvokeConnectionError,
    "IdleTimeout": InvokeConnectionError,
    "TotalTimeout": InvokeConnectionError,
    "StreamBrokenError": InvokeConnectionError,
    "AuthError": InvokeAuthorizationError,
    "RateLimitError": InvokeRateLimitError,
    "BadRequestError": InvokeBadRequestError,
    "ModelNotFoundError": InvokeBadRequestError,
    "ServerError": InvokeServerUnavailableError,
    "UnavailableError": InvokeConnectionError,
}


def _engine_errors() -> list[type[errors.EngineError]]:
    """EngineError and every subclass, however deep: a new class cannot be left out."""
    found, todo = [], [errors.EngineError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return sorted(found, key=lambda c: c.__name__)


ENGINE_ERRORS = _engine_errors()


@pytest.fixture(scope="module")
def llm() -> DeepSeekSelfHostedLLM:
    return DeepSeekSelfHostedLLM([])


def test_every_engine_error_class_has_an_expected_dify_class() -> None:
    assert {c.__name__ for c in ENGINE_ERRORS} == set(EXPECTED)


@pytest.mark.parametrize("cls", ENGINE_ERRORS, ids=lambda c: c.__name__)
def test_the_sdk_reads_the_mapping_as_intended(llm, cls) -> None:
    e = cls("it failed", endpoint="gpu-1:8000/v1")
    got = LargeLanguageModel._transform_invoke_error(llm, e)  # the base class: as Dify reads it
    assert type(got) is EXPECTED[cls.__name__]


@pytest.mark.parametrize("cls", ENGINE_ERRORS, ids=lambda c: c.__name__)
def test_to_dify_error_agrees_and_keeps_the_engine_message(llm, cls) -> None:
    e = cls("it failed", endpoint="gpu-1:8000/v1", hint="check the server's logs")
    got = to_dify_error(e)
    assert type(got) is EXPECTED[cls.__name__]
    assert str(got) == "[gpu-1:8000/v1] it failed; check the server's logs"
    # what the SDK calls on an error the invoke raised (our override): the same class and words
    assert type(llm._transform_invoke_error(e)) is type(got) and str(llm._transform_invoke_error(e)) == str(got)


def test_the_mapping_is_a_literal_dict_of_lists(llm) -> None:
    mapping = llm._invoke_error_mapping
    assert all(issubclass(k, InvokeError) and isinstance(v, list) and v for k, v in mapping.items())
    # every engine class mapped is listed once: a second listing would never be read
    listed = [c for classes in mapping.values() for c in classes]
    assert len(listed) == len(set(listed))
