"""The compiled event loaders (shared/events/fastload.py) give marshmallow's answer: the same
result for every contract's sample and for generated variants of each, and marshmallow's own
error wherever the input is not plainly valid."""
from __future__ import annotations

import copy
import os
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from marshmallow import Schema, ValidationError, fields, post_load, validate

from shared.events import build_event
from shared.events.catalogue import CATALOGUE
from shared.events.envelope import EnvelopeSchema
from shared.events.fastload import SchemaLoader
from shared.events.fields import BaseSchema

CONTRACTS = sorted(CATALOGUE.values(), key=lambda c: (c.event_type, c.schema_version))
IDS = [f"{c.event_type}-v{c.schema_version}" for c in CONTRACTS]


def _marshmallow(schema: Schema, data: Any) -> tuple[str, Any]:
    try:
        return "ok", schema.load(data)
    except ValidationError as exc:
        return "error", exc.messages


def _fast(loader: SchemaLoader, data: Any) -> tuple[str, Any]:
    try:
        return "ok", loader.load(data)
    except ValidationError as exc:
        return "error", exc.messages


def _same_as_marshmallow(loader: SchemaLoader, data: Any) -> None:
    expected = _marshmallow(loader.schema, copy.deepcopy(data))
    assert _fast(loader, copy.deepcopy(data)) == expected
    # The compiled path on its own may refuse (marshmallow then decides), never differ.
    try:
        compiled = loader._compiled(copy.deepcopy(data))
    except Exception:
        return
    assert expected == ("ok", compiled), "the compiled path accepted what marshmallow did not"


@pytest.mark.parametrize("spec", CONTRACTS, ids=IDS)
def test_every_contract_is_compiled_and_loads_its_sample_as_marshmallow_does(spec):
    loader = SchemaLoader(spec.schema())
    assert loader.compiled, f"{spec.event_type} fell back to marshmallow for every event"
    result = loader._compiled(copy.deepcopy(spec.sample))
    assert result == spec.schema().load(copy.deepcopy(spec.sample))


def test_the_envelope_is_compiled_and_loads_as_marshmallow_does():
    loader = SchemaLoader(EnvelopeSchema())
    assert loader.compiled
    spec = CONTRACTS[0]
    message = build_event(spec.event_type, store_id="s1", data=spec.sample).to_message()
    _same_as_marshmallow(loader, message)
    for broken in ({**message, "event_id": "not-a-uuid"}, {**message, "schema_version": True},
                   {**message, "schema_version": "2"}, {**message, "occurred_at": "yesterday"},
                   {**message, "occurred_at": "2026-11-29T10:00:00"},  # naive
                   {**message, "occurred_at": "0001-01-01T00:00:00+14:00"},
                   {**message, "store_id": ""}, {**message, "causation_id": None},
                   {k: v for k, v in message.items() if k != "causation_id"},
                   {k: v for k, v in message.items() if k != "data"}, {**message, "data": []},
                   {**message, "event_id": str(uuid.uuid4()).upper()}, [message], None):
        _same_as_marshmallow(loader, broken)


# -- generated variants: a sample with one to four things changed ----------------------------------
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=False)
    | st.text(max_size=12) | st.sampled_from(["", "EUR", "eur", "2026-11-29T10:00:00+00:00",
                                              "2026-11-29T10:00:00", "12", "true", "0",
                                              str(uuid.uuid4())]),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=6)


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, prefix + (key,))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += _paths(child, prefix + (index,))
    return found


@st.composite
def variants(draw, sample: dict) -> dict:
    data = copy.deepcopy(sample)
    for _ in range(draw(st.integers(1, 4))):
        paths = _paths(data)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = data
        for step in path[:-1]:
            parent = parent[step]
        action = draw(st.sampled_from(["replace", "null", "drop", "extra"]))
        if action == "drop" and isinstance(parent, dict):
            del parent[path[-1]]
        elif action == "null":
            parent[path[-1]] = None
        elif action == "extra" and isinstance(parent, dict):
            parent[draw(st.text(max_size=8))] = draw(JSON_VALUES)
        else:
            parent[path[-1]] = draw(JSON_VALUES)
    return data


@pytest.mark.parametrize("spec", CONTRACTS, ids=IDS)
@settings(max_examples=int(os.environ.get("FASTLOAD_EXAMPLES", "40")), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_generated_variants_of_each_sample_load_as_marshmallow_loads_them(spec, data):
    loader = spec.loader()
    _same_as_marshmallow(loader, data.draw(variants(spec.sample)))


# -- what the compiler leaves to marshmallow ------------------------------------------------------
class _WithHook(BaseSchema):
    name = fields.String()

    @post_load
    def shout(self, data, **kwargs):
        return {**data, "name": data.get("name", "").upper()}


class _WithUnknownFieldType(BaseSchema):
    ratio = fields.Float()


class _WithValidators(BaseSchema):
    code = fields.String(required=True, validate=validate.OneOf(["a", "b"]))
    count = fields.Integer(load_default=lambda: 7, validate=validate.Range(min=1))
    tags = fields.List(fields.String(validate=validate.Length(min=1)), load_default=list)


def test_schemas_with_hooks_or_unknown_field_types_are_left_to_marshmallow():
    hooked = SchemaLoader(_WithHook())
    assert not hooked.compiled
    assert hooked.load({"name": "ada"}) == {"name": "ADA"}
    assert not SchemaLoader(_WithUnknownFieldType()).compiled


def test_defaults_and_validators_behave_as_in_marshmallow():
    loader = SchemaLoader(_WithValidators())
    assert loader.compiled
    assert loader.load({"code": "a"}) == {"code": "a", "count": 7, "tags": []}
    for data in ({"code": "a", "count": 3, "tags": ["x"]}, {"code": "c"}, {"count": 0, "code": "a"},
                 {"code": "a", "tags": [""]}, {"code": "a", "tags": "x"}, {"code": None}, {}):
        _same_as_marshmallow(loader, data)
