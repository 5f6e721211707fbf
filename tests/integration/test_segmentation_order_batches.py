"""Segmentation's order handlers on the real broker, in batches: a burst of a few hundred order
events leaves the profiles that applying them one by one leaves, and came in batches."""
from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

from devdoubles import mongomock_adapter
from services.segmentation.profiles import Profiles
from services.segmentation.repository import SegmentationStorage
from services.segmentation.service import SegmentationService
from shared import metrics, mongo
from shared.events import build_event, contract, parse_event
from tests.support import EventBarrier, publish

ORDER_TYPES = ("order.placed", "order.updated", "order.refunded", "order.cancelled")
# What a profile holds whatever order its queues were applied in: the order events' facts are
# compare-and-set by time, and everything derived follows from the facts.
SETTLED_FIELDS = ("status", "orders", "stats", "segment", "tag_list", "group_list",
                  "saved_segments", "listing")


def order_message(order_id: str, customer: str, total: int, status: str, event_type: str,
                  created: datetime, at: datetime) -> dict:
    data = {**contract("order.placed").sample, "order_id": order_id, "number": order_id,
            "customer_id": customer, "status": status,
            "total": {"amount": total, "currency": "EUR"},
            "total_refunded": {"amount": total if status == "refunded" else 0,
                               "currency": "EUR"},
            "date_created": created.isoformat()}
    if event_type == "order.refunded":
        data["refund_delta"] = {"amount": total, "currency": "EUR"}
    if event_type == "order.cancelled":
        data["old_status"] = "processing"
    if event_type == "order.updated":
        data.update(old_status="processing", new_status=status, changed_fields=["status"])
    return build_event(event_type, store_id="burst", data=data, occurred_at=at).to_message()


def burst(seed: int, customers: int) -> list[dict]:
    """Each customer's orders placed then changed, interleaved at random across customers
    (each customer's in order), with some messages delivered twice."""
    rng = random.Random(seed)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    queues = []
    for n in range(customers):
        customer = f"b{n:03d}"
        at = now - timedelta(hours=1)
        messages = []
        for number in range(rng.randrange(1, 4)):
            order_id = f"{customer}-{number}"
            total = rng.choice([2500, 7000, 12_000, 600_000])
            created = now - timedelta(days=rng.randrange(1, 20))
            messages.append(order_message(order_id, customer, total, "processing",
                                          "order.placed", created, at))
            at += timedelta(seconds=1)
            later = rng.choice(ORDER_TYPES[1:])
            status = {"order.updated": "completed", "order.refunded": "refunded",
                      "order.cancelled": "cancelled"}[later]
            messages.append(order_message(order_id, customer, total, status, later, created,
                                          at))
            at += timedelta(seconds=1)
        queues.append(messages)
    stream = []
    while any(queues):
        queue = rng.choice([q for q in queues if q])
        stream.append(queue.pop(0))
    for _ in range(10):
        stream.append(stream[rng.randrange(len(stream))])
    return stream


def settled(database) -> dict[str, dict]:
    return {doc["_id"]: {name: doc.get(name) for name in SETTLED_FIELDS}
            for doc in database["profiles"].find({"store_id": "burst"})}


def batch_sizes() -> tuple[float, float]:
    """(batches, events in them) of segmentation's order handlers in this process."""
    count = total = 0.0
    for event_type in ORDER_TYPES:
        labels = {"service": "segmentation", "event_type": event_type}
        count += metrics.REGISTRY.get_sample_value("companion_event_batch_size_count",
                                                   labels) or 0.0
        total += metrics.REGISTRY.get_sample_value("companion_event_batch_size_sum",
                                                   labels) or 0.0
    return count, total


def test_a_burst_of_order_events_is_applied_in_batches_as_one_by_one_would(services,
                                                                          amqp_uri):
    services.start(SegmentationService, SEGMENT_ORDER_BATCH_SIZE="50",
                   SEGMENT_ORDER_BATCH_WAIT_MS="300")
    stream = burst(seed=11, customers=80)
    assert len(stream) >= 300
    per_type = {t: sum(1 for m in stream if m["event_type"] == t) for t in ORDER_TYPES}
    batches_before, events_before = batch_sizes()
    barrier = EventBarrier(services, "segmentation").expect(*ORDER_TYPES)
    publish(amqp_uri, *stream)
    for event_type, count in per_type.items():
        barrier.settled(event_type, count, timeout=60)

    oracle_storage = SegmentationStorage(mongomock_adapter.client()["oracle"])
    oracle_storage.ensure_indexes()
    oracle = Profiles(oracle_storage)
    for message in stream:
        oracle.apply_order_event(parse_event(message))

    service_db = mongo.connect(services.mongo_uri)["companion_segmentation"]
    expected = settled(oracle_storage.database)
    assert len(expected) == 80
    assert settled(service_db) == expected
    batches, events = batch_sizes()
    assert events - events_before == len(stream)
    assert batches - batches_before < len(stream) / 2  # most batches held several events
