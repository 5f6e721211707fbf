"""Segmentation's side of merging customer records and undoing it (docs/merging-owners.md).

A merge moves the merged profile's order facts, and the manual tags and groups the primary
lacks, into the primary profile; the merged profile stays as an inactive record of its own.
What moved is stored per (merge, merged record) before anything changes, so each step can be
redone after a crash, and an unmerge hands back exactly that. Each profile step is guarded
by the merge's key in the primary's `merges` list (written in the same compare-and-set as the
facts), so a redelivery changes nothing; an unmerge that arrives first leaves a record that
makes the late merge a no-op.
"""
from __future__ import annotations

from datetime import datetime
from typing import Callable

from shared.events import Event
from shared.merge_receipts import MERGED as DONE, MOVING, UNMERGED, merge_key
from shared.times import utcnow
from services.segmentation.profiles import ProfileChange, Profiles
from services.segmentation.repository import ACTIVE, MERGED, SegmentationStorage

def _manual(members: dict) -> dict:
    """Tags or groups a person gave (rules give theirs again wherever they apply)."""
    return {name: meta for name, meta in (members or {}).items()
            if (meta or {}).get("source") != "rule"}


def moved_slice(merged: dict | None, primary: dict | None) -> dict:
    """What a merge moves: the merged profile's orders and manual tags and groups that the
    primary does not already hold. Nothing from a profile never seen."""
    if merged is None:
        return {"orders": [], "tags": {}, "groups": {}}
    primary = primary or {}
    held_orders = set(primary.get("orders") or {})
    return {
        "orders": sorted(set(merged.get("orders") or {}) - held_orders),
        "tags": {t: m for t, m in _manual(merged.get("tags")).items()
                 if t not in (primary.get("tags") or {})},
        "groups": {g: m for g, m in _manual(merged.get("groups")).items()
                   if g not in (primary.get("groups") or {})},
    }


def _combine(*changes: ProfileChange) -> ProfileChange:
    out = ProfileChange()
    for change in changes:
        out.events.extend(change.events)
        out.touched.extend(t for t in change.touched if t not in out.touched)
    return out


class Merges:
    """The use cases: apply `customer.merged` and `customer.unmerged`."""

    def __init__(self, storage: SegmentationStorage, profiles: Profiles,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.storage = storage
        self.profiles = profiles
        self.clock = clock

    def merge(self, event: Event) -> ProfileChange:
        store_id, data = event.store_id, event.data
        primary_id, merged_id = data["customer_id"], data["merged_customer_id"]
        if primary_id == merged_id:
            return ProfileChange()
        key = merge_key(data.get("merge_id"), primary_id)
        profiles = self.storage.profiles
        merged = profiles.get(store_id, merged_id)
        plan = moved_slice(merged, profiles.get(store_id, primary_id))
        record = self.storage.merges.start(store_id, key, merged_id, {
            "primary_id": primary_id, "kind": data.get("kind"), "state": MOVING,
            "merged_status": (merged or {}).get("status", ACTIVE), **plan,
            "started_at": self.clock()})
        if record["state"] != MOVING:
            return ProfileChange()  # applied already, or its unmerge came first
        facts = (merged or {}).get("orders") or {}

        def take(doc: dict) -> bool:
            if key in (doc.get("merges") or []):
                return False
            orders = doc.setdefault("orders", {})
            for order_id in record["orders"]:
                if order_id not in orders and order_id in facts:
                    orders[order_id] = facts[order_id]
            for kind in ("tags", "groups"):
                members = doc.setdefault(kind, {})
                for name, meta in record[kind].items():
                    if name not in members:
                        members[name] = {**(meta or {}), "source": "manual", "merge_key": key}
            doc["merges"] = [*(doc.get("merges") or []), key]
            return True

        def leave(doc: dict) -> bool:
            if doc.get("status") == MERGED and doc.get("merged_into") == primary_id:
                return False
            doc["status"], doc["merged_into"] = MERGED, primary_id
            return True

        primary_change = self.profiles.change(store_id, primary_id, take, event)
        # A profile never seen is made inactive too, so a late event cannot make it live.
        merged_change = self.profiles.change(store_id, merged_id, leave, event)
        self.storage.merges.set_state(record["_id"], DONE, self.clock())
        return _combine(primary_change, merged_change)

    def unmerge(self, event: Event) -> ProfileChange:
        store_id, data = event.store_id, event.data
        primary_id, restored_id = data["customer_id"], data["restored_customer_id"]
        merges = self.storage.merges
        record = merges.to_hand_back(store_id, data, self.clock())
        if record is None:
            return ProfileChange()
        key = record["merge_key"]
        primary = self.storage.profiles.get(store_id, primary_id) or {}
        holds = key in (primary.get("merges") or [])
        # What moved at the merge, and what arrived since for the restored record's own account.
        order_ids = list(dict.fromkeys([*record["orders"], *data.get("orders_since", [])]))

        def give_back(doc: dict) -> bool:
            changed = False
            if doc.get("status") == MERGED and doc.get("merged_into") == primary_id:
                doc["status"] = record.get("merged_status") or ACTIVE
                doc["merged_into"] = None
                changed = True
            if not holds:
                return changed  # the primary handed its part back already
            orders = doc.setdefault("orders", {})
            for order_id in order_ids:
                fact = (primary.get("orders") or {}).get(order_id)
                if fact is not None and orders.get(order_id) != fact:
                    orders[order_id] = fact  # as the primary last learnt it
                    changed = True
            for kind in ("tags", "groups"):
                members = doc.setdefault(kind, {})
                for name in record[kind]:
                    kept = ((primary.get(kind) or {}).get(name) or {}).get("merge_key") == key
                    if not kept and name in members:
                        del members[name]  # removed from the primary since: gone for both
                        changed = True
            return changed

        def hand_over(doc: dict) -> bool:
            if key not in (doc.get("merges") or []):
                return False
            for order_id in order_ids:
                (doc.get("orders") or {}).pop(order_id, None)
            for kind in ("tags", "groups"):
                members = doc.get(kind) or {}
                for name in record[kind]:
                    if (members.get(name) or {}).get("merge_key") == key:
                        del members[name]
            doc["merges"] = [k for k in doc["merges"] if k != key]
            return True

        restored_change = self.profiles.change(store_id, restored_id, give_back, event)
        primary_change = self.profiles.change(store_id, primary_id, hand_over, event)
        merges.set_state(record["_id"], UNMERGED, self.clock())
        return _combine(restored_change, primary_change)
