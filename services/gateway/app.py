"""The gateway's request pipeline, free of nameko: request id, route, key and scope, rate
limit, input, handler, and every failure as problem details."""
from __future__ import annotations

import json
import logging
import re
import time
import uuid
from typing import Any

from werkzeug.wrappers import Request, Response

from shared import metrics
from services.gateway.auth import Authenticator, presented_key
from services.gateway.problems import Problem, problem_response
from services.gateway.ratelimit import FailureThrottle, RateLimiter
from services.gateway.routing import Context, Router, parse_json_body
from shared.logs import log_context

log = logging.getLogger(__name__)

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def request_id_of(request: Request) -> str:
    """The caller's X-Request-Id when it is a sane token (so ids can be followed across
    systems), otherwise a new one."""
    given = request.headers.get("X-Request-Id", "")
    return given if _REQUEST_ID.match(given) else uuid.uuid4().hex


def json_reply(status: int, body: Any, headers: dict | None = None) -> Response:
    return Response(json.dumps(body, default=str), status=status, mimetype="application/json",
                    headers=headers)


def lookup_key(backends: Any, key: str) -> dict | None:
    try:
        return backends.call("customer_sync", "authenticate_api_key", key)
    except Problem as problem:
        if problem.status == 404:
            return None
        raise Problem(503, "API keys cannot be checked right now; try again shortly",
                      kind="service-unavailable", headers={"Retry-After": "5"}) from None


class GatewayApp:
    def __init__(self, router: Router, authenticator: Authenticator, limiter: RateLimiter,
                 max_body_bytes: int, max_import_bytes: int | None = None,
                 auth_failures: FailureThrottle | None = None) -> None:
        self.router = router
        self.authenticator = authenticator
        self.limiter = limiter
        self.auth_failures = auth_failures or FailureThrottle(0)
        self.max_body_bytes = max_body_bytes
        self.max_import_bytes = max_import_bytes or max_body_bytes

    def _authenticate(self, request: Request, backends: Any, uncached: bool = False) -> Any:
        """The caller, with failures counted against the client's address: one that failed
        too often is refused before its next key costs a lookup."""
        address = request.remote_addr or "-"
        wait = self.auth_failures.wait_seconds(address)
        if wait:
            raise Problem(429, "too many failed authentications from this address; wait "
                               f"{wait} s", kind="too-many-failed-authentications",
                          headers={"Retry-After": str(wait)})
        try:
            return self.authenticator.caller(request.headers,
                                             lambda key: lookup_key(backends, key),
                                             uncached=uncached)
        except Problem as problem:
            if problem.status == 401 and presented_key(request.headers) is not None:
                self.auth_failures.failed(address)  # a key was looked up, and failed
            raise

    def handle(self, request: Request, backends: Any) -> Response:
        started = time.monotonic()
        request_id = request_id_of(request)
        headers: dict[str, str] = {}
        route_name = "-"
        caller = None
        try:
            route, path_values = self.router.match(request)
            route_name = route.endpoint
            if route.scope is not None:
                caller = self._authenticate(request, backends, uncached=route.uncached_key)
                decision = self.limiter.check(caller.key_id, caller.rate_limit_per_minute)
                headers["RateLimit-Limit"] = str(decision.limit)
                headers["RateLimit-Remaining"] = str(decision.remaining)
                if not decision.allowed:
                    raise Problem(429, f"this key may make {decision.limit} requests a minute",
                                  headers={"Retry-After": str(decision.retry_after)})
                if not caller.may(route.scope):
                    raise Problem(403, f"this key lacks the '{route.scope}' scope",
                                  kind="insufficient-scope", required_scope=route.scope)
            query = {p.name: p.parse(request.args) for p in route.query}
            body = parse_json_body(route, request, self.max_body_bytes
                                   if route.body_media_type == "application/json"
                                   else self.max_import_bytes)
            context = Context(request=request, request_id=request_id, caller=caller,
                              backends=backends, path=path_values, query=query, body=body,
                              authenticator=self.authenticator)
            with log_context(request_id=request_id,
                             store_id=caller.store_id if caller else None):
                result = route.handler(context)
            response = result if isinstance(result, Response) else json_reply(
                result.status, result.body, result.headers)
        except Problem as problem:
            response = problem_response(problem, request.path, request_id)
        except Exception:  # noqa: BLE001 - the caller gets a problem, the log the traceback
            log.exception("unexpected error on %s %s (request %s)", request.method,
                          request.path, request_id)
            response = problem_response(
                Problem(500, "the gateway failed; the request id helps find out why"),
                request.path, request_id)
        for name, value in headers.items():
            response.headers.setdefault(name, value)
        response.headers["X-Request-Id"] = request_id
        # Every answer is JSON or CSV as labelled: a browser must not guess it is HTML.
        response.headers["X-Content-Type-Options"] = "nosniff"
        metrics.observe_api_request(route_name if route_name != "-" else "unmatched",
                                    response.status_code, time.monotonic() - started)
        log.info("%s %s -> %s in %.1f ms (%s, request %s)", request.method, request.path,
                 response.status_code, (time.monotonic() - started) * 1000, route_name, request_id)
        return response
