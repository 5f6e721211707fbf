"""Reconciliation: WooCommerce never retries a webhook and disables one after repeated
failures, so each store is periodically re-read through its REST API (orders modified since
the last run, newest customers, and on a slower schedule every customer), and its webhooks
are checked to be present and `active`.
"""
from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Callable

from services.customer_sync.shop.backfill import Backfiller, ClientFactory, RunOptions, run_view
from services.customer_sync.repository import CustomerSyncStorage, Store
from services.customer_sync.door.webhooks import SUPPORTED_TOPICS
from services.customer_sync.shop.woo_client import WooApiError
from shared.errors import Conflict
from shared.times import utcnow

log = logging.getLogger(__name__)

# Re-read a little before the last run, for clock skew between the shop and us.
OVERLAP = timedelta(minutes=5)
CLAIM_LEASE = timedelta(minutes=30)


def webhook_problems(store_id: str, webhooks: list[dict]) -> list[str]:
    """What is wrong with a shop's webhooks for this store, in words an operator can act on."""
    problems = []
    path = f"/webhooks/woocommerce/{store_id}"
    ours = [w for w in webhooks if path in str(w.get("delivery_url", ""))]
    for topic in sorted(SUPPORTED_TOPICS):
        for_topic = [w for w in ours if w.get("topic") == topic]
        if not for_topic:
            problems.append(f"no webhook delivers {topic} to {path}")
        elif not any(w.get("status") == "active" for w in for_topic):
            states = ", ".join(f"#{w.get('id')} is {w.get('status')}" for w in for_topic)
            problems.append(f"{topic}: {states}")
    return problems


def _webhook_summary(webhook: dict) -> dict:
    return {k: webhook.get(k) for k in ("id", "name", "topic", "status", "delivery_url")}


class Reconciler:
    def __init__(self, storage: CustomerSyncStorage, backfiller: Backfiller,
                 client_factory: ClientFactory, full_scan_every: timedelta,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.storage = storage
        self.backfiller = backfiller
        self.client_factory = client_factory
        self.full_scan_every = full_scan_every
        self.clock = clock

    def run_due(self) -> list[dict]:
        """Reconcile every store whose turn has come (claimed, so one instance does each)."""
        results = []
        now = self.clock()
        for store_id in self.storage.stores.due_for_reconcile(now):
            state = self.storage.stores.claim_reconcile(store_id, now, CLAIM_LEASE)
            store = self.storage.stores.get(store_id)
            if state is None or store is None:
                continue
            results.append(self.reconcile(store, state))
        return results

    def reconcile(self, store: Store, state: dict) -> dict:
        started = self.clock()
        last = state.get("last_reconciled_at") or state.get("created_at") or started
        since = (last - OVERLAP).replace(microsecond=0).isoformat()
        last_scan = state.get("last_full_customer_scan_at")
        full_scan = last_scan is None or started - last_scan >= self.full_scan_every
        fields: dict = {"next_reconcile_at": started + timedelta(minutes=store.reconcile_interval_minutes)}
        run = None
        try:
            run = self.backfiller.run(store.store_id, RunOptions(
                since=since, kind="reconcile", customers="all" if full_scan else "recent"))
        except Conflict as exc:
            log.info("reconciliation skipped: %s", exc, extra={"store_id": store.store_id})
        try:
            webhooks = self.client_factory(store).list_webhooks()
            problems = webhook_problems(store.store_id, webhooks)
            fields["webhooks"] = [_webhook_summary(w) for w in webhooks]
        except (WooApiError, OSError) as exc:
            problems = [f"could not read the shop's webhooks: {type(exc).__name__}: {exc}"]
        fields["webhook_problems"] = problems
        if problems:
            log.warning("store webhooks need attention: %s", "; ".join(problems),
                        extra={"store_id": store.store_id})
        if run is not None and run["status"] == "completed":
            fields["last_reconciled_at"] = started
            fields["reconcile_error"] = None
            if full_scan:
                fields["last_full_customer_scan_at"] = started
        elif run is not None:
            fields["reconcile_error"] = run.get("error")
        fields["last_reconcile_run"] = run_view(run)
        self.storage.stores.record_reconcile(store.store_id, fields)
        return {"store_id": store.store_id, "run": run_view(run), "webhook_problems": problems}


def store_health(storage: CustomerSyncStorage, store_id: str) -> dict | None:
    state = storage.stores.status(store_id)
    if state is None:
        return None

    def iso(value):
        return value.isoformat() if isinstance(value, datetime) else value

    problems = list(state.get("webhook_problems") or [])
    if state.get("reconcile_error"):
        problems.append(f"last reconciliation failed: {state['reconcile_error']}")
    inbox = storage.inbox.counts(store_id)
    if inbox.get("quarantined"):
        problems.append(f"{inbox['quarantined']} webhook deliveries could not be applied and are "
                        f"quarantined (`companion quarantine list --store {store_id}`)")
    return {
        "store_id": store_id,
        "healthy": not problems,
        "problems": problems,
        "webhooks": state.get("webhooks") or [],
        "last_reconciled_at": iso(state.get("last_reconciled_at")),
        "next_reconcile_at": iso(state.get("next_reconcile_at")),
        "last_full_customer_scan_at": iso(state.get("last_full_customer_scan_at")),
        "inbox": inbox,
    }
