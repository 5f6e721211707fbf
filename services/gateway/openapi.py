"""The OpenAPI 3.1 document, generated from the route table (OpenAPI 3.1's schemas are JSON
Schema 2020-12, the same dialect the gateway validates bodies with)."""
from __future__ import annotations

from services.gateway import schemas as s
from services.gateway.routing import PATH_PATTERNS, Route

_SCOPE_TEXT = {"read": "read", "write": "write (includes read)", "gdpr": "gdpr",
               "admin": "admin (includes every scope)"}


def _parameters(route: Route) -> list[dict]:
    params = [{"name": name, "in": "path", "required": True, "schema": {
        "type": "string", **({"pattern": PATH_PATTERNS[name]} if name in PATH_PATTERNS else {})}}
        for name in route.path_params]
    for p in route.query:
        entry = {"name": p.name, "in": "query", "required": p.required, "description": p.description,
                 "schema": p.schema()}
        if p.kind == "list":
            entry["style"], entry["explode"] = "form", True
        params.append(entry)
    return params


def _problem(description: str) -> dict:
    return {"description": description,
            "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}


def operation(route: Route) -> dict:
    op: dict = {"operationId": route.handler.__name__, "summary": route.summary,
                "tags": [route.tag], "parameters": _parameters(route), "responses": {}}
    if route.description:
        op["description"] = route.description
    if route.scope is None:
        op["security"] = []
    else:
        op["security"] = [{"apiKey": []}]
        op["x-required-scope"] = route.scope
        op["description"] = (op.get("description", "") +
                             f"\n\nNeeds an API key with the {_SCOPE_TEXT[route.scope]} scope."
                             ).strip()
    if route.body is not None:
        op["requestBody"] = {"required": route.body_required,
                             "content": {route.body_media_type: {"schema": route.body}}}
    for status, schema in route.responses.items():
        content = {} if schema is None else {route.response_media_type: {"schema": schema}}
        if schema is not None and route.alternative_content:
            content.update({media: {"schema": alt}
                            for media, alt in route.alternative_content.items()})
        op["responses"][str(status)] = {"description": "success", **(
            {"content": content} if content else {})}
    op["responses"]["default"] = _problem("an error, as RFC 7807 problem details")
    if route.scope is not None:
        op["responses"]["401"] = _problem("no API key, or an unknown or revoked one")
        op["responses"]["403"] = _problem("the key lacks the scope")
        op["responses"]["429"] = _problem("the key's rate limit is spent; see Retry-After")
    return op


def document(routes: list[Route], version: str = "1.0.0") -> dict:
    paths: dict = {}
    for route in routes:
        paths.setdefault(route.openapi_path, {})[route.method.lower()] = operation(route)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Woo Companion API", "version": version,
                 "description": "A WooCommerce store's customers, segments, loyalty, messages "
                                "and GDPR requests. Every response carries X-Request-Id; "
                                "errors are RFC 7807 problem details; money is integer minor "
                                "units with an ISO-4217 currency."},
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": {"Problem": s.PROBLEM},
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer",
                                           "description": "Authorization: Bearer wcc_..."}},
        },
    }
