"""customer_sync's applier: a process that only applies the webhook deliveries the door recorded
(`python -m services customer_sync_applier`, with `INBOX_APPLY=applier` on customer_sync).

Why a process of its own: applying a delivery is CPU work in Python, and one process has one
interpreter lock; while it applies, the door in the same process answers late (a burst was
accepted at ~116/s). Here the door only checks, records and answers, and applying runs beside
it on another core, as many processes as wanted.

It is customer_sync (the same nameko name, database, events and broker user) without the
door, the RPC or the other periodic work. It learns of deliveries from the inbox's work queue
(door/work_queue.py), each message acknowledged once its deliveries are applied, and sweeps the
inbox for any whose notice was lost. Each delivery is claimed in the database before it is
applied (`InboxRepository.claim`: a compare-and-set with a lease), so two appliers, or an
applier and a door still applying itself, apply each delivery once.
"""
from __future__ import annotations

from nameko.messaging import consume

from services.customer_sync.app_provider import AppProvider
from services.customer_sync.door.work_queue import notice_keys, work_queue
from services.customer_sync.workers import InboxWorkers
from shared.dependencies import OutboxRelayProvider, Settings, WorkerLogContext
from shared.periodic import PeriodicTasks, Task


class CustomerSyncApplier:
    # customer_sync itself, in another process: its database, its events' source, its broker
    # user. So it never runs in the process of CustomerSyncService (services/runner.py).
    name = "customer_sync"

    app = AppProvider(outbox="outbox")
    outbox = OutboxRelayProvider(lambda app: app.outbox_collections())
    inbox_workers = InboxWorkers(applies=True)
    # Deliveries whose notice was lost, or that a retry delay, a crash or a restart left
    # unapplied (every applier sweeps; their claims keep it to one application each).
    background = PeriodicTasks(
        Task("inbox-sweep", lambda uses: uses.inbox_workers.sweep(uses.app.storage.inbox),
             setting="INBOX_SWEEP_SECONDS", again_at_once=True),
        uses=("app", "inbox_workers"))
    log_context = WorkerLogContext()
    settings = Settings()

    # The queue's type (AMQP_QUEUE_TYPE) is set by the container before it is declared
    # (shared.messaging.queues.TypedQueuesContainer).
    @consume(work_queue("classic"))
    def apply_deliveries(self, body: dict) -> None:
        """Apply the deliveries a notice names, then let it be acknowledged (nameko acks when
        this returns). A delivery that fails is left to the inbox's retries and sweep; at most
        INBOX_APPLIER_CONCURRENCY deliveries are applied at once, with the sweep's."""
        for key in notice_keys(body):
            self.inbox_workers.apply(key)
