"""customer_sync's timeline of other services' events, in batches on the real broker: a burst
of a few hundred events leaves the entries that recording them one at a time leaves (the
oracle), in batches larger than one."""
from __future__ import annotations

import random
import uuid
from datetime import datetime, timedelta, timezone

from devdoubles import mongomock_adapter
from services.customer_sync.crm.timeline import record_foreign_event
from services.customer_sync.repository import CustomerSyncStorage
from services.customer_sync.service import CustomerSyncService
from shared import metrics, mongo
from shared.events import build_event, contract, parse_event
from tests.support import EventBarrier, publish

STORE = "tb"
KINDS = ("customer.tagged", "customer.untagged", "customer.segment_changed",
         "loyalty.points_changed", "loyalty.reward_issued", "notification.sent",
         "consent.changed")
CUSTOMERS = [{"_id": f"tb-{n}", "store_id": STORE, "status": "active", "version": 1}
             for n in range(20)] + [
    {"_id": "tb-erased", "store_id": STORE, "status": "erased", "version": 1},
    {"_id": "tb-elsewhere", "store_id": "other", "status": "active", "version": 1}]


def burst(seed: int, count: int) -> list[dict]:
    rng = random.Random(seed)
    now = datetime.now(timezone.utc)
    messages = []
    for seq in range(count):
        kind = rng.choice(KINDS)
        customer_id = rng.choice([c["_id"] for c in CUSTOMERS] + ["tb-unknown"])
        messages.append(build_event(kind, store_id=STORE, occurred_at=now + timedelta(
            milliseconds=seq), data={**contract(kind).sample, "customer_id": customer_id},
            event_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"tb:{seed}:{seq}"))).to_message())
    return messages + rng.sample(messages, 20)  # some delivered twice


def batch_sizes(event_type: str) -> tuple[float, float]:
    labels = {"service": "customer_sync", "event_type": event_type}
    return (metrics.REGISTRY.get_sample_value("companion_event_batch_size_sum", labels) or 0.0,
            metrics.REGISTRY.get_sample_value("companion_event_batch_size_count", labels) or 0.0)


def test_a_burst_reaches_the_timeline_as_one_at_a_time_would(services):
    services.start(CustomerSyncService, CUSTOMER_TIMELINE_BATCH_SIZE="50",
                   CUSTOMER_TIMELINE_BATCH_WAIT_MS="200")
    database = mongo.connect(services.mongo_uri)["companion_customer_sync"]
    database["customers"].insert_many([dict(c) for c in CUSTOMERS])
    messages = burst(5, 300)
    counts = {kind: sum(m["event_type"] == kind for m in messages) for kind in KINDS}
    before = {kind: batch_sizes(kind) for kind in KINDS}
    barrier = EventBarrier(services, "customer_sync").expect(*KINDS)
    publish(services.amqp_uri, *messages)
    for kind in KINDS:
        barrier.settled(kind, counts[kind], timeout=60)

    oracle = CustomerSyncStorage(mongomock_adapter.client()["oracle"])
    oracle.ensure_indexes()
    oracle.customers.collection.insert_many([dict(c) for c in CUSTOMERS])
    for message in messages:
        record_foreign_event(oracle, parse_event(message))
    expected = sorted(oracle.timeline.collection.find(), key=lambda d: d["_id"])
    assert len(expected) > 100
    assert sorted(database["timeline"].find({"store_id": STORE}),
                  key=lambda d: d["_id"]) == expected

    per_batch = {}
    for kind in KINDS:
        total, batches = (after - first for after, first in zip(batch_sizes(kind), before[kind]))
        assert total == counts[kind]
        per_batch[kind] = total / batches
    assert max(per_batch.values()) > 1, per_batch
