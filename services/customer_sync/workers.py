"""The background side of the webhook endpoint: apply recorded deliveries after answering."""
from __future__ import annotations

import logging
from datetime import timedelta

import eventlet
from eventlet.queue import LightQueue
from nameko.extensions import DependencyProvider

from services.customer_sync.inbox import InboxProcessor
from services.customer_sync.repository import utcnow
from services.customer_sync.sync import ApplyResult, CustomerSync
from shared.config import from_nameko
from shared.dependencies import OutboxRelayProvider
from shared.messaging.publisher import PublishError
from shared.mongo import MongoStorage

log = logging.getLogger(__name__)

QUEUE_LIMIT = 10_000  # past this, deliveries wait in MongoDB for the sweep


class InboxWorkers(DependencyProvider):
    """A few green threads that apply deliveries and publish what they owe right away.

    The queue only holds keys: every delivery is already durable in the inbox, so anything lost
    from memory (a crash, a full queue) is found again by the periodic sweep.
    """

    def __init__(self, concurrency: int = 8) -> None:
        self.concurrency = concurrency
        self.queue: LightQueue | None = None
        self._threads: list = []
        self._running = False

    def setup(self) -> None:
        config = from_nameko(self.container.config)
        self.sweep_seconds = config.float("INBOX_SWEEP_SECONDS")
        self.queue = LightQueue()

    def start(self) -> None:
        storage = next(d for d in self.container.dependencies if isinstance(d, MongoStorage))
        self.outbox = next(d for d in self.container.dependencies
                           if isinstance(d, OutboxRelayProvider))
        self.storage = storage.repositories
        self.processor = InboxProcessor(self.storage, CustomerSync(self.storage))
        self._running = True
        for n in range(self.concurrency):
            self._threads.append(self.container.spawn_managed_thread(
                self._work, identifier=f"inbox-worker-{n}"))
        self._threads.append(self.container.spawn_managed_thread(
            self._sweep, identifier="inbox-sweeper"))

    def submit(self, key: str) -> None:
        if self.queue is not None and self.queue.qsize() < QUEUE_LIMIT:
            self.queue.put(key)

    def _work(self) -> None:
        while self._running:
            key = self.queue.get()
            if key is None:
                return
            try:
                result = self.processor.process(key)
                if result is not None:
                    self._publish(result)
            except Exception:
                log.exception("inbox worker failed; the sweep will retry the delivery")

    def _publish(self, result: ApplyResult) -> None:
        relay = self.outbox.relay
        collections = {c.name: c for c in relay.collections}
        try:
            for name, doc_id in result.touched:
                relay.publish_document(collections[name], doc_id)
        except PublishError as exc:
            log.warning("events stay in the outbox until the broker is back: %s", exc)

    def _sweep(self) -> None:
        while self._running:
            eventlet.sleep(self.sweep_seconds)
            try:
                older_than = utcnow() - timedelta(seconds=self.sweep_seconds)
                for key in self.storage.inbox.unfinished(older_than):
                    self.submit(key)
            except Exception:
                log.exception("inbox sweep failed; will retry")

    def stop(self) -> None:
        self._running = False
        for _ in range(self.concurrency):
            self.queue.put(None)
        for thread in self._threads:
            thread.kill()

    def kill(self) -> None:
        self.stop()

    def get_dependency(self, worker_ctx) -> "InboxWorkers":
        return self
