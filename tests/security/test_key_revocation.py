"""A revoked API key must stop at once: on the gateway that revoked it, on every other gateway
instance (told by the `api_key.revoked` broadcast), and above all on the routes that make and
revoke keys, where a stale cache entry would let a revoked admin key make its own successor.

In process first (two GatewayApps, each with the default 30 s key cache, in front of
customer_sync's real RPC methods and storage), then two real gateway instances on the broker."""
from __future__ import annotations

import uuid

import pytest
import requests
from kombu import Connection, Queue
from nameko.standalone.rpc import ClusterRpcProxy
from werkzeug.test import Client
from werkzeug.wrappers import Request

from devdoubles import mongomock_adapter
from services import registry
from services.customer_sync.bootstrap import build
from services.customer_sync.repository import Store
from services.customer_sync.service import CustomerSyncService
from services.gateway.app import GatewayApp
from services.gateway.auth import Authenticator
from services.gateway.backends import Backends
from services.gateway.ratelimit import RateLimiter
from services.gateway.routes import build_routes
from services.gateway.routing import Router
from services.gateway.service import GatewayService
from shared.config import Config
from shared.events import parse_event
from shared.outbox import OUTBOX_FIELD
from tests.conftest import RABBIT_AMQP_HOST
from tests.security.test_console_sessions import Outbox
from tests.support import free_port, vhost_of, wait_until
from tests.unit.test_console import Proxy

STORE = "shop"


class Deployment:
    """customer_sync's RPC methods on mongomock, and two gateway instances in front of it whose
    clocks stand still, so nothing they cache expires during a test."""

    def __init__(self) -> None:
        self.customer_sync = CustomerSyncService()
        self.customer_sync.app = build(mongomock_adapter.client()["cs"],
                                       Config({}, registry.settings(["customer_sync"])))
        self.customer_sync.app.ensure_indexes()
        self.customer_sync.outbox = Outbox()
        self.customer_sync.app.wire_outbox(self.customer_sync.outbox.notify)  # as its provider does
        self.customer_sync.storage.stores.save(
            Store(STORE, "https://shop.example", "whsec-123456789", "ck_x", "cs_x"))
        self.backends = Backends({"customer_sync": Proxy(self.customer_sync, [])}, 5)
        self.a, self.b = self.gateway(), self.gateway()

    def gateway(self) -> GatewayApp:
        return GatewayApp(Router(build_routes()), Authenticator(30, clock=lambda: 100.0),
                          RateLimiter(600), max_body_bytes=1 << 20)

    def key(self, *scopes: str) -> dict:
        return self.customer_sync.create_api_key(STORE, "k", list(scopes), "test")

    def client(self, gateway: GatewayApp, key: dict) -> "KeyClient":
        def wsgi(environ, start_response):
            return gateway.handle(Request(environ), self.backends)(environ, start_response)

        return KeyClient(Client(wsgi), key["api_key"])

    def stored_keys(self) -> int:
        return self.customer_sync.storage.api_keys.collection.count_documents({})


class KeyClient:
    """Requests to one gateway as one key."""

    def __init__(self, client: Client, api_key: str) -> None:
        self.client, self.headers = client, {"Authorization": f"Bearer {api_key}"}

    def get(self, path: str):
        return self.client.get(path, headers=self.headers)

    def post(self, path: str, json: dict):
        return self.client.post(path, json=json, headers=self.headers)

    def delete(self, path: str):
        return self.client.delete(path, headers=self.headers)


def test_a_revoked_key_stops_at_once_on_the_gateway_that_revoked_it():
    deployment = Deployment()
    admin, victim = deployment.key("admin"), deployment.key("admin")
    victim_on_a = deployment.client(deployment.a, victim)
    assert victim_on_a.get("/api/v1/keys").status_code == 200  # now in a's cache
    revoked = deployment.client(deployment.a, admin).delete(f"/api/v1/keys/{victim['key_id']}")
    assert revoked.status_code == 200
    assert victim_on_a.get("/api/v1/keys").status_code == 401


def test_a_revoked_admin_key_cannot_make_or_revoke_keys_through_a_stale_cache():
    deployment = Deployment()
    admin, stolen, other = deployment.key("admin"), deployment.key("admin"), deployment.key("read")
    stolen_on_b = deployment.client(deployment.b, stolen)
    assert stolen_on_b.get("/api/v1/keys").status_code == 200  # now in b's cache
    # revoked through the other gateway; b has not heard of it yet
    assert deployment.client(deployment.a, admin).delete(
        f"/api/v1/keys/{stolen['key_id']}").status_code == 200
    before = deployment.stored_keys()

    made = stolen_on_b.post("/api/v1/keys", json={"name": "successor", "scopes": ["admin"]})
    assert made.status_code == 401
    assert deployment.stored_keys() == before
    assert stolen_on_b.delete(f"/api/v1/keys/{other['key_id']}").status_code == 401
    assert deployment.customer_sync.storage.api_keys.collection.find_one(
        {"_id": other["key_id"]})["revoked_at"] is None


def test_revoking_a_key_owes_its_broadcast_in_the_same_write():
    deployment = Deployment()
    key = deployment.key("read")
    deployment.customer_sync.revoke_api_key(STORE, key["key_id"], "cli:ops")
    api_keys = deployment.customer_sync.storage.api_keys.collection
    [entry] = api_keys.find_one({"_id": key["key_id"]})[OUTBOX_FIELD]
    event = parse_event(entry["message"], expected_type="api_key.revoked")
    assert event.store_id == STORE and event.data["key_id"] == key["key_id"]
    assert entry["exchange"] == "customer_sync.events"
    assert deployment.customer_sync.outbox.notified == [(api_keys.name, key["key_id"])]


def test_every_gateway_instance_stops_a_revoked_key_long_before_its_cache_expires(services):
    """Two gateway instances on the real broker, each caching keys for ten minutes."""
    services.start(CustomerSyncService, RECONCILE_POLL_SECONDS="3600")
    ports = [free_port(), free_port()]
    for port in ports:
        services.start(GatewayService, WEB_SERVER_ADDRESS=f"127.0.0.1:{port}",
                       GATEWAY_KEY_CACHE_SECONDS="600", GATEWAY_RPC_TIMEOUT_SECONDS="5")
    url_a, url_b = (f"http://127.0.0.1:{port}/api/v1" for port in ports)
    with ClusterRpcProxy({"AMQP_URI": services.amqp_uri}, timeout=30) as rpc:
        rpc.customer_sync.register_store({
            "store_id": STORE, "shop_url": "https://shop.example", "webhook_secret": "whsec-1234",
            "consumer_key": "ck_x", "consumer_secret": "cs_x"})
        admin, victim, stolen = (rpc.customer_sync.create_api_key(STORE, name, ["admin"], "test")
                                 for name in ("admin", "victim", "stolen"))

    def status(url: str, key: dict, method: str = "GET", **kwargs) -> int:
        return requests.request(method, f"{url}/keys", timeout=10, **kwargs, headers={
            "Authorization": f"Bearer {key['api_key']}"}).status_code

    for url in (url_a, url_b):  # both instances now hold both keys in their caches
        assert status(url, victim) == 200 and status(url, stolen) == 200

    assert requests.delete(f"{url_a}/keys/{victim['key_id']}", timeout=10, headers={
        "Authorization": f"Bearer {admin['api_key']}"}).status_code == 200
    assert status(url_a, victim) == 401  # at once, where it was revoked
    wait_until(lambda: status(url_b, victim) == 401, timeout=15,
               message="the other gateway hearing of the revocation")

    assert requests.delete(f"{url_b}/keys/{stolen['key_id']}", timeout=10, headers={
        "Authorization": f"Bearer {admin['api_key']}"}).status_code == 200
    # on the other instance, whether or not the broadcast has arrived yet
    assert status(url_a, stolen, "POST", json={"name": "successor", "scopes": ["admin"]}) == 401
    wait_until(lambda: status(url_a, stolen) == 401, timeout=15,
               message="the first gateway hearing of the second revocation")


@pytest.fixture
def user_b(broker_admin, amqp_uri):
    """A broker user of gateway b's own, so that b alone can be kept off the broker. Set up
    before the services, so it is removed after they have stopped."""
    vhost = vhost_of(amqp_uri)
    user, password = f"gw-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    broker_admin.create_user(user, password)
    broker_admin.set_permissions(vhost, user=user)
    yield user, f"amqp://{user}:{password}@{RABBIT_AMQP_HOST}/{vhost}"
    broker_admin.delete_user(user)


class TwoGateways:
    """customer_sync and gateways a and b on the real broker, b under a broker user of its own;
    both cache key checks for ten minutes. Keys `admin` and `victim`, both admin keys."""

    def __init__(self, services, broker_admin, vhost: str, user_b: str, uri_b: str) -> None:
        self.broker, self.vhost, self.user_b = broker_admin, vhost, user_b
        services.start(CustomerSyncService, RECONCILE_POLL_SECONDS="3600")
        port_a, port_b = free_port(), free_port()
        services.start(GatewayService, WEB_SERVER_ADDRESS=f"127.0.0.1:{port_a}",
                       GATEWAY_KEY_CACHE_SECONDS="600", GATEWAY_RPC_TIMEOUT_SECONDS="5")
        services.start(GatewayService, WEB_SERVER_ADDRESS=f"127.0.0.1:{port_b}",
                       AMQP_URI=uri_b, GATEWAY_KEY_CACHE_SECONDS="600",
                       GATEWAY_RPC_TIMEOUT_SECONDS="5")
        self.url_a, self.url_b = (f"http://127.0.0.1:{port}/api/v1" for port in (port_a, port_b))
        with ClusterRpcProxy({"AMQP_URI": services.amqp_uri}, timeout=30) as rpc:
            rpc.customer_sync.register_store({
                "store_id": STORE, "shop_url": "https://shop.example",
                "webhook_secret": "whsec-1234", "consumer_key": "ck_x", "consumer_secret": "cs_x"})
            self.admin, self.victim = (
                rpc.customer_sync.create_api_key(STORE, name, ["admin"], "test")
                for name in ("admin", "victim"))

    def status(self, url: str, key: dict) -> int:
        return requests.get(f"{url}/keys", timeout=30, headers={
            "Authorization": f"Bearer {key['api_key']}"}).status_code

    def answer_of_b(self, key: dict) -> int | None:
        """b's status for the key, or None while b cannot answer (a 5xx: its backends are
        out of reach)."""
        code = self.status(self.url_b, key)
        return None if code >= 500 else code

    def revoke_through_a(self, key: dict) -> None:
        assert requests.delete(f"{self.url_a}/keys/{key['key_id']}", timeout=10, headers={
            "Authorization": f"Bearer {self.admin['api_key']}"}).status_code == 200

    def broadcast_queues(self) -> list[str]:
        return [name for name in self.broker.queues(self.vhost) if "on_api_key_revoked" in name]


def test_a_gateway_cut_off_from_the_broker_during_a_revocation_stops_the_key_when_it_is_back(
        user_b, services, broker_admin, amqp_uri, events):
    """Gateway b's connections are closed through the management API while its user may not
    reconnect, so b's broadcast queue is gone when the revocation goes out: b never hears it.
    Its cache (ten minutes) must not answer for the key once b is back. (While b is cut off
    it cannot answer at all: every route needs a backend over the broker.)"""
    user, uri_b = user_b
    vhost = vhost_of(amqp_uri)
    events.listen("customer_sync", "api_key.revoked")
    gateways = TwoGateways(services, broker_admin, vhost, user, uri_b)
    victim = gateways.victim
    assert gateways.status(gateways.url_b, victim) == 200  # now in b's cache
    assert len(gateways.broadcast_queues()) == 2

    def cut_off() -> bool:
        """Close b's connections (the management API lists a new one within seconds) until
        none is left and b's broadcast queue is gone with them."""
        connections = broker_admin.connections(vhost, user)
        for name in connections:
            broker_admin.close_connection(name)
        return not connections and len(gateways.broadcast_queues()) == 1

    broker_admin.clear_permissions(vhost, user)  # so b cannot reconnect
    try:
        wait_until(cut_off, timeout=30, interval=0.5, message="b cut off from the broker")
        gateways.revoke_through_a(victim)
        events.wait_for(lambda received: any(e["data"]["key_id"] == victim["key_id"]
                                             for e in received), timeout=15)
    finally:  # b must be able to reconnect, or its container cannot stop
        broker_admin.set_permissions(vhost, user=user)
    wait_until(lambda: len(gateways.broadcast_queues()) == 2, timeout=60,
               message="b consuming broadcasts again")
    # as soon as b answers again, long before its ten-minute cache would have expired
    assert wait_until(lambda: gateways.answer_of_b(victim), timeout=60,
                      message="b answering again") == 401


def test_a_gateway_whose_broadcast_connection_is_down_checks_every_key_uncached(
        user_b, services, broker_admin, amqp_uri):
    """Only b's broadcast connection is down, its RPCs still work: the test holds the name of
    b's exclusive broadcast queue, so b cannot declare it again. A key revoked meanwhile is
    refused by b at once, although b never hears of it and cached it for ten minutes."""
    user, uri_b = user_b
    vhost = vhost_of(amqp_uri)
    gateways = TwoGateways(services, broker_admin, vhost, user, uri_b)
    victim = gateways.victim
    assert gateways.status(gateways.url_b, victim) == 200  # now in b's cache

    def queue_of_b() -> str | None:
        for name in gateways.broadcast_queues():
            if any(c.get("user") == user for c in broker_admin.queue_consumers(vhost, name)):
                return name
        return None

    queue = wait_until(queue_of_b, timeout=30, interval=0.5, message="b's broadcast queue")
    [connection] = {c["connection_name"] for c in broker_admin.queue_consumers(vhost, queue)}
    squatter = Connection(services.amqp_uri)
    broker_admin.clear_permissions(vhost, user)  # b cannot reconnect until the name is held
    try:
        broker_admin.close_connection(connection)
        wait_until(lambda: queue not in gateways.broadcast_queues(), timeout=30,
                   message="b's broadcast queue gone")
        Queue(queue, exclusive=True, auto_delete=True).bind(squatter.default_channel).declare()
    finally:
        broker_admin.set_permissions(vhost, user=user)
    try:
        gateways.revoke_through_a(victim)
        assert wait_until(lambda: gateways.answer_of_b(victim), timeout=60,
                          message="b answering") == 401
    finally:
        squatter.release()
    wait_until(queue_of_b, timeout=60, interval=0.5, message="b consuming broadcasts again")
