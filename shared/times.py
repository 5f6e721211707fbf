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


def utc_ms(value: Any) -> datetime | None:
    """A datetime as MongoDB keeps it: UTC, to the millisecond (naive read as UTC); None for
    anything that is not a datetime (text is not read here), or one outside the calendar once
    in UTC (year 1 at +14:00)."""
    moment = as_utc(value) if isinstance(value, datetime) else None
    return to_millis(moment) if moment is not None else None


def iso_ms(value: Any) -> Any:
    """A datetime as ISO-8601 text in UTC to the millisecond (naive read as UTC), anything else
    as is: for answers read alongside cursors built from what MongoDB keeps, which must agree."""
    moment = utc_ms(value)
    return moment.isoformat() if moment is not None else value


def iso_everywhere(value: Any, drop: Iterable[str] = ()) -> Any:
    """A stored document as JSON: its times, at any depth, as ISO-8601 text (naive read as
    UTC), without the keys named in `drop` at any depth (an outbox a caller must not see)."""
    dropped = frozenset(drop)
    if isinstance(value, dict):
        return {k: iso_everywhere(v, dropped) for k, v in value.items() if k not in dropped}
    if isinstance(value, list):
        return [iso_everywhere(v, dropped) for v in value]
    return iso(value)


class RefusedTime(ValueError):
    """Why a caller's time was refused. `reason` is "invalid" (no ISO-8601 time), "naive" (no
    offset) or "out_of_range" (before year 1 or after 9999 once in UTC), so each caller can
    word the refusal its own way; the message is the plain one, after the field's name."""

    MESSAGES = {"invalid": "must be an ISO-8601 time", "naive": "must include its UTC offset",
                "out_of_range": "is out of range in UTC"}

    def __init__(self, reason: str) -> None:
        super().__init__(self.MESSAGES[reason])
        self.reason = reason


def check_aware(value: str | datetime) -> datetime:
    """A time a caller sent (ISO-8601 text or a datetime), checked to say its offset and to
    exist in UTC, returned with the offset it was written with. Unlike stored data, a caller's
    naive time could mean the shop's time or the caller's, so it is refused (RefusedTime)."""
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(str(value))
        except ValueError:
            raise RefusedTime("invalid") from None
    if moment.utcoffset() is None:
        raise RefusedTime("naive")
    try:
        moment.astimezone(timezone.utc)
    except OverflowError:  # 0001-01-01T00:00+14:00 is before year 1 in UTC
        raise RefusedTime("out_of_range") from None
    return moment


def parse_aware(name: str, value: Any, expected: str = "an ISO-8601 time") -> datetime:
    """A caller's time as aware UTC (see check_aware). The ValidationError names the field
    `name`; `expected` says what it must be when it is no time at all."""
    try:
        return check_aware(str(value)).astimezone(timezone.utc)
    except RefusedTime as refused:
        message = f"must be {expected}" if refused.reason == "invalid" else str(refused)
        code = "naive" if refused.reason == "naive" else "invalid"
        raise ValidationError(f"{name} {message}", {"fields": {name: [code]}}) from None
