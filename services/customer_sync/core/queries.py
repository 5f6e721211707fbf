"""customer_sync's read side for RPC callers: plain JSON types only (ids as strings, times as
ISO-8601, money as {"amount", "currency"})."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from services.customer_sync.door.inbox import delivery_payload
from services.customer_sync.repository import (
    CustomerSyncStorage,
)
from services.customer_sync.schemas import (
    CustomerFiltersSchema,
    PageSchema,
    STORE_ID,
    load,
    require_text,
)
from services.customer_sync.crm.notes import note_view
from services.customer_sync.crm.reminders import reminder_view
from services.customer_sync.core.sync import order_event_data
from services.customer_sync.crm.timeline import entry_view
from shared.customers import not_found, valid_customer_id, valid_customer_ids
from shared.errors import NotFound, ValidationError
from shared.paging import decode_cursor, encode_cursor

_CUSTOMER_FIELDS = ("woo_customer_id", "registered", "status", "email", "first_name", "last_name",
                    "phone", "company", "billing", "shipping", "username", "role",
                    "is_paying_customer", "merged_into")


def _json_time(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def account_standing(doc: dict) -> tuple[str, str | None]:
    """The customer's status as staff see it, and why when it is "inactive".

    A live record carries the standing staff gave it (new customers start "active"); a
    record deleted (at the shop or by staff), erased or merged into another is "inactive"
    whatever it carried, because nobody can act on it any more."""
    record = doc.get("status") or "active"
    if record != "active":
        return "inactive", record  # "deleted", "erased" or "merged"
    if (doc.get("account_status") or "active") == "inactive":
        return "inactive", "staff"
    return "active", None


def customer_view(doc: dict) -> dict:
    view = {"customer_id": doc["_id"], "store_id": doc["store_id"]}
    view.update({name: doc.get(name) for name in _CUSTOMER_FIELDS})
    view["account_status"], view["inactive_reason"] = account_standing(doc)
    view["date_created"] = _json_time(doc.get("date_created"))
    view["date_modified"] = _json_time(doc.get("woo_date_modified"))
    view["custom_fields"] = doc.get("custom_fields") or {}
    view["company_id"] = doc.get("company_id") or None
    return view


def order_view(doc: dict) -> dict:
    view = order_event_data(doc)
    view["date_modified"] = _json_time(doc.get("date_modified"))
    view["refunds"] = [
        {"refund_id": r["refund_id"], "reason": r["reason"],
         "amount": {"amount": r["amount"], "currency": doc["currency"]}}
        for r in doc.get("refunds", [])
    ]
    return view


def _store_id(value: Any) -> str:
    store_id = require_text(value, "store_id")
    try:
        STORE_ID(store_id)
    except Exception:
        raise ValidationError("store_id is not a valid store id", {"fields": {"store_id": ["invalid"]}})
    return store_id


class CustomerQueries:
    def __init__(self, storage: CustomerSyncStorage) -> None:
        self.storage = storage

    def get_customer(self, store_id: str, customer_id: str) -> dict:
        store_id, customer_id = _store_id(store_id), require_text(customer_id, "customer_id")
        doc = self.storage.customers.get(store_id, customer_id)
        if doc is None:
            raise NotFound(f"no customer {customer_id} in store {store_id}")
        return customer_view(doc)

    def known_customers(self, store_id: str, customer_ids: list) -> list[str]:
        """Which of the ids name a customer of the store (any status but erased): what the
        other services ask before a write naming a customer they do not hold yet."""
        store_id, customer_ids = _store_id(store_id), valid_customer_ids(customer_ids)
        found = {doc["_id"] for doc in self.storage.customers.collection.find(
            {"store_id": store_id, "_id": {"$in": customer_ids}, "status": {"$ne": "erased"}},
            {"_id": 1})}
        return [c for c in customer_ids if c in found]

    def find_customer(self, store_id: str, email: str) -> dict:
        store_id, email = _store_id(store_id), require_text(email, "email")
        doc = self.storage.customers.by_email(store_id, email.strip().lower())
        if doc is None:
            raise NotFound(f"no customer with that email in store {store_id}")
        return customer_view(doc)

    def list_customers(self, store_id: str, filters: dict | None = None,
                       page: dict | None = None) -> dict:
        store_id = _store_id(store_id)
        criteria = load(CustomerFiltersSchema(), filters, "filters")
        paging = load(PageSchema(), page, "page")
        after = None
        if paging["cursor"]:
            try:
                created, last_id = decode_cursor(paging["cursor"])
                after = (datetime.fromisoformat(created) if created else None, last_id)
            except (ValueError, TypeError):
                raise ValidationError("page.cursor is not valid", {"fields": {"page": ["cursor"]}})
        docs = self.storage.customers.search(store_id, criteria, after, paging["size"] + 1)
        more = len(docs) > paging["size"]
        docs = docs[: paging["size"]]
        next_cursor = None
        if more and docs:
            last = docs[-1]
            next_cursor = encode_cursor((_json_time(last.get("date_created")), last["_id"]))
        return {"items": [customer_view(d) for d in docs], "next_cursor": next_cursor}

    def list_orders(self, store_id: str, customer_id: str, page: dict | None = None) -> dict:
        """A customer's orders, newest first; NotFound for anyone who is not a customer of the
        store (an empty page would say they are)."""
        store_id, customer_id = _store_id(store_id), valid_customer_id(customer_id)
        if self.storage.customers.get(store_id, customer_id) is None:
            raise not_found(store_id, customer_id)
        paging = load(PageSchema(), page, "page")
        offset = 0
        if paging["cursor"]:
            try:
                [offset] = decode_cursor(paging["cursor"])
                offset = int(offset)
            except (ValueError, TypeError):
                raise ValidationError("page.cursor is not valid", {"fields": {"page": ["cursor"]}})
        docs = self.storage.orders.for_customer(store_id, customer_id, offset, paging["size"] + 1)
        more = len(docs) > paging["size"]
        docs = docs[: paging["size"]]
        return {
            "items": [order_view(d) for d in docs],
            "next_cursor": encode_cursor((offset + len(docs),)) if more else None,
        }

    def export_person(self, store_id: str, customer_id: str) -> dict | None:
        """Everything customer_sync holds about one person (GDPR access and portability), or
        None when it holds no such customer."""
        store_id, customer_id = _store_id(store_id), require_text(customer_id, "customer_id")
        doc = self.storage.customers.get(store_id, customer_id)
        if doc is None:
            return None
        orders = list(self.storage.orders.collection.find(
            {"store_id": store_id, "customer_id": customer_id}, {"outbox": 0}))
        order_ids = [o["order_id"] for o in orders]
        resources = [{"resource": "order", "resource_id": int(i)} for i in order_ids if i.isdigit()]
        if doc.get("woo_customer_id") is not None:
            resources.append({"resource": "customer", "resource_id": doc["woo_customer_id"]})
        deliveries = []
        if resources:
            for d in self.storage.inbox.collection.find({"store_id": store_id, "$or": resources}):
                deliveries.append({
                    "topic": d.get("topic"), "received_at": _json_time(d.get("received_at")),
                    "payload": delivery_payload(d),
                })
        return {
            "customer": {**customer_view(doc),
                         "merged_guests": [c["_id"] for c in self.storage.customers.collection.find(
                             {"store_id": store_id, "merged_into": customer_id}, {"_id": 1})]},
            "orders": [{**order_view(o), "billing": o.get("billing"), "shipping": o.get("shipping")}
                       for o in orders],
            "webhook_deliveries": deliveries,
            # Staff's notes and reminders about the person, and their activity timeline.
            "notes": [note_view(n) for n in self.storage.notes.for_customer(
                store_id, customer_id, None)],
            "reminders": [reminder_view(r) for r in self.storage.reminders.find(
                store_id, customer_id, None, None, 10_000)],
            "timeline": [entry_view(e) for e in self.storage.timeline.collection.find(
                {"store_id": store_id, "customer_id": customer_id}).sort("at", -1)],
        }
