"""customer_sync split in two (INBOX_APPLY=applier): a door that only receives and appliers
that apply, sharing the inbox; real HTTP and the real broker, the containers in this process
sharing one in-memory MongoDB as processes would share MongoDB."""
from __future__ import annotations

import time

import pytest
from nameko.standalone.rpc import ClusterRpcProxy

from services.customer_sync.applier import CustomerSyncApplier
from services.customer_sync.door.work_queue import WORK_QUEUE_NAME
from services.customer_sync.service import CustomerSyncService
from tests import payloads
from tests.integration.test_customer_sync_webhooks import STORE, db, post
from tests.support import EventBarrier, vhost_of, wait_until

DELIVERIES = 24
# How long the door is watched applying nothing. There is nothing to wait on when nothing may
# happen; a door applying in its own process does so within milliseconds of answering, and
# its sweep runs every 0.5 s here (INBOX_SWEEP_SECONDS of tests.support.ServiceHarness).
HOLD_SECONDS = 1.5


@pytest.fixture
def rpc(services):
    with ClusterRpcProxy({"AMQP_URI": services.amqp_uri}, timeout=20) as proxy:
        yield proxy


def door_workers(container):
    return next(d for d in container.dependencies if d.attr_name == "inbox_workers")


def customers_sent() -> list[dict]:
    return [payloads.customer(woo_id=100 + n, email=f"person{n}@example.com")
            for n in range(DELIVERIES)]


def stays(predicate, seconds: float) -> bool:
    """Whether `predicate` holds throughout `seconds` (checked every 50 ms)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not predicate():
            return False
        time.sleep(0.05)
    return bool(predicate())


def test_the_door_records_everything_and_applies_nothing_then_two_appliers_apply_each_once(
        services, rpc, events, broker_admin):
    events.listen("customer_sync")
    door = services.start(CustomerSyncService, INBOX_APPLY="applier")
    rpc.customer_sync.register_store(STORE)
    inbox = db(services)["webhook_inbox"]

    # The applier is stopped: every delivery is answered and recorded, none applied.
    answers = [post(services, "customer.created", body) for body in customers_sent()]
    assert [(a.status_code, a.json()) for a in answers] == \
        [(200, {"status": "accepted"})] * DELIVERIES
    assert inbox.count_documents({}) == DELIVERIES
    workers = door_workers(door)
    wait_until(lambda: workers.notices.published == DELIVERIES,
               message="every key handed to the work queue")

    def depth() -> int:
        """Notices in the queue: the management API's sample, a few seconds old."""
        return broker_admin.queue_depth(vhost_of(services.amqp_uri), WORK_QUEUE_NAME)

    wait_until(lambda: depth() >= 1, timeout=20, interval=0.25,
               message="the notices waiting in the broker's queue")
    assert stays(lambda: inbox.count_documents({"status": "pending", "attempts": 0})
                 == DELIVERIES, HOLD_SECONDS), "the door applied deliveries itself"
    assert db(services)["customers"].count_documents({}) == 0
    assert events.of_type("customer.created") == []
    assert workers.applies_here is False and workers.queue is None  # no worker of its own
    health = rpc.customer_sync.health()
    assert health["inbox"]["applied_by"] == "applier" and health["inbox"]["appliers"] == 0
    assert health["problems"] == ["no customer_sync_applier consumes the inbox queue: webhook "
                                  "deliveries are recorded but not applied"]

    # Two appliers at once: the queue's notices reach one of them each, and both sweeps find
    # every delivery (recorded more than a sweep interval ago), so each key is offered twice
    # or more; the claims in the database let one application through.
    barrier = EventBarrier(services, "customer_sync", events)
    services.start(CustomerSyncApplier)
    services.start(CustomerSyncApplier)
    wait_until(lambda: inbox.count_documents({"status": "done"}) == DELIVERIES, timeout=30,
               message="every delivery applied")
    barrier.caught_up()
    assert sorted(d["attempts"] for d in inbox.find({})) == [1] * DELIVERIES
    assert db(services)["customers"].count_documents({}) == DELIVERIES
    # One event per customer. Each outbox relay (the door's, each applier's) sweeps the same
    # outbox, so an event may go out twice under its one event id (consumers deduplicate by
    # it, shared/dependencies.py); a delivery applied twice would be a second event id.
    created = {e["event_id"]: e for e in events.of_type("customer.created")}
    assert sorted(e["data"]["woo_customer_id"] for e in created.values()) == \
        [100 + n for n in range(DELIVERIES)]
    wait_until(lambda: depth() == 0, timeout=20, interval=0.25,
               message="every notice acknowledged")
    assert rpc.customer_sync.health()["inbox"]["appliers"] == 2
    assert "problems" not in rpc.customer_sync.health()


def test_a_door_answering_while_the_appliers_run_has_them_apply_at_once(services, rpc, events):
    """No sweep needed: the notice brings the delivery to an applier (received now, so the
    sweep, which waits a sweep interval, cannot be what applied it first)."""
    events.listen("customer_sync")
    services.start(CustomerSyncService, INBOX_APPLY="applier", INBOX_SWEEP_SECONDS=3600)
    services.start(CustomerSyncApplier, INBOX_SWEEP_SECONDS=3600)
    rpc.customer_sync.register_store(STORE)
    assert post(services, "customer.created", payloads.customer(woo_id=42)).status_code == 200
    [event] = events.wait_for(lambda got: any(e["event_type"] == "customer.created" for e in got))
    assert event["data"]["woo_customer_id"] == 42
    assert db(services)["webhook_inbox"].find_one({})["status"] == "done"
