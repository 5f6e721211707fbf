"""Guessing API keys, attacked: every failed key check cost a lookup (an RPC to customer_sync),
and distinct bad keys ran as fast as a client could send them (158 a second). Failures are
now counted per client address: once an address has spent its allowance it is answered 429
with Retry-After before its next key is looked up, until the allowance refills."""
from __future__ import annotations

import pytest
import requests
from nameko.standalone.rpc import ClusterRpcProxy
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from services.customer_sync.service import CustomerSyncService
from services.gateway.app import GatewayApp
from services.gateway.auth import Authenticator
from services.gateway.ratelimit import FailureThrottle, RateLimiter
from services.gateway.routes import build_routes
from services.gateway.routing import Router
from services.gateway.service import GatewayService
from tests.security.test_scopes import RecordingBackends
from tests.support import free_port

ATTACKER, BYSTANDER = "192.0.2.66", "198.51.100.7"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_app(clock: Clock, per_minute: int = 5) -> GatewayApp:
    return GatewayApp(Router(build_routes()), Authenticator(0, clock), RateLimiter(10 ** 6, clock),
                      max_body_bytes=1 << 20, auth_failures=FailureThrottle(per_minute, clock))


def send(app: GatewayApp, key: str | None, address: str):
    backends = RecordingBackends({"good": ("read",)})
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    environ = EnvironBuilder(path="/api/v1/tags", headers=headers,
                             environ_base={"REMOTE_ADDR": address}).get_environ()
    return app.handle(Request(environ), backends), len(backends.calls)


def test_an_address_that_keeps_failing_is_refused_before_its_next_lookup():
    clock = Clock()
    app = make_app(clock, per_minute=5)
    for n in range(5):
        response, lookups = send(app, f"wcc_guess_{n}", ATTACKER)
        assert (response.status_code, lookups) == (401, 1)
    refused, lookups = send(app, "wcc_guess_5", ATTACKER)
    assert refused.status_code == 429 and lookups == 0
    assert refused.mimetype == "application/problem+json"
    assert int(refused.headers["Retry-After"]) == 12  # 5 a minute: one every 12 s
    # The throttle is the address's: another client is not held back by it.
    assert send(app, "good", BYSTANDER)[0].status_code not in (401, 429)
    assert send(app, "wcc_guess_6", BYSTANDER)[0].status_code == 401
    # Once the allowance refills, one more try is looked up.
    clock.now += 12
    response, lookups = send(app, "wcc_guess_7", ATTACKER)
    assert (response.status_code, lookups) == (401, 1)
    assert send(app, "wcc_guess_8", ATTACKER)[0].status_code == 429


def test_requests_without_a_key_cost_no_lookup_and_are_not_counted():
    app = make_app(Clock(), per_minute=2)
    for _ in range(10):
        response, lookups = send(app, None, ATTACKER)
        assert (response.status_code, lookups) == (401, 0)
    assert send(app, "good", ATTACKER)[0].status_code not in (401, 429)


def test_zero_turns_the_throttle_off():
    app = make_app(Clock(), per_minute=0)
    assert all(send(app, f"wcc_guess_{n}", ATTACKER)[0].status_code == 401 for n in range(50))


@pytest.fixture
def gateway_url(services) -> str:
    services.start(CustomerSyncService)
    port = free_port()
    services.start(GatewayService, WEB_SERVER_ADDRESS=f"127.0.0.1:{port}",
                   GATEWAY_AUTH_FAILURES_PER_MINUTE="3")
    with ClusterRpcProxy({"AMQP_URI": services.amqp_uri}, timeout=20) as rpc:
        rpc.customer_sync.register_store({
            "store_id": "throttled", "shop_url": "https://shop.example",
            "webhook_secret": "whsec-throttled-1", "consumer_key": "ck", "consumer_secret": "cs"})
    return f"http://127.0.0.1:{port}"


def test_over_http_the_setting_limits_failed_keys(gateway_url):
    statuses = [requests.get(gateway_url + "/api/v1/tags", timeout=10,
                             headers={"Authorization": f"Bearer wcc_guess_{n}"}).status_code
                for n in range(4)]
    assert statuses == [401, 401, 401, 429]
