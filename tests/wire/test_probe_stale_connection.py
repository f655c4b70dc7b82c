"""A health probe that meets a keep-alive connection the server has just closed tries once more on
a fresh one, instead of setting a healthy server aside. vLLM (uvicorn) closes idle connections after
5 s, the prober's own rhythm: a probe reusing the pooled connection as the server closes it sees
"disconnected without sending a response" (found against real vLLM)."""

import socket
import threading

from deepseek_engine import parse_settings
from deepseek_engine.health import HealthBook
from deepseek_engine.probe import Prober

OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"


class ClosesAfterOne:
    """Answers the first request of each connection (keep-alive), then closes the connection
    without answering when the next request arrives on it."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    @staticmethod
    def _serve(conn: socket.socket) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                data += chunk
            conn.sendall(OK)
            conn.recv(4096)  # the next request on this connection: closed unanswered

    def close(self) -> None:
        self.sock.close()


def test_a_probe_on_a_connection_the_server_closed_tries_a_fresh_one():
    server = ClosesAfterOne()
    try:
        book = HealthBook()
        prober = Prober(book, health_interval=0, metrics_interval=0, timeout=2.0)
        ep = parse_settings({"endpoint_urls": f"http://127.0.0.1:{server.port}/v1"}).endpoints[0]
        assert prober.probe(ep) is True
        assert prober.probe(ep) is True, book.why(ep.url, None)  # the pooled connection was closed
        assert server.connections == 2  # the second probe's retry opened a new connection
        assert book.available(ep.url, None, 0.0)
    finally:
        server.close()
