"""The gateway's nameko entrypoints: one HTTP route hands every `/api/v1` request to the plain
GatewayApp, with this worker's RPC proxies to the services behind it."""
from __future__ import annotations

from nameko.extensions import DependencyProvider
from nameko.rpc import RpcProxy, rpc
from werkzeug.wrappers import Request, Response

from services.gateway.app import GatewayApp
from services.gateway.auth import Authenticator
from services.gateway.backends import Backends
from services.gateway.console.app import ConsoleApp
from services.gateway.ratelimit import FailureThrottle, RateLimiter
from services.gateway.routes import build_routes
from services.gateway.routing import Router
from shared.config import from_nameko
from shared.events import Event
from shared.health import broker_reachable, json_response
from shared.messaging.broadcast import broadcast_handler, watch_broadcasts
from shared.tls import amqp_ssl_options
from shared.web import http

BACKEND_SERVICES = ("customer_sync", "segmentation", "loyalty", "notifications", "gdpr")


class GatewayAppProvider(DependencyProvider):
    """One GatewayApp per container: its key cache and rate-limit buckets outlive requests."""

    def setup(self) -> None:
        config = from_nameko(self.container.config)
        self.config = config
        self.timeout = config.float("GATEWAY_RPC_TIMEOUT_SECONDS")
        self.app = GatewayApp(
            Router(build_routes()), Authenticator(config.float("GATEWAY_KEY_CACHE_SECONDS")),
            RateLimiter(config.int("GATEWAY_RATE_LIMIT_PER_MINUTE")),
            max_body_bytes=config.int("GATEWAY_MAX_BODY_BYTES"),
            max_import_bytes=config.int("GATEWAY_MAX_IMPORT_BYTES"), settings=config,
            auth_failures=FailureThrottle(config.int("GATEWAY_AUTH_FAILURES_PER_MINUTE")))
        # The admin console: a client of this same app, so the same routes, scopes and limits.
        self.console = ConsoleApp(self.app, config)
        # Cached key checks are only as good as the revocation broadcasts heard: none is used
        # while this instance's broadcast connection is down, nor kept when it is back.
        watch_broadcasts(self.container, self.app.authenticator)

    def get_dependency(self, worker_ctx) -> "GatewayAppProvider":
        return self


class GatewayService:
    name = "gateway"

    customer_sync = RpcProxy("customer_sync")
    segmentation = RpcProxy("segmentation")
    loyalty = RpcProxy("loyalty")
    notifications = RpcProxy("notifications")
    gdpr = RpcProxy("gdpr")
    gateway = GatewayAppProvider()

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
        return Backends({name: getattr(self, name) for name in BACKEND_SERVICES},
                        self.gateway.timeout)

    @http("GET", "/health/live")
    def live(self, request: Request) -> Response:  # noqa: ARG002
        return json_response(200, {"live": True, "service": self.name})

    @http("GET", "/health/ready")
    def ready(self, request: Request) -> Response:  # noqa: ARG002
        state = self._readiness()
        return json_response(200 if state["ready"] else 503, state)

    @rpc
    def health(self) -> dict:
        """Readiness over RPC too, as every service answers it (`companion health`)."""
        return {**self._readiness(), "service": self.name}

    def _readiness(self) -> dict:
        # The gateway has no database: it is ready when it can reach the broker.
        config = self.gateway.config
        checks = {"broker": broker_reachable(config.get("AMQP_URI"),
                                             ssl=amqp_ssl_options(config))}
        return {"ready": all(checks.values()), "checks": checks}
