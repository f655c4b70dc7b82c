import pytest

from deepseek_engine.errors import (AuthError, BadRequestError, ModelNotFoundError, RateLimitError,
                                    ServerError, UnavailableError, error_from_response,
                                    server_message)

OVERFLOW = ('{"error":{"message":"This model\'s maximum context length is 2048 tokens. However, your '
            'prompt contains at least 2049 input tokens.","type":"BadRequestError","param":"input_tokens","code":400}}')


def test_context_overflow_keeps_the_server_message():
    e = error_from_response(400, OVERFLOW, "gpu-1:8000/v1")
    assert isinstance(e, BadRequestError)
    assert "maximum context length is 2048 tokens" in str(e)
    assert "gpu-1:8000/v1" in str(e) and "Shorten" in str(e)


@pytest.mark.parametrize("status,cls", [(401, AuthError), (403, AuthError), (429, RateLimitError),
                                        (500, ServerError), (502, UnavailableError),
                                        (503, UnavailableError), (504, UnavailableError),
                                        (501, ServerError), (422, BadRequestError)])
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


def test_scrub_removes_secrets_and_quoted_authorization_values():
    from deepseek_engine.errors import scrub

    text = ('bad key sk-live-123456 (Authorization: Bearer eyJhbGciOi.x-y_z) '
            '"authorization": "basic b3BzOnB3"; sk-live-1234')
    out = scrub(text, ["sk-live-1234", "sk-live-123456", ""])
    assert "sk-live" not in out and "eyJ" not in out and "b3Bz" not in out
    assert out == ('bad key *** (Authorization: Bearer ***) "authorization": "basic ***"; ***')
    assert scrub(out, ["sk-live-1234"]) == out  # idempotent
    assert scrub("Basic authentication required. Bearer token expected", ["pw"]) == \
        "Basic authentication required. Bearer token expected"  # prose, and too short a secret


def test_public_message_scrubs_the_settings_secrets_and_their_basic_form():
    import base64

    from deepseek_engine import parse_settings
    from deepseek_engine.errors import public_message

    s = parse_settings({"endpoint_urls": "http://ops:p%40ss-word@gpu-1:8000/v1", "api_key": "sk-abcdef"})
    basic = base64.b64encode(b"ops:p@ss-word").decode()
    e = AuthError(f"refused sk-abcdef, p@ss-word and {basic}", endpoint=s.endpoints[0].name)
    assert public_message(e, s) == "[gpu-1:8000/v1] refused ***, *** and ***"
    assert public_message(e) == str(e)  # no settings: only quoted header values go


def test_a_hint_follows_the_message_but_is_not_part_of_it():
    from deepseek_engine.errors import UnreachableError

    e = UnreachableError("could not connect: connection refused", endpoint="gpu-1:8000/v1",
                         hint="check that the server is running")
    assert str(e) == "[gpu-1:8000/v1] could not connect: connection refused; check that the server is running"
    assert e.message == "could not connect: connection refused"  # what summaries and health keep


def test_unavailable_on_every_endpoint_stays_unavailable_a_mix_with_500_does_not():
    from deepseek_engine.client import all_failed
    a, b, c = (error_from_response(s, "", e) for s, e in ((503, "a"), (502, "b"), (500, "c")))
    assert type(all_failed([a, b])) is UnavailableError  # reaches Dify as a connection error
    assert type(all_failed([a, c])) is ServerError  # not every attempt said "unavailable"
