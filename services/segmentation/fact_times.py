"""When what segmentation derives became true: the `fact_at` of its events. Pure.

A tag, segment or group follows from a customer's facts (orders, contact data) and the clock.
Re-derived without a new fact (the periodic recompute, a rule saved, the store's VIP cutoff
moving), a change is dated by the newest fact the profile holds, or by the moment the clock
alone made it true (the day a customer became at risk), whichever is later. A rule or a cutoff
is not news to the customer: a store that adds a "big spender" rule tags its old big spenders
with the dates of their orders, and workflows that react to news leave them alone.
"""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Callable, Hashable, Iterable, Mapping

from services.segmentation import stats as st

_DAY = timedelta(days=1)
_JUST_BEFORE = timedelta(microseconds=1)


def clock_turns(stats: st.Stats, thresholds: st.Thresholds,
                rules: Iterable[Mapping[str, Any]] = ()) -> list[datetime]:
    """The moments at which time passing alone can change this customer's segment or a rule's
    verdict: whole days counted from the first or last order crossing a threshold."""
    if stats.first_order_at is None or stats.last_order_at is None:
        return []
    first, last = stats.first_order_at, stats.last_order_at
    # classify counts whole days, floored: "more than N days" turns true N + 1 days after
    turns = [first + (thresholds.new_days + 1) * _DAY,
             first + (thresholds.one_time_days + 1) * _DAY,
             last + (thresholds.at_risk_days + 1) * _DAY]
    for rule in rules:
        for condition in rule.get("conditions") or ():
            if condition.get("field") != "days_since_last_order":
                continue
            value = condition.get("value")
            for days in value if isinstance(value, list) else [value]:
                if isinstance(days, (int, float)) and not isinstance(days, bool) \
                        and 0 <= days < 100_000:
                    whole = int(days)
                    turns += [last + whole * _DAY, last + (whole + 1) * _DAY]
    return turns


def derived_fact_at(held_facts: Iterable[datetime | None], turns: Iterable[datetime],
                    now: datetime, state_at: Callable[[datetime], Hashable]) -> datetime:
    """The time of a change derived without a new fact: the later of the newest fact held and
    the last clock turn already passed that changed what is derived (`state_at` a moment:
    segment, tags, groups), never after `now` (with neither, `now`)."""
    passed = [t for t in turns if t <= now and state_at(t - _JUST_BEFORE) != state_at(t)]
    known = [t for t in (*held_facts, *passed) if t is not None]
    return min(max(known), now) if known else now
