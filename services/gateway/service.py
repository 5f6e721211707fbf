"""The gateway's nameko entrypoints: one HTTP route hands every `/api/v1` request to the plain
GatewayApp that `bootstrap` built once, with this worker's RPC proxies to the services behind
it."""
from __future__ import annotations

from nameko.rpc import RpcProxy, rpc
from werkzeug.wrappers import Request, Response

from services.gateway.backends import Backends
from services.gateway.bootstrap import BACKEND_SERVICES, GatewayProvider, build
from shared.events import Event
from shared.health import json_response
from shared.messaging.broadcast import broadcast_handler
from shared.web import http


class GatewayService:
    name = "gateway"

    customer_sync = RpcProxy("customer_sync")
    segmentation = RpcProxy("segmentation")
    loyalty = RpcProxy("loyalty")
    notifications = RpcProxy("notifications")
    gdpr = RpcProxy("gdpr")
    gateway = GatewayProvider(build)

    @http("GET,POST,PUT,PATCH,DELETE,OPTIONS", "/api/v1/<path:rest>")
    def api(self, request: Request, rest: str) -> Response:  # noqa: ARG002 - routed by the app
        return self.gateway.app.handle(request, self._backends())

    @http("GET,POST", "/console/")  # werkzeug sends /console here
    def console_root(self, request: Request) -> Response:
        return self.gateway.console.handle(request, self._backends())

    @http("GET,POST", "/console/<path:rest>")
    def console(self, request: Request, rest: str) -> Response:  # noqa: ARG002 - routed by it
        return self.gateway.console.handle(request, self._backends())

    @broadcast_handler("customer_sync", "api_key.revoked")
    def on_api_key_revoked(self, event: Event) -> None:
        """A key was revoked (through any gateway, or the CLI): stop trusting it here now,
        not when its cache entry expires. Every instance has a queue of its own for this."""
        self.gateway.app.authenticator.forget_key(event.data["key_id"])

    def _backends(self) -> Backends:
        return self.gateway.backends({name: getattr(self, name) for name in BACKEND_SERVICES})

    @http("GET", "/health/live")
    def live(self, request: Request) -> Response:  # noqa: ARG002
        return json_response(200, {"live": True, "service": self.name})

    @http("GET", "/health/ready")
    def ready(self, request: Request) -> Response:  # noqa: ARG002
        state = self.gateway.readiness()
        return json_response(200 if state["ready"] else 503, state)

    @rpc
    def health(self) -> dict:
        """Readiness over RPC too, as every service answers it (`companion health`)."""
        return {**self.gateway.readiness(), "service": self.name}
