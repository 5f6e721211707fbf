"""nameko dependency providers shared by every service: the outbox relay, log context and settings."""
from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta
from typing import Callable, Iterable

import eventlet
import eventlet.event
from nameko.extensions import DependencyProvider
from pymongo.collection import Collection

from shared.config import Config, from_nameko
from shared.events import Event
from shared.logs import bind_log_context
from shared.messaging.publisher import ConfirmingPublisher, PublishError
from shared.mongo import MongoStorage, declared_storage
from shared.outbox import OutboxRelay
from shared.times import utcnow

log = logging.getLogger(__name__)


class OutboxRelayProvider(DependencyProvider):
    """Publishes the events a service's documents owe, from one green thread.

    Writers `notify` it of the documents they changed; it publishes those at once, batching
    what arrives together. Every `OUTBOX_SWEEP_SECONDS` it also sweeps for anything owed from
    before a crash or during a broker outage, taking only entries older than that interval:
    younger ones are on their way out through the fast path of the instance that wrote them.
    The sweep at start takes what was written before it; after a failed publish or on
    `request_sweep` it takes everything. With several busy instances, sweeps that took fresh
    entries published copies of many events (docs/scaling.md). One publishing thread per process means the fast path and the sweep never
    publish the same entry twice; across instances a duplicate is still possible and harmless
    (consumers deduplicate by event id).
    """

    def __init__(self, collections: Callable[[object], list[Collection]],
                 storage: str | None = None) -> None:
        """`collections(repositories)` names the collections whose documents carry an outbox;
        the repositories are those of the service's MongoStorage attribute `storage` (`app`
        or `storage` when not given)."""
        self.collections = collections
        self.storage_name = storage
        self._storage: MongoStorage | None = None
        self.relay: OutboxRelay | None = None
        self._thread = None
        self._running = False
        self._pending: dict[tuple[str, object], None] = {}
        self._sweep_requested = False

    def setup(self) -> None:
        config = from_nameko(self.container.config)
        self.interval = config.float("OUTBOX_SWEEP_SECONDS")
        self.batch_size = config.int("OUTBOX_BATCH_SIZE")
        self.publisher = ConfirmingPublisher(config.get("AMQP_URI"),
                                             ssl=self.container.config.get("AMQP_SSL"))
        self._wake = eventlet.event.Event()
        self._storage = declared_storage(self.container, self.storage_name, "the outbox relay")

    def start(self) -> None:
        # Dependencies are set up in no fixed order; every one is set up before any starts.
        self.relay = OutboxRelay(self.collections(self._storage.repositories), self.publisher,
                                 batch_size=self.batch_size,
                                 service=self.container.service_name)
        self.relay.ensure_indexes()
        self._running = True
        self._thread = self.container.spawn_managed_thread(self._run, identifier="outbox-relay")

    def notify(self, refs: Iterable[tuple[str, object]]) -> None:
        """Documents (collection name, _id) that now owe events."""
        for ref in refs:
            self._pending[ref] = None
        if self._pending and not self._wake.ready():
            self._wake.send()

    def request_sweep(self) -> None:
        """Something wrote many documents at once (a bulk recompute): sweep them soon, from
        the relay's own thread."""
        self._sweep_requested = True
        if not self._wake.ready():
            self._wake.send()

    def _run(self) -> None:
        # Every write in this process notifies the relay, so a full sweep is needed only where
        # something may have been left: at start (a crash before), after a failed publish (an
        # outage), and as a safety net every OUTBOX_SWEEP_SECONDS (another instance's crash).
        # The sweep at start takes what was owed before it (a crash); what is written later is
        # published by its writer, here or in another instance, whose fresh entries a sweep
        # would otherwise chase batch after batch while both drain a queue.
        started_at, starting = utcnow(), True
        dirty, last_sweep = True, time.monotonic()
        while self._running:
            with eventlet.Timeout(self.interval, False):
                self._wake.wait()
            if self._wake.ready():
                self._wake.reset()
            if self._pending:
                refs, self._pending = list(self._pending), {}
                try:
                    self.relay.publish_documents(refs)
                except Exception as exc:
                    dirty, starting = True, False  # this process's own entries are left now
                    log.warning("events stay in the outbox until the broker is back: %s", exc)
            if dirty or self._sweep_requested or time.monotonic() - last_sweep >= self.interval:
                # The safety net leaves young entries to their writers' fast paths too.
                if self._sweep_requested or (dirty and not starting):
                    older_than: datetime | None = None
                elif starting:
                    older_than = started_at
                else:
                    older_than = utcnow() - timedelta(seconds=self.interval)
                last_sweep, self._sweep_requested = time.monotonic(), False
                dirty = not self.sweep_once(older_than)
                starting = starting and dirty

    def sweep_once(self, older_than: datetime | None = None) -> bool:
        """Publish everything still owed (written before `older_than`, when given), a batch at
        a time, letting other green threads (the webhook door) run between batches. True when
        nothing was left behind."""
        try:
            total = 0
            while self._running and self.relay is not None:
                count = self.relay.publish_pending(limit=self.batch_size, older_than=older_than)
                total += count
                if count < self.batch_size:
                    break
                eventlet.sleep(0)
            if total:
                log.info("outbox sweep published %d events", total)
            return True
        except PublishError as exc:
            log.warning("outbox sweep could not publish; will retry: %s", exc)
        except Exception:
            log.exception("outbox sweep failed; will retry")
        return False

    def stop(self) -> None:
        self._running = False
        if self._thread is not None:
            self._thread.kill()
        self.publisher.close()

    def kill(self) -> None:
        self.stop()

    def get_dependency(self, worker_ctx) -> "OutboxRelayProvider":
        return self


class WorkerLogContext(DependencyProvider):
    """Binds the service name, and an event's identifiers, to every log line of a worker."""

    def worker_setup(self, worker_ctx) -> None:
        fields: dict = {"service": self.container.service_name}
        if worker_ctx.args and isinstance(worker_ctx.args[0], Event):
            event = worker_ctx.args[0]
            fields.update(store_id=event.store_id, event_id=event.event_id,
                          event_type=event.event_type, correlation_id=event.correlation_id)
        elif worker_ctx.kwargs.get("store_id"):
            fields["store_id"] = worker_ctx.kwargs["store_id"]
        # Each worker runs in its own green thread with its own context: nothing to undo.
        bind_log_context(**fields)

    def get_dependency(self, worker_ctx) -> None:
        return None


class Settings(DependencyProvider):
    """Gives workers the service's typed `Config` (built from the container's config)."""

    def setup(self) -> None:
        self.config = from_nameko(self.container.config)

    def get_dependency(self, worker_ctx) -> Config:
        return self.config

