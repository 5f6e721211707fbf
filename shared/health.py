"""Liveness and readiness: is the process up, and can it reach its broker and database."""
from __future__ import annotations

import json
from typing import Callable

from kombu import Connection
from pymongo.database import Database
from werkzeug.wrappers import Response

from shared.messaging.broker_uri import connect_retries
from shared.mongo import ping
from shared.tls import amqp_ssl_options
from shared.web import http


def broker_connection_error(amqp_uri: str, timeout: float = 3.0, ssl: dict | None = None,
                            retries: int = 0) -> BaseException | None:
    """None when a node of the broker accepts a connection (address, TLS, user and vhost all
    right); else what refused it, for `describe_broker_error` to name. Every node of a
    failover URI is tried, then tried again `retries` times, each round after a wait of 2 s
    (kombu's own pace)."""
    connection = Connection(amqp_uri, ssl=ssl, connect_timeout=timeout)
    try:
        connection.ensure_connection(max_retries=connect_retries(amqp_uri, rounds=retries + 1),
                                     timeout=timeout,
                                     reraise_as_library_errors=False)
        return None
    except Exception as exc:  # any failure to connect is the answer
        return exc
    finally:
        connection.release()


def broker_reachable(amqp_uri: str, timeout: float = 3.0, ssl: dict | None = None) -> bool:
    return broker_connection_error(amqp_uri, timeout, ssl, retries=1) is None


def readiness(amqp_uri: str, database: Database | None, ssl: dict | None = None) -> dict:
    """Broker and database reachable; a process without a database (the gateway) checks the
    broker only."""
    checks = {"broker": broker_reachable(amqp_uri, ssl=ssl)}
    if database is not None:
        checks["database"] = ping(database)
    return {"ready": all(checks.values()), "checks": checks}


def process_readiness(amqp_uri: str, database: Database | None,
                      started: Callable[[], bool], ssl: dict | None = None
                      ) -> Callable[[], dict]:
    """Readiness of a whole process (the metrics port): its services have started and not
    begun stopping, and the broker (over TLS where configured) and database answer."""

    def check() -> dict:
        running = bool(started())
        state = readiness(amqp_uri, database, ssl) if running else {
            "ready": False, "checks": {"broker": None, "database": None}}
        state["checks"]["services"] = running
        state["ready"] = running and state["ready"]
        return state

    return check


def json_response(status: int, body: object, headers: dict | None = None) -> Response:
    return Response(json.dumps(body, default=str), status=status, mimetype="application/json",
                    headers=headers)


class HealthEndpoints:
    """Mixin for a nameko service with `storage` (MongoStorage) and `settings` (Settings):
    `GET /health/live` and `GET /health/ready` on the service's web server."""

    @http("GET", "/health/live")
    def live(self, request) -> Response:
        return json_response(200, {"live": True, "service": self.name})

    @http("GET", "/health/ready")
    def ready(self, request) -> Response:
        state = readiness(self.settings.get("AMQP_URI"), self.storage.database,
                          amqp_ssl_options(self.settings))
        return json_response(200 if state["ready"] else 503, {**state, "service": self.name})
