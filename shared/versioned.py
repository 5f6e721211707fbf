"""Documents changed by compare-and-set on a `version` field, carrying the events they owe.

MongoDB here has no multi-document transactions, so every change is one document's atomic
update: read it, decide, and write only if nobody changed it since (else read again). The
events a change owes go in the same write (the outbox), so they cannot be separated.
"""
from __future__ import annotations

from typing import Any, Iterable

from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError

from shared.events import Event
from shared.outbox import OUTBOX_FIELD, push_events


class VersionedRepository:
    """Insert-or-compare-and-set over documents that carry an outbox."""

    def __init__(self, collection: Collection) -> None:
        self.collection = collection

    def insert(self, doc: dict, events: Iterable[Event]) -> bool:
        """Insert a new document with the events it owes; False if one with its key exists."""
        pushed = push_events(events)
        doc = {**doc, "version": 1, OUTBOX_FIELD: pushed.get(OUTBOX_FIELD, {}).get("$each", [])}
        try:
            self.collection.insert_one(doc)
            return True
        except DuplicateKeyError:
            return False

    def update(self, doc_id: Any, version: int, fields: dict, events: Iterable[Event] = (),
               unset: Iterable[str] = ()) -> bool:
        """Apply a change if nobody changed the document since `version` was read."""
        update: dict = {"$set": fields, "$inc": {"version": 1}}
        pushed = push_events(events)
        if pushed:
            update["$push"] = pushed
        unset = list(unset)
        if unset:
            update["$unset"] = {name: "" for name in unset}
        result = self.collection.update_one({"_id": doc_id, "version": version}, update)
        return result.modified_count == 1


