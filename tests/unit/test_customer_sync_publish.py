"""customer_sync's one publish path: every write (an RPC, an inbox delivery, a backfill page)
hands what it wrote to the application's `publish`, which notifies the outbox relay wired in at
set-up and moves timeline entries at once; reconciliation runs as a periodic task."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest
from eventlet.queue import LightQueue
from nameko.testing.services import worker_factory

from demo.shop import FakeWooShop
from devdoubles import mongomock_adapter
from services import registry
from services.customer_sync.app_provider import AppProvider
from services.customer_sync.bootstrap import build
from services.customer_sync.core.sync import ApplyResult
from services.customer_sync.service import CustomerSyncService
from services.customer_sync.workers import InboxWorkers
from shared.config import DECLARED_SETTINGS_KEY, Config
from tests import payloads
from tests.support import Clock

STORE = "s1"
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)


class Relay:
    """The outbox relay's `notify`, recording each call."""

    def __init__(self) -> None:
        self.calls: list[list] = []

    def notify(self, refs) -> None:
        self.calls.append(list(refs))


@pytest.fixture
def shop():
    with FakeWooShop(customers=3, orders=0, seed=5) as shop:
        yield shop


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def app(shop, clock):
    config = Config({}, registry.settings(["customer_sync"]), WOO_MAX_RETRIES="0")
    app = build(mongomock_adapter.client()["customer_sync"], config, clock=clock)
    app.ensure_indexes()
    app.stores.register({"store_id": STORE, "shop_url": shop.base_url,
                         "webhook_secret": "whsec-12345678", "consumer_key": shop.consumer_key,
                         "consumer_secret": shop.consumer_secret})
    return app


@pytest.fixture
def relay(app) -> Relay:
    relay = Relay()
    app.wire_outbox(relay.notify)
    return relay


def a_customer(app) -> str:
    app.sync.apply(STORE, "customer", "created", payloads.customer(), correlation_id="wh-1")
    return app.storage.customers.by_woo_id(STORE, 42)["_id"]


def timeline_kinds(app, customer_id: str) -> list[str]:
    """What staff see now, without the timeline sweep."""
    return [e["kind"] for e in app.storage.timeline.collection.find({"customer_id": customer_id})]


def test_a_write_notifies_the_relay_and_moves_its_timeline_entry_at_once(app, relay):
    customer_id = a_customer(app)
    result = app.account_status.set(STORE, [customer_id], "inactive", "alice")
    app.publish(result.touched)
    assert relay.calls == [[("customers", customer_id)]]
    assert "customer.status_changed" in timeline_kinds(app, customer_id)


def test_notes_reach_the_timeline_without_the_relay_which_knows_only_outbox_collections(
        app, relay):
    customer_id = a_customer(app)
    note = app.notes.add(STORE, customer_id, {"category": "general", "text": "tea"}, "alice")
    app.publish([*note.touched, ("customers", customer_id)])
    assert note.touched == (("notes", note.answer["note_id"]),)
    assert relay.calls == [[("customers", customer_id)]]
    assert "note.added" in timeline_kinds(app, customer_id)


def test_before_a_relay_is_wired_the_timeline_still_moves(app):
    customer_id = a_customer(app)
    note = app.notes.add(STORE, customer_id, {"category": "general", "text": "tea"}, "alice")
    app.publish(note.touched)
    assert "note.added" in timeline_kinds(app, customer_id)


def test_the_provider_wires_the_services_relay_into_the_app(mongo_uri):
    relay = Relay()
    provider = AppProvider(outbox="outbox")
    provider.container = SimpleNamespace(
        service_name="customer_sync",
        config={DECLARED_SETTINGS_KEY: registry.settings(["customer_sync"]), "MONGO_URI": mongo_uri},
        dependencies=[provider, SimpleNamespace(attr_name="outbox", notify=relay.notify)])
    provider.setup()
    provider.get_dependency(None).publish([("customers", "c1"), ("notes", "n1")])
    assert relay.calls == [[("customers", "c1")]]

    provider.container.dependencies = [provider]
    with pytest.raises(RuntimeError, match="needs an outbox relay as attribute 'outbox'"):
        provider.setup()


def test_rpc_writes_publish_through_the_app_and_never_the_relay_directly(app, relay):
    customer_id = a_customer(app)
    service = worker_factory(CustomerSyncService, app=app)
    service.set_account_status(STORE, [customer_id], "inactive", "alice")
    note = service.add_note(STORE, customer_id, {"category": "general", "text": "tea"}, "bob")
    assert set(note) >= {"note_id", "text"}  # the RPC answers the view, as before
    key = service.create_api_key(STORE, "ci", ["read"], "alice")
    service.revoke_api_key(STORE, key["key_id"], "alice")
    assert relay.calls == [[("customers", customer_id)], [("api_keys", key["key_id"])]]
    assert {"customer.status_changed", "note.added"} <= set(timeline_kinds(app, customer_id))
    service.outbox.notify.assert_not_called()


def test_an_applied_delivery_is_published_by_the_inbox_worker(app):
    published: list = []
    door = InboxWorkers()
    door.app = SimpleNamespace(publish=published.append)
    door.processor = SimpleNamespace(
        process=lambda key: ApplyResult("created", ["customer.created"], [("customers", key)]))
    door.queue, door.busy_pause, door._running = LightQueue(), 0, True
    door.queue.put("c1")
    door.queue.put(None)  # the worker's stop signal
    door._work()
    assert published == [[("customers", "c1")]]


def test_a_backfill_publishes_what_it_applies_through_the_app(app, relay, shop):
    run = app.backfiller.run(STORE)
    assert run["status"] == "completed"
    published = {ref for call in relay.calls for ref in call}
    held = {("customers", d["_id"]) for d in app.storage.customers.collection.find()}
    assert len(held) == 3 and published == held


def test_reconciliation_is_a_periodic_task_that_runs_stores_due_on_the_apps_clock(
        app, relay, clock):
    [task] = [t for t in CustomerSyncService.background.tasks.values() if t.name == "reconcile"]
    assert (task.setting, task.wait_first) == ("RECONCILE_POLL_SECONDS", False)
    app.storage.stores.collection.update_one({"_id": STORE},
                                             {"$set": {"next_reconcile_at": T0}})
    uses = SimpleNamespace(app=app)

    clock.now = T0 - timedelta(minutes=1)
    assert task.run(uses) == []
    assert app.storage.backfills.collection.count_documents({}) == 0

    clock.now = T0 + timedelta(minutes=1)
    [done] = task.run(uses)
    assert done["store_id"] == STORE and done["run"]["status"] == "completed"
    state = app.storage.stores.collection.find_one({"_id": STORE})
    assert state["last_reconciled_at"].replace(tzinfo=timezone.utc) == clock.now
    assert len({ref for call in relay.calls for ref in call}) == 3  # published as it went
