"""The console's way to the services: the gateway's own API pipeline, in-process.

Every console call is built as an `/api/v1` request carrying the signed-in key and handed to
GatewayApp.handle, the same code that serves the HTTP API: the same route table, scope check,
rate limit, input validation, handlers and problem details. So the console cannot see or do
anything the key could not do with curl, and no rule is written twice."""
from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, urlencode

from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from services.gateway.routing import API_PREFIX


class ApiError(Exception):
    """An API answer other than 2xx, as its problem details."""

    def __init__(self, status: int, problem: dict) -> None:
        super().__init__(problem.get("detail") or f"HTTP {status}")
        self.status = status
        self.problem = problem

    @property
    def detail(self) -> str:
        return self.problem.get("detail") or f"the request failed (HTTP {self.status})"

    @property
    def field_errors(self) -> dict:
        return self.problem.get("errors") or {}

    @property
    def page_status(self) -> int:
        """The status of the page that shows this refusal: the API's own 4xx as it is, its
        failure as a bad gateway."""
        return self.status if 400 <= self.status < 500 else 502

    def message(self) -> str:
        """One line for a person: the detail and, where named, the failing fields."""
        errors = self.field_errors
        if not errors:
            return self.detail
        parts = []
        for field, messages in errors.items():
            text = "; ".join(map(str, messages)) if isinstance(messages, list) else str(messages)
            parts.append(f"{field}: {text}")
        return f"{self.detail} ({', '.join(parts)})"


def path(*segments: str) -> str:
    """An API path from segments, each percent-encoded (ids and tags come from users)."""
    return "/" + "/".join(quote(str(s), safe="") for s in segments)


class ApiClient:
    """Calls the gateway's API as the signed-in key, in the same process."""

    def __init__(self, gateway_app: Any, backends: Any, api_key: str,
                 request_id: str | None = None) -> None:
        self.app = gateway_app
        self.backends = backends
        self.api_key = api_key
        self.request_id = request_id

    def call(self, method: str, api_path: str, query: Any = None, body: Any = None,
             headers: dict | None = None) -> Any:
        """The JSON answer of `method API_PREFIX+api_path`; ApiError for anything not 2xx."""
        all_headers = {"Authorization": f"Bearer {self.api_key}", **(headers or {})}
        if self.request_id:
            all_headers["X-Request-Id"] = self.request_id
        builder = EnvironBuilder(
            path=API_PREFIX + api_path, method=method,
            query_string=urlencode(query or [], doseq=True),
            data=None if body is None else json.dumps(body),
            content_type=None if body is None else "application/json",
            headers=all_headers)
        try:
            request = Request(builder.get_environ())
        finally:
            builder.close()
        response = self.app.handle(request, self.backends)
        raw = response.get_data()
        try:
            answer = json.loads(raw) if raw else None
        except ValueError:
            answer = {"detail": raw[:200].decode("utf-8", "replace")}
        if response.status_code >= 400:
            raise ApiError(response.status_code, answer if isinstance(answer, dict) else {})
        return answer

    def get(self, api_path: str, query: Any = None) -> Any:
        return self.call("GET", api_path, query)

    def get_or(self, default: Any, api_path: str, query: Any = None) -> Any:
        """A part of a page that may be missing (a list for a choice, say): `default` when
        the API refuses."""
        try:
            return self.get(api_path, query)
        except ApiError:
            return default

    def post(self, api_path: str, body: Any = None, headers: dict | None = None) -> Any:
        return self.call("POST", api_path, body=body, headers=headers)

    def put(self, api_path: str, body: Any) -> Any:
        return self.call("PUT", api_path, body=body)

    def patch(self, api_path: str, body: Any) -> Any:
        return self.call("PATCH", api_path, body=body)

    def delete(self, api_path: str, query: Any = None) -> Any:
        return self.call("DELETE", api_path, query)
