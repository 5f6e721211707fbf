"""The services behind the gateway, called over nameko RPC with a deadline, their named errors
turned into problem details. Plain code: the nameko service hands it its RpcProxy objects, and
tests hand it fakes with the same shape (`proxy.method.call_async(...).result()`)."""
from __future__ import annotations

import logging
import time
from typing import Any, Iterable, Mapping

import eventlet
from nameko.exceptions import IncorrectSignature, MethodNotFound, RemoteError, UnknownService

from services.gateway.problems import Problem
from shared.errors import ServiceError

log = logging.getLogger(__name__)

# How a service's named error (shared.errors) reads over HTTP, by class name; anything else a
# service raises is its fault, not the caller's: 502.
_STATUS_BY_ERROR = {"NotFound": 404, "ValidationError": 400, "Conflict": 409,
                    "Unavailable": 503}


class _Deadline(Exception):
    pass


def problem_from(service: str, method: str, exc: BaseException) -> Problem:
    if isinstance(exc, ServiceError):
        status = _STATUS_BY_ERROR.get(type(exc).__name__, exc.http_status)
        extra = {}
        fields = (exc.details or {}).get("fields")
        if fields:
            extra["errors"] = fields
        other = {k: v for k, v in (exc.details or {}).items() if k != "fields"}
        if other:
            extra["details"] = other
        return Problem(status, exc.message or type(exc).__name__, **extra)
    if isinstance(exc, UnknownService):
        return Problem(503, f"the {service} service is not running", kind="service-unavailable",
                       service=service)
    if isinstance(exc, _Deadline):
        return Problem(504, f"the {service} service did not answer in time", kind="service-timeout",
                       service=service)
    if isinstance(exc, (MethodNotFound, IncorrectSignature)):
        log.error("gateway and %s disagree on %s: %s", service, method, exc)
        return Problem(502, f"the {service} service does not offer {method} as the gateway "
                            f"expects (versions out of step?)", kind="bad-gateway", service=service)
    if isinstance(exc, RemoteError):
        log.error("%s.%s failed: %s", service, method, exc)
        return Problem(502, f"the {service} service failed", kind="bad-gateway", service=service)
    raise exc


class Backends:
    def __init__(self, proxies: Mapping[str, Any], timeout_seconds: float) -> None:
        self.proxies = proxies
        self.timeout = timeout_seconds

    def call(self, service: str, method: str, *args, timeout: float | None = None,
             **kwargs) -> Any:
        """One RPC; its error as a Problem. `timeout` overrides the default for long work."""
        [result] = self.gather([(service, method, args, kwargs)], timeout)
        if isinstance(result, Problem):
            raise result
        return result

    def gather(self, calls: Iterable[tuple[str, str, tuple, dict]],
               timeout: float | None = None) -> list:
        """Several RPCs at once, under one deadline; each result or its Problem, in order."""
        calls = list(calls)
        pending = []
        for service, method, args, kwargs in calls:
            try:
                pending.append(getattr(self.proxies[service], method).call_async(*args, **kwargs))
            except Exception as exc:  # noqa: BLE001 - UnknownService and the like, per call
                pending.append(exc)
        deadline = time.monotonic() + (timeout or self.timeout)
        results: list = []
        for (service, method, _, _), reply in zip(calls, pending):
            try:
                if isinstance(reply, BaseException):
                    raise reply
                with eventlet.Timeout(max(0.0, deadline - time.monotonic()), _Deadline()):
                    results.append(reply.result())
            except Exception as exc:  # noqa: BLE001 - each call's failure is its own answer
                results.append(problem_from(service, method, exc))
        return results
