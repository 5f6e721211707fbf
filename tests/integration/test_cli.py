"""The operator CLI against real services on the real broker (a fresh vhost per test), with a
local HTTP server playing the WooCommerce shop.

`ops.cli.main` runs in this process (its output captured), and each test also runs the
installed `companion` script once as a real process, as an operator would.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from nameko.standalone.rpc import ClusterRpcProxy

from services.customer_sync.service import CustomerSyncService
from services.customer_sync.shop.webhook_setup import REQUIRED_TOPICS
from services.gateway.service import GatewayService
from services.gdpr.service import GdprService
from services.loyalty.service import LoyaltyService
from services.notifications.service import NotificationsService
from services.registry import SERVICES
from services.segmentation.service import SegmentationService
from shared import mongo
from ops.cli import EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE, main
from shared.messaging.names import parked_queue
from shared.messaging.publisher import ConfirmingPublisher, OutgoingMessage
from tests.conftest import RABBIT_MANAGEMENT_URL
from demo.shop import FakeWooShop
from tests.support import free_port, wait_until

COMPANION = Path(sys.executable).parent / "companion"
SECRET = "whsec-cli-test-1"


@pytest.fixture(autouse=True)
def management_url(monkeypatch):
    """The CLI reads the management API where the test suite does."""
    monkeypatch.setenv("RABBITMQ_MANAGEMENT_URL", RABBIT_MANAGEMENT_URL)


def run(capsys, amqp_uri: str, *argv: str) -> tuple[int, str, str]:
    """`companion ARGV` in this process: (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = main(["--amqp-uri", amqp_uri, *argv])
    out, err = capsys.readouterr()
    return code, out, err


def run_process(amqp_uri: str, *argv: str) -> subprocess.CompletedProcess:
    """The installed `companion` script, as a separate process, running this checkout's code."""
    env = {**os.environ, "AMQP_URI": amqp_uri, "RABBITMQ_MANAGEMENT_URL": RABBIT_MANAGEMENT_URL,
           "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    return subprocess.run([str(COMPANION), *argv], capture_output=True, text=True, timeout=120,
                          env=env)


def register_store(amqp_uri: str, store_id: str, shop: FakeWooShop | None = None) -> None:
    with ClusterRpcProxy({"AMQP_URI": amqp_uri}, timeout=30) as rpc:
        rpc.customer_sync.register_store({
            "store_id": store_id, "shop_url": shop.base_url if shop else "https://shop.example",
            "webhook_secret": SECRET, "consumer_key": shop.consumer_key if shop else "ck",
            "consumer_secret": shop.consumer_secret if shop else "cs"})


def inbox_size(services) -> int:
    return mongo.connect(services.mongo_uri)["companion_customer_sync"]["webhook_inbox"] \
        .count_documents({})


# -- webhooks register --------------------------------------------------------------------------
def test_webhooks_register_creates_every_topic_then_changes_nothing_then_reactivates(
        services, capsys):
    assert COMPANION.exists(), "the companion script is installed (make venv)"
    services.start(CustomerSyncService, RECONCILE_POLL_SECONDS="3600")
    with FakeWooShop(customers=2, orders=0, seed=5, ping_webhooks=True) as shop:
        register_store(services.amqp_uri, "wh", shop)
        door = f"{services.web_url}/webhooks/woocommerce/wh"

        # First run: the base URL is enough; every topic is created, active, with our secret.
        code, out, err = run(capsys, services.amqp_uri, "--json", "webhooks", "register",
                             "--store", "wh", "--delivery-url", services.web_url)
        assert code == EXIT_OK, err
        result = json.loads(out)
        assert result["delivery_url"] == door
        assert [(w["topic"], w["outcome"]) for w in result["webhooks"]] == \
            [(t, "created") for t in REQUIRED_TOPICS]
        held = sorted(((w["topic"], w["status"], w["delivery_url"], w["secret"])
                       for w in shop.webhooks.values()))
        assert held == sorted((t, "active", door, SECRET) for t in REQUIRED_TOPICS)
        assert {w["webhook_id"] for w in result["webhooks"]} == set(shop.webhooks)
        # WooCommerce pinged our door before saving each one; the door answered 200 and
        # recorded nothing.
        assert [(p["url"], p["status"]) for p in shop.pings] == [(door, 200)] * len(REQUIRED_TOPICS)
        assert inbox_size(services) == 0

        # Second run, as a real process and a table for people: nothing new.
        again = run_process(services.amqp_uri, "webhooks", "register", "--store", "wh",
                            "--delivery-url", door)
        assert again.returncode == 0, again.stderr
        assert again.stdout.count("unchanged") == len(REQUIRED_TOPICS)
        assert "TOPIC" in again.stdout and " created" not in again.stdout
        assert len(shop.webhooks) == len(REQUIRED_TOPICS)
        assert len(shop.pings) == len(REQUIRED_TOPICS)

        # WooCommerce disabled one after failures, someone paused another, and a third was
        # given another secret: the next run brings all three back, and nothing else.
        ids = {w["topic"]: w["id"] for w in shop.webhooks.values()}
        shop.set_webhook_status(ids["order.updated"], "disabled")
        shop.set_webhook_status(ids["customer.deleted"], "paused")
        shop.webhooks[ids["customer.deleted"]]["secret"] = "someone-else-1"
        shop.webhooks[ids["order.created"]]["secret"] = "someone-else-2"
        code, out, err = run(capsys, services.amqp_uri, "webhooks", "register", "--json",
                             "--store", "wh", "--delivery-url", door)
        assert code == EXIT_OK, err
        outcomes = {w["topic"]: w["outcome"] for w in json.loads(out)["webhooks"]}
        assert outcomes == {t: {"order.updated": "reactivated", "customer.deleted": "reactivated",
                                "order.created": "updated"}.get(t, "unchanged")
                            for t in REQUIRED_TOPICS}
        assert {(w["status"], w["secret"]) for w in shop.webhooks.values()} == {("active", SECRET)}
        assert len(shop.webhooks) == len(REQUIRED_TOPICS)
        assert [p["webhook_id"] for p in shop.pings[len(REQUIRED_TOPICS):]] == \
            sorted([ids["order.updated"], ids["customer.deleted"]])

        # And they work: a signed delivery from the shop is accepted.
        customer_id = next(iter(shop.customers))
        assert [status for _, status in shop.deliver_webhooks("customer.created", customer_id)] == [200]
        wait_until(lambda: inbox_size(services) == 1, message="the delivery recorded")


def test_webhooks_register_reports_what_it_could_not_do(services, capsys):
    services.start(CustomerSyncService, RECONCILE_POLL_SECONDS="3600")
    with FakeWooShop(ping_webhooks=True) as shop:
        register_store(services.amqp_uri, "wh", shop)
        # A URL the shop cannot reach: its ping fails, so WooCommerce saves nothing.
        code, out, err = run(capsys, services.amqp_uri, "--json", "webhooks", "register",
                             "--store", "wh", "--delivery-url", f"http://127.0.0.1:{free_port()}")
        assert code == EXIT_FAILED
        hooks = json.loads(out)["webhooks"]
        assert {w["outcome"] for w in hooks} == {"failed"} and len(hooks) == len(REQUIRED_TOPICS)
        assert all("Delivery URL cannot be reached" in w["error"] for w in hooks)
        assert "could not be set up" in err
        assert shop.webhooks == {}
        # Another store's door, or an unknown store: refused before the shop is asked.
        code, _, err = run(capsys, services.amqp_uri, "webhooks", "register", "--store", "wh",
                           "--delivery-url", f"{services.web_url}/webhooks/woocommerce/other")
        assert code == EXIT_USAGE and "must end with /webhooks/woocommerce/wh" in err
        code, _, err = run(capsys, services.amqp_uri, "webhooks", "register", "--store", "nope",
                           "--delivery-url", services.web_url)
        assert code == EXIT_FAILED and "no store nope" in err
        assert shop.webhooks == {} and shop.pings[len(REQUIRED_TOPICS):] == []


# -- gdpr -----------------------------------------------------------------------------------------
def test_gdpr_submit_then_status_list_and_verify(services, capsys):
    services.start(GdprService, GDPR_PROCESS_SECONDS="3600")
    code, out, err = run(capsys, services.amqp_uri, "--json", "gdpr", "submit", "--store", "gd",
                         "--type", "export", "--email", "ada@acme.example", "--actor", "alice")
    assert code == EXIT_OK, err
    submitted = json.loads(out)
    request_id = submitted["request_id"]
    assert (submitted["type"], submitted["state"], submitted["email"]) == (
        "portability", "received", "ada@acme.example")

    status = run_process(services.amqp_uri, "gdpr", "status", "--id", request_id)
    assert status.returncode == 0, status.stderr
    assert request_id in status.stdout and "state: received" in status.stdout
    assert "alice" in status.stdout  # the audit trail names who recorded it

    code, out, _ = run(capsys, services.amqp_uri, "gdpr", "list", "--store", "gd", "--json")
    assert code == EXIT_OK and [r["request_id"] for r in json.loads(out)] == [request_id]
    code, out, _ = run(capsys, services.amqp_uri, "gdpr", "list", "--store", "gd",
                       "--state", "completed")
    assert code == EXIT_OK and out.strip() == "(none)"

    code, out, err = run(capsys, services.amqp_uri, "--json", "gdpr", "verify", "--id", request_id,
                         "--note", "passport seen", "--actor", "bob")
    assert code == EXIT_OK, err
    assert json.loads(out)["state"] == "in_progress"

    # Rectification without its fields, bad JSON, an unknown id: refused, on stderr, non-zero.
    code, _, err = run(capsys, services.amqp_uri, "gdpr", "submit", "--store", "gd", "--type",
                       "rectification", "--email", "ada@acme.example")
    assert (code, err) == (EXIT_USAGE, "error: details.fields: required: the corrected contact "
                                       "fields\n")
    code, _, err = run(capsys, services.amqp_uri, "gdpr", "submit", "--store", "gd", "--type",
                       "erasure", "--email", "ada@acme.example", "--details", "{nope")
    assert code == EXIT_USAGE and "not JSON" in err
    code, out, err = run(capsys, services.amqp_uri, "gdpr", "status", "--id", "req-missing")
    assert code == EXIT_FAILED and out == "" and err.startswith("error:")


# -- refusals and exit codes ----------------------------------------------------------------------
def test_a_typo_is_named_by_its_sub_command_and_creates_nothing(services):
    services.start(CustomerSyncService, RECONCILE_POLL_SECONDS="3600")
    register_store(services.amqp_uri, "ty")
    for typo, meant in (("--stor", "--store"), ("--scope", "--scopes")):
        argv = {"--stor": ["--stor", "ty", "--name", "crm", "--scopes", "read"],
                "--scope": ["--store", "ty", "--name", "crm", "--scope", "read"]}[typo]
        typed = run_process(services.amqp_uri, "keys", "create", *argv)
        assert typed.returncode == EXIT_USAGE and typed.stdout == ""
        assert typed.stderr.startswith("usage: companion keys create ")
        assert typed.stderr.strip().splitlines()[-1] == (
            f"companion keys create: error: unrecognized argument: {typo} (did you mean {meant}?)")
    with ClusterRpcProxy({"AMQP_URI": services.amqp_uri}, timeout=30) as rpc:
        assert rpc.customer_sync.list_api_keys("ty", True) == []


def test_a_services_refusal_is_one_line_a_field(services, capsys, monkeypatch):
    services.start(CustomerSyncService, RECONCILE_POLL_SECONDS="3600")
    services.start(GdprService, GDPR_PROCESS_SECONDS="3600")
    code, out, err = run(capsys, services.amqp_uri, "gdpr", "submit", "--store", "gd", "--type",
                         "access", "--email", "not-an-address")
    assert (code, out, err) == (EXIT_USAGE, "", "error: email: must be exactly one email address\n")
    # marshmallow's messages, from the schema of a store.
    for name, value in (("WOO_WEBHOOK_SECRET", SECRET), ("WOO_CONSUMER_KEY", "ck"),
                        ("WOO_CONSUMER_SECRET", "cs")):
        monkeypatch.setenv(name, value)
    code, out, err = run(capsys, services.amqp_uri, "stores", "add", "--store", "bad",
                         "--shop-url", "not a url")
    assert (code, out) == (EXIT_USAGE, "")
    assert err == "error: shop_url: not a valid URL\n"
    assert "{" not in err
    code, out, err = run(capsys, services.amqp_uri, "stores", "add", "--store", "de",
                         "--shop-url", "https://shop.example", "--country", "DEU")
    assert (code, out) == (EXIT_USAGE, "")
    assert err == "error: country: must be an ISO 3166 two-letter code\n"
    code, out, _ = run(capsys, services.amqp_uri, "--json", "stores", "list")
    assert code == EXIT_OK and json.loads(out) == []
    code, _, _ = run(capsys, services.amqp_uri, "stores", "add", "--store", "de",
                     "--shop-url", "https://shop.example", "--country", "de")
    assert code == EXIT_OK
    code, out, _ = run(capsys, services.amqp_uri, "--json", "stores", "list")
    assert [(s["store_id"], s["country"]) for s in json.loads(out)] == [("de", "DE")]


def test_unreachable_broker_or_service_is_exit_3(services, capsys):
    closed = f"amqp://guest:guest@127.0.0.1:{free_port()}/"
    code, out, err = run(capsys, closed, "--timeout", "5", "stores", "list")
    assert code == EXIT_UNREACHABLE and out == ""
    assert "cannot reach the broker: connection refused at amqp://127.0.0.1:" in err
    # The broker answers but customer_sync is not running.
    code, _, err = run(capsys, services.amqp_uri, "--timeout", "5", "stores", "list")
    assert code == EXIT_UNREACHABLE and "customer_sync" in err and "not running" in err


# -- customers find -------------------------------------------------------------------------------
def test_customers_find_by_email_and_name(services, capsys):
    services.start(CustomerSyncService, RECONCILE_POLL_SECONDS="3600")
    with FakeWooShop(customers=3, orders=0, seed=8) as shop:
        register_store(services.amqp_uri, "cu", shop)
        door = f"{services.web_url}/webhooks/woocommerce/cu"
        shop.add_webhook("customer.created", door, SECRET)
        person = next(iter(shop.customers.values()))
        assert shop.deliver_webhooks("customer.created", person["id"])[0][1] == 200

        def found():
            return run(capsys, services.amqp_uri, "--json", "customers", "find", "--store", "cu",
                       "--email", person["email"].upper())
        code, out, err = wait_until(lambda: (r := found())[0] == EXIT_OK and r, timeout=15,
                                    message="the customer applied")
        [row] = json.loads(out)
        assert (row["email"], row["woo_customer_id"], row["registered"]) == (
            person["email"].lower(), person["id"], True)

        table = run_process(services.amqp_uri, "customers", "find", "--store", "cu",
                            "--name", person["last_name"][:4])
        assert table.returncode == 0, table.stderr
        assert "CUSTOMER_ID" in table.stdout and person["email"] in table.stdout

        code, out, err = run(capsys, services.amqp_uri, "--json", "customers", "find", "--store",
                             "cu", "--email", "nobody@nowhere.example")
        assert code == EXIT_FAILED and json.loads(out) == [] and "no customer" in err
        code, out, err = run(capsys, services.amqp_uri, "customers", "find", "--store", "cu",
                             "--name", "Zzyzx")
        assert code == EXIT_FAILED and out.strip() == "(none)"


def test_customers_merge_unmerge_and_merges(services, capsys):
    services.start(CustomerSyncService, RECONCILE_POLL_SECONDS="3600")
    with FakeWooShop(customers=2, orders=0, seed=9) as shop:
        register_store(services.amqp_uri, "mg", shop)
        door = f"{services.web_url}/webhooks/woocommerce/mg"
        shop.add_webhook("customer.created", door, SECRET)
        people = list(shop.customers.values())
        for person in people:
            assert shop.deliver_webhooks("customer.created", person["id"])[0][1] == 200

        def customer_id(person) -> str:
            def found():
                return run(capsys, services.amqp_uri, "--json", "customers", "find", "--store",
                           "mg", "--email", person["email"])
            code, out, _ = wait_until(lambda: (r := found())[0] == EXIT_OK and r, timeout=15,
                                      message="the customer applied")
            return json.loads(out)[0]["customer_id"]

        primary, other = customer_id(people[0]), customer_id(people[1])
        code, out, err = run(capsys, services.amqp_uri, "customers", "merge", "--store", "mg",
                             "--primary", primary, "--merged", other, "--take", "bogus")
        assert code == EXIT_USAGE and "take" in err
        code, out, err = run(capsys, services.amqp_uri, "customers", "merge", "--store", "mg",
                             "--primary", primary, "--merged", other,
                             "--take", f"first_name={other}")
        assert code == EXIT_OK, err
        assert f"{other} into {primary}" in out and "shop accounts remain" in out
        merge_id = out.split()[1]

        listed = run_process(services.amqp_uri, "customers", "merges", "--store", "mg")
        assert listed.returncode == 0, listed.stderr
        assert merge_id in listed.stdout and "MERGE_ID" in listed.stdout

        code, out, err = run(capsys, services.amqp_uri, "--json", "customers", "unmerge",
                             "--store", "mg", merge_id)
        assert code == EXIT_OK, err
        assert json.loads(out)["restored"][0]["customer_id"] == other
        assert json.loads(out)["fields_back"] == ["first_name"]
        code, out, err = run(capsys, services.amqp_uri, "customers", "unmerge", "--store", "mg",
                             merge_id)
        assert code == EXIT_FAILED and "already undone" in err


# -- health ---------------------------------------------------------------------------------------
def park_a_message(amqp_uri: str, service: str) -> None:
    """Park one message for a service the way the reliable handler parks one (declare the
    parked queue, publish with a confirm)."""
    publisher = ConfirmingPublisher(amqp_uri)
    try:
        publisher.declare_queue(parked_queue(service))
        publisher.publish_batch([OutgoingMessage(
            "", parked_queue(service), {"event_id": "e-1", "event_type": "order.placed",
                                        "store_id": "s", "data": {}},
            headers={"x-companion-park-id": "p-1", "x-companion-error": "KeyError: 'x'"})])
    finally:
        publisher.close()


def test_health_of_the_whole_system(services, capsys):
    containers = {
        "customer_sync": services.start(CustomerSyncService, RECONCILE_POLL_SECONDS="3600"),
        "segmentation": services.start(SegmentationService),
        "loyalty": services.start(LoyaltyService),
        "notifications": services.start(NotificationsService,
                                        WEB_SERVER_ADDRESS=f"127.0.0.1:{free_port()}"),
        "gdpr": services.start(GdprService, GDPR_PROCESS_SECONDS="3600"),
        "gateway": services.start(GatewayService, WEB_SERVER_ADDRESS=f"127.0.0.1:{free_port()}"),
    }
    assert set(containers) == set(SERVICES)

    # All up: exit 0, every service ready, and the broker's queues with their consumers.
    code, out, err = run(capsys, services.amqp_uri, "--json", "health", "--service-timeout", "3")
    assert code == EXIT_OK, (out, err)
    report = json.loads(out)
    assert report["healthy"] and report["problems"] == []
    assert {r["service"]: (r["state"], r["instances"], r["parked"]) for r in report["services"]} \
        == {name: ("ready", 1, 0) for name in SERVICES}
    queues = {q["name"]: q for q in report["queues"]}
    # The management API's figures are the broker's samples (a new queue shows 0 consumers
    # for a few seconds), so only their presence is certain here.
    assert {f"rpc-{name}" for name in SERVICES} <= set(queues)
    assert all(isinstance(q[k], int) for q in queues.values()
               for k in ("messages", "messages_ready", "messages_unacknowledged", "consumers"))
    assert not any(name.startswith("rpc.reply-") for name in queues)
    human = run_process(services.amqp_uri, "health")
    assert human.returncode == 0, human.stdout + human.stderr
    assert "rpc-customer_sync" in human.stdout and human.stdout.strip().endswith("healthy")

    # A parked message: counted at once (not after the management API's next sample), exit 1.
    park_a_message(services.amqp_uri, "segmentation")
    code, out, _ = run(capsys, services.amqp_uri, "--json", "health", "--service-timeout", "3")
    report = json.loads(out)
    assert code == EXIT_FAILED and not report["healthy"]
    assert report["parked"]["segmentation"] == 1
    assert [p for p in report["problems"] if "parked" in p] == [
        "segmentation: 1 parked message(s) (`companion dlq list --service segmentation`)"]
    code, _, _ = run(capsys, services.amqp_uri, "dlq", "purge", "--service", "segmentation", "--all")
    assert code == EXIT_OK
    code, _, _ = run(capsys, services.amqp_uri, "health", "--service-timeout", "3")
    assert code == EXIT_OK

    # One service stopped: reported as not answering, not a crash; exit 1.
    services.kill(containers["loyalty"])
    code, out, err = run(capsys, services.amqp_uri, "health", "--service-timeout", "2")
    assert code == EXIT_FAILED, err
    assert "loyalty: not answering (no answer within 2s)" in out
    row = next(line for line in out.splitlines() if line.startswith("loyalty "))
    assert "not answering" in row
    assert "NEEDS ATTENTION" in out
