"""The broker users derived from the code: who may emit what and call what."""
from __future__ import annotations

import json
import re

import pytest

from ops.broker_permissions import (
    GATEWAY_EXCLUDED_METHODS, OPERATOR, definitions, derive_roles, grant, main, password_hash,
)
from shared.events import CATALOGUE
from shared.messaging.broadcast import broadcast_handler
from ops.topology import handler_queues

GDPR_SERVICES = ("customer_sync", "segmentation", "loyalty", "notifications")


@pytest.fixture(scope="module")
def roles():
    return derive_roles(GDPR_SERVICES)


def test_every_event_in_the_catalogue_has_a_publisher_and_only_its_own(roles):
    publishers = {t: {r.user for r in roles.values() if r.may_publish(t)} for t, _ in CATALOGUE}
    assert all(publishers.values()), f"events nobody may publish: {publishers}"
    assert publishers["customer.created"] == {"customer_sync"}
    assert publishers["gdpr.erasure_requested"] == {"gdpr"}
    assert publishers["consent.changed"] == {"gdpr", "notifications"}
    # Every data owner confirms its erasure on the gdpr exchange.
    assert publishers["gdpr.erasure_completed"] == set(GDPR_SERVICES)
    assert roles["gateway"].publishes == ()


def test_rpc_calls_are_what_each_caller_needs(roles):
    gdpr = roles["gdpr"]
    for service in GDPR_SERVICES:
        assert gdpr.may_call(service, "export_customer")
        assert gdpr.may_call(service, "search_personal_data")
    assert gdpr.may_call("customer_sync", "rectify_customer")
    assert not gdpr.may_call("loyalty", "redeem")
    # A data owner asks itself (its container's healthcheck) and, before a request naming a
    # customer it does not hold yet, customer_sync whether that customer exists; nothing else.
    assert roles["segmentation"].calls == ("customer_sync.known_customers", "segmentation.health")
    assert roles["loyalty"].calls == ("customer_sync.known_customers", "loyalty.health")
    assert gdpr.may_call("customer_sync", "known_customers")
    # notifications also files the preference page's "forget me" with gdpr.
    assert roles["notifications"].calls == ("customer_sync.known_customers",
                                            "gdpr.submit_request", "notifications.health")
    assert not roles["notifications"].may_call("gdpr", "verify_identity")
    gateway = roles["gateway"]
    assert gateway.may_call("loyalty", "redeem") and gateway.may_call("gdpr", "submit_request")
    assert not any(gateway.may_call("customer_sync", m) for m in GATEWAY_EXCLUDED_METHODS)
    assert roles[OPERATOR].may_call("loyalty", "adjust")


def test_permissions_name_only_the_services_own_queues(roles):
    loyalty = grant(roles["loyalty"])
    configure = re.compile(loyalty.configure)
    assert configure.match("rpc-loyalty")
    assert configure.match("evt-customer_sync-order.placed--loyalty.on_order_placed")
    assert configure.match("evt-customer_sync-order.placed--loyalty.on_order_placed.retry.50ms")
    assert configure.match("loyalty.retry") and configure.match("loyalty.parked")
    assert configure.match("rpc.reply-standalone_rpc_proxy-0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0")
    for other in ("rpc-segmentation", "segmentation.parked", "amq.default",
                  "evt-customer_sync-order.placed--segmentation.on_order_placed"):
        assert not configure.match(other), other
    assert not re.match(loyalty.write, "amq.default")
    assert not re.match(loyalty.write, "customer_sync.events")
    write, read = loyalty.topics["loyalty.events"]
    assert re.match(write, "loyalty.points_changed") and not re.match(write, "order.placed")
    assert re.match(loyalty.topics["customer_sync.events"][1], "order.placed")
    assert not re.match(loyalty.topics["customer_sync.events"][0], "order.placed")


def test_password_hash_is_rabbitmqs_salted_sha256():
    # The example in RabbitMQ's documentation (passwords.html): "test12", salt 908DC60A.
    assert password_hash("test12", bytes.fromhex("908DC60A")) == \
        "kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR"


def test_definitions_file_holds_users_permissions_and_topic_permissions(roles):
    grants = [grant(r) for r in roles.values()]
    doc = definitions(grants, "companion", {g.user: "pw" for g in grants})
    assert doc["vhosts"] == [{"name": "companion"}]
    assert {u["name"] for u in doc["users"]} == set(roles)
    assert all("password" not in u and u["password_hash"] for u in doc["users"])
    assert {p["user"] for p in doc["permissions"]} == set(roles)
    assert {"user": "segmentation", "vhost": "companion", "exchange": "segmentation.events"} \
        .items() <= next(t for t in doc["topic_permissions"]
                         if t["user"] == "segmentation"
                         and t["exchange"] == "segmentation.events").items()


def test_definitions_need_every_password_or_explicit_placeholders(monkeypatch, capsys):
    for name in ("CUSTOMER_SYNC", "SEGMENTATION", "LOYALTY", "NOTIFICATIONS", "GDPR",
                 "GATEWAY", "OPERATOR"):
        monkeypatch.delenv(f"BROKER_PASSWORD_{name}", raising=False)
    with pytest.raises(SystemExit, match="BROKER_PASSWORD_CUSTOMER_SYNC"):
        main(["definitions"])
    monkeypatch.setenv("BROKER_PASSWORD_LOYALTY", "s3cret")
    assert main(["definitions", "--placeholders", "--vhost", "prod"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["vhosts"] == [{"name": "prod"}]
    assert "s3cret" not in json.dumps(doc)  # only its hash


class Listener:
    """A service with a broadcast handler: every instance declares a queue of its own."""

    name = "listener"

    @broadcast_handler("customer_sync", "customer.deleted")
    def on_deleted(self, event):
        pass


def test_a_broadcast_handler_may_use_its_own_instance_queues_and_nothing_to_retry_into():
    role = derive_roles(GDPR_SERVICES, {"listener": Listener})["listener"]
    assert [h.broadcast for h in role.handlers] == [True]
    listener = grant(role)
    queue = "evt-customer_sync-customer.deleted--listener.on_deleted"
    for permission in (listener.configure, listener.write, listener.read):
        assert re.match(permission, f"{queue}-{'0f' * 16}")
        assert not re.match(permission, queue)  # no shared queue that nobody would drain
        assert not re.match(permission, "listener.parked")
    assert re.match(listener.topics["customer_sync.events"][1], "customer.deleted")
    assert handler_queues({"listener": Listener}) == []  # topology declares none for it


def test_the_gateway_hears_key_revocations_on_queues_of_its_own(roles):
    gateway = roles["gateway"]
    assert [(h.source, h.event_type, h.broadcast) for h in gateway.handlers] == [
        ("customer_sync", "api_key.revoked", True)]
    assert gateway.publishes == ()
