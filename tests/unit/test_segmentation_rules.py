"""Segmentation rules: validation that names the failing field, each operator, rule order."""
from __future__ import annotations

import copy

import pytest

from services.segmentation.rules import (
    condition_holds,
    evaluate,
    plan_actions,
    resulting_state,
    validate_rule,
)
from shared.errors import ValidationError


def rule(conditions: list, actions: list, **extra) -> dict:
    return {"name": "a rule", "match": "all", "conditions": conditions, "actions": actions,
            **extra}


def cond(field: str, op: str, value) -> dict:
    return {"field": field, "op": op, "value": value}


def profile(**overrides) -> dict:
    base = {"orders_count": 4, "total_spent": 120_000, "average_order_value": 30_000,
            "days_since_last_order": 12, "avg_days_between_orders": 21.5, "segment": "regular",
            "tags": {"newsletter"}, "groups": set(), "country": "DE",
            "email_domain": "acme.com"}
    return {**base, **overrides}


TAG = {"type": "add_tag", "value": "x"}


# -- the specified examples -------------------------------------------------------------------

SPECIFIED_RULES = [
    rule([cond("total_spent", "gt", 500_000)], [{"type": "join_group", "value": "vip"}],
         rule_id="vip", position=1),
    rule([cond("orders_count", "gt", 10)], [{"type": "add_tag", "value": "loyal"}],
         rule_id="loyal", position=2),
    rule([cond("email_domain", "in", ["acme.com", "business.example"])],
         [{"type": "join_group", "value": "wholesale"}], rule_id="wholesale", position=3),
]


def test_the_issue_examples_validate_and_act():
    rules = [validate_rule(r) for r in SPECIFIED_RULES]
    big = profile(total_spent=500_001, orders_count=11, email_domain="business.example")
    assert plan_actions(rules, big) == [
        {"type": "join_group", "value": "vip", "rule_id": "vip"},
        {"type": "add_tag", "value": "loyal", "rule_id": "loyal"},
        {"type": "join_group", "value": "wholesale", "rule_id": "wholesale"},
    ]
    edge = profile(total_spent=500_000, orders_count=10, email_domain="gmail.com")
    assert plan_actions(rules, edge) == []
    assert resulting_state(rules, big) == ({"newsletter", "loyal"}, {"vip", "wholesale"})


# -- validation --------------------------------------------------------------------------------

def test_a_valid_rule_is_normalised():
    saved = validate_rule({
        "name": "  Wholesale  ",
        "conditions": [cond("email_domain", "in", "ACME.com"), cond("country", "eq", "de"),
                       cond("tags", "contains", " VIP-Club "),
                       cond("email_domain", "ends_with", "@.Example.ORG"),
                       cond("orders_count", "in", [1, 2, 2])],
        "actions": [{"type": "add_tag", "value": "B2B"},
                    {"type": "join_group", "value": "  Wholesale   Buyers "}],
    })
    assert saved == {
        "name": "Wholesale", "position": 0, "enabled": True, "match": "all",
        "conditions": [cond("email_domain", "in", ["acme.com"]), cond("country", "eq", "DE"),
                       cond("tags", "contains", "vip-club"),
                       cond("email_domain", "ends_with", "example.org"),
                       cond("orders_count", "in", [1, 2])],
        "actions": [{"type": "add_tag", "value": "b2b"},
                    {"type": "join_group", "value": "Wholesale Buyers"}],
    }
    assert validate_rule({**saved, "rule_id": "r-1"})["rule_id"] == "r-1"


@pytest.mark.parametrize("change,path", [
    ({"conditions": [cond("country", "gt", "DE")]}, "conditions.0.op"),
    ({"conditions": [cond("orders_count", "contains", 3)]}, "conditions.0.op"),
    ({"conditions": [cond("tags", "eq", "vip")]}, "conditions.0.op"),
    ({"conditions": [cond("country", "ends_with", "E")]}, "conditions.0.op"),
    ({"conditions": [cond("segment", "lt", "vip")]}, "conditions.0.op"),
    ({"conditions": [cond("total_spent", "between", 1)]}, "conditions.0.op"),
    ({"conditions": [cond("lifetime", "gt", 1)]}, "conditions.0.field"),
    ({"conditions": [cond("total_spent", "gt", 5000.5)]}, "conditions.0.value"),
    ({"conditions": [cond("total_spent", "gt", 5000.0)]}, "conditions.0.value"),
    ({"conditions": [cond("average_order_value", "gte", "5000")]}, "conditions.0.value"),
    ({"conditions": [cond("orders_count", "gt", "10")]}, "conditions.0.value"),
    ({"conditions": [cond("orders_count", "gt", True)]}, "conditions.0.value"),
    ({"conditions": [cond("orders_count", "gt", None)]}, "conditions.0.value"),
    ({"conditions": [cond("orders_count", "eq", [1, 2])]}, "conditions.0.value"),
    ({"conditions": [cond("avg_days_between_orders", "lt", float("inf"))]}, "conditions.0.value"),
    ({"conditions": [cond("segment", "eq", "gold")]}, "conditions.0.value"),
    ({"conditions": [cond("country", "eq", "Germany")]}, "conditions.0.value"),
    ({"conditions": [cond("email_domain", "eq", "not a domain")]}, "conditions.0.value"),
    ({"conditions": [cond("tags", "contains", "Not A Slug!")]}, "conditions.0.value"),
    ({"conditions": [cond("email_domain", "in", [])]}, "conditions.0.value"),
    ({"conditions": [cond("email_domain", "in", ["ok.com", 3])]}, "conditions.0.value.1"),
    ({"conditions": [cond("total_spent", "gt", 1), cond("orders_count", "not_in", [1, 2.5, "x"])]},
     "conditions.1.value.2"),
    ({"conditions": [{"field": "total_spent", "op": "gt"}]}, "conditions.0.value"),
    ({"conditions": [{**cond("total_spent", "gt", 1), "extra": 1}]}, "conditions.0.extra"),
    ({"conditions": []}, "conditions"),
    ({"conditions": "total_spent > 1"}, "conditions"),
    ({"actions": []}, "actions"),
    ({"actions": [{"type": "send_email", "value": "x"}]}, "actions.0.type"),
    ({"actions": [TAG, {"type": "add_tag", "value": "two words"}]}, "actions.1.value"),
    ({"actions": [{"type": "remove_tag", "value": ""}]}, "actions.0.value"),
    ({"actions": [{"type": "join_group", "value": "a.b"}]}, "actions.0.value"),
    ({"actions": [{"type": "join_group", "value": "$set"}]}, "actions.0.value"),
    ({"actions": [{"type": "leave_group", "value": 7}]}, "actions.0.value"),
    ({"actions": [{"type": "add_tag"}]}, "actions.0.value"),
    ({"match": "some"}, "match"),
    ({"name": "   "}, "name"),
    ({"position": "1"}, "position"),
    ({"position": 1.5}, "position"),
    ({"enabled": "yes"}, "enabled"),
    ({"rule_id": "store:rule"}, "rule_id"),
    ({"colour": "red"}, "colour"),
])
def test_a_malformed_rule_is_refused_naming_the_field(change, path):
    data = {**rule([cond("total_spent", "gt", 500_000)], [TAG]), **change}
    with pytest.raises(ValidationError) as info:
        validate_rule(data)
    assert path in info.value.details["fields"], info.value.details
    assert path in info.value.message
    assert info.value.http_status == 400


@pytest.mark.parametrize("missing", ["name", "conditions", "actions"])
def test_required_parts_are_named(missing):
    data = rule([cond("total_spent", "gt", 1)], [TAG])
    del data[missing]
    with pytest.raises(ValidationError) as info:
        validate_rule(data)
    assert list(info.value.details["fields"]) == [missing]


def test_every_error_is_reported_at_once():
    with pytest.raises(ValidationError) as info:
        validate_rule({"name": "x", "match": "most", "conditions": [cond("country", "gt", 1)],
                       "actions": [{"type": "add_tag", "value": "Bad Tag"}]})
    assert set(info.value.details["fields"]) == {"match", "conditions.0.op", "actions.0.value"}


def test_a_rule_that_is_not_an_object_is_refused():
    with pytest.raises(ValidationError, match="rule must be an object"):
        validate_rule(["not", "a", "rule"])


# -- evaluation --------------------------------------------------------------------------------

@pytest.mark.parametrize("condition,expected", [
    (cond("orders_count", "eq", 4), True),
    (cond("orders_count", "eq", 5), False),
    (cond("orders_count", "ne", 5), True),
    (cond("orders_count", "ne", 4), False),
    (cond("total_spent", "gt", 119_999), True),
    (cond("total_spent", "gt", 120_000), False),
    (cond("total_spent", "gte", 120_000), True),
    (cond("total_spent", "gte", 120_001), False),
    (cond("average_order_value", "lt", 30_001), True),
    (cond("average_order_value", "lt", 30_000), False),
    (cond("days_since_last_order", "lte", 12), True),
    (cond("days_since_last_order", "lte", 11), False),
    (cond("avg_days_between_orders", "gt", 21.4), True),
    (cond("avg_days_between_orders", "gt", 21.5), False),
    (cond("orders_count", "in", [1, 4]), True),
    (cond("orders_count", "in", [1, 2]), False),
    (cond("orders_count", "not_in", [1, 2]), True),
    (cond("orders_count", "not_in", [4]), False),
    (cond("segment", "eq", "regular"), True),
    (cond("segment", "ne", "regular"), False),
    (cond("segment", "in", ["vip", "at_risk"]), False),
    (cond("segment", "not_in", ["vip", "at_risk"]), True),
    (cond("tags", "contains", "newsletter"), True),
    (cond("tags", "contains", "loyal"), False),
    (cond("tags", "not_contains", "loyal"), True),
    (cond("tags", "not_contains", "newsletter"), False),
    (cond("country", "eq", "DE"), True),
    (cond("country", "in", ["FR", "NL"]), False),
    (cond("country", "not_in", ["FR", "NL"]), True),
    (cond("email_domain", "eq", "acme.com"), True),
    (cond("email_domain", "ne", "acme.com"), False),
    (cond("email_domain", "ends_with", "acme.com"), True),
    (cond("email_domain", "ends_with", "com"), True),
    (cond("email_domain", "ends_with", "me.com"), False),  # by domain labels, not letters
])
def test_each_operator(condition, expected):
    normalised = validate_rule(rule([condition], [TAG]))["conditions"][0]
    assert condition_holds(normalised, profile()) is expected


def test_ends_with_matches_subdomains():
    condition = validate_rule(rule([cond("email_domain", "ends_with", ".edu")], [TAG]))
    assert evaluate(condition, profile(email_domain="cs.mit.edu"))
    assert evaluate(condition, profile(email_domain="edu"))
    assert not evaluate(condition, profile(email_domain="education.com"))


def test_profile_values_compare_case_insensitively():
    assert condition_holds(cond("country", "eq", "DE"), profile(country="de"))
    assert condition_holds(cond("email_domain", "eq", "acme.com"), profile(email_domain="ACME.com"))


@pytest.mark.parametrize("op,value", [
    ("eq", 1), ("ne", 1), ("gt", 1), ("gte", 0), ("lt", 100), ("lte", 100), ("in", [1]),
    ("not_in", [1]),
])
def test_an_unknown_number_satisfies_no_condition(op, value):
    prospect = profile(days_since_last_order=None, avg_days_between_orders=None)
    del prospect["orders_count"]
    for field in ("days_since_last_order", "avg_days_between_orders", "orders_count"):
        assert not condition_holds(cond(field, op, value), prospect)


@pytest.mark.parametrize("unknown", [None, "", "  "])
def test_an_unknown_country_or_domain_satisfies_no_condition(unknown):
    nobody = profile(country=unknown, email_domain=unknown)
    for condition in (cond("country", "ne", "FR"), cond("country", "not_in", ["FR"]),
                      cond("email_domain", "ne", "acme.com"),
                      cond("email_domain", "ends_with", "com")):
        assert not condition_holds(condition, nobody)


def test_missing_tags_are_no_tags():
    untagged = profile()
    del untagged["tags"]
    assert condition_holds(cond("tags", "not_contains", "vip"), untagged)
    assert not condition_holds(cond("tags", "contains", "vip"), untagged)


def test_match_all_and_any():
    conditions = [cond("country", "eq", "DE"), cond("orders_count", "gt", 10)]
    assert not evaluate(rule(conditions, [TAG]), profile())
    assert evaluate(rule(conditions, [TAG], match="any"), profile())
    assert not evaluate(rule([cond("country", "eq", "FR"), cond("orders_count", "gt", 10)],
                             [TAG], match="any"), profile())


def test_a_rule_without_conditions_matches_no_one():
    assert not evaluate(rule([], [TAG]), profile())
    assert not evaluate(rule([], [TAG], match="any"), profile())


# -- order and chaining ------------------------------------------------------------------------

def r(rule_id: str, position: int, conditions: list, actions: list, **extra) -> dict:
    return validate_rule(rule(conditions, actions, rule_id=rule_id, position=position, **extra))


def add(tag: str) -> dict:
    return {"type": "add_tag", "value": tag}


def test_a_tag_added_by_one_rule_is_seen_by_the_next():
    rules = [
        r("b", 2, [cond("tags", "contains", "big")], [{"type": "join_group", "value": "VIP"}]),
        r("a", 1, [cond("total_spent", "gte", 100_000)], [add("big")]),
    ]
    assert plan_actions(rules, profile()) == [
        {"type": "add_tag", "value": "big", "rule_id": "a"},
        {"type": "join_group", "value": "VIP", "rule_id": "b"},
    ]
    assert resulting_state(rules, profile()) == ({"newsletter", "big"}, {"VIP"})


def test_rules_run_once_in_order_so_an_earlier_rule_misses_a_later_tag():
    rules = [r("a", 1, [cond("tags", "contains", "big")], [add("seen")]),
             r("b", 2, [cond("total_spent", "gte", 1)], [add("big")])]
    assert [a["value"] for a in plan_actions(rules, profile())] == ["big"]


def test_ties_on_position_are_broken_by_rule_id_and_input_order_does_not_matter():
    rules = [r("r2", 5, [cond("orders_count", "gt", 0)], [add("second")]),
             r("r1", 5, [cond("orders_count", "gt", 0)], [add("first")]),
             r("r0", 9, [cond("orders_count", "gt", 0)], [add("last")])]
    expected = ["first", "second", "last"]
    assert [a["value"] for a in plan_actions(rules, profile())] == expected
    assert [a["value"] for a in plan_actions(list(reversed(rules)), profile())] == expected


def test_a_later_rule_undoes_an_earlier_one_and_both_are_listed():
    rules = [r("a", 1, [cond("orders_count", "gt", 1)], [add("promo")]),
             r("b", 2, [cond("tags", "contains", "promo"), cond("country", "eq", "DE")],
               [{"type": "remove_tag", "value": "promo"},
                {"type": "remove_tag", "value": "newsletter"}])]
    assert plan_actions(rules, profile()) == [
        {"type": "add_tag", "value": "promo", "rule_id": "a"},
        {"type": "remove_tag", "value": "promo", "rule_id": "b"},
        {"type": "remove_tag", "value": "newsletter", "rule_id": "b"},
    ]
    assert resulting_state(rules, profile()) == (set(), set())


def test_actions_that_change_nothing_are_left_out():
    rules = [r("a", 1, [cond("orders_count", "gt", 1)],
               [add("newsletter"), {"type": "leave_group", "value": "Wholesale"}])]
    assert plan_actions(rules, profile()) == []
    tags, groups = resulting_state(rules, profile(groups={"Wholesale"}))
    assert groups == set()
    # running the rules again on their own result plans nothing
    chain = [r("a", 1, [cond("orders_count", "gt", 1)], [add("x")]),
             r("b", 2, [cond("tags", "contains", "x")], [{"type": "join_group", "value": "G"}])]
    tags, groups = resulting_state(chain, profile())
    assert plan_actions(chain, profile(tags=tags, groups=groups)) == []


def test_disabled_rules_do_nothing():
    rules = [r("a", 1, [cond("orders_count", "gt", 1)], [add("x")], enabled=False)]
    assert plan_actions(rules, profile()) == []


def test_the_profile_passed_in_is_not_changed():
    rules = [r("a", 1, [cond("orders_count", "gt", 1)], [add("x"), {"type": "join_group",
                                                                    "value": "G"}])]
    before = profile()
    snapshot = copy.deepcopy(before)
    plan_actions(rules, before)
    resulting_state(rules, before)
    assert before == snapshot


def test_stored_rules_with_storage_keys_still_apply():
    stored = [{**r("a", 1, [cond("orders_count", "gt", 1)], [add("x")]),
               "_id": "shop:a", "store_id": "shop"}]
    assert plan_actions(stored, profile()) == [{"type": "add_tag", "value": "x", "rule_id": "a"}]
