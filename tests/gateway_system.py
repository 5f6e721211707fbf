"""The whole system behind the gateway, for end-to-end tests over HTTP: every service on the
real broker, a fake WooCommerce shop, and a client that checks answers against the OpenAPI
document. Test modules import the `shop` and `system` fixtures from here."""
from __future__ import annotations

import json
from contextlib import contextmanager

import pytest
import requests
from nameko.standalone.rpc import ClusterRpcProxy

from services.customer_sync.service import CustomerSyncService
from services.customer_sync.door.signature import sign
from services.gateway.service import GatewayService
from services.gdpr.service import GdprService
from services.loyalty.service import LoyaltyService
from services.notifications.service import NotificationsService
from services.segmentation.service import SegmentationService
from demo.shop import FakeWooShop
from tests.gateway_client import GatewayClient, OpenApiChecker
from tests.support import free_port, wait_until

STORE = "gw"
SECRET = "whsec-gateway-12345"


class System:
    def __init__(self, services, rpc, gateway_url: str, shop: FakeWooShop) -> None:
        self.shop = shop
        self.services = services
        self.rpc = rpc
        self.gateway_url = gateway_url
        document = requests.get(gateway_url + "/api/v1/openapi.json", timeout=10).json()
        self.checker = OpenApiChecker(document)

    def client(self, *scopes: str, **key_options) -> GatewayClient:
        key = self.rpc.customer_sync.create_api_key(STORE, f"test {'+'.join(scopes)}",
                                                    list(scopes), "test", **key_options)
        return GatewayClient(self.gateway_url, key["api_key"], self.checker)

    def anonymous(self) -> GatewayClient:
        return GatewayClient(self.gateway_url, None, self.checker)

    def shop_customer(self, orders: int = 1) -> tuple[dict, str]:
        """A customer (and orders) made at the fake shop and delivered here by webhook."""
        woo = self.shop.add_customer()
        self.webhook("customer.created", self.shop.webhook_body("customer.created", woo["id"]))
        for _ in range(orders):
            order = self.shop.add_order(customer_id=woo["id"])
            self.webhook("order.created", self.shop.webhook_body("order.created", order["id"]))

        def known():
            try:
                customer_id = self.rpc.customer_sync.find_customer(STORE, woo["email"])[
                    "customer_id"]
                profile = self.rpc.segmentation.get_profile(STORE, customer_id)
                return customer_id if (profile["stats"] or {}).get("orders_count") == orders \
                    else None
            except Exception:
                return None

        return woo, wait_until(known, timeout=20, message="the shop's customer here")

    def webhook(self, topic: str, body: dict | bytes) -> None:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        r = requests.post(f"{self.services.web_url}/webhooks/woocommerce/{STORE}", data=raw,
                          timeout=10, headers={"X-WC-Webhook-Topic": topic,
                                               "X-WC-Webhook-Signature": sign(raw, SECRET)})
        assert r.status_code == 200, r.text


@pytest.fixture
def shop():
    with FakeWooShop(seed=11) as shop:
        yield shop


@contextmanager
def running_system(services, shop, notifications: dict | None = None,
                   gdpr_service: type = GdprService):
    """The system started: `notifications` adds settings (an SMTP server, say); a test that
    needs time to pass for GDPR requests passes a gdpr service class with a settable clock."""
    services.start(SegmentationService)
    services.start(LoyaltyService)
    notifications_port = free_port()
    services.start(NotificationsService, WEB_SERVER_ADDRESS=f"127.0.0.1:{notifications_port}",
                   **{"NOTIFY_PUBLIC_URL": f"http://127.0.0.1:{notifications_port}",
                      **(notifications or {})})
    services.start(CustomerSyncService, RECONCILE_POLL_SECONDS="3600", WOO_MAX_RETRIES="1",
                   TIMELINE_SWEEP_SECONDS="0.2")
    services.start(gdpr_service, GDPR_PROCESS_SECONDS="0.3", GDPR_RETRY_SECONDS="0.5")
    gateway_port = free_port()
    # Tests send unknown keys from one address on purpose (tests/security/test_auth_throttle.py
    # is where failed keys are throttled).
    services.start(GatewayService, WEB_SERVER_ADDRESS=f"127.0.0.1:{gateway_port}",
                   GATEWAY_KEY_CACHE_SECONDS="0", GATEWAY_RPC_TIMEOUT_SECONDS="5",
                   GATEWAY_AUTH_FAILURES_PER_MINUTE="0")
    with ClusterRpcProxy({"AMQP_URI": services.amqp_uri}, timeout=30) as rpc:
        rpc.customer_sync.register_store({
            "store_id": STORE, "shop_url": shop.base_url, "webhook_secret": SECRET,
            "consumer_key": shop.consumer_key, "consumer_secret": shop.consumer_secret})
        yield System(services, rpc, f"http://127.0.0.1:{gateway_port}", shop)


@pytest.fixture
def system(services, shop):
    with running_system(services, shop) as running:
        yield running
