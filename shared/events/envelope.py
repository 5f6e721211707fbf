"""The envelope every event travels in, and the two doors through which events pass."""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from marshmallow import ValidationError, fields, validate

from shared.events.catalogue import contract
from shared.events.fastload import SchemaLoader
from shared.events.fields import BaseSchema, UtcTime
from shared.times import utcnow


class InvalidEvent(ValueError):
    """An event that does not match its contract; `errors` is marshmallow's error dict."""

    def __init__(self, message: str, errors: dict | None = None) -> None:
        super().__init__(message if not errors else f"{message}: {errors}")
        self.errors = errors or {}


class EnvelopeSchema(BaseSchema):
    event_id = fields.UUID(required=True)
    event_type = fields.String(required=True, validate=validate.Length(min=1))
    schema_version = fields.Integer(required=True, strict=True, validate=validate.Range(min=1))
    occurred_at = UtcTime(required=True)
    store_id = fields.String(required=True, validate=validate.Length(min=1))
    correlation_id = fields.String(required=True, validate=validate.Length(min=1))
    causation_id = fields.String(load_default=None, allow_none=True)
    data = fields.Dict(required=True)


_ENVELOPE = SchemaLoader(EnvelopeSchema())


@dataclass(frozen=True)
class Event:
    """A validated event. `data` holds the loaded payload (times as aware datetimes)."""

    event_id: str
    event_type: str
    schema_version: int
    occurred_at: datetime
    store_id: str
    correlation_id: str
    causation_id: str | None
    data: dict = field(default_factory=dict)
    raw_data: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def source(self) -> str:
        return contract(self.event_type, self.schema_version).source

    def to_message(self) -> dict:
        """The JSON-ready envelope exactly as it goes on the wire."""
        return {
            "event_id": self.event_id,
            "event_type": self.event_type,
            "schema_version": self.schema_version,
            "occurred_at": self.occurred_at.astimezone(timezone.utc).isoformat(),
            "store_id": self.store_id,
            "correlation_id": self.correlation_id,
            "causation_id": self.causation_id,
            "data": self.raw_data,
        }


def build_event(
    event_type: str,
    *,
    store_id: str,
    data: dict[str, Any],
    correlation_id: str | None = None,
    causation_id: str | None = None,
    event_id: str | None = None,
    occurred_at: datetime | None = None,
    schema_version: int | None = None,
) -> Event:
    """Make an event, validating `data` (JSON-ready) against its contract before it goes anywhere.

    `event_id` can be given to make the id stable (derived from the change), so a re-publish
    is recognised downstream.
    """
    spec = contract(event_type, schema_version)
    try:
        loaded = spec.loader().load(data)
    except ValidationError as exc:
        raise InvalidEvent(f"{event_type} v{spec.schema_version} data is invalid",
                           exc.messages) from None
    if not store_id or not isinstance(store_id, str):
        raise InvalidEvent("store_id must be a non-empty string")
    when = occurred_at or utcnow()
    if when.tzinfo is None:
        raise InvalidEvent("occurred_at must be timezone-aware")
    event_id = str(uuid.UUID(event_id)) if event_id else str(uuid.uuid4())
    return Event(
        event_id=event_id,
        event_type=event_type,
        schema_version=spec.schema_version,
        occurred_at=when.astimezone(timezone.utc),
        store_id=store_id,
        correlation_id=correlation_id or event_id,
        causation_id=causation_id,
        data=loaded,
        raw_data=data,
    )


def parse_event(message: Any, expected_type: str | None = None) -> Event:
    """Load an envelope and its data as a consumer: unknown fields are dropped, not fatal."""
    if not isinstance(message, dict):
        raise InvalidEvent("an event must be a JSON object")
    try:
        envelope = _ENVELOPE.load(message)
    except ValidationError as exc:
        raise InvalidEvent("the envelope is invalid", exc.messages) from None
    if expected_type is not None and envelope["event_type"] != expected_type:
        raise InvalidEvent(f"expected {expected_type}, got {envelope['event_type']}")
    try:
        spec = contract(envelope["event_type"], envelope["schema_version"])
    except KeyError as exc:
        raise InvalidEvent(str(exc.args[0])) from None
    try:
        data = spec.loader().load(envelope["data"])
    except ValidationError as exc:
        raise InvalidEvent(f"{spec.event_type} v{spec.schema_version} data is invalid", exc.messages) from None
    return Event(
        event_id=str(envelope["event_id"]),
        event_type=envelope["event_type"],
        schema_version=envelope["schema_version"],
        occurred_at=envelope["occurred_at"],
        store_id=envelope["store_id"],
        correlation_id=envelope["correlation_id"],
        causation_id=envelope["causation_id"],
        data=data,
        raw_data=message["data"],
    )
