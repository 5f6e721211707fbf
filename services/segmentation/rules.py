"""Store rules: conditions over a customer's profile, and the tag and group actions they take.

A rule is data, stored per store as a plain dict:

    {"rule_id": "r1", "name": "Big spenders join VIP", "position": 10, "enabled": true,
     "match": "all" | "any",
     "conditions": [{"field": "total_spent", "op": "gt", "value": 500000}],
     "actions": [{"type": "join_group", "value": "VIP"}]}

validate_rule refuses a malformed rule at save time with the failing field's path in the
message ("conditions.0.op"); evaluate and plan_actions then trust the stored, normalised rule.
Money values are integers in minor units (5,000.00 is 500000), as in the stats they compare to.

A condition may also name one of the store's custom fields, `custom.<key>`. Segmentation does
not hold the store's definitions (customer_sync does), so the operator and the value's type say
what is compared: text, a number, a date (`YYYY-MM-DD`) or a boolean. A customer whose value is
missing or of another kind satisfies no such condition but `is_not_set`.
"""
from __future__ import annotations

import math
import operator
import re
from datetime import date
from typing import Any, Iterable, Mapping

from marshmallow import (
    RAISE,
    Schema,
    ValidationError as MarshmallowError,
    fields,
    post_load,
    validate,
    validates_schema,
)

from services.segmentation.directory import CUSTOM_KEY
from services.segmentation.stats import SEGMENTS
from shared.errors import ValidationError

# What each condition field holds, which decides its operators and its value's type.
MONEY, NUMBER, SEGMENT, TAGS, COUNTRY, DOMAIN = (
    "money", "number", "segment", "tags", "country", "email_domain")
FIELD_KINDS = {
    "orders_count": NUMBER,
    "total_spent": MONEY,
    "average_order_value": MONEY,
    "days_since_last_order": NUMBER,
    "avg_days_between_orders": NUMBER,
    "segment": SEGMENT,
    "tags": TAGS,
    "country": COUNTRY,
    "email_domain": DOMAIN,
    "largest_order": MONEY,  # the largest counted order, net of its refunds
    "last_order_month": NUMBER,  # 1-12, of the last counted order (UTC)
    "groups": TAGS,
}
_ORDERED = ("eq", "ne", "gt", "gte", "lt", "lte", "in", "not_in")
_EQUALITY = ("eq", "ne", "in", "not_in")
OPERATORS_BY_KIND = {
    MONEY: _ORDERED,
    NUMBER: _ORDERED,
    SEGMENT: _EQUALITY,
    COUNTRY: _EQUALITY,
    DOMAIN: (*_EQUALITY, "ends_with"),
    TAGS: ("contains", "not_contains"),
}
OPERATORS = ("eq", "ne", "gt", "gte", "lt", "lte", "in", "not_in", "contains", "not_contains",
             "ends_with", "before", "after", "on", "is_set", "is_not_set")
ACTION_TYPES = ("add_tag", "remove_tag", "join_group", "leave_group")
LIST_OPERATORS = ("in", "not_in")

MAX_CONDITIONS = 50
MAX_ACTIONS = 50
MAX_LIST_VALUES = 500
# Beyond this a number is no stat's (and past 2**63 no database's): refused, not a crash.
MAX_CONDITION_NUMBER = 10 ** 15

# Custom fields (`custom.<key>`): what each operator compares, by the kind of its value.
CUSTOM_PREFIX = "custom."
TEXT, BOOLEAN, DATE = "text", "boolean", "date"
CUSTOM_OPERATORS = {
    "eq": (TEXT, NUMBER, BOOLEAN), "ne": (TEXT, NUMBER, BOOLEAN),
    "gt": (NUMBER,), "gte": (NUMBER,), "lt": (NUMBER,), "lte": (NUMBER,),
    "contains": (TEXT,),
    "in": (TEXT, NUMBER), "not_in": (TEXT, NUMBER),
    "before": (DATE,), "after": (DATE,), "on": (DATE,),
    "is_set": (), "is_not_set": (),
}
# As customer_sync bounds the values themselves (docs/custom-fields.md).
MAX_CUSTOM_TEXT = 2000
MAX_CUSTOM_LIST = 100
MAX_CUSTOM_MAGNITUDE = MAX_CONDITION_NUMBER
_CUSTOM_FIELD = re.compile(re.escape(CUSTOM_PREFIX) + CUSTOM_KEY.lstrip("^"))
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}\Z")

TAG_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
RULE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"  # no ':' - it joins store and rule ids
_DOMAIN_PATTERN = re.compile(r"^[a-z0-9_-]+(\.[a-z0-9_-]+)*$")


class _Invalid(ValueError):
    """A value that does not fit; the message says why, without the field's name."""


def normalise_tag(value: Any) -> str:
    """Tags are lower-case slugs: letters, digits, '-' and '_', starting with a letter or digit."""
    if not isinstance(value, str):
        raise _Invalid(f"must be a tag (a text slug), got {value!r}")
    tag = value.strip().lower()
    if not TAG_PATTERN.match(tag):
        raise _Invalid(f"{value!r} is not a tag: use 1-64 lower-case letters, digits, '-' or '_'")
    return tag


def normalise_group(value: Any) -> str:
    """Groups are named. Names are kept as written (spaces collapsed), and hold no '.', '$' or
    control characters: profiles keep a customer's groups as keys of a document."""
    if not isinstance(value, str):
        raise _Invalid(f"must be a group name (text), got {value!r}")
    name = " ".join(value.split())
    if not 1 <= len(name) <= 64:
        raise _Invalid("must be a group name of 1-64 characters")
    if any(ch in ".$" or not ch.isprintable() for ch in name):
        raise _Invalid(f"{value!r} is not a group name: '.', '$' and control characters "
                       "are not allowed")
    return name


def _scalar(kind: str, op: str, value: Any) -> Any:
    """One condition value, checked against its field's kind and normalised."""
    if kind == MONEY:
        if isinstance(value, bool) or not isinstance(value, int) \
                or abs(value) > MAX_CONDITION_NUMBER:
            raise _Invalid(f"must be a whole number of minor units (5,000.00 is 500000) "
                           f"within ±{MAX_CONDITION_NUMBER:.0e}")
        return value
    if kind == NUMBER:
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or (isinstance(value, float) and not math.isfinite(value)) \
                or abs(value) > MAX_CONDITION_NUMBER:
            raise _Invalid(f"must be a number within ±{MAX_CONDITION_NUMBER:.0e}")
        return value
    if kind == SEGMENT:
        if value not in SEGMENTS:
            raise _Invalid(f"must be a segment, one of: {', '.join(SEGMENTS)}; got {value!r}")
        return value
    if kind == TAGS:
        return normalise_tag(value)
    if kind == COUNTRY:
        code = value.strip().upper() if isinstance(value, str) else ""
        if len(code) != 2 or not code.isascii() or not code.isalpha():
            raise _Invalid(f"must be a two-letter ISO 3166 country code, got {value!r}")
        return code
    if kind == DOMAIN:
        domain = value.strip().lower().lstrip("@") if isinstance(value, str) else ""
        if op == "ends_with":
            domain = domain.lstrip(".")
        if not domain or len(domain) > 253 or not _DOMAIN_PATTERN.match(domain):
            raise _Invalid(f"must be an email domain such as 'example.com', got {value!r}")
        return domain
    raise AssertionError(kind)


def custom_key(field: str) -> str | None:
    """The key of a custom field's condition (`custom.<key>`); None for a built-in field."""
    return field[len(CUSTOM_PREFIX):] if field.startswith(CUSTOM_PREFIX) else None


def _custom_kind(value: Any) -> str | None:
    """What a custom value is, by its JSON type: text, number or boolean (None: neither)."""
    if isinstance(value, bool):
        return BOOLEAN
    if isinstance(value, int):
        return NUMBER
    if isinstance(value, float):
        return NUMBER if math.isfinite(value) else None
    if isinstance(value, str):
        return TEXT
    return None


def _is_date(value: Any) -> bool:
    if not isinstance(value, str) or not _DATE.match(value):
        return False
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return True


def _custom_scalar(op: str, value: Any) -> Any:
    """One value of a custom field's condition, checked against what `op` compares.
    Messages do not repeat the value: it may be long, and it is the caller's own."""
    kinds = CUSTOM_OPERATORS[op]
    if DATE in kinds:
        if not _is_date(value):
            raise _Invalid(f"must be a date, YYYY-MM-DD, for '{op}'")
        return value
    kind = _custom_kind(value)
    if kind not in kinds:
        raise _Invalid(f"must be {' or '.join(kinds)} for '{op}'")
    if kind == NUMBER and abs(value) > MAX_CUSTOM_MAGNITUDE:
        raise _Invalid(f"must be a number within ±{MAX_CUSTOM_MAGNITUDE:.0e}")
    if kind == TEXT and (not 1 <= len(value) <= MAX_CUSTOM_TEXT or "\x00" in value):
        raise _Invalid(f"must be text of 1-{MAX_CUSTOM_TEXT} characters (no NUL)")
    return value


def _custom_condition_value(op: str, value: Any, given: bool) -> Any:
    """The normalised value of a condition on a custom field, or MarshmallowError at `op` or
    `value`. `is_set` and `is_not_set` take no value (absent or null)."""
    kinds = CUSTOM_OPERATORS.get(op)
    if kinds is None:
        raise MarshmallowError(f"'{op}' does not apply to a custom field; use one of: "
                               f"{', '.join(CUSTOM_OPERATORS)}", field_name="op")
    if not kinds:
        if value is not None:
            raise MarshmallowError(f"'{op}' takes no value", field_name="value")
        return None
    if not given or value is None:
        raise MarshmallowError(f"'{op}' needs a value", field_name="value")
    if op not in LIST_OPERATORS:
        if isinstance(value, (list, tuple)):
            raise MarshmallowError(f"must be a single value for '{op}', not a list",
                                   field_name="value")
        try:
            return _custom_scalar(op, value)
        except _Invalid as exc:
            raise MarshmallowError(str(exc), field_name="value") from None
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    if not 1 <= len(items) <= MAX_CUSTOM_LIST:
        raise MarshmallowError(f"must list 1-{MAX_CUSTOM_LIST} values for '{op}'",
                               field_name="value")
    normalised: list = []
    errors: dict[int, list[str]] = {}
    first_kind = None
    for index, item in enumerate(items):
        try:
            item = _custom_scalar(op, item)
        except _Invalid as exc:
            errors[index] = [str(exc)]
            continue
        first_kind = first_kind or _custom_kind(item)
        if _custom_kind(item) != first_kind:
            errors[index] = [f"must be {first_kind} like the first: all text or all numbers"]
        elif item not in normalised:
            normalised.append(item)
    if errors:
        raise MarshmallowError({"value": errors})
    return normalised


def _condition_value(field: str, op: str, value: Any, given: bool = True) -> Any:
    """The normalised value of a condition, or MarshmallowError at `op` or `value`."""
    if custom_key(field) is not None:
        return _custom_condition_value(op, value, given)
    kind = FIELD_KINDS[field]
    allowed = OPERATORS_BY_KIND[kind]
    if op not in allowed:
        raise MarshmallowError(f"'{op}' does not apply to {field}; use one of: "
                               f"{', '.join(allowed)}", field_name="op")
    if not given:
        raise MarshmallowError("Missing data for required field.", field_name="value")
    if value is None:
        raise MarshmallowError("Field may not be null.", field_name="value")
    if op not in LIST_OPERATORS:
        if isinstance(value, (list, tuple)):
            raise MarshmallowError(f"must be a single value for '{op}', not a list",
                                   field_name="value")
        try:
            return _scalar(kind, op, value)
        except _Invalid as exc:
            raise MarshmallowError(str(exc), field_name="value") from None
    # A single value for in/not_in is a list of one.
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    if not 1 <= len(items) <= MAX_LIST_VALUES:
        raise MarshmallowError(f"must list 1-{MAX_LIST_VALUES} values for '{op}'",
                               field_name="value")
    normalised: list = []
    errors: dict[int, list[str]] = {}
    for index, item in enumerate(items):
        if isinstance(item, (list, tuple)):
            errors[index] = [f"must be a single value, got {item!r}"]
            continue
        try:
            item = _scalar(kind, op, item)
        except _Invalid as exc:
            errors[index] = [str(exc)]
            continue
        if item not in normalised:
            normalised.append(item)
    if errors:
        raise MarshmallowError({"value": errors})
    return normalised


class _StrictInteger(fields.Integer):
    """An int, not a bool, a float or a numeric string."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kwargs)


class _StrictBoolean(fields.Boolean):
    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, bool):
            raise self.make_error("invalid")
        return value


def _check_field(value: str) -> None:
    """A built-in field, or `custom.<key>` with a key as customer_sync allows them."""
    if value in FIELD_KINDS or _CUSTOM_FIELD.match(value):
        return
    if value.startswith(CUSTOM_PREFIX):
        raise MarshmallowError("must be custom.<key>, the key 1-40 lower-case letters, digits "
                               "or '_', starting with a letter")
    raise MarshmallowError(f"Must be one of: {', '.join(FIELD_KINDS)}, or custom.<key>.")


class ConditionSchema(Schema):
    class Meta:
        unknown = RAISE

    field = fields.String(required=True, validate=_check_field)
    op = fields.String(required=True, validate=validate.OneOf(OPERATORS))
    # Required but for is_set and is_not_set, which take none (_condition_value checks).
    value = fields.Raw(allow_none=True)

    @validates_schema
    def _fits_the_field(self, data: dict, **kwargs) -> None:
        _condition_value(data["field"], data["op"], data.get("value"), "value" in data)

    @post_load
    def _normalise(self, data: dict, **kwargs) -> dict:
        return {"field": data["field"], "op": data["op"],
                "value": _condition_value(data["field"], data["op"], data.get("value"),
                                          "value" in data)}


class ActionSchema(Schema):
    class Meta:
        unknown = RAISE

    type = fields.String(required=True, validate=validate.OneOf(ACTION_TYPES))
    value = fields.Raw(required=True, allow_none=False)

    @staticmethod
    def _value(data: dict) -> str:
        check = normalise_tag if data["type"] in ("add_tag", "remove_tag") else normalise_group
        try:
            return check(data["value"])
        except _Invalid as exc:
            raise MarshmallowError(str(exc), field_name="value") from None

    @validates_schema
    def _fits_the_type(self, data: dict, **kwargs) -> None:
        self._value(data)

    @post_load
    def _normalise(self, data: dict, **kwargs) -> dict:
        return {"type": data["type"], "value": self._value(data)}


def _check_name(value: str) -> None:
    if not 1 <= len(value.strip()) <= 200:
        raise MarshmallowError("must be 1-200 characters, not blank")


class RuleSchema(Schema):
    class Meta:
        unknown = RAISE

    rule_id = fields.String(validate=validate.Regexp(
        RULE_ID_PATTERN, error="must be 1-64 letters, digits, '-' or '_'"))
    name = fields.String(required=True, validate=_check_name)
    position = _StrictInteger(load_default=0,
                              validate=validate.Range(min=-1_000_000_000, max=1_000_000_000))
    enabled = _StrictBoolean(load_default=True)
    match = fields.String(load_default="all", validate=validate.OneOf(("all", "any")))
    conditions = fields.List(fields.Nested(ConditionSchema), required=True,
                             validate=validate.Length(
                                 min=1, max=MAX_CONDITIONS,
                                 error=f"must hold 1-{MAX_CONDITIONS} conditions"))
    actions = fields.List(fields.Nested(ActionSchema), required=True,
                          validate=validate.Length(min=1, max=MAX_ACTIONS,
                                                   error=f"must hold 1-{MAX_ACTIONS} actions"))

    @post_load
    def _normalise(self, data: dict, **kwargs) -> dict:
        data["name"] = data["name"].strip()
        return data


def _flatten(messages: Any, prefix: str = "") -> dict[str, list[str]]:
    """marshmallow's nested messages as {"conditions.0.op": [...]}."""
    if isinstance(messages, dict):
        flat: dict[str, list[str]] = {}
        for key, inner in messages.items():
            path = prefix if key == "_schema" else f"{prefix}.{key}" if prefix else str(key)
            for name, texts in _flatten(inner, path).items():
                flat.setdefault(name, []).extend(texts)
        return flat
    texts = messages if isinstance(messages, list) else [messages]
    return {prefix or "rule": [str(t) for t in texts]}


def _load(schema: Schema, data: Any, what: str) -> dict:
    """Load with `schema`, or raise shared ValidationError naming every failing field path."""
    if not isinstance(data, dict):
        raise ValidationError(f"{what} must be an object", {"fields": {what: ["not an object"]}})
    try:
        return schema.load(data)
    except MarshmallowError as exc:
        flat = _flatten(exc.messages)
        summary = "; ".join(f"{path}: {' '.join(texts)}" for path, texts in sorted(flat.items()))
        raise ValidationError(f"invalid {what}: {summary}", {"fields": flat}) from None


def validate_rule(data: Any) -> dict:
    """The normalised rule, or shared ValidationError naming each failing field by its path.

    Normalised: tags lower-cased, countries upper-cased, email domains lower-cased, a single
    value for in/not_in made a list of one, `position` 0, `enabled` true and `match` "all"
    when absent. `rule_id` is optional (the service assigns one).
    """
    return _load(RuleSchema(), data, "rule")


class FilterSchema(Schema):
    """A saved custom segment: conditions only, listed by `segment_members`."""

    class Meta:
        unknown = RAISE

    segment_id = fields.String(validate=validate.Regexp(
        RULE_ID_PATTERN, error="must be 1-64 letters, digits, '-' or '_'"))
    name = fields.String(required=True, validate=_check_name)
    match = fields.String(load_default="all", validate=validate.OneOf(("all", "any")))
    conditions = fields.List(fields.Nested(ConditionSchema), required=True,
                             validate=validate.Length(
                                 min=1, max=MAX_CONDITIONS,
                                 error=f"must hold 1-{MAX_CONDITIONS} conditions"))


def validate_filter(data: Any) -> dict:
    """A saved segment's definition, or shared ValidationError naming each failing field."""
    return _load(FilterSchema(), data, "segment")


# -- evaluation ---------------------------------------------------------------------------------

def _actual(field: str, profile: Mapping[str, Any]) -> Any:
    """The profile's value for a field as conditions compare it; None when unknown."""
    kind = FIELD_KINDS.get(field)
    value = profile.get(field)
    if kind in (MONEY, NUMBER):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        return value
    if kind == TAGS:
        return {str(t).lower() for t in value or ()}
    if kind in (SEGMENT, COUNTRY, DOMAIN):
        if not isinstance(value, str) or not value.strip():
            return None
        value = value.strip()
        return value.upper() if kind == COUNTRY else value.lower() if kind == DOMAIN else value
    raise ValueError(f"unknown condition field {field!r}")


_COMPARE = {"eq": operator.eq, "ne": operator.ne, "gt": operator.gt, "gte": operator.ge,
            "lt": operator.lt, "lte": operator.le,
            "before": operator.lt, "after": operator.gt, "on": operator.eq}


def _custom_holds(key: str, op: str, expected: Any, profile: Mapping[str, Any]) -> bool:
    """A condition on a custom field: the profile's `custom_fields` value compared as the
    condition's value is (text with text, a number with a number, a date with a date);
    missing, or of another kind, it satisfies nothing but `is_not_set`."""
    values = profile.get("custom_fields")
    actual = values.get(key) if isinstance(values, Mapping) else None
    if op == "is_set":
        return actual is not None
    if op == "is_not_set":
        return actual is None
    if op in ("before", "after", "on"):
        return _is_date(actual) and _COMPARE[op](actual, expected)
    wanted = _custom_kind(expected[0] if op in LIST_OPERATORS else expected)
    if actual is None or _custom_kind(actual) != wanted:
        return False
    if op in LIST_OPERATORS:
        return (actual in expected) == (op == "in")
    if op == "contains":
        return expected.casefold() in actual.casefold()
    return _COMPARE[op](actual, expected)


def condition_holds(condition: Mapping[str, Any], profile: Mapping[str, Any]) -> bool:
    """One condition against a profile. An unknown value (a customer with no orders has no
    days_since_last_order; a country or email domain not given) satisfies no condition, not
    even `ne` or `not_in`. Missing tags are no tags."""
    field, op, expected = condition["field"], condition["op"], condition.get("value")
    key = custom_key(field)
    if key is not None:
        return _custom_holds(key, op, expected, profile)
    actual = _actual(field, profile)
    if actual is None:
        return False
    if op == "contains":
        return expected in actual
    if op == "not_contains":
        return expected not in actual
    if op == "eq":
        return actual == expected
    if op == "ne":
        return actual != expected
    if op == "gt":
        return actual > expected
    if op == "gte":
        return actual >= expected
    if op == "lt":
        return actual < expected
    if op == "lte":
        return actual <= expected
    if op == "in":
        return actual in expected
    if op == "not_in":
        return actual not in expected
    if op == "ends_with":  # by labels: "example.com" matches shop.example.com, not myexample.com
        return actual == expected or actual.endswith("." + expected)
    raise ValueError(f"unknown condition operator {op!r}")


def evaluate(rule: Mapping[str, Any], profile: Mapping[str, Any]) -> bool:
    """Whether a (validated) rule's conditions hold: all of them, or any of them for
    match "any". A rule without conditions matches no one (never everyone)."""
    conditions = rule.get("conditions") or []
    if not conditions:
        return False
    results = (condition_holds(c, profile) for c in conditions)
    return any(results) if rule.get("match") == "any" else all(results)


def ordered_rules(rules: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Enabled rules in the order they apply: by position, then rule_id."""
    enabled = [r for r in rules if r.get("enabled", True)]
    return sorted(enabled, key=lambda r: (r.get("position", 0), str(r.get("rule_id") or "")))


def _run(rules: Iterable[Mapping[str, Any]], profile: Mapping[str, Any]
         ) -> tuple[list[dict], set[str], set[str]]:
    tags = {str(t) for t in profile.get("tags") or ()}
    groups = {str(g) for g in profile.get("groups") or ()}
    planned: list[dict] = []
    for rule in ordered_rules(rules):
        if not evaluate(rule, {**profile, "tags": set(tags), "groups": set(groups)}):
            continue
        for action in rule.get("actions") or []:
            kind, value = action["type"], action["value"]
            target = tags if kind in ("add_tag", "remove_tag") else groups
            adding = kind in ("add_tag", "join_group")
            if adding == (value in target):
                continue  # already so: nothing to do, nothing to announce
            (target.add if adding else target.discard)(value)
            planned.append({"type": kind, "value": value, "rule_id": rule.get("rule_id")})
    return planned, tags, groups


def plan_actions(rules: Iterable[Mapping[str, Any]], profile: Mapping[str, Any]) -> list[dict]:
    """The actions the store's rules take on a profile, in the order they take them.

    Order: enabled rules only, by `position` ascending, ties broken by `rule_id`; each rule
    runs once, in one pass. A rule sees the profile as the rules before it left it (a tag rule
    1 adds is there for rule 2's conditions, not for rule 1's or an earlier rule's); all of a
    rule's conditions are judged before any of its actions apply, and its actions apply in the
    order listed. An action that would change nothing (adding a tag the customer has) is left
    out, so an unchanged profile plans nothing. Each action is {"type", "value", "rule_id"}.
    A later rule may undo an earlier one's action: both are listed, resulting_state gives the
    net outcome. Rules act, they do not hold: a tag a rule added stays when its condition no
    longer holds, unless a rule removes it.
    """
    return _run(rules, profile)[0]


def resulting_state(rules: Iterable[Mapping[str, Any]], profile: Mapping[str, Any]
                    ) -> tuple[set[str], set[str]]:
    """The tags and groups the profile has after the rules' actions (see plan_actions)."""
    _, tags, groups = _run(rules, profile)
    return tags, groups
