"""The contact projection's rules, pure: which fact an event brings (a stamp, its time, the
fields it sets and unsets), and how a contact document changes under it, in memory, exactly as
the conditional updates of `ContactRepository.apply` and `add_order` change the stored one.
The batch path (`Notifier.apply_all`) reads a batch's contacts once, runs these, and writes
each contact once; the one-event path runs the same facts through the repository."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from services.notifications.repository import (ABSENT, DELETED, ERASED, get_path, phone_key,
                                                set_path)
from shared.events import Event

# Events whose effect on the projection is a fact (or nothing) and that the batch path applies.
# Left out: consent.changed (held for confirmation first) and customer.deleted, merged and
# unmerged (rules of their own), which go one at a time.
BATCHED_EVENTS = frozenset({
    "customer.created", "customer.updated", "order.placed", "order.updated",
    "customer.tagged", "customer.untagged", "customer.group_joined", "customer.group_left",
    "customer.segment_changed", "customer.saved_segment_entered",
    "customer.saved_segment_left",
    # loyalty's: points and tier are facts; rewards and expiring points only trigger
    "loyalty.points_changed", "loyalty.tier_changed", "loyalty.reward_issued",
    "loyalty.reward_expired", "loyalty.reward_returned", "loyalty.points_expiring"})


@dataclass(frozen=True)
class Fact:
    """Set `fields` (and unset `unset`) when the time held under `stamp` is older than `at`."""

    stamp: str
    at: datetime
    fields: dict = field(default_factory=dict)
    unset: tuple[str, ...] = ()


def fact_of(event: Event) -> Fact | None:
    """The fact an event brings to its customer's contact; None for an event that is no fact
    (orders, consent and merges have rules of their own)."""
    data, at, kind = event.data, event.occurred_at, event.event_type
    if kind in ("customer.created", "customer.updated"):
        billing = data.get("billing") or {}
        phone = data.get("phone") or billing.get("phone") or None
        return Fact("contact_at", at, {
            "email": data.get("email"), "phone": phone, "phone_key": phone_key(phone),
            "first_name": data.get("first_name") or "", "last_name": data.get("last_name") or "",
            "birthday": data.get("birthday"), "country": billing.get("country") or "",
            # the store's own fields, for templates (`customer.custom_fields.<key>`)
            "custom_fields": data.get("custom_fields") or {}})
    if kind == "customer.deleted":
        return Fact("status_at", at, {"status": DELETED})
    if kind in ("customer.tagged", "customer.untagged"):
        tag = data["tag"]
        if kind == "customer.tagged":
            return Fact(f"tag_at.{tag}", at, {f"tags.{tag}": True})
        return Fact(f"tag_at.{tag}", at, {}, (f"tags.{tag}",))
    if kind in ("customer.group_joined", "customer.group_left"):
        group = data["group"]
        if kind == "customer.group_joined":
            return Fact(f"group_at.{group}", at, {f"groups.{group}": True})
        return Fact(f"group_at.{group}", at, {}, (f"groups.{group}",))
    if kind == "customer.segment_changed":
        return Fact("segment_at", at, {"segment": data["new_segment"]})
    if kind in ("customer.saved_segment_entered", "customer.saved_segment_left"):
        segment_id = data["segment_id"]  # a checked id: safe in a field path
        if kind == "customer.saved_segment_entered":
            return Fact(f"saved_segment_at.{segment_id}", at,
                        {f"saved_segments.{segment_id}": True})
        return Fact(f"saved_segment_at.{segment_id}", at, {},
                    (f"saved_segments.{segment_id}",))
    if kind == "loyalty.points_changed":
        return Fact("points_at", at, {"points": data["balance"]})
    if kind == "loyalty.tier_changed":
        return Fact("tier_at", at, {"tier": data["new_tier"]})
    return None


def order_of(event: Event, total_text: str | None) -> dict:
    """What a contact keeps of an order.placed event (its `last_order`)."""
    data = event.data
    return {"order_id": data["order_id"], "number": data.get("number"), "total": total_text,
            "date": data.get("date_created") or event.occurred_at, "seen_at": event.occurred_at}


# -- the stored document, in memory ------------------------------------------------------------
def as_stored(value: Any) -> Any:
    """A value as MongoDB keeps it: times to the millisecond (BSON dates), copied."""
    if isinstance(value, datetime):
        return value.replace(microsecond=value.microsecond // 1000 * 1000)
    if isinstance(value, dict):
        return {k: as_stored(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_stored(v) for v in value]
    return value


def unset_path(doc: dict, dotted: str) -> None:
    parts = dotted.split(".")
    for part in parts[:-1]:
        doc = doc.get(part)
        if not isinstance(doc, dict):
            return
    doc.pop(parts[-1], None)


def apply_fact(doc: dict, fact: Fact) -> None:
    """`ContactRepository.apply` on a held contact: the fact is set only over an older one,
    never on an erased contact."""
    if doc.get("status") == ERASED:
        return
    at = as_stored(fact.at)
    held = get_path(doc, fact.stamp)
    if held is not ABSENT and not (isinstance(held, datetime) and held < at):
        return
    for name, value in {**fact.fields, fact.stamp: at}.items():
        set_path(doc, name, as_stored(value))
    for name in fact.unset:
        unset_path(doc, name)


def add_order(doc: dict, order: dict) -> bool:
    """`ContactRepository.add_order` on a held contact (its "order_seen_at" fact applied
    first): whether the order is the contact's first. Nothing changes on an erased one."""
    apply_fact(doc, Fact("order_seen_at", order["seen_at"]))
    if doc.get("status") == ERASED:
        return False
    order = as_stored(order)
    order_ids = doc.setdefault("order_ids", [])
    if order["order_id"] not in order_ids:
        first = not order_ids
        order_ids.append(order["order_id"])
    else:
        first = order_ids[0] == order["order_id"]
    last = doc.get("last_order")
    if last is None or (isinstance(last, dict) and isinstance(last.get("date"), datetime)
                        and last["date"] <= order["date"]):
        doc["last_order"] = order
    return first


# Set whole by their facts, as the one-event path sets them: never written key by key (a
# store's custom field key is any text, and "a.b" or "$x" is no field path).
WHOLE_VALUES = frozenset({"custom_fields", "last_order"})


def _path_safe(*documents: dict) -> bool:
    return all(isinstance(key, str) and key and "." not in key and not key.startswith("$")
               for document in documents for key in document)


def changes(before: dict, after: dict, prefix: str = "") -> tuple[dict, list[str]]:
    """The `$set` and `$unset` that turn `before` into `after`, leaf by leaf, so a write
    touches only the paths that changed. A map the contact did not hold is written key by key
    too: the compare-and-set checks no other key of it, so setting it whole would erase keys
    another writer added since the read. A map with keys that are no field path is set whole."""
    to_set: dict[str, Any] = {}
    to_unset: list[str] = []
    for name, value in after.items():
        path = f"{prefix}{name}"
        old = before.get(name, ABSENT)
        held = {} if old is ABSENT else old
        if isinstance(value, dict) and isinstance(held, dict) \
                and path not in WHOLE_VALUES and _path_safe(value, held):
            inner_set, inner_unset = changes(held, value, f"{path}.")
            to_set.update(inner_set)
            to_unset.extend(inner_unset)
        elif old is ABSENT or old != value or type(old) is not type(value):
            to_set[path] = value
    to_unset.extend(f"{prefix}{name}" for name in before if name not in after)
    return to_set, to_unset
