"""Configuration and recorded-request types of the simulator."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

FLAVORS = ("vllm", "sglang")
USAGE_MODES = ("on_request", "never", "always_on_finish")
FAULT_KINDS = (
    "reset_before_headers",
    "status",
    "html_502",
    "malformed_chunk",
    "drop_mid_stream",
    "stall_mid_stream",
    "no_done",
    "slow_headers",
    "error_event",
)


@dataclass
class SimConfig:
    """Behaviour of a simulated endpoint. Mutable while the simulator runs:
    every request reads the current values (timings are read per event)."""

    served_model: str = "deepseek-r1"
    max_model_len: int = 8192
    flavor: str = "vllm"  # "vllm" | "sglang"
    shape: str = "reasoning"  # see deepseek_sim.script.SHAPES
    api_key: str | None = None
    ttft: float = 0.0
    inter_token: float = 0.0
    chunk_tokens: int = 1
    usage: str = "on_request"  # see USAGE_MODES
    send_done: bool = True
    sse_quirks: bool = False
    num_running: int = 0
    num_waiting: int = 0
    kv_usage: float = 0.0
    # Batch capacity (0 = unlimited): beyond it requests queue, as on a saturated GPU server:
    # their first token waits, /metrics shows them waiting and the KV cache full.
    max_running: int = 0
    # What /metrics answers: 200 with the Prometheus text, or e.g. 500/502 (a gateway's error page)
    # to test that routing degrades to local signals when a scrape fails.
    metrics_status: int = 200
    # vLLM started with --enable-auto-tool-choice --tool-call-parser: without it vLLM answers 400 to
    # any request with tools and tool_choice "auto" (the SGLang flavour ignores this field).
    tool_parser: bool = True
    # No tool parser for the model's markup (SGLang without --tool-call-parser, or a parser for
    # another family): the tool calls arrive as this family's raw markup in content (see
    # deepseek_sim.markup.MARKUP_FAMILIES); None: as structured tool_calls.
    tool_markup: str | None = None
    # The --model that vLLM was started with: /v1/models' "root" (default /models/<served_model>).
    model_path: str | None = None
    # A vision model (VL2, OCR, V4.1): image_url parts are taken (at most max_images, vLLM's
    # --limit-mm-per-prompt; None: no limit); a text-only model refuses any (deepseek_sim.images).
    vision: bool = False
    max_images: int | None = None
    # A hybrid-thinking model of this family (a key of thinking.HYBRID_DEFAULTS: "v3.1", "v3.2",
    # "v3.2-speciale", "v4", "v4.1"): it thinks as chat_template_kwargs.thinking says, else at the
    # server's default. None: a model that always reasons as ``shape`` says (R1) or never ("plain").
    hybrid: str | None = None
    # Structured output (deepseek_sim.structured): "xgrammar" honours response_format (vLLM
    # refuses the schema keys xgrammar lacks); "none" refuses any constraint (SGLang started with
    # --grammar-backend none); "ignored" answers as if it had not been asked (a proxy that drops it).
    grammar_backend: str = "xgrammar"
    # Automatic prefix caching (deepseek_sim.prefix_cache): the prompt's longest cached run of full
    # ``block_size``-token blocks is reused, ``kv_blocks`` blocks held at most (0 = unlimited), each
    # uncached prompt token costs ``prefill_per_token`` seconds of this replica's serialised prefill.
    # Usage then reports prompt_tokens_details.cached_tokens; /metrics the hits and queries.
    prefix_caching: bool = False
    kv_blocks: int = 0
    block_size: int = 16
    prefill_per_token: float = 0.0

    def __post_init__(self) -> None:
        from .script import SHAPES

        if self.flavor not in FLAVORS:
            raise ValueError(f"flavor must be one of {FLAVORS}, got {self.flavor!r}")
        if self.shape not in SHAPES:
            raise ValueError(f"shape must be one of {SHAPES}, got {self.shape!r}")
        if self.usage not in USAGE_MODES:
            raise ValueError(f"usage must be one of {USAGE_MODES}, got {self.usage!r}")
        from .thinking import HYBRID_DEFAULTS

        if self.hybrid is not None and self.hybrid not in HYBRID_DEFAULTS:
            raise ValueError(f"hybrid must be one of {tuple(HYBRID_DEFAULTS)} or None, got {self.hybrid!r}")
        from .markup import MARKUP_FAMILIES

        if self.tool_markup is not None and self.tool_markup not in MARKUP_FAMILIES:
            raise ValueError(f"tool_markup must be one of {MARKUP_FAMILIES} or None, got {self.tool_markup!r}")
        from .structured import GRAMMAR_BACKENDS

        if self.grammar_backend not in GRAMMAR_BACKENDS:
            raise ValueError(f"grammar_backend must be one of {GRAMMAR_BACKENDS}, got {self.grammar_backend!r}")
        if self.chunk_tokens < 1:
            raise ValueError("chunk_tokens must be >= 1")
        if self.block_size < 1 or self.kv_blocks < 0 or self.prefill_per_token < 0:
            raise ValueError("block_size must be >= 1, kv_blocks and prefill_per_token >= 0")


@dataclass
class RecordedRequest:
    """One HTTP request as the simulator received it."""

    method: str
    path: str
    headers: dict[str, str]  # lower-case keys
    body: Any  # parsed JSON, or None when empty / not JSON
    raw_body: bytes = b""


@dataclass
class Fault:
    kind: str
    count: int = 1
    params: dict[str, Any] = field(default_factory=dict)
