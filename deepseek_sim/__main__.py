"""CLI: ``python -m deepseek_sim`` serves until Ctrl-C (or SIGTERM)."""

from __future__ import annotations

import argparse
import signal
import sys
import time

from .config import USAGE_MODES, SimConfig
from .markup import MARKUP_FAMILIES
from .script import SHAPES
from .server import Simulator
from .thinking import HYBRID_DEFAULTS


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m deepseek_sim", description=__doc__)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    ap.add_argument("--model", default="deepseek-r1", help="served model id")
    ap.add_argument("--shape", default="reasoning", choices=SHAPES)
    ap.add_argument("--flavor", default="vllm", choices=("vllm", "sglang"))
    ap.add_argument("--ttft", type=float, default=0.0)
    ap.add_argument("--inter-token", type=float, default=0.0)
    ap.add_argument("--chunk-tokens", type=int, default=1)
    ap.add_argument("--max-model-len", type=int, default=8192)
    ap.add_argument("--api-key", default=None)
    ap.add_argument("--usage", default="on_request", choices=USAGE_MODES)
    ap.add_argument("--no-done", action="store_true", help="never send data: [DONE]")
    ap.add_argument("--sse-quirks", action="store_true")
    ap.add_argument("--max-running", type=int, default=0,
                    help="batch capacity; more requests queue (0 = unlimited)")
    ap.add_argument("--no-tool-parser", action="store_true",
                    help="vLLM without --enable-auto-tool-choice: tools with tool_choice auto get 400")
    ap.add_argument("--tool-markup", default=None, choices=MARKUP_FAMILIES,
                    help="no tool parser for the model's markup: tool calls arrive as this family's markup in content")
    ap.add_argument("--model-path", default=None, help="vLLM's --model: the root in /v1/models")
    ap.add_argument("--vision", action="store_true", help="a vision model: takes image_url parts")
    ap.add_argument("--max-images", type=int, default=None, help="vLLM's --limit-mm-per-prompt image count")
    ap.add_argument("--hybrid", default=None, choices=tuple(HYBRID_DEFAULTS),
                    help="a thinking-on-demand model of this family (chat_template_kwargs.thinking)")
    ap.add_argument("--prefix-caching", action="store_true",
                    help="automatic prefix caching: reuse cached full blocks, report cached_tokens")
    ap.add_argument("--kv-blocks", type=int, default=0, help="prefix cache capacity in blocks (0 = unlimited)")
    ap.add_argument("--block-size", type=int, default=16, help="tokens per KV block")
    ap.add_argument("--prefill-per-token", type=float, default=0.0,
                    help="seconds per uncached prompt token (prefill serialised per replica)")
    a = ap.parse_args(argv)

    cfg = SimConfig(served_model=a.model, max_model_len=a.max_model_len, flavor=a.flavor, shape=a.shape,
                    api_key=a.api_key, ttft=a.ttft, inter_token=a.inter_token, chunk_tokens=a.chunk_tokens,
                    usage=a.usage, send_done=not a.no_done, sse_quirks=a.sse_quirks,
                    max_running=a.max_running, tool_parser=not a.no_tool_parser, model_path=a.model_path,
                    vision=a.vision, max_images=a.max_images, hybrid=a.hybrid,
                    tool_markup=a.tool_markup, prefix_caching=a.prefix_caching, kv_blocks=a.kv_blocks,
                    block_size=a.block_size, prefill_per_token=a.prefill_per_token)
    sim = Simulator(cfg, host=a.host, port=a.port)
    sim.start()

    def _term(*_):
        raise KeyboardInterrupt

    # SIGTERM behaves like Ctrl-C so the socket is closed cleanly; SIGINT is set
    # explicitly because a shell's background job inherits it as ignored.
    signal.signal(signal.SIGTERM, _term)
    signal.signal(signal.SIGINT, _term)
    print(f"deepseek_sim listening on {sim.base_url}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
