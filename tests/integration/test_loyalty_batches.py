"""loyalty's order events in batches on the real broker: a burst of a few hundred (some twice)
leaves the accounts, the ledger and the published events that applying them one at a time
leaves, and the handlers took them more than one at a time."""
from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

from devdoubles import mongomock_adapter
from services.loyalty.accounts import Accounts
from services.loyalty.repository import LoyaltyStorage
from services.loyalty.service import LoyaltyService
from shared import metrics, mongo
from shared.events import parse_event
from tests.integration.test_loyalty import order
from tests.support import EventBarrier, publish

NOW = datetime.now(timezone.utc).replace(microsecond=0)
TYPES = ("order.placed", "order.updated", "order.refunded", "order.cancelled")
# Each order's states in turn (status, share refunded); a burst stops an order anywhere along.
STATES = [("processing", 0), ("completed", 0), ("completed", 4), ("cancelled", 4)]


def burst(seed: int, customers: int) -> list[dict]:
    """Every customer's orders through part of their life, the customers' messages shuffled
    together (each keeping its own order), a tenth sent twice. One customer's events all go
    by one event type, so one queue orders them: the four handlers do not order between
    themselves, one at a time either."""
    rng = random.Random(seed)
    queues: list[list[dict]] = []
    for number in range(customers):
        customer, event_type, mine = f"b-{number}", TYPES[number % len(TYPES)], []
        for order_number in range(rng.randint(1, 3)):
            total = rng.choice([2_000, 9_990, 25_000, 120_000])
            for step, (status, refunded_share) in enumerate(STATES[:rng.randint(1, 4)]):
                mine.append(order(event_type, customer, total, status=status,
                                  refunded=total * refunded_share // 10,
                                  order_id=f"{customer}-{order_number}",
                                  at=NOW - timedelta(hours=2) + timedelta(minutes=step)))
        queues.append(mine)
    bodies: list[dict] = []
    while queues:
        queue = rng.choice(queues)
        bodies.append(queue.pop(0))
        if not queue:
            queues.remove(queue)
    for _ in range(len(bodies) // 10):
        body = rng.choice(bodies)
        later = [i for i, b in enumerate(bodies) if b is body][-1]
        bodies.insert(rng.randint(later + 1, len(bodies)), body)
    return bodies


def oracle(bodies: list[dict]) -> LoyaltyStorage:
    """The same events applied one at a time, in the order they were sent."""
    storage = LoyaltyStorage(mongomock_adapter.client()["oracle"])
    storage.ensure_indexes()
    accounts = Accounts(storage)
    for body in bodies:
        accounts.apply_order_event(parse_event(body))
    return storage


def state(storage: LoyaltyStorage) -> dict:
    """Accounts and ledger without the moments they were written at (the two ran at
    different times): what they hold, how often they changed, in what sequence."""
    accounts = {doc["_id"]: (doc["balance"], doc["debt"], doc["tier"], doc["next_seq"],
                             doc["version"],
                             sorted((lot["lot_id"], lot["points"], lot["remaining"],
                                     lot["reversed"]) for lot in doc["lots"]),
                             {order_id: (o["status"], o["earned"], o["reversed"], o["refunded"])
                              for order_id, o in doc["orders"].items()})
                for doc in storage.accounts.collection.find()}
    ledger = sorted((e["_id"], e["seq"], e["kind"], e["delta"], e["balance"])
                    for e in storage.ledger.collection.find())
    return {"accounts": accounts, "ledger": ledger}


def batch_sizes(event_type: str) -> tuple[float, float]:
    """(batches, events in them) the service's handler of `event_type` has applied."""
    labels = {"service": "loyalty", "event_type": event_type}
    count = metrics.REGISTRY.get_sample_value("companion_event_batch_size_count", labels) or 0
    total = metrics.REGISTRY.get_sample_value("companion_event_batch_size_sum", labels) or 0
    return count, total


def test_a_burst_of_order_events_ends_as_one_at_a_time_would_in_batches(services, events):
    events.listen("loyalty")
    services.start(LoyaltyService, LOYALTY_ORDER_BATCH_SIZE="40",
                   LOYALTY_ORDER_BATCH_WAIT_MS="100")
    bodies = burst(seed=11, customers=80)
    assert len(bodies) >= 300
    before = {t: batch_sizes(t) for t in TYPES}
    barrier = EventBarrier(services, "loyalty", events).expect(*TYPES)
    publish(services.amqp_uri, *bodies)
    for event_type in TYPES:
        barrier.settled(event_type, sum(1 for b in bodies if b["event_type"] == event_type),
                        timeout=60)

    expected = oracle(bodies)
    served = LoyaltyStorage(mongo.connect(services.mongo_uri)["companion_loyalty"])
    assert state(served) == state(expected)
    owed = sorted(entry["event_id"] for doc in expected.accounts.collection.find()
                  for entry in doc["outbox"])
    published = sorted(e["event_id"] for e in events.received
                       if e["event_type"].startswith("loyalty."))
    assert published == owed and barrier.published() == len(owed)
    # Batches, not one event a worker: fewer batches than events, for every handler.
    for event_type in TYPES:
        batches = batch_sizes(event_type)[0] - before[event_type][0]
        applied = batch_sizes(event_type)[1] - before[event_type][1]
        assert applied == sum(1 for b in bodies if b["event_type"] == event_type)
        assert 0 < batches < applied, event_type
