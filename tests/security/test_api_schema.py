"""The document against what is served: a request the OpenAPI document allows must not be
refused for its shape, and one it does not allow must be refused by the gateway, naming the
field, before any service is asked. Schema fuzzing found tag and group names and cursors the
document let through and the services refused (400 for a schema-valid request), and empty
`due_before=` and `period=` quietly taken as absent."""
from __future__ import annotations

import json
import re

import pytest

from shared.paging import encode_cursor
from services.gateway import openapi
from services.gateway.routes import build_routes
from services.gateway.routing import CURSOR_PATTERN, SLUG_PATTERN
from services.segmentation.directory import _SLUG
from services.segmentation.rules import TAG_PATTERN
from tests.security.test_api_answers import answer, app  # noqa: F401 - the app fixture

DOCUMENT = openapi.document(build_routes())


def _operations():
    for path, item in DOCUMENT["paths"].items():
        for method, operation in item.items():
            yield path, method, operation


def _arrays_named(schema, names: set[str], found: list) -> list:
    """Every array schema held under one of `names`, however deep in `schema`."""
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key in names and isinstance(value, dict) and value.get("type") == "array":
                found.append(value)
            _arrays_named(value, names, found)
    elif isinstance(schema, list):
        for value in schema:
            _arrays_named(value, names, found)
    return found


def test_names_of_tags_groups_and_templates_document_their_pattern():
    named = 0
    for path, method, operation in _operations():
        for param in operation["parameters"]:
            if param["name"] in ("tag", "group", "slug"):
                named += 1
                schema = param["schema"]
                pattern = schema.get("pattern") or schema.get("items", {}).get("pattern")
                assert pattern == SLUG_PATTERN, (method, path, param)
        body = json.dumps(operation.get("requestBody", {}))
        for array in _arrays_named(json.loads(body), {"tags", "groups"}, []):
            named += 1
            assert array["items"].get("pattern") == SLUG_PATTERN, (method, path, array)
    assert named >= 10


def test_every_cursor_documents_its_format():
    cursors = [(path, param) for path, _, operation in _operations()
               for param in operation["parameters"] if param["name"] == "cursor"]
    assert len(cursors) >= 5
    assert all(param["schema"].get("pattern") == CURSOR_PATTERN for _, param in cursors)


@pytest.mark.parametrize("method,path,field", [
    ("DELETE", "/api/v1/customers/c1/tags/Not%20A%20Slug", "tag"),
    ("DELETE", "/api/v1/customers/c1/groups/UPPER", "group"),
    ("GET", "/api/v1/notifications/templates/-starts-with-dash", "slug"),
    ("GET", "/api/v1/customers?tag=vip,Not%20A%20Slug", "tag"),
    ("GET", "/api/v1/customers?cursor=not%20a%20cursor!", "cursor"),
    ("GET", "/api/v1/reminders?due_before=", "due_before"),
    ("GET", "/api/v1/reports?period=", "period"),
    ("GET", "/api/v1/customers?limit=", "limit"),
    ("DELETE", "/api/v1/customers/c1/tags/vip%0A", "tag"),  # `$` matches before a newline
    ("GET", "/api/v1/companies/co_" + "a" * 24 + "%0A", "company_id"),
    ("GET", "/api/v1/companies/CO_" + "A" * 24, "company_id"),
    ("DELETE", "/api/v1/companies/%7B%22%24ne%22%3A1%7D", "company_id"),
    ("GET", "/api/v1/companies/co_" + "a" * 24 + "/members?limit=501", "limit"),
    ("GET", "/api/v1/companies?limit=101", "limit"),
    ("GET", "/api/v1/customers?company_id=co_1", "company_id"),
    ("GET", "/api/v1/exports/customers?company_id=%3Cscript%3E", "company_id"),
])
def test_a_value_outside_the_document_is_refused_naming_the_field(app, method, path, field):
    response = answer(app, method, path)
    assert response.status_code == 400, response.get_data(as_text=True)[:300]
    problem = json.loads(response.get_data())
    assert field in problem["errors"], problem


@pytest.mark.parametrize("method,path", [
    ("DELETE", "/api/v1/customers/c1/tags/big-spender_2"),
    ("DELETE", "/api/v1/customers/c1/groups/trade"),
    ("GET", "/api/v1/notifications/templates/welcome"),
    ("GET", "/api/v1/customers?tag=vip,big-spender&group=trade"),
    ("GET", "/api/v1/customers?cursor=WyIyMDI2LTAxLTAxIiwgImMxIl0="),
    ("GET", "/api/v1/customers/c1/loyalty/history?cursor=42"),
    ("GET", "/api/v1/customers?q="),  # empty free text: no filter
    ("GET", "/api/v1/companies/co_" + "0123456789abcdef01234567"),
    ("GET", "/api/v1/customers?company_id=co_" + "f" * 24),
])
def test_a_value_the_document_allows_reaches_the_service(app, method, path):
    """The stand-in services know nothing, so the answer is theirs (404), not a refusal."""
    response = answer(app, method, path)
    assert response.status_code != 400, response.get_data(as_text=True)[:300]


def test_the_patterns_are_the_services_own():
    """The gateway checks what the services would refuse: segmentation's and notifications'
    slug rule, and the cursors the services hand out."""
    assert _SLUG.pattern == TAG_PATTERN.pattern == SLUG_PATTERN
    assert re.match(CURSOR_PATTERN, encode_cursor(("2026-01-01T00:00:00+00:00", "c" * 32)))
