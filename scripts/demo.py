"""Demo: the bundled simulator as the endpoint, the plugin run as Dify runs it, one R1 answer.

Starts ``deepseek_sim`` on loopback (an R1 server with vLLM's reasoning parser), launches the plugin
with ``python -m main`` and ``INSTALL_METHOD=local``, validates the credentials and streams an
answer over the daemon's JSON-lines protocol, printing reasoning, answer and usage as they arrive.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from deepseek_sim import SimConfig, Simulator
from scripts.progress import step
from tests.protocol.harness import PluginProcess, user_message

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--endpoint", help="use a real vLLM/SGLang base URL instead of the simulator")
    ap.add_argument("--model", default="deepseek-r1", help="catalogue model (default deepseek-r1)")
    ap.add_argument("--prompt", default="Say hello.")
    ap.add_argument("--api-key", default=os.environ.get("DEEPSEEK_API_KEY"),
                    help="the server's --api-key (default: $DEEPSEEK_API_KEY)")
    args = ap.parse_args()

    sim = None
    if not args.endpoint:
        sim = Simulator(SimConfig(served_model="deepseek-ai/DeepSeek-R1", shape="reasoning",
                                  ttft=0.3, inter_token=0.03)).start()
        print(f"simulator: {sim.base_url} (vLLM-style, reasoning parser on)")
    creds = {"endpoint_urls": args.endpoint or sim.base_url, "api_key": args.api_key, "served_model_name": None}
    t_start = time.monotonic()
    try:
        with step("starting the plugin as Dify's daemon does: python -m main, INSTALL_METHOD=local",
                  about="5-30 s", out=sys.stdout):
            plugin = PluginProcess(ROOT).start(ready_timeout=60)
        with plugin:
            with step("validating the credentials as Dify's settings page does: every endpoint, then a warm-up",
                      about="2-10 s", out=sys.stdout):
                v = plugin.validate_provider_credentials("deepseek_selfhosted", creds)
            if v.error:
                print(f"credentials rejected: {v.error['message']}")
                return 1
            print(f"credentials valid; streaming {args.model}'s answer to {args.prompt!r}:\n")
            t0 = time.monotonic()
            first = None
            usage = error = None
            for msg in plugin.stream_llm("deepseek_selfhosted", args.model, creds,
                                         [user_message(args.prompt)], {"max_tokens": 512}):
                if msg["type"] == "stream":
                    delta = msg["data"]["delta"]
                    text = delta["message"]["content"]
                    if text and first is None:
                        first = time.monotonic() - t0
                    sys.stdout.write(text)
                    sys.stdout.flush()
                    usage = delta.get("usage") or usage
                elif msg["type"] == "error":
                    error = msg["data"]
            print("\n")
            if error:
                print(f"error: {error['error_type']}: {error['message']}")
                return 1
            print(f"first token after {first:.2f}s; usage: prompt {usage['prompt_tokens']}, "
                  f"completion {usage['completion_tokens']}, total {usage['total_tokens']} tokens, "
                  f"latency {usage['latency']:.2f}s")
            print(f"demo done in {time.monotonic() - t_start:.0f}s: the plugin streamed an answer as it will in Dify")
            return 0
    finally:
        if sim:
            sim.stop()


if __name__ == "__main__":
    sys.exit(main())
