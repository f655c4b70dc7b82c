"""A real OAuth2 token endpoint for the tests (client credentials grant, expiring tokens), over
plain HTTP or, with ``ssl_context``, HTTPS (as an identity provider in production is)."""

from __future__ import annotations

import base64
import json
import secrets
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs


class TokenServer:
    def __init__(self, client_id: str, client_secret: str, *, expires_in: int = 3600,
                 on_token=None,
                 ssl_context: ssl.SSLContext | None = None, echo: bool = False) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.expires_in = expires_in
        self.on_token = on_token
        self.revoked = False
        self.echo = echo  # a careless IdP: its refusals quote the client's credentials back
        self.handshake_failures = 0  # TLS handshakes a client gave up on (it did not trust us)
        self.issued: list[str] = []
        self.requests: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # keep test output clean
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length") or 0)).decode()
                form = {k: v[0] for k, v in parse_qs(body).items()}
                auth = self.headers.get("authorization", "")
                cid, csec = form.get("client_id"), form.get("client_secret")
                if auth.startswith("Basic "):
                    cid, _, csec = base64.b64decode(auth[6:]).decode().partition(":")
                outer.requests.append({"form": form, "client_id": cid})
                ok = (form.get("grant_type") == "client_credentials" and cid == outer.client_id
                      and csec == outer.client_secret and not outer.revoked)
                if not ok:
                    said = f" for {csec} (Authorization: {auth}; {auth[6:]})" if outer.echo else ""
                    self._send(401, {"error": "invalid_client",
                                     "error_description": "client authentication failed" + said})
                    return
                token = "tok-" + secrets.token_hex(8)
                outer.issued.append(token)
                if outer.on_token:
                    outer.on_token(token)
                self._send(200, {"access_token": token, "token_type": "Bearer", "expires_in": outer.expires_in})

            def _send(self, status, obj):
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        class Server(ThreadingHTTPServer):
            def handle_error(self, request, client_address):
                # the handshake runs in the request's thread: one the client refused lands here
                if isinstance(sys.exc_info()[1], (ssl.SSLError, ConnectionError)):
                    outer.handshake_failures += 1
                else:
                    super().handle_error(request, client_address)

        self.httpd = Server(("127.0.0.1", 0), Handler)
        if ssl_context is not None:  # handshake on first read, in the request's thread, not accept's
            self.httpd.socket = ssl_context.wrap_socket(self.httpd.socket, server_side=True,
                                                        do_handshake_on_connect=False)
        scheme = "https" if ssl_context is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self.httpd.server_address[1]}/oauth2/token"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
