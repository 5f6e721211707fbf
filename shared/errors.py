"""Named errors that every service raises over RPC and every caller can map to HTTP codes.

nameko serialises an exception raised in an RPC method by its module path; registering the
classes here means a nameko RPC client re-raises the same class instead of a bare RemoteError.
"""
from __future__ import annotations

from nameko.exceptions import registry


class ServiceError(Exception):
    """Base for errors a caller is expected to handle; `http_status` is the natural mapping."""

    http_status = 500

    def __init__(self, message: str = "", details: dict | None = None) -> None:
        # Both travel in `args`, which is what nameko serialises across RPC.
        super().__init__(message, dict(details or {}))
        self.message = message
        self.details = dict(details or {})

    def __str__(self) -> str:
        return self.message


class NotFound(ServiceError):
    http_status = 404


class ValidationError(ServiceError):
    """Bad input; `details["fields"]` names the offending fields when known."""

    http_status = 400


class Conflict(ServiceError):
    http_status = 409


class Unavailable(ServiceError):
    """Something outside the service (a shop's API) did not answer; nothing was changed, and
    the same call can be tried again later."""

    http_status = 503


class Refused(ServiceError):
    """Something outside the service (a shop's API) refused the request for good: asking again
    will not help; what was promised on the strength of it is undone."""

    http_status = 502


def _register(*classes: type[Exception]) -> None:
    for cls in classes:
        registry[f"{cls.__module__}.{cls.__name__}"] = cls


_register(NotFound, ValidationError, Conflict, Unavailable, Refused)

EXPECTED_ERRORS = (NotFound, ValidationError, Conflict, Unavailable, Refused)
