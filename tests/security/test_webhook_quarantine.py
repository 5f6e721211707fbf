"""A webhook delivery answered 200 that then cannot be applied is never dropped.

WooCommerce does not send a delivery again, so one the workers cannot apply (content the door
could not judge, such as a body recorded by an older door, or a bug on every attempt) used to be
marked failed and expire with the applied ones: silent loss. It is now quarantined: kept with no
expiry, counted, listed for an operator and replayed once the cause is fixed. The whole path
with a running service, `companion health` and the CLI is in
tests/integration/test_webhook_quarantine.py.
"""
from __future__ import annotations

import json
from datetime import timedelta

import pytest

from devdoubles import mongomock_adapter
from services.customer_sync.door.inbox import MAX_ATTEMPTS, InboxProcessor
from services.customer_sync.door.quarantine import WebhookQuarantine
from services.customer_sync.shop.reconcile import store_health
from services.customer_sync.repository import CustomerSyncStorage
from services.customer_sync.core.stores import StoreAdmin
from services.customer_sync.core.sync import CustomerSync
from shared import metrics
from shared.errors import NotFound, ValidationError
from shared.times import utcnow
from tests import payloads


class BuggySync(CustomerSync):
    """The real use cases behind a bug that a deploy fixes: every apply raises while broken."""

    broken = True

    def apply(self, *args, **kwargs):
        if self.broken:
            raise KeyError("a bug in this version")
        return super().apply(*args, **kwargs)


@pytest.fixture
def storage():
    s = CustomerSyncStorage(mongomock_adapter.client().db)
    s.ensure_indexes()
    for store in ("s1", "s2"):
        StoreAdmin(s, default_reconcile_minutes=10).register({
            "store_id": store, "shop_url": "https://shop.example", "webhook_secret": "whsec-123456",
            "consumer_key": "ck_1", "consumer_secret": "cs_1"})
    return s


def record(storage, key: str, topic: str, body: dict | str, store: str = "s1") -> str:
    """A delivery as the door records it (or an older door did, before it checked fields)."""
    resource, action = topic.split(".")
    text = body if isinstance(body, str) else json.dumps(body)
    storage.inbox.record(key, {"store_id": store, "topic": topic, "resource": resource,
                               "action": action, "resource_id": 7, "body": text})
    return key


def quarantined_total(store: str) -> float:
    return metrics.WEBHOOK_QUARANTINED.labels(store)._value.get()


def test_content_that_cannot_be_applied_is_quarantined_kept_and_counted(storage):
    key = record(storage, "s1:order:7:old", "order.created", payloads.order(7, total="NaN"))
    before = quarantined_total("s1")
    assert InboxProcessor(storage, CustomerSync(storage)).process(key) is None
    doc = storage.inbox.collection.find_one({"_id": key})
    assert doc["status"] == "quarantined" and "total" in doc["error"]
    assert "done_at" not in doc  # the field the inbox's expiry index reads: never expires
    assert doc["quarantine_id"].startswith("wh-")
    assert quarantined_total("s1") == before + 1
    assert storage.inbox.quarantine_counts() == {"s1": 1}
    health = store_health(storage, "s1")
    assert not health["healthy"]
    assert any("quarantined" in p and "companion quarantine list --store s1" in p
               for p in health["problems"])
    [listed] = WebhookQuarantine(storage).list("s1")["items"]
    assert (listed["quarantine_id"], listed["topic"], listed["attempts"]) == (
        doc["quarantine_id"], "order.created", 1)
    assert "body" not in listed and "payload" not in listed  # listing shows no personal data
    shown = WebhookQuarantine(storage).show("s1", listed["quarantine_id"])
    assert shown["payload"]["total"] == "NaN"


def test_a_bug_on_every_attempt_ends_in_quarantine_and_a_replay_after_the_fix_applies_it(storage):
    key = record(storage, "s1:customer:42:x", "customer.created", payloads.customer(42))
    sync = BuggySync(storage)
    processor = InboxProcessor(storage, sync)
    for _ in range(MAX_ATTEMPTS):
        processor.process(key)
    doc = storage.inbox.collection.find_one({"_id": key})
    assert (doc["status"], doc["attempts"]) == ("quarantined", MAX_ATTEMPTS)
    assert doc["error"].startswith("KeyError")

    sync.broken = False  # the fix is deployed
    answer, keys = WebhookQuarantine(storage).release("s1", [doc["quarantine_id"]])
    assert (answer["replayed"], answer["not_found"], answer["remaining"], keys) == (
        [doc["quarantine_id"]], [], 0, [key])
    result = processor.process(key)
    assert result is not None and result.outcome == "created"
    done = storage.inbox.collection.find_one({"_id": key})
    assert (done["status"], done["attempts"], done["replays"]) == ("done", 1, 1)
    assert storage.customers.collection.count_documents({"store_id": "s1"}) == 1


def test_a_replay_that_fails_again_is_quarantined_again_with_the_count_of_replays(storage):
    key = record(storage, "s1:order:7:bad", "order.updated", payloads.order(7, currency="EURO"))
    processor = InboxProcessor(storage, CustomerSync(storage))
    processor.process(key)
    answer, keys = WebhookQuarantine(storage).release("s1", everything=True)
    assert len(answer["replayed"]) == 1 and keys == [key]
    processor.process(key)
    doc = storage.inbox.collection.find_one({"_id": key})
    assert (doc["status"], doc["replays"], doc["attempts"]) == ("quarantined", 1, 1)


def test_a_replay_releases_each_delivery_once(storage):
    key = record(storage, "s1:order:7:bad", "order.updated", payloads.order(7, total="-1"))
    InboxProcessor(storage, CustomerSync(storage)).process(key)
    quarantine_id = storage.inbox.collection.find_one({"_id": key})["quarantine_id"]
    first, _ = WebhookQuarantine(storage).release("s1", [quarantine_id])
    second, keys = WebhookQuarantine(storage).release("s1", [quarantine_id])
    assert first["replayed"] == [quarantine_id]
    assert (second["replayed"], second["not_found"], keys) == ([], [quarantine_id], [])


def test_one_store_never_sees_or_replays_anothers_quarantine(storage):
    key = record(storage, "s1:order:7:bad", "order.updated", payloads.order(7, total="abc"))
    InboxProcessor(storage, CustomerSync(storage)).process(key)
    quarantine_id = storage.inbox.collection.find_one({"_id": key})["quarantine_id"]
    quarantine = WebhookQuarantine(storage)
    assert quarantine.list("s2")["items"] == []
    with pytest.raises(NotFound):
        quarantine.show("s2", quarantine_id)
    answer, keys = quarantine.release("s2", everything=True)
    assert (answer["replayed"], keys) == ([], [])
    assert storage.inbox.collection.find_one({"_id": key})["status"] == "quarantined"


@pytest.mark.parametrize("ids,everything", [
    (None, False), ("wh-1", False), ([], False), ([1], False), (["x" * 65], False),
    (["wh-1"] * 1001, False),
])
def test_a_replay_must_name_its_deliveries_or_ask_for_all(storage, ids, everything):
    with pytest.raises(ValidationError) as info:
        WebhookQuarantine(storage).release("s1", ids, everything)
    assert "quarantine_ids" in info.value.details["fields"]


def test_unknown_stores_and_bad_cursors_are_refused(storage):
    with pytest.raises(NotFound):
        WebhookQuarantine(storage).list("nope")
    with pytest.raises(ValidationError):
        WebhookQuarantine(storage).list("s1", {"cursor": "not-a-cursor"})


def test_the_list_pages_oldest_first(storage):
    processor = InboxProcessor(storage, CustomerSync(storage))
    for n in range(5):
        processor.process(record(storage, f"s1:order:{n}:bad", "order.updated",
                                 payloads.order(7, total=f"-{n + 1}")))
    quarantine = WebhookQuarantine(storage)
    first = quarantine.list("s1", {"size": 2})
    second = quarantine.list("s1", {"size": 2, "cursor": first["next_cursor"]})
    third = quarantine.list("s1", {"size": 2, "cursor": second["next_cursor"]})
    ids = [i["quarantine_id"] for page in (first, second, third) for i in page["items"]]
    assert len(ids) == len(set(ids)) == 5 and third["next_cursor"] is None
    times = [i["quarantined_at"] for page in (first, second, third) for i in page["items"]]
    assert times == sorted(times)


def test_deliveries_that_failed_for_good_before_quarantine_existed_are_kept(storage):
    """An older version marked them failed, to expire with the applied ones: start-up now
    keeps them, as quarantined, so they can still be replayed."""
    storage.inbox.collection.insert_one({
        "_id": "s1:customer:9:legacy", "store_id": "s1", "topic": "customer.updated",
        "resource": "customer", "action": "updated", "resource_id": 9, "status": "failed",
        "error": "old", "attempts": 1, "received_at": utcnow() - timedelta(days=2),
        "done_at": utcnow() - timedelta(days=2), "body": json.dumps(payloads.customer(9))})
    storage.ensure_indexes()
    doc = storage.inbox.collection.find_one({"_id": "s1:customer:9:legacy"})
    assert doc["status"] == "quarantined" and "done_at" not in doc
    assert storage.inbox.quarantine_counts() == {"s1": 1}
    answer, keys = WebhookQuarantine(storage).release("s1", [doc["quarantine_id"]])
    assert keys == ["s1:customer:9:legacy"]
    assert InboxProcessor(storage, CustomerSync(storage)).process(keys[0]).outcome == "created"
