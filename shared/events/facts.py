"""When the fact behind an event happened, as opposed to when the event was published.

A backfill or a replay publishes a shop's history today, and what segmentation and loyalty
derive from it (a tag, a segment, a tier) is published today too. A consumer that reacts only
to news (notifications' workflows) needs the time of the fact itself: an order's or a sign-up's
time at the shop, or the `fact_at` a derived event carries from the fact that caused it.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any, Mapping

from shared.times import as_utc

# Events derived from others: each carries `fact_at`, the time of the fact that caused it
# (optional in their contracts: publishers from before it was added leave it out).
DERIVED_EVENTS = frozenset({
    "customer.tagged", "customer.untagged", "customer.segment_changed",
    "customer.group_joined", "customer.group_left", "loyalty.tier_changed",
    "loyalty.points_changed", "customer.saved_segment_entered", "customer.saved_segment_left",
})
# Order events whose fact is a change of an order already placed: dated by the shop's
# `date_modified` where the event carries it.
_ORDER_CHANGES = frozenset({"order.updated", "order.refunded", "order.cancelled"})
# Contact fields the companion keeps itself (docs/custom-fields.md): a customer.updated that
# changed them reports a change made as it was published, which the shop's date_modified
# (of its own fields) does not date.
_COMPANION_FIELDS = frozenset({"custom_fields"})


def fact_time(event_type: str, data: Mapping[str, Any]) -> datetime | None:
    """When the fact behind an event happened, where the event says so: a sign-up's or an
    order's `date_created`, an order's or a contact's change by its `date_modified` (but a
    change of the companion's own fields, as new as the event), a derived event's `fact_at`.
    None when the event does not say (its fact is then as new as the event)."""
    if event_type in DERIVED_EVENTS:
        return as_utc(data.get("fact_at"))
    if event_type in ("order.placed", "customer.created"):
        return as_utc(data.get("date_created"))
    if event_type == "customer.updated" \
            and _COMPANION_FIELDS.intersection(data.get("changed_fields") or ()):
        return None
    if event_type in _ORDER_CHANGES or event_type == "customer.updated":
        return as_utc(data.get("date_modified"))
    return None
