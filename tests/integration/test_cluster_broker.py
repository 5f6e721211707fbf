"""The services on a three-node RabbitMQ cluster with quorum queues, losing nodes.

A private cluster of our own (tests/private_cluster.py), never the machine's shared broker.
A nameko service with a reliable event handler and a batch handler on the same events, its
AMQP_URI a failover list of the three nodes, consumes while the project's outbox relay feeds
it through its ConfirmingPublisher: first while a node that leads neither of its queues is
stopped, then while the leader of its queue is killed. Every event the relay was given is
applied exactly once by each handler (counted by event id), nothing is parked, and the
publisher carries on from a surviving node each time.
"""
from __future__ import annotations

import itertools
import time
import uuid

import eventlet
import pytest

from shared import mongo
from shared.events import build_event
from shared.messaging.batches import batch_event_handler
from shared.messaging.handlers import event_handler
from shared.messaging.publisher import ConfirmingPublisher, OutgoingMessage, PublishError
from shared.mongo import MongoStorage
from shared.outbox import OUTBOX_FIELD, OutboxRelay, outbox_entry
from ops.system_health import queue_counts
from tests import private_cluster
from tests.private_cluster import PrivateCluster
from tests.support import ServiceHarness, wait_until

SERVICE = "clustered"
ONE_BY_ONE = f"evt-customer_sync-customer.deleted--{SERVICE}.one_by_one"
IN_BATCHES = f"evt-customer_sync-customer.deleted--{SERVICE}.in_batches"
HANDLERS = {"one_by_one": ONE_BY_ONE, "in_batches": IN_BATCHES}
# Events each handler must apply while a node is away, and how long that may take; how long the
# handlers may take to catch up at the end.
PROGRESS_WHILE_AWAY, PROGRESS_TIMEOUT, CATCH_UP_TIMEOUT = 40, 90.0, 180.0


class Effects:
    """One document per event a handler applied."""

    def __init__(self, database, config=None) -> None:
        self.applied = database["applied"]

    def ensure_indexes(self) -> None:
        pass


class ClusteredService:
    name = SERVICE
    effects = MongoStorage(Effects)

    @event_handler("customer_sync", "customer.deleted", storage="effects")
    def one_by_one(self, event):
        self.effects.applied.insert_one({"handler": "one_by_one", "event_id": event.event_id})

    @batch_event_handler("customer_sync", "customer.deleted", storage="effects")
    def in_batches(self, events):
        self.effects.applied.insert_many([{"handler": "in_batches", "event_id": e.event_id}
                                          for e in events])


class Feeder:
    """Writes documents owing one event each and has the outbox relay publish them, a few
    every `pause` seconds, as a service's writes and relay do; a failed publish stays in the
    outbox and goes out with the next round."""

    def __init__(self, relay: OutboxRelay, pause: float = 0.1, per_round: int = 4) -> None:
        self.relay, self.pause, self.per_round = relay, pause, per_round
        self.docs = relay.collections[0]
        self.created: list[str] = []
        self.failures = 0
        self._numbers = itertools.count()
        self._stop = False
        self._thread = None

    def start(self) -> "Feeder":
        self._thread = eventlet.spawn(self._run)
        return self

    def _run(self) -> None:
        while not self._stop:
            entries = []
            for _ in range(self.per_round):
                number = next(self._numbers)
                event = build_event("customer.deleted", store_id="s1",
                                    data={"customer_id": f"c-{number:05d}",
                                          "woo_customer_id": number})
                entries.append(({"_id": number, OUTBOX_FIELD: [outbox_entry(event)]},
                                event.event_id))
            self.docs.insert_many([doc for doc, _ in entries])
            self.created += [event_id for _, event_id in entries]
            self.publish()
            eventlet.sleep(self.pause)

    def publish(self) -> bool:
        try:
            self.relay.publish_pending()
            return True
        except PublishError:
            self.failures += 1
            return False

    def owed(self) -> int:
        return self.docs.count_documents({f"{OUTBOX_FIELD}.event_id": {"$exists": True}})

    def published(self) -> int:
        """Events confirmed by the broker (pulled off the outbox)."""
        return len(self.created) - self.owed()

    def stop(self) -> None:
        self._stop = True
        if self._thread is not None:
            self._thread.wait()


@pytest.fixture(scope="module")
def cluster():
    reason = private_cluster.available()
    if reason:
        pytest.skip(f"a private RabbitMQ cluster cannot run here: {reason}")
    with PrivateCluster.start(nodes=3) as started:
        yield started


@pytest.fixture
def vhost(cluster):
    """A fresh vhost, on a cluster whose every node runs (an earlier test may have left one
    down)."""
    for node in cluster.nodes:
        if not node.running():
            cluster.start_node(node.index)
    name = f"test-{uuid.uuid4().hex[:12]}"
    cluster.admin().create_vhost(name)
    # Not deleted after: with a node down that waits on its quorum queues' lost replicas, and
    # the cluster goes, vhosts and all, with the module.
    return name


def applied_counts(database, handler: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for doc in database["applied"].find({"handler": handler}, {"event_id": 1}):
        counts[doc["event_id"]] = counts.get(doc["event_id"], 0) + 1
    return counts


def test_a_publisher_whose_node_stops_publishes_on_another(cluster, vhost):
    """The ConfirmingPublisher's connection goes with its node; the next batch is confirmed
    through a surviving node, without an error to its caller."""
    victim = 2
    uri = cluster.amqp_uri(vhost, order=[victim, 0, 1])
    publisher = ConfirmingPublisher(uri)
    try:
        publisher.declare_queue("plain", arguments={"x-queue-type": "quorum"}, bind_to="direct")
        publisher.publish_batch([OutgoingMessage("direct", "plain", {"n": 1})])
        cluster.stop_node(victim)
        publisher.publish_batch([OutgoingMessage("direct", "plain", {"n": 2})])
        assert queue_counts(cluster.amqp_uri(vhost), ["plain"])["plain"] == (2, 0)
    finally:
        publisher.close()


def test_handlers_apply_every_event_once_while_nodes_stop_and_die(cluster, vhost, mongo_uri):
    # Declared while all three nodes run: quorum queues with a replica on each.
    services = ServiceHarness(cluster.amqp_uri(vhost), mongo_uri)
    services.start(ClusteredService, AMQP_QUEUE_TYPE="quorum", EVENT_BATCH_SIZE="20",
                   EVENT_BATCH_WAIT_MS="50")
    database = mongo.connect(mongo_uri)[f"companion_{SERVICE}"]
    feeder = None
    publisher = None
    try:
        for queue in HANDLERS.values():
            record = cluster.queue(queue, vhost)
            assert record["type"] == "quorum", record
            assert cluster.members_of(queue, vhost) == [0, 1, 2]
        leaders = {queue: cluster.leader_of(queue, vhost) for queue in HANDLERS.values()}
        # Two queues have at most two leaders: a third node leads neither.
        bystander = min(set(range(3)) - set(leaders.values()))
        leader = leaders[ONE_BY_ONE]
        # The relay connects to the bystander first, so stopping it moves the publisher too.
        order = [bystander, leader, *sorted(set(range(3)) - {bystander, leader})]
        publisher = ConfirmingPublisher(cluster.amqp_uri(vhost, order=order))
        relay = OutboxRelay([mongo.connect(mongo_uri)["companion_feeder"]["docs"]], publisher,
                            batch_size=50)
        relay.ensure_indexes()
        feeder = Feeder(relay).start()

        def progress(label: str) -> None:
            """Both handlers apply, and the relay publishes, PROGRESS_WHILE_AWAY more events."""
            def counts() -> dict[str, int]:
                return {"published": feeder.published(),
                        **{h: len(applied_counts(database, h)) for h in HANDLERS}}

            before = counts()
            deadline = time.monotonic() + PROGRESS_TIMEOUT
            while any(now < before[key] + PROGRESS_WHILE_AWAY for key, now in counts().items()):
                if time.monotonic() > deadline:
                    raise AssertionError(f"no progress {label} in {PROGRESS_TIMEOUT:g}s: "
                                         f"{before} -> {counts()}")
                time.sleep(0.2)

        progress("with all nodes up")
        cluster.stop_node(bystander)
        progress(f"with node {bystander} (no leader) stopped")
        cluster.start_node(bystander)
        for queue in HANDLERS.values():
            cluster.wait_online(queue, vhost, range(3))

        leader = cluster.leader_of(ONE_BY_ONE, vhost)
        cluster.kill_node(leader)
        progress(f"with node {leader} (the leader of {ONE_BY_ONE}) killed")
        assert cluster.leader_of(ONE_BY_ONE, vhost) != leader

        feeder.stop()
        wait_until(lambda: feeder.publish() and feeder.owed() == 0, timeout=60, interval=0.2,
                   message="the outbox drained")
        created = set(feeder.created)
        assert len(created) == len(feeder.created)
        for handler in HANDLERS:
            wait_until(lambda: set(applied_counts(database, handler)) >= created,
                       timeout=CATCH_UP_TIMEOUT, interval=0.5,
                       message=f"{handler} applied every event")
        for handler in HANDLERS:
            counts = applied_counts(database, handler)
            assert set(counts) == created
            twice = {event_id: n for event_id, n in counts.items() if n != 1}
            assert not twice, f"{handler} applied {len(twice)} events more than once"
        parked = queue_counts(cluster.amqp_uri(vhost), [f"{SERVICE}.parked"])
        assert parked[f"{SERVICE}.parked"] in (None, (0, 0))
        print(f"cluster run: {len(created)} events, leaders {leaders}, stopped {bystander}, "
              f"killed {leader}, failed publishes retried {feeder.failures}")
    finally:
        if feeder is not None:
            feeder.stop()
        services.stop_all()
        if publisher is not None:
            publisher.close()
