"""Metrics and health over HTTP, on the real broker: counters scraped from /metrics and parsed
with prometheus_client's own parser; readiness that turns 503 when the broker refuses."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest
import requests
from nameko.standalone.rpc import ClusterRpcProxy
from prometheus_client.parser import text_string_to_metric_families

from services.customer_sync.service import CustomerSyncService
from services.customer_sync.door.signature import sign
from services.notifications.service import NotificationsService
from shared.errors import NotFound
from shared.events import build_event, contract
from shared.messaging.handlers import event_handler
from shared.metrics import MetricsServer
from shared.mongo import MongoStorage
from tests import payloads
from tests.support import free_port, publish, vhost_of, wait_until


@pytest.fixture
def metrics_url():
    server = MetricsServer(0, host="127.0.0.1").start()
    yield f"http://127.0.0.1:{server.port}"
    server.stop()


def scrape(url: str) -> dict[tuple, float]:
    """Every sample as {(name, (label, value), ...): value}."""
    response = requests.get(f"{url}/metrics", timeout=10)
    assert response.status_code == 200
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, *sorted(sample.labels.items()))] = sample.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, *sorted(labels.items())), 0.0)


def delta(before: dict, after: dict, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


@pytest.fixture
def broker_access(broker_admin, amqp_uri):
    """Takes the test user's access to the test's virtual host away (new connections are
    refused, as when the broker is unreachable), and gives it back."""
    vhost = vhost_of(amqp_uri)
    import urllib.parse

    name = urllib.parse.quote(vhost, safe="")

    class Access:
        @staticmethod
        def deny() -> None:
            broker_admin.session.delete(f"{broker_admin.base}/permissions/{name}/guest",
                                        auth=broker_admin.auth, timeout=10).raise_for_status()

        @staticmethod
        def allow() -> None:
            broker_admin.set_permissions(vhost)

    yield Access
    Access.allow()


# -- the shared event handler -------------------------------------------------------------------
class Faults:
    fail_once: set[str] = set()
    seen: set[str] = set()


class Applied:
    def __init__(self, database, config=None) -> None:
        self.collection = database["applied"]

    def ensure_indexes(self) -> None:
        pass


class Metered:
    """A consumer whose failures the test chooses by customer id."""

    effects = MongoStorage(Applied)

    @event_handler("customer_sync", "customer.deleted", storage="effects")
    def on_deleted(self, event):
        customer_id = event.data["customer_id"]
        if customer_id.startswith("doomed"):
            raise RuntimeError("always fails")
        if customer_id in Faults.fail_once and customer_id not in Faults.seen:
            Faults.seen.add(customer_id)
            raise RuntimeError("fails once")
        self.effects.collection.insert_one({"event_id": event.event_id})

    @event_handler("customer_sync", "customer.created", storage="effects")
    def on_created(self, event):
        self.effects.collection.insert_one({"event_id": event.event_id})


def deleted(customer_id: str) -> dict:
    return build_event("customer.deleted", store_id="s1",
                       data={"customer_id": customer_id, "woo_customer_id": 7}).to_message()


def test_handler_counters_per_event_type_and_parked_depth(services, amqp_uri, metrics_url):
    name = f"metered_{uuid.uuid4().hex[:8]}"  # its own label values: exact counts
    services.start(type("MeteredService", (Metered,), {"name": name}), EVENT_MAX_ATTEMPTS="3")
    Faults.fail_once, Faults.seen = {"flaky"}, set()
    first = deleted("ok-1")
    invalid = {**deleted("bad"), "data": {"woo_customer_id": "not a number"}}
    publish(amqp_uri, first, deleted("ok-2"), deleted("flaky"), deleted("doomed"),
            build_event("customer.created", store_id="s1",
                        data=contract("customer.created").sample).to_message())
    publish(amqp_uri, invalid)
    labels = {"service": name, "event_type": "customer.deleted"}
    wait_until(lambda: value(scrape(metrics_url), "companion_events_handled_total", **labels) == 3,
               timeout=15, message="three customer.deleted applied")
    publish(amqp_uri, first)  # the same event again, after it was applied
    wait_until(lambda: (value(s := scrape(metrics_url), "companion_events_duplicate_total",
                              **labels) == 1
                        and value(s, "companion_events_parked_total", **labels) == 2),
               timeout=15, message="the duplicate skipped and two messages parked")

    samples = scrape(metrics_url)
    deleted_counts = {metric: value(samples, f"companion_events_{metric}_total", **labels)
                      for metric in ("handled", "failed", "retried", "parked", "duplicate")}
    # ok-1, ok-2 and flaky (on its second try) applied; flaky failed once, doomed three times
    # (EVENT_MAX_ATTEMPTS=3: two retries, then parked); the invalid body is parked at once,
    # without a handler attempt.
    assert deleted_counts == {"handled": 3, "failed": 4, "retried": 3, "parked": 2,
                              "duplicate": 1}
    created = {"service": name, "event_type": "customer.created"}
    assert value(samples, "companion_events_handled_total", **created) == 1
    assert value(samples, "companion_events_failed_total", **created) == 0
    assert ("companion_events_failed_total", *sorted(created.items())) in samples  # at 0 from start
    assert value(samples, "companion_parked_messages", service=name) == 2


# -- the webhook door ---------------------------------------------------------------------------
def test_webhook_latency_histogram_by_store_and_outcome(services, metrics_url):
    store = f"shop_{uuid.uuid4().hex[:8]}"
    secret = "whsec-metrics"
    services.start(CustomerSyncService)
    with ClusterRpcProxy({"AMQP_URI": services.amqp_uri}, timeout=20) as rpc:
        rpc.customer_sync.register_store({"store_id": store, "shop_url": "https://shop.example",
                                          "webhook_secret": secret, "consumer_key": "ck_a",
                                          "consumer_secret": "cs_a"})
    body = json.dumps(payloads.customer(woo_id=5)).encode()

    def post(to: str, signature: str) -> int:
        return requests.post(f"{services.web_url}/webhooks/woocommerce/{to}", data=body, timeout=10,
                             headers={"Content-Type": "application/json",
                                      "X-WC-Webhook-Topic": "customer.created",
                                      "X-WC-Webhook-ID": "3", "X-WC-Webhook-Delivery-ID": "d1",
                                      "X-WC-Webhook-Signature": signature}).status_code

    before = scrape(metrics_url)
    assert post(store, sign(body, secret)) == 200
    assert post(store, sign(body, secret)) == 200
    assert post(store, sign(body, "wrong")) == 401
    assert post(f"nobody_{uuid.uuid4().hex[:6]}", sign(body, secret)) == 404
    after = scrape(metrics_url)

    count = "companion_webhook_duration_seconds_count"
    assert value(after, count, store=store, outcome="accepted", status="200") == 1
    assert value(after, count, store=store, outcome="duplicate", status="200") == 1
    assert value(after, count, store=store, outcome="rejected", status="401") == 1
    # An unknown store's id never becomes a label (the caller chooses the path).
    assert delta(before, after, count, store="unknown", outcome="rejected", status="404") == 1
    assert not any(dict(key[1:]).get("store", "").startswith("nobody") for key in after)
    seconds = value(after, "companion_webhook_duration_seconds_sum", store=store,
                    outcome="accepted", status="200")
    assert 0 < seconds < 5
    assert value(after, "companion_webhook_duration_seconds_bucket", store=store,
                 outcome="accepted", status="200", le="+Inf") == 1


# -- notifications --------------------------------------------------------------------------------
NOTIFY_STORE = "nm"


def start_notifications(services, smtp, twilio) -> str:
    port = free_port()
    services.start(NotificationsService, WEB_SERVER_ADDRESS=f"127.0.0.1:{port}",
                   SMTP_HOST=smtp.host, SMTP_PORT=str(smtp.port),
                   TWILIO_ACCOUNT_SID=twilio.account_sid, TWILIO_AUTH_TOKEN=twilio.auth_token,
                   TWILIO_FROM_NUMBER=twilio.phone_number, TWILIO_API_BASE=twilio.base_url,
                   NOTIFY_POLL_SECONDS="0.2", NOTIFY_RETRY_SECONDS="0.3")
    return f"http://127.0.0.1:{port}"


def test_send_outcomes_per_channel(services, smtp, twilio, metrics_url):
    start_notifications(services, smtp, twilio)
    people = {"n1": "n1@example.com", "n2": "refused@example.com", "n3": "n3@example.com"}
    now = datetime.now(timezone.utc)
    publish(services.amqp_uri, *[
        build_event("customer.created", store_id=NOTIFY_STORE, occurred_at=now,
                    data={**contract("customer.created").sample, "customer_id": cid,
                          "email": email, "first_name": "Ada"}).to_message()
        for cid, email in people.items()])
    smtp.reject_recipient("refused@example.com")  # 550: permanent
    smtp.refuse_connections(1)  # 421 once: transient, then retried and sent
    with ClusterRpcProxy({"AMQP_URI": services.amqp_uri}, timeout=20) as rpc:
        def projected(customer_id: str) -> bool:
            # customer.created comes in batches, and until it is applied the contact is unknown
            try:
                contact = rpc.notifications.export_customer(NOTIFY_STORE, customer_id)["contact"]
            except NotFound:
                return False
            return bool(contact.get("email"))

        wait_until(lambda: all(projected(cid) for cid in people), timeout=15,
                   message="the customers in the projection")
        before = scrape(metrics_url)
        status = rpc.notifications.bulk_send(NOTIFY_STORE, {"customer_ids": list(people)},
                                             "welcome", None, "transactional")
        wait_until(lambda: rpc.notifications.bulk_status(NOTIFY_STORE, status["bulk_id"])
                   ["done"] == 3, timeout=20, message="three sends finished")
    after = scrape(metrics_url)
    outcomes = {outcome: delta(before, after, "companion_notification_sends_total",
                               channel="email", outcome=outcome)
                for outcome in ("sent", "failed_transient", "failed_permanent", "unknown")}
    assert outcomes == {"sent": 2, "failed_transient": 1, "failed_permanent": 1, "unknown": 0}
    assert smtp.received == 2


def test_notifications_readiness_follows_the_broker(services, smtp, twilio, broker_access):
    url = start_notifications(services, smtp, twilio)
    assert requests.get(f"{url}/health/live", timeout=5).json()["live"] is True
    ready = requests.get(f"{url}/health/ready", timeout=10)
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"broker": True, "database": True}
    broker_access.deny()
    ready = requests.get(f"{url}/health/ready", timeout=15)
    assert ready.status_code == 503
    assert ready.json()["checks"]["broker"] is False
    assert requests.get(f"{url}/health/live", timeout=5).status_code == 200


# -- a whole process, as deployed ------------------------------------------------------------------
def test_runner_serves_metrics_and_health_for_a_service_without_http(amqp_uri, events,
                                                                     broker_access):
    port = free_port()
    events.listen("loyalty")
    env = {**os.environ, "AMQP_URI": amqp_uri, "MONGO_URI": "mongomock://",
           "METRICS_PORT": str(port), "WEB_SERVER_ADDRESS": f"127.0.0.1:{free_port()}",
           "LOG_LEVEL": "WARNING"}
    child = subprocess.Popen([sys.executable, "-m", "services", "loyalty"], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        def answers(path: str):
            try:
                return requests.get(f"{url}{path}", timeout=5)
            except requests.ConnectionError:
                return None

        wait_until(lambda: (r := answers("/health/ready")) is not None and r.status_code == 200,
                   timeout=30, message="the process ready")
        assert answers("/health/ready").json()["checks"] == {"broker": True, "database": True,
                                                             "services": True}
        assert answers("/health/live").json() == {"live": True}
        at = datetime.now(timezone.utc)
        order = {**contract("order.placed").sample, "order_id": "9", "number": "9",
                 "customer_id": "c9", "status": "processing", "date_paid": None,
                 "date_created": (at - timedelta(days=1)).isoformat(),
                 "total": {"amount": 2500, "currency": "EUR"},
                 "shipping_total": {"amount": 0, "currency": "EUR"},
                 "tax_total": {"amount": 0, "currency": "EUR"},
                 "total_refunded": {"amount": 0, "currency": "EUR"}}
        publish(amqp_uri, build_event("order.placed", store_id="lm", data=order,
                                      occurred_at=at).to_message())
        events.wait_for(lambda got: any(e["event_type"] == "loyalty.points_changed" for e in got),
                        timeout=20)
        wait_until(lambda: value(scrape(url), "companion_outbox_published_total",
                                 service="loyalty", event_type="loyalty.points_changed") >= 1,
                   timeout=10, message="the publish counted")
        samples = scrape(url)
        assert value(samples, "companion_events_handled_total", service="loyalty",
                     event_type="order.placed") == 1
        assert value(samples, "companion_events_handled_total", service="loyalty",
                     event_type="order.refunded") == 0
        assert value(samples, "companion_parked_messages", service="loyalty") == 0
        assert value(samples, "companion_outbox_publish_failures_total", service="loyalty") == 0

        broker_access.deny()
        ready = answers("/health/ready")
        assert ready.status_code == 503
        assert ready.json()["checks"]["broker"] is False
        assert answers("/health/live").status_code == 200
    finally:
        broker_access.allow()
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout=20)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    assert child.returncode == 0, child.stderr.read().decode()[-2000:]
