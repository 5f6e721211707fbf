"""customer_sync's storage: narrow repositories over its own MongoDB database.

Every collection is keyed by `store_id` first. Changes are single-document atomic updates
(no multi-document transactions): orders and customers carry a `version` that each update
checks (optimistic concurrency), and the events a change owes travel in the same write.
"""
from __future__ import annotations

import hashlib
import re
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterator

from pymongo import ASCENDING, DESCENDING, ReturnDocument, WriteConcern
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from services.customer_sync.api_keys import ApiKeys
from services.customer_sync.console_sessions import ConsoleSessions
from services.customer_sync.core.duplicates import MATCH_KINDS, match_keys
from services.customer_sync.crm.notes import NoteRepository
from services.customer_sync.crm.reminders import ReminderRepository
from services.customer_sync.crm.timeline import TimelineOwing, TimelineRepository
from services.customer_sync.privacy.tombstones import TombstoneKeys, TombstoneRepository
from shared.erasure import ErasureReceipts
from shared.outbox import OUTBOX_FIELD
from shared.versioned import VersionedRepository
from shared.times import as_utc, utcnow


def new_customer_id() -> str:
    return uuid.uuid4().hex


# A customer without a creation date sorts after every dated one.
_LAST = datetime.max.replace(tzinfo=timezone.utc)


# -- stores ----------------------------------------------------------------------------------
# Where a store's company matching option lives on its document (crm/company_matching.py).
COMPANY_MATCHING_FIELD = "company_matching"

@dataclass(frozen=True)
class Store:
    store_id: str
    shop_url: str
    webhook_secret: str = field(repr=False)
    consumer_key: str = field(repr=False)
    consumer_secret: str = field(repr=False)
    reconcile_interval_minutes: int = 10
    # ISO 3166 alpha-2: where the shop sells, for phone numbers written without a calling code.
    country: str | None = None
    # Customers join companies by their email domain (crm/company_matching.py): set by its own
    # RPC, never by a registration, so `save` leaves it as it is.
    match_email_domain: bool = False

    def public(self) -> dict:
        """What may leave the service: never the secrets."""
        return {
            "store_id": self.store_id,
            "shop_url": self.shop_url,
            "reconcile_interval_minutes": self.reconcile_interval_minutes,
            "country": self.country,
        }


class StoreRepository:
    # The webhook door reads its store on every request; settings change rarely, so a few
    # seconds' cache is fine (a change made through this process applies at once).
    CACHE_SECONDS = 5.0

    def __init__(self, collection: Collection, clock: Callable[[], datetime] = utcnow) -> None:
        self.collection = collection
        self.clock = clock
        self._cache: dict[str, tuple[float, Store | None]] = {}

    def ensure_indexes(self) -> None:
        self.collection.create_index([("next_reconcile_at", ASCENDING)])

    def save(self, store: Store) -> bool:
        """Create or replace a store's settings; True when it was new."""
        now = self.clock()
        self._cache.pop(store.store_id, None)
        result = self.collection.update_one(
            {"_id": store.store_id},
            {"$set": {k: v for k, v in asdict(store).items()
                      if k not in ("store_id", "match_email_domain")} | {"updated_at": now},
             "$setOnInsert": {"created_at": now, "next_reconcile_at": now}},
            upsert=True,
        )
        return result.upserted_id is not None

    def get(self, store_id: str) -> Store | None:
        doc = self.collection.find_one({"_id": store_id})
        return _store(doc) if doc else None

    def get_cached(self, store_id: str) -> Store | None:
        now = time.monotonic()
        hit = self._cache.get(store_id)
        if hit is not None and now - hit[0] < self.CACHE_SECONDS:
            return hit[1]
        store = self.get(store_id)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[store_id] = (now, store)
        return store

    def all(self) -> list[Store]:
        return [_store(doc) for doc in self.collection.find().sort("_id", ASCENDING)]

    def forget_cached(self, store_id: str) -> None:
        """A setting changed through this process: the next read sees it at once."""
        self._cache.pop(store_id, None)

    # -- re-keying a store's customers after its country changed ---------------------------
    # The request lives on the store's document with how far the walk through its customers
    # has got, so any instance may carry it on, and a crash resumes where it stopped.
    def request_rekey(self, store_id: str) -> None:
        self.collection.update_one({"_id": store_id},
                                   {"$set": {"rekey": {"requested_at": self.clock(),
                                                       "after_id": None}}})

    def pending_rekey(self) -> dict | None:
        """One store whose customers' match keys are to be computed again, with the request
        ({"_id", "rekey": {"requested_at", "after_id"}}), or None."""
        return self.collection.find_one({"rekey": {"$exists": True}}, {"rekey": 1})

    def advance_rekey(self, store_id: str, requested_at: datetime, after_id: str | None) -> None:
        """Record how far the walk got, or end the request (`after_id` None), unless the
        request was made again meanwhile (then the walk starts over)."""
        change = ({"$set": {"rekey.after_id": after_id}} if after_id is not None
                  else {"$unset": {"rekey": ""}})
        self.collection.update_one({"_id": store_id, "rekey.requested_at": requested_at}, change)

    def status(self, store_id: str) -> dict | None:
        doc = self.collection.find_one(
            {"_id": store_id},
            {"webhooks": 1, "last_reconciled_at": 1, "next_reconcile_at": 1, "reconcile_error": 1,
             "last_reconcile_run": 1, "webhook_problems": 1, "last_full_customer_scan_at": 1},
        )
        return doc

    def due_for_reconcile(self, now: datetime) -> list[str]:
        return [d["_id"] for d in self.collection.find({"next_reconcile_at": {"$lte": now}}, {"_id": 1})]

    def claim_reconcile(self, store_id: str, now: datetime, lease: timedelta) -> dict | None:
        """Take the store's reconciliation for one run, so two instances do not both run it."""
        return self.collection.find_one_and_update(
            {"_id": store_id, "next_reconcile_at": {"$lte": now}},
            {"$set": {"next_reconcile_at": now + lease}},
            return_document=ReturnDocument.BEFORE,
        )

    def record_reconcile(self, store_id: str, fields: dict) -> None:
        self.collection.update_one({"_id": store_id}, {"$set": fields})


def _store(doc: dict) -> Store:
    return Store(
        store_id=doc["_id"],
        shop_url=doc["shop_url"],
        webhook_secret=doc["webhook_secret"],
        consumer_key=doc["consumer_key"],
        consumer_secret=doc["consumer_secret"],
        reconcile_interval_minutes=int(doc.get("reconcile_interval_minutes", 10)),
        country=doc.get("country"),
        match_email_domain=bool((doc.get(COMPANY_MATCHING_FIELD) or {}).get("match_email_domain")),
    )


# -- customers and orders --------------------------------------------------------------------
# The fields a customer's match keys are read from: a write changing none keeps its keys.
_MATCH_KEY_SOURCES = frozenset({"email", "phone", "first_name", "last_name", "billing", "status"})
MATCH_KEYS_FIELD = "match_keys"
# Keys read a round trip by the walk that finds shared ones.
_KEY_WALK_BATCH = 1000


class CustomerRepository(TimelineOwing, VersionedRepository):
    """Customers, each carrying the match keys of its contact fields (core/duplicates.py),
    written with every change of those fields, so duplicates are found by index."""

    def __init__(self, collection: Collection,
                 store_country: Callable[[str], str | None] = lambda store_id: None) -> None:
        """`store_country(store_id)` reads national phone numbers of customers without a
        billing country."""
        super().__init__(collection)
        self.store_country = store_country

    def _keys_of(self, doc: dict) -> dict:
        """Only a live record has keys: one merged, deleted or erased is nobody's duplicate."""
        if doc.get("status") != "active":
            return {}
        return match_keys(doc, self.store_country(doc.get("store_id") or ""))

    def insert(self, doc: dict, events, **kwargs) -> bool:
        return super().insert({**doc, MATCH_KEYS_FIELD: self._keys_of(doc)}, events, **kwargs)

    def update(self, doc_id, version: int, fields: dict, events=(), unset=(),
               read: dict | None = None, **kwargs) -> bool:
        """The change, with the match keys of the document it makes when it touches their
        fields (read at `version`: if that is gone, the compare-and-set fails anyway). `read`
        is the document as the caller read it at `version`, which spares reading it again."""
        unset = list(unset)
        if _MATCH_KEY_SOURCES.intersection([*fields, *unset]) and MATCH_KEYS_FIELD not in fields:
            current = (read if read is not None and read.get("version") == version
                       else self.collection.find_one({"_id": doc_id, "version": version}))
            if current is not None:
                after = {k: v for k, v in {**current, **fields}.items() if k not in unset}
                fields = {**fields, MATCH_KEYS_FIELD: self._keys_of(after)}
        return super().update(doc_id, version, fields, events, unset, **kwargs)

    def add_missing_match_keys(self, after_id: str | None, limit: int = 500
                               ) -> tuple[int, str | None]:
        """Give live customers written before match keys existed their keys, looking at up to
        `limit` records in `_id` order after `after_id` (a pass moves forward through the
        collection, never rescanning it); answers how many were given and the last id looked
        at (None: the pass reached the end)."""
        missing = {MATCH_KEYS_FIELD: {"$exists": False}}
        return self._key_batch(missing, missing, self._keys_of, after_id, limit)

    def rekey_batch(self, store_id: str, country: str | None, after_id: str | None,
                    limit: int = 500) -> tuple[int, str | None]:
        """Compute again the match keys of up to `limit` live customers of the store after
        `after_id` in `_id` order, reading national phone numbers with `country` (the store's,
        read fresh by the caller); answers how many and the last id (None: the end)."""
        return self._key_batch({"store_id": store_id}, {},
                               lambda doc: match_keys(doc, country), after_id, limit)

    def _key_batch(self, select: dict, still: dict, keys_of: Callable[[dict], dict],
                   after_id: str | None, limit: int) -> tuple[int, str | None]:
        """Up to `limit` live customers matching `select` after `after_id` in `_id` order get
        `keys_of(customer)`, where they are unchanged and still match `still`. No new version:
        the contact fields did not change, and a writer that read the document before writes
        keys of its own."""
        query: dict = {**select, "status": "active"}
        if after_id is not None:
            query["_id"] = {"$gt": after_id}
        docs = list(self.collection.find(query, {OUTBOX_FIELD: 0}).sort("_id", ASCENDING)
                    .limit(limit))
        for doc in docs:
            self.collection.update_one({**still, "_id": doc["_id"], "version": doc.get("version")},
                                       {"$set": {MATCH_KEYS_FIELD: keys_of(doc)}})
        return len(docs), (docs[-1]["_id"] if len(docs) == limit else None)

    def retire_merged(self, customer_id: str, claim: dict, into: str, merge_id: str,
                      at: datetime) -> bool:
        """A live record matching `claim` becomes merged into `into` by `merge_id`, losing its
        match keys (a merged record is nobody's duplicate); True when it is so now (this time
        or an earlier one, which keeps its first `merged_at`), False when it was no longer
        live."""
        retired = self.collection.find_one_and_update(
            {"_id": customer_id, "$or": [{"status": "active", **claim},
                                         {"status": "merged", "merge_id": merge_id}]},
            {"$set": {"status": "merged", "merged_into": into, "merge_id": merge_id},
             "$min": {"merged_at": at},
             "$unset": {"merge_claim": "", "guest_email_key": "", MATCH_KEYS_FIELD: ""},
             "$inc": {"version": 1}},
            projection={"_id": 1})
        return retired is not None

    def claim_for_merge(self, customer_id: str, version: int, merge_id: str) -> bool:
        """Claim a live record, as read at `version`, for a merge: no other merge can take it
        while the claim stands. False when it changed, stopped being live or is claimed."""
        return self.collection.update_one(
            {"_id": customer_id, "version": version, "status": "active",
             "merge_claim": {"$exists": False}},
            {"$set": {"merge_claim": merge_id}, "$inc": {"version": 1}}).modified_count == 1

    def release_merge_claims(self, customer_ids: list[str], merge_id: str) -> None:
        """Release what `merge_id` claimed of these records (a claim of another stays)."""
        self.collection.update_many(
            {"_id": {"$in": list(customer_ids)}, "merge_claim": merge_id},
            {"$unset": {"merge_claim": ""}, "$inc": {"version": 1}})

    def clear_merge_marker(self, customer_id: str, marker: str, value: str) -> None:
        """The primary's marker of a merge under way goes once the merge is finished."""
        self.collection.update_one({"_id": customer_id, marker: value},
                                   {"$unset": {marker: ""}, "$inc": {"version": 1}})

    def count_missing_match_keys(self) -> int:
        return self.collection.count_documents(
            {"status": "active", MATCH_KEYS_FIELD: {"$exists": False}})

    def shared_match_keys(self, store_id: str, kind: str, after: str | None
                          ) -> Iterator[tuple[str, int]]:
        """Each key of `kind` that two or more live customers of the store share, in key order
        past `after`, with how many share it. One walk along the kind's index that reads only
        as far as the caller goes on, so a page costs the keys up to its last group, not the
        store."""
        field = f"{MATCH_KEYS_FIELD}.{kind}"
        key_range: dict = {"$type": "string"}
        if after is not None:
            key_range["$gt"] = after
        walk = self.collection.find({"store_id": store_id, "status": "active", field: key_range},
                                    {field: 1}).sort([(field, ASCENDING), ("_id", ASCENDING)])
        current, count = None, 0
        for doc in walk.batch_size(_KEY_WALK_BATCH):
            key = doc[MATCH_KEYS_FIELD][kind]
            if key == current:
                count += 1
                continue
            if count >= 2:
                yield current, count
            current, count = key, 1
        if count >= 2:
            yield current, count

    def sharing_match_key(self, store_id: str, kind: str, key: str, fields: dict, limit: int
                          ) -> list[dict]:
        """Up to `limit` live customers holding the match key, oldest ids first."""
        return list(self.collection.find(
            {"store_id": store_id, "status": "active", f"{MATCH_KEYS_FIELD}.{kind}": key},
            fields).sort("_id", ASCENDING).limit(limit))

    def ensure_indexes(self) -> None:
        c = self.collection
        c.create_index([("store_id", ASCENDING), ("woo_customer_id", ASCENDING)], unique=True,
                       partialFilterExpression={"woo_customer_id": {"$type": "int"}})
        # One guest record per email and store; registered customers match by email too.
        c.create_index([("store_id", ASCENDING), ("guest_email_key", ASCENDING)], unique=True,
                       partialFilterExpression={"guest_email_key": {"$type": "string"}})
        c.create_index([("store_id", ASCENDING), ("email_key", ASCENDING)])
        c.create_index([("store_id", ASCENDING), ("date_created", ASCENDING), ("_id", ASCENDING)])
        # GDPR: merged guests of an erased person, and the shop's own erasures by date.
        c.create_index([("store_id", ASCENDING), ("merged_into", ASCENDING)], sparse=True)
        c.create_index([("store_id", ASCENDING), ("shop_erased_at", ASCENDING)], sparse=True)
        # Possible duplicates: live customers by each kind of match key.
        for kind in MATCH_KINDS:
            c.create_index([("store_id", ASCENDING), (f"{MATCH_KEYS_FIELD}.{kind}", ASCENDING),
                            ("_id", ASCENDING)],
                           name=f"duplicates_by_{kind}",
                           partialFilterExpression={"status": "active",
                                                    f"{MATCH_KEYS_FIELD}.{kind}": {"$type": "string"}})

    def get(self, store_id: str, customer_id: str) -> dict | None:
        return self.collection.find_one({"_id": customer_id, "store_id": store_id}, {OUTBOX_FIELD: 0})

    def states_of(self, customer_ids: list[str]) -> dict[str, dict]:
        """Each held customer's store and status, by id, in one read."""
        if not customer_ids:
            return {}
        return {doc["_id"]: doc for doc in self.collection.find(
            {"_id": {"$in": customer_ids}}, {"store_id": 1, "status": 1})}

    def by_woo_id(self, store_id: str, woo_customer_id: int) -> dict | None:
        return self.collection.find_one({"store_id": store_id, "woo_customer_id": woo_customer_id})

    def by_email(self, store_id: str, key: str) -> dict | None:
        """The live customer with this email, a registered one before a guest."""
        docs = list(self.collection.find(
            {"store_id": store_id, "email_key": key, "status": "active"}, {OUTBOX_FIELD: 0}
        ))
        docs.sort(key=lambda d: (not d.get("registered"), as_utc(d.get("date_created")) or _LAST))
        return docs[0] if docs else None

    def merged_by_email(self, store_id: str, key: str) -> dict | None:
        """A merged record with this email: a late guest order of it goes to its primary."""
        return self.collection.find_one({"store_id": store_id, "email_key": key,
                                         "status": "merged"}, {OUTBOX_FIELD: 0})

    def guest_by_email(self, store_id: str, key: str) -> dict | None:
        return self.collection.find_one({"store_id": store_id, "guest_email_key": key})

    def search(self, store_id: str, filters: dict, after: tuple | None, size: int) -> list[dict]:
        query: dict = {"store_id": store_id}
        query["status"] = filters.get("status", "active")
        if "email" in filters:
            query["email_key"] = filters["email"].strip().lower()
        if "registered" in filters:
            query["registered"] = filters["registered"]
        if "country" in filters:
            query["billing.country"] = filters["country"].upper()
        if "name" in filters:
            pattern = re.compile(re.escape(filters["name"].strip()), re.IGNORECASE)
            query["$or"] = [{"first_name": pattern}, {"last_name": pattern}, {"email": pattern}]
        created: dict = {}
        if "created_after" in filters:
            created["$gte"] = filters["created_after"]
        if "created_before" in filters:
            created["$lt"] = filters["created_before"]
        if created:
            query["date_created"] = created
        if after is not None:
            created_at, last_id = after
            query = {"$and": [query, {"$or": [
                {"date_created": {"$gt": created_at}},
                {"date_created": created_at, "_id": {"$gt": last_id}},
            ]}]}
        cursor = (self.collection.find(query, {OUTBOX_FIELD: 0})
                  .sort([("date_created", ASCENDING), ("_id", ASCENDING)]).limit(size))
        return list(cursor)

    def count(self, store_id: str) -> int:
        return self.collection.count_documents({"store_id": store_id, "status": "active"})


class OrderRepository(TimelineOwing, VersionedRepository):
    def ensure_indexes(self) -> None:
        c = self.collection
        c.create_index([("store_id", ASCENDING), ("customer_id", ASCENDING),
                        ("date_created", DESCENDING)])
        c.create_index([("store_id", ASCENDING), ("date_modified", DESCENDING)])

    @staticmethod
    def key(store_id: str, order_id: str) -> str:
        return f"{store_id}:{order_id}"

    def get(self, store_id: str, order_id: str) -> dict | None:
        return self.collection.find_one({"_id": self.key(store_id, order_id)}, {OUTBOX_FIELD: 0})

    def for_customer(self, store_id: str, customer_id: str, skip: int, size: int) -> list[dict]:
        return list(self.collection.find({"store_id": store_id, "customer_id": customer_id},
                                         {OUTBOX_FIELD: 0})
                    .sort([("date_created", DESCENDING), ("_id", ASCENDING)]).skip(skip).limit(size))

    def counts_by_customer(self, store_id: str, customer_ids: list[str]) -> dict[str, int]:
        """How many orders each of the customers has (those with none are left out)."""
        if not customer_ids:
            return {}
        return {row["_id"]: row["n"] for row in self.collection.aggregate([
            {"$match": {"store_id": store_id, "customer_id": {"$in": customer_ids}}},
            {"$group": {"_id": "$customer_id", "n": {"$sum": 1}}},
        ])}


# -- merges ----------------------------------------------------------------------------------
MERGE_STATES = ("planned", "pending", "done", "unmerging", "unmerged", "abandoned")


class MergeRepository:
    """One record per merge: the records as they were, the field choices, and the ids of what
    moved, so an unmerge can hand each thing back. `state` walks planned (records claimed),
    pending (the primary's write landed: the merge happened), done, unmerging, unmerged; a
    planned record whose primary never took it is abandoned."""

    def __init__(self, collection: Collection) -> None:
        self.collection = collection

    def ensure_indexes(self) -> None:
        self.collection.create_index([("store_id", ASCENDING), ("created_at", DESCENDING),
                                      ("_id", DESCENDING)])
        self.collection.create_index([("store_id", ASCENDING), ("merged_ids", ASCENDING)])
        self.collection.create_index([("store_id", ASCENDING), ("primary_id", ASCENDING)])

    def get(self, store_id: str, merge_id: str) -> dict | None:
        return self.collection.find_one({"_id": merge_id, "store_id": store_id})

    def plan(self, record: dict) -> None:
        """Write (or rewrite, on a retry after a lost race) a merge not yet made."""
        self.collection.replace_one({"_id": record["_id"], "state": {"$in": ["planned", None]}},
                                    {**record, "state": "planned"}, upsert=True)

    def record_guest_merge(self, record: dict) -> None:
        """A guest merge's record, written once (a resumed merge finds it there)."""
        try:
            self.collection.update_one({"_id": record["_id"]}, {"$setOnInsert": record},
                                       upsert=True)
        except DuplicateKeyError:  # two finishers raced to write it
            pass

    def move_state(self, merge_id: str, from_states: list[str], state: str,
                   fields: dict | None = None) -> bool:
        result = self.collection.update_one({"_id": merge_id, "state": {"$in": from_states}},
                                            {"$set": {"state": state, **(fields or {})}})
        return result.modified_count == 1

    def note(self, merge_id: str, fields: dict) -> None:
        """Set fields on the merge's record (what an unmerge did, for its answer)."""
        self.collection.update_one({"_id": merge_id}, {"$set": fields})

    def add_moved(self, merge_id: str, what: str, entries: list[dict],
                  field_: str = "moved") -> None:
        """Remember moved documents ({"id", "from"}) before moving them: a crash between the
        two leaves a note of something not moved, never a move without a note."""
        if entries:
            self.collection.update_one({"_id": merge_id},
                                       {"$addToSet": {f"{field_}.{what}": {"$each": entries}}})

    def page(self, store_id: str, customer_id: str | None, after: tuple | None,
             size: int) -> list[dict]:
        query: dict = {"store_id": store_id, "state": {"$nin": ["planned", "abandoned"]}}
        if customer_id is not None:
            query["$or"] = [{"primary_id": customer_id}, {"merged_ids": customer_id}]
        if after is not None:
            created_at, last_id = after
            query = {"$and": [query, {"$or": [
                {"created_at": {"$lt": created_at}},
                {"created_at": created_at, "_id": {"$lt": last_id}}]}]}
        return list(self.collection.find(query)
                    .sort([("created_at", DESCENDING), ("_id", DESCENDING)]).limit(size))

    def forget(self, store_id: str, customer_ids: list[str]) -> int:
        """An erased person's contact data leaves the merges that recorded it."""
        count = 0
        for doc in self.collection.find({"store_id": store_id, "$or": [
                {"primary_id": {"$in": customer_ids}}, {"merged_ids": {"$in": customer_ids}}]},
                {"_id": 1}):
            self.collection.update_one({"_id": doc["_id"]}, {
                "$set": {"personal_data_erased": True},
                "$unset": {"snapshots": "", "field_changes": ""}})
            count += 1
        return count


def delivery_correlation_id(key: str) -> str:
    """A short, stable id per delivery: its log lines' correlation id, its events' causation,
    and the id an operator names it by in quarantine."""
    return "wh-" + hashlib.sha256(key.encode()).hexdigest()[:24]


# -- the webhook inbox ------------------------------------------------------------------------
class InboxRepository:
    """Deliveries recorded before the webhook is answered; applied afterwards.

    The key is the change, not WooCommerce's delivery id (which is shared by deliveries in the
    same second): store, resource, id, date_modified_gmt and a hash of the content.
    """

    def __init__(self, collection: Collection, retention_days: int = 7,
                 clock: Callable[[], datetime] = utcnow) -> None:
        """`clock` dates receipt, leases, retries, completion and quarantine."""
        self.collection = collection
        self.retention_days = retention_days
        self.clock = clock

    def ensure_indexes(self) -> None:
        self.collection.create_index([("status", ASCENDING), ("received_at", ASCENDING)])
        self.collection.create_index([("done_at", ASCENDING)],
                                     expireAfterSeconds=self.retention_days * 24 * 3600)
        self.collection.create_index([("store_id", ASCENDING), ("status", ASCENDING),
                                      ("quarantined_at", ASCENDING), ("_id", ASCENDING)])
        # Deliveries that failed for good used to expire with the applied ones: keep those
        # still here, as quarantined, so an operator can replay them.
        for doc in self.collection.find({"status": "failed"}, {"_id": 1}):
            self.collection.update_one(
                {"_id": doc["_id"], "status": "failed"},
                {"$set": {"status": "quarantined", "quarantined_at": self.clock(),
                          "quarantine_id": delivery_correlation_id(doc["_id"])},
                 "$unset": {"done_at": ""}})

    def record(self, key: str, delivery: dict) -> bool:
        """Store a delivery; False when this very change was recorded already."""
        try:
            self.collection.insert_one({"_id": key, **delivery, "status": "pending",
                                        "attempts": 0, "received_at": self.clock()})
            return True
        except DuplicateKeyError:
            return False

    def claim(self, key: str, lease: timedelta) -> dict | None:
        now = self.clock()
        return self.collection.find_one_and_update(
            {"_id": key, "$or": [{"status": "pending"},
                                 {"status": "processing", "lease_until": {"$lt": now}}]},
            {"$set": {"status": "processing", "lease_until": now + lease}, "$inc": {"attempts": 1}},
            return_document=ReturnDocument.AFTER,
        )

    def unfinished(self, older_than: datetime, limit: int = 1000) -> list[str]:
        """Deliveries to apply again: pending ones past their retry time, and ones whose worker
        lease ran out (a crash). Two queries on `status`, each served by the status index."""
        now = self.clock()
        pending = self.collection.find(
            {"status": "pending", "received_at": {"$lt": older_than},
             "$or": [{"retry_at": {"$exists": False}}, {"retry_at": {"$lte": now}}]},
            {"_id": 1},
        ).sort("received_at", ASCENDING).limit(limit)
        keys = [d["_id"] for d in pending]
        stuck = self.collection.find({"status": "processing", "lease_until": {"$lt": now}},
                                     {"_id": 1}).limit(max(0, limit - len(keys)))
        return keys + [d["_id"] for d in stuck]

    def finish(self, key: str, outcome: str, redacted_body: str | None = None) -> None:
        """Mark a delivery applied; `redacted_body` replaces what the shop sent when it was
        about an erased person (the key, and so duplicate detection, stays)."""
        fields: dict = {"status": "done", "outcome": outcome, "done_at": self.clock()}
        if redacted_body is not None:
            fields.update(body=redacted_body, redacted=True)
        self.collection.update_one({"_id": key}, {"$set": fields, "$unset": {"lease_until": ""}})

    def about_person(self, store_id: str, woo_customer_ids: list[int], order_ids: list[int],
                     emails: list[str]) -> list[dict]:
        """Deliveries of the person's customer record or orders, or mentioning their email."""
        clauses: list[dict] = []
        if woo_customer_ids:
            clauses.append({"resource": "customer", "resource_id": {"$in": woo_customer_ids}})
        if order_ids:
            clauses.append({"resource": "order", "resource_id": {"$in": order_ids}})
        clauses += [{"body": re.compile(re.escape(email), re.IGNORECASE)} for email in emails]
        if not clauses:
            return []
        return list(self.collection.find({"store_id": store_id, "$or": clauses}))

    def redact(self, key: str, body: str) -> None:
        self.collection.update_one({"_id": key}, {"$set": {"body": body, "redacted": True}})

    def drop(self, key: str) -> None:
        self.collection.delete_one({"_id": key})

    def fail(self, key: str, error: str, retry: bool, attempts: int = 1,
             quarantine_id: str | None = None) -> None:
        """A retry waits longer each time; a final failure is quarantined: kept (no expiry),
        until an operator replays it once the cause is fixed (WooCommerce never sends it
        again). An erasure still redacts it like any delivery waiting to be applied."""
        now = self.clock()
        fields: dict = {"status": "pending" if retry else "quarantined", "error": error[:2000]}
        if retry:
            fields["retry_at"] = now + timedelta(seconds=min(600, 2 ** min(attempts, 10)))
        else:
            fields.update(quarantined_at=now, quarantine_id=quarantine_id)
        self.collection.update_one({"_id": key}, {"$set": fields, "$unset": {"lease_until": ""}})

    def quarantined(self, store_id: str, after: tuple[datetime, str] | None,
                    limit: int) -> list[dict]:
        """A store's quarantined deliveries, oldest first, after a (quarantined_at, key)."""
        query: dict = {"store_id": store_id, "status": "quarantined"}
        if after is not None:
            at, key = after
            query["$or"] = [{"quarantined_at": {"$gt": at}},
                            {"quarantined_at": at, "_id": {"$gt": key}}]
        return list(self.collection.find(query).sort(
            [("quarantined_at", ASCENDING), ("_id", ASCENDING)]).limit(limit))

    def release(self, store_id: str, quarantine_ids: list[str] | None,
                limit: int) -> list[dict]:
        """Put quarantined deliveries (those named, or all) back to be applied; answers their
        `_id` (key) and `quarantine_id`. Each is taken by a compare-and-set on its status, so
        two operators replaying at once release it once."""
        query: dict = {"store_id": store_id, "status": "quarantined"}
        if quarantine_ids is not None:
            query["quarantine_id"] = {"$in": quarantine_ids}
        released = []
        for doc in self.collection.find(query, {"_id": 1, "quarantine_id": 1}).limit(limit):
            taken = self.collection.update_one(
                {"_id": doc["_id"], "status": "quarantined"},
                {"$set": {"status": "pending", "attempts": 0, "replayed_at": self.clock()},
                 "$inc": {"replays": 1},
                 "$unset": {"retry_at": "", "error": "", "quarantined_at": ""}})
            if taken.modified_count:
                released.append(doc)
        return released

    def quarantine_counts(self) -> dict[str, int]:
        """Quarantined deliveries per store, for health and metrics."""
        pipeline = [{"$match": {"status": "quarantined"}},
                    {"$group": {"_id": "$store_id", "n": {"$sum": 1}}}]
        return {row["_id"]: row["n"] for row in self.collection.aggregate(pipeline)}

    def counts(self, store_id: str) -> dict:
        pipeline = [{"$match": {"store_id": store_id}},
                    {"$group": {"_id": "$status", "n": {"$sum": 1}}}]
        return {row["_id"]: row["n"] for row in self.collection.aggregate(pipeline)}


# -- backfill runs ----------------------------------------------------------------------------
class BackfillRunRepository:
    """Checkpoints of backfills, so an interrupted one resumes where it stopped."""

    def __init__(self, collection: Collection, clock: Callable[[], datetime] = utcnow) -> None:
        self.collection = collection
        self.clock = clock

    def ensure_indexes(self) -> None:
        self.collection.create_index([("store_id", ASCENDING), ("status", ASCENDING)])

    def unfinished(self, store_id: str, since: str | None, kind: str) -> dict | None:
        return self.collection.find_one(
            {"store_id": store_id, "since": since, "kind": kind,
             "status": {"$in": ["running", "interrupted"]}},
            sort=[("started_at", DESCENDING)],
        )

    def start(self, store_id: str, since: str | None, kind: str) -> dict:
        now = self.clock()
        doc = {"_id": uuid.uuid4().hex, "store_id": store_id, "since": since, "kind": kind,
               "status": "running", "started_at": now, "updated_at": now,
               "phase": "customers", "next_page": 1, "total_pages": None, "pages_done": 0,
               "items": {"customers": 0, "orders": 0}, "outcomes": {}, "error": None}
        self.collection.insert_one(doc)
        return doc

    def get(self, run_id: str) -> dict | None:
        return self.collection.find_one({"_id": run_id})

    def update(self, run_id: str, fields: dict, inc: dict | None = None) -> None:
        update: dict = {"$set": {**fields, "updated_at": self.clock()}}
        if inc:
            update["$inc"] = inc
        self.collection.update_one({"_id": run_id}, update)

    def latest(self, store_id: str, limit: int = 10) -> list[dict]:
        return list(self.collection.find({"store_id": store_id})
                    .sort("started_at", DESCENDING).limit(limit))


# -- custom field definitions -----------------------------------------------------------------
class CustomFieldRepository:
    """Each store's custom field definitions, one document a field keyed by store and key; the
    values live on the customers and the companies (`custom_fields`), so removing a field
    removes them there."""

    def __init__(self, collection: Collection, customers: Collection,
                 companies: Collection) -> None:
        self.collection = collection
        self.customers = customers
        self.companies = companies

    def ensure_indexes(self) -> None:
        self.collection.create_index([("store_id", ASCENDING), ("key", ASCENDING)], unique=True)
        self.collection.create_index([("deleting", ASCENDING)], sparse=True)

    def all(self, store_id: str) -> list[dict]:
        """The store's definitions in the order they were made; one being deleted is gone
        already for everyone but the deletion finishing it."""
        return list(self.collection.find({"store_id": store_id, "deleting": {"$ne": True}})
                    .sort([("created_at", ASCENDING), ("key", ASCENDING)]))

    def get(self, store_id: str, key: str) -> dict | None:
        return self.collection.find_one({"store_id": store_id, "key": key})

    def count(self, store_id: str) -> int:
        return self.collection.count_documents({"store_id": store_id})

    def insert(self, doc: dict) -> bool:
        """A new definition; False when the store has one with its key."""
        try:
            self.collection.insert_one({**doc, "_id": uuid.uuid4().hex, "version": 1})
            return True
        except DuplicateKeyError:
            return False

    def remove(self, store_id: str, key: str) -> bool:
        return self.collection.delete_one({"store_id": store_id, "key": key}).deleted_count == 1

    def update(self, store_id: str, key: str, version: int, fields: dict) -> bool:
        """Compare-and-set on the definition's version."""
        return self.collection.update_one(
            {"store_id": store_id, "key": key, "version": version},
            {"$set": fields, "$inc": {"version": 1}}).modified_count == 1

    def values_exist(self, store_id: str, key: str) -> bool:
        """Whether a customer or a company of the store holds a value of the field."""
        held = {"store_id": store_id, f"custom_fields.{key}": {"$exists": True}}
        return (self.customers.count_documents(held, limit=1) > 0
                or self.companies.count_documents(held, limit=1) > 0)

    def mark_deleting(self, store_id: str, key: str) -> None:
        """The first step of a deletion: the field stops being listed or accepted, and its
        values are taken off customer by customer until `remove` ends it."""
        self.collection.update_one({"store_id": store_id, "key": key},
                                   {"$set": {"deleting": True}, "$inc": {"version": 1}})

    def deleting(self, limit: int = 10) -> list[dict]:
        """Definitions whose deletion is not finished (cut short, or another instance at it)."""
        return list(self.collection.find({"deleting": True}, {"store_id": 1, "key": 1})
                    .limit(limit))

    def company_holders(self, store_id: str, key: str, limit: int) -> list[dict]:
        """Up to `limit` companies of the store holding a value of the field, in `_id` order."""
        return list(self.companies.find(
            {"store_id": store_id, f"custom_fields.{key}": {"$exists": True}},
            {"_id": 1, "version": 1}).sort("_id", ASCENDING).limit(limit))

    def remove_company_value(self, company: dict, key: str) -> bool:
        """Take the field's value off a company, compare-and-set on its version; False when
        the company changed since it was read."""
        return self.companies.update_one(
            {"_id": company["_id"], "version": company["version"]},
            {"$unset": {f"custom_fields.{key}": ""}, "$inc": {"version": 1}}).modified_count == 1

    def holders(self, store_id: str, key: str, limit: int) -> list[dict]:
        """Up to `limit` customers of the store holding a value of the field, in `_id` order."""
        return list(self.customers.find(
            {"store_id": store_id, f"custom_fields.{key}": {"$exists": True}},
            {OUTBOX_FIELD: 0}).sort("_id", ASCENDING).limit(limit))


# -- companies --------------------------------------------------------------------------------
class CompanyRepository:
    """Each store's companies (crm/companies.py), one document a company keyed by its id; the
    membership lives on the customers (`company_id`). A company being deleted carries
    `deleting` until its last member is released, and is nobody's to join meanwhile."""

    def __init__(self, collection: Collection, customers: Collection) -> None:
        self.collection = collection
        self.customers = customers

    def ensure_indexes(self) -> None:
        c = self.collection
        c.create_index([("store_id", ASCENDING), ("domain", ASCENDING)], unique=True,
                       name="companies_by_domain",
                       partialFilterExpression={"domain": {"$type": "string"}})
        c.create_index([("store_id", ASCENDING), ("name_key", ASCENDING), ("_id", ASCENDING)],
                       name="companies_by_name")
        c.create_index([("deleting", ASCENDING)], sparse=True)
        # Members of a company, and the customers a domain sweep may join to one.
        self.customers.create_index([("store_id", ASCENDING), ("company_id", ASCENDING)],
                                    name="customers_by_company",
                                    partialFilterExpression={"company_id": {"$type": "string"}})

    def get(self, store_id: str, company_id: str) -> dict | None:
        """The company (one being deleted too: the caller decides)."""
        return self.collection.find_one({"_id": company_id, "store_id": store_id})

    def live(self, store_id: str, company_id: str) -> dict | None:
        doc = self.get(store_id, company_id)
        return doc if doc is not None and not doc.get("deleting") else None

    def by_domains(self, store_id: str, domains: list[str]) -> dict[str, str]:
        """{domain: company_id} of the store's live companies with one of the domains."""
        if not domains:
            return {}
        return {d["domain"]: d["_id"] for d in self.collection.find(
            {"store_id": store_id, "domain": {"$in": domains}, "deleting": {"$ne": True}},
            {"domain": 1})}

    def count(self, store_id: str) -> int:
        return self.collection.count_documents({"store_id": store_id})

    def insert(self, doc: dict) -> bool:
        """A new company; False when the store has one with its domain."""
        try:
            self.collection.insert_one({**doc, "version": 1})
            return True
        except DuplicateKeyError:
            return False

    def update(self, store_id: str, company_id: str, version: int, fields: dict) -> bool | None:
        """Compare-and-set on the company's version; None when another company of the store
        holds the domain it would take."""
        try:
            return self.collection.update_one(
                {"_id": company_id, "store_id": store_id, "version": version,
                 "deleting": {"$ne": True}},
                {"$set": fields, "$inc": {"version": 1}}).modified_count == 1
        except DuplicateKeyError:
            return None

    def mark_deleting(self, store_id: str, company_id: str, at: datetime, actor: str) -> bool:
        """The company is being deleted from now on (already so: True as well)."""
        self.collection.update_one(
            {"_id": company_id, "store_id": store_id, "deleting": {"$ne": True}},
            {"$set": {"deleting": True, "deleting_since": at, "deleted_by": actor},
             "$inc": {"version": 1}})
        return self.collection.count_documents(
            {"_id": company_id, "store_id": store_id, "deleting": True}) == 1

    def remove(self, store_id: str, company_id: str) -> bool:
        return self.collection.delete_one({"_id": company_id, "store_id": store_id,
                                           "deleting": True}).deleted_count == 1

    def deleting(self, limit: int = 10) -> list[dict]:
        """Companies whose deletion is not finished (a crash, or another instance at it)."""
        return list(self.collection.find({"deleting": True}, {"store_id": 1}).limit(limit))

    def page(self, store_id: str, q: str | None, after: tuple[str, str] | None,
             size: int) -> list[dict]:
        """Live companies of the store in (name_key, _id) order after `after`, those whose
        name or domain holds `q` (case-insensitive) when given."""
        query: dict = {"store_id": store_id, "deleting": {"$ne": True}}
        if q:
            pattern = re.compile(re.escape(q), re.IGNORECASE)
            query["$or"] = [{"name": pattern}, {"domain": pattern}]
        if after is not None:
            key, last_id = after
            query = {"$and": [query, {"$or": [{"name_key": {"$gt": key}},
                                              {"name_key": key, "_id": {"$gt": last_id}}]}]}
        return list(self.collection.find(query).sort([("name_key", ASCENDING), ("_id", ASCENDING)])
                    .limit(size))

    def names(self, store_id: str, company_ids: list[str]) -> dict[str, str]:
        return {d["_id"]: d["name"] for d in self.collection.find(
            {"store_id": store_id, "_id": {"$in": company_ids}, "deleting": {"$ne": True}},
            {"name": 1})}

    def member_counts(self, store_id: str, company_ids: list[str]) -> dict[str, int]:
        """Live members of each company (those with none left out): one aggregation."""
        if not company_ids:
            return {}
        return {row["_id"]: row["n"] for row in self.customers.aggregate([
            {"$match": {"store_id": store_id, "company_id": {"$in": company_ids},
                        "status": "active"}},
            {"$group": {"_id": "$company_id", "n": {"$sum": 1}}}])}

    def members(self, store_id: str, company_id: str, limit: int) -> list[dict]:
        """Up to `limit` customers (of any status) holding the company."""
        return list(self.customers.find({"store_id": store_id, "company_id": company_id},
                                        {OUTBOX_FIELD: 0}).limit(limit))

    def dangling_members(self, limit: int) -> list[dict]:
        """Up to `limit` customers (of any store) holding a company that no longer exists: one
        pass over the membership index, then one read of the companies it names."""
        held = {(row["_id"]["s"], row["_id"]["c"]) for row in self.customers.aggregate([
            {"$match": {"company_id": {"$type": "string", "$ne": ""}}},
            {"$group": {"_id": {"s": "$store_id", "c": "$company_id"}}}])}
        if not held:
            return []
        existing = {(d["store_id"], d["_id"]) for d in self.collection.find(
            {"_id": {"$in": sorted({c for _, c in held})}}, {"store_id": 1})}
        missing = sorted(held - existing)[:limit]
        if not missing:
            return []
        return list(self.customers.find(
            {"$or": [{"store_id": s, "company_id": c} for s, c in missing]},
            {OUTBOX_FIELD: 0}).sort("_id", ASCENDING).limit(limit))

    def without_company(self, store_id: str, after_id: str | None, limit: int) -> list[dict]:
        """Up to `limit` live customers of the store without a company, in `_id` order after
        `after_id`: a domain sweep's batch."""
        query: dict = {"store_id": store_id, "status": "active",
                       "company_id": {"$in": [None, ""]}}
        if after_id is not None:
            query["_id"] = {"$gt": after_id}
        return list(self.customers.find(query, {OUTBOX_FIELD: 0, MATCH_KEYS_FIELD: 0})
                    .sort("_id", ASCENDING).limit(limit))


# -- the bundle a worker gets -----------------------------------------------------------------
class CustomerSyncStorage:
    """Everything customer_sync keeps, one repository per concern."""

    def __init__(self, database: Database, inbox_retention_days: int = 7,
                 clock: Callable[[], datetime] = utcnow) -> None:
        """`clock` dates what the repositories record (the inbox's deliveries, stores,
        backfill checkpoints, API keys and console sessions)."""
        self.database = database
        # Writes that justify a 200 to WooCommerce, or carry owed events, must survive a
        # replica-set failover: acknowledged by a majority, journaled.
        durable = WriteConcern(w="majority", j=True)
        self.stores = StoreRepository(database["stores"], clock)
        self.customers = CustomerRepository(
            database["customers"].with_options(write_concern=durable), self._store_country)
        self.orders = OrderRepository(database["orders"].with_options(write_concern=durable))
        self.inbox = InboxRepository(database["webhook_inbox"].with_options(write_concern=durable),
                                     inbox_retention_days, clock)
        self.backfills = BackfillRunRepository(database["backfill_runs"], clock)
        # GDPR: keyed hashes of erased people's identifiers, and one receipt per erasure request.
        self.tombstones = TombstoneRepository(
            database["erasure_tombstones"].with_options(write_concern=durable),
            TombstoneKeys(database["stores"].with_options(write_concern=durable)))
        self.erasures = ErasureReceipts(database["erasures"].with_options(write_concern=durable))
        # The gateway's API keys (hashed), per store, with the stores' other secrets.
        self.api_keys = ApiKeys(database["api_keys"].with_options(write_concern=durable), clock)
        # The admin console's sessions, ended with the key they were opened with.
        self.console_sessions = ConsoleSessions(
            database["console_sessions"].with_options(write_concern=durable), self.api_keys, clock)
        # Staff's notes and reminders about customers, and the activity timeline.
        self.notes = NoteRepository(database["notes"].with_options(write_concern=durable))
        self.reminders = ReminderRepository(database["reminders"].with_options(write_concern=durable))
        self.timeline = TimelineRepository(database["timeline"])
        # Merges of customer records, with what each moved, so that it can be undone.
        self.merges = MergeRepository(database["merges"].with_options(write_concern=durable))
        # Each store's companies; their members are the customers naming them.
        self.companies = CompanyRepository(
            database["companies"].with_options(write_concern=durable), self.customers.collection)
        # Each store's custom field definitions; their values live on the customers and the
        # companies.
        self.custom_fields = CustomFieldRepository(database["custom_fields"],
                                                   self.customers.collection,
                                                   self.companies.collection)

    def movable(self) -> dict[str, Collection]:
        """What moves with a merged record, by kind: each collection keyed by customer_id."""
        return {"orders": self.orders.collection, "notes": self.notes.collection,
                "reminders": self.reminders.collection, "timeline": self.timeline.collection}

    def owned_ids(self, kind: str, store_id: str, customer_id: str,
                  among: list | None = None) -> list:
        """The ids of a customer's documents of `kind` (only those `among`, when given)."""
        query: dict = {"store_id": store_id, "customer_id": customer_id}
        if among is not None:
            query["_id"] = {"$in": list(among)}
        return [d["_id"] for d in self.movable()[kind].find(query, {"_id": 1})]

    def move_owned(self, kind: str, ids: list, from_id: str, to_id: str) -> None:
        """Documents of `kind` still with `from_id` go to `to_id`; the versioned ones get a new
        version, so a writer holding the old one reads again."""
        if not ids:
            return
        update: dict = {"$set": {"customer_id": to_id}}
        if kind != "timeline":
            update["$inc"] = {"version": 1}
        self.movable()[kind].update_many({"_id": {"$in": list(ids)}, "customer_id": from_id},
                                         update)

    def _store_country(self, store_id: str) -> str | None:
        store = self.stores.get_cached(store_id)
        return store.country if store is not None else None

    def ensure_indexes(self) -> None:
        for repo in (self.stores, self.customers, self.orders, self.inbox, self.backfills,
                     self.tombstones, self.api_keys, self.console_sessions, self.notes,
                     self.reminders, self.timeline, self.merges, self.custom_fields,
                     self.companies):
            repo.ensure_indexes()

    def timeline_sources(self) -> list[Collection]:
        """Collections whose documents carry timeline entries owed by their writes."""
        return [self.customers.collection, self.orders.collection, self.notes.collection,
                self.reminders.collection]

    def outbox_collections(self) -> list[Collection]:
        # Customers first: a new customer's event should leave before its first order's.
        # API keys: a revocation's event (every gateway instance drops the key at once).
        return [self.customers.collection, self.orders.collection, self.erasures.collection,
                self.api_keys.collection]
