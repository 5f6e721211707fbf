"""customer_sync's background work, as nameko dependency providers:

* `InboxWorkers` apply recorded webhook deliveries after the webhook was answered (their
  `sweep`, run as a periodic task, re-queues what a restart or a retry delay left behind),
  or, where `INBOX_APPLY=applier`, hand their keys to the separate applier processes
  (door/work_queue.py, applier.py);
* `BackgroundJobs` run backfills and reconciliations on request (the reconciliation schedule
  is a periodic task of the service).

Both publish what a change owes right away through the application's `publish`; anything
left unpublished (a broker outage, a crash) is published by the outbox relay's sweep.
"""
from __future__ import annotations

import logging
import time
from contextlib import nullcontext
from datetime import timedelta

import eventlet
from eventlet.queue import LightQueue
from eventlet.semaphore import Semaphore
from nameko.extensions import DependencyProvider

from services.customer_sync.bootstrap import CustomerSyncApp
from services.customer_sync.repository import CustomerSyncStorage, InboxRepository
from services.customer_sync.shop.backfill import RunOptions
from services.customer_sync.door.work_queue import InboxNotices
from shared.config import from_nameko
from shared.container import named_dependencies
from shared.errors import NotFound
from shared.messaging.queues import queue_type
from shared.metrics import count_applied, unwatch_quarantine, watch_quarantine
from shared.tls import amqp_ssl_options

log = logging.getLogger(__name__)

QUEUE_LIMIT = 100_000  # keys only; past this, deliveries wait in MongoDB for the sweep
SWEEP_BATCH = 1000
# INBOX_APPLY: where recorded deliveries are applied.
APPLY_HERE = "here"
APPLY_BY_APPLIER = "applier"
APPLY_CHOICES = (APPLY_HERE, APPLY_BY_APPLIER)


def inbox_apply(value: str) -> str:
    """INBOX_APPLY, checked."""
    choice = value.strip().lower()
    if choice not in APPLY_CHOICES:
        raise ValueError(f"INBOX_APPLY must be one of {', '.join(APPLY_CHOICES)}, got {value!r}")
    return choice


class _ServiceParts:
    """Reaches the application of the same container by the attribute name the service gives
    it (as shared/periodic.py's tasks do), once it has started. What the workers write is
    published through the application (`app.publish`)."""

    def _name_parts(self, app: str) -> None:
        self.app_name = app

    def _bind_parts(self) -> None:
        deps = named_dependencies(self.container,  # type: ignore[attr-defined]
                                  [self.app_name], type(self).__name__)
        self.app: CustomerSyncApp = deps[self.app_name].get_dependency(None)
        self.storage: CustomerSyncStorage = self.app.storage


class CpuLoad:
    """How much of one core this process used lately (it cannot use more: one interpreter
    lock). Near 1.0 the process is short of CPU, and every waiting request is delayed."""

    PERIOD = 0.1

    def __init__(self) -> None:
        self.load = 0.0

    def run(self, running) -> None:
        wall, cpu = time.monotonic(), time.process_time()
        while running():
            eventlet.sleep(self.PERIOD)
            now_wall, now_cpu = time.monotonic(), time.process_time()
            used = (now_cpu - cpu) / max(1e-6, now_wall - wall)
            wall, cpu = now_wall, now_cpu
            self.load = 0.5 * self.load + 0.5 * min(1.0, used)


class InboxWorkers(_ServiceParts, DependencyProvider):
    """A few green threads that apply deliveries and publish what they owe.

    The queue only holds keys: every delivery is already durable in the inbox, so anything lost
    from memory (a crash, a full queue) is found again by the periodic sweep.

    WooCommerce waits for each webhook's answer (one at a time per queue runner, and a slow
    receiver slows the whole shop), so answering comes before applying: while webhooks are
    arriving *and* the process is short of CPU, the workers start at most one delivery per
    `INBOX_BUSY_PAUSE_MS`. When the door is quiet, or applying waits on I/O rather than CPU,
    they run at full speed. Nothing is dropped; deliveries wait, durable, in the inbox.

    That pacing cannot help when applying alone needs the whole core: with `INBOX_APPLY=applier`
    the door's process applies nothing (no worker threads, no sweep) and `submit` hands each
    key to the `customer_sync_applier` processes instead (InboxNotices). The appliers use this
    class with `applies=True` for their sweep.
    """

    BUSY_WINDOW = 0.05  # a webhook in the last 50 ms means the door is busy
    SATURATED = 0.8  # share of a core above which the process counts as short of CPU

    def __init__(self, concurrency: int = 8, app: str = "app", applies: bool = False) -> None:
        """`applies`: always apply here (the applier's own workers), whatever INBOX_APPLY says."""
        self._name_parts(app)
        self.concurrency = concurrency
        self.always_applies = applies
        self.applies_here = True
        self.notices: InboxNotices | None = None
        self.slots = nullcontext()  # an applier's limit of deliveries applied at once
        self.queue: LightQueue | None = None
        self._threads: list = []
        self._running = False
        self._last_request = 0.0
        self._last_started = 0.0
        self.cpu = CpuLoad()

    def setup(self) -> None:
        config = from_nameko(self.container.config)
        self.sweep_seconds = config.float("INBOX_SWEEP_SECONDS")
        self.busy_pause = config.int("INBOX_BUSY_PAUSE_MS") / 1000.0
        self.applies_here = self.always_applies or \
            inbox_apply(config.get("INBOX_APPLY")) == APPLY_HERE
        if self.always_applies:
            # Deliveries the notices and the sweep have applied at once, in all: applying is
            # CPU work in one interpreter, so more at once only adds waits on the database.
            self.concurrency = max(1, config.int("INBOX_APPLIER_CONCURRENCY"))
            self.slots = Semaphore(self.concurrency)
        if self.applies_here:
            self.queue = LightQueue()
        else:
            self.notices = InboxNotices(config.get("AMQP_URI"), amqp_ssl_options(config),
                                        queue_type(config))

    def note_request(self) -> None:
        """The webhook door saw a request now."""
        self._last_request = time.monotonic()

    def _pace(self) -> None:
        while self.busy_pause > 0:
            now = time.monotonic()
            busy = (now - self._last_request < self.BUSY_WINDOW
                    and self.cpu.load > self.SATURATED)
            wait = self.busy_pause - (now - self._last_started)
            if not busy or wait <= 0:
                break
            eventlet.sleep(wait)
        self._last_started = time.monotonic()

    def start(self) -> None:
        self._bind_parts()
        self.processor = self.app.inbox
        # companion_webhook_quarantined is counted in this database when scraped, by the door
        # (which lists and replays them); appliers leave it to the door.
        if not self.always_applies:
            watch_quarantine(self.storage.inbox.collection.full_name,
                             self.storage.inbox.quarantine_counts)
        self._running = True
        if self.notices is not None:
            try:
                self.notices.declare()
            except Exception as exc:  # declared again with the first notice
                log.warning("inbox work queue not declared yet (%s)", type(exc).__name__)
            self._threads.append(self.container.spawn_managed_thread(
                lambda: self.notices.run(lambda: self._running), identifier="inbox-notices"))
            return
        for n in range(self.concurrency):
            self._threads.append(self.container.spawn_managed_thread(
                self._work, identifier=f"inbox-worker-{n}"))
        if self.busy_pause > 0 and not self.always_applies:  # an applier has no door to pace for
            self._threads.append(self.container.spawn_managed_thread(
                lambda: self.cpu.run(lambda: self._running), identifier="cpu-load"))

    def submit(self, key: str) -> None:
        """Have the delivery applied: by this process's workers, or by an applier."""
        if self.notices is not None:
            self.notices.send(key)
        elif self.queue is not None and self.queue.qsize() < QUEUE_LIMIT:
            self.queue.put(key)

    def state(self) -> dict:
        """Where deliveries are applied and, for the appliers, how many consume the queue
        (health and `companion health`)."""
        if self.notices is None:
            return {"applied_by": APPLY_HERE}
        return {"applied_by": APPLY_BY_APPLIER, "appliers": self.notices.consumers(),
                "notices_published": self.notices.published,
                "notices_failed": self.notices.failed}

    def _work(self) -> None:
        while self._running:
            key = self.queue.get()
            if key is None:
                return
            self._pace()
            self.apply(key)

    def apply(self, key: str) -> None:
        """Claim, apply and publish one delivery (nothing when it is done already or another
        worker, here or in another process, holds its claim). Never raises: a failure is left
        to the inbox's retries and sweep."""
        with self.slots:
            try:
                result = self.processor.process(key)
                if result is not None:
                    count_applied(APPLY_BY_APPLIER if self.always_applies else "door")
                    self.app.publish(result.touched)
            except Exception:
                log.exception("applying a delivery failed; the sweep will retry it")

    def sweep(self, inbox: InboxRepository) -> bool:
        """Queue one batch of deliveries older than a sweep interval and not yet applied;
        answers whether the batch was full (more may wait), for the periodic task to run again.

        Everything recorded here is queued or being applied; the sweep is for what a restart,
        a retry delay or a full queue left in MongoDB, so it waits until the queue has
        drained, then feeds it batch after batch. A door whose deliveries the appliers apply
        sweeps nothing: the appliers do."""
        if self.queue is None or self.queue.qsize():
            return False
        older_than = inbox.clock() - timedelta(seconds=self.sweep_seconds)
        keys = inbox.unfinished(older_than, limit=SWEEP_BATCH)
        for key in keys:
            self.submit(key)
        eventlet.sleep(0)
        return len(keys) == SWEEP_BATCH

    def stop(self) -> None:
        if self._running and not self.always_applies:
            unwatch_quarantine(self.storage.inbox.collection.full_name)
        self._running = False
        if self.queue is not None:
            for _ in range(self.concurrency):
                self.queue.put(None)
        for thread in self._threads:
            thread.kill()
        self._threads.clear()
        if self.notices is not None:
            self.notices.flush()  # what the door answered lately, before it goes
            self.notices.close()

    def kill(self) -> None:
        self.stop()

    def get_dependency(self, worker_ctx) -> "InboxWorkers":
        return self


class BackgroundJobs(_ServiceParts, DependencyProvider):
    """Backfills and reconciliations started over RPC; a backfill runs in a managed thread
    so the RPC answers at once."""

    def __init__(self, app: str = "app") -> None:
        self._name_parts(app)
        self._running = False
        self._threads: list = []
        self._active_runs: set[str] = set()

    def start(self) -> None:
        self._bind_parts()
        self._running = True

    def start_backfill(self, store_id: str, since: str | None) -> dict:
        """Claim (or resume) a run now, so errors reach the caller; work in the background."""
        run = self.app.backfiller.begin(store_id, RunOptions(since=since))
        self._threads.append(self.container.spawn_managed_thread(
            lambda: self._execute(run), identifier=f"backfill-{run['_id']}"))
        return run

    def _execute(self, run: dict) -> None:
        self._active_runs.add(run["_id"])
        try:
            self.app.backfiller.execute(run, should_stop=lambda: not self._running)
        except Exception:
            log.exception("backfill failed", extra={"store_id": run["store_id"]})
            self.storage.backfills.update(run["_id"], {"status": "interrupted",
                                                       "error": "internal error", "lease_until": None})
        finally:
            self._active_runs.discard(run["_id"])

    def reconcile_now(self, store_id: str) -> dict:
        store = self.storage.stores.get(store_id)
        if store is None:
            raise NotFound(f"no store {store_id}")
        state = self.storage.stores.collection.find_one({"_id": store_id})
        return self.app.reconciler.reconcile(store, state)

    def stop(self) -> None:
        self._running = False
        # Runs cut short here resume from their checkpoint when asked for again.
        for run_id in list(self._active_runs):
            self.storage.backfills.update(run_id, {"status": "interrupted", "error": "service stopped",
                                                   "lease_until": None})
        for thread in self._threads:
            thread.kill()
        self._threads.clear()

    def kill(self) -> None:
        self.stop()

    def get_dependency(self, worker_ctx) -> "BackgroundJobs":
        return self
