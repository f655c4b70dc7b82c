import pytest

from deepseek_engine.errors import (
    AuthError,
    BadRequestError,
    ModelNotFoundError,
    RateLimitError,
    ServerError,
    UnavailableError,
    error_from_response,
    server_message,
)

OVERFLOW = ('{"error":{"message":"This model\'s maximum context length is 2048 tokens. However, your '
            'prompt contains at least 2049 input tokens.","type":"BadRequestError","param":"input_tokens","code":400}}')


def test_context_overflow_keeps_the_server_message():
    e = error_from_response(400, OVERFLOW, "gpu-1:8000/v1")
    assert isinstance(e, BadRequestError)
    assert "maximum context length is 2048 tokens" in str(e)
    assert "gpu-1:8000/v1" in str(e) and "Shorten" in str(e)


def test_too_many_images_says_what_decides_the_count():
    """vLLM's multimodal limit of a vision model: --limit-mm-per-prompt decides."""
    body = ('{"error":{"message":"At most 2 image(s) may be provided in one prompt.","type":"BadRequestError",'
            '"param":"image","code":400}}')
    e = error_from_response(400, body, "gpu-1:8000/v1")
    assert isinstance(e, BadRequestError) and str(e).startswith("[gpu-1:8000/v1] the server rejected")
    assert "At most 2 image(s)" in str(e) and "--limit-mm-per-prompt" in str(e)


def test_images_to_a_text_only_model_say_to_serve_a_vision_model():
    """vLLM 0.32's words for images sent to a text-only model (tests/real pins them)."""
    body = ('{"error":{"message":"my-model is not a multimodal model","type":"BadRequestError",'
            '"param":null,"code":400}}')
    e = error_from_response(400, body, "gpu-1:8000/v1")
    assert isinstance(e, BadRequestError) and "is not a multimodal model" in str(e)
    assert "vision model" in str(e) and "Vision off" in str(e)


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


def test_engine_errors_are_scrubbed_of_the_secrets_in_scope_when_raised():
    """A server's words reach an engine error in many places (bodies, in-band errors, malformed
    chunks): every one is scrubbed of the request's secrets at construction, whoever builds it."""
    from deepseek_engine.errors import secret_scope

    said = "echo: sk-SECRET-abc, Bearer eyJhbGciOi.x-y_z"
    with secret_scope({"sk-SECRET-abc"}):
        e = ServerError(said, endpoint="gpu-1")
    assert e.message == "echo: ***, Bearer ***" and "SECRET" not in str(e)
    assert ServerError("sk-SECRET-abc").message == "sk-SECRET-abc"  # another request's: not its own


def test_remembered_secrets_are_scrubbed_in_every_scope_and_bounded():
    """OAuth2 access tokens are the process's, shared by requests and quoted into cached answers."""
    from deepseek_engine import errors

    errors.remember_secret("tok-SECRET-first")
    assert ServerError("cached model list: tok-SECRET-first").message == "cached model list: ***"
    for i in range(errors._REMEMBERED_MAX):
        errors.remember_secret(f"tok-{i:04d}")
    assert "tok-SECRET-first" not in errors._REMEMBERED and len(errors._REMEMBERED) == errors._REMEMBERED_MAX
    errors._REMEMBERED.clear()


def test_a_scope_covers_each_step_of_an_iterator_and_the_threads_it_hands_work_to():
    import threading

    from deepseek_engine.errors import carry_scope, scoped, scrub

    seen_in_thread: list[str] = []

    def steps():
        yield scrub("a sk-SECRET-abc")
        t = threading.Thread(target=carry_scope(lambda: seen_in_thread.append(scrub("sk-SECRET-abc"))))
        t.start()
        t.join()
        yield scrub("b sk-SECRET-abc")

    it = scoped(steps(), {"sk-SECRET-abc"})
    assert next(it) == "a ***"
    assert scrub("sk-SECRET-abc") == "sk-SECRET-abc"  # between steps: the caller's scope (none)
    assert list(it) == ["b ***"] and seen_in_thread == ["***"]


def test_scope_secrets_are_also_scrubbed_url_encoded():
    from deepseek_engine.errors import scrub, secret_scope

    with secret_scope({"pw/SECRET+1"}):
        assert scrub("a pw/SECRET+1 b pw%2FSECRET%2B1") == "a *** b ***"


def test_scrub_filter_scrubs_every_record_of_a_logger_tree():
    """The plugin's loggers carry server text (in-band errors, discovery failures): whatever a
    record holds (arguments, an exception's text, a child logger's record) leaves scrubbed."""
    import io
    import logging

    from deepseek_engine.errors import ScrubFilter, secret_scope

    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(ScrubFilter())
    parent = logging.getLogger("scrubtest")
    parent.addHandler(handler)
    parent.propagate = False
    child = logging.getLogger("scrubtest.client")
    try:
        with secret_scope({"sk-SECRET-abc"}):
            child.warning("stream broke (%s)", "the server failed: Authorization: Bearer sk-SECRET-abc")
            child.warning("bare %s and %d", "sk-SECRET-abc", 3)
            try:
                raise ValueError("bad finish_reason {'auth': 'sk-SECRET-abc'}")
            except ValueError:
                child.exception("crashed")
            child.warning("wrong arguments %s %s", "sk-SECRET-abc")  # a bug: still scrubbed
        parent.warning("outside any scope: Basic b3BzOnB3LVNFQ1JFVA==")
    finally:
        parent.removeHandler(handler)
    text = out.getvalue()
    assert "SECRET" not in text and "b3Bz" not in text
    assert "stream broke (the server failed: Authorization: Bearer ***)" in text
    assert "bare *** and 3" in text and "ValueError: bad finish_reason {'auth': '***'}" in text


def test_a_secret_cut_short_is_scrubbed_too():
    """Texts cut short by code the plugin does not own (pydantic shortens the values it quotes)
    keep a secret's head or tail: pieces of 8 characters or more go; shorter ones are too common."""
    from deepseek_engine.errors import scrub

    key = "sk-SECRET+key/7f3a9c"
    said = "input_value={'auth': 'sk-SECRET+key/7...SECRET%2Bkey%2F7f3a9c)'}, and sk-SECRET cut"
    assert scrub(said, [key]) == "input_value={'auth': '***...***)'}, and *** cut"
    assert scrub("the sk-SECR prefix and 7f3a9c tail stay", [key]) == "the sk-SECR prefix and 7f3a9c tail stay"


def test_the_hints_that_quote_pem_armor_survive_a_client_key_in_scope():
    from deepseek_engine import parse_settings
    from deepseek_engine.errors import ConfigError, public_message, secret_scope
    from deepseek_engine.settings import credential_secrets

    creds = {"endpoint_urls": "https://gw/v1", "tls_mode": "custom", "tls_client_cert": "x",
             "tls_client_key": ("-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n"
                                "-----END PRIVATE KEY-----")}
    hint = "tls_client_key is not a PEM private key (it should start with -----BEGIN PRIVATE KEY-----)"
    with secret_scope(credential_secrets(creds)):
        assert public_message(ConfigError(hint), parse_settings(creds)) == hint
        assert ConfigError("read MIIEvQIBADANBgkqhkiG9w0BAQEFAASC").message == "read ***"
