"""Event schemas compiled into plain functions: marshmallow's own result, several times faster,
for input that is plainly valid; anything else is loaded by marshmallow itself.

Every event is loaded at least twice (by its publisher in `build_event` and by each consumer
in `parse_event`), and marshmallow's per-field machinery was a consumer's largest cost after
the database (figures in docs/benchmarks.md). The compiled loader walks the same field objects and calls the same `_deserialize` methods and validators,
without the error bookkeeping. It never judges input on its own: at the first thing it does not
find plainly valid (a missing required field, a null, a wrong type, a failing validator, a
field type it does not know), it stops and marshmallow loads the whole input, so errors,
coercions and edge cases are marshmallow's. tests/unit/test_event_fastload.py checks that both
give the same result for every contract's sample and for many generated variants of each.

A schema with hooks (pre_load, post_load, validators of its own) or options the compiler does
not reproduce is not compiled: marshmallow loads it every time.
"""
from __future__ import annotations

from typing import Any, Callable

from marshmallow import EXCLUDE, Schema, fields, missing

from shared.events.fields import UtcDateTime

Loader = Callable[[Any], Any]


class _NotPlain(Exception):
    """The input is not plainly valid: marshmallow decides."""


# Fields whose own `_deserialize` is cheap and self-contained: called as marshmallow calls it.
_LEAF_TYPES = (fields.String, fields.Integer, fields.Boolean, fields.UUID, UtcDateTime)


class SchemaLoader:
    """`load(data)` as `schema.load(data)`, by the compiled path when the input allows."""

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self._compiled = _compile_schema(schema)

    @property
    def compiled(self) -> bool:
        return self._compiled is not None

    def load(self, data: Any) -> dict:
        if self._compiled is not None:
            try:
                return self._compiled(data)
            except Exception:  # anything at all: marshmallow's verdict and message
                pass
        return self.schema.load(data)


def _compile_schema(schema: Schema) -> Loader | None:
    if schema.many or schema.opts.unknown != EXCLUDE or any(schema._hooks.values()):
        return None
    steps = []
    for name, field in schema.load_fields.items():
        step = _compile_field(field)
        if step is None or field.attribute not in (None, name):
            return None
        key = field.data_key if field.data_key is not None else name
        steps.append((key, name, step, field.required, field.load_default))

    def load(data: Any) -> dict:
        if type(data) is not dict:
            raise _NotPlain
        out = {}
        for key, name, step, required, default in steps:
            if key in data:
                out[name] = step(data[key])
            elif required:
                raise _NotPlain
            elif default is not missing:
                out[name] = default() if callable(default) else default
        return out

    return load


def _compile_field(field: fields.Field) -> Loader | None:
    """A function of a present value, as `field.deserialize` would load it."""
    if getattr(field, "pre_load", None) or getattr(field, "post_load", None):
        return None
    body = _compile_body(field)
    if body is None:
        return None
    allow_none, validators = field.allow_none, tuple(field.validators)

    def load(value: Any) -> Any:
        if value is None:
            if allow_none:
                return None
            raise _NotPlain
        out = body(value)
        for validator in validators:
            validator(out)  # marshmallow's validators raise on failure, whatever they answer
        return out

    return load


def _compile_body(field: fields.Field) -> Loader | None:
    kind = type(field)
    if kind in _LEAF_TYPES:
        deserialize = field._deserialize
        return lambda value: deserialize(value, None, None)
    if kind is fields.Dict:
        if field.key_field is None and field.value_field is None:
            return lambda value: dict(value) if type(value) is dict else _not_plain()
        key = _compile_field(field.key_field) if field.key_field is not None else _same
        item = _compile_field(field.value_field) if field.value_field is not None else _same
        if key is None or item is None:
            return None
        return lambda value: ({key(k): item(v) for k, v in value.items()}
                              if type(value) is dict else _not_plain())
    if kind is fields.List:
        inner = _compile_field(field.inner)
        if inner is None:
            return None
        return lambda value: [inner(v) for v in value] if type(value) is list else _not_plain()
    if kind is fields.Nested and not field.only and not field.exclude and field.unknown is None:
        nested = _compile_schema(field.schema)
        if nested is None:
            return None
        if field.many:
            return lambda value: [nested(v) for v in value] if type(value) is list else _not_plain()
        return nested
    return None


def _not_plain() -> Any:
    raise _NotPlain


def _same(value: Any) -> Any:
    return value
