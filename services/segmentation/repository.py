"""segmentation's storage: one profile document per customer, keyed by store first.

A profile holds the facts it is computed from (each order's latest known state, keyed by order
id, and the customer's contact facts), so every event is one atomic update of one document:
the facts, the recomputed stats, segment, tags and groups, and the events they owe.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Protocol, Sequence

import bson
from bson.codec_options import CodecOptions
from pymongo import ASCENDING, InsertOne, UpdateOne
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import BulkWriteError

from services.segmentation.directory import SORT_KEYS as DIRECTORY_SORT_KEYS
from shared.erasure import ErasureReceipts
from shared.merge_receipts import MergeReceipts
from shared.outbox import OUTBOX_FIELD, push_events
from shared.times import utcnow
from shared.versioned import VersionedRepository


# A profile's life (profiles.py says what each state means): only active profiles are derived
# from, recomputed, reported and listed.
ACTIVE = "active"
DELETED, MERGED, ERASED = "deleted", "merged", "erased"


# How the services' clients read documents back (shared/mongo.py): times aware, in UTC.
_AS_READ = CodecOptions(tz_aware=True, tzinfo=timezone.utc)
_DUPLICATE_KEY = 11000


class ProfileWrite(Protocol):
    """One write of the write path (profiles.ProfileStep): what it makes of the profile."""

    working: dict
    fields: dict
    events: list


@dataclass
class ProfileWrites:
    """The writes one batch makes of one profile, in order, from the profile as read (None:
    not stored yet). Stored as one insert or one compare-and-set that adds them up."""

    doc_id: str
    stored: dict | None
    steps: list = field(default_factory=list)  # of ProfileWrite

    def operation(self) -> InsertOne | UpdateOne:
        """Every write's events in order, the last write's fields (each writes the same
        fields), the version moved once per write: what the writes one by one leave."""
        steps: Sequence[ProfileWrite] = self.steps
        owed = [event for step in steps for event in step.events]
        pushed = push_events(owed)
        if self.stored is None:
            return InsertOne({**steps[0].working, **steps[-1].fields, "version": len(steps),
                              OUTBOX_FIELD: pushed.get(OUTBOX_FIELD, {}).get("$each", [])})
        update: dict = {"$set": steps[-1].fields, "$inc": {"version": len(steps)}}
        if pushed:
            update["$push"] = pushed
        return UpdateOne({"_id": self.doc_id, "version": self.stored["version"]}, update)


class ProfileRepository(VersionedRepository):
    def ensure_indexes(self) -> None:
        c = self.collection
        c.create_index([("store_id", ASCENDING), ("customer_id", ASCENDING)], unique=True)
        c.create_index([("store_id", ASCENDING), ("segment", ASCENDING)])
        c.create_index([("store_id", ASCENDING), ("tag_list", ASCENDING)])
        c.create_index([("store_id", ASCENDING), ("group_list", ASCENDING)])
        c.create_index([("store_id", ASCENDING), ("saved_segments", ASCENDING)])
        # A company's members: its page of the list, and company_stats' aggregation.
        c.create_index([("store_id", ASCENDING), ("contact.company_id", ASCENDING),
                        ("status", ASCENDING)], name="profiles_by_company",
                       partialFilterExpression={"contact.company_id": {"$type": "string"}})
        # The customer list (directory.py): one index per sort, so a page is one index range
        # scan whatever its depth.
        for sort, key in DIRECTORY_SORT_KEYS.items():
            c.create_index([("store_id", ASCENDING), ("status", ASCENDING), (key, ASCENDING),
                            ("customer_id", ASCENDING)], name=f"directory_{sort}")

    @staticmethod
    def key(store_id: str, customer_id: str) -> str:
        return f"{store_id}:{customer_id}"

    def get(self, store_id: str, customer_id: str) -> dict | None:
        return self.collection.find_one({"_id": self.key(store_id, customer_id)})

    def get_many(self, doc_ids: Sequence[str]) -> dict[str, dict]:
        """The stored profiles of the given keys (`key()`), by key, in one round trip; without
        their owed events, which the batch path only adds to and a full read would hold in
        memory for nothing."""
        return {doc["_id"]: doc for doc in self.collection.find(
            {"_id": {"$in": list(doc_ids)}}, {OUTBOX_FIELD: 0})}

    @staticmethod
    def as_stored(doc: dict) -> dict:
        """The document as reading it back would give it (times to the millisecond, tuples
        as lists), so a change applied in memory sees what the one-event path would read."""
        return bson.decode(bson.encode(doc), codec_options=_AS_READ)

    def write_many(self, writes: Sequence[ProfileWrites]) -> set[str]:
        """Every profile's writes in one unordered bulk write; answers the ids of the profiles
        whose insert or compare-and-set lost to another writer (nothing of theirs is stored).
        When some compare-and-set did not apply, one more read tells which: a profile is
        ours when it holds the version and the fields we wrote."""
        if not writes:
            return set()
        lost: set[str] = set()
        try:
            result = self.collection.bulk_write([w.operation() for w in writes], ordered=False)
            modified = result.modified_count
        except BulkWriteError as exc:
            if exc.details.get("writeConcernErrors"):
                raise  # applied but not confirmed: the batch is retried (its writes repeat)
            for error in exc.details.get("writeErrors", []):
                if error.get("code") != _DUPLICATE_KEY:
                    raise
                lost.add(writes[error["index"]].doc_id)
            modified = exc.details.get("nModified", 0)
        updates = [w for w in writes if w.stored is not None]
        if modified < len(updates):
            current = {doc["_id"]: doc for doc in self.collection.find(
                {"_id": {"$in": [w.doc_id for w in updates]}}, {OUTBOX_FIELD: 0})}
            for w in updates:
                if not _holds(current.get(w.doc_id), w):
                    lost.add(w.doc_id)
        return lost

    def new(self, store_id: str, customer_id: str) -> dict:
        """A profile not stored yet (version 0: the first write inserts it)."""
        return {"_id": self.key(store_id, customer_id), "store_id": store_id,
                "customer_id": customer_id, "status": ACTIVE, "orders": {}, "tags": {},
                "groups": {}, "tag_list": [], "group_list": [], "segment": None, "stats": None,
                "contact": {}, "version": 0, "created_at": utcnow()}

    def forget_saved_segment(self, store_id: str, segment_id: str) -> int:
        """A deleted saved segment leaves every profile; the version moves, so a derivation
        read before the deletion fails its compare-and-set and is redone without it."""
        return self.collection.update_many(
            {"store_id": store_id, "saved_segments": segment_id},
            {"$pull": {"saved_segments": segment_id}, "$inc": {"version": 1}}).modified_count

    def store_ids(self) -> list[str]:
        """Every store with a profile: what the periodic recompute walks."""
        return self.collection.distinct("store_id")

    def for_report(self, store_id: str):
        """The store's active profiles, only what a report reads."""
        return self.collection.find({"store_id": store_id, "status": ACTIVE},
                                    {"stats": 1, "segment": 1, "groups": 1})

    def orders_of_active(self, store_id: str):
        """The store's active profiles with only their orders: a recompute's first pass."""
        return self.collection.find({"store_id": store_id, "status": ACTIVE}, {"orders": 1})

    def derived_of_active(self, store_id: str):
        """The store's active profiles without their orders or owed events: what a recompute's
        second pass derives from, small enough for a large store."""
        return self.collection.find({"store_id": store_id, "status": ACTIVE},
                                    {"outbox": 0, "orders": 0})

    def write_batch(self, updates: list[UpdateOne]) -> int:
        """Many compare-and-set updates in one round trip; answers how many applied."""
        return self.collection.bulk_write(updates, ordered=False).modified_count

    def versions_of(self, doc_ids: list[str]) -> dict[str, int]:
        """Each profile's current version, to tell which compare-and-sets of a batch lost."""
        return {d["_id"]: d["version"]
                for d in self.collection.find({"_id": {"$in": doc_ids}}, {"version": 1})}

    def customer_of(self, doc_id: str) -> str:
        return self.collection.find_one({"_id": doc_id}, {"customer_id": 1})["customer_id"]

    def active_from(self, store_id: str, after: str | None):
        """The store's active profiles in customer-id order, past `after`: a scan a page of
        saved-segment members stops when it has enough."""
        query: dict = {"store_id": store_id, "status": ACTIVE}
        if after:
            query["customer_id"] = {"$gt": after}
        return self.collection.find(query, {"outbox": 0}).sort("customer_id", 1)

    def mark_erased(self, store_id: str, customer_ids: list[str], erased_at: datetime,
                    request_id: str, personal_fields: tuple[str, ...]) -> int:
        """Each customer's profile becomes an erasure marker without `personal_fields` (one is
        made where none was, so a late event cannot create one); a marker already there is
        left alone. Answers how many of them had a profile, so a repeat answers the same."""
        for customer_id in customer_ids:
            key = self.key(store_id, customer_id)
            held = self.collection.find_one({"_id": key}, {"status": 1})
            if held is not None and held.get("status") == ERASED:
                continue
            self.collection.update_one(
                {"_id": key},
                {"$set": {"status": ERASED, "erased_at": erased_at,
                          "erasure_request_id": request_id, "had_profile": held is not None},
                 "$setOnInsert": {"store_id": store_id, "customer_id": customer_id},
                 "$unset": {name: "" for name in personal_fields},
                 "$inc": {"version": 1}},
                upsert=True)
        return self.collection.count_documents(
            {"store_id": store_id, "customer_id": {"$in": customer_ids}, "status": ERASED,
             "had_profile": True})

    def mark_merged(self, doc_id: str, into: str) -> None:
        """A merged guest's profile points at the registered customer (unless erased)."""
        self.collection.update_one({"_id": doc_id, "status": {"$ne": ERASED}},
                                   {"$set": {"status": MERGED, "merged_into": into}})

    def carriers_of(self, store_id: str, tag: str) -> list[str]:
        """The customers whose profile (erased ones aside) carries the tag."""
        return [d["customer_id"] for d in self.collection.find(
            {"store_id": store_id, "tag_list": tag, "status": {"$ne": ERASED}},
            {"customer_id": 1})]

    def anyone_carries(self, store_id: str, tag: str) -> bool:
        return self.collection.find_one({"store_id": store_id, "tag_list": tag},
                                        {"_id": 1}) is not None

    def member_counts(self, store_id: str, field: str) -> dict[str, int]:
        """How many active profiles of the store hold each value of an array field."""
        pipeline = [{"$match": {"store_id": store_id, "status": ACTIVE}},
                    {"$project": {field: 1}},
                    {"$unwind": f"${field}"},
                    {"$group": {"_id": f"${field}", "customers": {"$sum": 1}}}]
        return {d["_id"]: d["customers"] for d in self.collection.aggregate(pipeline)}

    def company_totals(self, store_id: str, company_ids: list[str]) -> list[dict]:
        """Per company, its active members' stats added up (one aggregation): rows of
        {"_id": company_id, "members", "orders_count", "total_spent", "last_order_at",
        "currencies"}; companies without active members are left out."""
        return list(self.collection.aggregate([
            {"$match": {"store_id": store_id, "contact.company_id": {"$in": company_ids},
                        "status": ACTIVE}},
            {"$group": {"_id": "$contact.company_id", "members": {"$sum": 1},
                        "orders_count": {"$sum": {"$ifNull": ["$stats.orders_count", 0]}},
                        "total_spent": {"$sum": {"$ifNull": ["$stats.total_spent", 0]}},
                        "last_order_at": {"$max": "$stats.last_order_at"},
                        "currencies": {"$addToSet": "$stats.currency"}}}]))

    def count_matching(self, query: dict) -> int:
        return self.collection.count_documents(query)

    def listing_page(self, query: dict, projection: dict, sort: list, limit: int) -> list[dict]:
        """Up to `limit` profiles matching a customer-list query, in the list's order."""
        return list(self.collection.find(query, projection).sort(sort).limit(limit))


def _holds(doc: dict | None, writes: ProfileWrites) -> bool:
    """Whether a profile as read holds what `writes` stored: their version and fields."""
    if doc is None or doc.get("version") != writes.stored["version"] + len(writes.steps):
        return False
    written = ProfileRepository.as_stored(writes.steps[-1].fields)
    return all(doc.get(name) == value for name, value in written.items())


class StoreSettingsRepository:
    """Per-store thresholds and the store-wide figures segments need (top-10% cutoff, RFM)."""

    def __init__(self, collection: Collection) -> None:
        self.collection = collection

    def ensure_indexes(self) -> None:
        pass

    def get(self, store_id: str) -> dict:
        return self.collection.find_one({"_id": store_id}) or {"_id": store_id}

    def update(self, store_id: str, fields: dict) -> None:
        self.collection.update_one({"_id": store_id}, {"$set": {**fields, "updated_at": utcnow()}},
                                   upsert=True)


class TagCatalogueRepository:
    """The store's catalogued tags, one document a tag keyed by store and tag."""

    def __init__(self, collection: Collection) -> None:
        self.collection = collection

    def ensure_indexes(self) -> None:
        self.collection.create_index([("store_id", ASCENDING), ("tag", ASCENDING)], unique=True)

    @staticmethod
    def key(store_id: str, tag: str) -> str:
        return f"{store_id}:{tag}"

    def get(self, store_id: str, tag: str) -> dict | None:
        return self.collection.find_one({"_id": self.key(store_id, tag)})

    def descriptions(self, store_id: str) -> dict[str, str]:
        """Each catalogued tag of the store with its description."""
        return {d["tag"]: d.get("description", "")
                for d in self.collection.find({"store_id": store_id})}

    def add(self, store_id: str, tag: str, fields: dict) -> None:
        """The tag enters the catalogue with `fields`, unless it is there already."""
        self.collection.update_one({"_id": self.key(store_id, tag)},
                                   {"$setOnInsert": {"store_id": store_id, "tag": tag, **fields}},
                                   upsert=True)

    def describe(self, store_id: str, tag: str, description: str, created_at: datetime) -> None:
        """A tag's description; a tag not catalogued yet enters with it."""
        self.collection.update_one({"_id": self.key(store_id, tag)},
                                   {"$set": {"description": description},
                                    "$setOnInsert": {"store_id": store_id, "tag": tag,
                                                     "created_at": created_at}}, upsert=True)

    def remove(self, store_id: str, tag: str) -> None:
        self.collection.delete_one({"_id": self.key(store_id, tag)})


class SavedSegmentRepository:
    """Saved segments, one document a segment keyed by store and segment id (the id never holds
    ':'), listed by name: the index serves the store's list in its order."""

    _HIDDEN = {"_id": 0, "store_id": 0}

    def __init__(self, collection: Collection) -> None:
        self.collection = collection

    def ensure_indexes(self) -> None:
        self.collection.create_index([("store_id", ASCENDING), ("name", ASCENDING)])

    @staticmethod
    def key(store_id: str, segment_id: str) -> str:
        return f"{store_id}:{segment_id}"

    def get(self, store_id: str, segment_id: str) -> dict | None:
        return self.collection.find_one({"_id": self.key(store_id, segment_id)}, self._HIDDEN)

    def for_store(self, store_id: str) -> list[dict]:
        return list(self.collection.find({"store_id": store_id}, self._HIDDEN).sort("name", 1))

    def put(self, store_id: str, segment: dict) -> None:
        self.collection.replace_one({"_id": self.key(store_id, segment["segment_id"])},
                                    {**segment, "store_id": store_id}, upsert=True)

    def delete(self, store_id: str, segment_id: str) -> bool:
        return bool(self.collection.delete_one({"_id": self.key(store_id, segment_id)})
                    .deleted_count)


class SegmentationStorage:
    def __init__(self, database: Database) -> None:
        self.database = database
        self.profiles = ProfileRepository(database["profiles"])
        self.settings = StoreSettingsRepository(database["store_settings"])
        self.rules = database["rules"]
        self.groups = database["groups"]
        self.tag_catalogue = TagCatalogueRepository(database["tag_catalogue"])
        self.saved_segments = SavedSegmentRepository(database["saved_segments"])
        self.erasures = ErasureReceipts(database["erasures"])
        self.merges = MergeReceipts(database["merges"])

    def ensure_indexes(self) -> None:
        self.profiles.ensure_indexes()
        self.settings.ensure_indexes()
        self.rules.create_index([("store_id", ASCENDING), ("position", ASCENDING)])
        self.groups.create_index([("store_id", ASCENDING), ("slug", ASCENDING)], unique=True)
        self.tag_catalogue.ensure_indexes()
        self.saved_segments.ensure_indexes()
        self.merges.ensure_indexes()

    def outbox_collections(self) -> list[Collection]:
        return [self.profiles.collection, self.erasures.collection]

    # `rules` and `groups` stay plain collections the profiles read; their writes are here.
    def put_rule(self, store_id: str, rule: dict) -> None:
        self.rules.replace_one({"_id": f"{store_id}:{rule['rule_id']}"},
                               {**rule, "store_id": store_id}, upsert=True)

    def rules_of(self, store_id: str) -> list[dict]:
        """The store's rules in the order they run."""
        rules = self.rules.find({"store_id": store_id}, {"_id": 0, "store_id": 0})
        return sorted(rules, key=lambda r: (r.get("position", 0), r.get("rule_id", "")))

    def enabled_rules(self, store_id: str) -> list[dict]:
        """The store's enabled rules, whole, in the order they run: what a profile runs."""
        return sorted(self.rules.find({"store_id": store_id, "enabled": True}),
                      key=lambda r: (r.get("position", 0), r.get("rule_id", "")))

    def delete_rule(self, store_id: str, rule_id: str) -> bool:
        return bool(self.rules.delete_one({"_id": f"{store_id}:{rule_id}"}).deleted_count)

    def put_group(self, store_id: str, group: dict) -> None:
        self.groups.replace_one({"store_id": store_id, "slug": group["slug"]},
                                {**group, "store_id": store_id}, upsert=True)

    def has_group(self, store_id: str, slug: str) -> bool:
        return self.groups.find_one({"store_id": store_id, "slug": slug}) is not None

    def groups_of(self, store_id: str) -> list[dict]:
        """The store's groups by slug."""
        return list(self.groups.find({"store_id": store_id},
                                     {"_id": 0, "store_id": 0}).sort("slug", 1))
