"""What a data owner moved for each merge of customer records (docs/merging-owners.md).

One receipt per (merge, merged record) in the owner's own database, written before anything
moves: a redelivered merge finds it and changes nothing, an unmerge reads what to hand back,
and an unmerge that arrives before its merge leaves one that makes the late merge a no-op.
"""
from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Iterable

from pymongo import ASCENDING
from pymongo.collection import Collection

# A receipt's life: its slice is being moved, it moved, or it was handed back (or the unmerge
# came first, and nothing is to move).
MOVING, MERGED, UNMERGED = "moving", "merged", "unmerged"

# What a receipt keeps after an erasure of either record: its keys, state and times, which a
# redelivered merge or unmerge needs to change nothing. Everything else is what moved.
KEPT_FIELDS = frozenset({"_id", "store_id", "merge_key", "merged_id", "primary_id", "state",
                         "kind", "before_merge", "forgotten", "started_at",
                         f"{MOVING}_at", f"{MERGED}_at", f"{UNMERGED}_at"})

log = logging.getLogger(__name__)


def merge_key(merge_id: str | None, primary_id: str) -> str:
    """Merges recorded before merge records existed carry no id: the primary names them."""
    return merge_id if merge_id else f"legacy:{primary_id}"


class MergeReceipts:
    def __init__(self, collection: Collection) -> None:
        self.collection = collection

    def ensure_indexes(self) -> None:
        self.collection.create_index([("store_id", ASCENDING), ("primary_id", ASCENDING)])
        self.collection.create_index([("store_id", ASCENDING), ("merged_id", ASCENDING)])

    @staticmethod
    def key(store_id: str, merge_key: str, merged_id: str) -> str:
        return f"{store_id}:{merge_key}:{merged_id}"

    def get(self, store_id: str, merge_key: str, merged_id: str) -> dict | None:
        return self.collection.find_one({"_id": self.key(store_id, merge_key, merged_id)})

    def of_unmerge(self, store_id: str, merge_id: str, primary_id: str,
                   restored_id: str) -> dict | None:
        """The receipt an unmerge hands back: by its merge id, or, for a merge made before
        merge records existed, by the two records."""
        return self.get(store_id, merge_id, restored_id) or \
            self.get(store_id, merge_key(None, primary_id), restored_id)

    def start(self, store_id: str, merge_key: str, merged_id: str, fields: dict) -> dict:
        """The receipt as first written: one already there (a redelivery, or the marker of an
        unmerge that came first) wins."""
        _id = self.key(store_id, merge_key, merged_id)
        self.collection.update_one(
            {"_id": _id},
            {"$setOnInsert": {"store_id": store_id, "merge_key": merge_key,
                              "merged_id": merged_id, **fields}}, upsert=True)
        return self.collection.find_one({"_id": _id})

    def unmerged_first(self, store_id: str, merge_id: str, primary_id: str, restored_id: str,
                       at: datetime) -> None:
        """An unmerge came before its merge: the merge, when it comes, moves nothing."""
        self.start(store_id, merge_id, restored_id, {
            "primary_id": primary_id, "state": UNMERGED, "unmerged_at": at,
            "before_merge": True})

    def to_hand_back(self, store_id: str, unmerge: dict, at: datetime) -> dict | None:
        """The receipt an unmerge (`customer.unmerged`'s data) hands back, or None when there
        is nothing to: handed back already, or the merge has not come (then a marker is left
        that makes the late merge move nothing)."""
        merge_id, primary_id = unmerge["merge_id"], unmerge["customer_id"]
        restored_id = unmerge["restored_customer_id"]
        receipt = self.of_unmerge(store_id, merge_id, primary_id, restored_id)
        if receipt is None:
            self.unmerged_first(store_id, merge_id, primary_id, restored_id, at)
            return None
        if receipt["state"] == UNMERGED:
            return None
        if receipt.get("forgotten"):
            log.info("unmerge %s of customer %s hands back nothing: an erasure forgot what the "
                     "merge moved", receipt["merge_key"], restored_id,
                     extra={"store_id": store_id})
            return None
        return receipt

    def forget(self, store_id: str, customer_ids: Iterable[str]) -> int:
        """An erasure of a merge's primary or merged record blanks what the merge moved from
        its receipts (tags, consent states, order and send ids): only what keeps a redelivered
        merge or unmerge a no-op stays. Repeatable; answers how many receipts it blanked."""
        ids = sorted(set(customer_ids))
        if not ids:
            return 0
        found = self.collection.find({"store_id": store_id, "$or": [
            {"primary_id": {"$in": ids}}, {"merged_id": {"$in": ids}}]})
        blanked = 0
        for receipt in found:
            blanks = {name: _blank(value) for name, value in receipt.items()
                      if name not in KEPT_FIELDS}
            self.collection.update_one({"_id": receipt["_id"]},
                                       {"$set": {**blanks, "forgotten": True}})
            blanked += 1
        return blanked

    def add(self, doc_id: str, lists: dict[str, list]) -> None:
        """Items joined to the receipt's lists (a redone step adds what it did this time)."""
        self.collection.update_one({"_id": doc_id}, {"$addToSet": {
            name: {"$each": values} for name, values in lists.items()}})

    def set_state(self, doc_id: str, state: str, at: datetime) -> None:
        self.collection.update_one({"_id": doc_id}, {"$set": {"state": state, f"{state}_at": at}})


def _blank(value: Any) -> Any:
    """An empty value of the same shape, so a step reading the receipt finds nothing to move."""
    if isinstance(value, list):
        return []
    if isinstance(value, dict):
        return {}
    return None
