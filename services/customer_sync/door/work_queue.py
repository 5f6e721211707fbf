"""The inbox's work queue: how the door tells separate applier processes which deliveries it
recorded (`INBOX_APPLY=applier`, docs/services/customer_sync.md).

The door records a delivery in the inbox and answers; then it publishes the delivery's key on
a durable queue that every `customer_sync_applier` process consumes (competing consumers:
each message goes to one of them, acknowledged once its deliveries are applied). Keys that
arrive together share one message, so a burst costs the door few publishes.

A notice is only a hint: what applies a delivery is its claim in the inbox (a compare-and-set
with a lease, `InboxRepository.claim`), so two appliers given the same key apply it once. A
notice lost (the broker away, the door killed between answering and publishing) costs only
time: the appliers' inbox sweep finds every delivery not yet applied.
"""
from __future__ import annotations

import logging
import time
from typing import Callable

import eventlet
from eventlet.event import Event
from kombu import Connection, Exchange, Producer, Queue

from shared.messaging.queues import queue_arguments
from shared.metrics import count_notices

log = logging.getLogger(__name__)

# Exchange and queue share the name; the broker user customer_sync may declare, publish to
# and read both (ops/broker_permissions.py).
WORK_QUEUE_NAME = "customer_sync.inbox"
ROUTING_KEY = "apply"
# Most keys in one message: a message is applied by one applier, one key after another.
KEYS_PER_NOTICE = 50
# Most keys waiting to be published (as the in-process queue's QUEUE_LIMIT): past it, a key is
# counted failed at once and left to the appliers' sweep, so a burst during a broker outage
# costs the door no memory.
MAX_WAITING_KEYS = 100_000
# After a failed publish, keys are counted failed without trying the broker for this long, so
# a burst into an unreachable broker does not cost a connection timeout per notice.
RETRY_AFTER_SECONDS = 5.0


def work_exchange() -> Exchange:
    return Exchange(WORK_QUEUE_NAME, type="direct", durable=True)


def work_queue(kind: str) -> Queue:
    """The durable queue of inbox keys, of type `kind` (AMQP_QUEUE_TYPE), bound to its
    exchange; the door and the appliers declare it alike."""
    return Queue(WORK_QUEUE_NAME, exchange=work_exchange(), routing_key=ROUTING_KEY,
                 durable=True, queue_arguments=queue_arguments(kind))


def notice_body(keys: list[str]) -> dict:
    return {"keys": list(keys)}


def notice_keys(body: object) -> list[str]:
    """The inbox keys a notice names; nothing for a body of another shape (the sweep still
    finds whatever it meant)."""
    keys = body.get("keys") if isinstance(body, dict) else None
    if not isinstance(keys, list):
        return []
    return [key for key in keys if isinstance(key, str)]


class InboxNotices:
    """The door's side: keys are handed over at once (`send` never waits on the broker) and
    published from one green thread, batched, on one connection kept open."""

    def __init__(self, amqp_uri: str, ssl: dict | None, kind: str,
                 connect: Callable[..., Connection] = Connection,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.amqp_uri = amqp_uri
        self.ssl = ssl
        self.queue = work_queue(kind)
        self._connect = connect
        self._clock = clock
        self._retry_at = float("-inf")
        self._keys: list[str] = []
        self._wake = Event()
        self._connection: Connection | None = None
        self._producer: Producer | None = None
        self.published = 0  # keys published since start
        self.failed = 0  # keys whose notice failed (the appliers' sweep finds them)

    def declare(self) -> None:
        """Declare the exchange, the queue and its binding, so keys published before any
        applier has started wait in the queue rather than being dropped."""
        self._producer_now()

    def send(self, key: str) -> None:
        if len(self._keys) >= MAX_WAITING_KEYS:
            self._failed(1)  # durable in the inbox: the appliers' sweep finds it
            return
        self._keys.append(key)
        if not self._wake.ready():
            self._wake.send()

    def run(self, running: Callable[[], bool]) -> None:
        """Publish what `send` handed over until `running()` is false."""
        while running():
            self._wake.wait()
            self._wake = Event()
            self.flush()

    def flush(self) -> None:
        """Publish every waiting key. At the first failure, every key still waiting is
        counted failed (the appliers' sweep finds its delivery) and the broker is not tried
        again for RETRY_AFTER_SECONDS: one attempt at most, however many keys wait."""
        while self._keys:
            if self._clock() < self._retry_at:
                waiting, self._keys = len(self._keys), []
                self._failed(waiting)
                return
            batch, self._keys = self._keys[:KEYS_PER_NOTICE], self._keys[KEYS_PER_NOTICE:]
            try:
                self._producer_now().publish(
                    notice_body(batch), exchange=self.queue.exchange, routing_key=ROUTING_KEY,
                    serializer="json", delivery_mode=2)
                self.published += len(batch)
                count_notices("published", len(batch))
            except Exception as exc:  # the broker away: the sweep finds these deliveries
                waiting, self._keys = len(batch) + len(self._keys), []
                self._failed(waiting)
                self._retry_at = self._clock() + RETRY_AFTER_SECONDS
                log.warning("could not hand %d inbox key(s) to the appliers (%s); their sweep "
                            "will find them, and keys handed over in the next %.0f s go the "
                            "same way", waiting, type(exc).__name__, RETRY_AFTER_SECONDS)
                self.close()
                eventlet.sleep(0)
                return

    def _failed(self, count: int) -> None:
        self.failed += count
        count_notices("failed", count)

    def consumers(self) -> int | None:
        """How many appliers consume the queue now (None when the broker cannot say)."""
        try:
            with self._connect(self.amqp_uri, ssl=self.ssl, connect_timeout=5) as connection:
                declared = self.queue(connection.channel()).queue_declare(passive=True)
                return int(declared.consumer_count)
        except Exception:
            return None

    def _producer_now(self) -> Producer:
        if self._producer is None:
            self._connection = self._connect(self.amqp_uri, ssl=self.ssl, connect_timeout=5)
            channel = self._connection.channel()
            self.queue(channel).declare()
            self._producer = Producer(channel)
        return self._producer

    def close(self) -> None:
        if self._connection is not None:
            try:
                self._connection.release()
            except Exception:
                pass
        self._connection = self._producer = None
