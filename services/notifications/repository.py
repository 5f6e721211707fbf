"""notifications' storage: the contact projection, templates, workflows, store settings, the
sends (scheduled, in flight and done: one document each, which is also the send log), bulk
jobs, each channel's run of failures (channel_health.py) and the addresses not to send to
(suppression.py), keyed by a digest of the address.

The projection is kept by conditional updates, one per fact and its time: a fact older than the
one held changes nothing, so events delivered twice or out of order leave the newest state.
"""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import datetime, timezone
from typing import Any

from pymongo import ASCENDING, DESCENDING, InsertOne, ReturnDocument, UpdateOne
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import BulkWriteError, DuplicateKeyError

from shared.coupon_withdrawals import CouponWithdrawals
from shared.erasure import ErasureMarkers, ErasureReceipts
from shared.merge_receipts import MergeReceipts
from shared.errors import ValidationError
from shared.outbox import push_events
from shared.times import utcnow
from shared.paging import decode_cursor, encode_cursor

ACTIVE, DELETED, ERASED, MERGED = "active", "deleted", "erased", "merged"
# A suppressed address's history keeps its newest changes; older ones fall off.
SUPPRESSION_HISTORY_KEPT = 100


def phone_key(phone: str | None) -> str | None:
    """Digits only, so "+44 7700 900123" and "+447700900123" find the same contact."""
    digits = re.sub(r"\D", "", phone or "")
    return digits or None


def normalised(channel: str, address: str) -> str:
    """The form an address is suppressed under: an email lower-cased (mail systems treat the
    case of addresses as one, and erring towards not sending is the safe side), a number as
    its digits ("+44 7700 900123" is "447700900123")."""
    if channel == "email":
        return address.strip().lower()
    return re.sub(r"\D", "", address)


def address_key(store_key: bytes, channel: str, address: str) -> str:
    """A keyed digest (HMAC-SHA256 with the store's own random key) of the normalised address:
    the record's key, which outlives the address in clear when the person is erased, so the
    suppression keeps working. Keyed, as customer_sync's tombstones are, so a list of
    addresses hashed by whoever reads the database does not reveal who was suppressed."""
    message = f"{channel}\x00{normalised(channel, address)}".encode()
    return hmac.new(store_key, message, hashlib.sha256).hexdigest()


class ContactRepository(ErasureMarkers):
    held_flag = "had_contact"

    def __init__(self, collection: Collection) -> None:
        self.collection = collection

    def ensure_indexes(self) -> None:
        c = self.collection
        c.create_index([("store_id", ASCENDING), ("customer_id", ASCENDING)], unique=True)
        c.create_index([("phone_key", ASCENDING)])
        c.create_index([("store_id", ASCENDING), ("segment", ASCENDING)])
        c.create_index([("link_id", ASCENDING)], sparse=True)

    def get(self, store_id: str, customer_id: str) -> dict | None:
        return self.collection.find_one({"_id": self.key(store_id, customer_id)}, {"outbox": 0})

    def link_id(self, store_id: str, customer_id: str, new_id: str) -> str | None:
        """The contact's link id (links.py), given `new_id` if it has none yet; None for a
        contact not held or erased. Two senders racing keep the first id written."""
        key = self.key(store_id, customer_id)
        self.collection.update_one({"_id": key, "status": ACTIVE, "link_id": {"$exists": False}},
                                   {"$set": {"link_id": new_id}})
        doc = self.collection.find_one({"_id": key, "status": ACTIVE}, {"link_id": 1})
        return (doc or {}).get("link_id")

    def by_link_id(self, link_id: str) -> dict | None:
        """The active contact a link names (an erased or deleted one answers None)."""
        return self.collection.find_one({"link_id": link_id, "status": ACTIVE}, {"outbox": 0})

    def apply(self, store_id: str, customer_id: str, stamp: str, at: datetime, fields: dict,
              unset: list[str] | None = None) -> bool:
        """Set `fields` if the time held under `stamp` is older than `at` (or absent), on a
        contact that is not erased. True when it changed the contact."""
        key = self.key(store_id, customer_id)
        update: dict[str, Any] = {"$set": {**fields, stamp: at}}
        if unset:
            update["$unset"] = {name: "" for name in unset}
        condition = {"_id": key, "status": {"$ne": ERASED},
                     "$or": [{stamp: {"$exists": False}}, {stamp: {"$lt": at}}]}
        result = self.collection.update_one(condition, update)
        if result.matched_count:
            return bool(result.modified_count)
        doc = self.fresh(store_id, customer_id)
        for name, value in {**fields, stamp: at}.items():
            set_path(doc, name, value)
        try:
            self.collection.insert_one(doc)
            return True
        except DuplicateKeyError:
            # It exists: created meanwhile by another event (apply to it), or it holds a
            # newer fact, or it is erased (then this changes nothing).
            return bool(self.collection.update_one(condition, update).modified_count)

    def fresh(self, store_id: str, customer_id: str) -> dict:
        """The contact a customer's first fact creates, before the fact. Its maps exist from
        the start, so later writes set keys in them and never the whole map."""
        return {"_id": self.key(store_id, customer_id), "store_id": store_id,
                "customer_id": customer_id, "status": ACTIVE, "tags": {}, "tag_at": {},
                "groups": {}, "group_at": {}, "saved_segments": {}, "saved_segment_at": {},
                "consent": {}, "order_ids": [], "created_at": utcnow()}

    def of_keys(self, keys: list[str]) -> dict[str, dict]:
        """The contacts held under these keys, by key, in one read (their outboxes left out)."""
        if not keys:
            return {}
        return {doc["_id"]: doc
                for doc in self.collection.find({"_id": {"$in": keys}}, {"outbox": 0})}

    def write_projected(self, writes: list[ProjectedWrite]) -> set[str]:
        """Each contact written once, in one bulk write: a new one inserted, a held one
        updated only if what the batch read of it (`expected`) still holds. Answers the keys
        whose write did not take (inserted meanwhile, or changed under the batch): their
        events go the one-event way."""
        if not writes:
            return set()
        operations = [InsertOne(w.document) if w.insert else
                      UpdateOne({"_id": w.key, **w.expected}, w.update) for w in writes]
        failed_inserts: set[int] = set()
        try:
            result = self.collection.bulk_write(operations, ordered=False)
            matched = result.matched_count
        except BulkWriteError as exc:
            if exc.details.get("writeConcernErrors"):
                raise  # applied but not confirmed: the batch is retried (its writes repeat)
            matched = exc.details.get("nMatched", 0)
            failed_inserts = {error["index"] for error in exc.details.get("writeErrors", [])}
        failed = {writes[i].key for i in failed_inserts}
        updates = [w for w in writes if not w.insert]
        if matched < len(updates):
            # Which compare-and-set missed, read back: one more round trip, on conflict only.
            held = self.of_keys([w.key for w in updates])
            failed |= {w.key for w in updates if not w.took(held.get(w.key))}
        return failed

    def change_consent(self, doc_id: str, purpose: str, before: str, held: dict,
                       at: datetime, events: list) -> bool:
        """The contact's consent to `purpose` becomes `held`, with the events announcing it,
        only if the contact is active and the consent is still `before` ("granted",
        "pending" or anything else for off): a change that lost a race changes nothing."""
        condition = {"_id": doc_id, "status": ACTIVE,
                     f"consent.{purpose}.granted": True if before == "granted" else {"$ne": True},
                     f"consent.{purpose}.pending": True if before == "pending" else {"$ne": True}}
        return bool(self.collection.update_one(
            condition, {"$set": {f"consent.{purpose}": held, f"consent_at.{purpose}": at},
                        "$push": push_events(events)}).modified_count)

    def note_forget_request(self, doc_id: str, request_id: str, at: datetime) -> None:
        """The erasure request the contact filed from its preference page (the first kept)."""
        self.collection.update_one(
            {"_id": doc_id, "forget_request": {"$exists": False}},
            {"$set": {"forget_request": {"request_id": request_id, "at": at}}})

    def mark_merged(self, store_id: str, customer_id: str, into: str) -> None:
        """The contact leaves every audience: merged into `into` (one is made where none was,
        so a late event cannot bring in a live one); an erased contact stays erased."""
        key = self.key(store_id, customer_id)
        if self.collection.update_one({"_id": key, "status": {"$ne": ERASED}},
                                      {"$set": {"status": MERGED, "merged_into": into}}
                                      ).matched_count:
            return
        try:
            self.collection.insert_one({
                "_id": key, "store_id": store_id, "customer_id": customer_id, "status": MERGED,
                "merged_into": into, "tags": {}, "groups": {}, "consent": {}, "order_ids": [],
                "created_at": utcnow()})
        except DuplicateKeyError:  # made meanwhile by an event (or erased: left alone)
            self.collection.update_one({"_id": key, "status": {"$ne": ERASED}},
                                       {"$set": {"status": MERGED, "merged_into": into}})

    def restore(self, store_id: str, customer_id: str, merged_into: str, status: str) -> bool:
        """A contact merged into `merged_into` is its own again, with the status it had."""
        return bool(self.collection.update_one(
            {"_id": self.key(store_id, customer_id), "status": MERGED,
             "merged_into": merged_into},
            {"$set": {"status": status}, "$unset": {"merged_into": ""}}).modified_count)

    def dates_of_active(self, store_id: str):
        """The store's active contacts with what date rules read: birthday and last order."""
        return self.collection.find({"store_id": store_id, "status": ACTIVE},
                                    {"customer_id": 1, "birthday": 1, "last_order": 1})

    def active_with_phone(self, key: str):
        """Every active contact, in any store, whose phone number has these digits."""
        return self.collection.find({"phone_key": key, "status": ACTIVE},
                                    {"store_id": 1, "customer_id": 1})

    def in_audience(self, store_id: str, kind: str, value: Any):
        """The store's active contacts in a bulk send's audience (a segment, saved segment,
        group, tag, or a list of customer ids), each with only its customer id."""
        query: dict = {"store_id": store_id, "status": ACTIVE}
        if kind == "segment":
            query["segment"] = value
        elif kind in ("group", "tag"):
            query[f"{kind}s.{value}"] = True
        elif kind == "saved_segment":
            query[f"saved_segments.{value}"] = True
        else:
            # by document key: one lookup per id, rather than each contact against the list
            query["_id"] = {"$in": [self.key(store_id, v) for v in value]}
        return self.collection.find(query, {"customer_id": 1})

    def owe(self, doc_id: str, events: list) -> None:
        """Events the contact owes, in its outbox."""
        self.collection.update_one({"_id": doc_id}, {"$push": push_events(events)})

    def add_order(self, store_id: str, customer_id: str, order: dict) -> tuple[bool, bool]:
        """Record an order once. Answers (new to this contact, its first order).

        Idempotent, answers included: an order seen again (a redelivery, or a retry after a
        failure between these writes) is still its contact's first order if it was recorded
        first, so the first-order workflow it failed to schedule is scheduled on the retry
        (the send's natural key keeps it to one)."""
        key = self.key(store_id, customer_id)
        order_id = order["order_id"]
        self.apply(store_id, customer_id, "order_seen_at", order["seen_at"], {})  # exists
        before = self.collection.find_one_and_update(
            {"_id": key, "status": {"$ne": ERASED}, "order_ids": {"$ne": order_id}},
            {"$push": {"order_ids": order_id}}, projection={"order_ids": 1},
            return_document=ReturnDocument.BEFORE)
        if before is not None:
            new, first = True, not before.get("order_ids")
        else:
            held = self.collection.find_one({"_id": key, "status": {"$ne": ERASED}},
                                            {"order_ids": 1})
            if held is None:
                return False, False  # erased: nothing is kept or sent
            new, first = False, (held.get("order_ids") or [None])[0] == order_id
        self.collection.update_one(
            {"_id": key, "$or": [{"last_order": None}, {"last_order": {"$exists": False}},
                                 {"last_order.date": {"$lte": order["date"]}}]},
            {"$set": {"last_order": order}})
        return new, first


class ProjectedWrite:
    """One contact's write of a batch: the document to insert, or the `$set`/`$unset` to
    apply if the paths in `expected` still hold what the batch read."""

    def __init__(self, key: str, document: dict | None = None, expected: dict | None = None,
                 to_set: dict | None = None, to_unset: list[str] | None = None) -> None:
        self.key = key
        self.insert = document is not None
        self.document = document
        self.expected = expected or {}
        self.to_set = to_set or {}
        self.to_unset = to_unset or []

    @property
    def update(self) -> dict:
        update: dict[str, Any] = {}
        if self.to_set:
            update["$set"] = self.to_set
        if self.to_unset:
            update["$unset"] = {name: "" for name in self.to_unset}
        return update

    def took(self, held: dict | None) -> bool:
        """Whether the contact read back holds what this write set (it took, or another
        writer made it so)."""
        if held is None:
            return False
        return all(get_path(held, name) == value for name, value in self.to_set.items()) \
            and all(get_path(held, name) is ABSENT for name in self.to_unset)


# A dotted path's absence, told apart from a stored None (the projection's rules use these too).
ABSENT = object()


def get_path(doc: Any, dotted: str) -> Any:
    """The value at a dotted path, or `ABSENT`."""
    for part in dotted.split("."):
        if not isinstance(doc, dict) or part not in doc:
            return ABSENT
        doc = doc[part]
    return doc


def set_path(doc: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    for part in parts[:-1]:
        doc = doc.setdefault(part, {})
    doc[parts[-1]] = value


class SendRepository:
    """One document per message, keyed by its natural key (workflow, customer, trigger)."""

    def __init__(self, collection: Collection) -> None:
        self.collection = collection

    def ensure_indexes(self) -> None:
        c = self.collection
        c.create_index([("status", ASCENDING), ("due_at", ASCENDING)])
        c.create_index([("store_id", ASCENDING), ("customer_id", ASCENDING),
                        ("sent_at", ASCENDING)])
        c.create_index([("provider_id", ASCENDING)])
        c.create_index([("bulk_id", ASCENDING), ("status", ASCENDING)])
        c.create_index([("store_id", ASCENDING), ("created_at", DESCENDING), ("_id", DESCENDING)])

    def schedule(self, send: dict) -> bool:
        """False when a send with the same key exists (the trigger was delivered again)."""
        try:
            self.collection.insert_one({**send, "status": "scheduled", "attempts": [],
                                        "created_at": utcnow()})
            return True
        except DuplicateKeyError:
            return False

    def claim_batch(self, now: datetime, lease_until: datetime, owner: str, limit: int
                    ) -> list[dict]:
        """Take up to `limit` due sends for this sender, each atomically (two senders never
        hold the same one). A send whose sender stopped mid-way (its lease ran out) is taken
        over. One query finds the candidates, oldest due first; each is then taken by its id,
        so the due-date order is sorted once per batch, not once per message."""
        taken: list[dict] = []
        for state, condition in (("scheduled", {"due_at": {"$lte": now}}),
                                 ("sending", {"lease_until": {"$lt": now}})):
            if len(taken) >= limit:
                break
            candidates = [d["_id"] for d in self.collection.find(
                {"status": state, **condition}, {"_id": 1}).sort("due_at", ASCENDING)
                .limit(limit - len(taken))]
            for send_id in candidates:
                doc = self.collection.find_one_and_update(
                    {"_id": send_id, "status": state, **condition},
                    {"$set": {"status": "sending", "lease_until": lease_until, "owner": owner}},
                    return_document=ReturnDocument.AFTER)
                if doc is not None:  # another sender may have taken it first
                    taken.append(doc)
        return taken

    def page(self, store_id: str, filters: dict, size: int, cursor: str | None
             ) -> tuple[list[dict], str | None]:
        """The store's sends, newest first, `size` at a time: a keyset on (created_at, _id),
        so a page stays right while new sends arrive. The cursor names the last send shown."""
        query: dict[str, Any] = {"store_id": store_id, **filters}
        if cursor:
            at, send_id = decode_send_cursor(cursor)
            query["$or"] = [{"created_at": {"$lt": at}},
                            {"created_at": at, "_id": {"$lt": send_id}}]
        docs = list(self.collection.find(query, {"outbox": 0, "owner": 0, "lease_until": 0})
                    .sort([("created_at", DESCENDING), ("_id", DESCENDING)]).limit(size + 1))
        more = len(docs) > size
        docs = docs[:size]
        return docs, (encode_send_cursor(docs[-1]) if more else None)

    def log_of(self, store_id: str, customer_id: str, limit: int):
        """A customer's sends, newest first."""
        return self.collection.find(
            {"store_id": store_id, "customer_id": customer_id}, {"outbox": 0, "owner": 0}
        ).sort("created_at", -1).limit(limit)

    def coupons_not_withdrawn(self, store_id: str, customer_ids: list[str]):
        """The customers' sends whose coupon is not yet taken back from the shop."""
        return self.collection.find(
            {"store_id": store_id, "customer_id": {"$in": list(customer_ids)},
             "coupon.code": {"$type": "string"}, "coupon.withdrawn": {"$ne": True}},
            {"store_id": 1, "coupon": 1, "status": 1})

    def add_new(self, sends: list[dict]) -> None:
        """Schedule many sends in one round trip; one already there (the same natural key,
        scheduled by an earlier try) is skipped."""
        if not sends:
            return
        try:
            self.collection.bulk_write([InsertOne(send) for send in sends], ordered=False)
        except BulkWriteError as exc:
            if any(e.get("code") != 11000 for e in exc.details.get("writeErrors", [])):
                raise

    def update_claimed(self, send_id: str, owner: str, update: dict) -> bool:
        """Apply `update` to a send only while this sender holds it; False when it does not."""
        return self.collection.update_one({"_id": send_id, "owner": owner, "status": "sending"},
                                          update).modified_count == 1

    def record_delivery(self, provider_id: str, rank: int, fields: dict) -> bool:
        """A provider's delivery report, kept unless one as far along or further is held
        (reports arrive out of order); True when it changed the send."""
        return bool(self.collection.update_one(
            {"provider_id": provider_id, "$or": [{"delivery_rank": {"$exists": False}},
                                                 {"delivery_rank": {"$lt": rank}}]},
            {"$set": fields}).modified_count)

    def sms_by_provider_id(self, provider_id: str) -> dict | None:
        """The SMS a provider's message id names: its store and number."""
        return self.collection.find_one({"provider_id": provider_id, "channel": "sms"},
                                        {"store_id": 1, "to": 1})

    def erase_for(self, store_id: str, customer_ids: list[str]) -> int:
        """The customers' sends not gone yet are cancelled, and every send keeps its facts
        (when, which template, what happened) without address, number, subject or a
        provider's words; answers how many sends they have."""
        sends = self.collection
        sends.update_many({"store_id": store_id, "customer_id": {"$in": customer_ids},
                           "status": {"$in": ["scheduled", "sending"]}},
                          {"$set": {"status": "cancelled", "reason": "customer erased",
                                    "held_reason": "cancelled"}})
        for send in sends.find({"store_id": store_id, "customer_id": {"$in": customer_ids},
                                "redacted": {"$ne": True}}, {"attempts": 1, "reason": 1}):
            # Provider replies can quote the address ("550 <ada@...> unknown"): keep only
            # the outcome of each attempt, not its words.
            attempts = [{k: v for k, v in a.items() if k not in ("detail", "reason")}
                        for a in send.get("attempts") or []]
            fields = {"redacted": True, "attempts": attempts}
            if send.get("reason"):
                fields["reason"] = "[erased]"
            sends.update_one({"_id": send["_id"]},
                             {"$unset": {"to": "", "subject": "", "facts": "",
                                         "provider_error": ""},
                              "$set": fields})
        return sends.count_documents({"store_id": store_id, "customer_id": {"$in": customer_ids}})

    def cancel_for_workflow(self, store_id: str, workflow_id: str) -> int:
        """A deleted workflow's sends not yet gone are cancelled; answers how many."""
        return self.collection.update_many(
            {"store_id": store_id, "workflow_id": workflow_id, "status": "scheduled"},
            {"$set": {"status": "cancelled", "reason": "workflow deleted",
                      "held_reason": "cancelled"}}).modified_count

    def pending_of(self, store_id: str, customer_id: str) -> list[dict]:
        """The customer's sends not yet taken by a sender, from a workflow or a bulk send."""
        return list(self.collection.find(
            {"store_id": store_id, "customer_id": customer_id, "status": "scheduled",
             "$or": [{"workflow_id": {"$ne": None}}, {"bulk_id": {"$ne": None}}]},
            {"workflow_id": 1, "bulk_id": 1, "step": 1}))

    def move_pending(self, send_id: str, from_id: str, to_id: str, merge_key: str) -> bool:
        """A still pending send goes to `to_id`, remembering whom it came from."""
        return bool(self.collection.update_one(
            {"_id": send_id, "customer_id": from_id, "status": "scheduled"},
            {"$set": {"customer_id": to_id,
                      "moved_by_merge": {"merge_key": merge_key, "from": from_id}}}
        ).modified_count)

    def cancel_pending(self, send_id: str, customer_id: str, reason: str,
                       merge_key: str) -> bool:
        return bool(self.collection.update_one(
            {"_id": send_id, "customer_id": customer_id, "status": "scheduled"},
            {"$set": {"status": "cancelled", "reason": reason, "held_reason": "cancelled",
                      "cancelled_by_merge": merge_key}}).modified_count)

    def hand_back(self, store_id: str, primary_id: str, restored_id: str,
                  merge_key: str) -> int:
        """The sends a merge moved to the primary that are still pending go back."""
        return self.collection.update_many(
            {"store_id": store_id, "customer_id": primary_id, "status": "scheduled",
             "moved_by_merge.merge_key": merge_key, "moved_by_merge.from": restored_id},
            {"$set": {"customer_id": restored_id}, "$unset": {"moved_by_merge": ""}}
        ).modified_count

    def statuses_of_bulk(self, store_id: str, bulk_id: str) -> dict[str, int]:
        """How many of a bulk send's messages are in each status."""
        return {row["_id"]: row["n"] for row in self.collection.aggregate([
            {"$match": {"bulk_id": bulk_id, "store_id": store_id}},
            {"$group": {"_id": "$status", "n": {"$sum": 1}}}])}

    def marketing_sent_since(self, store_id: str, customer_id: str, since: datetime) -> int:
        return self.collection.count_documents(
            {"store_id": store_id, "customer_id": customer_id, "purpose": "marketing",
             "status": "sent", "sent_at": {"$gte": since}})


def encode_send_cursor(send: dict) -> str:
    at = send["created_at"]
    at = at if at.tzinfo else at.replace(tzinfo=timezone.utc)
    return encode_cursor([at.isoformat(), send["_id"]])


def decode_send_cursor(cursor: str) -> tuple[datetime, str]:
    """The (created_at, id) a cursor names; ValidationError for anything this did not issue."""
    try:
        body = decode_cursor(cursor)
        at, send_id = datetime.fromisoformat(body[0]), body[1]
        if not isinstance(send_id, str) or len(body) != 2:
            raise ValueError
    except (ValueError, TypeError, KeyError, IndexError):
        raise ValidationError("cursor is not one this service issued",
                              {"fields": {"cursor": ["not a cursor of this list"]}}) from None
    # The clients are tz_aware: stored times read back, and compare, as aware UTC.
    return (at if at.tzinfo else at.replace(tzinfo=timezone.utc)).astimezone(timezone.utc), send_id


class SuppressionRepository:
    """One document per store, channel and address (keyed by its digest), and each store's
    digest key (made on first use, never changed: a new key would orphan every record)."""

    def __init__(self, collection: Collection, keys: Collection) -> None:
        self.collection = collection
        self.keys = keys
        self._store_keys: dict[str, bytes] = {}

    def store_key(self, store_id: str) -> bytes:
        known = self._store_keys.get(store_id)
        if known is None:
            try:
                self.keys.update_one({"_id": store_id},
                                     {"$setOnInsert": {"key": secrets.token_hex(32)}},
                                     upsert=True)
            except DuplicateKeyError:  # another process made it at the same moment
                pass
            known = bytes.fromhex(self.keys.find_one({"_id": store_id})["key"])
            self._store_keys[store_id] = known
        return known

    def ensure_indexes(self) -> None:
        self.collection.create_index([("store_id", ASCENDING), ("channel", ASCENDING),
                                      ("address", ASCENDING)])
        self.collection.create_index([("store_id", ASCENDING), ("active", ASCENDING),
                                      ("_id", ASCENDING)])

    def key(self, store_id: str, channel: str, address: str) -> str:
        return f"{store_id}:{channel}:{address_key(self.store_key(store_id), channel, address)}"

    def get(self, store_id: str, channel: str, address: str) -> dict | None:
        return self.collection.find_one({"_id": self.key(store_id, channel, address)})

    @staticmethod
    def _fresh(_id: str, change_key: str | None) -> dict:
        """The record, unless it holds the change with this key already."""
        return {"_id": _id, **({"history.key": {"$ne": change_key}} if change_key else {})}

    def state(self, _id: str) -> dict | None:
        """Whether the record is active and when it was last lifted."""
        return self.collection.find_one({"_id": _id}, {"lifted_at": 1, "active": 1})

    def add_history(self, _id: str, change_key: str | None, entry: dict) -> None:
        """An entry kept in the record's history (its newest entries only), once per key."""
        self.collection.update_one(self._fresh(_id, change_key), {"$push": {"history": {
            "$each": [entry], "$slice": -SUPPRESSION_HISTORY_KEPT}}})

    def suppress(self, _id: str, change_key: str | None, fields: dict, kind: str,
                 inserted: dict, entry: dict) -> bool:
        """The record active with `fields` and `kind`, made with `inserted` where none was,
        the change kept in its history; False when it holds this change already."""
        update = {
            "$set": {"active": True, **fields},
            "$addToSet": {"kinds": kind},
            "$setOnInsert": inserted,
            "$push": {"history": {"$each": [entry], "$slice": -SUPPRESSION_HISTORY_KEPT}}}
        try:
            result = self.collection.update_one(self._fresh(_id, change_key), update, upsert=True)
        except DuplicateKeyError:  # it exists and already holds this change
            return False
        return result.upserted_id is not None or bool(result.modified_count)

    def lift(self, _id: str, now: datetime, entry: dict) -> dict | None:
        """An active record lifted, the change kept in its history: the record after, or None
        when there was no active one."""
        result = self.collection.update_one(
            {"_id": _id, "active": True},
            {"$set": {"active": False, "kinds": [], "lifted_at": now, "updated_at": now},
             "$push": {"history": {"$each": [entry], "$slice": -SUPPRESSION_HISTORY_KEPT}}})
        if not result.modified_count:
            return None
        return self.collection.find_one({"_id": _id})

    def page(self, store_id: str, keys: list[str] | None, channel: str | None,
             include_lifted: bool, after: str | None, size: int) -> list[dict]:
        """Up to `size` of the store's records in key order past `after`, only those `keys`
        when given."""
        query: dict[str, Any] = {"store_id": store_id}
        if not include_lifted:
            query["active"] = True
        if channel:
            query["channel"] = channel
        if keys is not None:
            query["_id"] = keys[0] if len(keys) == 1 else {"$in": keys}
        if after:
            query.setdefault("$and", []).append({"_id": {"$gt": after}})
        return list(self.collection.find(query).sort("_id", ASCENDING).limit(size))

    def of_keys(self, keys: list[str]) -> list[dict]:
        """The records with these keys, in key order."""
        return list(self.collection.find({"_id": {"$in": keys}}).sort("_id", ASCENDING))

    def forget_addresses(self, keys: list[str]) -> int:
        """The records keep their digests but lose the address in clear and every detail of
        their history that could quote it; answers how many changed."""
        forgotten = 0
        for doc in self.collection.find({"_id": {"$in": keys}}, {"history": 1}):
            history = [{k: v for k, v in entry.items() if k != "detail"}
                       for entry in doc.get("history") or []]
            result = self.collection.update_one(
                {"_id": doc["_id"]}, {"$unset": {"address": ""},
                                      "$set": {"history": history, "address_erased": True}})
            forgotten += result.modified_count
        return forgotten


class ChannelStateRepository:
    """One document per channel: how many provider calls in a row failed, since when, and the
    last error. Every instance writes it with single atomic updates, so none is lost."""

    def __init__(self, collection: Collection) -> None:
        self.collection = collection

    def failed(self, channel: str, reason: str, at: datetime) -> None:
        update = {"$inc": {"consecutive_failures": 1},
                  "$set": {"last_error": reason, "last_error_at": at},
                  "$min": {"failing_since": at}}
        try:
            self.collection.update_one({"_id": channel}, update, upsert=True)
        except DuplicateKeyError:  # another instance made the document first: now it exists
            self.collection.update_one({"_id": channel}, update)

    def sent(self, channel: str, at: datetime) -> None:
        """A message accepted ends the run. Written only when there was one, so a working
        channel costs a read, not a write, per message."""
        self.collection.update_one(
            {"_id": channel, "consecutive_failures": {"$gt": 0}},
            {"$set": {"consecutive_failures": 0, "recovered_at": at},
             "$unset": {"failing_since": ""}})

    def all(self) -> dict[str, dict]:
        return {doc["_id"]: doc for doc in self.collection.find().limit(10)}


class TemplateRepository:
    """A store's own templates (the shipped defaults are code), keyed by store and slug."""

    def __init__(self, collection: Collection) -> None:
        self.collection = collection

    def ensure_indexes(self) -> None:
        self.collection.create_index([("store_id", ASCENDING), ("slug", ASCENDING)], unique=True)

    def for_store(self, store_id: str) -> list[dict]:
        return list(self.collection.find({"store_id": store_id}, {"_id": 0, "store_id": 0}))

    def put(self, store_id: str, template: dict) -> None:
        self.collection.replace_one({"store_id": store_id, "slug": template["slug"]},
                                    {**template, "store_id": store_id, "updated_at": utcnow()},
                                    upsert=True)

    def delete(self, store_id: str, slug: str) -> bool:
        return bool(self.collection.delete_one({"store_id": store_id, "slug": slug})
                    .deleted_count)


class WorkflowRepository:
    """A store's workflows, keyed by store and workflow id."""

    def __init__(self, collection: Collection) -> None:
        self.collection = collection

    def ensure_indexes(self) -> None:
        self.collection.create_index([("store_id", ASCENDING), ("workflow_id", ASCENDING)],
                                     unique=True)

    def for_store(self, store_id: str) -> list[dict]:
        return list(self.collection.find({"store_id": store_id}, {"_id": 0, "store_id": 0}))

    def using_template(self, store_id: str, slug: str) -> list[str]:
        """The ids of the store's workflows that send this template."""
        return [w["workflow_id"] for w in self.collection.find(
            {"store_id": store_id, "template": slug}, {"workflow_id": 1})]

    def trigger_events(self) -> frozenset[str]:
        """The event types that start an enabled workflow of any store."""
        return frozenset(self.collection.distinct("trigger.event",
                                                  {"enabled": {"$ne": False}}))

    def stores_with_date_rules(self) -> list[str]:
        """Every store with a workflow a date triggers: what the date-rule timer walks."""
        return self.collection.distinct("store_id", {"trigger.date": {"$exists": True}})

    def put(self, store_id: str, workflow: dict) -> None:
        self.collection.replace_one(
            {"store_id": store_id, "workflow_id": workflow["workflow_id"]},
            {**workflow, "store_id": store_id, "updated_at": utcnow()}, upsert=True)

    def delete(self, store_id: str, workflow_id: str) -> bool:
        return bool(self.collection.delete_one({"store_id": store_id,
                                                "workflow_id": workflow_id}).deleted_count)


class StoreSettingsRepository:
    """Each store's notification settings, one document keyed by store id."""

    def __init__(self, collection: Collection) -> None:
        self.collection = collection

    def get(self, store_id: str) -> dict | None:
        return self.collection.find_one({"_id": store_id})

    def exists(self, store_id: str) -> bool:
        return self.collection.find_one({"_id": store_id}, {"_id": 1}) is not None

    def put(self, store_id: str, settings: dict) -> None:
        self.collection.replace_one({"_id": store_id}, {**settings, "updated_at": utcnow()},
                                    upsert=True)


class BulkJobRepository:
    """One document per bulk send, keyed by store and bulk id: its audience and progress."""

    def __init__(self, collection: Collection) -> None:
        self.collection = collection

    @staticmethod
    def key(store_id: str, bulk_id: str) -> str:
        return f"{store_id}:{bulk_id}"

    def get(self, store_id: str, bulk_id: str) -> dict | None:
        return self.collection.find_one({"_id": self.key(store_id, bulk_id)})

    def start(self, store_id: str, bulk_id: str, job: dict) -> None:
        """The job recorded as scheduling, unless asked before (a repeat keeps the first)."""
        self.collection.update_one(
            {"_id": self.key(store_id, bulk_id)},
            {"$setOnInsert": {**job, "store_id": store_id, "created_at": utcnow(),
                              "state": "scheduling"}}, upsert=True)

    def scheduled(self, store_id: str, bulk_id: str, total: int) -> None:
        self.collection.update_one({"_id": self.key(store_id, bulk_id)},
                                   {"$set": {"state": "scheduled", "total": total}})

    def completed(self, store_id: str, bulk_id: str, at: datetime) -> None:
        """A scheduled job whose messages are all done is marked completed (once)."""
        self.collection.update_one({"_id": self.key(store_id, bulk_id), "state": "scheduled"},
                                   {"$set": {"state": "completed", "completed_at": at}})


class NotificationsStorage:
    def __init__(self, database: Database) -> None:
        self.database = database
        self.contacts = ContactRepository(database["contacts"])
        self.sends = SendRepository(database["sends"])
        self.templates = TemplateRepository(database["templates"])
        self.workflows = WorkflowRepository(database["workflows"])
        self.settings = StoreSettingsRepository(database["store_settings"])
        self.bulk_jobs = BulkJobRepository(database["bulk_jobs"])
        self.erasures = ErasureReceipts(database["erasures"])
        self.coupon_withdrawals = CouponWithdrawals(database["coupon_withdrawals"])
        self.suppressions = SuppressionRepository(database["suppressions"],
                                                  database["suppression_keys"])
        self.channel_state = ChannelStateRepository(database["channel_state"])
        self.merges = MergeReceipts(database["merges"])

    def ensure_indexes(self) -> None:
        self.contacts.ensure_indexes()
        self.sends.ensure_indexes()
        self.suppressions.ensure_indexes()
        self.coupon_withdrawals.ensure_indexes()
        self.templates.ensure_indexes()
        self.workflows.ensure_indexes()
        self.merges.ensure_indexes()

    def knows_store(self, store_id: str) -> bool:
        """A store notifications has heard of: its settings, or any customer of it."""
        return (self.settings.exists(store_id)
                or self.contacts.collection.find_one({"store_id": store_id},
                                                     {"_id": 1}) is not None)

    def outbox_collections(self) -> list[Collection]:
        return [self.sends.collection, self.contacts.collection, self.erasures.collection]
