"""A customer's activity timeline: what customer_sync did about them, newest first.

Entries ride in the same document write as the change they describe (a `timeline_owed` array
on the customer, order, note or reminder document, beside the outbox), so a crash cannot keep
the change and lose its entry. `TimelineProjector.flush` then moves them into the `timeline`
collection (an upsert keyed by the entry id, then a `$pull`), and a sweep moves whatever a
crash left behind. Entry ids are stable: an entry derived from an event has the event's id
(itself derived from the change), so a change applied twice records one entry.

Entries hold no personal data of the customer (no names, addresses, note text): the summary
names fields, order numbers and amounts; the actor is the staff member or "shop".
"""
from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import Any, Iterable

from pymongo import ASCENDING, DESCENDING, UpdateOne
from pymongo.collection import Collection
from pymongo.errors import BulkWriteError, DuplicateKeyError

from services.customer_sync.schemas import PageSchema, load, require_text
from shared import money
from shared.errors import NotFound, ValidationError
from shared.events import Event
from shared.outbox import OUTBOX_FIELD, push_events
from shared.paging import decode_cursor, encode_cursor
from shared.times import as_utc, to_millis, utcnow

log = logging.getLogger(__name__)

TIMELINE_FIELD = "timeline_owed"
SHOP = "shop"
SYSTEM = "system"
_NAMESPACE = uuid.UUID("0b7d5f0e-9a55-4c7e-a4a9-52a1f7d3c6e2")
# Changes whose use case records its own entry (the staff member's, not the shop's): the
# customer.updated its write-back produces carries one of these correlation id prefixes.
STAFF_CORRELATION_PREFIXES = ("rectify-", "staff-")


def entry_id(*parts: object) -> str:
    """A stable entry id for a change that is not an event (a note edit, a status change)."""
    return str(uuid.uuid5(_NAMESPACE, ":".join(map(str, parts))))


def make_entry(entry_id_: str, customer_id: str, kind: str, summary: str, actor: str,
               details: dict | None = None, at: datetime | None = None) -> dict:
    """One timeline entry as it is owed on a document and stored."""
    return {"entry_id": entry_id_, "customer_id": customer_id, "kind": kind,
            "summary": summary, "actor": actor or SYSTEM, "details": dict(details or {}),
            "at": to_millis(at or utcnow())}


def money_text(amount: Any) -> str:
    """{"amount": 4990, "currency": "EUR"} as "49.90 EUR"."""
    if not isinstance(amount, dict):
        return ""
    return money.money_text(int(amount.get("amount") or 0), str(amount.get("currency") or ""))


# -- entries for the events customer_sync publishes ------------------------------------------
def entry_for_event(event: Event, actor: str | None = None) -> dict | None:
    """The timeline entry an event of customer_sync's stands for (None: not about a customer,
    or a staff change whose use case records its own entry)."""
    data = event.data
    customer_id = data.get("customer_id")
    if not customer_id:
        return None  # a guest order without a customer record
    if actor is None and str(event.correlation_id or "").startswith(STAFF_CORRELATION_PREFIXES):
        return None
    who = actor or SHOP
    kind, at = event.event_type, as_utc(event.occurred_at)
    details: dict = {}
    if kind == "customer.created":
        summary = ("Customer account created in the shop" if data.get("registered")
                   else "Customer first seen (guest)")
        at = as_utc(data.get("date_created")) or at
        details = {"registered": bool(data.get("registered"))}
    elif kind == "customer.updated":
        changed = list(data.get("changed_fields") or [])
        summary = f"Details changed in the shop: {', '.join(changed) or 'none'}"
        details = {"changed_fields": changed}
    elif kind == "customer.deleted":
        summary = "Customer deleted in the shop"
    elif kind == "customer.merged":
        summary = "A guest record with the same email was merged into this customer"
        details = {"merged_customer_id": data.get("merged_customer_id")}
    elif kind.startswith("order."):
        number = data.get("number") or data.get("order_id")
        details = {"order_id": data.get("order_id"), "number": number,
                   "status": data.get("status"), "total": data.get("total")}
        if kind == "order.placed":
            summary = f"Order #{number} placed ({money_text(data.get('total'))})"
            at = as_utc(data.get("date_created")) or at
        elif kind == "order.refunded":
            summary = f"Order #{number} refunded {money_text(data.get('refund_delta'))}"
            details["refund_delta"] = data.get("refund_delta")
        elif kind == "order.cancelled":
            summary = f"Order #{number} cancelled (was {data.get('old_status')})"
            details["old_status"] = data.get("old_status")
        elif data.get("old_status") != data.get("new_status"):
            summary = f"Order #{number} status {data.get('old_status')} -> {data.get('new_status')}"
            details.update(old_status=data.get("old_status"), new_status=data.get("new_status"))
        else:
            summary = f"Order #{number} changed: {', '.join(data.get('changed_fields') or [])}"
            details["changed_fields"] = list(data.get("changed_fields") or [])
    else:
        return None
    return make_entry(event.event_id, customer_id, kind, summary, who, details, at)


def entries_for_events(events: Iterable[Event], actor: str | None = None) -> list[dict]:
    return [e for e in (entry_for_event(event, actor) for event in events) if e is not None]


class TimelineOwing:
    """Mixin for a VersionedRepository: the entries of a change ride in its write.

    By default they are derived from the events the change owes (actor "shop"); `entries=`
    gives them explicitly, `actor=` names the staff member behind derived ones."""

    collection: Collection

    def insert(self, doc: dict, events: Iterable[Event], *, actor: str | None = None,
               entries: Iterable[dict] | None = None) -> bool:
        events = list(events)
        owed = list(entries) if entries is not None else entries_for_events(events, actor)
        if owed:
            doc = {**doc, TIMELINE_FIELD: owed}
        return super().insert(doc, events)  # type: ignore[misc]

    def update(self, doc_id: Any, version: int, fields: dict, events: Iterable[Event] = (),
               unset: Iterable[str] = (), *, actor: str | None = None,
               entries: Iterable[dict] | None = None) -> bool:
        events = list(events)
        owed = list(entries) if entries is not None else entries_for_events(events, actor)
        update: dict = {"$set": fields, "$inc": {"version": 1}}
        push = dict(push_events(events))
        if owed:
            push[TIMELINE_FIELD] = {"$each": owed}
        if push:
            update["$push"] = push
        unset = [name for name in unset if name not in (OUTBOX_FIELD, TIMELINE_FIELD)]
        if unset:
            update["$unset"] = {name: "" for name in unset}
        result = self.collection.update_one({"_id": doc_id, "version": version}, update)
        return result.modified_count == 1


# -- the timeline collection ----------------------------------------------------------------
class TimelineRepository:
    def __init__(self, collection: Collection) -> None:
        self.collection = collection

    def ensure_indexes(self) -> None:
        self.collection.create_index([("store_id", ASCENDING), ("customer_id", ASCENDING),
                                      ("at", DESCENDING), ("_id", DESCENDING)])

    def record(self, store_id: str, entries: Iterable[dict]) -> int:
        """Store entries once each (by entry id); answers how many were new."""
        added = 0
        for entry in entries:
            doc = {k: v for k, v in entry.items() if k != "entry_id"}
            try:
                result = self.collection.update_one(
                    {"_id": entry["entry_id"]},
                    {"$setOnInsert": {**doc, "store_id": store_id}}, upsert=True)
            except DuplicateKeyError:  # two flushes raced on the same entry
                continue
            added += 1 if result.upserted_id is not None else 0
        return added

    def record_all(self, entries: list[tuple[str, dict]]) -> int:
        """`record` for (store id, entry) pairs in one bulk write; answers how many were new.
        An entry another writer stored meanwhile is left as it is, as in `record`."""
        if not entries:
            return 0
        upserts = [UpdateOne({"_id": entry["entry_id"]},
                             {"$setOnInsert": {**{k: v for k, v in entry.items()
                                                  if k != "entry_id"}, "store_id": store_id}},
                             upsert=True) for store_id, entry in entries]
        try:
            return self.collection.bulk_write(upserts, ordered=False).upserted_count
        except BulkWriteError as exc:  # duplicate keys of raced upserts; the rest went in
            if exc.details.get("writeConcernErrors"):
                raise  # applied but not confirmed: the batch is retried (its writes repeat)
            if any(error.get("code") != 11000 for error in exc.details.get("writeErrors", [])):
                raise
            return exc.details.get("nUpserted", 0)

    def page(self, store_id: str, customer_id: str, after: tuple[datetime, str] | None,
             size: int) -> list[dict]:
        query: dict = {"store_id": store_id, "customer_id": customer_id}
        if after is not None:
            at, last_id = after
            query = {"$and": [query, {"$or": [{"at": {"$lt": at}},
                                              {"at": at, "_id": {"$lt": last_id}}]}]}
        return list(self.collection.find(query)
                    .sort([("at", DESCENDING), ("_id", DESCENDING)]).limit(size))

    def forget(self, store_id: str, customer_ids: list[str]) -> int:
        return self.collection.delete_many(
            {"store_id": store_id, "customer_id": {"$in": customer_ids}}).deleted_count


class TimelineProjector:
    """Moves owed entries from the documents that carry them into the timeline."""

    def __init__(self, timeline: TimelineRepository, sources: list[Collection],
                 customers: Collection) -> None:
        self.timeline = timeline
        self.sources = {c.name: c for c in sources}
        self.customers = customers

    def ensure_indexes(self) -> None:
        for collection in self.sources.values():
            collection.create_index([(f"{TIMELINE_FIELD}.entry_id", ASCENDING)], sparse=True)

    def flush(self, refs: Iterable[tuple[str, Any]]) -> int:
        """Move what the named documents (collection name, _id) owe; answers entries added."""
        added = 0
        for name, doc_id in dict.fromkeys(refs):
            collection = self.sources.get(name)
            if collection is None:
                continue
            doc = collection.find_one({"_id": doc_id}, {TIMELINE_FIELD: 1, "store_id": 1})
            if doc:
                added += self._move(collection, doc)
        return added

    def sweep(self, limit: int = 1000) -> int:
        """Move everything still owed (after a crash, or writes made by another instance)."""
        added = 0
        for collection in self.sources.values():
            for doc in collection.find({f"{TIMELINE_FIELD}.entry_id": {"$exists": True}},
                                       {TIMELINE_FIELD: 1, "store_id": 1}).limit(limit):
                added += self._move(collection, doc)
        return added

    def _move(self, collection: Collection, doc: dict) -> int:
        owed = doc.get(TIMELINE_FIELD) or []
        if not owed:
            return 0
        customer_ids = sorted({e["customer_id"] for e in owed})
        erased = {d["_id"] for d in self.customers.find(
            {"_id": {"$in": customer_ids}, "status": "erased"}, {"_id": 1})}
        added = self.timeline.record(doc["store_id"],
                                     [e for e in owed if e["customer_id"] not in erased])
        collection.update_one({"_id": doc["_id"]}, {"$pull": {TIMELINE_FIELD: {
            "entry_id": {"$in": [e["entry_id"] for e in owed]}}}})
        return added


# -- reading ----------------------------------------------------------------------------------
def entry_view(doc: dict) -> dict:
    at = as_utc(doc.get("at"))
    return {"entry_id": doc["_id"], "at": at.isoformat() if at else None, "kind": doc["kind"],
            "summary": doc["summary"], "actor": doc["actor"], "details": doc.get("details") or {}}


def _encode(at: datetime, last_id: str) -> str:
    return encode_cursor([at.isoformat(), last_id])


def _decode(cursor: str) -> tuple[datetime, str]:
    at, last_id = decode_cursor(cursor)
    parsed = as_utc(at)
    if parsed is None or not isinstance(last_id, str):
        raise ValueError("not a timeline cursor")
    # mongomock and MongoDB hand times back without microseconds below a millisecond.
    return parsed, last_id


def known_customer(storage: Any, store_id: str, customer_id: Any) -> dict:
    """The customer staff write about: NotFound when there is none (or it was erased)."""
    customer_id = require_text(customer_id, "customer_id")
    doc = storage.customers.get(store_id, customer_id)
    if doc is None or doc.get("status") == "erased":
        raise NotFound(f"no customer {customer_id} in store {store_id}")
    return doc


def timeline_page(storage: Any, store_id: str, customer_id: str, page: dict | None) -> dict:
    """A customer's entries, newest first: {"items", "next_cursor"}."""
    store_id = require_text(store_id, "store_id")
    customer = known_customer(storage, store_id, customer_id)
    paging = load(PageSchema(), page, "page")
    after = None
    if paging["cursor"]:
        try:
            after = _decode(paging["cursor"])
        except (ValueError, TypeError):
            raise ValidationError("page.cursor is not valid", {"fields": {"page": ["cursor"]}})
    docs = storage.timeline.page(store_id, customer["_id"], after, paging["size"] + 1)
    more = len(docs) > paging["size"]
    docs = docs[: paging["size"]]
    next_cursor = _encode(as_utc(docs[-1]["at"]), docs[-1]["_id"]) if more and docs else None
    return {"items": [entry_view(d) for d in docs], "next_cursor": next_cursor}


# -- what other services did about the customer ---------------------------------------------------
_REWARD_VERBS = {"loyalty.reward_issued": "issued", "loyalty.reward_used": "used",
                 "loyalty.reward_returned": "returned", "loyalty.reward_expired": "expired"}


_CONSENT_WORDS = {"email_marketing": "Email marketing", "sms_marketing": "SMS marketing",
                  "data_processing": "Data processing"}


def entry_for_foreign_event(event: Event) -> dict | None:
    """The timeline entry for a segmentation, loyalty or notifications event (its id is the
    event's, so a redelivery records nothing new). No free text is copied (a points reason
    can be a staff member's words about the person)."""
    data = event.data
    kind = event.event_type
    at = as_utc(event.occurred_at)
    if kind in ("customer.tagged", "customer.untagged"):
        verb = "Tagged" if kind == "customer.tagged" else "Tag removed:"
        summary = f"{verb} {data['tag']} ({data.get('source')})"
        actor = data.get("actor") or "segmentation"
        details = {"tag": data["tag"], "source": data.get("source"), "rule_id": data.get("rule_id")}
    elif kind == "customer.segment_changed":
        summary = f"Segment {data.get('old_segment') or 'none'} -> {data['new_segment']}"
        actor = "segmentation"
        details = {"old_segment": data.get("old_segment"), "new_segment": data["new_segment"]}
    elif kind == "loyalty.points_changed":
        summary = f"{data['delta']:+d} loyalty points ({data['kind']}), balance {data['balance']}"
        actor = "loyalty"
        details = {"kind": data["kind"], "delta": data["delta"], "balance": data["balance"],
                   "order_id": data.get("order_id")}
    elif kind in _REWARD_VERBS:
        what = "Store credit" if data["kind"] == "credit" else f"Reward ({data.get('points')} points)"
        summary = f"{what} {money_text(data['amount'])} {_REWARD_VERBS[kind]}"
        if kind == "loyalty.reward_used":
            summary += f" on order {data['order_id']}"
        elif kind != "loyalty.reward_issued" and data.get("points_returned"):
            summary += f", {data['points_returned']} points back"
        actor = "loyalty"
        details = {"reward_id": data["reward_id"], "kind": data["kind"], "code": data["code"],
                   "amount": data["amount"], "points": data.get("points"),
                   "order_id": data.get("order_id"), "reason": data.get("reason")}
    elif kind == "consent.changed":
        state = "pending confirmation" if data.get("pending") else (
            "on" if data["granted"] else "off")
        summary = (f"{_CONSENT_WORDS.get(data['purpose'], data['purpose'])} consent {state} "
                   f"({data['source'].replace('_', ' ')})")
        actor = data.get("origin") or "gdpr"
        details = {"purpose": data["purpose"], "granted": data["granted"],
                   "pending": bool(data.get("pending")), "source": data["source"]}
    elif kind == "notification.sent":
        summary = f"{str(data['channel']).upper()} sent: {data['template']}"
        actor = "notifications"
        details = {"channel": data["channel"], "purpose": data.get("purpose"),
                   "template": data["template"], "send_id": data.get("send_id")}
    else:
        return None
    return make_entry(event.event_id, data["customer_id"], kind, summary, actor, details, at)


def record_foreign_event(storage: Any, event: Event) -> bool:
    """Put another service's event on the customer's timeline; False when the customer is
    unknown here or erased (nothing is kept about them)."""
    entry = entry_for_foreign_event(event)
    if entry is None:
        return False
    customer = storage.customers.get(event.store_id, entry["customer_id"])
    if customer is None or customer.get("status") == "erased":
        return False
    return storage.timeline.record(event.store_id, [entry]) == 1


def record_foreign_events(storage: Any, events: Iterable[Event]) -> int:
    """`record_foreign_event` for a batch: the customers read at once, every entry written in
    one bulk write. Entries are keyed by their event's id and depend on nothing else stored,
    so neither order nor repetition within the batch changes the result. Answers how many
    entries were new."""
    entries = [(event.store_id, entry) for event in events
               if (entry := entry_for_foreign_event(event)) is not None]
    customers = storage.customers.states_of(sorted({e["customer_id"] for _, e in entries}))
    kept = [(store_id, entry) for store_id, entry in entries
            if (held := customers.get(entry["customer_id"])) is not None
            and held.get("store_id") == store_id and held.get("status") != "erased"]
    return storage.timeline.record_all(kept)
