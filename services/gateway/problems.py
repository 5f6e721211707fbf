"""RFC 7807 problem details: every error the API answers has this one shape."""
from __future__ import annotations

import json

from werkzeug.wrappers import Response

from shared.web import PROBLEM_TYPE_BASE

_TITLES = {
    400: "Bad request", 401: "Unauthorized", 403: "Forbidden", 404: "Not found",
    405: "Method not allowed", 409: "Conflict", 413: "Payload too large",
    415: "Unsupported media type", 422: "Unprocessable content", 429: "Too many requests",
    500: "Internal server error", 502: "Bad gateway", 503: "Service unavailable",
    504: "Gateway timeout",
}


class Problem(Exception):
    """Raised anywhere in a request's handling; the app turns it into the response."""

    def __init__(self, status: int, detail: str, kind: str | None = None,
                 headers: dict | None = None, **extra) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.kind = kind or _TITLES.get(status, "error").lower().replace(" ", "-")
        self.headers = dict(headers or {})
        self.extra = extra

    def body(self, instance: str, request_id: str) -> dict:
        return {"type": PROBLEM_TYPE_BASE + self.kind, "title": _TITLES.get(self.status, "Error"),
                "status": self.status, "detail": self.detail, "instance": instance,
                "request_id": request_id, **self.extra}


def problem_response(problem: Problem, instance: str, request_id: str) -> Response:
    return Response(json.dumps(problem.body(instance, request_id), default=str),
                    status=problem.status, mimetype="application/problem+json",
                    headers=problem.headers)
