"""Console sessions must be revocable on the server: a cookie copied before sign-out (or before
its key was revoked) must neither open a page nor post a form, on any gateway instance.

Two gateway instances (their own GatewayApp, key cache and ConsoleApp, one
CONSOLE_SESSION_SECRET, as deployed) in front of customer_sync's real RPC methods and storage
(mongomock); the other services are the console tests' stand-ins."""
from __future__ import annotations

import re

import pytest
import requests
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
from services.gateway.console.app import COOKIE_NAME, ConsoleApp
from services.gateway.ratelimit import RateLimiter
from services.gateway.routes import build_routes
from services.gateway.routing import Router
from services.gateway.service import GatewayService
from shared.config import Config
from tests.support import free_port
from tests.unit.test_console import Gdpr, Loyalty, Notifications, Proxy, Segmentation

STORE = "shop"


class Outbox:
    """customer_sync's outbox relay, as far as its RPC methods see it."""

    def __init__(self) -> None:
        self.notified: list = []

    def notify(self, refs) -> None:
        self.notified.extend(refs)


def customer_sync() -> CustomerSyncService:
    """customer_sync's RPC methods with their real storage, called in process."""
    service = CustomerSyncService()
    service.app = build(mongomock_adapter.client()["customer_sync"],
                        Config({}, registry.settings(["customer_sync"])))
    service.app.ensure_indexes()
    service.outbox = Outbox()
    service.storage.stores.save(Store(STORE, "https://shop.example", "whsec-123456789",
                                      "ck_x", "cs_x"))
    return service


class Gateway:
    """One gateway instance: its own key cache (30 s, as by default) and console."""

    def __init__(self, backends: Backends) -> None:
        config = Config({}, registry.settings(),
                        CONSOLE_SESSION_SECRET="a-shared-console-secret-0123456789")
        app = GatewayApp(Router(build_routes()), Authenticator(30), RateLimiter(600),
                         max_body_bytes=1 << 20)
        self.console = ConsoleApp(app, config)
        self.backends = backends

    def wsgi(self, environ, start_response):
        return self.console.handle(Request(environ), self.backends)(environ, start_response)

    def browser(self, cookie: str | None = None) -> Client:
        client = Client(self.wsgi)
        if cookie is not None:
            client.set_cookie(COOKIE_NAME, cookie, path="/console")
        return client


class Deployment:
    def __init__(self) -> None:
        self.calls: list = []
        self.customer_sync = customer_sync()
        services = [self.customer_sync, Segmentation(), Loyalty(), Notifications(), Gdpr()]
        backends = Backends({name: Proxy(s, self.calls) for name, s in zip(
            ("customer_sync", "segmentation", "loyalty", "notifications", "gdpr"), services)}, 5)
        self.a, self.b = Gateway(backends), Gateway(backends)

    def key(self, *scopes: str) -> dict:
        return self.customer_sync.create_api_key(STORE, "console", list(scopes), "test")

    def called(self, method: str) -> list:
        return [c for c in self.calls if c[1] == method]


@pytest.fixture
def deployment():
    return Deployment()


def csrf_of(browser: Client, url: str) -> str:
    page = browser.get(url, follow_redirects=True).get_data(as_text=True)
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def sign_in(browser: Client, api_key: str) -> str:
    """Sign in; the session cookie as the browser then holds it."""
    answer = browser.post("/console/login", data={
        "api_key": api_key, "csrf_token": csrf_of(browser, "/console/login"),
        "next": "/console/customers"})
    assert answer.status_code == 303 and answer.headers["Location"] == "/console/customers"
    return browser.get_cookie(COOKIE_NAME, path="/console").value


def opens(browser: Client, url: str = "/console/customers") -> bool:
    answer = browser.get(url)
    if answer.status_code == 303:
        assert answer.headers["Location"].startswith("/console/login")
        return False
    assert answer.status_code == 200, answer.status_code
    return True


def posts_a_note(browser: Client, csrf_token: str) -> bool:
    """A console form sent with the given token; True when the console acted on it."""
    answer = browser.post("/console/customers/c1/notes",
                          data={"category": "general", "text": "from a copied cookie",
                                "csrf_token": csrf_token})
    assert answer.status_code in (303, 403), answer.status_code
    return answer.status_code == 303 and not answer.headers["Location"].startswith(
        "/console/login")


def test_a_cookie_copied_before_sign_out_opens_nothing_on_any_gateway(deployment):
    victim = deployment.a.browser()
    copied = sign_in(victim, deployment.key("write")["api_key"])
    csrf_token = csrf_of(victim, "/console/customers/c1")
    thief_a, thief_b = deployment.a.browser(copied), deployment.b.browser(copied)
    assert opens(thief_a) and opens(thief_b)  # the copy works while the session is open

    signed_out = victim.post("/console/logout", data={"csrf_token": csrf_token})
    assert signed_out.status_code == 303 and signed_out.headers["Location"] == "/console/login"

    assert not opens(deployment.a.browser(copied))
    assert not opens(deployment.b.browser(copied), "/console/customers/c1")
    assert not posts_a_note(deployment.a.browser(copied), csrf_token)
    assert not posts_a_note(deployment.b.browser(copied), csrf_token)
    assert deployment.called("add_note") == []


def test_revoking_the_key_ends_every_session_opened_with_it(deployment):
    key = deployment.key("write")
    on_a, on_b = deployment.a.browser(), deployment.b.browser()
    sign_in(on_a, key["api_key"])
    sign_in(on_b, key["api_key"])
    csrf_token = csrf_of(on_b, "/console/customers/c1")
    assert opens(on_a) and opens(on_b)  # both gateways now hold the key in their caches

    deployment.customer_sync.revoke_api_key(STORE, key["key_id"], "cli:ops")

    assert not opens(on_a)
    assert not posts_a_note(on_b, csrf_token)
    assert deployment.called("add_note") == []
    # and the key cannot open a new one
    answer = on_a.post("/console/login", data={
        "api_key": key["api_key"], "csrf_token": csrf_of(on_a, "/console/login")})
    assert answer.status_code == 401


def test_signing_in_again_ends_the_session_it_replaces(deployment):
    browser = deployment.a.browser()
    first = sign_in(browser, deployment.key("read")["api_key"])
    sign_in(browser, deployment.key("read")["api_key"])
    assert opens(browser)
    assert not opens(deployment.b.browser(first))


def test_a_forged_or_stale_session_token_is_refused_by_the_key_owner(deployment):
    owner = deployment.customer_sync
    opened = owner.open_console_session(deployment.key("read")["api_key"], 60, 3600)
    session_id = opened["session_id"]
    for forged in ("", None, 42, "wcs_" + session_id + "_" + "x" * 43, opened["session"] + "x",
                   "wcs_" + "0" * 32 + "_" + opened["session"][-43:]):
        with pytest.raises(Exception) as refused:
            owner.console_session(forged)
        assert type(refused.value).__name__ == "NotFound"
    assert owner.console_session(opened["session"])["key"]["store_id"] == STORE
    stored = owner.storage.console_sessions.collection.find_one({"_id": session_id})
    assert opened["session"][-43:] not in str(stored)  # only a hash of the secret


def test_signing_out_on_one_real_gateway_ends_the_copied_cookie_on_another(services):
    """Two gateway instances and customer_sync on the real broker."""
    services.start(CustomerSyncService, RECONCILE_POLL_SECONDS="3600")
    ports = [free_port(), free_port()]
    for port in ports:
        services.start(GatewayService, WEB_SERVER_ADDRESS=f"127.0.0.1:{port}",
                       CONSOLE_SESSION_SECRET="a-shared-console-secret-0123456789",
                       GATEWAY_RPC_TIMEOUT_SECONDS="5")
    url_a, url_b = (f"http://127.0.0.1:{port}/console" for port in ports)
    with ClusterRpcProxy({"AMQP_URI": services.amqp_uri}, timeout=30) as rpc:
        rpc.customer_sync.register_store({
            "store_id": STORE, "shop_url": "https://shop.example", "webhook_secret": "whsec-1234",
            "consumer_key": "ck_x", "consumer_secret": "cs_x"})
        key = rpc.customer_sync.create_api_key(STORE, "desk", ["admin"], "test")

    def csrf(browser: requests.Session, url: str) -> str:
        page = browser.get(url, timeout=10).text
        return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)

    def opens(cookie: str, url: str) -> bool:
        """Signed in: the sign-in page sends you on; signed out, it asks for a key."""
        answer = requests.get(f"{url}/login", cookies={COOKIE_NAME: cookie},
                              allow_redirects=False, timeout=10)
        assert answer.status_code in (200, 303), answer.status_code
        return answer.status_code == 303

    victim = requests.Session()
    signed_in = victim.post(f"{url_a}/login", timeout=10, allow_redirects=False, data={
        "api_key": key["api_key"], "csrf_token": csrf(victim, f"{url_a}/login")})
    assert signed_in.status_code == 303, signed_in.text
    copied = victim.cookies[COOKIE_NAME]
    assert opens(copied, url_a) and opens(copied, url_b)
    signed_out = victim.post(f"{url_a}/logout", timeout=10, allow_redirects=False,
                             data={"csrf_token": csrf(victim, f"{url_a}/reports")})
    assert signed_out.status_code == 303
    assert not opens(copied, url_b) and not opens(copied, url_a)
