"""What every data-owning service does with `gdpr.erasure_requested` besides erasing its own
data: drop its parked messages about the person, and confirm with counts, exactly once in
effect.

The confirmation is owed in the same write as the service's erasure receipt, so it is
published however the process stops; a request asked again (the gdpr service retries when it
has not heard back) is answered again with the counts first recorded.
"""
from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Callable, Iterable

from pymongo.collection import Collection

from shared.events import Event, build_event
from shared.outbox import push_events
from shared.times import utcnow

_NAMESPACE = uuid.UUID("5d1c8b0e-4f4e-4c5a-9e61-7f0f3b8f2d11")

# Drops the service's parked messages a predicate over the message body selects; answers how
# many it dropped.
DropParked = Callable[[Callable[[dict], bool]], int]


class ErasureMarkers:
    """A repository holding one document a customer, which an erasure turns into a marker: every
    field but its key and the marker itself goes, and a marker is made where nothing was held,
    so a late event cannot bring the person back. `held_flag` names the marker's field saying
    whether anything was held; `versioned` documents (compare-and-set) get a new version."""

    collection: Collection
    held_flag = "had_record"
    versioned = False

    @staticmethod
    def key(store_id: str, customer_id: str) -> str:
        return f"{store_id}:{customer_id}"

    def stored(self, store_id: str, customer_id: str) -> dict | None:
        """The whole document, owed events too: what an erasure must clear."""
        return self.collection.find_one({"_id": self.key(store_id, customer_id)})

    def mark_erased(self, store_id: str, customer_id: str, held: dict | None,
                    erased_at: datetime, request_id: str) -> None:
        """`held` is the document as stored (None where there is none)."""
        keeps = {"_id", "store_id", "customer_id", "status", "erased_at", "erasure_request_id",
                 self.held_flag} | ({"version"} if self.versioned else set())
        update: dict = {"$set": {"status": "erased", "erased_at": erased_at,
                                 "erasure_request_id": request_id,
                                 self.held_flag: held is not None},
                        "$setOnInsert": {"store_id": store_id, "customer_id": customer_id}}
        if self.versioned:
            update["$inc"] = {"version": 1}
        unset = {name: "" for name in (held or {}) if name not in keeps}
        if unset:
            update["$unset"] = unset
        self.collection.update_one({"_id": self.key(store_id, customer_id)}, update, upsert=True)

    def count_erased(self, store_id: str, customer_ids: list[str]) -> int:
        """How many of the customers held something that is now an erasure marker."""
        return self.collection.count_documents({"store_id": store_id,
                                                "customer_id": {"$in": customer_ids},
                                                "status": "erased", self.held_flag: True})


class ErasureReceipts:
    """One receipt per erasure request: the counts, and the confirmation it owes."""

    def __init__(self, collection: Collection) -> None:
        self.collection = collection

    @staticmethod
    def key(store_id: str, request_id: str) -> str:
        return f"{store_id}:{request_id}"

    def get(self, store_id: str, request_id: str) -> dict | None:
        return self.collection.find_one({"_id": self.key(store_id, request_id)})

    def record(self, store_id: str, request_id: str, counts: dict, events: Iterable[Event]) -> str:
        """Keep the first counts recorded for the request; owe the events (again, if asked
        again)."""
        key = self.key(store_id, request_id)
        self.collection.update_one(
            {"_id": key},
            {"$setOnInsert": {"store_id": store_id, "request_id": request_id, "counts": counts,
                              "recorded_at": utcnow()},
             "$push": push_events(events)},
            upsert=True)
        return key


def mentions(body: object, store_id: str, customer_ids: Iterable[str], email: str | None) -> bool:
    """Whether a parked message's body is about the person: their store and one of their ids
    in its data, or their email anywhere in it."""
    if not isinstance(body, dict):
        return False
    if email and email.strip().lower() in json.dumps(body, default=str).lower():
        return True
    if body.get("store_id") != store_id:
        return False
    data = body.get("data") if isinstance(body.get("data"), dict) else {}
    ids = set(customer_ids)
    return any(data.get(name) in ids for name in ("customer_id", "merged_customer_id"))


def confirm_erasure(service: str, receipts: ErasureReceipts, request: Event,
                    erase: Callable[[], dict], drop_parked: DropParked) -> str:
    """Erase (unless this request was already answered), drop parked messages about the
    person, and owe `gdpr.erasure_completed`. Answers the receipt's id (for the outbox relay).
    `erase` must be idempotent: a crash before the receipt is written runs it again."""
    store_id, data = request.store_id, request.data
    request_id, customer_ids = data["request_id"], list(data["customer_ids"])
    receipt = receipts.get(store_id, request_id)
    if receipt is not None:
        counts = receipt["counts"]
    else:
        counts = dict(erase())
        counts["parked_messages"] = drop_parked(
            lambda body: mentions(body, store_id, customer_ids, data.get("email")))
    event_id = str(uuid.uuid5(_NAMESPACE, f"{store_id}:{request_id}:{service}"))
    confirmation = build_event(
        "gdpr.erasure_completed", store_id=store_id, event_id=event_id,
        correlation_id=request.correlation_id, causation_id=request.event_id,
        data={"request_id": request_id, "service": service, "customer_ids": customer_ids,
              "counts": counts})
    return receipts.record(store_id, request_id, counts, [confirmation])
