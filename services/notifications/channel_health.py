"""Whether a channel keeps failing, and the words an operator reads about it.

A channel (email through SMTP, SMS through Twilio) keeps failing when its last
`FAILING_AFTER` attempts to hand a message to the provider all failed, whatever the reason,
with no message accepted since: one accepted message ends the streak. Failures before the
provider is called (a template that does not render, a coupon the shop cannot make yet) say
nothing about the channel and are not counted. The state is deployment-wide, one per
channel, shared by every instance of the service (repository.ChannelStateRepository).

Pure rules: no database, no clock read.
"""
from __future__ import annotations

import re
from datetime import datetime, timezone

from shared.times import iso

FAILING_AFTER = 5
CHANNELS = ("email", "sms")
REASON_LIMIT = 300
RECIPIENT = "<recipient>"


def without_recipient(reason: str, recipient: str | None) -> str:
    """The provider's words without the address or number they were about, so the channel's
    state (read by `companion health`, kept after an erasure) names no person."""
    text = str(reason)
    if recipient:
        text = re.sub(re.escape(recipient), RECIPIENT, text, flags=re.IGNORECASE)
    return text[:REASON_LIMIT]


def describe(channel: str, state: dict | None) -> dict:
    """The channel's state as `health()` answers it: `failing`, else `ok` (also when nothing
    has failed yet, which leaves no state at all)."""
    state = state or {}
    failures = int(state.get("consecutive_failures") or 0)
    return {"channel": channel, "state": "failing" if failures >= FAILING_AFTER else "ok",
            "consecutive_failures": failures,
            "failing_since": iso(state.get("failing_since")) if failures else None,
            "last_error": state.get("last_error"),
            "last_error_at": iso(state.get("last_error_at")),
            "recovered_at": iso(state.get("recovered_at"))}


def problem(described: dict) -> str | None:
    """`email: the last 5 attempts to send failed (since 2026-12-06 18:02 UTC); last error:
    ...`, or None for a channel that is not failing."""
    if described["state"] != "failing":
        return None
    return (f"{described['channel']}: the last {described['consecutive_failures']} attempts to "
            f"send failed (since {_minute(described['failing_since'])}); last error: "
            f"{described['last_error']}")


def _minute(iso: str | None) -> str:
    if not iso:
        return "unknown"
    moment = datetime.fromisoformat(iso).astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def report(states: dict[str, dict]) -> dict:
    """What notifications' `health()` adds: every channel's state, and a problem line for each
    one that keeps failing (`companion health` shows those lines and exits 1)."""
    channels = {name: describe(name, states.get(name)) for name in CHANNELS}
    return {"channels": channels,
            "problems": [line for line in map(problem, channels.values()) if line]}
