"""shared.metrics without a broker: definitions, label caching, the WSGI app, the server, and the
webhook answer's metric labels."""
from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import requests
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from devdoubles import mongomock_adapter
from services.customer_sync.repository import CustomerSyncStorage
from services.customer_sync.door.signature import sign
from services.customer_sync.core.stores import StoreAdmin
from services.customer_sync.door.webhooks import WebhookAnswer, WebhookReceiver
from shared import metrics
from shared.health import process_readiness
from tests import payloads


def sample(name: str, **labels: str) -> float:
    text = generate_latest(metrics.REGISTRY).decode()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return s.value
    raise KeyError((name, labels))


def call(app, path: str, method: str = "GET") -> tuple[str, bytes]:
    seen = {}

    def start_response(status, headers):
        seen["status"] = status

    body = b"".join(app({"PATH_INFO": path, "REQUEST_METHOD": method, "QUERY_STRING": ""},
                        start_response))
    return seen["status"], body


def test_every_project_metric_has_the_prefix_and_documented_labels():
    names = [m._name for m in (metrics.EVENTS_HANDLED, metrics.EVENTS_FAILED,
                               metrics.EVENTS_RETRIED, metrics.EVENTS_PARKED,
                               metrics.EVENTS_DUPLICATE, metrics.EVENTS_DEFERRED,
                               metrics.OUTBOX_PUBLISHED, metrics.OUTBOX_FAILURES,
                               metrics.WEBHOOK_SECONDS, metrics.NOTIFICATION_SENDS,
                               metrics.WEBHOOK_QUARANTINED)]
    assert all(n.startswith("companion_") for n in names)
    assert metrics.EVENTS_HANDLED._labelnames == ("service", "event_type")
    assert metrics.WEBHOOK_SECONDS._labelnames == ("store", "outcome", "status")
    page = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    for name in names + ["companion_parked_messages", "companion_webhook_quarantined"]:
        documented = name + ("_total" if name + "_total" in page else "")
        assert f"`{documented}`" in page, f"{name} is not in docs/operations.md's metrics table"


def test_event_counters_exist_at_zero_and_count_per_service_and_type():
    counters = metrics.event_counters("unit_svc", "customer.created")
    assert sample("companion_events_parked_total", service="unit_svc",
                  event_type="customer.created") == 0
    counters.handled.inc()
    counters.handled.inc()
    counters.failed.inc()
    assert sample("companion_events_handled_total", service="unit_svc",
                  event_type="customer.created") == 2
    assert sample("companion_events_failed_total", service="unit_svc",
                  event_type="customer.created") == 1
    # resolving again gives the same series, not a reset one
    assert metrics.event_counters("unit_svc", "customer.created").handled is counters.handled


def test_label_cache_resolves_a_child_once():
    registry = CollectorRegistry()
    counter = Counter("unit_cache_total", "test", ("a",), registry=registry)
    cache = metrics.LabelCache(counter)
    assert cache("x") is cache("x") is counter.labels("x")
    cache("x").inc(3)
    assert registry.get_sample_value("unit_cache_total", {"a": "x"}) == 3


def test_published_events_are_tallied_per_type_and_failures_per_service():
    metrics.count_published("unit_out", ["a.b", "a.b", "c.d"])
    metrics.count_publish_failure("unit_out", 5)
    assert sample("companion_outbox_published_total", service="unit_out", event_type="a.b") == 2
    assert sample("companion_outbox_published_total", service="unit_out", event_type="c.d") == 1
    assert sample("companion_outbox_publish_failures_total", service="unit_out") == 5


def test_send_and_webhook_helpers():
    metrics.count_send("pigeon", "sent")
    metrics.observe_webhook("unit_store", "accepted", 200, 0.004)
    assert sample("companion_notification_sends_total", channel="pigeon", outcome="sent") == 1
    assert sample("companion_webhook_duration_seconds_count", store="unit_store",
                  outcome="accepted", status="200") == 1
    assert sample("companion_webhook_duration_seconds_bucket", store="unit_store",
                  outcome="accepted", status="200", le="0.005") == 1
    assert sample("companion_webhook_duration_seconds_bucket", store="unit_store",
                  outcome="accepted", status="200", le="0.0025") == 0


def test_the_app_serves_metrics_liveness_and_readiness():
    state = {"ready": False}
    app = metrics.metrics_app(lambda: {"ready": state["ready"], "checks": {"broker": state["ready"]}})
    status, body = call(app, "/metrics")
    assert status.startswith("200") and b"companion_events_handled_total" in body
    assert b"_created" not in body  # timestamp series are left out
    assert call(app, "/health/live") == ("200 OK", b'{"live": true}')
    status, body = call(app, "/health/ready")
    assert status.startswith("503") and json.loads(body)["checks"] == {"broker": False}
    state["ready"] = True
    assert call(app, "/health/ready")[0] == "200 OK"
    assert call(app, "/elsewhere")[0].startswith("404")
    assert call(app, "/health/ready", "POST")[0].startswith("405")


def test_a_readiness_check_that_breaks_answers_503_not_500():
    def broken():
        raise RuntimeError("boom")

    status, body = call(metrics.metrics_app(broken), "/health/ready")
    assert status.startswith("503") and json.loads(body)["error"] == "RuntimeError"


def test_process_readiness_needs_started_services_and_the_broker():
    database = mongomock_adapter.client().db
    running = {"yes": False}
    check = process_readiness("amqp://guest:guest@127.0.0.1:1//", database,
                              lambda: running["yes"])
    assert check() == {"ready": False, "checks": {"broker": None, "database": None,
                                                   "services": False}}
    running["yes"] = True
    state = check()
    assert state["ready"] is False
    assert state["checks"] == {"broker": False, "database": True, "services": True}


def test_the_server_answers_over_http_and_serve_starts_once():
    server = metrics.MetricsServer(0, host="127.0.0.1").start()
    try:
        response = requests.get(f"http://127.0.0.1:{server.port}/metrics", timeout=5)
        assert response.status_code == 200
        assert "companion_notification_sends_total" in response.text
    finally:
        server.stop()
    assert not server.running

    assert metrics.serve(0) is None  # METRICS_PORT=0: off
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    first = metrics.serve(free, host="127.0.0.1")
    try:
        assert first is not None and first.port == free
        assert metrics.serve(free + 1, host="127.0.0.1") is first  # once per process
        assert requests.get(f"http://127.0.0.1:{free}/health/live", timeout=5).status_code == 200
    finally:
        metrics.stop_serving()


def test_a_port_in_use_is_logged_not_fatal(caplog):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        assert metrics.serve(taken.getsockname()[1], host="127.0.0.1") is None
    assert "could not listen" in caplog.text


def test_parked_depth_gives_no_sample_when_the_broker_does_not_answer():
    collector = metrics.ParkedDepthCollector(timeout=0.5)
    collector.watch("svc", "amqp://guest:guest@127.0.0.1:1//")
    [family] = list(collector.collect())
    assert family.name == "companion_parked_messages" and family.samples == []
    collector.watch("svc", "amqp://guest:guest@127.0.0.1:1//")
    collector.unwatch("svc", "amqp://guest:guest@127.0.0.1:1//")
    assert collector._watched  # still watched by the other handler
    collector.unwatch("svc", "amqp://guest:guest@127.0.0.1:1//")
    assert not collector._watched


@pytest.fixture
def receiver():
    storage = CustomerSyncStorage(mongomock_adapter.client().db)
    storage.ensure_indexes()
    StoreAdmin(storage, default_reconcile_minutes=10).register({
        "store_id": "s1", "shop_url": "https://shop.example", "webhook_secret": "whsec-metrics",
        "consumer_key": "ck_1", "consumer_secret": "cs_1"})
    return WebhookReceiver(storage, 1024 * 1024)


def test_quarantined_deliveries_are_counted_per_database_once_and_skipped_when_it_fails():
    registry = CollectorRegistry()
    collector = metrics.QuarantineCollector()
    registry.register(collector)

    def scrape() -> dict:
        text = generate_latest(registry).decode()
        return {s.labels["store"]: s.value for family in text_string_to_metric_families(text)
                for s in family.samples if s.name == "companion_webhook_quarantined"}

    collector.watch("db1.webhook_inbox", lambda: {"s1": 2})
    collector.watch("db1.webhook_inbox", lambda: {"s1": 2})  # a second instance, same database
    collector.watch("db2.webhook_inbox", lambda: {"s1": 1, "s2": 4})
    assert scrape() == {"s1": 3, "s2": 4}
    collector.unwatch("db1.webhook_inbox")
    assert scrape() == {"s1": 3, "s2": 4}  # one instance of db1 still watches
    collector.unwatch("db1.webhook_inbox")
    collector.unwatch("db2.webhook_inbox")
    assert scrape() == {}

    def down() -> dict:
        raise OSError("database unreachable")

    collector.watch("db3.webhook_inbox", down)
    assert scrape() == {}


def test_webhook_answers_say_whether_the_store_is_known_and_their_outcome(receiver):
    body = json.dumps(payloads.customer(woo_id=3)).encode()
    signed = {"x-wc-webhook-topic": "customer.created",
              "x-wc-webhook-signature": sign(body, "whsec-metrics")}
    accepted = receiver.receive("s1", signed, body)
    assert (accepted.outcome, accepted.store_known) == ("accepted", True)
    assert receiver.receive("s1", signed, body).outcome == "duplicate"
    bad = receiver.receive("s1", {**signed, "x-wc-webhook-signature": "nope"}, body)
    assert (bad.status, bad.outcome, bad.store_known) == (401, "rejected", True)
    unknown = receiver.receive("elsewhere", signed, body)
    assert (unknown.status, unknown.outcome, unknown.store_known) == (404, "rejected", False)
    assert receiver.receive("s1", {}, b"webhook_id=5").outcome == "pong"
    assert WebhookAnswer(503, {"status": "temporarily unavailable"}).outcome == "unavailable"


def test_a_process_without_a_database_is_ready_on_the_broker_alone():
    """The gateway owns no database: its process checks the broker only."""
    check = process_readiness("amqp://guest:guest@127.0.0.1:5672//", None, lambda: True)
    assert check() == {"ready": True, "checks": {"broker": True, "services": True}}
    down = process_readiness("amqp://guest:guest@127.0.0.1:1//", None, lambda: True)
    assert down()["ready"] is False and "database" not in down()["checks"]
