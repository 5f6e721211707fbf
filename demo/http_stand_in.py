"""The HTTP side of the stand-ins for systems outside ours (the WooCommerce shop, Twilio):
HTTP/1.1 with keep-alive, each connection tracked so the stand-in can cut them all (a crash
or an outage in a fault test), and every request handed to the stand-in's `handle`."""
from __future__ import annotations

from http.server import BaseHTTPRequestHandler
from typing import Any, Protocol


class StandIn(Protocol):
    """What the handler needs of a stand-in."""

    _lock: Any
    _connections: set

    def handle(self, method: str, path: str, headers: dict, body: bytes
               ) -> tuple[int, dict, bytes] | None:
        """(status, headers, body) to answer, or None to drop the connection unanswered."""


class StandInHandler(BaseHTTPRequestHandler):
    """Subclassed per running stand-in with `stand_in` set (and `software`, the Server header
    the real system sends)."""

    stand_in: StandIn
    software = "stand-in"
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    timeout = 30

    def version_string(self) -> str:
        return self.software

    def setup(self) -> None:
        super().setup()
        with self.stand_in._lock:
            self.stand_in._connections.add(self.connection)

    def finish(self) -> None:
        with self.stand_in._lock:
            self.stand_in._connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        answer = self.stand_in.handle(self.command, self.path, headers, body)
        if answer is None:
            self.close_connection = True
            return
        status, out_headers, payload = answer
        try:
            self.send_response(status)
            for name, value in out_headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)
        except OSError:  # the client gave up (a timeout): nothing to answer to
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _serve

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep tests quiet
        pass
