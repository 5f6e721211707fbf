"""The services' HTTP entrypoint: nameko's `http`, on a server whose listen backlog a burst
of webhooks does not overflow.

nameko's WebServer listens with eventlet's default backlog of 50 pending connections. A shop
(or the proxy in front of us) opening more than that at once has the surplus reset before a
byte is read: measured with `make bench`, a 1,000/s burst from 256 connections lost 7
webhooks that way, and WooCommerce does not retry. The backlog is `WEB_LISTEN_BACKLOG`
(the kernel caps it at net.core.somaxconn).

Every http entrypoint of a service must come from here: nameko shares one server per
container by class, and two classes would both bind the same address.
"""
from __future__ import annotations

import eventlet
from nameko.web.handlers import HttpRequestHandler
from nameko.web.server import WebServer

from shared.config import from_nameko


class BackloggedWebServer(WebServer):
    """nameko's WebServer, listening with a configurable backlog."""

    def start(self) -> None:
        if not self._starting:
            self._starting = True
            backlog = max(1, from_nameko(self.container.config).int("WEB_LISTEN_BACKLOG"))
            self._sock = eventlet.listen(self.bind_addr, backlog=backlog)
            self._sock.settimeout(None)  # as nameko: kombu issue 838
            self._serv = self.get_wsgi_server(self._sock, self.get_wsgi_app())
            self._gt = self.container.spawn_managed_thread(self.run)


class HttpEntrypoint(HttpRequestHandler):
    server = BackloggedWebServer()


http = HttpEntrypoint.decorator
