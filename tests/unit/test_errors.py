import pytest

from deepseek_engine.errors import (AuthError, BadRequestError, ModelNotFoundError, RateLimitError,
                                    ServerError, error_from_response, server_message)

OVERFLOW = ('{"error":{"message":"This model\'s maximum context length is 2048 tokens. However, your '
            'prompt contains at least 2049 input tokens.","type":"BadRequestError","param":"input_tokens","code":400}}')


def test_context_overflow_keeps_the_server_message():
    e = error_from_response(400, OVERFLOW, "gpu-1:8000/v1")
    assert isinstance(e, BadRequestError)
    assert "maximum context length is 2048 tokens" in str(e)
    assert "gpu-1:8000/v1" in str(e) and "Shorten" in str(e)


@pytest.mark.parametrize("status,cls", [(401, AuthError), (403, AuthError), (429, RateLimitError),
                                        (500, ServerError), (502, ServerError), (503, ServerError),
                                        (422, BadRequestError)])
def test_status_classes(status, cls):
    assert type(error_from_response(status, "", "e")) is cls


def test_unknown_model_404():
    e = error_from_response(404, '{"error":{"message":"The model `x` does not exist.","code":404}}', "e")
    assert isinstance(e, ModelNotFoundError) and "served model name" in str(e)


def test_retry_after_parsed():
    assert error_from_response(429, "", "e", "2.5").retry_after == 2.5
    assert error_from_response(429, "", "e", "Wed, 21 Oct 2015 07:28:00 GMT").retry_after is None


def test_server_message_shapes():
    assert server_message('{"object":"error","message":"bad","code":400}') == "bad"
    assert server_message('{"detail":[{"msg":"field required"}]}') == "field required"
    assert server_message("<html><head><title>502 Bad Gateway</title></head><body>x</body></html>") == "502 Bad Gateway"
    assert server_message("x" * 1000).endswith("…")
