"""Hostile webhook bodies, correctly signed (a leaked secret, or a buggy plugin in the shop).

The door used to answer 200 for any signed JSON object with an id, and the workers then
dropped what they could not read with an ERROR line: WooCommerce never sends a delivery again,
so that was silent loss. Now what applying would refuse is refused before answering, with a
400 naming the field and nothing recorded; what still fails when applied is quarantined
(tests/security/test_webhook_quarantine.py).
"""
from __future__ import annotations

import json

import pytest

from devdoubles import mongomock_adapter
from services.customer_sync.repository import CustomerSyncStorage
from services.customer_sync.door.signature import sign
from services.customer_sync.core.stores import StoreAdmin
from services.customer_sync.door.webhooks import WebhookReceiver
from tests import payloads

SECRET = "whsec-security-123"
STORE = "s1"


@pytest.fixture
def storage():
    s = CustomerSyncStorage(mongomock_adapter.client().db)
    s.ensure_indexes()
    StoreAdmin(s, default_reconcile_minutes=10).register({
        "store_id": STORE, "shop_url": "https://shop.example", "webhook_secret": SECRET,
        "consumer_key": "ck_1", "consumer_secret": "cs_1"})
    return s


def deliver(storage, topic: str, body: bytes):
    headers = {"X-WC-Webhook-Topic": topic, "X-WC-Webhook-Signature": sign(body, SECRET)}
    return WebhookReceiver(storage, 1 << 20).receive(STORE, headers, body)


def order_body(**overrides) -> bytes:
    return json.dumps(payloads.order(7, **overrides)).encode()


def with_raw(field: str, literal: str) -> bytes:
    """An order whose `field` is the JSON literal given (NaN, Infinity, 1e400: what
    json.dumps would not write)."""
    return order_body(**{field: "@@"}).replace(b'"@@"', literal.encode())


def line_item(**overrides) -> dict:
    return {**payloads.order(7)["line_items"][0], **overrides}


REFUSED_ORDERS = {
    "total-NaN-string": (order_body(total="NaN"), "total"),
    "total-NaN-literal": (with_raw("total", "NaN"), "total"),
    "total-Infinity-string": (order_body(total="Infinity"), "total"),
    "total-Infinity-literal": (with_raw("total", "-Infinity"), "total"),
    "total-1e400-string": (order_body(total="1e400"), "total"),
    "total-1e400-number": (with_raw("total", "1e400"), "total"),
    "total-huge-integer": (with_raw("total", "9" * 5000), "total"),
    "total-abc": (order_body(total="abc"), "total"),
    "total-negative": (order_body(total="-49.90"), "total"),
    "total-an-object": (with_raw("total", '{"amount": 1}'), "total"),
    "discount-negative": (order_body(discount_total="-1.00"), "discount_total"),
    "shipping-negative": (order_body(shipping_total="-4.90"), "shipping_total"),
    "tax-NaN": (order_body(total_tax="nan"), "total_tax"),
    "currency-long": (order_body(currency="EURO"), "currency"),
    "currency-empty": (order_body(currency=""), "currency"),
    "currency-digits": (order_body(currency="E1R"), "currency"),
    "currency-number": (with_raw("currency", "978"), "currency"),
    "status-unknown": (order_body(status="stolen"), "status"),
    "line_items-a-string": (order_body(line_items="tea x3"), "line_items"),
    "line_items-of-strings": (order_body(line_items=["tea"]), "line_items[0]"),
    "line_item-quantity": (order_body(line_items=[line_item(quantity="many")]),
                           "line_items[0].quantity"),
    "line_item-total-negative": (order_body(line_items=[line_item(), line_item(total="-45.00")]),
                                 "line_items[1].total"),
    "refunds-a-string": (order_body(refunds="all"), "refunds"),
    "refund-total-abc": (order_body(refunds=[{"id": 1, "total": "abc"}]), "refunds[0].total"),
    "customer_id-text": (order_body(customer_id="someone"), "customer_id"),
    "date-not-a-date": (order_body(date_modified_gmt="yesterday"), "date_modified_gmt"),
}


@pytest.mark.parametrize("body,field", REFUSED_ORDERS.values(), ids=REFUSED_ORDERS.keys())
@pytest.mark.parametrize("topic", ["order.created", "order.updated", "order.restored"])
def test_an_order_it_would_never_apply_is_refused_naming_the_field(storage, topic, body, field):
    answer = deliver(storage, topic, body)
    assert (answer.status, answer.body["status"], answer.body["field"]) == (
        400, "invalid body", field)
    assert field in answer.body["detail"]
    assert storage.inbox.collection.count_documents({}) == 0


@pytest.mark.parametrize("body,field", [
    (json.dumps(payloads.customer(date_modified_gmt=5)).encode(), "date_modified_gmt"),
    (json.dumps(payloads.customer(date_created_gmt="2026-02-30T00:00:00")).encode(),
     "date_created_gmt"),
], ids=["modified-a-number", "created-not-a-day"])
def test_a_customer_it_would_never_apply_is_refused_naming_the_field(storage, body, field):
    answer = deliver(storage, "customer.updated", body)
    assert (answer.status, answer.body["field"]) == (400, field)
    assert storage.inbox.collection.count_documents({}) == 0


@pytest.mark.parametrize("literal", [
    '"abc"', "-1", "0", "1.5", "true", "null", "1e400", "NaN", "9" * 5000, "-" + "9" * 5000,
    str(2 ** 63), "[7]",
])
@pytest.mark.parametrize("topic", ["order.updated", "order.deleted", "customer.created"])
def test_an_invalid_id_is_called_an_invalid_id_not_malformed_json(storage, topic, literal):
    body = b'{"id": ' + literal.encode() + b', "status": "processing", "currency": "EUR"}'
    answer = deliver(storage, topic, body)
    assert (answer.status, answer.body["status"], answer.body["field"]) == (400, "invalid id", "id")
    assert storage.inbox.collection.count_documents({}) == 0


def test_what_woocommerce_really_sends_is_still_accepted(storage):
    """Refund totals are negative strings; a guest order has customer_id 0; a deleted body is
    only its id; an empty line_items list is an order without lines."""
    accepted = [
        deliver(storage, "order.updated", order_body(refunds=[{"id": 3, "reason": "",
                                                               "total": "-10.00"}])),
        deliver(storage, "order.created", json.dumps(payloads.order(8, customer_id=0)).encode()),
        deliver(storage, "order.created", json.dumps(payloads.order(9, line_items=[])).encode()),
        deliver(storage, "order.deleted", b'{"id": 10}'),
        deliver(storage, "customer.deleted", b'{"id": 11}'),
        deliver(storage, "order.updated", json.dumps(payloads.order(12, currency="jpy",
                                                                    total="1200")).encode()),
    ]
    assert [(a.status, a.body["status"]) for a in accepted] == [(200, "accepted")] * 6
    assert storage.inbox.collection.count_documents({}) == 6
