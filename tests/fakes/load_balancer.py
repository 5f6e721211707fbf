"""A round-robin HTTP load balancer: the one that stands in front of several instances of an
HTTP door in production (docs/scaling.md), here a real local server the shop's webhooks reach.

Each request goes to the next upstream in turn, whole (method, path, headers, body), and its
answer comes back as the upstream gave it; an upstream that refuses the connection answers 502,
as a proxy would. `answered` counts the requests each upstream took, so a test can show that
every instance did work.

    with RoundRobinBalancer(["http://127.0.0.1:8001", "http://127.0.0.1:8002"]) as lb:
        requests.post(lb.url + "/webhooks/woocommerce/shop", data=b"...")
"""
from __future__ import annotations

import http.client
import itertools
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Hop-by-hop headers (RFC 9110, 7.6.1) are the proxy's own, not forwarded.
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te",
               "trailer", "upgrade"}


class RoundRobinBalancer:
    """Forwards each request to the next of `upstreams` (base URLs); see the module doc."""

    def __init__(self, upstreams: list[str], port: int = 0, timeout: float = 30.0) -> None:
        if not upstreams:
            raise ValueError("a load balancer needs an upstream")
        self.upstreams = [urllib.parse.urlsplit(u) for u in upstreams]
        self.answered = {u: 0 for u in upstreams}
        self._names = list(upstreams)
        self._turn = itertools.cycle(range(len(upstreams)))
        self._lock = threading.Lock()
        self.timeout = timeout
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> "RoundRobinBalancer":
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.2}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "RoundRobinBalancer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _next(self) -> int:
        with self._lock:
            return next(self._turn)

    def _forward(self, method: str, path: str, headers: list[tuple[str, str]],
                 body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        index = self._next()
        upstream = self.upstreams[index]
        conn = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=self.timeout)
        try:
            conn.request(method, path, body=body or None, headers=dict(headers))
            response = conn.getresponse()
            answer = (response.status, response.getheaders(), response.read())
        except OSError:
            return 502, [("Content-Type", "text/plain")], b"upstream unreachable"
        finally:
            conn.close()
        with self._lock:
            self.answered[self._names[index]] += 1
        return answer

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        balancer = self

        class Forward(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = [(k, v) for k, v in self.headers.items()
                           if k.lower() not in _HOP_BY_HOP and k.lower() != "host"]
                status, answer_headers, answer = balancer._forward(self.command, self.path,
                                                                   headers, body)
                self.send_response(status)
                for key, value in answer_headers:
                    if key.lower() not in _HOP_BY_HOP and key.lower() != "content-length":
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            do_GET = do_POST = do_PUT = do_DELETE = _any

            def log_message(self, format, *args) -> None:  # noqa: A002 - quiet, as the fakes are
                pass

        return Forward
