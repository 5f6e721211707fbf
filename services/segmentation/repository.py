"""segmentation's storage: one profile document per customer, keyed by store first.

A profile holds the facts it is computed from (each order's latest known state, keyed by order
id, and the customer's contact facts), so every event is one atomic update of one document:
the facts, the recomputed stats, segment, tags and groups, and the events they owe.
"""
from __future__ import annotations

from pymongo import ASCENDING
from pymongo.collection import Collection
from pymongo.database import Database

from services.segmentation.directory import ensure_indexes as directory_indexes
from shared.erasure import ErasureReceipts
from shared.times import utcnow
from shared.versioned import VersionedRepository


ACTIVE = "active"  # the other profile states are named in profiles.py


class ProfileRepository(VersionedRepository):
    def ensure_indexes(self) -> None:
        c = self.collection
        c.create_index([("store_id", ASCENDING), ("customer_id", ASCENDING)], unique=True)
        c.create_index([("store_id", ASCENDING), ("segment", ASCENDING)])
        c.create_index([("store_id", ASCENDING), ("tag_list", ASCENDING)])
        c.create_index([("store_id", ASCENDING), ("group_list", ASCENDING)])
        c.create_index([("store_id", ASCENDING), ("saved_segments", ASCENDING)])
        directory_indexes(c)  # the customer list's sorts

    @staticmethod
    def key(store_id: str, customer_id: str) -> str:
        return f"{store_id}:{customer_id}"

    def get(self, store_id: str, customer_id: str) -> dict | None:
        return self.collection.find_one({"_id": self.key(store_id, customer_id)})

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

    def for_store(self, store_id: str, batch_size: int = 1000):
        return self.collection.find({"store_id": store_id, "status": ACTIVE},
                                    {"outbox": 0}).batch_size(batch_size)


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
        self.tag_catalogue = database["tag_catalogue"]
        self.saved_segments = SavedSegmentRepository(database["saved_segments"])
        self.erasures = ErasureReceipts(database["erasures"])

    def ensure_indexes(self) -> None:
        self.profiles.ensure_indexes()
        self.settings.ensure_indexes()
        self.rules.create_index([("store_id", ASCENDING), ("position", ASCENDING)])
        self.groups.create_index([("store_id", ASCENDING), ("slug", ASCENDING)], unique=True)
        self.tag_catalogue.create_index([("store_id", ASCENDING), ("tag", ASCENDING)],
                                        unique=True)
        self.saved_segments.ensure_indexes()

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
