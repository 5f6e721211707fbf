"""Times as the project keeps them: aware UTC datetimes, ISO-8601 text on the wire.

One place for reading the clock and for reading and writing ISO-8601, so a naive time means
UTC everywhere (as the shop's `*_gmt` fields and a tz-unaware database hand them out).
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Iterable

from shared.errors import ValidationError


def utcnow() -> datetime:
    """Now, aware UTC: the default clock of every use case that takes one."""
    return datetime.now(timezone.utc)


def to_millis(moment: datetime) -> datetime:
    """`moment` cut to the millisecond MongoDB keeps, so an answer shows what a later read
    (or a cursor built from it) shows."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def utcnow_ms() -> datetime:
    """Now, to the millisecond MongoDB keeps."""
    return to_millis(utcnow())


def parse_utc(text: str) -> datetime:
    """ISO-8601 text (a trailing Z allowed) as aware UTC; no offset means UTC. Raises
    ValueError (or OverflowError at the ends of the calendar) for text that is no time."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment.astimezone(timezone.utc) if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def as_utc(value: Any) -> datetime | None:
    """A datetime or ISO-8601 text as aware UTC (naive read as UTC); None for anything else,
    so optional times in stored or received data read without a check at every use."""
    try:
        if isinstance(value, datetime):
            return value.astimezone(timezone.utc) if value.tzinfo else value.replace(tzinfo=timezone.utc)
        if isinstance(value, str) and value:
            return parse_utc(value)
    except (ValueError, OverflowError):
        pass
    return None


def iso(value: Any) -> Any:
    """A datetime as ISO-8601 text (naive read as UTC) for JSON answers; anything else as is."""
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).isoformat()
    return value


def iso_everywhere(value: Any, drop: Iterable[str] = ()) -> Any:
    """A stored document as JSON: its times, at any depth, as ISO-8601 text (naive read as
    UTC), without the keys named in `drop` at any depth (an outbox a caller must not see)."""
    dropped = frozenset(drop)
    if isinstance(value, dict):
        return {k: iso_everywhere(v, dropped) for k, v in value.items() if k not in dropped}
    if isinstance(value, list):
        return [iso_everywhere(v, dropped) for v in value]
    return iso(value)


def parse_aware(name: str, value: Any, expected: str = "an ISO-8601 time") -> datetime:
    """A caller's time as aware UTC. Unlike stored data, a time a caller sends must say its
    offset: a naive one could mean the shop's time or the caller's. The ValidationError names
    the field `name`; `expected` says what it must be when it is no time at all."""
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        raise ValidationError(f"{name} must be {expected}",
                              {"fields": {name: ["invalid"]}}) from None
    if moment.tzinfo is None:
        raise ValidationError(f"{name} must include its UTC offset", {"fields": {name: ["naive"]}})
    try:
        return moment.astimezone(timezone.utc)
    except OverflowError:  # year 1 or 9999 moved past the range
        raise ValidationError(f"{name} is out of range in UTC",
                              {"fields": {name: ["invalid"]}}) from None
