"""gateway put together: the route table, key cache, rate limits, console and broker check made
once from its config, so every request of a process shares one of each (a key's bucket and a
cached key outlive the request) and the app runs without nameko in tests."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from nameko.extensions import DependencyProvider

from services.gateway.app import GatewayApp
from services.gateway.auth import Authenticator
from services.gateway.backends import Backends
from services.gateway.console.app import ConsoleApp
from services.gateway.ratelimit import FailureThrottle, RateLimiter
from services.gateway.routes import build_routes
from services.gateway.routing import Router
from shared.config import Config, from_nameko
from shared.health import readiness
from shared.messaging.broadcast import watch_broadcasts
from shared.tls import amqp_ssl_options

# The services the API and the console reach over RPC, each through an RpcProxy of the service.
BACKEND_SERVICES = ("customer_sync", "segmentation", "loyalty", "notifications", "gdpr")


@dataclass(frozen=True)
class Gateway:
    """What the gateway's workers see. The services behind it are reached through the calling
    worker's RPC proxies, which belong to that worker, so `backends` wraps them per request."""

    app: GatewayApp
    console: ConsoleApp
    rpc_timeout_seconds: float
    amqp_uri: str
    amqp_ssl: Any

    def backends(self, proxies: Mapping[str, Any]) -> Backends:
        """The services behind the gateway for one request, through its worker's proxies."""
        return Backends(proxies, self.rpc_timeout_seconds)

    def readiness(self) -> dict:
        """The gateway has no database: it is ready when it can reach the broker."""
        return readiness(self.amqp_uri, None, self.amqp_ssl)


def build(config: Config) -> Gateway:
    """The gateway from its settings; a console misconfigured (session limits, cookie flag)
    stops it starting."""
    app = GatewayApp(
        Router(build_routes()), Authenticator(config.float("GATEWAY_KEY_CACHE_SECONDS")),
        RateLimiter(config.int("GATEWAY_RATE_LIMIT_PER_MINUTE")),
        max_body_bytes=config.int("GATEWAY_MAX_BODY_BYTES"),
        max_import_bytes=config.int("GATEWAY_MAX_IMPORT_BYTES"),
        auth_failures=FailureThrottle(config.int("GATEWAY_AUTH_FAILURES_PER_MINUTE")))
    # The admin console: a client of this same app, so the same routes, scopes and limits.
    return Gateway(app=app, console=ConsoleApp(app, config),
                   rpc_timeout_seconds=config.float("GATEWAY_RPC_TIMEOUT_SECONDS"),
                   amqp_uri=config.get("AMQP_URI"), amqp_ssl=amqp_ssl_options(config))


class GatewayProvider(DependencyProvider):
    """One Gateway per container, built by `factory` from the container's config; workers get
    the Gateway, not this provider."""

    def __init__(self, factory: Callable[[Config], Gateway] = build) -> None:
        self.factory = factory
        self.gateway: Gateway | None = None

    def setup(self) -> None:
        self.gateway = self.factory(from_nameko(self.container.config))
        # Cached key checks are only as good as the revocation broadcasts heard: none is used
        # while this instance's broadcast connection is down, nor kept when it is back.
        watch_broadcasts(self.container, self.gateway.app.authenticator)

    def get_dependency(self, worker_ctx) -> Gateway:
        assert self.gateway is not None
        return self.gateway
