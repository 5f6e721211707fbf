"""Webhook deliveries that cannot be applied, end to end: a running customer_sync on the real
broker quarantines them, `health()`, `companion health` and the metrics count them, and
`companion quarantine` lists, shows and replays them. The door refuses what it can judge
(tests/security/test_webhook_bodies.py); what reaches quarantine here was recorded before the
door judged fields (an older version), or failed for good in a version before quarantine.
"""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
import requests
from nameko.standalone.rpc import ClusterRpcProxy
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from services.customer_sync.service import CustomerSyncService
from services.customer_sync.door.signature import sign
from shared import metrics, mongo
from ops.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from shared.errors import NotFound
from tests import payloads
from tests.integration.test_cli import management_url, run  # noqa: F401 - autouse fixture
from tests.support import wait_until

SECRET = "whsec-quarantine-1"
STORE = "shopq"


def sample(name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(generate_latest(metrics.REGISTRY).decode()):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return s.value
    return None


def inbox(services):
    return mongo.connect(services.mongo_uri)["companion_customer_sync"]["webhook_inbox"]


def legacy(key: str, topic: str, body: dict, status: str, **extra) -> dict:
    resource, action = topic.split(".")
    past = datetime.now(timezone.utc) - timedelta(days=1)
    return {"_id": key, "store_id": STORE, "topic": topic, "resource": resource,
            "action": action, "resource_id": body["id"], "body": json.dumps(body),
            "status": status, "attempts": 0, "received_at": past, **extra}


@pytest.fixture
def counted_before() -> float:
    """Deliveries quarantined so far in this process (read before the service starts)."""
    return sample("companion_webhook_deliveries_quarantined_total", store=STORE) or 0


@pytest.fixture
def rpc(services, counted_before):
    collection = inbox(services)
    # What an older version left: a valid customer that failed for good (a bug since fixed),
    # set to expire; and an order with a NaN total that its door recorded without judging.
    collection.insert_one(legacy("old:customer", "customer.updated",
                                 payloads.customer(51, email="kept@example.com"), "failed",
                                 attempts=1, error="KeyError: a bug",
                                 done_at=datetime.now(timezone.utc) - timedelta(days=1)))
    collection.insert_one(legacy("old:order", "order.created",
                                 payloads.order(61, customer_id=0, total="NaN"), "pending"))
    services.start(CustomerSyncService, INBOX_SWEEP_SECONDS="0.2", RECONCILE_POLL_SECONDS="3600")
    with ClusterRpcProxy({"AMQP_URI": services.amqp_uri}, timeout=20) as proxy:
        proxy.customer_sync.register_store({
            "store_id": STORE, "shop_url": "https://shop.example", "webhook_secret": SECRET,
            "consumer_key": "ck_q", "consumer_secret": "cs_q"})
        yield proxy


def test_quarantined_deliveries_are_counted_listed_and_replayed(services, rpc, capsys,
                                                               counted_before):
    collection = inbox(services)
    wait_until(lambda: collection.find_one({"_id": "old:order", "status": "quarantined"}),
               timeout=15, message="the unappliable order quarantined by the sweep")
    assert collection.find_one({"_id": "old:customer"})["status"] == "quarantined"
    assert not collection.count_documents({"done_at": {"$exists": True}})  # nothing expires

    assert rpc.customer_sync.health()["quarantined"] == {STORE: 2}
    assert sample("companion_webhook_quarantined", store=STORE) == 2
    assert sample("companion_webhook_deliveries_quarantined_total",
                  store=STORE) == counted_before + 1
    health = rpc.customer_sync.store_health(STORE)
    assert not health["healthy"] and health["inbox"]["quarantined"] == 2

    code, out, _ = run(capsys, services.amqp_uri, "--json", "health", "--service",
                       "customer_sync", "--service-timeout", "5")
    report = json.loads(out)
    assert code == EXIT_FAILED and report["services"][0]["quarantined"] == 2
    assert any(f"quarantine list --store {STORE}" in p for p in report["problems"])

    code, out, _ = run(capsys, services.amqp_uri, "--json", "quarantine", "list", "--store", STORE)
    listed = {item["topic"]: item for item in json.loads(out)}
    assert code == EXIT_OK and set(listed) == {"customer.updated", "order.created"}
    assert "total" in listed["order.created"]["error"]
    order_id = listed["order.created"]["quarantine_id"]
    customer_id = listed["customer.updated"]["quarantine_id"]

    code, out, _ = run(capsys, services.amqp_uri, "--json", "quarantine", "show", "--store",
                       STORE, "--id", order_id)
    assert code == EXIT_OK and json.loads(out)["payload"]["total"] == "NaN"

    assert run(capsys, services.amqp_uri, "quarantine", "replay", "--store", STORE)[0] == EXIT_USAGE
    code, _, err = run(capsys, services.amqp_uri, "quarantine", "replay", "--store", STORE,
                       "--id", "wh-nothing")
    assert code == EXIT_FAILED and "wh-nothing" in err

    # The bug is fixed: the customer is applied. The order is still unreadable: back it goes.
    code, out, _ = run(capsys, services.amqp_uri, "--json", "quarantine", "replay", "--store",
                       STORE, "--all")
    assert code == EXIT_OK and sorted(json.loads(out)["replayed"]) == sorted([order_id,
                                                                             customer_id])
    wait_until(lambda: _found(rpc, "kept@example.com"), timeout=15,
               message="the replayed customer applied")
    wait_until(lambda: collection.find_one({"_id": "old:order", "status": "quarantined",
                                            "replays": 1}),
               timeout=15, message="the order quarantined again")
    assert rpc.customer_sync.health()["quarantined"] == {STORE: 1}
    assert sample("companion_webhook_quarantined", store=STORE) == 1


def _found(rpc, email: str) -> bool:
    try:
        return bool(rpc.customer_sync.find_customer(STORE, email))
    except NotFound:
        return False


def test_the_door_refuses_over_http_what_would_end_in_quarantine(services, rpc):
    body = json.dumps(payloads.order(70, total="1e400")).encode()
    answer = requests.post(f"{services.web_url}/webhooks/woocommerce/{STORE}", data=body,
                           timeout=10, headers={"X-WC-Webhook-Topic": "order.created",
                                                "X-WC-Webhook-Signature": sign(body, SECRET)})
    assert answer.status_code == 400
    assert (answer.json()["status"], answer.json()["field"]) == ("invalid body", "total")
    assert inbox(services).count_documents({"resource_id": 70}) == 0
