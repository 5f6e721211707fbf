"""Custom fields, attacked: oversized definitions and bodies, values of the wrong type, keys the
store never defined (operators, dots, a megabyte of key), and another store's customer. The
gateway refuses what its document does not allow before any service is asked; customer_sync
refuses the rest naming `custom_fields.<key>` (or the definition's field), with a bounded
answer, and stores nothing."""
from __future__ import annotations

import json
import re

import pytest
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from devdoubles import mongomock_adapter
from services.customer_sync.core.sync import CustomerSync
from services.customer_sync.crm.custom_fields import CustomFields
from services.customer_sync.crm.field_rules import KEY_PATTERN
from services.customer_sync.repository import CustomerSyncStorage
from services.gateway.schemas import CUSTOM_FIELD_KEY
from shared.errors import NotFound, ValidationError
from tests import payloads
from tests.security.test_api_answers import app  # noqa: F401 - the app fixture
from tests.security.test_scopes import RecordingBackends

STORE, OTHER = "store-a", "store-b"
HOSTILE_KEYS = ["$where", "a.b", "tier\n", "x" * 1_000_000, "Tier", "", "__proto__"]


# -- the gateway: refused by the document, no service asked -----------------------------------
def _send(app, method: str, path: str, body) -> tuple[int, dict, list]:
    backends = RecordingBackends({"good": ("admin",)})
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    environ = EnvironBuilder(path="/api/v1" + path, method=method, data=data,
                             headers={"Authorization": "Bearer good",
                                      "Content-Type": "application/json"},
                             environ_base={"REMOTE_ADDR": "192.0.2.10"}).get_environ()
    response = app.handle(Request(environ), backends)
    asked = [call for call in backends.calls if call[1] != "authenticate_api_key"]
    return response.status_code, json.loads(response.get_data()), asked


@pytest.mark.parametrize("method, path, body, field", [
    ("POST", "/custom-fields", {"key": "t", "label": "x" * 101, "type": "text"}, "label"),
    ("POST", "/custom-fields", {"key": "t", "label": "T", "type": "choice",
                                "options": [f"o{i}" for i in range(101)]}, "options"),
    ("POST", "/custom-fields", {"key": "t", "label": "T", "type": "choice",
                                "options": ["o" * 101]}, "options/0"),
    ("POST", "/custom-fields", {"key": "t", "label": "T", "type": "text",
                                "max_length": 10 ** 9}, "max_length"),
    ("POST", "/custom-fields", {"key": "$where", "label": "T", "type": "text"}, "key"),
    ("POST", "/custom-fields", {"key": "t", "label": "T", "type": "script"}, "type"),
    ("POST", "/custom-fields", {"key": "t", "label": 5, "type": "text"}, "label"),
    ("PUT", "/custom-fields/tier", {"min": "zero"}, "min"),
    ("PUT", "/custom-fields/tier", {}, "(body)"),
    ("PUT", "/customers/c1/custom-fields", {f"k{i}": 1 for i in range(51)}, "(body)"),
    ("PUT", "/customers/c1/custom-fields", ["tier"], "(body)"),
])
def test_the_gateway_refuses_what_its_document_does_not_allow(app, method, path, body, field):
    status, problem, asked = _send(app, method, path, body)
    assert status == 400 and field in problem["errors"], problem
    assert asked == []


def test_a_key_in_the_path_outside_the_pattern_is_refused_naming_it(app):
    status, problem, asked = _send(app, "DELETE", "/custom-fields/Not-A-Key", b"")
    assert (status, list(problem["errors"]), asked) == (400, ["key"], [])


def test_an_oversized_body_is_refused_before_it_is_read(app):
    status, _, asked = _send(app, "PUT", "/customers/c1/custom-fields",
                             json.dumps({"notes": "x" * (2 << 20)}).encode())
    assert (status, asked) == (413, [])


def test_the_gateways_key_pattern_is_the_services_own():
    gateway = re.compile(CUSTOM_FIELD_KEY["pattern"])
    for key in ("tier", "a1_b", "x" * 40, "x" * 41, "1a", "_a", "a-b", "A"):
        assert bool(gateway.fullmatch(key)) == bool(re.match(KEY_PATTERN, key)), key


# -- customer_sync: refused naming the field, nothing stored -----------------------------------
@pytest.fixture
def storage():
    s = CustomerSyncStorage(mongomock_adapter.client()["customer_sync"])
    s.ensure_indexes()
    return s


@pytest.fixture
def custom(storage):
    fields = CustomFields(storage, CustomerSync(storage))
    fields.create(STORE, {"key": "tier", "label": "Tier", "type": "choice",
                          "options": ["gold", "silver"]}, "alice")
    fields.create(STORE, {"key": "notes", "label": "Notes", "type": "text",
                          "max_length": 100}, "alice")
    fields.create(STORE, {"key": "visits", "label": "Visits", "type": "number"}, "alice")
    return fields


@pytest.fixture
def customer_id(storage):
    CustomerSync(storage).apply(STORE, "customer", "created", payloads.customer(),
                                correlation_id="c1")
    return storage.customers.by_woo_id(STORE, 42)["_id"]


def _snapshot(storage) -> list:
    return [list(storage.customers.collection.find()), list(storage.custom_fields.collection.find())]


@pytest.mark.parametrize("values, field", [
    ({"tier": ["gold"]}, "custom_fields.tier"),
    ({"tier": {"$ne": None}}, "custom_fields.tier"),
    ({"tier": "GOLD"}, "custom_fields.tier"),
    ({"notes": "x" * 101}, "custom_fields.notes"),
    ({"notes": "x" * 5_000_000}, "custom_fields.notes"),
    ({"visits": "1e308"}, "custom_fields.visits"),
    ({"visits": float("nan")}, "custom_fields.visits"),
    ({"visits": 10 ** 400}, "custom_fields.visits"),
    ({"visits": True}, "custom_fields.visits"),
])
def test_a_value_of_the_wrong_type_or_size_is_refused_naming_it(storage, custom, customer_id,
                                                                values, field):
    before = _snapshot(storage)
    with pytest.raises(ValidationError) as refused:
        custom.set_values(STORE, customer_id, values, "mallory")
    assert list(refused.value.details["fields"]) == [field]
    assert len(str(refused.value.details)) < 400
    assert _snapshot(storage) == before


@pytest.mark.parametrize("key", HOSTILE_KEYS)
def test_a_key_the_store_never_defined_is_refused_and_nothing_is_stored(storage, custom,
                                                                        customer_id, key):
    before = _snapshot(storage)
    with pytest.raises(ValidationError) as refused:
        custom.set_values(STORE, customer_id, {"tier": "gold", key: "x"}, "mallory")
    [named] = refused.value.details["fields"]
    assert named.startswith("custom_fields.") and len(named) <= 60
    assert len(str(refused.value)) < 400
    assert _snapshot(storage) == before


def test_thousands_of_unknown_keys_make_a_bounded_answer(storage, custom, customer_id):
    with pytest.raises(ValidationError) as refused:
        custom.set_values(STORE, customer_id, {f"k{i}": i for i in range(100_000)}, "mallory")
    assert len(refused.value.details["fields"]) <= 50


def test_another_stores_customer_and_field_are_not_found(storage, custom, customer_id):
    other = CustomFields(storage, CustomerSync(storage))
    other.create(OTHER, {"key": "tier", "label": "Tier", "type": "text"}, "mallory")
    before = _snapshot(storage)
    with pytest.raises(NotFound):
        other.set_values(OTHER, customer_id, {"tier": "stolen"}, "mallory")
    with pytest.raises(NotFound):
        other.update(OTHER, "notes", {"label": "x"}, "mallory")
    with pytest.raises(NotFound):
        other.delete(OTHER, "notes", "mallory")
    assert _snapshot(storage) == before
    assert [d["key"] for d in other.list(OTHER)] == ["tier"]


@pytest.mark.parametrize("definition, field", [
    ({"key": "k" * 1_000_000, "label": "K", "type": "text"}, "key"),
    ({"key": "k", "label": "K", "type": "text", "owner": "mallory"}, "owner"),
    ({"key": "k", "label": "K", "type": "number", "min": float("inf")}, "min"),
    ({"key": "k", "label": "K", "type": "number", "max": 10 ** 400}, "max"),
    ({"key": "k", "label": "K", "type": "choice", "options": ["a"] * 1000}, "options"),
])
def test_an_odd_definition_is_refused_naming_the_field(storage, custom, definition, field):
    before = _snapshot(storage)
    with pytest.raises(ValidationError) as refused:
        custom.create(STORE, definition, "mallory")
    assert field in refused.value.details["fields"]
    assert _snapshot(storage) == before
