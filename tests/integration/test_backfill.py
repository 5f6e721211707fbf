"""Backfill and reconciliation against a local HTTP server that plays a WooCommerce shop."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest
from nameko.standalone.rpc import ClusterRpcProxy

from devdoubles import mongomock_adapter
from services.customer_sync.shop.backfill import Backfiller, RunOptions
from services.customer_sync.core.changes import PLACED_ON_FIRST_SIGHT
from services.customer_sync.core.normalise import email_key, to_minor
from services.customer_sync.repository import CustomerSyncStorage, Store
from services.customer_sync.service import CustomerSyncService
from services.customer_sync.core.sync import CustomerSync
from services.customer_sync.shop.woo_client import WooClient
from shared import mongo
from shared.outbox import OUTBOX_FIELD
from demo.shop import FakeWooShop
from tests.support import EventBarrier, wait_until

ROOT = Path(__file__).resolve().parents[2]


def quick_client(store: Store) -> WooClient:
    """The real client, without real waiting between retries."""
    return WooClient(store.shop_url, store.consumer_key, store.consumer_secret,
                     backoff_base=0.001, backoff_max=0.01, sleep=lambda seconds: None, timeout=10)


@pytest.fixture(scope="module")
def big_shop():
    with FakeWooShop(customers=2600, orders=2600, seed=11) as shop:
        yield shop


def make_backfiller(database, shop: FakeWooShop) -> tuple[CustomerSyncStorage, Backfiller]:
    storage = CustomerSyncStorage(database)
    storage.ensure_indexes()
    storage.stores.save(Store("big", shop.base_url, "whsec-xxxxxxxx", shop.consumer_key,
                              shop.consumer_secret, 10))
    return storage, Backfiller(storage, CustomerSync(storage), quick_client)


def owed_types(storage: CustomerSyncStorage) -> list[str]:
    types = []
    for collection in storage.outbox_collections():
        for doc in collection.find({f"{OUTBOX_FIELD}.0": {"$exists": True}}, {OUTBOX_FIELD: 1}):
            types.extend(entry["event_type"] for entry in doc[OUTBOX_FIELD])
    return types


def expected_customer_count(shop: FakeWooShop) -> int:
    registered = {email_key(c["email"]) for c in shop.customers.values()}
    guests = {email_key(o["billing"]["email"]) for o in shop.orders.values()
              if o["customer_id"] == 0 and o["billing"].get("email")}
    return len(shop.customers) + len(guests - registered)


def test_backfill_of_2600_customers_and_orders_with_429s_and_500s(big_shop):
    shop = big_shop
    shop.reset_faults()
    shop.fault_rate(0.08, statuses=(429, 500, 503), retry_after="1")
    storage, backfiller = make_backfiller(mongo.connect("mongomock://backfill-big")["cs"], shop)
    seen_pages = []
    try:
        run = backfiller.run("big", progress=lambda r: seen_pages.append(
            (r["phase"], r["next_page"], r["total_pages"])))
    finally:
        shop.reset_faults()
        mongomock_adapter.forget("mongomock://backfill-big")
    assert run["status"] == "completed", run.get("error")
    pages = {phase: max(t or 0 for p, _, t in seen_pages if p == phase)
             for phase in ("customers", "orders")}
    assert pages["customers"] >= 26 and pages["orders"] >= 26 and run["pages_done"] >= 52
    assert run["items"] == {"customers": 2600, "orders": 2600}
    assert shop.count_requests(status=429) > 0 and shop.count_requests(status=500) > 0
    assert storage.orders.collection.count_documents({"store_id": "big"}) == 2600
    assert storage.customers.collection.count_documents({"store_id": "big"}) == \
        expected_customer_count(shop)
    # Every order's money, exactly, in minor units.
    for order_id in list(shop.orders)[::97]:
        source = shop.orders[order_id]
        stored = storage.orders.get("big", str(order_id))
        assert stored["total"] == to_minor(source["total"], "EUR")
        assert stored["status"] == source["status"]
    types = owed_types(storage)
    real = sum(1 for o in shop.orders.values() if o["status"] in PLACED_ON_FIRST_SIGHT)
    assert types.count("order.placed") == real
    assert types.count("customer.created") == expected_customer_count(shop)
    # A second backfill finds every state held: it publishes nothing new.
    again = backfiller.run("big")
    assert again["status"] == "completed"
    assert set(again["outcomes"]) == {"unchanged"}
    # ... and says so per phase, as operators read it.
    assert {phase: set(counts) for phase, counts in again["phase_outcomes"].items()
            if phase != "trashed_orders"} == {"customers": {"unchanged"}, "orders": {"unchanged"}}
    assert sum(again["phase_outcomes"]["orders"].values()) == 2600
    assert owed_types(storage) == types


def test_interrupted_backfill_resumes_from_its_checkpoint(big_shop):
    shop = big_shop
    shop.reset_faults()
    storage, backfiller = make_backfiller(mongo.connect("mongomock://backfill-resume")["cs"], shop)
    try:
        pages = []

        def fail_after_five_order_pages(run):
            pages.append(run["next_page"])
            if run["phase"] == "orders" and run["next_page"] == 6:
                shop.fail_next(100, status=503)  # the shop goes down past the client's retries

        first = backfiller.run("big", progress=fail_after_five_order_pages)
        assert first["status"] == "interrupted"
        assert "503" in first["error"] or "Unavailable" in first["error"]
        assert (first["phase"], first["next_page"]) == ("orders", 6)
        stored_before = storage.orders.collection.count_documents({})
        assert stored_before == 500
        shop.reset_faults()
        log_start = len(shop.requests_log)
        resumed = backfiller.run("big")
        assert resumed["_id"] == first["_id"] and resumed["status"] == "completed"
        first_request = next(r for r in shop.requests_log[log_start:] if "orders" in r.path)
        # Not restarted from page 1: it re-reads the last page done (records deleted meanwhile
        # would shift later ones back a page), then goes on.
        assert first_request.query["page"] == "5"
        assert not any("customers" in r.path for r in shop.requests_log[log_start:])
        assert storage.orders.collection.count_documents({}) == 2600
        assert owed_types(storage).count("order.placed") == sum(
            1 for o in shop.orders.values() if o["status"] in PLACED_ON_FIRST_SIGHT)
    finally:
        shop.reset_faults()
        mongomock_adapter.forget("mongomock://backfill-resume")


# -- through the running service, the broker and the CLI ----------------------------------------
@pytest.fixture
def small_shop():
    with FakeWooShop(customers=120, orders=150, seed=3) as shop:
        yield shop


def register(rpc, shop: FakeWooShop, store_id: str = "small") -> None:
    rpc.customer_sync.register_store({
        "store_id": store_id, "shop_url": shop.base_url, "webhook_secret": "whsec-small-1",
        "consumer_key": shop.consumer_key, "consumer_secret": shop.consumer_secret})


def test_cli_backfill_after_webhooks_publishes_nothing_new(services, events, small_shop):
    shop = small_shop
    events.listen("customer_sync")
    services.start(CustomerSyncService, RECONCILE_POLL_SECONDS="3600")
    with ClusterRpcProxy({"AMQP_URI": services.amqp_uri}, timeout=30) as rpc:
        register(rpc, shop)
        # A few orders arrive first by webhook.
        import requests
        from demo.shop import webhook_headers
        for order_id in list(shop.orders)[:5]:
            body = shop.webhook_body("order.created", order_id)
            headers = webhook_headers("order.created", body, "whsec-small-1", shop.base_url)
            r = requests.post(f"{services.web_url}/webhooks/woocommerce/small", data=body,
                              headers=headers, timeout=10)
            assert r.status_code == 200, r.text
        wait_until(lambda: len(events.of_type("order.placed")) ==
                   sum(1 for o in list(shop.orders.values())[:5] if o["status"] in PLACED_ON_FIRST_SIGHT),
                   message="webhook orders published")
        env = {**os.environ, "AMQP_URI": services.amqp_uri}
        barrier = EventBarrier(services, "customer_sync", events)
        cli = subprocess.run([sys.executable, "-m", "ops.cli", "backfill", "--store", "small"],
                             capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
        assert cli.returncode == 0, cli.stderr
        assert "completed" in cli.stdout and "customers: created" in cli.stdout
        assert "page" in cli.stderr  # progress was shown
        placed = sum(1 for o in shop.orders.values() if o["status"] in PLACED_ON_FIRST_SIGHT)
        barrier.caught_up()  # the run has returned: all it published is here
        assert barrier.published() >= placed
        counts = {t: len(events.of_type(t)) for t in ("order.placed", "customer.created")}
        assert counts["order.placed"] == placed
        ids = [e["event_id"] for e in events.received]
        assert len(ids) == len(set(ids))  # nothing published twice
        # A second run publishes nothing new.
        before = len(events.received)
        barrier = EventBarrier(services, "customer_sync", events)
        cli = subprocess.run([sys.executable, "-m", "ops.cli", "--json", "backfill",
                              "--store", "small"],
                             capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
        assert cli.returncode == 0, cli.stderr
        assert set(json.loads(cli.stdout)["outcomes"]) == {"unchanged"}
        barrier.caught_up()
        assert barrier.published() == 0 and len(events.received) == before


def test_reconciliation_recovers_missed_orders_and_reports_disabled_webhooks(
        services, events, small_shop):
    shop = small_shop
    shop.clock.set(datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0))
    for topic in ("customer.created", "customer.updated", "customer.deleted", "order.created",
                  "order.updated", "order.deleted", "order.restored"):
        shop.add_webhook(topic, f"{services.web_url}/webhooks/woocommerce/small", "whsec-small-1")
    events.listen("customer_sync")
    services.start(CustomerSyncService, RECONCILE_POLL_SECONDS="3600")
    with ClusterRpcProxy({"AMQP_URI": services.amqp_uri}, timeout=60) as rpc:
        register(rpc, shop)
        run = rpc.customer_sync.backfill("small")
        wait_until(lambda: rpc.customer_sync.backfill_status("small", run["run_id"])["status"]
                   == "completed", timeout=60, message="backfill completed")
        first = rpc.customer_sync.reconcile("small")
        assert first["run"]["status"] == "completed"
        assert first["webhook_problems"] == []
        assert rpc.customer_sync.store_health("small")["healthy"] is True
        # The order.updated webhook gets disabled while orders keep changing.
        hook = next(w for w in shop.webhooks.values() if w["topic"] == "order.updated")
        shop.set_webhook_status(hook["id"], "disabled")
        shop.clock.advance(60)
        order_id = next(i for i, o in shop.orders.items() if o["status"] == "processing")
        shop.update_order(order_id, status="completed")
        second = rpc.customer_sync.reconcile("small")
        assert second["run"]["status"] == "completed"
        updated = events.wait_for(lambda got: any(
            e["event_type"] == "order.updated" and e["data"]["order_id"] == str(order_id)
            for e in got))
        change = next(e for e in updated if e["event_type"] == "order.updated")
        assert (change["data"]["old_status"], change["data"]["new_status"]) == ("processing",
                                                                                "completed")
        # An order trashed at the shop while its order.deleted webhook was lost.
        shop.clock.advance(60)
        trashed_id = next(i for i, o in shop.orders.items()
                          if o["status"] in ("processing", "on-hold") and i != order_id)
        shop.update_order(trashed_id, status="trash")
        rpc.customer_sync.reconcile("small")
        events.wait_for(lambda got: any(
            e["event_type"] == "order.cancelled" and e["data"]["order_id"] == str(trashed_id)
            for e in got))
        health = rpc.customer_sync.store_health("small")
        assert health["healthy"] is False
        assert any("order.updated" in p and "disabled" in p for p in health["problems"])
