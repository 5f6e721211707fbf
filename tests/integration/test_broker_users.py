"""Per-service broker users on the real RabbitMQ: each may emit its own events and call the
RPCs it needs, and is refused (ACCESS_REFUSED) for anything else. Real services run under
their restricted users, with classic and with quorum queues."""
from __future__ import annotations

import os
import secrets
import uuid
from dataclasses import replace

import amqp
import pytest
from kombu import Connection
from nameko.standalone.rpc import ClusterRpcProxy

from services.loyalty.service import LoyaltyService
from ops.broker_permissions import ManagementApi, derive_roles, grant
from shared.events import build_event, contract
from shared.messaging.parking import ParkedMessages
from shared.messaging.queues import TypedQueuesContainer
from tests.integration.test_reliable_handler import Behaviour, FlakyService, deleted_event
from tests.integration.test_reliable_handler import database as flaky_database
from tests.support import EventBarrier, EventCollector, ServiceHarness, publish, vhost_of, wait_until

MANAGEMENT_URL = os.environ.get("RABBIT_MANAGEMENT_URL", "http://guest:guest@127.0.0.1:15672")
AMQP_HOST = os.environ.get("RABBIT_AMQP_HOST", "127.0.0.1:5672")
GDPR_SERVICES = ("customer_sync", "segmentation", "loyalty", "notifications")


class Users:
    """The derived users, created in the test's vhost under a unique prefix (users are
    global to the broker) and deleted afterwards."""

    def __init__(self, vhost: str, services: dict | None = None) -> None:
        self.vhost = vhost
        self.prefix = f"t{uuid.uuid4().hex[:8]}-"
        self.roles = derive_roles(GDPR_SERVICES, services)
        self.grants = [replace(grant(role), user=self.prefix + name)
                       for name, role in self.roles.items()]
        self.passwords = {g.user: secrets.token_hex(12) for g in self.grants}
        self.api = ManagementApi(MANAGEMENT_URL)
        self.api.apply(self.grants, vhost, self.passwords)

    def uri(self, role: str) -> str:
        user = self.prefix + role
        return f"amqp://{user}:{self.passwords[user]}@{AMQP_HOST}/{self.vhost}"

    def remove(self) -> None:
        self.api.remove_users(g.user for g in self.grants)


@pytest.fixture
def users(amqp_uri):
    created = Users(vhost_of(amqp_uri))
    yield created
    created.remove()


@pytest.fixture
def exchanges(amqp_uri):
    """The topic exchanges exist (as after any deployment's first start), so a refusal below
    is about publishing, not declaring."""
    with Connection(amqp_uri) as conn:
        channel = conn.channel()
        for name in ("nameko-rpc", "customer_sync.events", "segmentation.events",
                     "loyalty.events", "notifications.events", "gdpr.events"):
            channel.exchange_declare(name, "topic", durable=True, auto_delete=False)
        channel.close()


def refusal(uri: str, exchange: str, routing_key: str) -> str | None:
    """None when the broker confirms the publish; else why it closed the channel."""
    # confirm_publish: basic_publish waits for the broker's ack, or its refusal.
    with Connection(uri, connect_timeout=10, transport_options={"confirm_publish": True}) as conn:
        conn.connect()
        channel = conn.connection.channel()
        try:
            channel.basic_publish(amqp.Message(b"{}"), exchange=exchange, routing_key=routing_key)
        except amqp.exceptions.AccessRefused as exc:
            return str(exc)
        return None


def test_each_service_emits_its_own_events_and_no_one_elses(users, exchanges):
    segmentation, notifications = users.uri("segmentation"), users.uri("notifications")
    assert refusal(segmentation, "segmentation.events", "customer.tagged") is None
    # Another service's event type on its own exchange: the topic permission refuses it.
    assert "ACCESS_REFUSED" in refusal(segmentation, "segmentation.events",
                                       "loyalty.points_changed")
    # Another service's exchange: no write permission at all.
    assert "ACCESS_REFUSED" in refusal(segmentation, "customer_sync.events", "order.placed")
    # notifications publishes consent.changed on the gdpr exchange (SMS STOP), and its erasure
    # confirmation, but cannot forge an erasure request.
    assert refusal(notifications, "gdpr.events", "consent.changed") is None
    assert refusal(notifications, "gdpr.events", "gdpr.erasure_completed") is None
    assert "ACCESS_REFUSED" in refusal(notifications, "gdpr.events", "gdpr.erasure_requested")
    assert refusal(users.uri("gdpr"), "gdpr.events", "gdpr.erasure_requested") is None
    assert "ACCESS_REFUSED" in refusal(users.uri("loyalty"), "gdpr.events", "consent.changed")


def test_each_caller_calls_only_the_rpcs_it_needs(users, exchanges):
    gdpr, gateway, loyalty = users.uri("gdpr"), users.uri("gateway"), users.uri("loyalty")
    assert refusal(gdpr, "nameko-rpc", "customer_sync.export_customer") is None
    assert refusal(gdpr, "nameko-rpc", "notifications.search_personal_data") is None
    assert "ACCESS_REFUSED" in refusal(gdpr, "nameko-rpc", "loyalty.redeem")
    assert refusal(gateway, "nameko-rpc", "loyalty.redeem") is None
    assert "ACCESS_REFUSED" in refusal(gateway, "nameko-rpc",
                                       "customer_sync.search_personal_data")
    assert refusal(loyalty, "nameko-rpc", "loyalty.health") is None  # its healthcheck
    assert "ACCESS_REFUSED" in refusal(loyalty, "nameko-rpc", "segmentation.tag")
    # A reply goes to the caller's UUID routing key; nothing else passes as a reply.
    assert refusal(loyalty, "nameko-rpc", str(uuid.uuid4())) is None
    assert "ACCESS_REFUSED" in refusal(loyalty, "nameko-rpc", "loyalty")
    assert refusal(users.uri("operator"), "nameko-rpc", "loyalty.adjust") is None
    # notifications files the preference page's "forget me", and may do nothing else there.
    notifications = users.uri("notifications")
    assert refusal(notifications, "nameko-rpc", "gdpr.submit_request") is None
    assert "ACCESS_REFUSED" in refusal(notifications, "nameko-rpc", "gdpr.verify_identity")


def test_no_service_may_use_the_default_exchange_that_reaches_every_queue(users, exchanges):
    for role in ("loyalty", "gdpr", "gateway"):
        assert "ACCESS_REFUSED" in refusal(users.uri(role), "", "rpc-segmentation")


class TypedHarness(ServiceHarness):
    """The harness with the runner's container class (queues of AMQP_QUEUE_TYPE)."""

    def start(self, service_cls, **overrides):
        container = TypedQueuesContainer(service_cls, self.config(**overrides))
        container.start()
        self.containers.append(container)
        return container


def placed(customer: str, total: int = 10_000, order_id: str = "7001") -> dict:
    data = {**contract("order.placed").sample, "order_id": order_id, "customer_id": customer,
            "total": {"amount": total, "currency": "EUR"},
            "shipping_total": {"amount": 0, "currency": "EUR"},
            "tax_total": {"amount": 0, "currency": "EUR"}}
    return build_event("order.placed", store_id="perm", data=data).to_message()


def queue_types(broker_admin, vhost: str) -> dict[str, str]:
    import urllib.parse

    response = broker_admin.session.get(
        f"{broker_admin.base}/queues/{urllib.parse.quote(vhost, safe='')}",
        auth=broker_admin.auth, timeout=10)
    response.raise_for_status()
    return {q["name"]: q.get("type", "classic") for q in response.json()}


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
def test_loyalty_runs_under_its_own_user_end_to_end(users, amqp_uri, mongo_uri, broker_admin,
                                                     queue_type, monkeypatch, capsys):
    harness = TypedHarness(users.uri("loyalty"), mongo_uri)
    events = EventCollector(amqp_uri).listen("loyalty")
    try:
        harness.start(LoyaltyService, AMQP_QUEUE_TYPE=queue_type)
        publish(amqp_uri, placed("c-perm"))  # customer_sync's event, published as customer_sync
        got = events.wait_for(lambda e: any(x["event_type"] == "loyalty.points_changed"
                                            for x in e), timeout=20)
        assert [e["data"]["delta"] for e in got if e["event_type"] == "loyalty.points_changed"
                ] == [1000]
        # The gateway's call is answered: loyalty may reply to the caller's UUID key.
        with ClusterRpcProxy({"AMQP_URI": users.uri("gateway")}, timeout=20) as rpc:
            assert rpc.loyalty.get_account("perm", "c-perm")["balance"] == 1000
        # The container's healthcheck runs as loyalty itself, and may ask only health().
        from ops.healthcheck import main as healthcheck

        monkeypatch.setenv("AMQP_URI", users.uri("loyalty"))
        assert healthcheck(["loyalty"]) == 0
        with pytest.raises(amqp.exceptions.AccessRefused):
            with ClusterRpcProxy({"AMQP_URI": users.uri("loyalty")}, timeout=5) as rpc:
                rpc.loyalty.redeem("perm", "c-perm", 100)
        # A body that breaks its contract is parked through loyalty.retry; the operator sees it.
        broken = placed("c-broken", order_id="7002")
        broken["data"]["total"] = "a lot"
        publish(amqp_uri, broken)
        parked = wait_until(lambda: ParkedMessages(users.uri("operator")).list("loyalty"),
                            timeout=20, message="parked")
        assert parked[0].event_id == broken["event_id"]
        types = queue_types(broker_admin, vhost_of(amqp_uri))
        shared_queues = {"rpc-loyalty", "loyalty.parked",
                         "evt-customer_sync-order.placed--loyalty.on_order_placed"}
        assert {types[name] for name in shared_queues} == {queue_type}
        assert {t for name, t in types.items() if name.startswith("rpc.reply-")} <= {"classic"}
    finally:
        harness.stop_all()
        events.close()


@pytest.fixture
def flaky_users(amqp_uri):
    """Users derived for a deployment of the test's flaky service (a handler that fails on
    demand), to watch retries and parking under a restricted user."""
    created = Users(vhost_of(amqp_uri), {"flaky": FlakyService})
    yield created
    created.remove()


@pytest.fixture(autouse=True)
def reset_flaky():
    Behaviour.fail_first, Behaviour.always_fail = 0, False
    yield
    Behaviour.fail_first, Behaviour.always_fail = 0, False


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
def test_retries_and_parking_under_a_restricted_user(flaky_users, amqp_uri, mongo_uri,
                                                      broker_admin, queue_type):
    harness = TypedHarness(flaky_users.uri("flaky"), mongo_uri)
    try:
        harness.start(FlakyService, AMQP_QUEUE_TYPE=queue_type, EVENT_MAX_ATTEMPTS="3")
        Behaviour.fail_first = 2
        first = deleted_event("c-retried")
        publish(amqp_uri, first)
        db = flaky_database(harness)
        wait_until(lambda: db.applied.count_documents({}) == 1, timeout=20,
                   message="applied after two retries")
        assert [a["try"] for a in db.attempts.find().sort("try")] == [1, 2, 3]

        Behaviour.always_fail = True
        second = deleted_event("c-parked")
        publish(amqp_uri, second)
        operator = ParkedMessages(flaky_users.uri("operator"))
        parked = wait_until(lambda: operator.list("flaky"), timeout=20, message="parked")
        assert [m.event_id for m in parked] == [second["event_id"]]
        assert parked[0].attempts == 3
        types = queue_types(broker_admin, vhost_of(amqp_uri))
        retry_queues = [n for n in types if ".retry." in n]
        assert retry_queues and {types[n] for n in retry_queues} == {queue_type}
        assert types["flaky.parked"] == queue_type
        assert types["evt-customer_sync-customer.deleted--flaky.on_customer_deleted"] == queue_type

        Behaviour.always_fail = False
        barrier = EventBarrier(harness, "flaky").expect("customer.deleted")
        assert len(operator.replay("flaky")) == 1  # the operator may publish to the queue
        barrier.settled("customer.deleted")  # the replayed message applied and acknowledged
        assert db.applied.count_documents({}) == 2
        assert operator.list("flaky") == []
    finally:
        harness.stop_all()


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
def test_the_gateway_hears_key_revocations_under_its_own_user(users, amqp_uri, mongo_uri,
                                                              queue_type):
    """Each gateway instance declares and binds a queue of its own for `api_key.revoked`
    (exclusive, so classic whatever AMQP_QUEUE_TYPE says), which its user may do."""
    from services.gateway.bootstrap import GatewayProvider
    from services.gateway.service import GatewayService
    from tests.support import free_port

    harness = TypedHarness(users.uri("gateway"), mongo_uri)
    try:
        container = harness.start(GatewayService, AMQP_QUEUE_TYPE=queue_type,
                                  WEB_SERVER_ADDRESS=f"127.0.0.1:{free_port()}",
                                  GATEWAY_KEY_CACHE_SECONDS="600")
        [provider] = [e for e in container.extensions if isinstance(e, GatewayProvider)]
        authenticator = provider.gateway.app.authenticator
        view = {"key_id": "5f0c3a9d2e7b1c44", "store_id": "perm", "name": "k",
                "scopes": ["read"], "rate_limit_per_minute": None}
        asked: list[str] = []

        def lookup(key: str) -> dict:
            asked.append(key)
            return view

        def asks_again() -> bool:
            asked.clear()
            authenticator.caller({"Authorization": "Bearer wcc_a"}, lookup)
            return asked == ["wcc_a"]

        authenticator.caller({"Authorization": "Bearer wcc_a"}, lookup)
        assert not asks_again()  # cached for ten minutes
        publish(amqp_uri, build_event("api_key.revoked", store_id="perm", data={
            **contract("api_key.revoked").sample, "key_id": view["key_id"]}).to_message())
        wait_until(asks_again, timeout=20, message="the revoked key dropped from the cache")
    finally:
        harness.stop_all()


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
def test_customer_syncs_door_and_applier_run_under_its_own_user(users, mongo_uri, broker_admin,
                                                                 queue_type):
    """The door hands keys over `customer_sync.inbox` and the applier consumes it, both as
    customer_sync's user, the queue of AMQP_QUEUE_TYPE."""
    from services.customer_sync.applier import CustomerSyncApplier
    from services.customer_sync.door.work_queue import WORK_QUEUE_NAME
    from services.customer_sync.service import CustomerSyncService
    from shared import mongo
    from tests import payloads
    from tests.integration.test_customer_sync_webhooks import STORE, post

    harness = TypedHarness(users.uri("customer_sync"), mongo_uri)
    try:
        harness.start(CustomerSyncService, AMQP_QUEUE_TYPE=queue_type, INBOX_APPLY="applier")
        harness.start(CustomerSyncApplier, AMQP_QUEUE_TYPE=queue_type)
        with ClusterRpcProxy({"AMQP_URI": users.uri("operator")}, timeout=20) as rpc:
            rpc.customer_sync.register_store(STORE)
        assert post(harness, "customer.created", payloads.customer(woo_id=7)).status_code == 200
        inbox = mongo.connect(mongo_uri)["companion_customer_sync"]["webhook_inbox"]
        wait_until(lambda: inbox.count_documents({"status": "done"}) == 1, timeout=20,
                   message="the delivery applied by the applier")
        assert queue_types(broker_admin, users.vhost)[WORK_QUEUE_NAME] == queue_type
    finally:
        harness.stop_all()
