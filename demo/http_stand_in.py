"""The HTTP side of the stand-ins for systems outside ours (the WooCommerce shop, Twilio):
HTTP/1.1 with keep-alive, each connection tracked so the stand-in can cut them all (a crash
or an outage in a fault test), and every request handed to the stand-in's `handle`."""
from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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


class _Server(ThreadingHTTPServer):
    """socketserver listens with a backlog of 5: under eventlet, when more clients connect at
    once than that (a service's worker pool does), the surplus connections are dropped before
    they are accepted and clients see RemoteDisconnected. 128 is a real server's order."""

    request_queue_size = 128
    daemon_threads = True


class ServedStandIn:
    """Serving on 127.0.0.1 on a free port in a daemon thread, every connection tracked so
    `stop` cuts them all: the lifecycle the shop and Twilio stand-ins share. A subclass sets
    `_lock` and calls `_serving_state()` in its constructor, and names its thread, the Server
    header it sends and itself (for errors)."""

    thread_name = "stand-in"
    software = "stand-in"
    title = "the stand-in"
    _lock: Any

    def _serving_state(self) -> None:
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()

    def start(self):
        """Serve on 127.0.0.1 on a free port, in a daemon thread (a greenlet under eventlet)."""
        if self._server is not None:
            return self
        handler = type(f"{type(self).__name__}Handler", (StandInHandler,),
                       {"stand_in": self, "software": self.software})
        self._server = _Server(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        name=self.thread_name, daemon=True)
        self._thread.start()
        return self

    def _before_stop(self) -> None:
        """What a stand-in lets go of before it stops serving (a held request, say)."""

    def stop(self) -> None:
        """Stop serving and close kept-alive connections (clients then see connection errors)."""
        server, self._server = self._server, None
        if server is None:
            return
        self._before_stop()
        server.shutdown()
        server.server_close()
        with self._lock:
            connections, self._connections = list(self._connections), set()
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError(f"{self.title} is not running: call start()")
        return self._server.server_address[1]
