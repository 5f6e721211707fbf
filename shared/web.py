"""The services' HTTP entrypoint: nameko's `http`, on a server whose listen backlog a burst
of webhooks does not overflow.

nameko's WebServer listens with eventlet's default backlog of 50 pending connections, and a
burst beyond it is reset before a byte is read, which WooCommerce does not retry (figures in
docs/benchmarks.md). The backlog is `WEB_LISTEN_BACKLOG` (the kernel caps it at
net.core.somaxconn).

Every http entrypoint of a service must come from here: nameko shares one server per
container by class, and two classes would both bind the same address.

A request line longer than eventlet's limit (8,192 bytes) is refused by the server before any
entrypoint sees it; it is answered as RFC 7807 problem details like every other refusal, not
eventlet's bare 414.
"""
from __future__ import annotations

import json
import uuid

import eventlet
from nameko.web.handlers import HttpRequestHandler
from nameko.web.server import HttpOnlyProtocol, WebServer

from shared.config import from_nameko


# What every problem type's URI starts with (the gateway's too). A URN, not a web address:
# there is no page to fetch, and RFC 7807 asks only for a URI that names the kind of problem.
PROBLEM_TYPE_BASE = "urn:woo-companion:problem:"


def uri_too_long_answer(limit: int, request_line: bytes) -> bytes:
    """A whole HTTP answer: 414 as problem details, the connection closed after it."""
    target = request_line.split(b" ")[1] if request_line.count(b" ") else b""
    body = json.dumps({
        "type": PROBLEM_TYPE_BASE + "uri-too-long", "title": "URI too long", "status": 414,
        "detail": f"the request line is longer than {limit} bytes",
        "instance": target.split(b"?")[0][:200].decode("latin-1"),
        "request_id": uuid.uuid4().hex}).encode()
    return (b"HTTP/1.1 414 URI Too Long\r\nContent-Type: application/problem+json\r\n"
            b"X-Content-Type-Options: nosniff\r\nConnection: close\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


class ProblemAnsweringProtocol(HttpOnlyProtocol):
    """nameko's protocol, with an over-long request line answered as problem details. It hooks
    eventlet's `_read_request_line` (eventlet is pinned): a line at the limit is answered here
    and handed on as empty, which closes the connection as eventlet's own 414 does."""

    def _read_request_line(self):
        line = super()._read_request_line()
        limit = self.server.url_length_limit
        if line and len(line) >= limit:
            self.wfile.write(uri_too_long_answer(limit, line))
            self.close_connection = 1
            return b""
        return line


class BackloggedWebServer(WebServer):
    """nameko's WebServer, listening with a configurable backlog."""

    def start(self) -> None:
        if not self._starting:
            self._starting = True
            backlog = max(1, from_nameko(self.container.config).int("WEB_LISTEN_BACKLOG"))
            self._sock = eventlet.listen(self.bind_addr, backlog=backlog)
            self._sock.settimeout(None)  # as nameko: no timeout kombu set leaks in
            self._serv = self.get_wsgi_server(self._sock, self.get_wsgi_app(),
                                              protocol=ProblemAnsweringProtocol)
            self._gt = self.container.spawn_managed_thread(self.run)


class HttpEntrypoint(HttpRequestHandler):
    server = BackloggedWebServer()


http = HttpEntrypoint.decorator
