"""The one event-handler decorator every consumer uses: it never loses a message.

nameko acknowledges an event once its worker finishes; with `requeue_on_error=False` a handler
that raises would lose the message. This entrypoint instead:

* loads the body through the event catalogue (unknown fields excluded); a body that does not
  match its contract is parked at once, since retrying cannot fix it;
* skips an event this handler has already applied (a unique record per handler and event id
  in the consumer's own database), and records it once the handler succeeds;
* on an error, re-publishes the message to a delay queue whose TTL dead-letters it back to the
  handler's own queue, counting attempts in a header of its own (RabbitMQ 4 ignores a
  client-set `x-death`, so a limit read from it would never trip);
* after `EVENT_MAX_ATTEMPTS` tries, parks the message with its error in `<service>.parked`,
  from which operators list, replay and purge it (`shared.messaging.parking`).

The original delivery is acknowledged only after the retry or park has been confirmed by the
broker; if that publish fails, the delivery is requeued instead.
"""
from __future__ import annotations

import logging
import traceback
import uuid
from functools import partial

from pymongo.errors import PyMongoError

import eventlet
from nameko.events import SERVICE_POOL, EventHandler
from nameko.exceptions import ContainerBeingKilled
from nameko.extensions import SharedExtension

from shared import metrics
from shared.config import from_nameko
from shared.events import Event, InvalidEvent, parse_event
from shared.idempotency import Claim, ProcessedEvents
from shared.logs import log_context
from shared.messaging.publisher import ConfirmingPublisher, OutgoingMessage
from shared.messaging.names import parked_queue, retry_exchange, retry_queue
from shared.messaging.queues import queue_arguments, queue_type
from shared.mongo import MongoStorage, declared_storage
from shared.times import utcnow

log = logging.getLogger(__name__)

ATTEMPTS_HEADER = "x-companion-attempts"
ERROR_HEADER = "x-companion-error"
TRACEBACK_HEADER = "x-companion-traceback"
QUEUE_HEADER = "x-companion-queue"
HANDLER_HEADER = "x-companion-handler"
PARKED_AT_HEADER = "x-companion-parked-at"
PARK_ID_HEADER = "x-companion-park-id"

_MAX_ERROR_CHARS = 2000
_OUTAGE_PAUSE_SECONDS = 1.0  # before giving a message back while the database or broker is out
_MAX_TRACEBACK_CHARS = 8000


def retry_delay_ms(delays_ms: list[int], attempt: int) -> int:
    """Back-off before retry number `attempt` (1-based); the last delay repeats."""
    return delays_ms[min(attempt, len(delays_ms)) - 1]


class RetryBroker(SharedExtension):
    """One confirming publisher per container for retries and parking."""

    def setup(self) -> None:
        config = self.container.config
        self.publisher = ConfirmingPublisher(config["AMQP_URI"], ssl=config.get("AMQP_SSL"))
        self.queue_type = queue_type(from_nameko(config))
        self.exchange = retry_exchange(self.container.service_name)
        metrics.watch_parked(self.container.service_name, config["AMQP_URI"])

    def stop(self) -> None:
        metrics.unwatch_parked(self.container.service_name, self.container.config["AMQP_URI"])
        self.publisher.close()

    def kill(self) -> None:
        metrics.unwatch_parked(self.container.service_name, self.container.config["AMQP_URI"])
        self.publisher.close()

    def schedule_retry(self, queue: str, body: dict, headers: dict, delay_ms: int) -> None:
        name = retry_queue(queue, delay_ms)
        self.publisher.bind_queue(queue, self.exchange)  # the way back when the delay expires
        self.publisher.declare_queue(
            name,
            arguments=queue_arguments(self.queue_type, {
                "x-message-ttl": delay_ms,
                "x-dead-letter-exchange": self.exchange,
                "x-dead-letter-routing-key": queue,
            }),
            bind_to=self.exchange,
        )
        self.publisher.publish_batch([OutgoingMessage(self.exchange, name, body, headers=headers)])

    def park(self, service_name: str, body: dict, headers: dict) -> None:
        name = parked_queue(service_name)
        self.publisher.declare_queue(name, arguments=queue_arguments(self.queue_type),
                                     bind_to=self.exchange)
        self.publisher.publish_batch([OutgoingMessage(self.exchange, name, body, headers=headers)])


class ReliableEventHandler(EventHandler):
    """`@event_handler(source, event_type)` with retries, parking and idempotency.

    By default every event is claimed per handler in the consumer's database before it runs
    (a record of applied event ids), so a duplicate delivered at the same time is applied once.
    `claims=False` leaves that out for a handler whose effect is idempotent by its own state
    (a compare-and-set update keyed by the fact the event brings, which a duplicate finds
    already applied): two database writes per event fewer, the same effect. The claims are
    kept in the database of the service's MongoStorage attribute `storage` (`app` or
    `storage` when not given)."""

    broker = RetryBroker()

    def __init__(self, source_service: str, event_type: str, claims: bool = True,
                 storage: str | None = None, **kwargs) -> None:
        self.claims = claims
        self.storage_name = storage
        super().__init__(
            source_service,
            event_type,
            handler_type=SERVICE_POOL,
            reliable_delivery=True,
            requeue_on_error=False,
            **kwargs,
        )
        self._processed: ProcessedEvents | None = None
        self._storage: MongoStorage | None = None

    def setup(self) -> None:
        super().setup()
        if self.claims:  # found now, so a service missing it fails to start, not per event
            self._storage = declared_storage(
                self.container, self.storage_name,
                f"the reliable event handler {self.method_name} (its applied-events record)")
        config = from_nameko(self.container.config)
        self.max_attempts = max(1, config.int("EVENT_MAX_ATTEMPTS"))
        self.delays_ms = config.int_list("EVENT_RETRY_DELAYS_MS")
        self.lease_seconds = config.float("EVENT_CLAIM_LEASE_SECONDS")
        self.counters = metrics.event_counters(self.container.service_name, self.event_type)

    # Plain methods, not properties: nameko inspects every attribute of an extension when it
    # binds it, which would run a property before the container is ready.
    def handler_key(self) -> str:
        return f"{self.container.service_name}.{self.method_name}"

    def processed(self) -> ProcessedEvents:
        # Resolved lazily: extensions are set up in no fixed order.
        if self._processed is None:
            if self._storage is None or self._storage.database is None:
                raise RuntimeError(
                    f"{self.container.service_name}.{self.method_name} has no database to "
                    "record applied events in (claims=False, or its storage is not set up)")
            self._processed = ProcessedEvents(self._storage.database,
                                              lease_seconds=self.lease_seconds)
            self._processed.ensure_indexes()
        return self._processed

    def handle_message(self, body, message) -> None:
        headers = dict(message.headers or {})
        attempts = attempts_in(headers)
        try:
            event = parse_event(body, expected_type=self.event_type)
        except InvalidEvent as exc:
            log.error("parking an invalid %s event: %s", self.event_type, exc)
            self._settle_failure(message, body, headers, self.max_attempts, exc, None)
            return
        with log_context(**event_log_context(event)):
            if not self.claims:
                self._spawn(message, body, headers, event, attempts, None)
                return
            try:
                claim, token = self.processed().claim(self.handler_key(), event.event_id,
                                                      event.event_type)
            except PyMongoError:
                log.exception("database unavailable; the message goes back to its queue")
                self._requeue_later(message)
                return
            if claim is Claim.DONE:
                log.info("skipping %s: already applied by %s", event.event_type, self.handler_key())
                self.counters.duplicate.inc()
                self.queue_consumer.ack_message(message)
                return
            if claim is Claim.BUSY:
                # Another worker is applying this very event; look again after a delay.
                self._defer(message, body, headers)
                return
        self._spawn(message, body, headers, event, attempts, token)

    def _spawn(self, message, body, headers, event: Event, attempts: int, token: str | None) -> None:
        context_data = self.unpack_message_headers(message)
        handle_result = partial(self._on_result, message, body, headers, event, attempts, token)
        try:
            self.container.spawn_worker(
                self, (event,), {}, context_data=context_data, handle_result=handle_result
            )
        except ContainerBeingKilled:
            if token is not None:
                self._safely(self.processed().release, self.handler_key(), event.event_id, token)
            self.queue_consumer.requeue_message(message)

    def _requeue_later(self, message) -> None:
        """Give a message back after a pause, so an outage does not spin through it."""
        eventlet.sleep(_OUTAGE_PAUSE_SECONDS)
        self.queue_consumer.requeue_message(message)

    @staticmethod
    def _safely(operation, *args) -> None:
        try:
            operation(*args)
        except PyMongoError:
            # The claim then simply expires after its lease; natural keys keep effects single.
            log.exception("could not update the applied-events record")

    def _defer(self, message, body, headers) -> None:
        try:
            self.broker.schedule_retry(self.queue.name, body, headers, self.delays_ms[0])
        except Exception:
            log.exception("could not defer a message; it goes back to its queue")
            self._requeue_later(message)
            return
        self.counters.deferred.inc()
        self.queue_consumer.ack_message(message)

    def _on_result(self, message, body, headers, event: Event, attempts: int, token: str | None,
                   worker_ctx, result=None, exc_info=None):
        with log_context(**event_log_context(event)):
            if exc_info is None:
                if token is not None:
                    self._safely(self.processed().complete, self.handler_key(), event.event_id,
                                 token)
                self.counters.handled.inc()
                self.queue_consumer.ack_message(message)
            else:
                self.counters.failed.inc()
                if token is not None:
                    self._safely(self.processed().release, self.handler_key(), event.event_id,
                                 token)
                self._settle_failure(message, body, headers, attempts + 1, exc_info[1], exc_info)
        return result, exc_info

    def _settle_failure(self, message, body, headers, attempt: int, error: BaseException,
                        exc_info) -> None:
        headers = {k: v for k, v in headers.items() if k != "x-death"}
        headers[ATTEMPTS_HEADER] = attempt
        headers[ERROR_HEADER] = f"{type(error).__name__}: {error}"[:_MAX_ERROR_CHARS]
        headers[QUEUE_HEADER] = self.queue.name
        headers[HANDLER_HEADER] = self.handler_key()
        try:
            if attempt >= self.max_attempts:
                if exc_info is not None:
                    headers[TRACEBACK_HEADER] = "".join(
                        traceback.format_exception(*exc_info)
                    )[-_MAX_TRACEBACK_CHARS:]
                headers[PARKED_AT_HEADER] = utcnow().isoformat()
                headers[PARK_ID_HEADER] = _park_id()
                self.broker.park(self.container.service_name, body, headers)
                self.counters.parked.inc()
                log.error("parked after %d attempts: %s", attempt, headers[ERROR_HEADER])
            else:
                delay = retry_delay_ms(self.delays_ms, attempt)
                self.broker.schedule_retry(self.queue.name, body, headers, delay)
                self.counters.retried.inc()
                log.warning("attempt %d failed, retrying in %d ms: %s", attempt, delay,
                            headers[ERROR_HEADER])
        except Exception:
            # Broker trouble: the delivery goes back (after a pause) with its attempt count
            # unchanged, so nothing is lost and the retry budget is not spent on the outage.
            log.exception("could not schedule a retry; the delivery goes back to its queue")
            self._requeue_later(message)
            return
        self.queue_consumer.ack_message(message)


def _park_id() -> str:
    return uuid.uuid4().hex


def attempts_in(headers: dict) -> int:
    """The tries a message has had, from its attempts header (0 when absent or garbled; never
    below 0, so a forged negative count buys no extra tries)."""
    try:
        return max(0, int(headers.get(ATTEMPTS_HEADER)))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0


def event_log_context(event: Event) -> dict:
    """The fields every log line about an event carries."""
    return {
        "store_id": event.store_id,
        "event_id": event.event_id,
        "event_type": event.event_type,
        "correlation_id": event.correlation_id,
    }


event_handler = ReliableEventHandler.decorator
