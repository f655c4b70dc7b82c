"""A TLS-terminating gateway in front of the simulator, as Envoy or nginx would stand in front of
vLLM: it presents a server certificate, may demand a client certificate (mutual TLS), and pipes
the decrypted bytes to the plain upstream. Blocking stdlib ssl, so handshake alerts reach the
client the way a real gateway sends them."""

from __future__ import annotations

import socket
import ssl
import threading


class TLSGateway:
    def __init__(self, context: ssl.SSLContext, upstream_port: int) -> None:
        self.context = context
        self.upstream = ("127.0.0.1", upstream_port)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.base_url = f"https://127.0.0.1:{self.port}/v1"
        self.handshake_failures = 0
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            tls = self.context.wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError):
            self.handshake_failures += 1
            conn.close()
            return
        try:
            up = socket.create_connection(self.upstream)
        except OSError:
            tls.close()
            return
        threading.Thread(target=self._pipe, args=(up, tls), daemon=True).start()
        self._pipe(tls, up)

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except (OSError, ssl.SSLError):
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass

    def close(self) -> None:
        self._stop = True
        self.sock.close()
