"""An event entrypoint that hands its handler a list of events, so it can apply them in one
bulk write and have them acknowledged together.

`@batch_event_handler(source, event_type)` consumes the same queue, with the same routing, as
`@event_handler` would for that method (`evt-<source>-<type>--<service>.<method>`), so a
handler switches between the two without moving its queue. It keeps the reliable handler's
promises, per event:

* a body that does not match its contract is parked alone, at once, with its reason;
* with claims (the default) each event is claimed before the handler runs and the ones
  already applied are acknowledged and skipped; a claim held elsewhere defers that event alone;
* a batch is acknowledged only after the handler returned, all its messages at once (one
  basic.ack with `multiple`, see `BatchQueueConsumer.ack_through`);
* a batch that raises is split in halves, left first, until the failing event is alone; the
  rest are applied and acknowledged at once, and the failing one takes the reliable handler's
  way (a retry after back-off, then parked with its error). The handler must therefore be
  idempotent for a repeated sub-list: events carry stable ids.

Order: one collecting thread per entrypoint gathers deliveries in the order the broker gave
them and applies one batch at a time, so within a handler instance events are applied in
delivery order. An event that fails comes back after its back-off, behind later ones (as with
the reliable handler); instances competing on one queue do not order between themselves.

Prefetch: nameko's QueueConsumer is shared by every consumer entrypoint of a container and
sets each consumer's prefetch to MAX_WORKERS, which also caps concurrent workers; a full
batch would need MAX_WORKERS raised to the batch size for every handler of the service, and a
shared channel applies one prefetch to all its consumers. Instead each batch handler
has a QueueConsumer of its own (one more AMQP connection) whose prefetch is twice its batch
size: one batch being applied while the next one gathers, and never more.

Shutdown: on a graceful stop the consumer is cancelled first, the partial batch is handed to
the handler and acknowledged, and only then does the connection close. On a kill nothing more
is acknowledged: the broker redelivers whatever was unacknowledged.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable, Sequence, TypeVar

import eventlet
from amqp.exceptions import ConnectionError as AmqpConnectionError
from eventlet.event import Event as GreenEvent
from eventlet.queue import Empty, LightQueue
from nameko.exceptions import ContainerBeingKilled
from nameko.extensions import Extension
from nameko.messaging import QueueConsumer
from pymongo.errors import PyMongoError

from shared import metrics
from shared.config import from_nameko
from shared.events import Event, InvalidEvent, parse_event
from shared.idempotency import Claim
from shared.logs import log_context
from shared.messaging.handlers import ReliableEventHandler, attempts_in, event_log_context

log = logging.getLogger(__name__)

# Bounds of the settings. A handler holds up to twice its batch size in messages (the
# prefetch), up to about 12 KiB each as raw body, decoded dict and parsed event: 1,000 keeps
# that near 25 MiB a handler (docs/batching.md, memory budget).
MAX_BATCH_SIZE = 1_000
MAX_BATCH_WAIT_MS = 60_000
_OUTAGE_PAUSE_SECONDS = 1.0  # before giving a batch back while the database is out

T = TypeVar("T")


@dataclass
class Delivery:
    """One message on its way through a batch, with what settling it needs."""

    message: object  # kombu's Message
    body: dict
    headers: dict
    event: Event
    attempts: int
    token: str | None = None  # the claim's owner token, when claimed


@dataclass
class Unparsable:
    """A message whose body broke its contract: parked alone, never part of a batch."""

    message: object
    body: object
    headers: dict
    error: InvalidEvent


class _Stop:
    """Put in the inbox when the entrypoint stops: what is gathered goes out, then no more."""


STOP = _Stop()


@dataclass
class Gathered:
    """One batch as the collector closed it, and why it closed."""

    items: list
    reason: str  # "size", "wait" or "stop"
    waited_seconds: float


class BatchCollector:
    """Gathers items from an inbox into batches of at most `size`, closing one `wait_seconds`
    after its first item at the latest. Items keep the order they were put in."""

    def __init__(self, size: int, wait_seconds: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if size < 1:
            raise ValueError("a batch holds at least one item")
        self.size = size
        self.wait_seconds = max(0.0, wait_seconds)
        self.inbox: LightQueue = LightQueue()
        self.clock = clock
        self.stopped = False

    def put(self, item: object) -> None:
        """Never yields: the consumer thread calls it once per delivery, in delivery order."""
        self.inbox.put(item)

    def next_batch(self, on_other: Callable[[object], None] = lambda item: None) -> Gathered | None:
        """The next batch (blocking until one is due), or None once stopped with nothing left.
        Items that are not deliveries (`Unparsable`) go to `on_other` as they come."""
        items: list = []
        first_at = 0.0
        while len(items) < self.size:
            if self.stopped:
                reason = "stop"
                break
            if items:
                left = first_at + self.wait_seconds - self.clock()
                if left <= 0:
                    reason = "wait"
                    break
                try:
                    item = self.inbox.get(timeout=left)
                except Empty:
                    reason = "wait"
                    break
            else:
                item = self.inbox.get()
            if item is STOP:
                self.stopped = True
                continue
            if not isinstance(item, Delivery):
                on_other(item)
                continue
            if not items:
                first_at = self.clock()
            items.append(item)
        else:
            reason = "size"
        if not items:
            return None
        return Gathered(items, reason, max(0.0, self.clock() - first_at))


def apply_in_halves(items: Sequence[T], run: Callable[[list[T]], BaseException | None],
                    applied: Callable[[list[T]], None],
                    failed: Callable[[T, BaseException], None],
                    split: Callable[[list[T]], None] = lambda part: None) -> None:
    """Run `items` as one batch; a batch that fails is split in halves, left half first, until
    each failing item is alone (it goes to `failed`); every part that succeeds goes to
    `applied` as soon as it did. Applied parts keep the items' order."""
    pending: list[list[T]] = [list(items)]
    while pending:
        part = pending.pop()
        error = run(part)
        if error is None:
            applied(part)
        elif len(part) == 1:
            failed(part[0], error)
        else:
            split(part)
            middle = len(part) // 2
            pending.append(part[middle:])
            pending.append(part[:middle])


class BatchQueueConsumer(QueueConsumer):
    """nameko's QueueConsumer for one batch handler only (not shared), with the handler's
    prefetch, handing it deliveries in order and keeping its connection open after the
    consumer is cancelled until the handler has settled what it holds."""

    def __init__(self) -> None:
        super().__init__()
        self._owner_list: list = []  # the handler, still known after it is unregistered

    def bind(self, container):
        # Extension.bind, not SharedExtension.bind: one consumer (and channel) per handler,
        # so its prefetch is the handler's own.
        return Extension.bind(self, container)

    @property
    def prefetch_count(self) -> int:
        # Read by nameko when it (re)creates the consumers; nameko also reads every attribute
        # while binding, before any provider is registered.
        return max([provider.prefetch() for provider in self._providers] or [1])

    def handle_message(self, provider, body, message) -> None:
        # Called in the consumer thread, in delivery order; the provider only queues it.
        provider.handle_message(body, message)

    def on_iteration(self) -> None:
        self._cancel_consumers_if_requested()
        if not self._consumers and all(owner.settled() for owner in self._owner_list):
            self.should_stop = True

    def register_provider(self, provider) -> None:
        self._owner_list.append(provider)
        super().register_provider(provider)

    def ack_through(self, message) -> None:
        """Acknowledge `message` and every earlier delivery on its channel in one basic.ack
        (multiple): one frame and one socket write for a whole batch instead of one each.

        Safe only because this consumer's channel is its handler's alone and the handler
        settles deliveries in order: every earlier one is in the same batch or settled
        already (applied, retried, parked, deferred or given back), and later ones, gathered
        for the next batch meanwhile, have higher tags and stay unacknowledged. A message
        whose connection is gone is passed over, as `ack_message` does (the broker delivers it
        again)."""
        if not message.channel.connection:
            return
        try:
            message.ack(multiple=True)
        except (AmqpConnectionError, OSError) as exc:  # closed under us, or a dead socket
            log.warning("could not ack a batch, its connection is gone (%s); the broker "
                        "delivers it again", exc)


class BatchEventHandler(ReliableEventHandler):
    """`@batch_event_handler(source, event_type)`: the handler gets a list of `Event`s.

    `size_setting` and `wait_setting` name the environment variables of its batch size and
    of the longest wait after a batch's first event (`EVENT_BATCH_SIZE`, `EVENT_BATCH_WAIT_MS`
    unless a service declares its own for this handler). Claims and storage as for the
    reliable handler; with claims each event costs a claim and a completion write."""

    queue_consumer = BatchQueueConsumer()

    def __init__(self, source_service: str, event_type: str, claims: bool = True,
                 storage: str | None = None, size_setting: str = "EVENT_BATCH_SIZE",
                 wait_setting: str = "EVENT_BATCH_WAIT_MS", **kwargs) -> None:
        self.size_setting = size_setting
        self.wait_setting = wait_setting
        super().__init__(source_service, event_type, claims=claims, storage=storage, **kwargs)
        self._collector: BatchCollector | None = None
        self._thread = None
        self._done: GreenEvent | None = None

    def setup(self) -> None:
        config = from_nameko(self.container.config)
        self.size = _bounded(self.size_setting, config.int(self.size_setting), 1, MAX_BATCH_SIZE)
        self.wait_ms = _bounded(self.wait_setting, config.int(self.wait_setting), 0,
                                MAX_BATCH_WAIT_MS)
        self._collector = BatchCollector(self.size, self.wait_ms / 1000)
        self._done = GreenEvent()
        # One worker slot of its own: the container's pool holds MAX_WORKERS for RPC, HTTP and
        # one-event handlers, and a handler runs one batch at a time, so busy batch handlers
        # never take their slots. (max_workers, the shared consumer's prefetch, stays as set.)
        pool = self.container._worker_pool
        pool.resize(pool.size + 1)
        self.batch_metrics = metrics.batch_metrics(self.container.service_name, self.event_type)
        super().setup()

    def start(self) -> None:
        super().start()
        self._thread = self.container.spawn_managed_thread(
            self._apply_batches, identifier=f"{type(self).__name__}[{self.method_name}]")

    def stop(self) -> None:
        # No more deliveries; the partial batch goes to the handler and is acknowledged while
        # the connection is still open (BatchQueueConsumer waits for `settled`).
        self.queue_consumer.unregister_provider(self)
        self._collector.put(STOP)
        if self._thread is not None:
            self._done.wait()

    def kill(self) -> None:
        # Whatever is unacknowledged is redelivered by the broker; nothing is settled now.
        if self._thread is not None:
            self._thread.kill()
        if self._done is not None and not self._done.ready():
            self._done.send(None)

    # Plain methods, not properties (see ReliableEventHandler.handler_key).
    def prefetch(self) -> int:
        return 2 * self.size

    def settled(self) -> bool:
        """True once the collecting thread has finished (or never ran): nothing is held
        unacknowledged."""
        return self._thread is None or self._done.ready()

    def handle_message(self, body, message) -> None:
        headers = dict(message.headers or {})
        try:
            event = parse_event(body, expected_type=self.event_type)
        except InvalidEvent as exc:
            self._collector.put(Unparsable(message, body, headers, exc))
            return
        self._collector.put(Delivery(message, body, headers, event,
                                     attempts_in(headers)))

    def _apply_batches(self) -> None:
        try:
            while True:
                gathered = self._collector.next_batch(self._park_unparsable)
                if gathered is None:
                    return
                self.batch_metrics.observe(len(gathered.items), gathered.waited_seconds)
                self._apply(gathered.items)
        except ContainerBeingKilled:
            log.info("container killed with a batch in hand; the broker redelivers it")
        finally:
            self._done.send(None)

    def _park_unparsable(self, item: Unparsable) -> None:
        log.error("parking an invalid %s event: %s", self.event_type, item.error)
        self._settle_failure(item.message, item.body, item.headers, self.max_attempts,
                             item.error, None)

    def _apply(self, deliveries: list[Delivery]) -> None:
        claimed = self._claim(deliveries) if self.claims else deliveries
        if claimed:
            apply_in_halves(claimed, self._run, self._applied, self._failed, self._split)

    def _claim(self, deliveries: list[Delivery]) -> list[Delivery]:
        """The deliveries this handler may apply now; the others are settled here."""
        claimed: list[Delivery] = []
        for position, delivery in enumerate(deliveries):
            event = delivery.event
            try:
                claim, token = self.processed().claim(self.handler_key(), event.event_id,
                                                      event.event_type)
            except PyMongoError:
                log.exception("database unavailable; the batch goes back to its queue")
                for held in claimed:
                    self._safely(self.processed().release, self.handler_key(),
                                 held.event.event_id, held.token)
                eventlet.sleep(_OUTAGE_PAUSE_SECONDS)  # an outage should not spin the queue
                for unsettled in [*claimed, *deliveries[position:]]:
                    self.queue_consumer.requeue_message(unsettled.message)
                return []
            if claim is Claim.DONE:
                with log_context(**event_log_context(event)):
                    log.info("skipping %s: already applied by %s", event.event_type,
                             self.handler_key())
                self.counters.duplicate.inc()
                self.queue_consumer.ack_message(delivery.message)
            elif claim is Claim.BUSY:
                self._defer(delivery.message, delivery.body, delivery.headers)
            else:
                delivery.token = token
                claimed.append(delivery)
        return claimed

    def _run(self, part: list[Delivery]) -> BaseException | None:
        """Run the handler on `part` as one nameko worker; answers its error, if any."""
        finished = GreenEvent()

        def handle_result(worker_ctx, result=None, exc_info=None):
            finished.send(None if exc_info is None else exc_info[1])
            return result, exc_info

        self.container.spawn_worker(
            self, ([delivery.event for delivery in part],), {},
            context_data=self.unpack_message_headers(part[0].message),
            handle_result=handle_result)
        return finished.wait()

    def _applied(self, part: list[Delivery]) -> None:
        for delivery in part:
            if delivery.token is not None:
                self._safely(self.processed().complete, self.handler_key(),
                             delivery.event.event_id, delivery.token)
        # One acknowledgement per channel, of its newest delivery in the part: a batch
        # gathered across a reconnection holds messages of two channels, whose delivery tags
        # are counted apart.
        newest: dict[int, object] = {}
        for delivery in part:
            channel = id(delivery.message.channel)
            held = newest.get(channel)
            if held is None or delivery.message.delivery_tag > held.delivery_tag:
                newest[channel] = delivery.message
        for message in newest.values():
            self.queue_consumer.ack_through(message)
        self.counters.handled.inc(len(part))

    def _failed(self, delivery: Delivery, error: BaseException) -> None:
        with log_context(**event_log_context(delivery.event)):
            self.counters.failed.inc()
            if delivery.token is not None:
                self._safely(self.processed().release, self.handler_key(),
                             delivery.event.event_id, delivery.token)
            self._settle_failure(delivery.message, delivery.body, delivery.headers,
                                 delivery.attempts + 1, error,
                                 (type(error), error, error.__traceback__))

    def _split(self, part: list[Delivery]) -> None:
        self.batch_metrics.splits.inc()
        log.warning("a batch of %d %s events failed; applying it in halves", len(part),
                    self.event_type)


def _bounded(name: str, value: int, lowest: int, highest: int) -> int:
    if not lowest <= value <= highest:
        raise ValueError(f"{name} must be between {lowest} and {highest}, got {value}")
    return value


batch_event_handler = BatchEventHandler.decorator
