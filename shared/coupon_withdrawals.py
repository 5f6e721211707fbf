"""Coupons taken back from the shop after the person they were made for is erased.

A reward or a message's coupon is restricted to its customer's email at the shop, so an
erasure that left it there would leave the person's address behind. Each service that made
coupons (loyalty, notifications) records, in the erasure's own handling, one withdrawal per
unused coupon: the store, the code and the meta that marks the coupon as its own, nothing
about the person. A periodic step then asks customer_sync to delete each (it deletes only a
coupon carrying that meta, and leaves one an order used, which the shop's order keeps
anyway), retrying with a doubling wait while the shop or customer_sync is away. A withdrawal
is gone once the shop answered; the step's counts say how many still wait.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Callable

from pymongo import ASCENDING, ReturnDocument
from pymongo.collection import Collection

from shared.errors import NotFound, Refused, ValidationError

log = logging.getLogger(__name__)

# The shop or customer_sync will never do it (the store is gone, the code is not one it takes):
# retrying cannot help, so the withdrawal ends and says so in the log.
PERMANENT_FAILURES = (NotFound, Refused, ValidationError)

DeleteCoupon = Callable[[str, str, dict], dict]  # (store_id, code, meta) -> customer_sync's answer


@dataclass(frozen=True)
class WithdrawalPolicy:
    """Waits between tries: doubling from `retry_seconds` up to `retry_max_seconds`."""

    retry_seconds: float = 30.0
    retry_max_seconds: float = 3600.0

    def wait(self, attempts: int) -> timedelta:
        seconds = self.retry_seconds * 2 ** min(max(attempts - 1, 0), 30)
        return timedelta(seconds=min(seconds, self.retry_max_seconds))


class CouponWithdrawals:
    """The coupons still to delete at the shop, one document per store and code."""

    def __init__(self, collection: Collection) -> None:
        self.collection = collection

    def ensure_indexes(self) -> None:
        self.collection.create_index([("next_attempt_at", ASCENDING)])

    @staticmethod
    def key(store_id: str, code: str) -> str:
        return f"{store_id}:{code.lower()}"

    def add(self, store_id: str, code: str, meta: dict[str, str], not_before: datetime,
            now: datetime) -> None:
        """Owe the coupon's deletion from `not_before` (a coupon call that may still be running
        is waited for); asked twice, owed once."""
        self.collection.update_one(
            {"_id": self.key(store_id, code)},
            {"$setOnInsert": {"store_id": store_id, "code": code.lower(), "meta": dict(meta),
                              "created_at": now, "attempts": 0, "next_attempt_at": not_before,
                              "last_error": None}},
            upsert=True)

    def waiting(self, store_id: str | None = None) -> int:
        return self.collection.count_documents({} if store_id is None else {"store_id": store_id})

    def run_due(self, delete: DeleteCoupon, now: datetime, policy: WithdrawalPolicy,
                limit: int = 100) -> dict[str, int]:
        """Ask the shop to delete every withdrawal due by `now` (at most `limit`). Each is
        claimed first by moving its next attempt on, so a worker that dies mid-call is retried
        after the wait and two workers never ask at once."""
        counts = {"withdrawn": 0, "kept_used": 0, "absent": 0, "given_up": 0, "retrying": 0,
                  "waiting": 0}
        for _ in range(limit):
            claimed = self.collection.find_one_and_update(
                {"next_attempt_at": {"$lte": now}},
                {"$inc": {"attempts": 1},
                 "$set": {"next_attempt_at": now + policy.wait(1)}},  # the call's lease
                sort=[("next_attempt_at", ASCENDING)], return_document=ReturnDocument.AFTER)
            if claimed is None:
                break
            counts[self._attempt(claimed, delete, now + policy.wait(claimed["attempts"]))] += 1
        counts["waiting"] = self.waiting()
        return counts

    def _attempt(self, withdrawal: dict, delete: DeleteCoupon, next_attempt_at: datetime) -> str:
        store_id, code = withdrawal["store_id"], withdrawal["code"]
        try:
            answer = delete(store_id, code, withdrawal["meta"])
        except PERMANENT_FAILURES as exc:
            log.warning("an erased person's coupon cannot be withdrawn from the shop: %s: %s",
                        type(exc).__name__, exc, extra={"store_id": store_id})
            self.collection.delete_one({"_id": withdrawal["_id"]})
            return "given_up"
        except Exception as exc:  # the shop or customer_sync is away: the next attempt retries
            self.collection.update_one(
                {"_id": withdrawal["_id"]},
                {"$set": {"last_error": f"{type(exc).__name__}: {exc}"[:500],
                          "next_attempt_at": next_attempt_at}})
            return "retrying"
        self.collection.delete_one({"_id": withdrawal["_id"]})
        if answer.get("deleted"):
            return "withdrawn"
        return "kept_used" if int(answer.get("usage_count") or 0) > 0 else "absent"
