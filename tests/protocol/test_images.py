"""Images through the plugin launched as the daemon launches it: Dify's image content reaches a
vision model as OpenAI image_url parts; a text-only model, an image the limits refuse and content
no DeepSeek model takes are clear bad-request errors instead of silent loss."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import yaml

from deepseek_engine.families import family_of
from deepseek_sim import SimConfig, Simulator
from tests.protocol import chunk_rules as cr
from tests.protocol.harness import assistant_message, system_message, user_message
from tests.protocol.plugin_util import PROVIDER, invokes, last_invoke, running_plugin

ROOT = Path(__file__).resolve().parents[2]
ANSWER = "Hello! I am a simulated DeepSeek model. How can I help you today?"
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwABBAEAwS2OUAAAAABJ"
                        "RU5ErkJggg==")  # 1x1
PNG_B64 = base64.b64encode(PNG).decode()
VISION_ON = {"vision_support": "support"}


def catalogue_vision_models() -> list[str]:
    """Catalogue entries whose YAML declares vision (none before the issue-14 catalogue merge)."""
    out = []
    for path in sorted((ROOT / "models/llm").glob("*.yaml")):
        raw = yaml.safe_load(path.read_text())
        if isinstance(raw, dict) and "vision" in (raw.get("features") or []):
            out.append(raw["model"])
    return out


@pytest.fixture(scope="module")
def plugin():
    with running_plugin() as p:
        yield p


def creds(sim, **extra) -> dict:
    return {"endpoint_urls": sim.base_url, "api_key": None, "served_model_name": None, **extra}


def text(t: str) -> dict:
    return {"type": "text", "data": t}


def image(data: bytes = PNG, mime: str = "image/png", fmt: str = "png", url: str = "") -> dict:
    """An ImagePromptMessageContent as Dify sends it: base64 by default (MULTIMODAL_SEND_FORMAT),
    or a signed URL of its file server."""
    return {"type": "image", "format": fmt, "mime_type": mime, "filename": f"photo.{fmt}", "detail": "low",
            "base64_data": "" if url else base64.b64encode(data).decode(), "url": url}


def ask(*parts: dict) -> list[dict]:
    return [system_message("Be brief."), user_message([text("What is in"), *parts, text("this picture?")])]


def chat(plugin, credentials, model, prompt, parameters=None, **kw):
    result = plugin.invoke_llm(PROVIDER, model, credentials, prompt, parameters or {}, timeout=90, **kw)
    assert cr.check_llm_stream(result, require_usage=True, require_finish_reason=True) == []
    return result


def refused(result, *needles: str) -> str:
    assert result.error is not None, cr.collect_text(result)
    assert result.error["error_type"] == "InvokeBadRequestError", result.error
    message = result.error["message"]
    for needle in needles:
        assert needle in message, message
    return message


# -- a vision model gets image_url parts, text kept in order -----------------------------------
@pytest.mark.parametrize("sent,url", [
    (image(), f"data:image/png;base64,{PNG_B64}"),
    (image(url="https://dify.example/files/abc/file-preview?sign=x"),
     "https://dify.example/files/abc/file-preview?sign=x"),
], ids=["base64", "url"])
def test_image_and_text_reach_a_vision_model_as_image_url_parts(plugin, sent, url):
    with Simulator(SimConfig(served_model="my-vl", vision=True, shape="plain")) as sim:
        result = chat(plugin, creds(sim, **VISION_ON), "my-vl", ask(sent))
        body = last_invoke(sim.requests).body
    assert result.error is None, result.error
    assert cr.collect_text(result) == "I see 1 image. " + ANSWER
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "What is in"},
                                     {"type": "image_url", "image_url": {"url": url, "detail": "low"}},
                                     {"type": "text", "text": "this picture?"}]},
    ]


@pytest.mark.parametrize("model", catalogue_vision_models())
def test_a_catalogue_vision_model_takes_images(plugin, model):
    # a thinking-on-demand vision model (V4.1) is served as one, asked not to think: the images matter here
    family = family_of(model)
    hybrid = family.name if family.thinking == "switch" else None
    with Simulator(SimConfig(served_model=model, vision=True, shape="plain", hybrid=hybrid)) as sim:
        result = chat(plugin, creds(sim, served_model_name=model), model, ask(image(), image()),
                      parameters={"thinking": False} if hybrid else {})
    assert result.error is None, result.error
    assert cr.collect_text(result).startswith("I see 2 images. ")


def test_a_cut_stream_is_continued_with_the_images_kept(plugin):
    with Simulator(SimConfig(served_model="my-vl", vision=True, shape="plain")) as sim:
        assert plugin.validate_model_credentials(PROVIDER, "my-vl", creds(sim, **VISION_ON)).error is None
        since = len(sim.requests)
        sim.inject("drop_mid_stream", after=8)
        result = chat(plugin, creds(sim, **VISION_ON), "my-vl", ask(image()))
        chats = [r.body for r in invokes(sim.requests, since)]
    assert result.error is None, result.error
    assert cr.collect_text(result) == "I see 1 image. " + ANSWER
    assert len(chats) == 2 and chats[1]["continue_final_message"] is True
    assert chats[1]["messages"][:2] == chats[0]["messages"]
    assert chats[1]["messages"][1]["content"][1]["type"] == "image_url"


# -- a model that takes no images says so, naming the model and the remedy ----------------------
def test_a_text_only_catalogue_model_refuses_an_image(plugin):
    with Simulator(SimConfig(served_model="deepseek-v3", shape="plain")) as sim:
        result = chat(plugin, creds(sim), "deepseek-v3", ask(image()))
        sent = invokes(sim.requests)
    refused(result, "deepseek-v3", "takes no images", "1 image")
    assert sent == []  # refused before anything was sent


def test_a_customizable_model_without_the_vision_switch_refuses_an_image(plugin):
    with Simulator(SimConfig(served_model="my-model", vision=True, shape="plain")) as sim:
        result = chat(plugin, creds(sim), "my-model", ask(image(), image()))
        sent = invokes(sim.requests)
    refused(result, "my-model", "takes no images", "2 images", "Vision")
    assert sent == []


def test_a_server_that_refuses_images_is_a_bad_request_naming_the_endpoint(plugin):
    """The operator switched vision on, but the server's model is text-only: vLLM's 400 reaches
    the user with the endpoint's name and what to change."""
    with Simulator(SimConfig(served_model="my-model", shape="plain")) as sim:
        result = chat(plugin, creds(sim, **VISION_ON), "my-model", ask(image()))
        where = sim.base_url.split("//")[1]
    refused(result, where, "my-model is not a multimodal model", "vision model")


# -- limits: format (by the bytes, not the name), size ------------------------------------------
@pytest.mark.parametrize("data,mime,fmt", [
    (b"BM" + bytes(64), "image/png", "png"),  # a BMP named as a PNG
    (b"%PDF-1.7\n" + bytes(64), "image/jpeg", "jpg"),
    (b'<svg xmlns="http://www.w3.org/2000/svg"/>', "image/svg+xml", "svg"),
], ids=["bmp", "pdf", "svg"])
def test_an_image_of_another_format_is_refused(plugin, data, mime, fmt):
    with Simulator(SimConfig(served_model="my-vl", vision=True)) as sim:
        result = chat(plugin, creds(sim, **VISION_ON), "my-vl", ask(image(data, mime, fmt)))
        sent = invokes(sim.requests)
    refused(result, "JPEG, PNG, GIF or WebP", "convert")
    assert sent == []


def test_a_mislabelled_image_is_sent_as_what_its_bytes_are(plugin):
    jpeg = b"\xff\xd8\xff\xe0" + bytes(64)
    with Simulator(SimConfig(served_model="my-vl", vision=True, shape="plain")) as sim:
        result = chat(plugin, creds(sim, **VISION_ON), "my-vl", ask(image(jpeg, "image/png", "png")))
        part = last_invoke(sim.requests).body["messages"][1]["content"][1]
    assert result.error is None, result.error
    assert part["image_url"]["url"].startswith("data:image/jpeg;base64,/9j/")


def test_an_oversized_image_is_refused_naming_the_limit(plugin):
    from deepseek_engine.images import MAX_IMAGE_BYTES

    big = PNG + bytes(MAX_IMAGE_BYTES)
    with Simulator(SimConfig(served_model="my-vl", vision=True)) as sim:
        result = chat(plugin, creds(sim, **VISION_ON), "my-vl", ask(image(big)))
        sent = invokes(sim.requests)
    refused(result, "20 MiB", "smaller")
    assert sent == []


# -- content no DeepSeek model takes -----------------------------------------------------------
@pytest.mark.parametrize("kind,mime,fmt", [("document", "application/pdf", "pdf"), ("audio", "audio/mpeg", "mp3"),
                                           ("video", "video/mp4", "mp4")])
def test_other_content_is_a_clear_error_not_silently_dropped(plugin, kind, mime, fmt):
    part = {"type": kind, "format": fmt, "mime_type": mime, "filename": f"report.{fmt}",
            "base64_data": base64.b64encode(b"data").decode(), "url": ""}
    with Simulator(SimConfig(served_model="my-vl", vision=True)) as sim:
        result = chat(plugin, creds(sim, **VISION_ON), "my-vl", ask(part))
        counted = plugin.get_llm_num_tokens(PROVIDER, "my-vl", creds(sim, **VISION_ON), ask(part))
        sent = invokes(sim.requests)
    refused(result, kind, "report." + fmt, "text and images")
    refused(counted, kind, "report." + fmt)  # counted as invoke would answer, not an unexpected failure
    assert sent == []


def test_an_image_outside_a_user_turn_is_refused_or_named(plugin):
    """DeepSeek's chat templates take images in user turns only: one in a system prompt is an
    error saying where to put it; one in an assistant turn (Dify's history of an image a tool made)
    stays a marker in the text."""
    with Simulator(SimConfig(served_model="my-vl", vision=True, shape="plain")) as sim:
        c = creds(sim, **VISION_ON)
        bad = chat(plugin, c, "my-vl", [system_message([text("Style guide:"), image()]), user_message("hi")])
        ok = chat(plugin, c, "my-vl", [user_message("draw a cat"), assistant_message([image(), text("Here it is.")]),
                                       user_message("thanks")])
        body = last_invoke(sim.requests).body
    refused(bad, "system", "user message")
    assert ok.error is None, ok.error
    assert body["messages"][1] == {"role": "assistant", "content": "[image]Here it is."}


# -- the customizable model's vision switch and the offline token count ------------------------
def test_the_vision_switch_adds_vision_to_a_customizable_model_s_schema(plugin):
    with Simulator(SimConfig(served_model="my-vl", vision=True)) as sim:
        on = plugin.get_ai_model_schemas(PROVIDER, "my-vl", creds(sim, **VISION_ON))
        off = plugin.get_ai_model_schemas(PROVIDER, "my-vl", creds(sim))
        no = plugin.get_ai_model_schemas(PROVIDER, "my-vl", creds(sim, vision_support="no_support"))
    assert "vision" in on.chunks[0]["model_schema"]["features"]
    assert "vision" not in off.chunks[0]["model_schema"]["features"]
    assert "vision" not in no.chunks[0]["model_schema"]["features"]


def test_an_image_counts_as_an_estimate_in_the_offline_token_count(plugin):
    from deepseek_engine.images import TOKENS_PER_IMAGE

    with Simulator(SimConfig(served_model="my-vl", vision=True)) as sim:
        def count(prompt):
            res = plugin.get_llm_num_tokens(PROVIDER, "my-vl", creds(sim, **VISION_ON), prompt)
            assert res.error is None, res.error
            return res.chunks[0]["num_tokens"]

        without = count([user_message([text("What is in"), text("this picture?")])])
        with_two = count([user_message([text("What is in"), image(), image(), text("this picture?")])])
    assert with_two == without + 2 * TOKENS_PER_IMAGE
