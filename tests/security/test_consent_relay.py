"""A consent change takes effect before the next send decision.

A customer who just agreed must not be refused marketing, and one who just withdrew must not
keep receiving it, for the length of an outbox sweep. gdpr runs here with its safety-net sweep
an hour apart, so only a relay told at once by the write can deliver the change in time.
"""
from __future__ import annotations

import json
import time

import pytest
import requests
from nameko.standalone.rpc import ClusterRpcProxy

from services.customer_sync.service import CustomerSyncService
from services.customer_sync.signature import sign
from services.gdpr.service import GdprService
from services.notifications.service import NotificationsService
from tests import payloads
from tests.support import free_port, wait_until

STORE = "consent-relay"
SECRET = "whsec-consent-relay-1"
WELL_UNDER_A_SECOND = 1.0
NO_SWEEP = dict(OUTBOX_SWEEP_SECONDS="3600")  # the sweep cannot be what delivers the change


@pytest.fixture
def rpc(services):
    services.start(NotificationsService, WEB_SERVER_ADDRESS=f"127.0.0.1:{free_port()}")
    services.start(CustomerSyncService, RECONCILE_POLL_SECONDS="3600")
    services.start(GdprService, GDPR_PROCESS_SECONDS="3600", **NO_SWEEP)
    with ClusterRpcProxy({"AMQP_URI": services.amqp_uri}, timeout=30) as proxy:
        proxy.customer_sync.register_store({
            "store_id": STORE, "shop_url": "https://shop.example", "webhook_secret": SECRET,
            "consumer_key": "ck", "consumer_secret": "cs"})
        yield proxy


def a_known_customer(services, rpc) -> str:
    raw = json.dumps(payloads.customer(woo_id=77, email="grace@navy.example")).encode()
    answer = requests.post(f"{services.web_url}/webhooks/woocommerce/{STORE}", data=raw,
                           timeout=10, headers={"X-WC-Webhook-Topic": "customer.created",
                                                "X-WC-Webhook-Signature": sign(raw, SECRET)})
    assert answer.status_code == 200, answer.text
    customer_id = wait_until(lambda: _customer_id(rpc), timeout=15, message="the customer")
    wait_until(lambda: rpc.notifications.export_customer(STORE, customer_id)["contact"].get("email"),
               timeout=15, message="notifications to know the contact")
    return customer_id


def _customer_id(rpc) -> str | None:
    try:
        return rpc.customer_sync.find_customer(STORE, "grace@navy.example")["customer_id"]
    except Exception:
        return None


def _email_consent(rpc, customer_id: str):
    contact = rpc.notifications.export_customer(STORE, customer_id)["contact"]
    return (contact.get("consent") or {}).get("email_marketing", {}).get("granted")


@pytest.mark.parametrize("granted", [True, False], ids=["agreed", "withdrew"])
def test_a_consent_change_reaches_notifications_well_under_a_second(services, rpc, granted):
    customer_id = a_known_customer(services, rpc)
    if not granted:  # a withdrawal needs an agreement before it
        rpc.gdpr.set_consent(STORE, customer_id, "email_marketing", True, "checkout", "shop")
        wait_until(lambda: _email_consent(rpc, customer_id) is True, timeout=5,
                   message="the first agreement to arrive")

    started = time.monotonic()
    rpc.gdpr.set_consent(STORE, customer_id, "email_marketing", granted, "operator", "ops@shop")
    wait_until(lambda: _email_consent(rpc, customer_id) is granted, timeout=5,
               message="notifications to hear the consent change")
    elapsed = time.monotonic() - started

    assert elapsed < WELL_UNDER_A_SECOND, f"the change took {elapsed:.2f}s to reach notifications"
