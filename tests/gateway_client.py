"""An HTTP client for the gateway that checks every answer against the served OpenAPI
document: the status must be documented for the route, and the body must match its schema."""
from __future__ import annotations

import re

import requests
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

_DOC_URI = "urn:woo-companion:openapi"


def _pointer(*parts: str) -> str:
    return "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


class OpenApiChecker:
    def __init__(self, document: dict) -> None:
        self.document = document
        self.registry = Registry().with_resource(
            _DOC_URI, Resource.from_contents(document, default_specification=DRAFT202012))
        self.templates = [(re.compile("^" + re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(p)) + "$"), p)
                          for p in document["paths"]]
        self.checked: set[tuple[str, str, int]] = set()

    def template_of(self, path: str) -> str:
        matches = [t for rx, t in self.templates if rx.match(path)]
        if not matches:
            raise AssertionError(f"{path} is not in the OpenAPI document")
        # the most literal template wins (/reminders/x/complete over /reminders/{id})
        return max(matches, key=lambda t: (len(t) - t.count("{") * 10))

    def check(self, method: str, path: str, response: requests.Response) -> None:
        if not any(rx.match(path) for rx, _ in self.templates):
            # Not an API resource: all the document promises is a 404 problem.
            assert response.status_code == 404, f"{path} is not in the OpenAPI document"
            assert response.headers["Content-Type"].startswith("application/problem+json")
            return
        template = self.template_of(path)
        operation = self.document["paths"][template].get(method.lower())
        if operation is None:  # a method the path does not offer: a 405 problem
            assert response.status_code == 405, f"{method} {template} is not documented"
            assert response.headers["Content-Type"].startswith("application/problem+json")
            return
        status = str(response.status_code)
        key = status if status in operation["responses"] else "default"
        assert key in operation["responses"], f"{method} {template} answered undocumented {status}"
        if key == "default":
            assert response.status_code >= 400, f"{method} {template}: {status} undocumented"
        spec = operation["responses"][key]
        media = (response.headers.get("Content-Type") or "").split(";")[0].strip()
        content = spec.get("content") or {}
        if not content:
            return
        assert media in content, f"{method} {template} {status}: {media} not documented"
        if media.endswith("json"):
            schema = {"$ref": f"{_DOC_URI}#/" + _pointer("paths", template, method.lower(),
                                                       "responses", key, "content", media,
                                                       "schema")}
            validator = Draft202012Validator(schema, registry=self.registry)
            errors = sorted(validator.iter_errors(response.json()), key=lambda e: e.path)
            assert not errors, (f"{method} {template} {status} does not match the document: "
                                + "; ".join(f"{list(e.absolute_path)}: {e.message}"[:300]
                                            for e in errors[:5]))
        self.checked.add((method.upper(), template, response.status_code))


class GatewayClient:
    def __init__(self, base_url: str, key: str | None = None,
                 checker: OpenApiChecker | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.key = key
        self.session = requests.Session()
        self.checker = checker

    def with_key(self, key: str | None) -> "GatewayClient":
        return GatewayClient(self.base_url, key, self.checker)

    def request(self, method: str, path: str, **kwargs) -> requests.Response:
        headers = dict(kwargs.pop("headers", {}) or {})
        if self.key:
            headers.setdefault("Authorization", f"Bearer {self.key}")
        response = self.session.request(method, self.base_url + "/api/v1" + path, headers=headers,
                                        timeout=kwargs.pop("timeout", 30), **kwargs)
        assert response.headers.get("X-Request-Id"), "every response carries a request id"
        if self.checker is not None:
            self.checker.check(method, "/api/v1" + path.split("?")[0], response)
        return response

    def get(self, path: str, **kw) -> requests.Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw) -> requests.Response:
        return self.request("POST", path, **kw)

    def patch(self, path: str, **kw) -> requests.Response:
        return self.request("PATCH", path, **kw)

    def put(self, path: str, **kw) -> requests.Response:
        return self.request("PUT", path, **kw)

    def delete(self, path: str, **kw) -> requests.Response:
        return self.request("DELETE", path, **kw)
