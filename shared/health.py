"""Liveness and readiness: is the process up, and can it reach its broker and database."""
from __future__ import annotations

import json

from kombu import Connection
from pymongo.database import Database
from werkzeug.wrappers import Response

from shared.mongo import ping


def broker_reachable(amqp_uri: str, timeout: float = 3.0) -> bool:
    try:
        with Connection(amqp_uri, connect_timeout=timeout) as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout)
        return True
    except Exception:  # any failure to connect means "not ready"
        return False


def readiness(amqp_uri: str, database: Database) -> dict:
    checks = {"broker": broker_reachable(amqp_uri), "database": ping(database)}
    return {"ready": all(checks.values()), "checks": checks}


def json_response(status: int, body: object, headers: dict | None = None) -> Response:
    return Response(json.dumps(body, default=str), status=status, mimetype="application/json",
                    headers=headers)
