"""Staff deletion of customers, at the shop and here.

Per customer, in an order that a retry can resume after a failure at any step (each step is
idempotent; a shop 404 means an earlier try did it):

1. orders="delete": each of their orders is deleted at the shop (`DELETE orders/<id>?force=true`)
   and then here: the order keeps only its ids and status "deleted", and a placed order owes
   `order.cancelled`, as when the shop trashes an order (`order.deleted` webhook), so loyalty
   and segmentation react the same way. orders="anonymise": their orders stay, with personal
   data removed (anonymise.py, as for a GDPR erasure); the shop keeps its own copies (it
   detaches them from the deleted account, as WooCommerce does).
2. a customer with a shop account is deleted at the shop (`DELETE customers/<id>?force=true`;
   WooCommerce cannot trash customers); a guest has no account and is deleted here only.
3. here: the customer record keeps only its ids and status "deleted" (so the shop's own
   `customer.deleted` webhook, or a late `customer.updated`, changes nothing) and owes
   `customer.deleted` in the same write, with the same event id the webhook path would mint.
   Their notes and reminders are deleted; the timeline (no personal data) keeps the deletion.

One customer failing (the shop down, a refusal) is reported and the others go on.
"""
from __future__ import annotations

import logging
import uuid
from typing import Any

from services.customer_sync.privacy.anonymise import KEPT_CUSTOMER_FIELDS
from services.customer_sync.core.changes import CANCELLED_STATUSES, PlannedEvent
from services.customer_sync.privacy.erasure import CustomerErasure
from services.customer_sync.schemas import require_text
from services.customer_sync.core.staff import customer_ids_arg
from services.customer_sync.core.written import Written, written
from services.customer_sync.crm.timeline import TIMELINE_FIELD, entry_id, make_entry
from services.customer_sync.shop.woo_client import WooApiError, WooClient, WooUnavailable
from services.customer_sync.shop.write_back import ShopWriteBack
from shared.errors import NotFound, ValidationError
from shared.outbox import OUTBOX_FIELD
from shared.conflicts import CONFLICT_RETRIES

log = logging.getLogger(__name__)

ORDER_MODES = ("anonymise", "delete")
DELETED = "deleted"
_KEPT_ORDER_FIELDS = frozenset({"_id", "store_id", "order_id", "number", "status", "placed",
                                "customer_id", "version", "deleted_at", "deleted_by",
                                "first_seen_at", OUTBOX_FIELD, TIMELINE_FIELD})
_KEPT_DELETED_CUSTOMER = KEPT_CUSTOMER_FIELDS | {"woo_customer_id", "deleted_at", "deleted_by",
                                                 "account_status", OUTBOX_FIELD, TIMELINE_FIELD}


class DeletionFailed(Exception):
    """This customer could not be deleted now; `orders` were deleted before the failure."""

    def __init__(self, message: str, orders: int) -> None:
        super().__init__(message)
        self.orders = orders


class CustomerDeletion(ShopWriteBack):
    """Deleting customers in the shop and here; the clock dates the deletions and their
    timeline entries."""

    def delete(self, store_id: str, customer_ids: Any, orders: Any, actor: str) -> Written:
        """Delete each customer; answers per-customer results, and the documents owing events
        and every deleted customer (its timeline entry) to publish."""
        store_id, actor = require_text(store_id, "store_id"), require_text(actor, "actor")
        if orders not in ORDER_MODES:
            raise ValidationError("orders must be 'anonymise' or 'delete'",
                                  {"fields": {"orders": ["one of anonymise, delete"]}})
        ids = customer_ids_arg(customer_ids)
        store = self.storage.stores.get(store_id)
        if store is None:
            raise NotFound(f"no store {store_id}")
        correlation_id = f"staff-delete-{uuid.uuid4().hex[:16]}"
        results: list[dict] = []
        touched: list[tuple[str, Any]] = []
        client = self.client_factory(store)
        try:
            for customer_id in ids:
                try:
                    outcome, count = self._one(store_id, customer_id, orders, actor, client,
                                               correlation_id, touched)
                    results.append({"customer_id": customer_id, "outcome": outcome,
                                    "orders": count})
                except DeletionFailed as exc:
                    log.warning("deleting a customer failed", extra={"customer_id": customer_id,
                                                                     "error": str(exc)})
                    results.append({"customer_id": customer_id, "outcome": "failed",
                                    "error": str(exc), "orders": exc.orders})
        finally:
            client.close()
        deleted = [(self.storage.customers.collection.name, r["customer_id"]) for r in results
                   if r["outcome"] == "deleted"]
        return written({"results": results}, [*touched, *deleted])

    def _one(self, store_id: str, customer_id: str, mode: str, actor: str, client: WooClient,
             correlation_id: str, touched: list) -> tuple[str, int]:
        doc = self.storage.customers.get(store_id, customer_id)
        if doc is None or doc.get("status") not in ("active", DELETED):
            return "not_found", 0
        orders = list(self.storage.orders.collection.find(
            {"store_id": store_id, "customer_id": customer_id, "status": {"$ne": DELETED}},
            {OUTBOX_FIELD: 0, TIMELINE_FIELD: 0}))
        count = 0
        if mode == "delete":
            for order in orders:
                try:
                    self._shop_delete(client, f"orders/{order['order_id']}",
                                      str(order["order_id"]).isdigit())
                except DeletionFailed as exc:
                    raise DeletionFailed(f"order {order['order_id']}: {exc}", count) from None
                if self._delete_order_here(store_id, order, actor, correlation_id):
                    touched.append((self.storage.orders.collection.name, order["_id"]))
                count += 1
        else:
            CustomerErasure(self.storage, self.clock).anonymise_orders(store_id, [customer_id])
            count = len(orders)
        if doc.get("woo_customer_id") is not None:
            try:
                self._shop_delete(client, f"customers/{doc['woo_customer_id']}", True)
            except DeletionFailed as exc:
                raise DeletionFailed(f"customer: {exc}", count) from None
        if self._delete_customer_here(store_id, customer_id, mode, count, actor, correlation_id):
            touched.append((self.storage.customers.collection.name, customer_id))
        self.storage.notes.forget(store_id, [customer_id])
        self.storage.reminders.forget(store_id, [customer_id])
        log.info("customer deleted by staff", extra={"customer_id": customer_id, "orders": mode,
                                                     "order_count": count})
        return DELETED, count

    @staticmethod
    def _shop_delete(client: WooClient, path: str, at_shop: bool) -> None:
        if not at_shop:
            return
        try:
            client.delete(path, {"force": True})
        except WooUnavailable as exc:
            raise DeletionFailed(f"the shop did not answer ({exc.status or exc.code})", 0) from None
        except WooApiError as exc:
            if exc.status == 404:
                return  # gone already (an earlier try, or the shop's own admin)
            raise DeletionFailed(f"the shop refused: {exc.message}", 0) from None

    def _delete_order_here(self, store_id: str, order: dict, actor: str,
                           correlation_id: str) -> bool:
        """Keep only the order's ids; a placed order owes order.cancelled (with the id a trash
        webhook would give it, so the webhook that follows adds nothing). True if events."""
        orders = self.storage.orders
        for _ in range(CONFLICT_RETRIES):
            existing = orders.get(store_id, order["order_id"])
            if existing is None or existing.get("status") == DELETED:
                return False
            events = []
            if existing.get("placed") and existing.get("status") not in CANCELLED_STATUSES:
                gone = {**existing, "status": "trash"}
                events.append(self.sync._order_event(
                    store_id, gone, PlannedEvent("order.cancelled", {"old_status": existing["status"]}),
                    correlation_id, existing["version"]))
            now = self.clock()
            number = existing.get("number") or existing["order_id"]
            entry = make_entry(entry_id(existing["_id"], "deleted-by-staff"),
                               existing["customer_id"], "order.deleted",
                               f"Order #{number} deleted by staff", actor,
                               {"order_id": existing["order_id"], "number": number}, now)
            unset = [name for name in existing if name not in _KEPT_ORDER_FIELDS]
            if orders.update(existing["_id"], existing["version"],
                             {"status": DELETED, "deleted_at": now, "deleted_by": actor},
                             events, unset=unset, entries=[entry]):
                return bool(events)
        raise DeletionFailed(f"order {order['order_id']} kept changing", 0)

    def _delete_customer_here(self, store_id: str, customer_id: str, mode: str, orders: int,
                              actor: str, correlation_id: str) -> bool:
        customers = self.storage.customers
        for _ in range(CONFLICT_RETRIES):
            doc = customers.get(store_id, customer_id)
            if doc is None:
                return False
            events = []
            if doc.get("status") != DELETED:
                events.append(self.sync._event(
                    "customer.deleted", store_id,
                    {"customer_id": customer_id, "woo_customer_id": doc.get("woo_customer_id")},
                    correlation_id, customer_id))
            now = self.clock()
            entry = make_entry(entry_id(customer_id, "deleted-by-staff"), customer_id,
                               "customer.deleted", f"Customer deleted by staff (orders: {mode})",
                               actor, {"orders": mode, "order_count": orders,
                                       "in_shop": doc.get("woo_customer_id") is not None}, now)
            unset = [name for name in doc if name not in _KEPT_DELETED_CUSTOMER]
            fields = {"status": DELETED, "deleted_by": actor}
            if not doc.get("deleted_at"):
                fields["deleted_at"] = now
            if customers.update(customer_id, doc["version"], fields, events, unset=unset,
                                entries=[entry]):
                return bool(events)
        raise DeletionFailed("the customer kept changing", orders)
