"""A tiny OpenAI-style server for what the simulator cannot express: a server without a tool-call
parser (vLLM's 400, the call as text with special tokens stripped or inside the reasoning, or the
tool ignored), a chat template that ignores the thinking switch, images refused by a vision model,
no /metrics, no /health, no max_model_len. Answers are canned; HTTP/1.0, one request per
connection."""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# What vLLM answers to tool_choice "auto" when started without --enable-auto-tool-choice
VLLM_NO_TOOLS = ('"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser '
                 'to be set')
# A DeepSeek-V3 tool call as raw text (the server has no tool-call parser to lift it out)
TOOL_AS_TEXT = ("<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n"
                "```json\n{\"location\": \"Paris\"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>")

# The same when the server skips special tokens in the output (vLLM's default without the parser)
TOOL_STRIPPED = "functionget_weather\n```json\n{\"location\": \"Paris\"}\n```"
# by name; V3.2's DSML for markup inside the reasoning (the simulator writes markup in the answer)
TOOL_MARKUP = {
    "text": TOOL_AS_TEXT,
    "stripped": TOOL_STRIPPED,
    "dsml32": ("\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke name=\"get_weather\">\n<｜DSML｜parameter "
               "name=\"location\" string=\"true\">Paris</｜DSML｜parameter>\n</｜DSML｜invoke>\n"
               "</｜DSML｜function_calls>"),
}
# vLLM 0.32's answer to an image for a model served without multimodal support (tests/real)
NOT_MULTIMODAL = "{model} is not a multimodal model"
LIMIT_ZERO = "At most 0 image(s) may be provided in one prompt."
REASONING = "The user greets me. I greet back."


def _has_image(body: dict) -> bool:
    return any(isinstance(m.get("content"), list) and any(
        isinstance(p, dict) and p.get("type") == "image_url" for p in m["content"])
        for m in body.get("messages") or [])


class Stub:
    def __init__(self, *, owned_by: str = "vllm", model: str = "deepseek-v3",
                 max_model_len: int | None = 16384, tools: str = "reject", markup_in: str = "content",
                 thinking: str = "never", images: str = "refuse",
                 metrics: bool = True, health: int = 200, continuation: bool = True,
                 gateway: bool = False) -> None:
        """tools: "reject" (vLLM's 400), "ignore" (a plain answer), "lost-once" (a parsed call,
        but the first answer lost it, as vLLM's streamed parser now and then does: nothing but
        finish_reason tool_calls), or a key of TOOL_MARKUP (the
        call as raw text: "text" V3 with DeepSeek's special tokens, "stripped" the same with
        special tokens skipped, "dsml32" V3.2's DSML), written in the ``markup_in``
        field ("content" or "reasoning"). thinking: "never" (no reasoning), "always" (reasoning
        whatever the switch says), "honour" (reasoning when chat_template_kwargs.thinking is
        true); reasoning arrives in ``reasoning``. images: "refuse" (vLLM's 400 for a model
        without multimodal support), "limit0" (--limit-mm-per-prompt image 0), "accept".
        continuation: False refuses continue_final_message as a strict OpenAI schema does.
        gateway: answers as SGLang Model Gateway does besides (``/liveness``, ``/readiness``,
        ``/workers``) with no /metrics on its port."""
        self.owned_by, self.model, self.max_model_len = owned_by, model, max_model_len
        self.tools, self.markup_in, self.metrics, self.health = tools, markup_in, metrics, health
        self.thinking, self.images = thinking, images
        self.continuation = continuation
        self.gateway = gateway
        self.bodies: list[dict] = []
        self.tool_asks = 0
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path == "/v1/models":
                    card = {"id": stub.model, "object": "model", "owned_by": stub.owned_by}
                    if stub.max_model_len:
                        card["max_model_len"] = stub.max_model_len
                    self._send(200, json.dumps({"object": "list", "data": [card]}).encode())
                elif self.path == "/health":
                    self._send(stub.health, b"")
                elif stub.gateway and self.path in ("/liveness", "/readiness"):
                    self._send(200, b'{"status":"ok"}')
                elif stub.gateway and self.path == "/workers":
                    self._send(200, json.dumps({"workers": [{"url": f"http://gpu-{i}:8000"} for i in range(3)],
                                                "total": 3}).encode())
                elif self.path == "/metrics" and stub.metrics and not stub.gateway:
                    self._send(200, b"# TYPE vllm:num_requests_waiting gauge\n"
                                    b'vllm:num_requests_waiting{model_name="m"} 2.0\n'
                                    b'vllm:num_requests_running{model_name="m"} 1.0\n', "text/plain")
                else:
                    self._send(404, b'{"detail":"Not Found"}')

            def _refuse(self, message: str, param: str | None = None) -> None:
                err = {"error": {"message": message, "type": "BadRequestError", "param": param,
                                 "code": 400}}
                self._send(400, json.dumps(err).encode())

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stub.bodies.append(body)
                if body.get("continue_final_message") and not stub.continuation:
                    return self._refuse("continue_final_message: Extra inputs are not permitted")
                if _has_image(body) and stub.images != "accept":
                    if stub.images == "limit0":
                        return self._refuse(LIMIT_ZERO, "image")
                    return self._refuse(NOT_MULTIMODAL.format(model=stub.model))
                switch = (body.get("chat_template_kwargs") or {}).get("thinking")
                thinks = stub.thinking == "always" or (stub.thinking == "honour" and switch is True)
                reasoning, text = REASONING if thinks else "", "Hello! How can I help?"
                calls, finish = None, "stop"
                if body.get("tools") and stub.tools == "lost-once":
                    stub.tool_asks += 1
                    text, finish = "", "tool_calls"
                    if stub.tool_asks > 1:
                        calls = [{"index": 0, "id": "call-1", "type": "function", "function": {
                            "name": "get_weather", "arguments": '{"location": "Paris"}'}}]
                elif body.get("tools"):
                    if stub.tools == "reject":
                        return self._refuse(VLLM_NO_TOOLS)
                    text = TOOL_MARKUP.get(stub.tools, "I cannot check the weather.")
                    if stub.markup_in == "reasoning" and stub.tools in TOOL_MARKUP:
                        reasoning, text = reasoning + text, ""
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                try:
                    for key, value in (("reasoning", reasoning), ("content", text)):
                        for piece in (value[: len(value) // 2], value[len(value) // 2:]):
                            if piece:
                                self._event({"choices": [{"index": 0, "delta": {key: piece},
                                                          "finish_reason": None}]})
                    if calls:
                        self._event({"choices": [{"index": 0, "delta": {"tool_calls": calls},
                                                  "finish_reason": None}]})
                    self._event({"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
                    self._event({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2,
                                                          "total_tokens": 7}})
                    self.wfile.write(b"data: [DONE]\n\n")
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the doctor stops reading once it knows enough

            def _event(self, obj: dict) -> None:
                self.wfile.write(f"data: {json.dumps(obj, ensure_ascii=False)}\n\n".encode())

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_port}/v1"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        # the doctor hangs up once it knows enough, or at its deadline on a loaded machine: writing to
        # that socket is no failure of the test, and socketserver would print its traceback mid-run.
        # Anything else (a bug in the stub) still prints.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)
