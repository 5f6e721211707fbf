"""Hostile events in customer_sync's timeline batches. Whoever can publish a tag, points or
consent event can name any customer id: in a batch read by id, an id of another store's
customer, an erased customer or nobody records nothing, beside valid events that do."""
from __future__ import annotations

import uuid
from datetime import datetime, timezone

from devdoubles import mongomock_adapter
from services.customer_sync.crm.timeline import record_foreign_events
from services.customer_sync.repository import CustomerSyncStorage
from shared.events import build_event, contract

T0 = datetime(2026, 11, 29, 12, tzinfo=timezone.utc)


def test_other_stores_erased_and_unknown_customers_get_no_entry():
    storage = CustomerSyncStorage(mongomock_adapter.client()[f"cs_{uuid.uuid4().hex[:8]}"])
    storage.ensure_indexes()
    storage.customers.collection.insert_many([
        {"_id": "mine", "store_id": "s1", "status": "active", "version": 1},
        {"_id": "theirs", "store_id": "s2", "status": "active", "version": 1},
        {"_id": "gone", "store_id": "s1", "status": "erased", "version": 1}])
    events = [build_event("loyalty.points_changed", store_id="s1", occurred_at=T0,
                          data={**contract("loyalty.points_changed").sample,
                                "customer_id": customer_id})
              for customer_id in ("theirs", "gone", "nobody", "mine", "$ne")]
    assert record_foreign_events(storage, events) == 1
    assert [e["customer_id"] for e in storage.timeline.collection.find()] == ["mine"]
