"""The answers of the small endpoints: ``GET /v1/models`` and ``POST /tokenize``."""

from __future__ import annotations

import time
import uuid
from typing import Any

from . import script
from .config import SimConfig
from .errors import error_body
from .httpio import dumps
from .validation import vllm_no_model


def model_list(cfg: SimConfig) -> dict:
    now = int(time.time())
    card: dict[str, Any] = {"id": cfg.served_model, "object": "model", "created": now,
                            "owned_by": cfg.flavor, "root": cfg.served_model}
    if cfg.flavor == "vllm":
        card["root"] = cfg.model_path or "/models/" + cfg.served_model  # vLLM: the --model path
        card["parent"] = None
        card["max_model_len"] = cfg.max_model_len
        card["permission"] = [{
            "id": "modelperm-" + uuid.uuid4().hex, "object": "model_permission", "created": now,
            "allow_create_engine": False, "allow_sampling": True, "allow_logprobs": True,
            "allow_search_indices": False, "allow_view": True, "allow_fine_tuning": False,
            "organization": "*", "group": None, "is_blocking": False,
        }]
    else:
        card["max_model_len"] = cfg.max_model_len
    return {"object": "list", "data": [card]}


def tokenize(cfg: SimConfig, body: Any) -> tuple[int, bytes]:
    """The status and JSON body ``POST /tokenize`` answers to ``body``."""
    if not isinstance(body, dict):
        return 400, error_body(cfg.flavor, 400, "JSON decode error")
    model = body.get("model")
    if model is not None and model != cfg.served_model:
        if cfg.flavor == "vllm":
            return 404, error_body(cfg.flavor, 404, vllm_no_model(model, cfg), param="model")
        return 404, error_body(cfg.flavor, 404, f"The model `{model}` does not exist.")
    if isinstance(body.get("messages"), list):
        tokens = script.token_ids_for_messages(body["messages"])
    elif isinstance(body.get("prompt"), str):
        tokens = script.token_ids_for_text(body["prompt"])
    else:
        return 400, error_body(cfg.flavor, 400, "Either `prompt` or `messages` is required.")
    out = {"count": len(tokens), "max_model_len": cfg.max_model_len, "tokens": tokens, "token_strs": None}
    return 200, dumps(out).encode()
