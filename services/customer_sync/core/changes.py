"""Deciding what an incoming WooCommerce state means: apply it or not, and which events it owes.

Pure functions over stored documents and snapshots, so every rule (stale updates, duplicate
deliveries, when an order counts as placed, cancelled or refunded) is unit-tested without a
broker or a database.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime

from services.customer_sync.core.normalise import OrderSnapshot
from shared.customers import CONTACT_FIELDS

REAL_STATUSES = frozenset({"pending", "processing", "on-hold", "completed"})
# A refunded order was placed and paid before it was refunded: met first in that state (a
# backfill, a reconciliation, a lost webhook), it is placed and refunded at once, so every
# consumer counts it as it would have, had it been seen live (the fault tests found a
# backfilled store's order counts one short per fully refunded order).
PLACED_ON_FIRST_SIGHT = REAL_STATUSES | {"refunded"}
CANCELLED_STATUSES = frozenset({"cancelled", "failed", "trash"})
AMOUNT_FIELDS = ("total", "subtotal", "discount_total", "shipping_total", "tax_total", "line_items")


class Freshness(enum.Enum):
    NEWER = "newer"  # apply it
    SAME = "same"  # the state already held: change nothing, publish nothing
    STALE = "stale"  # older than what is held: drop it


def freshness(stored_modified: datetime | None, stored_hash: str | None,
              incoming_modified: datetime | None, incoming_hash: str) -> Freshness:
    """Compare by `date_modified_gmt`, then content: WooCommerce's timestamps have one-second
    resolution, so two states in the same second are told apart by their content."""
    if stored_hash is None:
        return Freshness.NEWER
    if stored_modified is not None and incoming_modified is not None:
        if incoming_modified < stored_modified:
            return Freshness.STALE
        if incoming_modified > stored_modified:
            return Freshness.NEWER
    return Freshness.SAME if incoming_hash == stored_hash else Freshness.NEWER


@dataclass(frozen=True)
class PlannedEvent:
    event_type: str
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class OrderPlan:
    events: list[PlannedEvent]
    placed: bool  # whether order.placed has been published for this order, after this change


def plan_order_events(previous: dict | None, new: OrderSnapshot) -> OrderPlan:
    """Which order events a change from the stored order `previous` to `new` owes.

    order.placed  the first time the order is seen in a real status, or refunded (then with
                  order.refunded for its refunds);
    order.cancelled  a placed order becomes cancelled, failed or trashed;
    order.updated  any other status change of a placed order, or a change of its amounts;
    order.refunded  the refunded amount of a placed order grew (carries the delta).
    """
    was_placed = bool(previous and previous.get("placed"))
    events: list[PlannedEvent] = []
    if not was_placed:
        if new.status not in PLACED_ON_FIRST_SIGHT:
            return OrderPlan([], placed=False)
        events.append(PlannedEvent("order.placed"))
        if new.total_refunded > 0:
            events.append(PlannedEvent("order.refunded", {"refund_delta": new.total_refunded}))
        return OrderPlan(events, placed=True)

    assert previous is not None
    old_status = previous["status"]
    changed = [name for name in AMOUNT_FIELDS if previous.get(name) != getattr(new, name)]
    if old_status != new.status:
        if new.status in CANCELLED_STATUSES and old_status not in CANCELLED_STATUSES:
            events.append(PlannedEvent("order.cancelled", {"old_status": old_status}))
        else:
            events.append(PlannedEvent("order.updated", {
                "old_status": old_status, "new_status": new.status,
                "changed_fields": ["status", *changed],
            }))
    elif changed:
        events.append(PlannedEvent("order.updated", {
            "old_status": old_status, "new_status": new.status, "changed_fields": changed,
        }))
    delta = new.total_refunded - int(previous.get("total_refunded", 0))
    if delta > 0:
        events.append(PlannedEvent("order.refunded", {"refund_delta": delta}))
    elif delta < 0 and not any(e.event_type == "order.updated" for e in events):
        events.append(PlannedEvent("order.updated", {
            "old_status": old_status, "new_status": new.status,
            "changed_fields": ["total_refunded"],
        }))
    return OrderPlan(events, placed=True)




def changed_contact_fields(previous: dict, new: dict) -> list[str]:
    """Names of the contact fields that differ (what customer.updated announces)."""
    return [name for name in CONTACT_FIELDS if previous.get(name) != new.get(name)]
