"""Applying WooCommerce changes to customer_sync's state, and the events each change owes.

One code path for webhooks, backfill and reconciliation, so they produce the same state and the
same events: a backfill after webhooks, or twice in a row, finds every state already held and
publishes nothing new. Event ids derive from the change, so a change applied twice (a crash
before the delivery was marked done) cannot mint a second event either.
"""
from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable

from shared.events import Event, build_event
from services.customer_sync.core import changes
from services.customer_sync.privacy.anonymise import (
    anonymise_order_snapshot,
    is_blank_customer,
    is_shop_erasure,
    order_is_guest,
    real_email_key,
)
from services.customer_sync.core.changes import Freshness, PlannedEvent
from services.customer_sync.core.merge_rules import (company_changes, merged_values, snapshot,
                                                     taken_company)
from services.customer_sync.core.merge_steps import (finish_merge, guest_merge_id,
                                                     live_customer_id)
from services.customer_sync.core.written import DocumentRef
from services.customer_sync.crm.company_matching import CompanyMatching
from services.customer_sync.crm.field_rules import VALUES_FIELD
from services.customer_sync.privacy.consent_capture import CaptureSettings, ConsentCapture
from services.customer_sync.privacy.erasure import LATE, SHOP, CustomerErasure
from services.customer_sync.privacy.tombstones import WOO_CUSTOMER
from services.customer_sync.core.normalise import (
    CustomerSnapshot,
    OrderSnapshot,
    normalise_customer,
    normalise_order,
)
from services.customer_sync.repository import (
    CustomerSyncStorage,
    new_customer_id,
)
from shared.times import iso, utcnow
from shared.conflicts import attempts

log = logging.getLogger(__name__)

_EVENT_NAMESPACE = uuid.UUID("6f1c9a52-4b9e-4c55-9d8f-3c2e7f1a0b11")


def stable_event_id(store_id: str, *parts: object) -> str:
    return str(uuid.uuid5(_EVENT_NAMESPACE, ":".join([store_id, *map(str, parts)])))


@dataclass
class ApplyResult:
    """What applying one resource state did; `touched` as in every use case's `Written`."""

    outcome: str  # created | updated | unchanged | stale | ignored | deleted | erased
    events: list[str] = field(default_factory=list)
    touched: list[DocumentRef] = field(default_factory=list)  # documents with events
    # The state was about an erased person: what the shop sent must not be kept (the webhook
    # inbox redacts the delivery's body).
    personal_data_dropped: bool = False

    def merge(self, other: "ApplyResult") -> None:
        self.events.extend(other.events)
        self.touched.extend(other.touched)
        self.personal_data_dropped = self.personal_data_dropped or other.personal_data_dropped


def _money(amount: int, currency: str) -> dict:
    return {"amount": int(amount), "currency": currency}


def customer_event_data(doc: dict) -> dict:
    """The contact fields customer events carry (what segmentation and notifications keep)."""
    return {
        "customer_id": doc["_id"],
        "woo_customer_id": doc.get("woo_customer_id"),
        "registered": bool(doc.get("registered")),
        "email": doc.get("email") or None,
        "first_name": doc.get("first_name", ""),
        "last_name": doc.get("last_name", ""),
        "phone": doc.get("phone", ""),
        "company": doc.get("company", ""),
        "billing": doc.get("billing") or {},
        "shipping": doc.get("shipping") or {},
        "date_created": iso(doc.get("date_created")),
        "date_modified": iso(max((t for t in (doc.get("woo_date_modified"),
                                               doc.get("contact_from_order_at"))
                                   if t is not None), default=None)),
        "birthday": doc.get("birthday"),
        "account_status": doc.get("account_status") or "active",
        "custom_fields": doc.get("custom_fields") or {},
        "company_id": doc.get("company_id") or None,
    }


def order_event_data(doc: dict) -> dict:
    currency = doc["currency"]
    return {
        "order_id": doc["order_id"],
        "number": doc["number"],
        "customer_id": doc.get("customer_id"),
        "is_guest": order_is_guest(doc),
        "status": doc["status"],
        "currency": currency,
        "total": _money(doc["total"], currency),
        "subtotal": _money(doc["subtotal"], currency),
        "discount_total": _money(doc["discount_total"], currency),
        "shipping_total": _money(doc["shipping_total"], currency),
        "tax_total": _money(doc["tax_total"], currency),
        "total_refunded": _money(doc["total_refunded"], currency),
        "date_created": iso(doc.get("date_created")),
        "date_paid": iso(doc.get("date_paid")),
        "date_completed": iso(doc.get("date_completed")),
        "date_modified": iso(doc.get("date_modified")),
        "line_items": [
            {**{k: item[k] for k in ("line_id", "product_id", "variation_id", "name", "sku",
                                      "quantity")},
             "subtotal": _money(item["subtotal"], currency),
             "total": _money(item["total"], currency)}
            for item in doc.get("line_items", [])
        ],
        "coupon_codes": list(doc.get("coupon_codes", [])),
        "payment_method": doc.get("payment_method", ""),
        "billing_country": (doc.get("billing") or {}).get("country", ""),
    }


def _order_fields(snap: OrderSnapshot) -> dict:
    return {
        "order_id": snap.order_id,
        "number": snap.number,
        "status": snap.status,
        "currency": snap.currency,
        "woo_customer_id": snap.woo_customer_id,
        "billing": snap.billing,
        "shipping": snap.shipping,
        "total": snap.total,
        "subtotal": snap.subtotal,
        "discount_total": snap.discount_total,
        "shipping_total": snap.shipping_total,
        "tax_total": snap.tax_total,
        "total_refunded": snap.total_refunded,
        "refunds": snap.refunds,
        "line_items": snap.line_items,
        "coupon_codes": snap.coupon_codes,
        "payment_method": snap.payment_method,
        "date_created": snap.date_created,
        "date_modified": snap.date_modified,
        "date_paid": snap.date_paid,
        "date_completed": snap.date_completed,
        "anonymized": snap.anonymized,
        "content_hash": snap.content_hash,
    }


class CustomerSync:
    """The use cases of customer_sync's write side."""

    def __init__(self, storage: CustomerSyncStorage, clock: Callable[[], datetime] = utcnow) -> None:
        self.storage = storage
        self.clock = clock
        self.erasure = CustomerErasure(storage, clock)
        self.capture_settings = CaptureSettings(storage)
        self.consent = ConsentCapture(storage, self.capture_settings, stable_event_id, clock)
        # Customers join a company by their email domain in the write that creates or changes
        # them, where the store has it on (crm/company_matching.py).
        self.company_matching = CompanyMatching(storage, clock)

    # -- entry point ---------------------------------------------------------------------
    def apply(self, store_id: str, resource: str, action: str, payload: dict, *,
              correlation_id: str, from_rest: bool = False) -> ApplyResult:
        """Apply one webhook topic (`resource.action`) or REST state to the store's data,
        then capture the consent its mapped opt-in meta data gives (privacy/consent_capture.py)."""
        if resource == "customer":
            if action == "deleted":
                return self.delete_customer(store_id, int(payload["id"]), correlation_id)
            result = self.apply_customer(store_id, normalise_customer(payload), correlation_id)
        elif resource == "order":
            if action == "deleted":
                return self.trash_order(store_id, int(payload["id"]), correlation_id)
            result = self.apply_order(store_id, normalise_order(payload), correlation_id,
                                      from_rest=from_rest)
        else:
            return ApplyResult("ignored")
        if result.outcome not in ("erased", "ignored") and not result.personal_data_dropped:
            touched = self.consent.after_apply(store_id, resource, payload, correlation_id)
            if touched:
                result.events.append("consent.captured")
                result.touched.extend(touched)
        return result

    # -- customers -----------------------------------------------------------------------
    def _event(self, event_type: str, store_id: str, data: dict, correlation_id: str,
               *id_parts: object) -> Event:
        return build_event(
            event_type, store_id=store_id, data=data, correlation_id=correlation_id,
            causation_id=correlation_id,
            event_id=stable_event_id(store_id, event_type, *id_parts),
            occurred_at=self.clock(),
        )

    def apply_customer(self, store_id: str, snap: CustomerSnapshot, correlation_id: str) -> ApplyResult:
        for _ in attempts(f"customer {snap.woo_customer_id}"):
            if self.erasure.erased_customer_for(store_id, snap.woo_customer_id, snap.email,
                                                created=snap.date_created,
                                                modified=snap.date_modified) is not None:
                return ApplyResult("erased", personal_data_dropped=True)
            existing, guest = self._find_registered(store_id, snap.woo_customer_id, snap.email_key)
            if is_shop_erasure(existing, snap):
                return self._erase_for_shop(store_id, existing, correlation_id)
            if existing is None and guest is None and is_blank_customer(snap):
                return self._erased_unknown_for_shop(store_id, snap)
            if guest is not None:
                result = self._register_guest(store_id, guest, snap, correlation_id)
                if result is not None:
                    return result
                continue
            if existing is None:
                result = self._create_registered(store_id, snap, correlation_id)
                if result is not None:
                    return result
                continue
            result = self._update_registered(store_id, existing, snap, correlation_id)
            if result is not None:
                return result

    def _find_registered(self, store_id: str, woo_customer_id: int, email: str | None
                         ) -> tuple[dict | None, dict | None]:
        """The record of WooCommerce customer N, finishing any merge it has pending; or, when
        there is none, the active guest with that email, who is about to become N."""
        customers = self.storage.customers
        doc = customers.by_woo_id(store_id, woo_customer_id)
        if doc is not None and (doc.get("pending_merge") or doc.get("pending_merge_id")):
            self.resume_merge(store_id, doc)
            doc = customers.by_woo_id(store_id, woo_customer_id)
        if doc is not None or not email:
            return doc, None
        guest = customers.guest_by_email(store_id, email)
        return None, (guest if guest is not None and guest.get("status") == "active" else None)

    def _registered_fields(self, snap: CustomerSnapshot) -> dict:
        contact = snap.contact()
        return {
            **contact,
            "email_key": snap.email_key,
            "woo_customer_id": snap.woo_customer_id,
            "registered": True,
            "username": snap.username,
            "role": snap.role,
            "is_paying_customer": snap.is_paying_customer,
            "date_created": snap.date_created,
            "woo_date_modified": snap.date_modified,
            "content_hash": snap.content_hash,
            "email_unusable": snap.email_unusable,
        }

    def _create_registered(self, store_id: str, snap: CustomerSnapshot, correlation_id: str):
        customer_id = new_customer_id()
        doc = {"_id": customer_id, "store_id": store_id, "status": "active",
               **self._registered_fields(snap), "created_at": self.clock()}
        doc.update(self.company_matching.joined(store_id, doc))
        event = self._event("customer.created", store_id, customer_event_data(doc), correlation_id,
                            customer_id)
        if not self.storage.customers.insert(doc, [event]):
            return None
        late = self._erase_if_tombstoned(store_id, doc)
        if late is not None:
            return late
        return ApplyResult("created", ["customer.created"], [("customers", customer_id)])

    def _register_guest(self, store_id: str, guest: dict, snap: CustomerSnapshot, correlation_id: str):
        """A guest's email now belongs to a registered customer: the guest record becomes it."""
        fields = self._registered_fields(snap)
        fields.update(self.company_matching.joined(store_id, {**guest, **fields}))
        after = {**guest, **fields}
        changed = changes.changed_contact_fields(guest, after) + ["registered"]
        if "company_id" in fields:
            changed.append("company_id")
        event = self._event("customer.updated", store_id,
                            {**customer_event_data(after), "changed_fields": changed},
                            correlation_id, guest["_id"], guest["version"])
        ok = self.storage.customers.update(guest["_id"], guest["version"], fields, [event],
                                           unset=["guest_email_key"], read=guest)
        if not ok:
            return None
        return ApplyResult("updated", ["customer.updated"], [("customers", guest["_id"])])

    def _update_registered(self, store_id: str, existing: dict, snap: CustomerSnapshot,
                           correlation_id: str):
        if existing.get("status") == "deleted":
            return ApplyResult("ignored")  # WordPress never brings a deleted user back
        if existing.get("status") == "merged":
            return self._update_merged(existing, snap)
        fields = self._newer_fields(existing, snap)
        if isinstance(fields, ApplyResult):
            return fields
        changed = changes.changed_contact_fields(existing, {**existing, **fields})
        merged_from = None
        if "email" in changed and snap.email_key:
            guest = self.storage.customers.guest_by_email(store_id, snap.email_key)
            if guest is not None and guest.get("status") == "active":
                merged_from = guest
                values = merged_values(existing, [guest])
                if values != (existing.get(VALUES_FIELD) or {}):
                    fields[VALUES_FIELD] = values
                    changed.append(VALUES_FIELD)
        # The record keeps its company; a guest merged into it hands over the guest's when it
        # has none, and otherwise its new email may join one.
        fields.update(taken_company(existing, [merged_from] if merged_from else [])
                      or self.company_matching.joined(store_id, {**existing, **fields}))
        if "company_id" in fields:
            changed.append("company_id")
        after = {**existing, **fields}
        result = ApplyResult("updated", touched=[("customers", existing["_id"])])
        events: list[Event] = []
        if changed:
            events.append(self._event("customer.updated", store_id,
                                      {**customer_event_data(after), "changed_fields": changed},
                                      correlation_id, existing["_id"], existing["version"]))
        if merged_from is not None:
            events.append(self._event("customer.merged", store_id,
                                      {"customer_id": existing["_id"],
                                       "merged_customer_id": merged_from["_id"],
                                       "merge_id": guest_merge_id(store_id, existing["_id"],
                                                                  merged_from["_id"]),
                                       "kind": "guest"},
                                      correlation_id, existing["_id"], merged_from["_id"]))
            fields["pending_merge"] = merged_from["_id"]
        if not self.storage.customers.update(existing["_id"], existing["version"], fields, events,
                                             read=existing):
            return None
        if merged_from is not None:
            self._finish_merge(store_id, existing["_id"], merged_from["_id"], existing)
        result.events = [e.event_type for e in events]
        return result

    def _update_merged(self, existing: dict, snap: CustomerSnapshot) -> ApplyResult | None:
        """A shop account merged into another record here (WooCommerce has no merge): its
        stored state follows the shop, silently, so an unmerge gives back what the shop holds;
        only live records announce changes."""
        fields = self._newer_fields(existing, snap)
        if isinstance(fields, ApplyResult):
            return fields
        if not self.storage.customers.update(existing["_id"], existing["version"], fields, [],
                                             read=existing):
            return None  # lost a race: the caller reads again
        return ApplyResult("updated")

    def _newer_fields(self, existing: dict, snap: CustomerSnapshot) -> dict | ApplyResult:
        """The shop account's fields to write when `snap` is newer than what `existing` holds
        (a creation date the shop left out keeps the one held); otherwise the outcome, stale
        or unchanged, and nothing to write."""
        verdict = changes.freshness(existing.get("woo_date_modified"), existing.get("content_hash"),
                                    snap.date_modified, snap.content_hash)
        if verdict is Freshness.STALE:
            return ApplyResult("stale")
        if verdict is Freshness.SAME:
            return ApplyResult("unchanged")
        fields = self._registered_fields(snap)
        if existing.get("date_created") and not snap.date_created:
            fields.pop("date_created")
        return fields

    def _finish_merge(self, store_id: str, into: str, guest_id: str,
                      before: dict | None = None) -> None:
        """Record the guest merge (kind "guest"), retire the guest and hand its orders, notes,
        reminders and timeline over, then clear the marker written with customer.merged. Every
        step is idempotent, so a crash part-way is finished by the next touch of the customer
        (`resume_merge`). `before` is the registered record before the change that merged."""
        merge_id = guest_merge_id(store_id, into, guest_id)
        guest = self.storage.customers.get(store_id, guest_id)
        primary = before or self.storage.customers.get(store_id, into)
        if guest is not None and primary is not None:
            now = self.clock()
            # Known only from the record before the change: a resumed merge records none,
            # and its undoing leaves the primary the values the guest gave it.
            field_changes = {}
            if before is not None:
                values = merged_values(before, [guest])
                if values != (before.get(VALUES_FIELD) or {}):
                    field_changes[VALUES_FIELD] = {"before": before.get(VALUES_FIELD) or {},
                                                   "after": values}
            self.storage.merges.record_guest_merge({
                "_id": merge_id, "store_id": store_id, "kind": "guest", "state": "pending",
                "primary_id": into, "merged_ids": [guest_id],
                "snapshots": {into: snapshot(primary), guest_id: snapshot(guest)},
                "field_choices": {},
                "field_changes": {**company_changes(primary, [guest]), **field_changes},
                "moved": {},
                "created_at": now, "created_by": "shop"})
        finish_merge(self.storage, store_id, merge_id, self.clock())

    def resume_merge(self, store_id: str, doc: dict | None) -> None:
        """Finish a merge a crash cut short, if `doc` is the primary of one (any touch of it
        calls this: a webhook here, a merge naming it in core/merges.py)."""
        if doc is None:
            return
        if doc.get("pending_merge"):
            self._finish_merge(store_id, doc["_id"], doc["pending_merge"])
        if doc.get("pending_merge_id"):
            finish_merge(self.storage, store_id, doc["pending_merge_id"], self.clock())

    # -- erased people ---------------------------------------------------------------------
    def _erase_for_shop(self, store_id: str, existing: dict, correlation_id: str) -> ApplyResult:
        """The shop's privacy eraser blanked a person we hold: the same erasure as a gdpr
        request's, marked as the shop's (RPC `shop_erasures` lists it for gdpr to carry to
        every service). Consumers hear it as the customer.updated the shop sent: the contact
        fields are gone."""
        def owed(doc: dict) -> list[Event]:
            if doc.get("status") != "active":
                return []
            blank = {"_id": doc["_id"], "registered": bool(doc.get("registered")),
                     "woo_customer_id": None, "email": None, "first_name": "", "last_name": "",
                     "phone": "", "company": "", "billing": {}, "shipping": {}, "birthday": None,
                     "date_created": doc.get("date_created")}
            changed = changes.changed_contact_fields(doc, blank)
            return [self._event("customer.updated", store_id,
                                {**customer_event_data(blank), "changed_fields": changed},
                                correlation_id, doc["_id"], "shop-erasure")]

        report = self.erasure.erase(store_id, [existing["_id"]], existing.get("email_key"),
                                    f"shop:{existing['_id']}", source=SHOP, owed=owed)
        log.info("the shop erased a customer; erased here too",
                 extra={"customer_id": existing["_id"], "counts": report.counts})
        return ApplyResult("erased", ["customer.updated"] * len(report.touched), report.touched,
                           personal_data_dropped=True)

    def _erased_unknown_for_shop(self, store_id: str, snap: CustomerSnapshot) -> ApplyResult:
        """A blanked customer never seen before: no new (empty) person, but a marker the shop's
        customer id is tombstoned for, so their orders are kept anonymised."""
        now = self.clock()
        marker_id = new_customer_id()
        self.storage.tombstones.record(store_id, [(WOO_CUSTOMER, str(snap.woo_customer_id))],
                                       marker_id, [marker_id], SHOP, now)
        if self.erasure.erased_customer_for(store_id, snap.woo_customer_id) != marker_id:
            return ApplyResult("erased", personal_data_dropped=True)  # another delivery won
        self.storage.customers.insert({
            "_id": marker_id, "store_id": store_id, "status": "erased", "registered": True,
            "erased_at": now, "shop_erased_at": now, "erased_by": [SHOP],
            "erasure_request_ids": [f"shop:{marker_id}"], "orders_count": 0,
            "date_created": snap.date_created, "created_at": now}, [])
        return ApplyResult("erased", personal_data_dropped=True)

    def _erase_if_tombstoned(self, store_id: str, doc: dict) -> ApplyResult | None:
        """Right after creating a customer: if an erasure of that person ran meanwhile (its
        tombstones written after this delivery looked), erase the new record too."""
        if self.erasure.erased_customer_for(store_id, doc.get("woo_customer_id"),
                                            doc.get("email_key"), created=doc.get("date_created"),
                                            modified=doc.get("woo_date_modified")) is None:
            return None
        self.erasure.erase(store_id, [doc["_id"]], doc.get("email_key"), f"late:{doc['_id']}",
                           source=LATE)
        return ApplyResult("erased", personal_data_dropped=True)

    def _erased_owner(self, store_id: str, snap: OrderSnapshot, existing: dict | None
                      ) -> tuple[bool, str | None]:
        """Whether an order belongs to an erased person, and to which customer id: an order
        anonymised by an erasure stays so; otherwise its shop customer id or billing email may
        match a tombstone."""
        if existing is not None and existing.get("personal_data_erased"):
            return True, existing.get("customer_id")
        erased = self.erasure.erased_customer_for(store_id, snap.woo_customer_id,
                                                  snap.billing.get("email"),
                                                  created=snap.date_created,
                                                  modified=snap.date_modified)
        return erased is not None, erased

    def _owner_of_anonymised(self, store_id: str, snap: OrderSnapshot, existing: dict | None
                             ) -> str | None:
        """Whose order the shop anonymised: the customer it was filed under, or the registered
        customer it still names; never a new person with the placeholder email."""
        if existing is not None and existing.get("customer_id"):
            return existing["customer_id"]
        if snap.woo_customer_id is not None:
            doc = self.storage.customers.by_woo_id(store_id, snap.woo_customer_id)
            if doc is not None:
                return doc["_id"]
        return None

    def _erasure_by_shop_orders(self, store_id: str, customer_id: str, correlation_id: str
                                ) -> ApplyResult:
        """A guest whose every order the shop has now anonymised is a guest the shop erased.
        A registered customer is erased by the blanked customer.updated the eraser sends
        first: an anonymised order alone may be the shop's retention policy
        ("Retain completed orders"), which must not erase a live customer."""
        doc = self.storage.customers.get(store_id, customer_id)
        if doc is None or doc.get("status") != "active" or doc.get("registered"):
            return ApplyResult("unchanged")
        if self.storage.orders.collection.count_documents(
                {"store_id": store_id, "customer_id": customer_id, "anonymized": {"$ne": True},
                 "status": {"$ne": "trash"}}):  # the eraser does not look in the trash
            return ApplyResult("unchanged")
        return self._erase_for_shop(store_id, doc, correlation_id)

    def delete_customer(self, store_id: str, woo_customer_id: int, correlation_id: str) -> ApplyResult:
        customers = self.storage.customers
        if self.erasure.erased_customer_for(store_id, woo_customer_id) is not None:
            return ApplyResult("erased")  # nothing of theirs to mark, nor to bring back
        for _ in attempts(f"customer {woo_customer_id}"):
            existing = customers.by_woo_id(store_id, woo_customer_id)
            if existing is None:
                # Deleted before we saw it: a placeholder keeps a late `created` from reviving it.
                doc = {"_id": new_customer_id(), "store_id": store_id, "status": "deleted",
                       "woo_customer_id": woo_customer_id, "registered": True,
                       "deleted_at": self.clock(), "created_at": self.clock()}
                if customers.insert(doc, []):
                    return ApplyResult("deleted")
                continue
            if existing.get("status") == "deleted":
                return ApplyResult("unchanged")
            if existing.get("status") == "merged":
                # Not a live customer: its slice is the primary's already, so nobody is told;
                # an unmerge leaves it (and what moved from it) where it is.
                if customers.update(existing["_id"], existing["version"],
                                    {"status": "deleted", "deleted_at": self.clock()}, []):
                    return ApplyResult("deleted")
                continue
            event = self._event("customer.deleted", store_id,
                                {"customer_id": existing["_id"], "woo_customer_id": woo_customer_id},
                                correlation_id, existing["_id"])
            if customers.update(existing["_id"], existing["version"],
                                {"status": "deleted", "deleted_at": self.clock()}, [event]):
                return ApplyResult("deleted", ["customer.deleted"], [("customers", existing["_id"])])

    # -- the customer behind an order ----------------------------------------------------
    def _customer_for_order(self, store_id: str, snap: OrderSnapshot, correlation_id: str
                            ) -> tuple[str | None, ApplyResult]:
        customers = self.storage.customers
        result = ApplyResult("unchanged")
        for _ in attempts(f"the customer of order {snap.order_id}"):
            if snap.woo_customer_id is not None:
                doc, guest = self._find_registered(store_id, snap.woo_customer_id,
                                                   snap.billing_email_key)
                if guest is not None:
                    registered = self._register_guest_from_order(store_id, guest, snap,
                                                                 correlation_id)
                    if registered is None:
                        continue
                    result.merge(registered)
                    return guest["_id"], result
                if doc is None:
                    created = self._stub_from_order(store_id, snap, True, correlation_id)
                    if created is None:
                        continue
                    result.merge(created[1])
                    return created[0], result
                if doc.get("status") == "merged":
                    # A shop account merged here: its orders go to the record it joined.
                    return live_customer_id(self.storage, store_id, doc), result
            else:
                key = snap.billing_email_key
                if key is None or snap.anonymized:
                    return None, result
                doc = customers.by_email(store_id, key)
                if doc is None:
                    merged = customers.merged_by_email(store_id, key)
                    if merged is not None:  # a merged guest's email, nobody live's
                        return live_customer_id(self.storage, store_id, merged), result
                    created = self._stub_from_order(store_id, snap, False, correlation_id)
                    if created is None:
                        continue
                    result.merge(created[1])
                    return created[0], result
            refreshed = self._refresh_contact_from_order(store_id, doc, snap, correlation_id)
            if refreshed is None:
                continue
            result.merge(refreshed)
            return doc["_id"], result

    def _register_guest_from_order(self, store_id: str, guest: dict, snap: OrderSnapshot,
                                   correlation_id: str) -> ApplyResult | None:
        """An order of registered customer N carries a guest's email before N's own webhook
        came: the guest record becomes customer N (its id and orders stay)."""
        fields = {"woo_customer_id": snap.woo_customer_id, "registered": True}
        after = {**guest, **fields}
        event = self._event("customer.updated", store_id,
                            {**customer_event_data(after), "changed_fields": ["registered"]},
                            correlation_id, guest["_id"], guest["version"])
        if not self.storage.customers.update(guest["_id"], guest["version"], fields, [event],
                                             unset=["guest_email_key"], read=guest):
            return None
        return ApplyResult("updated", ["customer.updated"], [("customers", guest["_id"])])

    def _stub_from_order(self, store_id: str, snap: OrderSnapshot, registered: bool,
                         correlation_id: str) -> tuple[str, ApplyResult] | None:
        """A customer first met through an order: created with its customer.created event in
        the same insert. None when someone else created it meanwhile."""
        billing = snap.billing
        doc = {
            "_id": new_customer_id(), "store_id": store_id, "status": "active",
            "registered": registered,
            "woo_customer_id": snap.woo_customer_id if registered else None,
            "email": billing.get("email", ""), "email_key": snap.billing_email_key,
            "first_name": billing.get("first_name", ""), "last_name": billing.get("last_name", ""),
            "phone": billing.get("phone", ""), "company": billing.get("company", ""),
            "billing": billing, "shipping": snap.shipping,
            "date_created": snap.date_created, "contact_from_order_at": snap.date_created,
            "woo_date_modified": None, "content_hash": None, "created_at": self.clock(),
        }
        if not registered:
            doc["guest_email_key"] = snap.billing_email_key
        doc.update(self.company_matching.joined(store_id, doc))
        event = self._event("customer.created", store_id, customer_event_data(doc), correlation_id,
                            doc["_id"])
        if not self.storage.customers.insert(doc, [event]):
            return None
        late = self._erase_if_tombstoned(store_id, doc)
        if late is not None:
            return doc["_id"], late
        return doc["_id"], ApplyResult("created", ["customer.created"], [("customers", doc["_id"])])

    def _refresh_contact_from_order(self, store_id: str, doc: dict, snap: OrderSnapshot,
                                    correlation_id: str) -> ApplyResult | None:
        """Checkout addresses often never fire customer.updated: a newer order's billing block
        is the freshest contact data. Guests take names and phone from it; registered customers
        their billing address and phone (their email is their identity)."""
        if doc.get("status") != "active" or (doc.get("registered") and snap.woo_customer_id is None):
            # A deleted customer gets no data back; and anyone can type a registered
            # customer's email at a guest checkout, so that must not rewrite their profile.
            return ApplyResult("unchanged")
        order_time = snap.date_created
        newest_known = max(
            (t for t in (doc.get("contact_from_order_at"), doc.get("woo_date_modified"))
             if t is not None),
            default=None,
        )
        if order_time is None or (newest_known is not None and order_time <= newest_known):
            return ApplyResult("unchanged")
        billing = snap.billing
        fields: dict = {"contact_from_order_at": order_time}
        if any(billing.get(k) for k in ("address_1", "city", "postcode", "country", "phone")):
            fields["billing"] = billing
            if billing.get("phone"):
                fields["phone"] = billing["phone"]
            if billing.get("company"):
                fields["company"] = billing["company"]
        if not doc.get("registered"):
            for name in ("first_name", "last_name"):
                if billing.get(name):
                    fields[name] = billing[name]
        after = {**doc, **fields}
        changed = changes.changed_contact_fields(doc, after)
        events = []
        if changed:
            events.append(self._event("customer.updated", store_id,
                                      {**customer_event_data(after), "changed_fields": changed},
                                      correlation_id, doc["_id"], doc["version"]))
        if not self.storage.customers.update(doc["_id"], doc["version"], fields, events,
                                             read=doc):
            return None
        if not events:
            return ApplyResult("unchanged")
        return ApplyResult("updated", ["customer.updated"], [("customers", doc["_id"])])

    # -- orders --------------------------------------------------------------------------
    def apply_order(self, store_id: str, received: OrderSnapshot, correlation_id: str, *,
                    from_rest: bool = False) -> ApplyResult:
        orders = self.storage.orders
        key = orders.key(store_id, received.order_id)
        for _ in attempts(f"order {received.order_id}"):
            existing = orders.get(store_id, received.order_id)
            if existing is not None and existing.get("status") == "deleted":
                # Staff deleted it at the shop and here (privacy/deletion.py): a late delivery of an
                # earlier state must not bring it back.
                return ApplyResult("ignored")
            erased, erased_customer = self._erased_owner(store_id, received, existing)
            # An erased person's order, or one the shop's eraser anonymised, is kept without
            # its buyer (and the placeholders never reach a customer record).
            snap = anonymise_order_snapshot(received) if erased or received.anonymized else received
            if existing is not None:
                # A trash (order.deleted, body {"id"}) leaves date_modified as it was: the state
                # held before it compares SAME, and a restore or later edit is newer.
                verdict = changes.freshness(existing.get("date_modified"),
                                            existing.get("content_hash"),
                                            snap.date_modified, snap.content_hash)
                if verdict is Freshness.STALE:
                    return ApplyResult("stale", personal_data_dropped=erased)
                if verdict is Freshness.SAME:
                    return ApplyResult("unchanged", personal_data_dropped=erased)
            if erased:
                customer_id, customer_result = erased_customer, ApplyResult("unchanged")
            elif received.anonymized:
                # WooCommerce's eraser anonymised it: still the same person's order.
                customer_id = self._owner_of_anonymised(store_id, received, existing)
                customer_result = ApplyResult("unchanged")
            elif (existing is not None and existing.get("customer_id")
                  and received.woo_customer_id is None
                  and real_email_key(received.billing.get("email")) is None):
                # Nothing in it says whose it is (a redacted delivery): it stays where it was.
                customer_id, customer_result = existing["customer_id"], ApplyResult("unchanged")
            else:
                customer_id, customer_result = self._customer_for_order(store_id, snap,
                                                                        correlation_id)
            plan = changes.plan_order_events(existing, snap)
            fields = {**_order_fields(snap), "store_id": store_id, "customer_id": customer_id,
                      "placed": plan.placed}
            if erased or received.anonymized:
                # The shop's customer id is gone from the order: remember if it was a guest's.
                fields["is_guest"] = (order_is_guest(existing) if existing is not None
                                      else received.woo_customer_id is None)
            if erased:
                fields["personal_data_erased"] = True
            version = existing["version"] if existing else 0
            events = [self._order_event(store_id, fields, planned, correlation_id, version)
                      for planned in plan.events]
            if existing is None:
                ok = orders.insert({"_id": key, **fields, "first_seen_at": self.clock()}, events)
            else:
                ok = orders.update(key, existing["version"], fields, events, unset=["trashed_at"])
            result = ApplyResult("created" if existing is None else "updated",
                                 personal_data_dropped=erased)
            result.merge(customer_result)
            if ok:
                result.events.extend(e.event_type for e in events)
                if events:
                    result.touched.append(("orders", key))
                if not erased and self.erasure.is_erased(customer_id):
                    # The customer was erased while this order was being written.
                    self.erasure.anonymise_orders(store_id, [customer_id])
                    result.personal_data_dropped = True
                elif received.anonymized and customer_id:
                    result.merge(self._erasure_by_shop_orders(store_id, customer_id,
                                                              correlation_id))
                return result

    def _order_event(self, store_id: str, doc: dict, planned: PlannedEvent, correlation_id: str,
                     from_version: int) -> Event:
        data = {**order_event_data(doc)}
        extra = dict(planned.extra)
        if "refund_delta" in extra:
            extra["refund_delta"] = _money(extra["refund_delta"], doc["currency"])
        data.update(extra)
        if planned.event_type == "order.placed":
            id_parts: tuple = (doc["order_id"],)
        elif planned.event_type == "order.refunded":
            id_parts = (doc["order_id"], doc["total_refunded"], from_version)
        else:
            id_parts = (doc["order_id"], doc.get("content_hash"), doc["status"], from_version)
        return self._event(planned.event_type, store_id, data, correlation_id, *id_parts)

    def trash_order(self, store_id: str, order_id: int, correlation_id: str) -> ApplyResult:
        """`order.deleted` means trashed; its body is only the id."""
        orders = self.storage.orders
        key = orders.key(store_id, str(order_id))
        for _ in attempts(f"order {order_id}"):
            existing = orders.get(store_id, str(order_id))
            now = self.clock()
            if existing is None:
                doc = {"_id": key, "store_id": store_id, "order_id": str(order_id),
                       "number": str(order_id), "status": "trash", "placed": False,
                       "trashed_at": now, "first_seen_at": now, "content_hash": None,
                       "date_modified": None, "customer_id": None}
                if orders.insert(doc, []):
                    return ApplyResult("deleted")
                continue
            if existing.get("status") in ("trash", "deleted"):
                return ApplyResult("unchanged")  # "deleted": staff deleted it (privacy/deletion.py)
            events = []
            if existing.get("placed"):
                doc = {**existing, "status": "trash"}
                events.append(self._order_event(
                    store_id, doc, PlannedEvent("order.cancelled", {"old_status": existing["status"]}),
                    correlation_id, existing["version"]))
            if orders.update(key, existing["version"], {"status": "trash", "trashed_at": now}, events):
                return ApplyResult("deleted", [e.event_type for e in events],
                                   [("orders", key)] if events else [])
