"""Images in a request (deepseek_engine/images.py): who takes them, where they may stand, and the
limits each is checked against before anything is sent."""

import base64

import pytest

from deepseek_engine.errors import BadRequestError
from deepseek_engine.images import (
    IMAGE_PLACEHOLDER,
    MAX_IMAGE_BYTES,
    TOKENS_PER_IMAGE,
    ImagePolicy,
    image_count,
    sniff,
)
from deepseek_engine.settings import parse_settings
from deepseek_engine.tokens import count_messages

HEADS = {
    "image/jpeg": b"\xff\xd8\xff\xe0\x00\x10JFIF",
    "image/png": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
    "image/gif": b"GIF89a\x01\x00\x01\x00",
    "image/webp": b"RIFF\x24\x00\x00\x00WEBPVP8 ",
}
VISION = ImagePolicy("my-vl", accepts=True, catalogue=False)


def data_url(raw: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(raw).decode()}"


def part(url: str) -> dict:
    return {"type": "image_url", "image_url": {"url": url, "detail": "low"}}


def user(*parts: dict) -> dict:
    return {"role": "user", "content": [{"type": "text", "text": "look"}, *parts]}


def refusal(policy: ImagePolicy, messages: list[dict]) -> str:
    with pytest.raises(BadRequestError) as e:
        policy.checked(messages)
    return str(e.value)


@pytest.mark.parametrize("mime", HEADS)
def test_the_four_formats_are_known_by_their_bytes(mime):
    assert sniff(HEADS[mime] + bytes(16)) == mime


@pytest.mark.parametrize("head", [b"BM6\x00", b"%PDF-1.7", b"<svg", b"II*\x00", b"RIFF\x00\x00\x00\x00WAVE", b""])
def test_other_bytes_are_no_image_format_taken(head):
    assert sniff(head) is None


@pytest.mark.parametrize("mime", HEADS)
def test_an_image_of_each_format_goes_as_it_came(mime):
    messages = [{"role": "system", "content": "Be brief."}, user(part(data_url(HEADS[mime] + bytes(40), mime)))]
    assert VISION.checked(messages) == messages


def test_a_mislabelled_image_goes_as_what_its_bytes_are():
    raw = HEADS["image/gif"] + bytes(40)
    out = VISION.checked([user(part(data_url(raw, "image/png")))])
    assert out[0]["content"][1] == part(data_url(raw, "image/gif"))


def test_an_http_url_is_the_server_s_to_fetch():
    messages = [user(part("https://dify.example/files/1/file-preview?sign=abc"))]
    assert VISION.checked(messages) == messages


@pytest.mark.parametrize("url,needle", [
    ("file:///etc/passwd", "'file' URL"),
    ("ftp://host/x.png", "'ftp' URL"),
    ("data:image/png,%89PNG", "without base64"),
    ("data:image/png;base64,!!!!not-base64!!!!", "not valid base64"),
    ("", "no URL"),
    (data_url(b"BM" + bytes(40), "image/png"), "not a JPEG, PNG, GIF or WebP image (declared image/png)"),
])
def test_an_image_that_cannot_go_says_why(url, needle):
    assert needle in refusal(VISION, [user(part(url))])


def test_the_size_limit_is_on_the_decoded_bytes():
    policy = ImagePolicy("my-vl", True, False, max_image=3 * 1024 * 1024)
    at_limit = HEADS["image/png"] + bytes(3 * 1024 * 1024 - len(HEADS["image/png"]))
    assert policy.checked([user(part(data_url(at_limit)))])
    message = refusal(policy, [user(part(data_url(at_limit + b"x")))])
    assert "3.0 MiB, more than the 3 MiB an image may be" in message and "smaller image" in message
    assert MAX_IMAGE_BYTES == 20 * 1024 * 1024


def test_the_images_of_a_request_have_a_limit_together():
    one = HEADS["image/png"] + bytes(1024 * 1024)
    policy = ImagePolicy("my-vl", True, False, max_image=2 * 1024 * 1024, max_total=3 * 1024 * 1024)
    assert policy.checked([user(part(data_url(one))), user(part(data_url(one)))])
    message = refusal(policy, [user(part(data_url(one))), user(part(data_url(one)), part(data_url(one)))])
    assert "more than 3 MiB" in message and "fewer or smaller images" in message


def test_a_text_only_catalogue_model_names_itself_and_those_that_take_images():
    policy = ImagePolicy("deepseek-v3", False, True, ("deepseek-vl2", "deepseek-v4.1-flash"))
    message = refusal(policy, [user(part("https://x/1.png")), user(part("https://x/2.png"))])
    assert message.startswith("deepseek-v3 takes no images, and the conversation carries 2 images")
    assert "(deepseek-vl2, deepseek-v4.1-flash)" in message


def test_a_customizable_model_without_the_switch_says_where_to_turn_it_on():
    message = refusal(ImagePolicy("my-model", False, False), [user(part("https://x/1.png"))])
    assert "my-model takes no images" in message and "turn on Vision" in message


def test_text_alone_passes_untouched_whatever_the_model():
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    for policy in (VISION, ImagePolicy("deepseek-v3", False, True)):
        out = policy.checked(messages)
        assert out == messages and all(a is b for a, b in zip(out, messages, strict=True))


@pytest.mark.parametrize("role", ["system", "tool"])
def test_an_image_outside_a_user_turn_is_refused(role):
    message = refusal(VISION, [{"role": role, "content": [part("https://x/1.png")]}, user()])
    assert f"message 1 ({role}) carries an image" in message and "user message" in message


def test_an_image_in_an_assistant_turn_stays_a_marker_in_its_text():
    """Dify's history of an image a tool made: DeepSeek's templates render assistant turns as text."""
    turn = {"role": "assistant", "content": [part("https://x/cat.png"), {"type": "text", "text": "Here it is."}]}
    for policy in (VISION, ImagePolicy("deepseek-v3", False, True)):  # no refusal for a text model either
        assert policy.checked([turn])[0] == {"role": "assistant", "content": IMAGE_PLACEHOLDER + "Here it is."}


def test_catalogue_models_by_their_entry_customizable_ones_by_the_switch():
    on = parse_settings({"endpoint_urls": "http://gpu:8000/v1", "vision_support": "support"})
    off = parse_settings({"endpoint_urls": "http://gpu:8000/v1"})
    assert ImagePolicy.of("deepseek-vl2", off, catalogue=True, vision_models=["deepseek-vl2"]).accepts
    assert not ImagePolicy.of("deepseek-v3", on, catalogue=True, vision_models=["deepseek-vl2"]).accepts
    assert ImagePolicy.of("my-vl", on, catalogue=False).accepts
    assert not ImagePolicy.of("deepseek-vl2", off, catalogue=False, vision_models=["deepseek-vl2"]).accepts


def test_an_image_counts_as_an_estimate_offline():
    text = [{"role": "user", "content": [{"type": "text", "text": "look"}]}]
    two = [user(part(data_url(HEADS["image/png"] * 1000)), part("https://x/1.png"))]
    assert image_count(two[0]["content"]) == 2
    assert count_messages(two) == count_messages(text) + 2 * TOKENS_PER_IMAGE  # base64 is not text
