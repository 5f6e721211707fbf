"""The batch event entrypoint on the real broker: batches by size and by time, acknowledgement
after the handler, parking and retries of the failing event alone, prefetch, shutdown."""
from __future__ import annotations

import amqp
import eventlet
import pytest
from kombu import Connection
from nameko.rpc import rpc
from nameko.standalone.rpc import ClusterRpcProxy
from pymongo.database import Database

from shared import metrics, mongo
from shared.events import build_event
from shared.messaging.batches import batch_event_handler
from shared.messaging.handlers import event_handler
from shared.messaging.parking import ParkedMessages
from shared.messaging.queues import TypedQueuesContainer
from shared.mongo import MongoStorage
from tests.support import EventBarrier, publish, wait_until

QUEUE = "evt-customer_sync-customer.deleted--batching.on_customers_deleted"


class Effects:
    """What the test service does: one document per handler call, one per applied event."""

    def __init__(self, database: Database, config=None) -> None:
        self.calls = database["calls"]
        self.applied = database["applied"]

    def ensure_indexes(self) -> None:
        pass


class Behaviour:
    hold = False  # a call waits while this is set (the test kills the container meanwhile)
    hold_from_call: int | None = None  # calls from this one on (0 is the first) wait too
    pause = 0.0  # seconds each call takes before it applies anything
    failures: dict[str, int] = {}  # customer id -> calls holding it that fail (-1: always)


class BatchingService:
    name = "batching"
    effects = MongoStorage(Effects)

    @batch_event_handler("customer_sync", "customer.deleted", storage="effects")
    def on_customers_deleted(self, events):
        customers = [event.data["customer_id"] for event in events]
        call = self.effects.calls.count_documents({})
        self.effects.calls.insert_one({"call": call, "customers": customers})
        while Behaviour.hold or (Behaviour.hold_from_call is not None
                                 and call >= Behaviour.hold_from_call):
            eventlet.sleep(0.02)
        eventlet.sleep(Behaviour.pause)
        for customer in customers:
            left = Behaviour.failures.get(customer, 0)
            if left:
                Behaviour.failures[customer] = left - 1 if left > 0 else left
                raise RuntimeError(f"simulated failure for {customer}")
        self.effects.applied.insert_many([{"customer_id": c} for c in customers])


class OneAtATimeService:
    """The same service and method with the reliable handler, one event a worker."""

    name = "batching"
    effects = MongoStorage(Effects)

    @event_handler("customer_sync", "customer.deleted", storage="effects")
    def on_customers_deleted(self, event):
        self.effects.calls.insert_one({"call": self.effects.calls.count_documents({}),
                                       "customers": [event.data["customer_id"]]})


class ManyBatchHandlersService:
    """More batch handlers than worker slots, and an RPC door: every handler holds its batch
    while `Behaviour.hold` is set."""

    name = "batching"

    def _hold(self) -> None:
        while Behaviour.hold:
            eventlet.sleep(0.02)

    @batch_event_handler("customer_sync", "customer.deleted", claims=False)
    def first(self, events):
        self._hold()

    @batch_event_handler("customer_sync", "customer.deleted", claims=False)
    def second(self, events):
        self._hold()

    @batch_event_handler("customer_sync", "customer.deleted", claims=False)
    def third(self, events):
        self._hold()

    @rpc
    def ping(self) -> str:
        return "pong"


@pytest.fixture(autouse=True)
def reset_behaviour():
    Behaviour.hold = False
    Behaviour.hold_from_call = None
    Behaviour.pause = 0.0
    Behaviour.failures = {}
    yield
    Behaviour.hold = False
    Behaviour.hold_from_call = None


def deleted(customer_id: str) -> dict:
    return build_event("customer.deleted", store_id="s1",
                       data={"customer_id": customer_id, "woo_customer_id": 7}).to_message()


def customers(count: int, prefix: str = "c") -> list[dict]:
    return [deleted(f"{prefix}-{n:02d}") for n in range(count)]


def database(services) -> Database:
    return mongo.connect(services.mongo_uri)["companion_batching"]


def calls(services) -> list[list[str]]:
    return [call["customers"] for call in database(services).calls.find().sort("call")]


def applied(services) -> list[str]:
    return [doc["customer_id"] for doc in database(services).applied.find()]


def queue_depth(amqp_uri: str) -> tuple[int, int]:
    """(messages ready in the handler's queue, consumers on it): unacknowledged messages are
    not ready, so a held batch shows as 0 ready."""
    with Connection(amqp_uri) as conn:
        _, ready, consumers = conn.channel().queue_declare(QUEUE, passive=True)
    return ready, consumers


def sample(name: str, **labels: str) -> float:
    value = metrics.REGISTRY.get_sample_value(name, {"service": "batching",
                                                     "event_type": "customer.deleted", **labels})
    return value or 0.0


def ids(bodies: list[dict]) -> list[str]:
    return [body["data"]["customer_id"] for body in bodies]


def test_a_full_batch_goes_at_once_in_delivery_order(services, amqp_uri):
    services.start(BatchingService, EVENT_BATCH_SIZE="5", EVENT_BATCH_WAIT_MS="60000")
    bodies = customers(10)
    sizes_before = sample("companion_event_batch_size_count")
    barrier = EventBarrier(services, "batching").expect("customer.deleted")
    publish(amqp_uri, *bodies)
    barrier.settled("customer.deleted", 10)  # long before the minute's wait is up
    assert calls(services) == [ids(bodies[:5]), ids(bodies[5:])]
    assert sorted(applied(services)) == ids(bodies)
    assert sample("companion_event_batch_size_count") - sizes_before == 2
    assert queue_depth(amqp_uri) == (0, 1)


def test_a_batch_that_does_not_fill_goes_after_its_wait(services, amqp_uri):
    services.start(BatchingService, EVENT_BATCH_SIZE="100", EVENT_BATCH_WAIT_MS="200")
    bodies = customers(3)
    waits_before = sample("companion_event_batch_wait_seconds_count")
    barrier = EventBarrier(services, "batching").expect("customer.deleted")
    publish(amqp_uri, *bodies)
    barrier.settled("customer.deleted", 3)
    assert calls(services) == [ids(bodies)]
    assert sample("companion_event_batch_wait_seconds_count") - waits_before == 1
    # Closed by its wait, not before: the observed wait is at least the setting.
    assert sample("companion_event_batch_wait_seconds_sum") >= 0.2


def test_messages_are_acknowledged_only_after_the_handler_returned(services, amqp_uri):
    Behaviour.hold = True
    container = services.start(BatchingService, EVENT_BATCH_SIZE="3",
                                EVENT_BATCH_WAIT_MS="60000")
    bodies = customers(3)
    publish(amqp_uri, *bodies)
    wait_until(lambda: calls(services) == [ids(bodies)], timeout=20, message="batch in hand")
    assert queue_depth(amqp_uri) == (0, 1)  # delivered, held unacknowledged
    services.kill(container)
    assert wait_until(lambda: queue_depth(amqp_uri) == (3, 0), timeout=20,
                      message="the killed handler's batch back in its queue")
    assert applied(services) == []

    Behaviour.hold = False
    barrier = EventBarrier(services, "batching").expect("customer.deleted")
    # The killed worker's claims hold the events back until their lease ends; each is
    # deferred alone meanwhile, so the redelivered events may come in smaller batches.
    services.start(BatchingService, EVENT_BATCH_SIZE="3", EVENT_BATCH_WAIT_MS="200",
                   EVENT_CLAIM_LEASE_SECONDS="1")
    barrier.settled("customer.deleted", 3)
    first, *again = calls(services)
    assert first == ids(bodies)
    assert sorted(customer for call in again for customer in call) == ids(bodies)
    assert sorted(applied(services)) == ids(bodies)


def test_a_batch_is_acknowledged_in_one_ack_that_leaves_the_next_batch_held(
        services, amqp_uri, monkeypatch):
    """One basic.ack (multiple) settles a whole batch, and only it: the next batch, delivered
    while the first was applied, is still unacknowledged and comes back when killed."""
    acks: list[tuple[int, bool]] = []
    original = amqp.Channel.basic_ack

    def recorded(channel, delivery_tag, multiple=False, *args, **kwargs):
        acks.append((delivery_tag, multiple))
        return original(channel, delivery_tag, multiple, *args, **kwargs)

    monkeypatch.setattr(amqp.Channel, "basic_ack", recorded)
    Behaviour.pause = 0.5  # the next three are delivered while the first three are applied
    Behaviour.hold_from_call = 1  # and the second batch is held in hand
    container = services.start(BatchingService, EVENT_BATCH_SIZE="3",
                               EVENT_BATCH_WAIT_MS="60000")
    bodies = customers(6)
    publish(amqp_uri, *bodies)
    try:
        wait_until(lambda: len(calls(services)) == 2, timeout=20,
                   message="second batch in hand")
        assert calls(services) == [ids(bodies[:3]), ids(bodies[3:])]
        assert sorted(applied(services)) == ids(bodies[:3])
        assert len(acks) == 1 and acks[0][1] is True, acks  # one frame, not one per message
    finally:
        services.kill(container)  # a stop would wait for the held batch
    assert wait_until(lambda: queue_depth(amqp_uri) == (3, 0), timeout=20,
                      message="the held batch back in its queue, the acknowledged one not")


def test_a_body_that_breaks_its_contract_is_parked_alone_and_the_rest_applied_once(
        services, amqp_uri):
    services.start(BatchingService, EVENT_BATCH_SIZE="3", EVENT_BATCH_WAIT_MS="500")
    first, second = customers(2)
    bad = deleted("c-bad")
    bad["data"] = {"woo_customer_id": "not a number"}
    parked_before = sample("companion_events_parked_total")
    barrier = EventBarrier(services, "batching").expect("customer.deleted")
    publish(amqp_uri, first, bad, second)
    barrier.settled("customer.deleted", 3)  # two applied, one parked
    [parked] = ParkedMessages(amqp_uri).list("batching")
    assert parked.event_id == bad["event_id"] and "customer_id" in parked.error
    assert parked.handler == "batching.on_customers_deleted"
    assert calls(services) == [ids([first, second])]
    assert sorted(applied(services)) == ids([first, second])
    assert sample("companion_events_parked_total") - parked_before == 1


def test_an_event_the_handler_keeps_failing_on_is_parked_alone(services, amqp_uri):
    bodies = customers(4)
    poison = ids(bodies)[2]
    Behaviour.failures = {poison: -1}
    splits_before = sample("companion_event_batch_splits_total")
    # A retry waits for companions like any delivery: a short wait keeps it from lingering.
    services.start(BatchingService, EVENT_BATCH_SIZE="4", EVENT_BATCH_WAIT_MS="1000",
                   EVENT_MAX_ATTEMPTS="2")
    barrier = EventBarrier(services, "batching").expect("customer.deleted")
    publish(amqp_uri, *bodies)
    barrier.settled("customer.deleted", 4)  # three applied, one parked
    [parked] = ParkedMessages(amqp_uri).list("batching")
    assert parked.event_id == bodies[2]["event_id"] and parked.attempts == 2
    assert f"simulated failure for {poison}" in parked.error
    assert sorted(applied(services)) == sorted(set(ids(bodies)) - {poison})  # each once
    a, b, c, d = ids(bodies)
    # Split until the poison was alone; its retry came alone too.
    assert calls(services) == [[a, b, c, d], [a, b], [c, d], [c], [d], [c]]
    assert sample("companion_event_batch_splits_total") - splits_before == 2


def test_an_event_that_fails_once_is_retried_alone_while_the_rest_are_applied(
        services, amqp_uri):
    bodies = customers(4)
    flaky = ids(bodies)[1]
    Behaviour.failures = {flaky: 3}  # the whole batch, its half, and its first try alone
    services.start(BatchingService, EVENT_BATCH_SIZE="4", EVENT_BATCH_WAIT_MS="1000",
                   EVENT_RETRY_DELAYS_MS="300")
    barrier = EventBarrier(services, "batching").expect("customer.deleted")
    publish(amqp_uri, *bodies)
    barrier.settled("customer.deleted", 4)
    a, b, c, d = ids(bodies)
    # The whole batch failed, then its halves, left first: [a] applied, [b] failed and went
    # to its back-off, [c, d] applied without waiting for it; [b] came back alone.
    assert calls(services) == [[a, b, c, d], [a, b], [a], [b], [c, d], [b]]
    assert applied(services) == [a, c, d, b]
    assert ParkedMessages(amqp_uri).list("batching") == []


def test_prefetch_allows_a_full_batch_beyond_the_worker_count(services, amqp_uri):
    services.start(BatchingService, MAX_WORKERS="2", EVENT_BATCH_SIZE="20",
                   EVENT_BATCH_WAIT_MS="60000")
    bodies = customers(20)
    barrier = EventBarrier(services, "batching").expect("customer.deleted")
    publish(amqp_uri, *bodies)
    barrier.settled("customer.deleted", 20)
    assert calls(services) == [ids(bodies)]


def test_a_stopping_container_hands_over_its_partial_batch_and_acknowledges_it(
        services, amqp_uri):
    container = services.start(BatchingService, EVENT_BATCH_SIZE="10",
                               EVENT_BATCH_WAIT_MS="60000")
    bodies = customers(3)
    publish(amqp_uri, *bodies)
    wait_until(lambda: queue_depth(amqp_uri) == (0, 1), timeout=20,
               message="the three delivered and held")
    assert calls(services) == []  # gathering: neither full nor waited out
    Behaviour.pause = 2.0  # the consumer's idle loop turns meanwhile: its connection stays up
    container.stop()
    services.containers.remove(container)
    assert calls(services) == [ids(bodies)]
    assert sorted(applied(services)) == ids(bodies)
    assert queue_depth(amqp_uri) == (0, 0)  # acknowledged before the connection closed


def test_repeated_events_are_skipped_by_their_claims(services, amqp_uri):
    services.start(BatchingService, EVENT_BATCH_SIZE="3", EVENT_BATCH_WAIT_MS="200")
    bodies = customers(2)
    barrier = EventBarrier(services, "batching").expect("customer.deleted")
    publish(amqp_uri, *bodies)
    barrier.settled("customer.deleted", 2)
    barrier = EventBarrier(services, "batching").expect("customer.deleted")
    extra = deleted("c-new")
    publish(amqp_uri, bodies[0], extra, bodies[1])
    barrier.settled("customer.deleted", 3)  # one applied, two skipped as already applied
    assert calls(services) == [ids(bodies), ids([extra])]
    assert sorted(applied(services)) == sorted(ids(bodies) + ids([extra]))


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
def test_a_handler_switches_to_batches_without_moving_its_queue(services, amqp_uri, queue_type):
    one_by_one = services.start(OneAtATimeService, AMQP_QUEUE_TYPE=queue_type)
    one_by_one.stop()  # its durable queue stays, and keeps what is published meanwhile
    services.containers.remove(one_by_one)
    bodies = customers(3)
    publish(amqp_uri, *bodies)
    assert queue_depth(amqp_uri) == (3, 0)
    barrier = EventBarrier(services, "batching").expect("customer.deleted")
    services.start(BatchingService, AMQP_QUEUE_TYPE=queue_type, EVENT_BATCH_SIZE="3",
                   EVENT_BATCH_WAIT_MS="60000")  # a redeclare with other arguments would fail
    barrier.settled("customer.deleted", 3)
    assert calls(services) == [ids(bodies)]


def test_busy_batch_handlers_leave_the_worker_slots_to_rpc(services, amqp_uri):
    """Each batch handler runs its batches in a worker slot reserved for it: handlers busy all
    at once, more of them than MAX_WORKERS, still leave the container answering RPC."""
    Behaviour.hold = True
    config = services.config(EVENT_BATCH_SIZE="1", EVENT_BATCH_WAIT_MS="0")
    config["max_workers"] = 2  # what nameko_config makes of MAX_WORKERS=2
    container = TypedQueuesContainer(ManyBatchHandlersService, config)
    container.start()
    services.containers.append(container)
    try:
        publish(amqp_uri, deleted("c-busy"))
        wait_until(lambda: container._worker_pool.running() >= 2, timeout=20,
                   message="batch handlers busy")
        eventlet.sleep(0.5)  # the third handler's batch too
        with ClusterRpcProxy({"AMQP_URI": amqp_uri}, timeout=5) as cluster:
            assert cluster.batching.ping() == "pong"
    finally:
        Behaviour.hold = False
