"""Backfill and reconciliation through the shop's REST API.

Both feed every resource through `CustomerSync.apply`, the path webhooks take, so they produce
the same state and events: states already held are found unchanged and publish nothing.

A backfill run keeps a checkpoint (phase and next page) in MongoDB after every page, so an
interrupted run (the shop failing past its retries, the service stopping) resumes where it
stopped when it is asked for again. Pages are read in id order, which new records only extend.
A run holds a lease while it works, so two instances never run the same one.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Callable, Iterable

from pymongo import ReturnDocument

from services.customer_sync.core.normalise import NormalisationError
from services.customer_sync.repository import CustomerSyncStorage, Store
from services.customer_sync.core.sync import CustomerSync
from services.customer_sync.core.written import DocumentRef
from services.customer_sync.shop.woo_client import WooApiError, WooClient
from shared.errors import Conflict, NotFound
from shared.times import utcnow

log = logging.getLogger(__name__)

# Longer than one page can take with every retry (30 s timeout + 60 s back-off, 7 tries).
LEASE = timedelta(minutes=15)
# The REST API lists orders of every status but trash: a trashed order (a missed
# order.deleted) is only found by asking for status=trash.
PHASES = ("customers", "orders", "trashed_orders")

Progress = Callable[[dict], None]
Publish = Callable[[list[DocumentRef]], None]  # the application's publish
ClientFactory = Callable[[Store], WooClient]


@dataclass(frozen=True)
class RunOptions:
    since: str | None = None  # ISO time: orders modified after it (customers cannot be filtered)
    kind: str = "backfill"  # or "reconcile"
    customers: str = "all"  # "all" pages, or "recent": newest first until a page brings nothing new


class Backfiller:
    def __init__(self, storage: CustomerSyncStorage, sync: CustomerSync,
                 client_factory: ClientFactory, publish: Publish | None = None,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.storage = storage
        self.sync = sync
        self.client_factory = client_factory
        self.publish = publish or (lambda touched: None)
        self.clock = clock

    # -- runs -------------------------------------------------------------------------------
    def begin(self, store_id: str, options: RunOptions = RunOptions()) -> dict:
        """Resume the store's unfinished run with these options, or start a new one."""
        if self.storage.stores.get(store_id) is None:
            raise NotFound(f"no store {store_id}")
        runs = self.storage.backfills
        existing = runs.unfinished(store_id, options.since, options.kind)
        if existing is None:
            existing = runs.start(store_id, options.since, options.kind)
            runs.update(existing["_id"], {"customers_mode": options.customers})
        now = self.clock()
        claimed = runs.collection.find_one_and_update(
            {"_id": existing["_id"],
             "$or": [{"lease_until": {"$exists": False}}, {"lease_until": None},
                     {"lease_until": {"$lt": now}}, {"status": "interrupted"}]},
            {"$set": {"status": "running", "lease_until": now + LEASE, "error": None,
                      "updated_at": now}},
            return_document=ReturnDocument.AFTER,
        )
        if claimed is None:
            raise Conflict(f"backfill {existing['_id']} of store {store_id} is already running",
                           {"run_id": existing["_id"]})
        if claimed.get("pages_done"):
            log.info("resuming backfill at %s page %s", claimed["phase"], claimed["next_page"],
                     extra={"store_id": store_id, "run_id": claimed["_id"]})
        return claimed

    def run(self, store_id: str, options: RunOptions = RunOptions(),
            progress: Progress | None = None, should_stop: Callable[[], bool] = lambda: False) -> dict:
        """Run (or resume) a backfill to its end; answers the final run document."""
        return self.execute(self.begin(store_id, options), progress, should_stop)

    def execute(self, run: dict, progress: Progress | None = None,
                should_stop: Callable[[], bool] = lambda: False) -> dict:
        runs = self.storage.backfills
        store = self.storage.stores.get(run["store_id"])
        client = self.client_factory(store)
        try:
            phase_index = PHASES.index(run["phase"])
            for phase in PHASES[phase_index:]:
                if phase != run["phase"]:
                    runs.update(run["_id"], {"phase": phase, "next_page": 1, "total_pages": None})
                    run = runs.get(run["_id"])
                run = self._run_phase(client, store, run, phase, progress, should_stop)
                if run["status"] != "running":
                    return run
            runs.update(run["_id"], {"status": "completed", "finished_at": self.clock(),
                                     "lease_until": None})
        except (WooApiError, OSError) as exc:
            message = f"{type(exc).__name__}: {exc}"
            log.error("backfill interrupted: %s", message, extra={"store_id": store.store_id})
            runs.update(run["_id"], {"status": "interrupted", "error": message, "lease_until": None})
        final = runs.get(run["_id"])
        if progress:
            progress(final)
        return final

    def _run_phase(self, client: WooClient, store: Store, run: dict, phase: str,
                   progress: Progress | None, should_stop: Callable[[], bool]) -> dict:
        runs = self.storage.backfills
        recent_customers = phase == "customers" and run.get("customers_mode") == "recent"
        params: dict = {"orderby": "id", "order": "desc" if recent_customers else "asc"}
        if phase == "customers":
            params["role"] = "all"  # the API lists only role=customer by default
        if phase == "trashed_orders":
            params["status"] = "trash"
        if phase in ("orders", "trashed_orders") and run.get("since"):
            params.update({"modified_after": run["since"], "dates_are_gmt": "true"})
        resource = "customers" if phase == "customers" else "orders"
        # Resume one page early: records deleted meanwhile shift later ones back a page, and
        # re-reading a page is harmless (every state already held is found unchanged).
        start = max(1, run["next_page"] - 1) if run.get("pages_done") else run["next_page"]
        for page in client.iter_pages(resource, params, start_page=start):
            if should_stop():
                runs.update(run["_id"], {"status": "interrupted", "error": "stopped",
                                         "lease_until": None})
                return runs.get(run["_id"])
            outcomes = self._apply_page(store.store_id, phase, page.items, run["_id"])
            runs.update(
                run["_id"],
                {"next_page": page.page + 1, "total_pages": page.total_pages,
                 "lease_until": self.clock() + LEASE},
                inc={"pages_done": 1, f"items.{phase}": len(page.items),
                     **{f"outcomes.{k}": v for k, v in outcomes.items()},
                     **{f"phase_outcomes.{phase}.{k}": v for k, v in outcomes.items()}},
            )
            run = runs.get(run["_id"])
            if progress:
                progress(run)
            if recent_customers and page.items and not (
                    outcomes.get("created", 0) or outcomes.get("updated", 0)):
                break  # newest first: a page with nothing new means the rest is known
        return run

    def _apply_page(self, store_id: str, phase: str, items: Iterable[dict], run_id: str) -> dict:
        resource = "customer" if phase == "customers" else "order"
        outcomes: dict[str, int] = {}
        for item in items:
            try:
                result = self.sync.apply(store_id, resource, "updated", item,
                                         correlation_id=f"backfill-{run_id}", from_rest=True)
            except NormalisationError as exc:
                log.error("skipping a %s the shop sent that cannot be read: %s", resource, exc,
                          extra={"store_id": store_id, "resource_id": item.get("id")})
                outcomes["invalid"] = outcomes.get("invalid", 0) + 1
                continue
            outcomes[result.outcome] = outcomes.get(result.outcome, 0) + 1
            if result.touched:
                self.publish(result.touched)
        return outcomes


def run_view(run: dict | None) -> dict | None:
    """A run as RPC answers it: plain JSON types."""
    if run is None:
        return None
    def iso(value):
        return value.isoformat() if isinstance(value, datetime) else value
    return {
        "run_id": run["_id"], "store_id": run["store_id"], "kind": run.get("kind"),
        "since": run.get("since"), "status": run["status"], "phase": run.get("phase"),
        "next_page": run.get("next_page"), "total_pages": run.get("total_pages"),
        "pages_done": run.get("pages_done", 0), "items": run.get("items", {}),
        "outcomes": run.get("outcomes", {}),
        "outcomes_by_phase": run.get("phase_outcomes", {}), "error": run.get("error"),
        "started_at": iso(run.get("started_at")), "updated_at": iso(run.get("updated_at")),
        "finished_at": iso(run.get("finished_at")),
    }
