"""Staff changes to customers: contact edits (written back to the shop) and the companion-only
account status.

An edit is the GDPR rectification's write-back (privacy/rectify.py) under another name: the shop first
(`PUT customers/<id>`), then the shop's answer applied through the webhook path, so
`customer.updated` is published once and a later webhook of the same state changes nothing. A
guest has no account in the shop and is edited here only.

The account status ("active"/"inactive") is the companion's own standing: WooCommerce has no
such field, so it is written here only, and shop webhooks leave it alone (they `$set` only the
fields the shop sends).
"""
from __future__ import annotations

import uuid
from typing import Any

from services.customer_sync.privacy.rectify import Rectifier
from services.customer_sync.repository import CustomerSyncStorage
from services.customer_sync.schemas import require_text
from services.customer_sync.core.sync import CustomerSync, customer_event_data
from services.customer_sync.core.written import Written, written
from services.customer_sync.crm.timeline import entry_id, make_entry
from services.customer_sync.shop.write_back import ShopWriteBack
from shared.events.customer_sync import ACCOUNT_STATUSES
from shared.errors import ValidationError
from shared.conflicts import CONFLICT_RETRIES

MAX_IDS = 1000


def customer_ids_arg(value: Any) -> list[str]:
    """A list of 1..MAX_IDS customer ids, duplicates dropped (first kept)."""
    if not isinstance(value, list) or not value or len(value) > MAX_IDS:
        raise ValidationError(f"customer_ids must be a list of 1 to {MAX_IDS} ids",
                              {"fields": {"customer_ids": ["1 to 1000 ids"]}})
    ids = [require_text(v, "customer_ids") for v in value]
    return list(dict.fromkeys(ids))


class StaffEdits(ShopWriteBack):
    """Contact edits written back to the shop, and the companion-only account status; the
    clock dates the edit's audit entry, as the rectification it is."""

    def update_customer(self, store_id: str, customer_id: str, fields: Any, actor: str
                        ) -> Written:
        """Edit contact fields; raises Unavailable (nothing changed) when the shop is down."""
        store_id = require_text(store_id, "store_id")
        customer_id = require_text(customer_id, "customer_id")
        actor = require_text(actor, "actor")
        return Rectifier(self.storage, self.sync, self.client_factory, self.clock).rectify(
            store_id, customer_id, fields, actor, purpose="staff_edit")


class AccountStatus:
    def __init__(self, storage: CustomerSyncStorage, sync: CustomerSync) -> None:
        self.storage = storage
        self.sync = sync

    def set(self, store_id: str, customer_ids: Any, status: Any, actor: str) -> Written:
        """Set the status of each customer; answers per-customer outcomes and the documents
        that owe events."""
        store_id, actor = require_text(store_id, "store_id"), require_text(actor, "actor")
        if status not in ACCOUNT_STATUSES:
            raise ValidationError(f"status must be one of {', '.join(ACCOUNT_STATUSES)}",
                                  {"fields": {"status": ["unknown status"]}})
        results, touched = [], []
        correlation_id = f"staff-status-{uuid.uuid4().hex[:16]}"
        for customer_id in customer_ids_arg(customer_ids):
            outcome = self._one(store_id, customer_id, status, actor, correlation_id)
            if outcome == "changed":
                touched.append((self.storage.customers.collection.name, customer_id))
            results.append({"customer_id": customer_id, "outcome": outcome})
        return written({"results": results}, touched)

    def _one(self, store_id: str, customer_id: str, status: str, actor: str,
             correlation_id: str) -> str:
        customers = self.storage.customers
        for _ in range(CONFLICT_RETRIES):
            doc = customers.get(store_id, customer_id)
            if doc is None or doc.get("status") != "active":
                return "not_found"  # deleted, erased or merged customers have no standing
            old = doc.get("account_status") or "active"
            if old == status:
                return "unchanged"
            after = {**doc, "account_status": status}
            event = self.sync._event(
                "customer.updated", store_id,
                {**customer_event_data(after), "changed_fields": ["account_status"]},
                correlation_id, customer_id, doc["version"], "account_status")
            entry = make_entry(entry_id(customer_id, "account_status", doc["version"]),
                               customer_id, "customer.status_changed",
                               f"Account status set to {status} (was {old})", actor,
                               {"old_status": old, "new_status": status})
            if customers.update(customer_id, doc["version"],
                                {"account_status": status, "account_status_by": actor},
                                [event], entries=[entry]):
                return "changed"
        return "unchanged"
