"""Custom fields without a broker: the pure rules of definitions and values, and the use cases
(define, change, delete, set values) on an in-memory MongoDB with a pinned clock."""
from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from marshmallow import ValidationError as MarshmallowError

from devdoubles import mongomock_adapter
from services.customer_sync.core.importing import CustomerImport
from services.customer_sync.core.queries import CustomerQueries
from services.customer_sync.core.sync import CustomerSync
from services.customer_sync.crm.custom_fields import CustomFields
from services.customer_sync.privacy.erasure import CustomerErasure
from services.customer_sync.crm.field_rules import (MAX_FIELDS, changed_definition, check_value,
                                                    check_values, load_definition, parse_text)
from services.customer_sync.repository import CustomerSyncStorage, Store
from services.gateway.handlers.transfer import parse_import
from services.gateway.problems import Problem
from shared.errors import Conflict, NotFound, ValidationError
from shared.events import parse_event
from shared.outbox import OUTBOX_FIELD
from tests import payloads
from tests.support import Clock

STORE = "s1"
NOW = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)


def definition(key: str, type_: str = "text", **limits) -> dict:
    return load_definition({"key": key, "label": key.title(), "type": type_, **limits})


# -- rules -----------------------------------------------------------------------------------
def test_a_definition_is_normalised_with_its_types_limits_only():
    assert definition("notes") == {"key": "notes", "label": "Notes", "type": "text",
                                   "options": None, "required": False, "min": None,
                                   "max": None, "max_length": 500,
                                   "applies_to": "customer"}
    size = definition("size", "choice", options=["S", "M"], required=True)
    assert (size["options"], size["required"], size["max_length"]) == (["S", "M"], True, None)
    assert definition("visits", "number", min=0, max=10.5)[("min")] == 0


@pytest.mark.parametrize("bad, field", [
    ({"key": "Bad Key", "label": "x", "type": "text"}, "key"),
    ({"key": "k", "label": "", "type": "text"}, "label"),
    ({"key": "k", "label": "x" * 101, "type": "text"}, "label"),
    ({"key": "k", "label": "x", "type": "colour"}, "type"),
    ({"key": "k", "label": "x", "type": "choice"}, "options"),
    ({"key": "k", "label": "x", "type": "choice", "options": ["a", "a"]}, "options"),
    ({"key": "k", "label": "x", "type": "choice", "options": ["o"] * 101}, "options"),
    ({"key": "k", "label": "x", "type": "text", "options": ["a"]}, "options"),
    ({"key": "k", "label": "x", "type": "text", "min": 1}, "min"),
    ({"key": "k", "label": "x", "type": "number", "min": 5, "max": 1}, "min"),
    ({"key": "k", "label": "x", "type": "number", "max": float("inf")}, "max"),
    ({"key": "k", "label": "x", "type": "boolean", "max_length": 3}, "max_length"),
    ({"key": "k", "label": "x", "type": "text", "max_length": 2001}, "max_length"),
    ({"key": "k", "label": "x", "type": "text", "colour": "red"}, "colour"),
    ({"key": "k" * 41, "label": "x", "type": "text"}, "key"),
])
def test_a_bad_definition_is_refused_naming_the_field(bad, field):
    with pytest.raises(ValidationError) as refused:
        load_definition(bad)
    assert field in refused.value.details["fields"]


@pytest.mark.parametrize("kind, limits, value, stored", [
    ("text", {"max_length": 5}, "hello", "hello"),
    ("number", {"min": 0, "max": 10}, 10, 10),
    ("number", {}, 2.0, 2),
    ("number", {}, 2.5, 2.5),
    ("date", {}, "2024-02-29", "2024-02-29"),
    ("choice", {"options": ["gold", "silver"]}, "gold", "gold"),
    ("boolean", {}, False, False),
])
def test_a_value_of_the_fields_type_is_kept(kind, limits, value, stored):
    assert check_value(definition("f", kind, **limits), value) == stored


@pytest.mark.parametrize("kind, limits, value", [
    ("text", {"max_length": 5}, "hello!"),
    ("text", {}, 5),
    ("text", {}, "nul\x00"),
    ("number", {"min": 0}, -1),
    ("number", {"max": 10}, 10.01),
    ("number", {}, True),
    ("number", {}, "3"),
    ("number", {}, 1e16),
    ("date", {}, "2023-02-29"),
    ("date", {}, "29/02/2024"),
    ("choice", {"options": ["gold"]}, "Gold"),
    ("boolean", {}, "true"),
])
def test_a_value_outside_the_fields_rules_is_refused(kind, limits, value):
    with pytest.raises(MarshmallowError):
        check_value(definition("f", kind, **limits), value)


def test_values_are_refused_together_each_named_by_its_key():
    definitions = {d["key"]: d for d in (definition("tier", "choice", options=["gold"],
                                                    required=True),
                                         definition("visits", "number", min=0))}
    with pytest.raises(ValidationError) as refused:
        check_values(definitions, {"visits": -1, "colour": "red"})
    assert set(refused.value.details["fields"]) == {
        "custom_fields.visits", "custom_fields.colour", "custom_fields.tier"}
    assert check_values(definitions, {"tier": "gold", "visits": None}) == {"tier": "gold"}
    with pytest.raises(ValidationError):
        check_values(definitions, ["tier"])


def test_text_cells_read_in_the_fields_type():
    assert parse_text(definition("n", "number"), " 12 ") == 12.0
    assert parse_text(definition("b", "boolean"), "Yes") is True
    assert parse_text(definition("b", "boolean"), "0") is False
    assert parse_text(definition("t"), "  ") is None
    with pytest.raises(MarshmallowError):
        parse_text(definition("n", "number"), "twelve")


def test_a_type_change_drops_the_old_types_limits():
    size = definition("size", "choice", options=["S"])
    assert changed_definition(size, {"type": "text"})["options"] is None
    with pytest.raises(ValidationError) as refused:
        changed_definition(size, {"max_length": 3})
    assert "max_length" in refused.value.details["fields"]
    with pytest.raises(ValidationError):
        changed_definition(size, {})


# -- use cases -------------------------------------------------------------------------------
@pytest.fixture
def storage():
    s = CustomerSyncStorage(mongomock_adapter.client()["customer_sync"])
    s.ensure_indexes()
    return s


@pytest.fixture
def custom(storage):
    return CustomFields(storage, CustomerSync(storage, Clock(NOW)), clock=Clock(NOW))


@pytest.fixture
def customer_id(storage):
    CustomerSync(storage).apply(STORE, "customer", "created", payloads.customer(),
                                correlation_id="c1")
    doc = storage.customers.by_woo_id(STORE, 42)
    storage.customers.collection.update_one({"_id": doc["_id"]}, {"$set": {OUTBOX_FIELD: []}})
    return doc["_id"]


def owed(storage, customer_id: str) -> list[dict]:
    doc = storage.customers.collection.find_one({"_id": customer_id})
    return [e["message"] for e in doc[OUTBOX_FIELD]]


def test_definitions_are_made_listed_and_keys_taken_once(custom):
    made = custom.create(STORE, {"key": "tier", "label": "Tier", "type": "choice",
                                 "options": ["gold", "silver"]}, "alice")
    assert made["created_at"] == NOW.isoformat() and made["options"] == ["gold", "silver"]
    with pytest.raises(Conflict):
        custom.create(STORE, {"key": "tier", "label": "Again", "type": "text"}, "alice")
    assert [d["key"] for d in custom.list(STORE)] == ["tier"]
    assert custom.list("other-store") == []


def test_a_store_has_at_most_fifty_fields(custom):
    for n in range(MAX_FIELDS):
        custom.create(STORE, {"key": f"f{n}", "label": "F", "type": "text"}, "alice")
    with pytest.raises(ValidationError):
        custom.create(STORE, {"key": "one_more", "label": "F", "type": "text"}, "alice")
    assert len(custom.list(STORE)) == MAX_FIELDS
    custom.create("other-store", {"key": "f0", "label": "F", "type": "text"}, "alice")


def test_values_are_stored_published_and_shown(storage, custom, customer_id):
    custom.create(STORE, {"key": "tier", "label": "Tier", "type": "choice",
                          "options": ["gold"]}, "alice")
    custom.create(STORE, {"key": "visits", "label": "Visits", "type": "number"}, "alice")
    result = custom.set_values(STORE, customer_id, {"tier": "gold", "visits": 3}, "alice")
    assert result.answer == {"customer_id": customer_id, "changed": True,
                             "custom_fields": {"tier": "gold", "visits": 3}}
    assert result.touched == (("customers", customer_id),)
    [message] = owed(storage, customer_id)
    event = parse_event(message)
    assert event.event_type == "customer.updated"
    assert event.data["custom_fields"] == {"tier": "gold", "visits": 3}
    assert event.data["changed_fields"] == ["custom_fields"]
    shown = CustomerQueries(storage).get_customer(STORE, customer_id)
    assert shown["custom_fields"] == {"tier": "gold", "visits": 3}
    # The same values again change nothing and owe nothing.
    assert custom.set_values(STORE, customer_id, {"tier": "gold", "visits": 3.0},
                             "alice").answer["changed"] is False
    assert len(owed(storage, customer_id)) == 1


def test_refused_values_store_nothing(storage, custom, customer_id):
    custom.create(STORE, {"key": "visits", "label": "Visits", "type": "number", "max": 5},
                  "alice")
    before = storage.customers.collection.find_one({"_id": customer_id})
    for values in ({"visits": 6}, {"visits": 1, "unknown": "x"}, "visits=1"):
        with pytest.raises(ValidationError):
            custom.set_values(STORE, customer_id, values, "alice")
    assert storage.customers.collection.find_one({"_id": customer_id}) == before


def test_values_of_another_stores_customer_are_not_found(custom, customer_id):
    custom.create("other-store", {"key": "tier", "label": "Tier", "type": "text"}, "mallory")
    with pytest.raises(NotFound):
        custom.set_values("other-store", customer_id, {"tier": "x"}, "mallory")


def test_a_type_changes_only_while_no_customer_holds_a_value(custom, customer_id):
    custom.create(STORE, {"key": "since", "label": "Since", "type": "text"}, "alice")
    assert custom.update(STORE, "since", {"type": "date"}, "alice")["type"] == "date"
    custom.set_values(STORE, customer_id, {"since": "2020-01-01"}, "alice")
    with pytest.raises(Conflict):
        custom.update(STORE, "since", {"type": "number"}, "alice")
    assert custom.update(STORE, "since", {"label": "Customer since"}, "bob")["label"] == \
        "Customer since"
    with pytest.raises(NotFound):
        custom.update(STORE, "nothing", {"label": "x"}, "alice")


def test_deleting_a_field_removes_its_values(storage, custom, customer_id):
    custom.create(STORE, {"key": "tier", "label": "Tier", "type": "text"}, "alice")
    custom.create(STORE, {"key": "vip", "label": "VIP", "type": "boolean"}, "alice")
    custom.set_values(STORE, customer_id, {"tier": "gold", "vip": True}, "alice")
    result = custom.delete(STORE, "tier", "alice")
    assert result.answer == {"key": "tier", "deleted": True, "values_removed": 1}
    assert result.touched == (("customers", customer_id),)
    assert storage.customers.get(STORE, customer_id)["custom_fields"] == {"vip": True}
    assert [d["key"] for d in custom.list(STORE)] == ["vip"]
    with pytest.raises(NotFound):
        custom.delete(STORE, "tier", "alice")


def _customers_with_values(storage, custom, count: int) -> list[str]:
    custom.create(STORE, {"key": "tier", "label": "Tier", "type": "text"}, "alice")
    custom.create(STORE, {"key": "vip", "label": "VIP", "type": "boolean"}, "alice")
    ids = []
    for n in range(count):
        CustomerSync(storage).apply(STORE, "customer", "created",
                                    payloads.customer(id=100 + n, email=f"p{n}@example.com"),
                                    correlation_id=f"c{n}")
        doc = storage.customers.by_woo_id(STORE, 100 + n)
        custom.set_values(STORE, doc["_id"], {"tier": f"t{n}", "vip": True}, "alice")
        storage.customers.collection.update_one({"_id": doc["_id"]},
                                                {"$set": {OUTBOX_FIELD: []}})
        ids.append(doc["_id"])
    return ids


def test_deleting_a_field_publishes_an_update_for_each_holder_in_batches(storage, custom):
    ids = _customers_with_values(storage, custom, 5)
    batched = CustomFields(storage, CustomerSync(storage, Clock(NOW)), clock=Clock(NOW),
                           delete_batch=2)
    result = batched.delete(STORE, "tier", "alice")
    assert result.answer["values_removed"] == 5
    assert sorted(ref[1] for ref in result.touched) == sorted(ids)
    for customer_id in ids:
        [message] = owed(storage, customer_id)
        event = parse_event(message)
        assert event.event_type == "customer.updated"
        assert event.data["changed_fields"] == ["custom_fields"]
        assert event.data["custom_fields"] == {"vip": True}
        assert storage.customers.get(STORE, customer_id)["custom_fields"] == {"vip": True}
    assert storage.custom_fields.get(STORE, "tier") is None


class _CrashAfter:
    """Customer writes that fail after `writes` of them, as a process dying midway would."""

    def __init__(self, customers, writes: int) -> None:
        self.customers, self.left = customers, writes

    def __getattr__(self, name):
        return getattr(self.customers, name)

    def update(self, *args, **kwargs):
        if self.left == 0:
            raise RuntimeError("crashed")
        self.left -= 1
        return self.customers.update(*args, **kwargs)


def test_a_deletion_cut_short_hides_the_field_and_a_repeat_finishes_it(storage, custom):
    ids = _customers_with_values(storage, custom, 5)
    real = storage.customers
    storage.customers = _CrashAfter(real, 3)
    with pytest.raises(RuntimeError):
        CustomFields(storage, CustomerSync(storage, Clock(NOW)), clock=Clock(NOW),
                     delete_batch=2).delete(STORE, "tier", "alice")
    storage.customers = real
    done = [i for i in ids if "tier" not in storage.customers.get(STORE, i)["custom_fields"]]
    assert len(done) == 3 and all(len(owed(storage, i)) == 1 for i in done)
    # Gone for everyone already: not listed, and no value of it is taken meanwhile.
    assert [d["key"] for d in custom.list(STORE)] == ["vip"]
    with pytest.raises(ValidationError):
        custom.set_values(STORE, ids[0], {"tier": "again"}, "alice")
    assert custom.delete(STORE, "tier", "alice").answer["values_removed"] == 2
    for customer_id in ids:
        assert storage.customers.get(STORE, customer_id)["custom_fields"] == {"vip": True}
        [message] = owed(storage, customer_id)  # one event each, none twice
        assert parse_event(message).data["custom_fields"] == {"vip": True}
    with pytest.raises(NotFound):
        custom.delete(STORE, "tier", "alice")


def test_a_merged_records_value_goes_without_an_event(storage, custom):
    [customer_id] = _customers_with_values(storage, custom, 1)
    storage.customers.collection.update_one({"_id": customer_id},
                                            {"$set": {"status": "merged"}})
    assert custom.delete(STORE, "tier", "alice").answer["values_removed"] == 1
    assert owed(storage, customer_id) == []
    assert storage.customers.collection.find_one({"_id": customer_id})["custom_fields"] == \
        {"vip": True}


# -- CSV import --------------------------------------------------------------------------------
@pytest.fixture
def importer(storage, custom):
    storage.stores.save(Store(STORE, "http://127.0.0.1:9", "whsec-12345678", "ck", "cs"))
    custom.create(STORE, {"key": "tier", "label": "Tier", "type": "choice",
                          "options": ["gold", "silver"], "required": True}, "alice")
    custom.create(STORE, {"key": "visits", "label": "Visits", "type": "number", "min": 0},
                  "alice")
    return CustomerImport(storage, CustomerSync(storage), custom_fields=custom)


def test_the_gateway_passes_custom_columns_on_and_bounds_them():
    rows, ignored = parse_import(b"email,Custom.Tier,colour\na@example.com,gold,red\n")
    assert rows == [{"line": 2, "email": "a@example.com", "custom.tier": "gold"}]
    assert ignored == ["colour"]
    header = "email," + ",".join(f"custom.f{i}" for i in range(51))
    with pytest.raises(Problem) as refused:
        parse_import(f"{header}\n".encode())
    assert refused.value.extra["errors"] == {"custom": ["too many columns"]}


def test_custom_columns_set_values_and_refusals_name_row_and_column(storage, importer):
    rows = [{"line": 2, "email": "a@example.com", "custom.tier": "gold", "custom.visits": "3"},
            {"line": 3, "email": "b@example.com", "custom.tier": "bronze",
             "custom.visits": "-1", "custom.colour": "red"},
            {"line": 4, "email": "c@example.com", "custom.visits": "2"},
            {"line": 5, "email": "d@example.com"}]
    result = importer.run(STORE, rows, True, "alice")
    report = {r["line"]: r for r in result.answer["rows"]}
    assert [report[n]["outcome"] for n in (2, 3, 4, 5)] == ["create", "invalid", "invalid",
                                                            "create"]
    assert set(report[3]["errors"]) == {"custom.tier", "custom.visits", "custom.colour"}
    assert report[4]["errors"] == {"custom.tier": ["is required"]}  # the row sets fields
    made = storage.customers.get(STORE, report[2]["customer_id"])
    assert made["custom_fields"] == {"tier": "gold", "visits": 3}
    event = parse_event(storage.customers.collection.find_one(
        {"_id": made["_id"]})[OUTBOX_FIELD][0]["message"])
    assert event.data["custom_fields"] == {"tier": "gold", "visits": 3}
    assert "custom_fields" not in storage.customers.get(STORE, report[5]["customer_id"])
    assert storage.customers.collection.count_documents({}) == 2


def test_an_update_row_changes_only_the_custom_fields_it_names(storage, importer, custom):
    first = importer.run(STORE, [{"line": 2, "email": "a@example.com", "custom.tier": "gold",
                                  "custom.visits": "3"}], True, "alice")
    customer_id = first.answer["rows"][0]["customer_id"]
    again = importer.run(STORE, [{"line": 2, "email": "a@example.com", "custom.visits": "4",
                                  "custom.tier": ""}], True, "alice", "update")
    [row] = again.answer["rows"]
    assert (row["outcome"], again.answer["summary"]["updated"]) == ("update", 1)
    assert storage.customers.get(STORE, customer_id)["custom_fields"] == {"tier": "gold",
                                                                          "visits": 4}
    same = importer.run(STORE, [{"line": 2, "email": "a@example.com", "custom.visits": "4"}],
                        True, "alice", "update")
    assert same.answer["rows"][0]["outcome"] == "unchanged" and same.touched == ()


def test_a_gdpr_export_carries_the_values_and_an_erasure_leaves_none(storage, custom,
                                                                     customer_id):
    custom.create(STORE, {"key": "notes", "label": "Notes", "type": "text"}, "alice")
    custom.set_values(STORE, customer_id, {"notes": "prefers the blue tin"}, "alice")
    exported = CustomerQueries(storage).export_person(STORE, customer_id)
    assert "prefers the blue tin" in json.dumps(exported, default=str)
    CustomerErasure(storage).erase(STORE, [customer_id], "ada@example.com", "req-1")
    assert "prefers the blue tin" not in json.dumps(
        storage.customers.collection.find_one({"_id": customer_id}), default=str)


def test_a_shop_change_keeps_the_values_and_its_event_carries_them(storage, custom,
                                                                   customer_id):
    """A consumer keeps what the latest customer.* event says: a shop edit must not read as
    the values gone."""
    custom.create(STORE, {"key": "vip", "label": "VIP", "type": "boolean"}, "alice")
    custom.set_values(STORE, customer_id, {"vip": True}, "alice")
    storage.customers.collection.update_one({"_id": customer_id}, {"$set": {OUTBOX_FIELD: []}})
    CustomerSync(storage).apply(STORE, "customer", "updated", payloads.customer(
        first_name="Augusta", date_modified_gmt="2026-12-02T09:00:00"), correlation_id="c2")
    assert storage.customers.get(STORE, customer_id)["custom_fields"] == {"vip": True}
    [message] = owed(storage, customer_id)
    event = parse_event(message)
    assert (event.event_type, event.data["first_name"]) == ("customer.updated", "Augusta")
    assert event.data["custom_fields"] == {"vip": True}


def test_a_deletion_is_bounded_a_call_and_the_sweep_or_a_repeat_finishes_it(storage, custom):
    ids = _customers_with_values(storage, custom, 5)
    bounded = CustomFields(storage, CustomerSync(storage, Clock(NOW)), clock=Clock(NOW),
                           delete_batch=2, delete_rounds=1)
    first = bounded.delete(STORE, "tier", "alice")
    assert first.answer == {"key": "tier", "deleted": False, "finishing": True,
                            "values_removed": 2}
    assert len(first.touched) == 2
    # Half deleted: hidden, its key not free, its definition closed to changes.
    assert [d["key"] for d in custom.list(STORE)] == ["vip"]
    with pytest.raises(Conflict):
        custom.create(STORE, {"key": "tier", "label": "Tier", "type": "text"}, "alice")
    with pytest.raises(Conflict) as refused:
        custom.update(STORE, "tier", {"label": "Tier 2"}, "alice")
    assert refused.value.details["fields"] == {"key": ["being deleted"]}
    assert storage.custom_fields.get(STORE, "tier")["label"] != "Tier 2"
    assert bounded.delete(STORE, "tier", "alice").answer["values_removed"] == 2  # a repeat
    swept = []
    while True:  # the background sweep ends it, a bounded step at a time
        more, touched = bounded.sweep()
        if not more:
            break
        swept += touched
    assert len(swept) == 1 and storage.custom_fields.get(STORE, "tier") is None
    for customer_id in ids:
        assert storage.customers.get(STORE, customer_id)["custom_fields"] == {"vip": True}
        assert len(owed(storage, customer_id)) == 1


def test_a_deletion_whose_holders_all_changed_stops_and_says_it_is_finishing(storage, custom,
                                                                            monkeypatch):
    _customers_with_values(storage, custom, 3)
    monkeypatch.setattr(custom, "_remove_value", lambda *args: False)
    answer = custom.delete(STORE, "tier", "alice").answer
    assert answer == {"key": "tier", "deleted": False, "finishing": True, "values_removed": 0}
    assert storage.custom_fields.get(STORE, "tier")["deleting"] is True
    assert custom.sweep() == (False, [])  # no progress: the sweep waits a round, not spins
    monkeypatch.undo()
    assert custom.sweep()[0] is True
    assert storage.custom_fields.get(STORE, "tier") is None
