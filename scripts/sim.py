"""Serve the bundled DeepSeek-compatible simulator on a port, shaped like a server you might run, until
Ctrl-C. For trying ``scripts/doctor`` or ``scripts/demo --endpoint`` (or Dify itself) without a GPU.

    scripts/sim                          R1 on vLLM with --reasoning-parser, on :8000
    scripts/sim --serve r1-no-parser     R1 on vLLM without a reasoning parser: </think> in the text
    scripts/sim --serve v3.1 --port 8001 thinking on demand (chat_template_kwargs.thinking), tool calls
    scripts/sim --fault drop             every answer cut after a few tokens (the plugin continues it)
    scripts/sim --fault 503 --fault-count 3   the next 3 chat requests get 503, then it answers

The shapes are presets of ``python -m deepseek_sim`` (all its knobs: ``python -m deepseek_sim --help``).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from dataclasses import dataclass

from deepseek_sim import SimConfig, Simulator


@dataclass(frozen=True)
class Serve:
    """One server an operator might run, as the simulator's settings."""

    what: str
    config: dict


SERVES: dict[str, Serve] = {
    "r1": Serve("DeepSeek-R1 on vLLM with --reasoning-parser deepseek_r1 (reasoning arrives as `reasoning`)",
                {"served_model": "deepseek-ai/DeepSeek-R1", "shape": "reasoning"}),
    "r1-no-parser": Serve("DeepSeek-R1 on vLLM without a reasoning parser (reasoning, then </think>, in the text)",
                          {"served_model": "deepseek-ai/DeepSeek-R1", "shape": "think_close_only"}),
    "r1-sglang": Serve("DeepSeek-R1 on SGLang with --reasoning-parser deepseek-r1 (`reasoning_content`)",
                       {"served_model": "deepseek-ai/DeepSeek-R1", "shape": "reasoning_content",
                        "flavor": "sglang"}),
    "v3": Serve("DeepSeek-V3 on vLLM with --tool-call-parser deepseek_v3 (no reasoning; tool calls)",
                {"served_model": "deepseek-ai/DeepSeek-V3", "shape": "plain"}),
    "v3-no-tool-parser": Serve("DeepSeek-V3 on vLLM without a tool parser (tool calls as markup in the text)",
                               {"served_model": "deepseek-ai/DeepSeek-V3", "shape": "plain", "tool_markup": "v3"}),
    "v3.1": Serve("DeepSeek-V3.1 on vLLM: thinking on demand through chat_template_kwargs.thinking, tool calls",
                  {"served_model": "deepseek-ai/DeepSeek-V3.1", "shape": "reasoning", "hybrid": "v3.1"}),
}

#: operator's words for the simulator's faults: (kind, params, what it looks like)
FAULTS: dict[str, tuple[str, dict, str]] = {
    "503": ("status", {"status": 503}, "503 Service Unavailable before any token (a server still loading)"),
    "429": ("status", {"status": 429, "headers": {"Retry-After": "1"}}, "429 with Retry-After: 1 (rate limited)"),
    "reset": ("reset_before_headers", {}, "the connection reset before any answer (a node dying)"),
    "drop": ("drop_mid_stream", {"after": 6}, "the stream cut after a few tokens (a proxy or node going away)"),
    "stall": ("stall_mid_stream", {"after": 6, "seconds": 90.0},
              "the stream stalls for 90 s after a few tokens (a stuck GPU)"),
    "slow": ("slow_headers", {"seconds": 5.0}, "5 s before the response starts (a long queue)"),
}
EVERY_REQUEST = 10**9


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/sim", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--serve", default="r1", choices=SERVES,
                    help="which server to look like: " + "; ".join(f"{k}: {v.what}" for k, v in SERVES.items()))
    ap.add_argument("--port", type=int, default=8000, help="default 8000; 0 picks a free one")
    ap.add_argument("--host", default="127.0.0.1",
                    help="default 127.0.0.1 (0.0.0.0 to reach it from Dify's containers)")
    ap.add_argument("--model", help="the served model id (default: the preset's, e.g. deepseek-ai/DeepSeek-R1)")
    ap.add_argument("--api-key", help="require this key, as vLLM's --api-key does")
    ap.add_argument("--fault", choices=FAULTS,
                    help="misbehave on chat requests: " + "; ".join(f"{k}: {v[2]}" for k, v in FAULTS.items()))
    ap.add_argument("--fault-count", type=int, default=0,
                    help="only the next N chat requests misbehave (default: every one)")
    ap.add_argument("--speed", type=float, default=30.0, help="tokens per second (default 30; 0: as fast as it can)")
    a = ap.parse_args(argv)

    serve = SERVES[a.serve]
    config = dict(serve.config, ttft=0.3 if a.speed else 0.0, inter_token=1 / a.speed if a.speed else 0.0,
                  api_key=a.api_key)
    if a.model:
        config["served_model"] = a.model
    sim = Simulator(SimConfig(**config), host=a.host, port=a.port)
    if a.fault:
        kind, params, _ = FAULTS[a.fault]
        sim.inject(kind, a.fault_count or EVERY_REQUEST, **params)
    try:
        sim.start()
    except OSError as e:
        print(f"error: cannot listen on {a.host}:{a.port}: {e.strerror}; pick another --port (0: any free one)",
              file=sys.stderr)
        return 1

    stop = threading.Event()
    # SIGTERM stops like Ctrl-C; SIGINT is set explicitly because a shell's background job inherits it ignored
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    url = sim.base_url
    key = f" --api-key {a.api_key}" if a.api_key else ""
    fault = ""
    if a.fault:
        fault = f"\n  fault:  {FAULTS[a.fault][2]}, " + (f"next {a.fault_count} chat requests" if a.fault_count
                                                          else "every chat request")
    print(f"simulator: {serve.what}\n  model:  {sim.config.served_model}\n  URL:    {url}{fault}\n"
          f"try it:  scripts/demo --endpoint {url}{key}\n"
          f"         scripts/doctor {url}{key}\n"
          f"or in Dify: Endpoint URLs = {url} (from Dify's containers use this machine's address and --host 0.0.0.0)\n"
          "Ctrl-C stops it.", flush=True)
    stop.wait()
    sim.stop()
    print("simulator stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
