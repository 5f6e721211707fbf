"""Routes declared once: the app dispatches, checks scopes and parses input from them, and the
OpenAPI document is generated from them, so the document cannot drift from what is served."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator
from urllib.parse import urlencode

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from werkzeug.datastructures import MultiDict
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from services.gateway.problems import Problem
from shared.times import RefusedTime, check_aware

API_PREFIX = "/api/v1"
# A tag's, group's or template's name, as segmentation and notifications take it.
SLUG_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
# Every list's next_cursor: URL-safe base64 (a ledger's is digits, a subset), opaque to callers.
CURSOR_PATTERN = r"^[A-Za-z0-9_-]+={0,2}$"
# A company's id, as customer_sync makes it.
COMPANY_ID_PATTERN = r"^co_[0-9a-f]{24}$"
# Path parameters with a format of their own: documented, and checked before any service is
# asked, so that a value the document allows is never refused for its shape.
PATH_PATTERNS = {"tag": SLUG_PATTERN, "group": SLUG_PATTERN, "slug": SLUG_PATTERN,
                 "merge_id": r"^[A-Za-z0-9_-]{1,64}$", "company_id": COMPANY_ID_PATTERN,
                 "key": r"^[a-z][a-z0-9_]{0,39}$"}  # a custom field's


@dataclass
class Param:
    """A query parameter: `kind` is string, integer, boolean, date-time or a list of strings."""

    name: str
    description: str
    kind: str = "string"
    enum: tuple | None = None
    default: Any = None
    minimum: int | None = None
    maximum: int | None = None
    max_length: int = 200
    pattern: str | None = None  # a string's (or each list item's) regular expression
    required: bool = False  # absent: a 400 naming it, rather than a default

    def schema(self) -> dict:
        shape = {"pattern": self.pattern} if self.pattern else {}
        if self.kind == "list":
            return {"type": "array",
                    "items": {"type": "string", "maxLength": self.max_length, **shape}}
        base = {"string": {"type": "string", "maxLength": self.max_length, **shape},
                "integer": {"type": "integer"}, "boolean": {"type": "boolean"},
                "date-time": {"type": "string", "format": "date-time"}}[self.kind]
        base = dict(base)
        if self.enum:
            base["enum"] = list(self.enum)
        if self.minimum is not None:
            base["minimum"] = self.minimum
        if self.maximum is not None:
            base["maximum"] = self.maximum
        if self.default is not None:
            base["default"] = self.default
        return base

    def parse(self, args: MultiDict) -> Any:
        if self.kind == "list":
            values = [v for raw in args.getlist(self.name) for v in raw.split(",") if v.strip()]
            if any(len(v) > self.max_length for v in values):
                raise _bad(self.name, f"at most {self.max_length} characters each")
            values = [v.strip() for v in values]
            if self.pattern and not all(re.fullmatch(self.pattern, v) for v in values):
                raise _bad(self.name, f"each must match {self.pattern}")
            return values or None
        raw = args.get(self.name)
        if raw is None:
            if self.required:
                raise _bad(self.name, "is required")
            return self.default
        if raw == "":
            # An empty free-text value is no filter; for a number, a flag, a time or a choice
            # it is no value at all, and saying so beats silently using the default.
            if self.kind == "string" and not self.enum and not self.pattern:
                return self.default
            raise _bad(self.name, "must not be empty")
        if self.kind == "integer":
            try:
                value = int(raw)
            except ValueError:
                raise _bad(self.name, "must be a whole number") from None
            if (self.minimum is not None and value < self.minimum) or (
                    self.maximum is not None and value > self.maximum):
                raise _bad(self.name, f"must be from {self.minimum} to {self.maximum}")
            return value
        if self.kind == "boolean":
            if raw.lower() not in ("true", "false", "1", "0"):
                raise _bad(self.name, "must be true or false")
            return raw.lower() in ("true", "1")
        if len(raw) > self.max_length:
            raise _bad(self.name, f"at most {self.max_length} characters")
        if self.kind == "date-time":
            try:
                return check_aware(raw).isoformat()
            except RefusedTime as refused:
                raise _bad(self.name, _TIME_REFUSALS[refused.reason]) from None
        if self.enum and raw not in self.enum:
            raise _bad(self.name, f"must be one of {', '.join(map(str, self.enum))}")
        if self.pattern and not re.fullmatch(self.pattern, raw):
            raise _bad(self.name, f"must match {self.pattern}")
        return raw


# What a date-time parameter's 400 says, by check_aware's reason.
_TIME_REFUSALS = {"invalid": "must be an ISO-8601 time, e.g. 2026-01-31T00:00:00Z",
                  "naive": "must carry a time zone (Z or +hh:mm)",
                  "out_of_range": "is out of range in UTC (years 1 to 9999)"}


def _bad(name: str, message: str) -> Problem:
    return Problem(400, f"query parameter {name} {message}", kind="invalid-parameter",
                   errors={name: [message]})


@dataclass
class Reply:
    body: Any
    status: int = 200
    headers: dict = field(default_factory=dict)


@dataclass
class Route:
    method: str
    path: str  # werkzeug style below API_PREFIX: "/customers/<customer_id>"
    handler: Callable[["Context"], Reply | Response]
    summary: str
    tag: str
    scope: str | None = "read"  # None: no key needed
    query: list[Param] = field(default_factory=list)
    body: dict | None = None  # JSON Schema of a JSON request body
    body_required: bool = True
    body_media_type: str = "application/json"
    responses: dict[int, dict | None] = field(default_factory=dict)  # status -> JSON Schema
    response_media_type: str = "application/json"
    # Several media types for one success status: {media type: JSON Schema}.
    alternative_content: dict[str, dict] | None = None
    description: str = ""
    # Check the caller's key with its owner on every request, never from the gateway's cache:
    # for the routes that manage keys, so a just-revoked key cannot act through a stale entry.
    uncached_key: bool = False

    @property
    def endpoint(self) -> str:
        return f"{self.method} {self.path}"

    @property
    def openapi_path(self) -> str:
        return re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", API_PREFIX + self.path)

    @property
    def path_params(self) -> list[str]:
        return re.findall(r"<(?:\w+:)?(\w+)>", self.path)

    def validator(self) -> Draft202012Validator | None:
        if self.body is None or self.body_media_type != "application/json":
            return None
        if not hasattr(self, "_validator"):
            self._validator = Draft202012Validator(self.body)
        return self._validator


@dataclass
class Context:
    """What a handler gets: the request, who calls, the services, and its parsed input."""

    request: Request
    request_id: str
    caller: Any  # auth.Caller, or None on routes without a scope
    backends: Any  # backends.Backends
    path: dict
    query: dict
    body: Any
    authenticator: Any = None  # auth.Authenticator: key routes drop what it cached of a key

    @property
    def store_id(self) -> str:
        return self.caller.store_id

    @property
    def actor(self) -> str:
        return self.caller.actor

    def call(self, service: str, method: str, *args, **kwargs) -> Any:
        return self.backends.call(service, method, *args, **kwargs)

    def next_page(self, cursor: str | None) -> dict:
        """The headers of a page that has a next one: a `Link` to this request with `cursor`."""
        if not cursor:
            return {}
        args = [(k, v) for k, v in self.request.args.items(multi=True) if k != "cursor"]
        args.append(("cursor", cursor))
        return {"Link": f'<{self.request.path}?{urlencode(args)}>; rel="next"'}


class Router:
    def __init__(self, routes: list[Route]) -> None:
        self.routes = routes
        self._by_endpoint = {r.endpoint: r for r in routes}
        if len(self._by_endpoint) != len(routes):
            raise ValueError("two routes share a method and path")
        self.map = Map([Rule(API_PREFIX + r.path, endpoint=r.endpoint, methods=[r.method])
                        for r in routes], strict_slashes=False, merge_slashes=False)

    def match(self, request: Request) -> tuple[Route, dict]:
        from werkzeug.exceptions import MethodNotAllowed, NotFound
        from werkzeug.routing import RequestRedirect

        adapter = self.map.bind_to_environ(request.environ)
        try:
            if request.method == "OPTIONS":
                adapter.match(method="OPTIONS")  # no route takes it: answers what the path does
            endpoint, values = adapter.match(method=request.method)
        except MethodNotAllowed as exc:
            if request.method == "OPTIONS":
                return _options_route(sorted(set(exc.valid_methods or []) | {"OPTIONS"})), {}
            allowed = ", ".join(sorted(exc.valid_methods or []))
            raise Problem(405, f"{request.method} is not allowed here; allowed: {allowed}",
                          headers={"Allow": allowed}) from None
        except (NotFound, RequestRedirect):
            # A redirect would be werkzeug tidying the path (an empty segment, "//", found by
            # fuzzing: it escaped as a 500); an API path is either exact or not found.
            raise Problem(404, f"no such resource: {request.path}") from None
        for name, value in values.items():
            pattern = PATH_PATTERNS.get(name)
            if pattern and not re.fullmatch(pattern, value):
                raise Problem(400, f"path parameter {name} must match {pattern}",
                              kind="invalid-parameter", errors={name: [f"must match {pattern}"]})
        return self._by_endpoint[endpoint], values


def _options_route(allowed: list[str]) -> Route:
    """OPTIONS on a resource: which methods it answers, to anyone, with nothing else done (one
    route for every path, so the request metrics get one label for it)."""
    def answer(ctx: Context) -> Response:  # noqa: ARG001 - the same for every caller
        return Response(status=204, headers={"Allow": ", ".join(allowed)})

    return Route("OPTIONS", "/*", answer, "What this resource answers", "meta", scope=None)


def parse_json_body(route: Route, request: Request, max_bytes: int) -> Any:
    if route.body is None:
        return None
    length = request.content_length
    if length is not None and length > max_bytes:
        raise Problem(413, f"the body is larger than {max_bytes} bytes")
    raw = request.stream.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise Problem(413, f"the body is larger than {max_bytes} bytes")
    if not raw:
        if route.body_required:
            raise Problem(400, "this request needs a body", kind="invalid-body")
        return None
    if route.body_media_type != "application/json":
        if request.mimetype not in (route.body_media_type, "application/octet-stream", ""):
            raise Problem(415, f"send the body as {route.body_media_type}")
        return raw
    if request.mimetype != "application/json":
        raise Problem(415, "send the body as application/json")
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        # ValueError covers UnicodeDecodeError and numbers of more than 4,300 digits; JSON
        # nested deeper than the interpreter's stack is a RecursionError (found by fuzzing).
        raise Problem(400, "the body is not valid JSON", kind="invalid-body") from None
    errors: dict[str, list[str]] = {}
    for error in _named_errors(route.validator().iter_errors(body)):
        where = "/".join(str(p) for p in error.absolute_path) or "(body)"
        errors.setdefault(where, []).append(error.message[:200])
    if errors:
        raise Problem(400, "the body does not match the schema", kind="invalid-body",
                      errors=errors)
    return body


def _named_errors(errors: Iterable[ValidationError]) -> Iterator[ValidationError]:
    """Errors naming the innermost field: a nullable object (`anyOf` of the object and null)
    given an object is wrong in its fields, so those are named (`coupon/amount`), not the
    object as a whole ("is not valid under any of the given schemas")."""
    for error in errors:
        branches = error.validator_value if error.validator == "anyOf" else None
        if isinstance(branches, list) and {"type": "null"} in branches and error.instance is not None:
            null_branch = branches.index({"type": "null"})
            inner = [e for e in error.context if e.schema_path and e.schema_path[0] != null_branch]
            if inner:
                yield from _named_errors(inner)
                continue
        yield error
