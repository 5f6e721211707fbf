"""notifications' projection in batches on the real broker: a burst of a few hundred customer,
order and segmentation events leaves the contacts and sends that applying them one at a time
leaves (the oracle), in batches larger than one; order.updated is acknowledged unread while no
workflow uses it, and a workflow saved later is not missed."""
from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import mongomock
import pytest
from nameko.standalone.rpc import ClusterRpcProxy

from services.notifications.notifier import Notifier
from services.notifications.repository import NotificationsStorage
from shared import metrics, mongo
from shared.events import build_event, contract, parse_event
from tests.integration.test_notifications import start
from tests.support import EventBarrier, publish, wait_until

STORE = "nb"
# Far enough ahead that nothing is sent while the test compares what was scheduled.
WORKFLOWS = (
    {"workflow_id": "vip", "name": "VIP", "trigger": {"event": "customer.tagged", "tag": "vip"},
     "delay_seconds": 86400, "channel": "email", "template": "win_back",
     "purpose": "marketing"},
    {"workflow_id": "first", "name": "First order",
     "trigger": {"event": "order.placed", "first_order": True}, "delay_seconds": 86400,
     "channel": "email", "template": "win_back", "purpose": "transactional"},
    {"workflow_id": "done", "name": "Completed",
     "trigger": {"event": "order.updated", "to_status": "completed"}, "delay_seconds": 86400,
     "channel": "email", "template": "win_back", "purpose": "transactional"},
)
# Written by the wall clock at apply time, so different between the service and the oracle.
WALL_CLOCK_FIELDS = ("created_at", "scheduled_at")


@pytest.fixture
def rpc(services):
    with ClusterRpcProxy({"AMQP_URI": services.amqp_uri}, timeout=20) as proxy:
        yield proxy


def burst(seed: int, customers: int, now: datetime) -> list[dict]:
    """Every customer's events, interleaved among customers, each at its own time: facts on
    different queues arrive in any order, and the projection keeps the newest of each."""
    rng = random.Random(seed)
    messages = []
    for n in range(customers):
        customer_id = f"b{n}"
        for seq in range(rng.randint(5, 11)):
            at = now - timedelta(minutes=60 - seq, milliseconds=n)
            kind = rng.choice(["customer.created", "customer.updated", "customer.tagged",
                               "customer.untagged", "customer.group_joined",
                               "customer.group_left", "customer.segment_changed",
                               "order.placed", "order.updated"])
            sample = contract(kind).sample
            data = {**sample, "customer_id": customer_id,
                    **{name: at.isoformat() for name in ("fact_at", "date_created",
                                                         "date_modified") if name in sample}}
            if kind in ("customer.created", "customer.updated"):
                data["email"] = f"{customer_id}.{seq}@example.com"
            elif kind in ("customer.tagged", "customer.untagged"):
                data["tag"] = rng.choice(["vip", "news"])
            elif kind in ("customer.group_joined", "customer.group_left"):
                data["group"] = rng.choice(["wholesale", "retail"])
            elif kind == "customer.segment_changed":
                data["new_segment"] = rng.choice(["new", "regular", "at_risk"])
            elif kind == "order.placed":
                data["order_id"] = f"{customer_id}-{rng.randint(1, 3)}"
            else:
                data.update(order_id=f"{customer_id}-{rng.randint(1, 3)}",
                            old_status="processing", new_status="completed")
            messages.append(build_event(kind, store_id=STORE, occurred_at=at,
                                        data=data).to_message())
    rng.shuffle(messages)
    # order.placed keeps its order among itself (one queue): the first order is the first one
    # published, for the service and the oracle alike.
    return messages


def without_wall_clock(docs) -> list[dict]:
    return sorted(({k: v for k, v in doc.items() if k not in WALL_CLOCK_FIELDS} for doc in docs),
                  key=lambda d: d["_id"])


def oracle_of(messages: list[dict], now: datetime) -> NotificationsStorage:
    storage = NotificationsStorage(mongomock.MongoClient(tz_aware=True)["oracle"])
    storage.ensure_indexes()
    notifier = Notifier(storage, lambda: now)
    for workflow in WORKFLOWS:
        notifier.save_workflow(STORE, dict(workflow))
    for message in messages:
        notifier.apply(parse_event(message))
    return storage


def batch_sizes(event_type: str) -> tuple[float, float]:
    labels = {"service": "notifications", "event_type": event_type}
    return (metrics.REGISTRY.get_sample_value("companion_event_batch_size_sum", labels) or 0.0,
            metrics.REGISTRY.get_sample_value("companion_event_batch_size_count", labels) or 0.0)


def test_a_burst_applied_in_batches_leaves_what_one_at_a_time_leaves(
        services, smtp, twilio, rpc):
    start(services, smtp, twilio, NOTIFY_PROJECTION_BATCH_SIZE="50",
          NOTIFY_PROJECTION_BATCH_WAIT_MS="200")
    for workflow in WORKFLOWS:
        rpc.notifications.save_workflow(STORE, dict(workflow))
    now = datetime.now(timezone.utc)
    messages = burst(7, 40, now)
    assert len(messages) >= 250
    kinds = sorted({m["event_type"] for m in messages})
    counts = {kind: sum(m["event_type"] == kind for m in messages) for kind in kinds}
    before = {kind: batch_sizes(kind) for kind in kinds}
    barrier = EventBarrier(services, "notifications").expect(*kinds)
    publish(services.amqp_uri, *messages)
    for kind in kinds:
        barrier.settled(kind, counts[kind], timeout=60)

    database = mongo.connect(services.mongo_uri)["companion_notifications"]
    oracle = oracle_of(messages, now)
    held = without_wall_clock(database["contacts"].find({"store_id": STORE}))
    assert held == without_wall_clock(oracle.contacts.collection.find())
    sends = without_wall_clock(database["sends"].find({"store_id": STORE}))
    assert sends == without_wall_clock(oracle.sends.collection.find())
    assert {s["workflow_id"] for s in sends} == {"vip", "first", "done"}

    grew = {}
    for kind in kinds:
        total, batches = (after - first for after, first in zip(batch_sizes(kind), before[kind]))
        assert total == counts[kind]  # every delivery went through a batch
        grew[kind] = total / batches
    assert max(grew.values()) > 1, grew


def test_order_updated_is_acknowledged_unread_until_a_workflow_uses_it(
        services, smtp, twilio, rpc):
    start(services, smtp, twilio, NOTIFY_PROJECTION_BATCH_WAIT_MS="20")
    now = datetime.now(timezone.utc)
    data = {**contract("order.updated").sample, "customer_id": "g1", "order_id": "g1-1",
            "old_status": "processing", "new_status": "completed",
            "date_modified": now.isoformat()}
    parked = metrics.REGISTRY.get_sample_value(
        "companion_events_parked_total",
        {"service": "notifications", "event_type": "order.updated"}) or 0.0
    barrier = EventBarrier(services, "notifications").expect("order.updated")
    # A body that breaks its contract shows it was never loaded: it is not parked.
    broken = build_event("order.updated", store_id=STORE, occurred_at=now, data=data).to_message()
    broken["data"] = {"customer_id": 7}
    publish(services.amqp_uri, broken,
            build_event("order.updated", store_id=STORE, occurred_at=now, data=data).to_message())
    barrier.settled("order.updated", 2)
    assert (metrics.REGISTRY.get_sample_value(
        "companion_events_parked_total",
        {"service": "notifications", "event_type": "order.updated"}) or 0.0) == parked
    database = mongo.connect(services.mongo_uri)["companion_notifications"]
    assert database["sends"].count_documents({"store_id": STORE}) == 0

    # Saved now, the workflow's trigger is not missed by the very next event.
    rpc.notifications.save_workflow(STORE, dict(WORKFLOWS[2]))
    later = build_event("order.updated", store_id=STORE, occurred_at=now + timedelta(seconds=1),
                        data={**data, "order_id": "g1-2"}).to_message()
    publish(services.amqp_uri, later)
    wait_until(lambda: database["sends"].count_documents({"store_id": STORE}) == 1,
               timeout=10, message="the completed order's message scheduled")
