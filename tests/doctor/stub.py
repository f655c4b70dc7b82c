"""A tiny OpenAI-style server for what the simulator cannot express: a server without a tool-call
parser (vLLM's 400, or the call written as text, or the tool ignored), no /metrics, no /health,
no max_model_len. Answers are canned; HTTP/1.0, one request per connection."""

from __future__ import annotations

import json
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


class Stub:
    def __init__(self, *, owned_by: str = "vllm", model: str = "deepseek-v3",
                 max_model_len: int | None = 16384, tools: str = "reject",
                 metrics: bool = True, health: int = 200, continuation: bool = True) -> None:
        """tools: "reject" (vLLM's 400), "text" (the call as raw text with DeepSeek's special
        tokens), "stripped" (the same with special tokens skipped), "ignore" (a plain answer).
        continuation: False refuses continue_final_message as a strict OpenAI schema does."""
        self.owned_by, self.model, self.max_model_len = owned_by, model, max_model_len
        self.tools, self.metrics, self.health = tools, metrics, health
        self.continuation = continuation
        self.bodies: list[dict] = []
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
                elif self.path == "/metrics" and stub.metrics:
                    self._send(200, b"# TYPE vllm:num_requests_waiting gauge\n"
                                    b'vllm:num_requests_waiting{model_name="m"} 2.0\n'
                                    b'vllm:num_requests_running{model_name="m"} 1.0\n', "text/plain")
                else:
                    self._send(404, b'{"detail":"Not Found"}')

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stub.bodies.append(body)
                text = "Hello! How can I help?"
                if body.get("continue_final_message") and not stub.continuation:
                    err = {"error": {"message": "continue_final_message: Extra inputs are not permitted",
                                     "type": "BadRequestError", "param": None, "code": 400}}
                    self._send(400, json.dumps(err).encode())
                    return
                if body.get("tools"):
                    if stub.tools == "reject":
                        err = {"error": {"message": VLLM_NO_TOOLS, "type": "BadRequestError",
                                         "param": None, "code": 400}}
                        self._send(400, json.dumps(err).encode())
                        return
                    text = {"text": TOOL_AS_TEXT, "stripped": TOOL_STRIPPED}.get(
                        stub.tools, "I cannot check the weather.")
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                for piece in (text[: len(text) // 2], text[len(text) // 2:]):
                    chunk = {"choices": [{"index": 0, "delta": {"content": piece},
                                          "finish_reason": None}]}
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                end = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
                usage = {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2,
                                                  "total_tokens": 7}}
                for obj in (end, usage):
                    self.wfile.write(f"data: {json.dumps(obj)}\n\n".encode())
                self.wfile.write(b"data: [DONE]\n\n")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_port}/v1"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
