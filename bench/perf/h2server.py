"""An HTTP/2-capable streaming chat endpoint for the HTTP/1.1-vs-HTTP/2 comparison.

The simulator speaks HTTP/1.1 only (so do vLLM and SGLang: uvicorn). Here hypercorn serves a small
ASGI app over cleartext on loopback, accepting both HTTP/1.1 and HTTP/2 with prior knowledge
(h2c), so one server answers both protocols and only the client's protocol changes. Each SSE
event is one ``http.response.body`` message (one HTTP/1.1 chunk or one HTTP/2 DATA frame), like
uvicorn's StreamingResponse. The reply is R1-shaped and the same for both protocols: a role
chunk, ``max_tokens`` one-token deltas, a final chunk with usage, ``[DONE]``.

    python -m bench.perf.h2server     # prints "READY http://127.0.0.1:PORT/v1", serves until stdin closes
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys

_PRE = ('{"id":"chatcmpl-h2","object":"chat.completion.chunk","created":0,"model":"deepseek-ai/DeepSeek-R1",'
        '"choices":[{"index":0,"delta":')
_TAIL = ',"logprobs":null,"finish_reason":null}]}'


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = b""
    while True:
        msg = await receive()
        body += msg.get("body", b"")
        if not msg.get("more_body"):
            break
    if scope["path"] != "/v1/chat/completions":
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    req = json.loads(body or b"{}")
    n = int(req.get("max_tokens") or 16)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/event-stream; charset=utf-8"),
                            (b"cache-control", b"no-cache")]})

    async def event(payload: str) -> None:
        await send({"type": "http.response.body", "body": ("data: " + payload + "\n\n").encode(),
                    "more_body": True})

    await event(_PRE + '{"role":"assistant","content":""}' + _TAIL)
    for i in range(n):
        await event(_PRE + ('{"reasoning":" lorem"}' if i < 3 else '{"content":" lorem"}') + _TAIL)
    usage = {"prompt_tokens": 5, "completion_tokens": n, "total_tokens": n + 5}
    await event(_PRE + '{"content":""},"logprobs":null,"finish_reason":"length"}],"usage":'
                + json.dumps(usage) + "}")
    await event("[DONE]")
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def main() -> None:
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = Config()
    cfg.bind = [f"127.0.0.1:{port}"]
    cfg.accesslog = None
    cfg.errorlog = None
    cfg.keep_alive_timeout = 300
    cfg.h2_max_concurrent_streams = 1000
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_reader(sys.stdin.fileno(), lambda: (sys.stdin.readline() or True) and stop.set())
    task = asyncio.ensure_future(serve(app, cfg, shutdown_trigger=stop.wait))
    for _ in range(200):  # wait until it listens
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.1):
                break
        except OSError:
            await asyncio.sleep(0.02)
    print(f"READY http://127.0.0.1:{port}/v1", flush=True)
    await task


if __name__ == "__main__":
    asyncio.run(main())
