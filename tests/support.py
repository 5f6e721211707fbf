"""Test helpers that talk to the real broker: vhosts, running services, observing events."""
from __future__ import annotations

import json
import socket
import threading
import time
import urllib.parse
from typing import Callable

import requests
from kombu import Connection, Exchange, Queue
from nameko.containers import ServiceContainer
from pymongo.errors import BulkWriteError

from services.registry import settings
from shared import metrics, mongo
from shared.config import Config
from shared.events import contract
from shared.messaging.handlers import ReliableEventHandler
from shared.messaging.queues import nameko_config
from shared.outbox import OUTBOX_FIELD


class BrokerAdmin:
    """RabbitMQ management API: one virtual host per test, permissions for fault tests."""

    def __init__(self, url: str) -> None:
        parsed = urllib.parse.urlsplit(url)
        self.base = f"{parsed.scheme}://{parsed.hostname}:{parsed.port or 15672}/api"
        self.auth = (parsed.username or "guest", parsed.password or "guest")
        self.session = requests.Session()

    def unavailable_reason(self) -> str | None:
        try:
            response = self.session.get(f"{self.base}/overview", auth=self.auth, timeout=5)
        except requests.RequestException as exc:
            return f"management API unreachable ({exc.__class__.__name__})"
        if response.status_code != 200:
            return f"management API answered {response.status_code}"
        return None

    def create_vhost(self, vhost: str) -> None:
        name = urllib.parse.quote(vhost, safe="")
        self.session.put(f"{self.base}/vhosts/{name}", auth=self.auth, timeout=10).raise_for_status()
        self.set_permissions(vhost)

    def set_permissions(self, vhost: str, configure: str = ".*", write: str = ".*",
                        read: str = ".*", user: str = "guest") -> None:
        name = urllib.parse.quote(vhost, safe="")
        self.session.put(
            f"{self.base}/permissions/{name}/{user}", auth=self.auth, timeout=10,
            json={"configure": configure, "write": write, "read": read},
        ).raise_for_status()

    def delete_vhost(self, vhost: str) -> None:
        name = urllib.parse.quote(vhost, safe="")
        self.session.delete(f"{self.base}/vhosts/{name}", auth=self.auth, timeout=10)

    def create_user(self, user: str, password: str) -> None:
        self.session.put(f"{self.base}/users/{urllib.parse.quote(user, safe='')}",
                         auth=self.auth, timeout=10,
                         json={"password": password, "tags": ""}).raise_for_status()

    def delete_user(self, user: str) -> None:
        self.session.delete(f"{self.base}/users/{urllib.parse.quote(user, safe='')}",
                            auth=self.auth, timeout=10)

    def clear_permissions(self, vhost: str, user: str) -> None:
        """The user may no longer open a connection to the vhost (its reconnections fail)."""
        self.session.delete(
            f"{self.base}/permissions/{urllib.parse.quote(vhost, safe='')}/"
            f"{urllib.parse.quote(user, safe='')}", auth=self.auth, timeout=10).raise_for_status()

    def connections(self, vhost: str, user: str) -> list[str]:
        """Names of the user's open connections to the vhost."""
        r = self.session.get(f"{self.base}/connections", auth=self.auth, timeout=10)
        r.raise_for_status()
        return [c["name"] for c in r.json() if c.get("vhost") == vhost and c.get("user") == user]

    def close_connection(self, name: str) -> None:
        """Close a client's connection from the broker's side, as an operator or a network
        fault would."""
        self.session.delete(f"{self.base}/connections/{urllib.parse.quote(name, safe='')}",
                            auth=self.auth, timeout=10,
                            headers={"X-Reason": "closed by a test"})

    def queues(self, vhost: str) -> list[str]:
        r = self.session.get(f"{self.base}/queues/{urllib.parse.quote(vhost, safe='')}",
                             auth=self.auth, timeout=10)
        r.raise_for_status()
        return [q["name"] for q in r.json()]

    def queue_consumers(self, vhost: str, queue: str) -> list[dict]:
        """The channels consuming from a queue (`connection_name`, `user`, ...)."""
        r = self.session.get(f"{self.base}/queues/{urllib.parse.quote(vhost, safe='')}/"
                             f"{urllib.parse.quote(queue, safe='')}", auth=self.auth, timeout=10)
        r.raise_for_status()
        # A channel whose statistics are not in yet comes as an empty list, not an object.
        return [c["channel_details"] for c in r.json().get("consumer_details", [])
                if c.get("channel_details") and isinstance(c["channel_details"], dict)]

    def queue_depth(self, vhost: str, queue: str) -> int:
        name = urllib.parse.quote(vhost, safe="")
        r = self.session.get(f"{self.base}/queues/{name}/{urllib.parse.quote(queue, safe='')}",
                             auth=self.auth, timeout=10)
        r.raise_for_status()
        return int(r.json().get("messages", 0))


def vhost_of(amqp_uri: str) -> str:
    return urllib.parse.unquote(urllib.parse.urlsplit(amqp_uri).path.lstrip("/"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServiceHarness:
    """Runs nameko service containers in this process (they share the in-memory MongoDB)."""

    def __init__(self, amqp_uri: str, mongo_uri: str) -> None:
        self.amqp_uri = amqp_uri
        self.mongo_uri = mongo_uri
        self.containers: list[ServiceContainer] = []
        self.web_port = free_port()

    def config(self, **overrides: object) -> dict:
        base = Config(
            {},
            settings=settings(),
            AMQP_URI=self.amqp_uri,
            MONGO_URI=self.mongo_uri,
            WEB_SERVER_ADDRESS=f"127.0.0.1:{self.web_port}",
            EVENT_RETRY_DELAYS_MS="50,100",
            OUTBOX_SWEEP_SECONDS="0.2",
            INBOX_SWEEP_SECONDS="0.5",
        )
        config = nameko_config(base)
        config.update({k: (v if not isinstance(v, (int, float)) else str(v)) for k, v in overrides.items()})
        return config

    def start(self, service_cls, **overrides: object) -> ServiceContainer:
        # The container class the runner uses (nameko's SERVICE_CONTAINER_CLS from
        # shared.messaging.queues.nameko_config): it declares queues of AMQP_QUEUE_TYPE.
        from shared.messaging.queues import TypedQueuesContainer

        container = TypedQueuesContainer(service_cls, self.config(**overrides))
        container.start()
        self.containers.append(container)
        return container

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def kill(self, container: ServiceContainer) -> None:
        container.kill()
        self.containers.remove(container)

    def stop_all(self) -> None:
        for container in reversed(self.containers):
            try:
                container.stop()
            except Exception:
                container.kill()
        self.containers.clear()


class EventCollector:
    """Binds a private queue to services' event exchanges and records what arrives."""

    def __init__(self, amqp_uri: str) -> None:
        self.amqp_uri = amqp_uri
        self.received: list[dict] = []
        self._lock = threading.Lock()
        self._conn = Connection(amqp_uri)
        self._queues: list[Queue] = []
        self._consumer = None
        self._stop = False
        self._thread: threading.Thread | None = None

    def listen(self, source_service: str, pattern: str = "#") -> "EventCollector":
        exchange = Exchange(f"{source_service}.events", type="topic", durable=True)
        queue = Queue(f"collector-{source_service}-{id(self)}-{len(self._queues)}", exchange=exchange,
                      routing_key=pattern, auto_delete=True, exclusive=True)
        self._queues.append(queue)
        self._restart()
        return self

    def _restart(self) -> None:
        self._stop = True
        if self._thread:
            self._thread.join(timeout=5)
        self._stop = False
        channel = self._conn.channel()
        consumer = self._conn.Consumer(self._queues, channel=channel, callbacks=[self._on_message],
                                       accept=["json"])
        consumer.consume()
        self._consumer = consumer

        def loop() -> None:
            while not self._stop:
                try:
                    self._conn.drain_events(timeout=0.1)
                except socket.timeout:
                    continue
                except Exception:
                    if self._stop:
                        return
                    raise

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()

    def _on_message(self, body, message) -> None:
        if isinstance(body, (bytes, str)):
            body = json.loads(body)
        with self._lock:
            self.received.append(body)
        message.ack()

    def of_type(self, event_type: str) -> list[dict]:
        with self._lock:
            return [e for e in self.received if e.get("event_type") == event_type]

    def wait_for(self, predicate: Callable[[list[dict]], bool], timeout: float = 10.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                snapshot = list(self.received)
            if predicate(snapshot):
                return snapshot
            time.sleep(0.02)
        with self._lock:
            types = [e.get("event_type") for e in self.received]
        raise AssertionError(f"condition not met in {timeout}s; received so far: {types}")

    def close(self) -> None:
        self._stop = True
        if self._thread:
            self._thread.join(timeout=5)
        try:
            self._conn.release()
        except Exception:
            pass


def wait_until(predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.02,
               message: str = "condition") -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"{message} not met within {timeout}s")


def publish(amqp_uri: str, *messages: dict) -> None:
    """Publish event envelopes as their source service would (its exchange, routing key the
    event type), with publisher confirms: tests play a service whose events they need."""
    from shared.events import contract
    from shared.messaging.publisher import ConfirmingPublisher, OutgoingMessage, events_exchange

    publisher = ConfirmingPublisher(amqp_uri)
    try:
        publisher.publish_batch([
            OutgoingMessage(events_exchange(contract(m["event_type"]).source), m["event_type"], m)
            for m in messages])
    finally:
        publisher.close()


class Clock:
    """A clock a test moves by hand (use cases take `clock=`)."""

    def __init__(self, now) -> None:
        self.now = now

    def __call__(self):
        return self.now


def storage_at(storage_class, database, now):
    """A service's storage on the test database with its indexes made, and a clock pinned at
    `now`: what a use-case test starts from."""
    storage = storage_class(database)
    storage.ensure_indexes()
    return storage, Clock(now)


def _counts_by_labels(metric, **match: str) -> dict[tuple, float]:
    """A labelled counter's values in this process, by label values, for the labels matched."""
    values: dict[tuple, float] = {}
    for family in metric.collect():
        for sample in family.samples:
            if sample.name.endswith("_total") and all(
                    sample.labels.get(k) == v for k, v in match.items()):
                values[tuple(sorted(sample.labels.items()))] = sample.value
    return values


def settled_events(service: str, event_type: str) -> int:
    """Deliveries of `event_type` that `service`'s handlers are finished with: applied, skipped
    as already applied, or parked. A failed try or a deferral is not settled: it comes again."""
    return int(sum(sum(_counts_by_labels(metric, service=service, event_type=event_type).values())
                   for metric in (metrics.EVENTS_HANDLED, metrics.EVENTS_DUPLICATE,
                                  metrics.EVENTS_PARKED)))


def published_events(service: str) -> dict[str, int]:
    """Events `service` has published from its outbox (confirmed by the broker), by type."""
    return {dict(labels)["event_type"]: int(value) for labels, value in
            _counts_by_labels(metrics.OUTBOX_PUBLISHED, service=service).items()}


class EventBarrier:
    """Where a test would sleep to let events "(not) do anything", it waits here instead.

    Services under test run in the test's process, so their metrics are this process's. A
    barrier notes one service's counts when made; `settled(event_type, n)` waits until n more
    deliveries of that type are finished with (applied, skipped as duplicates, or parked), the
    service's outbox holds nothing unpublished and, given the test's collector (listening to
    all the service's events), until the collector holds every event the service published
    since. `published()` then says how many that was. Nothing of those deliveries is to come."""

    def __init__(self, services, service: str, events: "EventCollector | None" = None) -> None:
        self.services = services
        self.service = service
        self.events = events
        self.database = mongo.connect(services.mongo_uri)[f"companion_{service}"]
        # Published and counted: the counter moves before the outbox entry is taken off.
        self.outbox_drained()
        self._settled_before: dict[str, int] = {}
        self._published_before = published_events(service)
        self._received_before = self._received()

    def expect(self, *event_types: str) -> "EventBarrier":
        """Note the counts of the event types to wait for, before publishing them."""
        for event_type in event_types:
            self._settled_before[event_type] = settled_events(self.service, event_type)
        return self

    def settled(self, event_type: str, count: int = 1, timeout: float = 20.0) -> None:
        before = self._settled_before[event_type]
        wait_until(lambda: settled_events(self.service, event_type) - before >= count,
                   timeout=timeout,
                   message=f"{count} {event_type} deliveries settled by {self.service}")
        self.caught_up(timeout)

    def caught_up(self, timeout: float = 20.0) -> None:
        """Wait until the service has published all it owes and the collector holds it (for
        work the test itself has seen finish: an RPC, a command that returned)."""
        self.outbox_drained(timeout)
        if self.events is not None:
            wait_until(lambda: self._received() - self._received_before >= self.published(),
                       timeout=timeout, message=f"every event {self.service} published received")

    def outbox_drained(self, timeout: float = 20.0) -> None:
        def drained() -> bool:
            return all(self.database[name].count_documents(
                {f"{OUTBOX_FIELD}.event_id": {"$exists": True}}) == 0
                for name in self.database.list_collection_names())

        wait_until(drained, timeout=timeout, message=f"{self.service}'s outbox published")

    def published(self) -> int:
        return sum(self.published_types().values())

    def published_types(self) -> dict[str, int]:
        """How many events of each type the service has published since the barrier was made."""
        now = published_events(self.service)
        return {t: n - self._published_before.get(t, 0) for t, n in now.items()
                if n > self._published_before.get(t, 0)}

    def _received(self) -> int:
        if self.events is None:
            return 0
        with self.events._lock:
            types = [e.get("event_type") for e in self.events.received]
        return sum(1 for t in types if t and contract(t).source == self.service)


def _event_counts() -> tuple[dict, dict]:
    """(settled by (service, event type), published by (service, event type)) in this process."""
    settled: dict[tuple[str, str], float] = {}
    for metric in (metrics.EVENTS_HANDLED, metrics.EVENTS_DUPLICATE, metrics.EVENTS_PARKED):
        for labels, value in _counts_by_labels(metric).items():
            key = (dict(labels)["service"], dict(labels)["event_type"])
            settled[key] = settled.get(key, 0) + value
    published = {(dict(labels)["service"], dict(labels)["event_type"]): value
                 for labels, value in _counts_by_labels(metrics.OUTBOX_PUBLISHED).items()}
    return settled, published


class SystemBarrier:
    """The whole running system at rest: made before some work, `quiet()` waits until every
    event any service published since has been settled by every running service that handles
    its type, and no outbox holds anything unpublished (so nothing more is on its way). For
    work that ripples through several services (a webhook: customer_sync, then segmentation
    and loyalty, then notifications), where a test would otherwise sleep "to let it settle"."""

    def __init__(self, services) -> None:
        self.services = services
        self._settled, self._published = _event_counts()

    def _handlers(self) -> set[tuple[str, str, str]]:
        """(consuming service, source service, event type) of every running reliable handler;
        several instances of a service share one queue, so they count once."""
        return {(container.service_name, entrypoint.source_service, entrypoint.event_type)
                for container in self.services.containers
                for entrypoint in container.entrypoints
                if isinstance(entrypoint, ReliableEventHandler)}

    def quiet(self, timeout: float = 30.0) -> None:
        client = mongo.connect(self.services.mongo_uri)
        names = {container.service_name for container in self.services.containers}

        def at_rest() -> bool:
            # Counts, outboxes, counts again: a handler finishing in between moves the counts,
            # and one finished before the first read has its owed events in an outbox.
            counts = _event_counts()
            for name in names:
                database = client[f"companion_{name}"]
                if any(database[c].count_documents({f"{OUTBOX_FIELD}.event_id": {"$exists": True}})
                       for c in database.list_collection_names()):
                    return False
            if _event_counts() != counts:
                return False
            settled, published = counts
            for service, source, event_type in self._handlers():
                sent = published.get((source, event_type), 0) - self._published.get(
                    (source, event_type), 0)
                done = settled.get((service, event_type), 0) - self._settled.get(
                    (service, event_type), 0)
                if done < sent:
                    return False
            return True

        wait_until(at_rest, timeout=timeout, message="the system at rest")


def applied_but_unconfirmed(collection, monkeypatch) -> None:
    """`bulk_write` as MongoDB answers when the writes reached the primary but the write
    concern (w=majority) failed: applied, then a BulkWriteError with writeConcernErrors only."""
    real = collection.bulk_write

    def bulk_write(operations, *args, **kwargs):
        result = real(operations, *args, **kwargs)
        monkeypatch.setattr(collection, "bulk_write", real)  # the retry is confirmed
        raise BulkWriteError({
            "writeErrors": [], "writeConcernErrors": [
                {"code": 64, "errmsg": "waiting for replication timed out"}],
            "nInserted": result.inserted_count, "nUpserted": result.upserted_count,
            "nMatched": result.matched_count, "nModified": result.modified_count,
            "nRemoved": 0, "upserted": []})
    monkeypatch.setattr(collection, "bulk_write", bulk_write)



def outer_calls(collection, names: tuple[str, ...] = (
        "find", "find_one", "insert_one", "update_one", "bulk_write")) -> list[str]:
    """Record, in order, the calls made to `collection`'s methods `names` from outside it (an
    in-memory bulk write is made of single writes: only the outer call counts). Answers the
    list the calls are appended to; the methods stay wrapped for the collection's life."""
    calls: list[str] = []
    depth = [0]
    for name in names:
        original = getattr(collection, name)

        def counted(*args, _name=name, _original=original, **kwargs):
            if not depth[0]:
                calls.append(_name)
            depth[0] += 1
            try:
                return _original(*args, **kwargs)
            finally:
                depth[0] -= 1

        setattr(collection, name, counted)
    return calls
