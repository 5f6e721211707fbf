"""gdpr's storage: requests (each with its append-only audit trail and the events it owes),
consent records (per customer: the state of each purpose and its full history), and the
assembled exports."""
from __future__ import annotations

from datetime import datetime

from pymongo import ASCENDING, ReturnDocument
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from shared.events import Event
from shared.merge_receipts import MergeReceipts
from shared.outbox import push_events


class RequestRepository:
    def __init__(self, collection: Collection) -> None:
        self.collection = collection

    def ensure_indexes(self) -> None:
        self.collection.create_index([("store_id", ASCENDING), ("state", ASCENDING),
                                      ("due_at", ASCENDING)])
        self.collection.create_index([("state", ASCENDING), ("next_attempt_at", ASCENDING)])

    def insert(self, request: dict) -> None:
        self.collection.insert_one(request)

    def get(self, request_id: str) -> dict | None:
        return self.collection.find_one({"_id": request_id}, {"outbox": 0})

    def step(self, request_id: str, expected_state: str | None, fields: dict, audit: list[dict],
             events: list[Event] = ()) -> dict | None:
        """One atomic step: new fields, audit entries appended, events owed, only if the
        request is still in `expected_state`. Answers the request after, or None."""
        condition: dict = {"_id": request_id}
        if expected_state is not None:
            condition["state"] = expected_state
        update: dict = {"$set": fields}
        push = dict(push_events(events))
        if audit:
            push["audit"] = {"$each": audit}
        if push:
            update["$push"] = push
        return self.collection.find_one_and_update(condition, update, projection={"outbox": 0},
                                                   return_document=ReturnDocument.AFTER)

    def claim_due(self, now: datetime, lease_until: datetime) -> dict | None:
        """An in-progress request whose next attempt is due, leased to this processor so two
        instances do not work on the same request at once."""
        return self.collection.find_one_and_update(
            {"state": "in_progress", "next_attempt_at": {"$lte": now},
             "$or": [{"lease_until": None}, {"lease_until": {"$lt": now}}]},
            {"$set": {"lease_until": lease_until}}, sort=[("next_attempt_at", ASCENDING)],
            projection={"outbox": 0}, return_document=ReturnDocument.AFTER)


class ConsentRepository:
    """One document per customer: the current state of each purpose and every change."""

    def __init__(self, collection: Collection) -> None:
        self.collection = collection

    @staticmethod
    def key(store_id: str, customer_id: str) -> str:
        return f"{store_id}:{customer_id}"

    def get(self, store_id: str, customer_id: str) -> dict | None:
        return self.collection.find_one({"_id": self.key(store_id, customer_id)}, {"outbox": 0})

    def record(self, store_id: str, customer_id: str, purpose: str, entry: dict,
               events: list[Event]) -> bool:
        """Add a change to the history; it becomes the current state unless a newer one is
        held (changes can arrive late). Answers whether the current state changed."""
        key = self.key(store_id, customer_id)
        at = entry["at"]
        try:
            self.collection.insert_one({"_id": key, "store_id": store_id,
                                        "customer_id": customer_id, "purposes": {},
                                        "history": [], "outbox": []})
        except DuplicateKeyError:
            pass
        # The history is appended whatever the order; the current state only moves forward.
        self.collection.update_one({"_id": key, "history.change_id": {"$ne": entry["change_id"]}},
                                   {"$push": {"history": entry}})
        update: dict = {"$set": {f"purposes.{purpose}": {k: entry[k] for k in
                                                         ("granted", "at", "source", "actor",
                                                          "pending") if k in entry}}}
        pushed = push_events(events)
        if pushed:
            update["$push"] = pushed
        result = self.collection.update_one(
            {"_id": key, "$or": [{f"purposes.{purpose}": {"$exists": False}},
                                 {f"purposes.{purpose}.at": {"$lt": at}}]}, update)
        return bool(result.modified_count)


    def restore(self, store_id: str, customer_id: str, purpose: str, expected: dict,
                state: dict | None, entry: dict, events: list[Event]) -> bool:
        """The purpose goes back to `state` (None: no record of it) only while it still holds
        `expected` (its actor and time), with `entry` added to the history: a change made
        since wins. Answers whether it went back."""
        update: dict = {"$push": {"history": entry, **push_events(events)}}
        if state is None:
            update["$unset"] = {f"purposes.{purpose}": ""}
        else:
            update["$set"] = {f"purposes.{purpose}": state}
        return bool(self.collection.update_one(
            {"_id": self.key(store_id, customer_id),
             f"purposes.{purpose}.actor": expected.get("actor"),
             f"purposes.{purpose}.at": expected.get("at"),
             "history.change_id": {"$ne": entry["change_id"]}}, update).modified_count)


class GdprStorage:
    def __init__(self, database: Database) -> None:
        self.database = database
        self.requests = RequestRepository(database["requests"])
        self.consents = ConsentRepository(database["consents"])
        self.exports = database["exports"]
        self.merges = MergeReceipts(database["merges"])

    def ensure_indexes(self) -> None:
        self.requests.ensure_indexes()
        self.merges.ensure_indexes()

    def outbox_collections(self) -> list[Collection]:
        return [self.requests.collection, self.consents.collection]
