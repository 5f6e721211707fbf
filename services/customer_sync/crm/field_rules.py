"""Custom fields' rules, pure: what a store may define (a key, a label, a type and its limits)
and what a customer's value of each must be. No database and no clock, so the API, the
CSV import and a later consumer judge a value the same way."""
from __future__ import annotations

import math
import re
from datetime import date
from typing import Any

from marshmallow import (RAISE, Schema, ValidationError as MarshmallowError, fields, validate,
                         validates_schema)

from services.customer_sync.schemas import load
from shared.errors import ValidationError

FIELD_TYPES = ("text", "number", "date", "choice", "boolean")
# Whose values a definition checks: a customer's (as before companies existed) or a company's.
APPLIES_TO = ("customer", "company")
DEFAULT_APPLIES_TO = "customer"
# Bounds on what a store defines, so one definition list stays one small read per write.
MAX_FIELDS = 50
MAX_KEY = 40
KEY_PATTERN = r"^[a-z][a-z0-9_]{0,39}\Z"
MAX_LABEL = 100
MAX_OPTIONS = 100
MAX_OPTION = 100
MAX_TEXT_LENGTH = 2000
DEFAULT_TEXT_LENGTH = 500
# Numbers beyond this lose whole units as floats: refused rather than silently rounded.
MAX_MAGNITUDE = 1e15
# Where a value's errors are named: the API's, the import's and the RPC's field names.
VALUES_FIELD = "custom_fields"
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}\Z")
_TRUE, _FALSE = ("true", "yes", "1"), ("false", "no", "0")


def value_field(key: str) -> str:
    """The name a value's error is reported under: `custom_fields.<key>`."""
    return f"{VALUES_FIELD}.{key}"


class _Finite(fields.Float):
    """A number that JSON can carry back (no NaN or infinity), within MAX_MAGNITUDE."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool):
            raise MarshmallowError("must be a number")
        number = super()._deserialize(value, attr, data, **kwargs)
        if not math.isfinite(number) or abs(number) > MAX_MAGNITUDE:
            raise MarshmallowError(f"must be a finite number within ±{MAX_MAGNITUDE:.0e}")
        return number


class _Limits(Schema):
    """What a definition says beyond its key and type, checked against its type."""

    class Meta:
        unknown = RAISE

    label = fields.String(validate=validate.Length(min=1, max=MAX_LABEL))
    options = fields.List(fields.String(validate=validate.Length(min=1, max=MAX_OPTION)),
                          validate=validate.Length(min=1, max=MAX_OPTIONS))
    required = fields.Boolean()
    min = _Finite(allow_none=True)
    max = _Finite(allow_none=True)
    max_length = fields.Integer(allow_none=True,
                                validate=validate.Range(min=1, max=MAX_TEXT_LENGTH))


class DefinitionSchema(_Limits):
    key = fields.String(required=True, validate=validate.Regexp(
        KEY_PATTERN, error=f"must be 1-{MAX_KEY} lower-case letters, digits or '_', "
                           "starting with a letter"))
    label = fields.String(required=True, validate=validate.Length(min=1, max=MAX_LABEL))
    type = fields.String(required=True, validate=validate.OneOf(FIELD_TYPES))
    # Fixed once made: values already held were checked as the one or the other.
    applies_to = fields.String(load_default=DEFAULT_APPLIES_TO,
                               validate=validate.OneOf(APPLIES_TO))

    @validates_schema
    def _fits_its_type(self, data: dict, **kwargs) -> None:
        refusals = limit_refusals(data)
        if refusals:
            raise MarshmallowError(refusals)


class DefinitionChangesSchema(_Limits):
    type = fields.String(validate=validate.OneOf(FIELD_TYPES))


def limit_refusals(definition: dict) -> dict[str, list[str]]:
    """Limits that do not fit the definition's type, by field name (empty: it fits)."""
    kind = definition.get("type")
    refusals: dict[str, list[str]] = {}
    if kind == "choice":
        options = definition.get("options") or []
        if not options:
            refusals["options"] = ["a choice field needs options"]
        elif len(set(options)) != len(options):
            refusals["options"] = ["options must differ from each other"]
    elif definition.get("options") is not None:
        refusals["options"] = ["only a choice field has options"]
    for limit in ("min", "max"):
        if kind != "number" and definition.get(limit) is not None:
            refusals[limit] = ["only a number field has min and max"]
    low, high = definition.get("min"), definition.get("max")
    if kind == "number" and low is not None and high is not None and low > high:
        refusals["min"] = ["must not be above max"]
    if kind != "text" and definition.get("max_length") is not None:
        refusals["max_length"] = ["only a text field has max_length"]
    return refusals


def normalised(definition: dict) -> dict:
    """A definition with every limit present (None where its type has none)."""
    kind = definition["type"]
    return {"key": definition["key"], "label": definition["label"], "type": kind,
            "options": list(definition["options"]) if kind == "choice" else None,
            "required": bool(definition.get("required", False)),
            "min": _number(definition.get("min")) if kind == "number" else None,
            "max": _number(definition.get("max")) if kind == "number" else None,
            "max_length": (definition.get("max_length") or DEFAULT_TEXT_LENGTH)
            if kind == "text" else None,
            "applies_to": applies_to(definition)}


def applies_to(definition: dict) -> str:
    """Whose values the definition checks; definitions made before companies: customers'."""
    return definition.get("applies_to") or DEFAULT_APPLIES_TO


def load_definition(data: Any) -> dict:
    """A new definition from outside, normalised, or ValidationError naming its fields."""
    return normalised(load(DefinitionSchema(), data, "custom_field"))


def changed_definition(current: dict, changes: Any) -> dict:
    """The definition with `changes` applied, normalised and checked as a whole."""
    data = load(DefinitionChangesSchema(), changes, "changes")
    if not data:
        raise ValidationError("changes must name something to change",
                              {"fields": {"changes": ["empty"]}})
    merged = {**current, **data}
    if data.get("type", current["type"]) != current["type"]:
        # Limits of the old type do not carry over to the new one.
        merged = {k: v for k, v in merged.items()
                  if k in ("key", "label", "required", "type") or k in data}
    refusals = limit_refusals(merged)
    if refusals:
        raise ValidationError(f"invalid changes: {refusals}", {"fields": refusals})
    return normalised(merged)


def fits(definition: dict | None, value: Any) -> bool:
    """Whether a value kept from before (a merge's snapshot) passes today's definition of
    its key; a deleted field's (no definition) does not."""
    if definition is None:
        return False
    try:
        check_value(definition, value)
    except MarshmallowError:
        return False
    return True


def check_value(definition: dict, value: Any) -> Any:
    """The value as stored, or MarshmallowError saying why it is refused."""
    kind = definition["type"]
    if kind == "text":
        if not isinstance(value, str):
            raise MarshmallowError("must be text")
        if len(value) > definition["max_length"]:
            raise MarshmallowError(f"at most {definition['max_length']} characters")
        if "\x00" in value:
            raise MarshmallowError("must not contain NUL characters")
        return value
    if kind == "number":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise MarshmallowError("must be a number")
        # An int is compared as it is: math.isfinite would overflow on 10**400.
        if (isinstance(value, float) and not math.isfinite(value)) or abs(value) > MAX_MAGNITUDE:
            raise MarshmallowError(f"must be a finite number within ±{MAX_MAGNITUDE:.0e}")
        low, high = definition.get("min"), definition.get("max")
        if low is not None and value < low:
            raise MarshmallowError(f"must be at least {_shown(low)}")
        if high is not None and value > high:
            raise MarshmallowError(f"must be at most {_shown(high)}")
        return _number(value)
    if kind == "date":
        if not isinstance(value, str) or not _DATE.match(value):
            raise MarshmallowError("must be a date as YYYY-MM-DD")
        try:
            date.fromisoformat(value)
        except ValueError:
            raise MarshmallowError("must be a real date") from None
        return value
    if kind == "choice":
        if not isinstance(value, str) or value not in definition["options"]:
            raise MarshmallowError("must be one of the field's options")
        return value
    if not isinstance(value, bool):
        raise MarshmallowError("must be true or false")
    return value


def parse_text(definition: dict, raw: str) -> Any:
    """A value written as text (a CSV cell) in the field's type; None for an empty cell."""
    raw = raw.strip()
    if raw == "":
        return None
    kind = definition["type"]
    if kind == "number":
        try:
            number = float(raw)
        except ValueError:
            raise MarshmallowError("must be a number") from None
        return number
    if kind == "boolean":
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        raise MarshmallowError("must be true or false (yes/no, 1/0)")
    return raw


def check_cells(definitions: dict[str, dict], cells: dict[str, str]
                ) -> tuple[dict, dict[str, list[str]]]:
    """Values written as text (a file's cells, by key), each checked in its field's type: the
    values given (empty cells left out) and the refusals, by key. Required fields are the
    caller's to check, against what the customer will hold (`missing_required`)."""
    values: dict[str, Any] = {}
    errors: dict[str, list[str]] = {}
    for key, raw in cells.items():
        definition = definitions.get(key)
        if definition is None:
            errors[key[:MAX_KEY + 1]] = ["no such custom field in this store"]
            continue
        try:
            value = parse_text(definition, raw)
            if value is not None:
                values[key] = check_value(definition, value)
        except MarshmallowError as refusal:
            errors[key] = _messages(refusal)
    return values, errors


def missing_required(definitions: dict[str, dict], values: dict) -> list[str]:
    """Keys of required fields without a value."""
    return [key for key, d in definitions.items() if d["required"] and values.get(key) is None]


def check_values(definitions: dict[str, dict], values: Any) -> dict:
    """A customer's whole set of values, checked against the store's definitions: unknown keys,
    missing required ones and wrong values are refused together, each named
    `custom_fields.<key>`. A null or absent value is no value."""
    if not isinstance(values, dict):
        raise ValidationError(f"{VALUES_FIELD} must be an object",
                              {"fields": {VALUES_FIELD: ["not an object"]}})
    errors: dict[str, list[str]] = {}
    kept: dict[str, Any] = {}
    for key, value in values.items():
        definition = definitions.get(key) if isinstance(key, str) else None
        if definition is None:
            errors[value_field(str(key)[:MAX_KEY + 1])] = ["no such custom field in this store"]
            if len(errors) >= MAX_FIELDS:  # bounded answer for a hostile body
                break
            continue
        if value is None:
            continue
        try:
            kept[key] = check_value(definition, value)
        except MarshmallowError as refusal:
            errors[value_field(key)] = _messages(refusal)
    for key, definition in definitions.items():
        if definition["required"] and key not in kept and value_field(key) not in errors:
            errors[value_field(key)] = ["is required"]
    if errors:
        raise ValidationError(f"invalid {VALUES_FIELD}: {', '.join(sorted(errors))}",
                              {"fields": errors})
    return kept


def _messages(refusal: MarshmallowError) -> list[str]:
    messages = refusal.messages
    return list(messages) if isinstance(messages, list) else [str(messages)]


def _number(value: Any) -> Any:
    """Whole numbers as integers, so 3 reads back as 3, not 3.0."""
    if value is None or isinstance(value, int):
        return value
    return int(value) if float(value).is_integer() else value


def _shown(value: Any) -> str:
    return str(_number(value))
