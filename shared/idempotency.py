"""Which events a consumer has applied: one record per handler and event id, claimed first.

A handler claims an event before it runs, so two copies of one event delivered at once (a
redelivery racing the original) cannot both be applied: the second finds the claim and is
retried later, when it sees the event done. A claim left by a crashed worker expires after
`lease_seconds` and can then be taken over.
"""
from __future__ import annotations

import enum
import uuid
from datetime import timedelta, timezone

from pymongo import ASCENDING
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError
from shared.times import utcnow

RETENTION_SECONDS = 90 * 24 * 3600


class Claim(enum.Enum):
    CLAIMED = "claimed"  # this worker may apply the event
    DONE = "done"  # already applied: acknowledge and skip
    BUSY = "busy"  # another worker holds the claim: try again later


class ProcessedEvents:
    """Claims and completion records in the consumer's own database."""

    def __init__(self, database: Database, collection: str = "processed_events",
                 lease_seconds: float = 300.0) -> None:
        self._collection = database[collection]
        self._lease = timedelta(seconds=lease_seconds)

    def ensure_indexes(self) -> None:
        self._collection.create_index(
            [("processed_at", ASCENDING)], expireAfterSeconds=RETENTION_SECONDS
        )

    @staticmethod
    def _key(handler: str, event_id: str) -> str:
        return f"{handler}:{event_id}"

    def claim(self, handler: str, event_id: str, event_type: str) -> tuple[Claim, str | None]:
        """Try to take the event; answers the outcome and, when claimed, the owner token that
        `complete` and `release` need (so a late worker cannot free someone else's claim)."""
        key = self._key(handler, event_id)
        token = uuid.uuid4().hex
        for _ in range(3):
            now = utcnow()
            try:
                self._collection.insert_one({"_id": key, "event_type": event_type, "done": False,
                                             "claimed_at": now, "owner": token})
                return Claim.CLAIMED, token
            except DuplicateKeyError:
                pass
            existing = self._collection.find_one({"_id": key})
            if existing is None:  # released meanwhile: try again
                continue
            if existing.get("done"):
                return Claim.DONE, None
            claimed_at = existing.get("claimed_at")
            if claimed_at is not None and claimed_at.tzinfo is None:
                claimed_at = claimed_at.replace(tzinfo=timezone.utc)
            if claimed_at is None or claimed_at < now - self._lease:
                taken = self._collection.update_one(
                    {"_id": key, "done": False, "owner": existing.get("owner")},
                    {"$set": {"claimed_at": now, "owner": token}},
                )
                if taken.modified_count == 1:
                    return Claim.CLAIMED, token
            return Claim.BUSY, None
        return Claim.BUSY, None

    def complete(self, handler: str, event_id: str, token: str) -> None:
        self._collection.update_one(
            {"_id": self._key(handler, event_id), "owner": token},
            {"$set": {"done": True, "processed_at": utcnow()},
             "$unset": {"claimed_at": "", "owner": ""}},
        )

    def release(self, handler: str, event_id: str, token: str) -> None:
        """Give a claim back after a failure, so the retry can claim it."""
        self._collection.delete_one({"_id": self._key(handler, event_id), "done": False,
                                     "owner": token})
