"""loyalty's storage: one account document per customer, the ledger, programmes, receipts.

An account document holds the balance, the lots, the store credit and each order's earning
state, so every change is one atomic compare-and-set of one document, with the ledger entries
it makes (in `journal`) and the events it owes (in `outbox`) in the same write. The journal is
then copied into the append-only `ledger` collection (keyed by the entry's natural key, so a
copy repeated after a crash is harmless) and pulled from the account.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Iterable

from pymongo import ASCENDING, DESCENDING, InsertOne, ReturnDocument, UpdateOne
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import BulkWriteError, DuplicateKeyError

from shared.coupon_withdrawals import CouponWithdrawals
from shared.erasure import ErasureMarkers, ErasureReceipts
from shared.events import Event
from shared.outbox import OUTBOX_FIELD, push_events
from shared.times import utcnow

JOURNAL = "journal"
ACTIVE = "active"
DELETED, ERASED = "deleted", "erased"
# A record merged into another customer's: it holds nothing, earns nothing, and `merged_into`
# names the account that does (an unmerge makes it active again).
MERGED = "merged"
# The account fields a change may rewrite whole (each small); `orders` is written per order.
# `rewards` is written per reward, like `orders`; `rewards_due_at` is the earliest moment one of
# them needs the shop (indexed: the reward step's to-do list), `reward_codes` finds a reward by
# the code an order carries. `transfers` (parcels a merge or an unmerge handed over) is
# written per parcel, like `rewards`.
SMALL_FIELDS = ("status", "deleted_at", "balance", "credit_balance", "debt", "lots",
                "credit_lots", "tier", "tier_since", "member_since", "currency", "next_seq",
                "reward_codes", "rewards_due_at", "updated_at", "merged_into")


class AccountRepository(ErasureMarkers):
    held_flag, versioned = "had_account", True

    def __init__(self, collection: Collection) -> None:
        self.collection = collection

    def ensure_indexes(self) -> None:
        self.collection.create_index([("store_id", ASCENDING), ("customer_id", ASCENDING)],
                                     unique=True)
        self.collection.create_index([("store_id", ASCENDING), ("lots.expires_at", ASCENDING)])
        self.collection.create_index([("store_id", ASCENDING), ("reward_codes", ASCENDING)])
        self.collection.create_index([("rewards_due_at", ASCENDING)], sparse=True)

    def get(self, store_id: str, customer_id: str) -> dict | None:
        return self.collection.find_one({"_id": self.key(store_id, customer_id)},
                                        {OUTBOX_FIELD: 0, JOURNAL: 0})

    def holding_codes(self, store_id: str, codes: list[str]) -> list[str]:
        """The customers of the store whose rewards carry any of these coupon codes."""
        return [d["customer_id"] for d in self.collection.find(
            {"store_id": store_id, "reward_codes": {"$in": codes}}, {"customer_id": 1})]

    def rewards_due(self, now: datetime, limit: int) -> list[tuple[str, str]]:
        """Accounts with a reward that needs the shop by `now`, the longest waiting first."""
        cursor = self.collection.find({"rewards_due_at": {"$lte": now}},
                                      {"store_id": 1, "customer_id": 1}
                                      ).sort("rewards_due_at", ASCENDING).limit(limit)
        return [(d["store_id"], d["customer_id"]) for d in cursor]

    def active_keys(self) -> list[tuple[str, str]]:
        """(store, customer) of every active account."""
        cursor = self.collection.find({"status": "active"}, {"store_id": 1, "customer_id": 1})
        return [(d["store_id"], d["customer_id"]) for d in cursor]

    def get_many(self, ids: Iterable[str]) -> dict[str, dict]:
        """The stored accounts among `ids` (account keys), by key, in one read."""
        return {doc["_id"]: doc for doc in self.collection.find(
            {"_id": {"$in": sorted(set(ids))}}, {OUTBOX_FIELD: 0, JOURNAL: 0})}

    def versions(self, ids: Iterable[str]) -> dict[str, int]:
        """The stored versions of the accounts among `ids` (account keys), in one read."""
        return {doc["_id"]: doc["version"] for doc in self.collection.find(
            {"_id": {"$in": sorted(set(ids))}}, {"version": 1})}

    def holding_codes_by_store(self, codes: dict[str, set[str]]) -> dict[str, list[dict]]:
        """For each store, its accounts whose rewards carry any of its codes (their customer
        id and codes), in one read for every store."""
        wanted = [{"store_id": store_id, "reward_codes": {"$in": sorted(store_codes)}}
                  for store_id, store_codes in sorted(codes.items()) if store_codes]
        found: dict[str, list[dict]] = {}
        if not wanted:
            return found
        for doc in self.collection.find({"$or": wanted},
                                        {"store_id": 1, "customer_id": 1, "reward_codes": 1}):
            found.setdefault(doc["store_id"], []).append(doc)
        return found

    def new(self, store_id: str, customer_id: str, now: datetime | None = None) -> dict:
        return {"_id": self.key(store_id, customer_id), "store_id": store_id,
                "customer_id": customer_id, "status": ACTIVE, "version": 0, "next_seq": 1,
                "created_at": now or utcnow()}

    def save(self, stored: dict | None, working: dict, entries: list[dict],
             events: Iterable[Event], touched_orders: Iterable[str] = (),
             new_request_keys: Iterable[str] = (), touched_rewards: Iterable[str] = (),
             touched_transfers: Iterable[str] = ()) -> bool:
        """Write the working copy if nobody changed the account since it was read; False if
        somebody did (the caller reads again and retries). An existing account gets only what
        a change can touch: its small fields, the orders it changed, its new request keys,
        never the whole map of orders or rewards."""
        change = AccountWrite(None if stored is None else stored["version"], working, entries,
                              list(events), set(touched_orders), list(new_request_keys),
                              set(touched_rewards), set(touched_transfers))
        if stored is None:
            try:
                self.collection.insert_one(change.new_document())
                return True
            except DuplicateKeyError:
                return False
        result = self.collection.update_one(change.condition(), change.update())
        return result.modified_count == 1

    def save_many(self, changes: list["AccountWrite"]) -> set[str]:
        """Write each account's gathered changes if nobody changed it since it was read, all in
        one bulk write; answers the keys of the accounts that were not written.

        An update is an upsert on (key, version read), so an account changed meanwhile makes it
        fail with a duplicate key, naming the change; the bulk result alone counts, and could
        not say which. Accounts are never deleted (erasure keeps a marker), so the upsert never
        inserts."""
        if not changes:
            return set()
        operations = [InsertOne(change.new_document()) if change.version is None
                      else UpdateOne(change.condition(), change.update(), upsert=True)
                      for change in changes]
        try:
            self.collection.bulk_write(operations, ordered=False)
        except BulkWriteError as exc:
            # Writes applied but not confirmed at the write concern are not known written:
            # raise, so the batch is not acknowledged (the entrypoint retries; the writes are
            # compare-and-set, so a repeat is refused as a conflict, never applied twice).
            if exc.details.get("writeConcernErrors"):
                raise
            # Any write error leaves that account to the caller's one-change path, which
            # retries a conflict and raises what is not one.
            return {changes[error["index"]].working["_id"]
                    for error in exc.details.get("writeErrors", [])}
        return set()


@dataclass
class AccountWrite:
    """One account's change as written: the working copy, the ledger entries and events it
    owes, what it touched, and `writes`, how many one-at-a-time changes it stands for (the
    version moves by as many, as if each had been written alone). `version` is the version
    read, None for an account not stored yet."""

    version: int | None
    working: dict
    entries: list[dict] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    touched_orders: set[str] = field(default_factory=set)
    new_request_keys: list[str] = field(default_factory=list)
    touched_rewards: set[str] = field(default_factory=set)
    touched_transfers: set[str] = field(default_factory=set)
    writes: int = 1

    def condition(self) -> dict:
        return {"_id": self.working["_id"], "version": self.version}

    def new_document(self) -> dict:
        fields = {k: v for k, v in self.working.items()
                  if k not in ("_id", "version", JOURNAL, OUTBOX_FIELD)}
        pushed = push_events(self.events)
        return {**fields, "_id": self.working["_id"], "version": self.writes,
                JOURNAL: self.entries,
                OUTBOX_FIELD: pushed.get(OUTBOX_FIELD, {}).get("$each", [])}

    def update(self) -> dict:
        working = self.working
        fields = {k: working[k] for k in SMALL_FIELDS if k in working}
        for order_id in sorted(self.touched_orders):
            fields[f"orders.{order_id}"] = working["orders"][order_id]
        for reward_id in sorted(self.touched_rewards):
            fields[f"rewards.{reward_id}"] = working["rewards"][reward_id]
        for transfer_id in sorted(self.touched_transfers):
            fields[f"transfers.{transfer_id}"] = working["transfers"][transfer_id]
        update: dict = {"$set": fields, "$inc": {"version": self.writes}}
        push = dict(push_events(self.events))
        if self.entries:
            push[JOURNAL] = {"$each": self.entries}
        if self.new_request_keys:
            push["request_keys"] = {"$each": self.new_request_keys}
        if push:
            update["$push"] = push
        return update


class LedgerRepository:
    """The append-only ledger: one document per entry, keyed by account and natural key."""

    def __init__(self, collection: Collection, accounts: Collection) -> None:
        self.collection = collection
        self.accounts = accounts

    def ensure_indexes(self) -> None:
        self.collection.create_index([("store_id", ASCENDING), ("customer_id", ASCENDING),
                                      ("seq", DESCENDING)])

    @staticmethod
    def entry_id(store_id: str, customer_id: str, key: str) -> str:
        return f"{store_id}:{customer_id}:{key}"

    def copy(self, entries: list[dict]) -> None:
        """Insert journal entries; ones already there (a repeat after a crash) are skipped."""
        if not entries:
            return
        try:
            self.collection.insert_many([dict(e) for e in entries], ordered=False)
        except BulkWriteError as exc:
            if any(err.get("code") != 11000 for err in exc.details.get("writeErrors", [])):
                raise

    def flush(self, account_id: str, entries: list[dict]) -> None:
        """Copy an account's journal entries into the ledger, then take them off the account."""
        self.copy(entries)
        self.accounts.update_one({"_id": account_id},
                                 {"$pull": {JOURNAL: {"_id": {"$in": [e["_id"] for e in entries]}}}})

    def flush_many(self, entries: list[dict]) -> None:
        """`flush` for the entries of many accounts: one insert and one pull for them all."""
        if not entries:
            return
        self.copy(entries)
        self.accounts.update_many(
            {"_id": {"$in": sorted({AccountRepository.key(e["store_id"], e["customer_id"])
                                    for e in entries})}},
            {"$pull": {JOURNAL: {"_id": {"$in": [e["_id"] for e in entries]}}}})

    def sweep(self, limit: int = 500) -> int:
        """Finish what a crash left in journals. Answers how many entries were moved."""
        moved = 0
        for doc in self.accounts.find({f"{JOURNAL}.0": {"$exists": True}}, {JOURNAL: 1}).limit(limit):
            self.flush(doc["_id"], doc[JOURNAL])
            moved += len(doc[JOURNAL])
        return moved

    def anonymise(self, store_id: str, customer_ids: list[str]) -> int:
        """The customers' entries stay for the shop's accounts with reasons and details
        blanked; answers how many entries they have."""
        query = {"store_id": store_id, "customer_id": {"$in": customer_ids}}
        self.collection.update_many(query, {"$set": {"reason": "[erased]", "details": {},
                                                     "anonymised": True}})
        return self.collection.count_documents(query)

    def history(self, store_id: str, customer_id: str, before_seq: int | None, size: int
                ) -> list[dict]:
        """Newest first: the ledger, and any entries not yet copied out of the journal."""
        query: dict = {"store_id": store_id, "customer_id": customer_id}
        if before_seq is not None:
            query["seq"] = {"$lt": before_seq}
        found = {e["_id"]: e for e in self.collection.find(query).sort("seq", DESCENDING).limit(size)}
        account = self.accounts.find_one({"_id": AccountRepository.key(store_id, customer_id)},
                                         {JOURNAL: 1})
        for entry in (account or {}).get(JOURNAL) or []:
            if before_seq is None or entry["seq"] < before_seq:
                found.setdefault(entry["_id"], entry)
        return sorted(found.values(), key=lambda e: e["seq"], reverse=True)[:size]


class ProgrammeRepository:
    def __init__(self, collection: Collection) -> None:
        self.collection = collection

    def get(self, store_id: str) -> dict | None:
        return self.collection.find_one({"_id": store_id})

    def save(self, store_id: str, data: dict) -> None:
        self.collection.replace_one({"_id": store_id},
                                    {**data, "_id": store_id, "updated_at": utcnow()}, upsert=True)


# A merge note's life: the merge is being applied, was applied, is being undone, was undone;
# or its unmerge came first (the late merge then does nothing).
MERGING, MERGE_APPLIED, UNMERGING, UNMERGED, UNMERGED_FIRST = (
    "merging", "merged", "unmerging", "unmerged", "unmerged_first")


class MergeNotes:
    """What each merge moved through loyalty, one note per (merge, merged record): what an
    unmerge hands back by, and the marker an unmerge arriving first leaves. Each holds ids and
    counts only (the points themselves are in the accounts and the ledger)."""

    def __init__(self, collection: Collection) -> None:
        self.collection = collection

    def ensure_indexes(self) -> None:
        # An unmerge names its merge; a merge from before merge records had no id, and is found
        # by its two customers.
        self.collection.create_index([("store_id", ASCENDING), ("primary", ASCENDING),
                                      ("merged", ASCENDING)])

    @staticmethod
    def key(store_id: str, merge_key: str) -> str:
        return f"{store_id}:{merge_key}"

    def get(self, store_id: str, merge_key: str) -> dict | None:
        return self.collection.find_one({"_id": self.key(store_id, merge_key)})

    def open(self, store_id: str, merge_key: str, state: str, fields: dict, now: datetime
             ) -> dict | None:
        """The note as it was before this call; None when this call made it, in `state`."""
        return self.collection.find_one_and_update(
            {"_id": self.key(store_id, merge_key)},
            {"$setOnInsert": {**fields, "store_id": store_id, "merge_key": merge_key,
                              "state": state, "created_at": now}},
            upsert=True, return_document=ReturnDocument.BEFORE)

    def move_on(self, store_id: str, merge_key: str, from_states: tuple[str, ...], state: str,
                fields: dict, now: datetime) -> None:
        """The note goes to `state` (with `fields`) if it is in one of `from_states`."""
        self.collection.update_one({"_id": self.key(store_id, merge_key),
                                    "state": {"$in": list(from_states)}},
                                   {"$set": {**fields, "state": state, "updated_at": now}})

    def legacy(self, store_id: str, primary: str, merged: str) -> dict | None:
        """A merge recorded before merge records existed (no merge id) of these two."""
        return self.collection.find_one({"store_id": store_id, "primary": primary,
                                         "merged": merged, "merge_id": None})

    def forget(self, store_id: str, customer_ids: Iterable[str]) -> int:
        """An erasure of a merge's primary or merged record blanks what the merge moved and
        handed back (points, credit, reward ids) from its notes: their keys, ids and state
        stay, so a redelivered merge or unmerge is still a no-op. Answers how many."""
        ids = sorted(set(customer_ids))
        if not ids:
            return 0
        return self.collection.update_many(
            {"store_id": store_id, "$or": [{"primary": {"$in": ids}}, {"merged": {"$in": ids}}]},
            {"$set": {"moved": None, "handed_back": None, "forgotten": True}}).matched_count


class LoyaltyStorage:
    def __init__(self, database: Database) -> None:
        self.database = database
        self.accounts = AccountRepository(database["accounts"])
        self.ledger = LedgerRepository(database["ledger"], database["accounts"])
        self.programmes = ProgrammeRepository(database["programmes"])
        self.erasures = ErasureReceipts(database["erasures"])
        self.coupon_withdrawals = CouponWithdrawals(database["coupon_withdrawals"])
        self.merges = MergeNotes(database["merges"])

    def ensure_indexes(self) -> None:
        self.accounts.ensure_indexes()
        self.ledger.ensure_indexes()
        self.coupon_withdrawals.ensure_indexes()
        self.merges.ensure_indexes()

    def outbox_collections(self) -> list[Collection]:
        return [self.accounts.collection, self.erasures.collection]

    def coupons_owed_for(self, store_id: str, customer_ids: list[str]) -> int:
        """How many coupon withdrawals the customers' rewards are owed."""
        return self.coupon_withdrawals.collection.count_documents(
            {"store_id": store_id, "meta.loyalty_customer": {"$in": customer_ids}})
