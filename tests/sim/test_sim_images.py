"""Images in deepseek_sim: a vision model takes image_url parts and says how many it saw; a
text-only model refuses them with vLLM's 400; a vision model refuses more than its limit."""

import httpx
import pytest

from deepseek_sim.script import ANSWER

PNG = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwABBAEAwS2OUAAAAABJ"
       "RU5ErkJggg==")


def _ask(n_images: int) -> list[dict]:
    parts = [{"type": "text", "text": "What is this?"}]
    parts += [{"type": "image_url", "image_url": {"url": PNG}} for _ in range(n_images)]
    return [{"role": "user", "content": parts}]


@pytest.mark.parametrize("n,said", [(1, "I see 1 image. "), (3, "I see 3 images. ")])
def test_a_vision_model_says_how_many_images_it_saw(make_sim, n, said):
    sim = make_sim(vision=True, shape="plain")
    r = httpx.post(sim.base_url + "/chat/completions", json={"messages": _ask(n)})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == said + ANSWER
    assert sim.requests[-1].body["messages"][0]["content"][1]["image_url"]["url"] == PNG  # recorded as sent


@pytest.mark.parametrize("flavor", ["vllm", "sglang"])
def test_a_text_only_model_refuses_images_as_vllm_does(make_sim, flavor):
    sim = make_sim(flavor=flavor, shape="plain")
    r = httpx.post(sim.base_url + "/chat/completions", json={"messages": _ask(1), "stream": True})
    assert r.status_code == 400
    body = r.json() if flavor == "sglang" else r.json()["error"]
    assert body["message"] == f"{sim.config.served_model} is not a multimodal model"  # vLLM 0.32's words
    assert body["type"] == "BadRequestError"
    # text alone is still answered
    ok = httpx.post(sim.base_url + "/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
    assert ok.status_code == 200 and ok.json()["choices"][0]["message"]["content"] == ANSWER


def test_a_vision_model_refuses_more_images_than_its_limit(make_sim):
    sim = make_sim(vision=True, max_images=2)
    assert httpx.post(sim.base_url + "/chat/completions", json={"messages": _ask(2)}).status_code == 200
    r = httpx.post(sim.base_url + "/chat/completions", json={"messages": _ask(3)})
    assert r.status_code == 400
    assert r.json()["error"]["message"] == ("At most 2 image(s) may be provided in one prompt. "
                                            "Set `--limit-mm-per-prompt` to increase this limit.")
