"""GDPR erasure in customer_sync: forget a person, keep their orders for the accounts, and
remember (by keyed hash only) that they were forgotten.

An erasure, whether gdpr asked for it (`gdpr.erasure_requested`) or the shop's own privacy
eraser did it (recognised in `core/sync.py`), does the same, in an order that survives a crash at
any step (every step is idempotent, and the next one can still find what it needs):

1. tombstones for every email and shop customer id the person's records hold, so a later
   webhook, backfill or reconciliation is recognised and applied without personal data;
2. each customer record becomes a marker: ids, status `erased`, dates, counts (the events it
   still owed carried contact fields and are dropped);
3. each order is anonymised in place (`anonymise.py` says what stays);
4. stored webhook deliveries about the person are dropped, or redacted while still waiting to
   be applied (their accounting content must still land).

shared.erasure does the rest for a gdpr request: parked messages, the receipt and the
confirmation with counts.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable, Iterable

from pymongo import ASCENDING

from services.customer_sync.privacy.anonymise import (
    anonymised_order_fields,
    emails_of,
    erased_customer_unset,
    real_email_key,
    redact_payload,
)
from services.customer_sync.core.normalise import parse_body
from services.customer_sync.core.written import DocumentRef
from services.customer_sync.repository import CustomerSyncStorage
from services.customer_sync.privacy.tombstones import EMAIL, tombstone_values
from shared.personal_data import Owners, named_customers
from shared.events import Event
from shared.outbox import OUTBOX_FIELD, push_events
from shared.times import utcnow
from shared.conflicts import CONFLICT_RETRIES

log = logging.getLogger(__name__)

ERASED = "erased"
# Who erased: a gdpr request, the shop's privacy eraser, or a record written while an erasure
# ran (a race the writer notices right after its write).
GDPR, SHOP, LATE = "gdpr", "shop", "late"

# Events an erased customer record owes instead of the ones dropped (built from the record
# as it was; the shop's erasure tells consumers the contact fields are gone).
OwedEvents = Callable[[dict], list[Event]]


@dataclass
class ErasureReport:
    """What an erasure did; `touched` as in every use case's `Written`."""

    counts: dict[str, int]
    customer_ids: list[str]
    touched: list[DocumentRef] = field(default_factory=list)  # documents owing events


class CustomerErasure:
    def __init__(self, storage: CustomerSyncStorage,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.storage = storage
        self.clock = clock

    # -- recognising an erased person -------------------------------------------------------
    def erased_customer_for(self, store_id: str, woo_customer_id: int | None = None,
                            email: str | None = None, *, created: datetime | None = None,
                            modified: datetime | None = None) -> str | None:
        """The erased customer id a shop record belongs to, by its shop customer id or email
        tombstone, or None. `created` and `modified` are the record's shop times: an email
        tombstone does not hold for a record created after the erasure (tombstones.py)."""
        for tombstone in self.storage.tombstones.find_all(
                store_id, tombstone_values([real_email_key(email)], [woo_customer_id])):
            if tombstone_holds(tombstone, created, modified):
                return tombstone["customer_id"]
        return None

    def is_erased(self, customer_id: str | None) -> bool:
        if not customer_id:
            return False
        return self.storage.customers.collection.find_one(
            {"_id": customer_id, "status": ERASED}, {"_id": 1}) is not None

    # -- erasing ----------------------------------------------------------------------------
    def erase(self, store_id: str, customer_ids: Iterable[str], email: str | None,
              request_id: str, *, source: str = GDPR, owed: OwedEvents | None = None
              ) -> ErasureReport:
        """Erase the person the ids (and email) name. Idempotent: run again, it finds the same
        records (by id, merge link and tombstone) and counts the same."""
        requested = [c for c in dict.fromkeys(customer_ids) if c]
        docs = self._people(store_id, requested, email)
        ids = sorted({d["_id"] for d in docs} | set(requested))
        orders = list(self.storage.orders.collection.find(
            {"store_id": store_id, "customer_id": {"$in": ids}}, {OUTBOX_FIELD: 0}))
        emails: set[str] = set()
        woo_ids: set[int] = set()
        for doc in [*docs, *orders]:
            emails |= emails_of(doc)
            if isinstance(doc.get("woo_customer_id"), int):
                woo_ids.add(doc["woo_customer_id"])
        if real_email_key(email):
            emails.add(real_email_key(email))
        primary = self._primary(docs, requested)
        now = self.clock()
        if primary is not None:
            self.storage.tombstones.record(store_id, tombstone_values(emails, woo_ids), primary,
                                           ids, source, now)
        touched = []
        for doc in docs:
            events = owed(doc) if owed is not None else []
            self._erase_customer(store_id, doc, request_id, source, events, now)
            if events:
                touched.append((self.storage.customers.collection.name, doc["_id"]))
        self.anonymise_orders(store_id, ids)
        # Staff's notes and reminders are free text about the person, and the timeline is
        # their activity: gone (counts stay those of customers and orders, stable on repeat).
        self.storage.notes.forget(store_id, ids)
        self.storage.reminders.forget(store_id, ids)
        self.storage.timeline.forget(store_id, ids)
        # Merge records keep what each record was before: that goes too.
        self.storage.merges.forget(store_id, ids)
        deliveries, more_woo_ids = self._purge_inbox(store_id, woo_ids, orders, emails)
        if primary is not None and more_woo_ids - woo_ids:
            self.storage.tombstones.record(store_id, tombstone_values([], more_woo_ids - woo_ids),
                                           primary, ids, source, now)
        counts = {
            "customers": self.storage.customers.collection.count_documents(
                {"store_id": store_id, "erasure_request_ids": request_id}),
            "orders": self.storage.orders.collection.count_documents(
                {"store_id": store_id, "customer_id": {"$in": ids}}),
            "inbox_deliveries": deliveries,
        }
        log.info("erased a person's data", extra={"store_id": store_id, "source": source,
                                                  "request_id": request_id, "counts": counts})
        return ErasureReport(counts, ids, touched)

    def _people(self, store_id: str, customer_ids: list[str], email: str | None) -> list[dict]:
        """The person's customer records: the ids asked for, every record with their email
        (live or tombstoned), and guests merged into any of them."""
        customers = self.storage.customers.collection
        ids = set(customer_ids)
        key = real_email_key(email)
        if key:
            for query in ({"email_key": key}, {"guest_email_key": key}):
                ids |= {d["_id"] for d in customers.find({"store_id": store_id, **query}, {"_id": 1})}
            ids |= self.storage.tombstones.customer_ids(store_id, [key])
        docs: list[dict] = []
        for _ in range(5):  # merges chain rarely deeper than one
            docs = list(customers.find({"store_id": store_id, "_id": {"$in": sorted(ids)}}))
            more = {d["_id"] for d in customers.find(
                {"store_id": store_id, "merged_into": {"$in": sorted(ids)}}, {"_id": 1})}
            more |= {d["pending_merge"] for d in docs if d.get("pending_merge")}
            if more <= ids:
                break
            ids |= more
        return docs

    @staticmethod
    def _primary(docs: list[dict], requested: list[str]) -> str | None:
        """The id later data of the person is filed under: the registered record, else the
        first asked for."""
        registered = sorted(d["_id"] for d in docs if d.get("registered"))
        if registered:
            return registered[0]
        if requested:
            return requested[0]
        return docs[0]["_id"] if docs else None

    def _erase_customer(self, store_id: str, doc: dict, request_id: str, source: str,
                        events: list[Event], now: datetime) -> None:
        orders_count = self.storage.orders.collection.count_documents(
            {"store_id": store_id, "customer_id": doc["_id"]})
        fields: dict = {"status": ERASED, "orders_count": orders_count}
        if doc.get("status") != ERASED:
            fields["erased_at"] = now
        if source == SHOP and not doc.get("shop_erased_at"):
            fields["shop_erased_at"] = now
        unset = erased_customer_unset(doc)
        if events:
            fields[OUTBOX_FIELD] = push_events(events)[OUTBOX_FIELD]["$each"]
            unset = [name for name in unset if name != OUTBOX_FIELD]
        update: dict = {"$set": fields, "$inc": {"version": 1},
                        "$addToSet": {"erasure_request_ids": request_id, "erased_by": source}}
        if unset:
            update["$unset"] = {name: "" for name in unset}
        # Unconditional (no version check): a writer that read the record before this fails
        # its own compare-and-set, reads again, and finds the person erased.
        self.storage.customers.collection.update_one({"_id": doc["_id"]}, update)

    def anonymise_orders(self, store_id: str, customer_ids: list[str]) -> int:
        """Anonymise every order of these customers not yet anonymised; answers how many."""
        orders = self.storage.orders.collection
        done = 0
        for doc in orders.find({"store_id": store_id, "customer_id": {"$in": customer_ids},
                                "personal_data_erased": {"$ne": True}}, {OUTBOX_FIELD: 0}):
            for _ in range(CONFLICT_RETRIES):
                result = orders.update_one(
                    {"_id": doc["_id"], "version": doc.get("version")},
                    {"$set": anonymised_order_fields(doc), "$inc": {"version": 1}})
                if result.modified_count:
                    done += 1
                    break
                doc = orders.find_one({"_id": doc["_id"]}, {OUTBOX_FIELD: 0})
                if doc is None or doc.get("personal_data_erased"):
                    break
        return done

    def _purge_inbox(self, store_id: str, woo_ids: set[int], orders: list[dict],
                     emails: set[str]) -> tuple[int, set[int]]:
        """Drop the person's applied deliveries; redact those still waiting or quarantined (so
        the order's accounting state still lands, and a quarantined one is never lost).
        Answers the count, and the shop customer ids of the
        customer deliveries found (by email) for tombstones."""
        inbox = self.storage.inbox
        order_ids = sorted(int(o["order_id"]) for o in orders if str(o.get("order_id")).isdigit())
        found = inbox.about_person(store_id, sorted(woo_ids), order_ids, sorted(emails))
        customer_ids_seen: set[int] = set()
        for delivery in found:
            if delivery.get("resource") == "customer" and isinstance(delivery.get("resource_id"), int):
                customer_ids_seen.add(delivery["resource_id"])
            if delivery.get("status") in ("pending", "processing", "quarantined"):
                # Still to apply (a quarantined one once replayed): keep its accounting state.
                try:
                    payload = parse_body(delivery.get("body") or "{}")
                except ValueError:
                    payload = {"id": delivery.get("resource_id")}
                redacted = redact_payload(delivery.get("resource", ""), payload)
                inbox.redact(delivery["_id"], json.dumps(redacted))
            else:
                inbox.drop(delivery["_id"])
        return len(found), customer_ids_seen


def tombstone_holds(tombstone: dict, created: datetime | None,
                    modified: datetime | None) -> bool:
    """Whether a tombstone applies to a record with these shop times: always for the erased
    shop account; for an email, unless the shop created the record (or, lacking a creation
    time, last modified it) after the latest erasure of that email."""
    if tombstone.get("kind") != EMAIL:
        return True
    erased_at = tombstone.get("erased_at") or tombstone.get("first_erased_at")
    shop_time = created or modified
    return erased_at is None or shop_time is None or shop_time <= erased_at


# -- whose a document is (the erasure's proof) -----------------------------------------------
def document_owners(storage: CustomerSyncStorage) -> Owners:
    """Whose each of customer_sync's documents is, so the proof search tells the erased
    person's phone or name apart from another customer's: a customer record is its own id (and
    the one it was merged into), a stored delivery belongs to the customer its shop customer or
    order is filed under (live or tombstoned), anything else names its `customer_id`."""
    customers, inbox = storage.customers.collection.name, storage.inbox.collection.name

    def owners(collection: str, doc: dict) -> set[str]:
        if collection == customers:
            return {i for i in (doc.get("_id"), doc.get("merged_into")) if isinstance(i, str)}
        if collection == inbox:
            return _delivery_owners(storage, doc)
        return named_customers(collection, doc)

    return owners


def _delivery_owners(storage: CustomerSyncStorage, delivery: dict) -> set[str]:
    store_id, resource_id = delivery.get("store_id"), delivery.get("resource_id")
    if not isinstance(store_id, str) or not isinstance(resource_id, int):
        return set()
    woo_customer_ids: set[int] = set()
    owners: set[str] = set()
    if delivery.get("resource") == "customer":
        woo_customer_ids.add(resource_id)
    elif delivery.get("resource") == "order":
        order = storage.orders.get(store_id, str(resource_id))
        if order is not None and isinstance(order.get("customer_id"), str):
            owners.add(order["customer_id"])
        try:
            shop_customer = json.loads(delivery.get("body") or "{}").get("customer_id")
        except (ValueError, AttributeError):
            shop_customer = None
        if isinstance(shop_customer, int) and shop_customer > 0:
            woo_customer_ids.add(shop_customer)
    for woo_id in woo_customer_ids:
        doc = storage.customers.by_woo_id(store_id, woo_id)
        if doc is not None:
            owners.add(doc["_id"])
        tombstone = storage.tombstones.find(store_id, tombstone_values([], [woo_id]))
        if tombstone is not None:
            owners.update(tombstone.get("customer_ids") or [tombstone["customer_id"]])
    return owners


# -- the gdpr conversation ------------------------------------------------------------------
def shop_erasures(storage: CustomerSyncStorage, store_id: str, since: datetime | None,
                  limit: int) -> list[dict]:
    """Customer records the shop's own privacy eraser erased (oldest first, from `since` on,
    inclusive), for the gdpr service to carry the erasure to every other service."""
    query: dict = {"store_id": store_id, "shop_erased_at": {"$ne": None}}
    if since is not None:
        query["shop_erased_at"] = {"$gte": since}
    cursor = (storage.customers.collection
              .find(query, {"registered": 1, "shop_erased_at": 1, "orders_count": 1,
                            "merged_into": 1})
              .sort([("shop_erased_at", ASCENDING), ("_id", ASCENDING)]).limit(limit))
    # A guest record merged into a registered customer is the same person: `merged_into`
    # lets the caller ask for one erasure of both ids.
    return [{"customer_id": d["_id"], "registered": bool(d.get("registered")),
             "merged_into": d.get("merged_into"),
             "shop_erased_at": d["shop_erased_at"].isoformat(),
             "orders_count": int(d.get("orders_count") or 0)} for d in cursor]
