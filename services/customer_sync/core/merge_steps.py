"""The steps that finish a merge once its primary record has taken it: retire each merged
record and move its orders, notes, reminders and timeline entries to the primary, noting
every id moved on the merge record first.

Every step is idempotent and the primary keeps a marker (`pending_merge_id`, or
`pending_merge` for a guest merge) until the last one is done, so a crash part-way is finished
by the next touch of the primary (core/sync.py, core/merges.py). Used by the webhook path and
the merge use case alike, which is why it is a module of its own.
"""
from __future__ import annotations

import logging
import uuid
from datetime import datetime

from services.customer_sync.repository import CustomerSyncStorage

log = logging.getLogger(__name__)

_MERGE_NAMESPACE = uuid.UUID("2c41b7e8-5f0d-4a8e-9b3c-7d6e1f0a9b24")
# A merged record pointing at a merged record (A into B, then B into C) is followed this far.
_MAX_HOPS = 10
# What moves with a merged record, each a collection keyed by customer_id.
MOVED_KINDS = ("orders", "notes", "reminders", "timeline")


def guest_merge_id(store_id: str, primary_id: str, guest_id: str) -> str:
    """A guest merge's id, from what it names: a resumed merge finds the same record."""
    return uuid.uuid5(_MERGE_NAMESPACE, f"{store_id}:{primary_id}:{guest_id}").hex


def move(storage: CustomerSyncStorage, merge_id: str, store_id: str, from_id: str, to_id: str,
         field_: str = "moved", ids: list | None = None) -> dict[str, list]:
    """Move a customer's documents (all of them, or those of `ids` per kind) to another,
    noting each ({"id", "from", "to"}) on the merge record first; answers the ids moved per
    kind."""
    moved: dict[str, list] = {}
    for kind in MOVED_KINDS:
        found = storage.owned_ids(kind, store_id, from_id,
                                  None if ids is None else ids.get(kind, []))
        storage.merges.add_moved(merge_id, kind, [{"id": i, "from": from_id, "to": to_id}
                                                    for i in found],
                                 field_)
        storage.move_owned(kind, found, from_id, to_id)
        moved[kind] = found
    return moved


def taken_by_primary(storage: CustomerSyncStorage, record: dict) -> bool:
    """Whether the primary's write landed for a merge its record still calls planned (or
    abandoned): a crash between that write and the record's step to "pending" leaves the
    primary's marker as the only word that the merge happened, and announced."""
    if record.get("kind") != "manual" or record.get("state") not in ("planned", "abandoned"):
        return False
    primary = storage.customers.get(record["store_id"], record["primary_id"])
    return primary is not None and primary.get("pending_merge_id") == record["_id"]


def finish_merge(storage: CustomerSyncStorage, store_id: str, merge_id: str,
                 now: datetime) -> None:
    """Do what is left of a merge its primary has taken, then clear the primary's marker."""
    record = storage.merges.get(store_id, merge_id)
    if record is None:
        return
    if taken_by_primary(storage, record):
        storage.merges.move_state(merge_id, ["planned", "abandoned"], "pending")
        record = storage.merges.get(store_id, merge_id)
    primary_id = record["primary_id"]
    if record["state"] == "pending":
        customers = storage.customers
        for merged_id in record["merged_ids"]:
            # A manual merge claimed its records (a claim released as stale while the merge
            # was slow leaves the record live and unclaimed); a guest merge's guest is live.
            # A record that stopped being live meanwhile (deleted at the shop) is left as it is.
            claim = ({"$or": [{"merge_claim": merge_id},
                              {"merge_claim": {"$exists": False}}]}
                     if record["kind"] == "manual" else {})
            if not customers.retire_merged(merged_id, claim, primary_id, merge_id, now):
                log.warning("a merged record was no longer live: left as it is",
                            extra={"merge_id": merge_id, "customer_id": merged_id})
                continue
            moved = move(storage, merge_id, store_id, merged_id, primary_id)
            log.info("merged a customer record",
                     extra={"merge_id": merge_id, "moved": {k: len(v) for k, v in moved.items()}})
        storage.merges.move_state(merge_id, ["pending"], "done", {"finished_at": now})
    marker = "pending_merge" if record["kind"] == "guest" else "pending_merge_id"
    value = record["merged_ids"][0] if record["kind"] == "guest" else merge_id
    storage.customers.clear_merge_marker(primary_id, marker, value)


def live_customer_id(storage: CustomerSyncStorage, store_id: str, doc: dict) -> str:
    """The record that stands for `doc` now: itself, or the primary it was merged into."""
    for _ in range(_MAX_HOPS):
        if doc.get("status") != "merged" or not doc.get("merged_into"):
            break
        primary = storage.customers.get(store_id, doc["merged_into"])
        if primary is None:
            break
        doc = primary
    return doc["_id"]
