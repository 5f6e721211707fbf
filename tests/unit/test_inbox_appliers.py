"""customer_sync's door and appliers (INBOX_APPLY=applier): the door hands keys over instead of
applying, notices are batched and never break the door, the runner starts an applier on its
own only, the broker lets customer_sync use the work queue, and a delivery is claimed once in
the database however many appliers try."""
from __future__ import annotations

import re
from datetime import timedelta
from types import SimpleNamespace

import pytest
from kombu import Connection

from ops.broker_permissions import derive_roles, grant
from services import registry, runner
from services.customer_sync.door import work_queue
from services.customer_sync.door.work_queue import (KEYS_PER_NOTICE, RETRY_AFTER_SECONDS,
                                                    WORK_QUEUE_NAME,
                                                    InboxNotices, notice_keys)
from services.customer_sync.repository import CustomerSyncStorage
from services.customer_sync.workers import InboxWorkers, inbox_apply
from shared.config import Config
from shared.messaging.queues import nameko_config

GDPR_SERVICES = ("customer_sync", "segmentation", "loyalty", "notifications")


def memory_notices(name: str) -> InboxNotices:
    return InboxNotices(f"memory://{name}", None, "classic")


def published_notices(notices: InboxNotices) -> list[list[str]]:
    with Connection(notices.amqp_uri) as connection:
        queue = connection.SimpleQueue(notices.queue)
        bodies = []
        while queue.qsize():
            message = queue.get(timeout=1)
            bodies.append(notice_keys(message.payload))
            message.ack()
        queue.close()
    return bodies


def test_keys_arriving_together_share_notices_of_at_most_a_batch_each() -> None:
    notices = memory_notices("batches")
    notices.declare()
    keys = [f"k{n}" for n in range(KEYS_PER_NOTICE * 2 + 3)]
    for key in keys:
        notices.send(key)
    notices.flush()
    bodies = published_notices(notices)
    assert [len(b) for b in bodies] == [KEYS_PER_NOTICE, KEYS_PER_NOTICE, 3]
    assert [k for b in bodies for k in b] == keys
    assert (notices.published, notices.failed) == (len(keys), 0)


def test_a_broker_away_costs_the_notice_not_the_door() -> None:
    def refused(*args, **kwargs):
        raise ConnectionRefusedError("no broker")

    notices = InboxNotices("amqp://nowhere", None, "classic", connect=refused)
    notices.send("k1")
    notices.flush()  # does not raise: the appliers' sweep finds the delivery
    assert (notices.published, notices.failed) == (0, 1)
    assert notices.consumers() is None


def test_a_broker_away_is_tried_once_however_many_keys_wait_then_left_a_while() -> None:
    """A burst into an unreachable broker costs one connection attempt, not one per notice,
    and the keys after it go to the sweep until the back-off ends; none is kept in memory."""
    attempts, now = [], [100.0]

    def refused(*args, **kwargs):
        attempts.append(now[0])
        raise ConnectionRefusedError("no broker")

    notices = InboxNotices("amqp://nowhere", None, "classic", connect=refused,
                           clock=lambda: now[0])
    for n in range(3 * KEYS_PER_NOTICE + 1):
        notices.send(f"k{n}")
    notices.flush()
    assert attempts == [100.0] and notices.failed == 3 * KEYS_PER_NOTICE + 1
    notices.send("later")
    now[0] += RETRY_AFTER_SECONDS - 0.1
    notices.flush()
    assert attempts == [100.0] and notices.failed == 3 * KEYS_PER_NOTICE + 2
    notices.send("after the back-off")
    now[0] += 0.2
    notices.flush()
    assert len(attempts) == 2 and notices._keys == []


def test_keys_past_the_waiting_limit_are_left_to_the_sweep(monkeypatch) -> None:
    monkeypatch.setattr(work_queue, "MAX_WAITING_KEYS", 3)
    notices = memory_notices("limit")
    for n in range(5):
        notices.send(f"k{n}")
    assert notices.failed == 2
    notices.flush()
    assert [k for b in published_notices(notices) for k in b] == ["k0", "k1", "k2"]


def test_a_notice_of_another_shape_names_nothing() -> None:
    assert notice_keys({"keys": ["a", 3, "b"]}) == ["a", "b"]
    assert notice_keys({"key": "a"}) == [] and notice_keys(["a"]) == []


def workers_with(**values: str) -> InboxWorkers:
    config = Config({"AMQP_URI": "memory://door", **values},
                    settings=registry.settings(["customer_sync"]))
    workers = InboxWorkers()
    workers.container = SimpleNamespace(config=nameko_config(config))
    workers.setup()
    return workers


def test_the_receiving_door_hands_keys_to_the_appliers_and_sweeps_nothing() -> None:
    door = workers_with(INBOX_APPLY="applier")
    assert door.applies_here is False and door.queue is None
    door.submit("k1")
    assert door.notices._keys == ["k1"]
    assert door.sweep(inbox=None) is False  # the appliers sweep
    assert door.state()["applied_by"] == "applier"


def test_by_default_the_door_applies_in_its_own_process() -> None:
    door = workers_with()
    assert door.applies_here is True and door.notices is None
    door.submit("k1")
    assert door.queue.get() == "k1"
    assert door.state() == {"applied_by": "here"}


def test_the_applier_applies_whatever_inbox_apply_says() -> None:
    config = Config({"INBOX_APPLY": "applier"}, settings=registry.settings(["customer_sync"]))
    applier = InboxWorkers(applies=True)
    applier.container = SimpleNamespace(config=nameko_config(config))
    applier.setup()
    assert applier.applies_here is True and applier.notices is None


def test_inbox_apply_is_checked() -> None:
    assert inbox_apply(" Applier ") == "applier"
    with pytest.raises(ValueError, match="INBOX_APPLY must be one of here, applier"):
        inbox_apply("elsewhere")


def test_the_applier_is_runnable_by_name_with_customer_syncs_settings() -> None:
    assert registry.runnable()["customer_sync_applier"] == \
        "services.customer_sync.applier:CustomerSyncApplier"
    assert registry.owner_of("customer_sync_applier") == "customer_sync"
    assert registry.owner_of("loyalty") == "loyalty"
    applier = registry.load_service(registry.runnable()["customer_sync_applier"])
    assert applier.name == "customer_sync"  # its database, events and broker user


def test_the_applier_never_shares_a_process_with_customer_sync(capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        runner.main(["customer_sync", "customer_sync_applier"])
    assert exited.value.code == 2
    assert "customer_sync_applier is a part of customer_sync" in capsys.readouterr().err


def test_customer_sync_alone_may_declare_publish_to_and_read_the_work_queue() -> None:
    roles = derive_roles(GDPR_SERVICES)
    for name, role in roles.items():
        given = grant(role)
        allowed = [bool(re.match(p, WORK_QUEUE_NAME))
                   for p in (given.configure, given.write, given.read)]
        assert allowed == ([True] * 3 if name == "customer_sync" else [False] * 3), name


def test_two_appliers_claim_a_delivery_once(database) -> None:
    """Two processes' views of one database: the claim is a compare-and-set there, so the
    second applier gets nothing while the first holds the lease, and nothing once done."""
    first, second = CustomerSyncStorage(database), CustomerSyncStorage(database)
    first.inbox.record("k1", {"store_id": "s1", "topic": "customer.created",
                              "resource": "customer", "resource_id": 1, "body": "{}"})
    claimed = first.inbox.claim("k1", timedelta(seconds=60))
    assert claimed is not None and claimed["attempts"] == 1
    assert second.inbox.claim("k1", timedelta(seconds=60)) is None
    first.inbox.finish("k1", "created")
    assert second.inbox.claim("k1", timedelta(seconds=60)) is None
    assert database["webhook_inbox"].find_one({"_id": "k1"})["attempts"] == 1


def test_the_work_queue_module_names_its_queue_once() -> None:
    queue = work_queue.work_queue("quorum")
    assert queue.name == queue.exchange.name == WORK_QUEUE_NAME
    assert queue.queue_arguments["x-queue-type"] == "quorum" and queue.durable
