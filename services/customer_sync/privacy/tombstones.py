"""Tombstones: how customer_sync recognises an erased person without keeping who they were.

A tombstone is a keyed hash (HMAC-SHA256) of the person's normalised email or of the shop's
customer id, mapped to the erased customer's id. A later webhook, backfill or reconciliation
carrying that email or id is recognised and applied without personal data. A plain hash of an
email could be reversed by hashing a list of addresses; the key makes that impossible without
it. The key is per store, random, and kept in the store's settings document beside the webhook
secret (same protection), but apart from it, so re-registering a store with a rotated webhook
secret does not silently orphan every tombstone.

A tombstone stops the erased past, not the person's future. The shop's customer id names the
erased account itself (WooCommerce never reuses one), so it holds whatever the account's times.
An email holds for records the shop created (or, lacking a creation time, last modified) at or
before the latest erasure of that email: a replayed webhook, a backfill, an old order completed
later. A record the shop created after it is a new account or a new order of someone who came
back, and is recorded as any other (`erasure.tombstone_holds`).
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime
from typing import Iterable

from pymongo import ASCENDING
from pymongo.collection import Collection

from services.customer_sync.core.normalise import email_key

EMAIL, WOO_CUSTOMER = "email", "woo_customer"
_KEY_FIELD = "tombstone_key"


def tombstone_digest(key: bytes, kind: str, value: str) -> str:
    """HMAC-SHA256 of a kind-prefixed value: an email and a customer id never collide."""
    return hmac.new(key, f"{kind}\x00{value}".encode("utf-8"), hashlib.sha256).hexdigest()


def tombstone_values(emails: Iterable[str | None] = (),
                     woo_customer_ids: Iterable[int | None] = ()) -> list[tuple[str, str]]:
    """(kind, normalised value) pairs for the given identifiers, blanks left out."""
    values = [(EMAIL, key) for key in {email_key(e) for e in emails} if key]
    values += [(WOO_CUSTOMER, str(int(woo_id))) for woo_id in set(woo_customer_ids)
               if woo_id is not None]
    return sorted(values)


class TombstoneKeys:
    """Each store's tombstone key, created at its first erasure (never changed afterwards, so
    it is cached for good once read)."""

    def __init__(self, stores: Collection) -> None:
        self.stores = stores
        self._cache: dict[str, bytes] = {}

    def get(self, store_id: str, create: bool = False) -> bytes | None:
        """The store's key; None when the store is unknown, or has none and `create` is False
        (then it has no tombstones either)."""
        cached = self._cache.get(store_id)
        if cached is not None:
            return cached
        doc = self.stores.find_one({"_id": store_id}, {_KEY_FIELD: 1})
        if doc is None:
            return None
        if not doc.get(_KEY_FIELD):
            if not create:
                return None
            # Conditional: two instances creating at once keep the first key written.
            self.stores.update_one({"_id": store_id, _KEY_FIELD: {"$exists": False}},
                                   {"$set": {_KEY_FIELD: secrets.token_hex(32)}})
            doc = self.stores.find_one({"_id": store_id}, {_KEY_FIELD: 1})
        key = bytes.fromhex(doc[_KEY_FIELD])
        self._cache[store_id] = key
        return key


class TombstoneRepository:
    """`_id` = store, kind and digest: a lookup is one primary-key read."""

    def __init__(self, collection: Collection, keys: TombstoneKeys) -> None:
        self.collection = collection
        self.keys = keys

    def ensure_indexes(self) -> None:
        self.collection.create_index([("store_id", ASCENDING), ("customer_ids", ASCENDING)])

    @staticmethod
    def doc_id(store_id: str, kind: str, digest: str) -> str:
        return f"{store_id}:{kind}:{digest}"

    def record(self, store_id: str, values: list[tuple[str, str]], customer_id: str,
               customer_ids: Iterable[str], source: str, at: datetime) -> int:
        """Keep (or extend) a tombstone per identifier; answers how many identifiers."""
        key = self.keys.get(store_id, create=True)
        if key is None or not values:
            return 0
        ids = sorted(set(customer_ids) | {customer_id})
        for kind, value in values:
            self.collection.update_one(
                {"_id": self.doc_id(store_id, kind, tombstone_digest(key, kind, value))},
                {"$setOnInsert": {"store_id": store_id, "kind": kind, "customer_id": customer_id,
                                  "first_erased_at": at},
                 "$max": {"erased_at": at},  # a later erasure of the same email moves it on
                 "$addToSet": {"customer_ids": {"$each": ids}, "sources": source}},
                upsert=True)
        return len(values)

    def find(self, store_id: str, values: list[tuple[str, str]]) -> dict | None:
        """The first tombstone matching one of the identifiers (the shop's customer id is
        listed before an email, so it wins), or None."""
        found = self.find_all(store_id, values)
        return found[0] if found else None

    def find_all(self, store_id: str, values: list[tuple[str, str]]) -> list[dict]:
        """Every tombstone matching one of the identifiers, the shop's customer id first."""
        if not values:
            return []
        # Created (once per store) rather than read as absent on every apply: the key is then
        # cached for good, and an instance never caches "no tombstones" while another erases.
        key = self.keys.get(store_id, create=True)
        if key is None:
            return []
        ids = {self.doc_id(store_id, kind, tombstone_digest(key, kind, value)): kind
               for kind, value in values}
        found = list(self.collection.find({"_id": {"$in": sorted(ids)}}))  # one round trip
        found.sort(key=lambda doc: ids[doc["_id"]] != WOO_CUSTOMER)
        return found

    def customer_ids(self, store_id: str, emails: Iterable[str | None]) -> set[str]:
        """Every erased customer id an email was tombstoned for."""
        ids: set[str] = set()
        for kind, value in tombstone_values(emails=emails):
            doc = self.find(store_id, [(kind, value)])
            if doc is not None:
                ids.update(doc.get("customer_ids") or [doc["customer_id"]])
        return ids
