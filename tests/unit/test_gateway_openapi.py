"""The generated OpenAPI document is itself valid OpenAPI 3.1, and every operation in it says
what it is for, where it belongs, what it answers on success, and has its own operationId
(client generators name methods after it)."""
from __future__ import annotations

from collections import Counter

import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import OpenAPIV31SpecValidator

from services.gateway import openapi
from services.gateway.routes import build_routes
from services.gateway.routing import Route


@pytest.fixture(scope="module")
def document() -> dict:
    return openapi.document(build_routes())


def operations(document: dict):
    for path, item in document["paths"].items():
        for method, operation in item.items():
            yield f"{method.upper()} {path}", operation


def test_the_document_is_valid_openapi_3_1(document):
    assert document["openapi"] == "3.1.0"
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"[:300]
              for e in OpenAPIV31SpecValidator(document).iter_errors()]
    assert errors == []


def test_the_validator_refuses_a_broken_document(document):
    """The check above can fail: an operation whose path parameter is not declared, and an
    operationId used twice, are refused."""
    import copy

    broken = copy.deepcopy(document)
    broken["paths"]["/api/v1/customers/{customer_id}"]["get"]["parameters"] = []
    assert list(OpenAPIV31SpecValidator(broken).iter_errors())
    twice = copy.deepcopy(document)
    twice["paths"]["/api/v1/tags"]["get"]["operationId"] = "list_groups"
    assert list(OpenAPIV31SpecValidator(twice).iter_errors())


def test_every_route_is_in_the_document_once(document):
    routes = build_routes()
    documented = {name for name, _ in operations(document)}
    assert documented == {f"{r.method} {r.openapi_path}" for r in routes}
    assert len(documented) == len(routes)


def test_every_operation_has_a_summary_a_tag_and_a_documented_success(document):
    for name, operation in operations(document):
        assert operation.get("summary", "").strip(), f"{name} has no summary"
        assert operation.get("tags") and all(operation["tags"]), f"{name} has no tag"
        successes = [status for status in operation["responses"] if status.startswith("2")]
        assert successes, f"{name} documents no success answer"
        for status in successes:
            answer = operation["responses"][status]
            assert answer.get("description"), f"{name} {status} has no description"
            for media, content in (answer.get("content") or {}).items():
                assert "schema" in content, f"{name} {status} {media} has no schema"
        assert "default" in operation["responses"], f"{name} documents no error answer"


def test_operation_ids_are_unique(document):
    counts = Counter(op["operationId"] for _, op in operations(document))
    assert [op_id for op_id, n in counts.items() if n > 1] == []


def test_a_duplicate_operation_id_would_be_caught():
    def handler(ctx):  # the same function name serving two routes
        return None

    routes = [Route("GET", "/a", handler, "A", "t"), Route("GET", "/b", handler, "B", "t")]
    counts = Counter(op["operationId"] for _, op in operations(openapi.document(routes)))
    assert max(counts.values()) == 2


def test_every_schema_in_the_document_is_valid_json_schema_2020_12(document):
    """Bodies are validated with these schemas at run time: a malformed one would refuse or
    pass the wrong input, so each is checked against the 2020-12 meta-schema."""
    def schemas():
        for name, operation in operations(document):
            for content in ((operation.get("requestBody") or {}).get("content") or {}).values():
                yield f"{name} request", content["schema"]
            for status, answer in operation["responses"].items():
                for content in (answer.get("content") or {}).values():
                    yield f"{name} {status}", content["schema"]
            for parameter in operation.get("parameters", []):
                yield f"{name} {parameter['name']}", parameter["schema"]

    for where, schema in schemas():
        errors = list(Draft202012Validator(Draft202012Validator.META_SCHEMA).iter_errors(schema))
        assert errors == [], f"{where}: {errors[0].message}"
