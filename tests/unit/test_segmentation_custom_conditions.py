"""Conditions on a store's custom fields (`custom.<key>`): validated by the value's kind and
the operator, evaluated only against a value of that kind, and followed by a saved segment's
membership and the rules' actions when a customer event changes the values."""
from __future__ import annotations

from datetime import timedelta

import pytest

from services.segmentation.rules import (
    condition_holds,
    plan_actions,
    validate_filter,
    validate_rule,
)
from services.segmentation.saved_segments import SavedSegments
from shared.errors import ValidationError
from shared.events import build_event, contract
from shared.events.facts import fact_time
from tests.unit.test_segmentation_profiles import T0, owed, setup  # noqa: F401


def cond(field: str, op: str, value=None, **extra) -> dict:
    return {"field": field, "op": op, "value": value, **extra}


def segment(*conditions: dict, match: str = "all") -> dict:
    return {"name": "a segment", "match": match, "conditions": list(conditions)}


def refused(data: dict) -> dict:
    with pytest.raises(ValidationError) as caught:
        validate_filter(data)
    return caught.value.details["fields"]


# -- validation --------------------------------------------------------------------------------

def test_conditions_on_custom_fields_are_kept_as_written_for_each_kind():
    saved = validate_filter(segment(
        cond("custom.tier", "eq", "Gold"), cond("custom.visits", "gte", 3),
        cond("custom.ratio", "lt", 2.5), cond("custom.vip", "eq", True),
        cond("custom.first_visit", "before", "2026-01-31"),
        cond("custom.tier", "in", ["Gold", "Silver", "Gold"]),
        cond("custom.visits", "not_in", [1, 2]), cond("custom.note", "contains", "trade"),
        {"field": "custom.account_no", "op": "is_set"},
        cond("custom.catalogue", "is_not_set", None)))
    assert saved["conditions"] == [
        cond("custom.tier", "eq", "Gold"), cond("custom.visits", "gte", 3),
        cond("custom.ratio", "lt", 2.5), cond("custom.vip", "eq", True),
        cond("custom.first_visit", "before", "2026-01-31"),
        cond("custom.tier", "in", ["Gold", "Silver"]), cond("custom.visits", "not_in", [1, 2]),
        cond("custom.note", "contains", "trade"), cond("custom.account_no", "is_set"),
        cond("custom.catalogue", "is_not_set")]
    # a rule takes the same conditions
    rule = validate_rule({"name": "r", "conditions": [cond("custom.vip", "eq", True)],
                          "actions": [{"type": "add_tag", "value": "vip"}]})
    assert rule["conditions"] == [cond("custom.vip", "eq", True)]


@pytest.mark.parametrize("condition, path", [
    (cond("custom.Tier", "eq", "x"), "conditions.0.field"),       # keys are lower case
    (cond("custom.9lives", "eq", "x"), "conditions.0.field"),     # start with a letter
    (cond("custom." + "k" * 41, "eq", "x"), "conditions.0.field"),  # at most 40 characters
    (cond("custom.", "eq", "x"), "conditions.0.field"),
    (cond("custom.a.b", "eq", "x"), "conditions.0.field"),
    (cond("custom.tier", "ends_with", "x"), "conditions.0.op"),
    (cond("custom.tier", "not_contains", "x"), "conditions.0.op"),
    (cond("custom.visits", "gt", "3"), "conditions.0.value"),     # a number, not text
    (cond("custom.visits", "gt", True), "conditions.0.value"),    # a boolean is not a number
    (cond("custom.visits", "gt", float("nan")), "conditions.0.value"),
    (cond("custom.visits", "gt", 1e16), "conditions.0.value"),
    (cond("custom.note", "contains", 3), "conditions.0.value"),
    (cond("custom.note", "contains", ""), "conditions.0.value"),
    (cond("custom.note", "eq", "a\x00b"), "conditions.0.value"),
    (cond("custom.note", "eq", "x" * 2001), "conditions.0.value"),
    (cond("custom.note", "eq", {"$ne": None}), "conditions.0.value"),
    (cond("custom.note", "eq", ["a"]), "conditions.0.value"),
    (cond("custom.note", "eq", None), "conditions.0.value"),
    (cond("custom.vip", "in", [True]), "conditions.0.value.0"),
    (cond("custom.tier", "in", ["a", 1]), "conditions.0.value.1"),
    (cond("custom.tier", "in", [None, 1, "a"]), "conditions.0.value.2"),  # 1 came first
    (cond("custom.tier", "in", []), "conditions.0.value"),
    (cond("custom.tier", "in", [str(i) for i in range(101)]), "conditions.0.value"),
    (cond("custom.day", "before", "2026-02-30"), "conditions.0.value"),  # not a real date
    (cond("custom.day", "after", "2026-2-3"), "conditions.0.value"),
    (cond("custom.day", "on", 20260203), "conditions.0.value"),
    (cond("custom.day", "is_set", True), "conditions.0.value"),  # takes no value
    (cond("total_spent", "is_set"), "conditions.0.op"),  # custom-field operators only
    (cond("country", "before", "2026-01-01"), "conditions.0.op"),
])
def test_a_condition_that_does_not_fit_is_refused_naming_its_part(condition, path):
    assert path in refused(segment(condition))


def test_a_built_in_field_still_needs_its_value():
    assert refused(segment({"field": "orders_count", "op": "gt"})) == {
        "conditions.0.value": ["Missing data for required field."]}
    assert "conditions.0.value" in refused(segment(cond("orders_count", "gt", None)))


def test_a_refusal_does_not_repeat_a_long_hostile_value():
    errors = refused(segment(cond("custom.note", "eq", "<script>" * 500)))
    assert "<script>" not in " ".join(errors["conditions.0.value"])


# -- evaluation --------------------------------------------------------------------------------

CUSTOMER = {"custom_fields": {"tier": "Gold", "visits": 3, "ratio": 2.5, "vip": True,
                              "first_visit": "2025-12-24", "note": "Trade account, net 30",
                              "zero": 0}}


@pytest.mark.parametrize("condition, holds", [
    (cond("custom.tier", "eq", "Gold"), True),
    (cond("custom.tier", "eq", "gold"), False),          # exact, as a choice is
    (cond("custom.tier", "ne", "Silver"), True),
    (cond("custom.tier", "in", ["Silver", "Gold"]), True),
    (cond("custom.tier", "not_in", ["Silver"]), True),
    (cond("custom.tier", "not_in", ["Gold"]), False),
    (cond("custom.note", "contains", "TRADE"), True),    # contains ignores case
    (cond("custom.note", "contains", "net 60"), False),
    (cond("custom.visits", "eq", 3), True),
    (cond("custom.visits", "eq", 3.0), True),
    (cond("custom.visits", "gt", 2), True),
    (cond("custom.visits", "gte", 3), True),
    (cond("custom.visits", "lt", 3), False),
    (cond("custom.visits", "lte", 3), True),
    (cond("custom.visits", "in", [1, 3]), True),
    (cond("custom.ratio", "gt", 2), True),
    (cond("custom.vip", "eq", True), True),
    (cond("custom.vip", "ne", True), False),
    (cond("custom.zero", "eq", False), False),            # 0 is a number, not false
    (cond("custom.vip", "eq", 1), False),                 # true is a boolean, not 1
    (cond("custom.first_visit", "before", "2026-01-01"), True),
    (cond("custom.first_visit", "after", "2025-12-24"), False),
    (cond("custom.first_visit", "on", "2025-12-24"), True),
    (cond("custom.account_no", "is_set"), False),
    (cond("custom.account_no", "is_not_set"), True),
    (cond("custom.tier", "is_set"), True),
    (cond("custom.tier", "is_not_set"), False),
])
def test_each_operator_compares_a_value_of_its_kind(condition, holds):
    saved = validate_filter(segment(condition))["conditions"][0]
    assert condition_holds(saved, CUSTOMER) is holds


@pytest.mark.parametrize("condition", [
    cond("custom.tier", "ne", "Silver"), cond("custom.tier", "not_in", ["Silver"]),
    cond("custom.visits", "ne", 4), cond("custom.visits", "lt", 100),
    cond("custom.vip", "ne", False), cond("custom.first_visit", "before", "2030-01-01"),
    cond("custom.tier", "contains", "o"),
])
def test_a_missing_value_or_one_of_another_kind_satisfies_nothing(condition):
    saved = validate_filter(segment(condition))["conditions"][0]
    assert not condition_holds(saved, {"custom_fields": {}})
    assert not condition_holds(saved, {})
    wrong_kind = {"tier": 5, "visits": "4", "vip": "false", "first_visit": "soon"}
    assert not condition_holds(saved, {"custom_fields": wrong_kind})
    odd = {"tier": ["Gold"], "visits": float("nan"), "vip": None, "first_visit": {"d": 1}}
    assert not condition_holds(saved, {"custom_fields": odd})


def test_a_rule_on_a_custom_field_acts():
    rules = [validate_rule({"rule_id": "trade", "name": "Trade accounts",
                            "conditions": [cond("custom.account_no", "is_set")],
                            "actions": [{"type": "join_group", "value": "Trade"}]})]
    assert plan_actions(rules, {"custom_fields": {"account_no": "T-1"}}) == [
        {"type": "join_group", "value": "Trade", "rule_id": "trade"}]
    assert plan_actions(rules, {"custom_fields": {}}) == []


# -- membership follows a change of values -----------------------------------------------------

GOLD = {"segment_id": "gold", "name": "Gold tier",
        "conditions": [cond("custom.tier", "eq", "Gold")]}


def customer_updated(customer: str, values: dict, at) -> object:
    data = {**contract("customer.updated").sample, "customer_id": customer,
            "custom_fields": values, "changed_fields": ["custom_fields"]}
    return build_event("customer.updated", store_id="s1", data=data, occurred_at=at)


def membership(storage) -> list[tuple[str, str, str]]:
    return [(m["event_type"], m["data"]["customer_id"], m["data"].get("segment_id")
             or m["data"].get("tag")) for m in owed(storage)
            if m["event_type"].startswith(("customer.saved_segment_", "customer.tagged",
                                           "customer.untagged"))]


def test_a_saved_segment_and_a_rule_follow_the_values_in_and_out(setup):
    storage, profiles, _ = setup
    SavedSegments(storage.saved_segments).create("s1", GOLD)
    storage.put_rule("s1", validate_rule({
        "rule_id": "gold-tag", "name": "Gold tag",
        "conditions": [cond("custom.tier", "eq", "Gold")],
        "actions": [{"type": "add_tag", "value": "gold"}]}))
    storage.put_rule("s1", validate_rule({
        "rule_id": "no-tier", "name": "No tier, no tag", "position": 2,
        "conditions": [cond("custom.tier", "is_not_set")],
        "actions": [{"type": "remove_tag", "value": "gold"}]}))
    profiles.apply_customer_event(customer_updated("c1", {"tier": "Silver"}, T0))
    assert storage.profiles.get("s1", "c1")["saved_segments"] == []
    profiles.apply_customer_event(customer_updated("c1", {"tier": "Gold"},
                                                   T0 + timedelta(minutes=1)))
    profiles.apply_customer_event(customer_updated("c1", {"tier": "Gold"},
                                                   T0 + timedelta(minutes=1)))  # redelivered
    assert storage.profiles.get("s1", "c1")["saved_segments"] == ["gold"]
    assert storage.profiles.member_counts("s1", "saved_segments") == {"gold": 1}
    # values removed (a key left out of the next write): the customer leaves
    profiles.apply_customer_event(customer_updated("c1", {}, T0 + timedelta(minutes=2)))
    assert storage.profiles.get("s1", "c1")["saved_segments"] == []
    assert storage.profiles.get("s1", "c1")["tag_list"] == []
    assert membership(storage) == [
        ("customer.tagged", "c1", "gold"), ("customer.saved_segment_entered", "c1", "gold"),
        ("customer.untagged", "c1", "gold"), ("customer.saved_segment_left", "c1", "gold")]


def test_members_of_a_saved_segment_on_a_custom_field(setup):
    storage, profiles, _ = setup
    profiles.apply_customer_event(customer_updated("c1", {"tier": "Gold"}, T0))
    profiles.apply_customer_event(customer_updated("c2", {"tier": "Silver"}, T0))
    profiles.apply_customer_event(customer_updated("c3", {}, T0))
    found, _ = profiles.members("s1", validate_filter(GOLD), None, 10)
    assert [d["customer_id"] for d in found] == ["c1"]


def test_entering_by_a_change_of_values_is_news_dated_by_the_change_not_the_shop(setup):
    """The shop's date_modified dates its own fields; a custom field is changed in the
    companion as the event is published, so what it causes is dated then, and workflows that
    react to news (notifications' max trigger age) are not told it is months old."""
    storage, profiles, clock = setup
    SavedSegments(storage.saved_segments).create("s1", GOLD)
    changed_at = T0 + timedelta(minutes=5)
    event = customer_updated("c1", {"tier": "Gold"}, changed_at)
    shop_modified = event.data["date_modified"]
    assert shop_modified < T0 - timedelta(days=100)
    assert fact_time("customer.updated", event.data) is None
    assert fact_time("customer.updated",
                     {**event.data, "changed_fields": ["phone"]}) == shop_modified
    clock.now = changed_at
    profiles.apply_customer_event(event)
    [entered] = [m for m in owed(storage) if m["event_type"] == "customer.saved_segment_entered"]
    assert entered["data"]["fact_at"] == changed_at.isoformat()


def test_a_segment_saved_after_the_values_finds_its_members_by_the_recompute(setup):
    storage, profiles, _ = setup
    profiles.apply_customer_event(customer_updated("c1", {"tier": "Gold"}, T0))
    profiles.apply_customer_event(customer_updated("c2", {"tier": "Silver"}, T0))
    SavedSegments(storage.saved_segments).create("s1", GOLD)
    profiles.recompute_store("s1")
    assert storage.profiles.member_counts("s1", "saved_segments") == {"gold": 1}
    assert storage.profiles.get("s1", "c1")["saved_segments"] == ["gold"]
