"""Store registration rules and the webhook door's decisions, without a broker."""
from __future__ import annotations

import json

import pytest

from devdoubles import mongomock_adapter
from services.customer_sync.repository import CustomerSyncStorage, Store
from services.customer_sync.door.signature import sign
from services.customer_sync.core.stores import StoreAdmin
from services.customer_sync.door.webhooks import WebhookReceiver
from shared.errors import ValidationError
from tests import payloads

SECRET = "whsec-unit-123"


@pytest.fixture
def storage():
    s = CustomerSyncStorage(mongomock_adapter.client().db)
    s.ensure_indexes()
    StoreAdmin(s, default_reconcile_minutes=10).register({
        "store_id": "s1", "shop_url": "https://shop.example", "webhook_secret": SECRET,
        "consumer_key": "ck_1", "consumer_secret": "cs_1"})
    return s


def headers(topic: str, body: bytes, secret: str = SECRET) -> dict:
    return {"X-WC-Webhook-Topic": topic, "X-WC-Webhook-Signature": sign(body, secret)}


def test_store_secrets_never_show_in_repr_or_public_view(storage):
    store = storage.stores.get("s1")
    for text in (repr(store), json.dumps(store.public())):
        assert SECRET not in text and "cs_1" not in text and "ck_1" not in text


@pytest.mark.parametrize("url,ok", [
    ("https://shop.example", True), ("http://127.0.0.1:8080/", True), ("http://localhost/", True),
    ("http://shop.example", False), ("ftp://shop.example", False), ("not a url", False),
])
def test_shop_urls_must_be_https_except_to_this_machine(storage, url, ok):
    admin = StoreAdmin(storage, default_reconcile_minutes=10)
    store = {"store_id": "s2", "shop_url": url, "webhook_secret": SECRET,
             "consumer_key": "ck", "consumer_secret": "cs"}
    if ok:
        assert admin.register(store)["shop_url"].startswith(url.rstrip("/"))
    else:
        with pytest.raises(ValidationError) as info:
            admin.register(store)
        assert "shop_url" in str(info.value.details)


def test_store_ids_and_secrets_are_validated_with_field_names(storage):
    with pytest.raises(ValidationError) as info:
        StoreAdmin(storage, default_reconcile_minutes=10).register({
            "store_id": "Bad Id!", "shop_url": "https://x.example", "webhook_secret": "short"})
    fields = info.value.details["fields"]
    assert {"store_id", "webhook_secret", "consumer_key", "consumer_secret"} <= set(fields)


def test_registering_again_without_a_country_keeps_the_saved_one(storage):
    admin = StoreAdmin(storage, default_reconcile_minutes=10)
    store = {"store_id": "s3", "shop_url": "https://shop.example", "webhook_secret": SECRET,
             "consumer_key": "ck", "consumer_secret": "cs"}
    assert admin.register({**store, "country": "de"})["country"] == "DE"
    assert admin.register({**store, "consumer_secret": "cs-2"})["country"] == "DE"
    assert admin.register({**store, "country": "AT"})["country"] == "AT"
    assert storage.stores.get("s3").country == "AT"


def test_unsupported_topic_is_answered_200_whatever_its_body(storage):
    body = b'{"action": "woocommerce_something", "arg": 1}'  # no id: an action webhook
    answer = WebhookReceiver(storage, 1024).receive("s1", headers("action.woocommerce_x", body), body)
    assert (answer.status, answer.body["status"]) == (200, "ignored")
    assert storage.inbox.collection.count_documents({}) == 0


def test_same_state_twice_is_recorded_once_whatever_the_delivery_id(storage):
    body = json.dumps(payloads.order(7)).encode()
    receiver = WebhookReceiver(storage, 1 << 20)
    first = receiver.receive("s1", {**headers("order.updated", body), "X-WC-Webhook-Delivery-ID": "a"}, body)
    second = receiver.receive("s1", {**headers("order.updated", body), "X-WC-Webhook-Delivery-ID": "b"}, body)
    assert (first.body["status"], second.body["status"]) == ("accepted", "duplicate")
    changed = json.dumps(payloads.order(7, status="completed")).encode()
    third = receiver.receive("s1", {**headers("order.updated", changed), "X-WC-Webhook-Delivery-ID": "a"},
                             changed)
    assert third.body["status"] == "accepted"  # same delivery id, different change
    assert storage.inbox.collection.count_documents({}) == 2


def test_repeated_trash_of_the_same_order_in_different_seconds_is_two_changes(storage):
    body = b'{"id": 7}'
    receiver = WebhookReceiver(storage, 1024)
    one = receiver.receive("s1", {**headers("order.deleted", body), "X-WC-Webhook-Delivery-ID": "t1"}, body)
    two = receiver.receive("s1", {**headers("order.deleted", body), "X-WC-Webhook-Delivery-ID": "t2"}, body)
    again = receiver.receive("s1", {**headers("order.deleted", body), "X-WC-Webhook-Delivery-ID": "t2"}, body)
    assert [a.body["status"] for a in (one, two, again)] == ["accepted", "accepted", "duplicate"]


# Found by tests/integration/test_fuzz_webhooks.py: each of these bodies answered 500.
@pytest.mark.parametrize("body", [
    b'{"id": 5, "x": ' + b"[" * 5000 + b"1" + b"]" * 5000 + b"}",  # RecursionError in json
    b'{"id": 5, "total": ' + b"9" * 5000 + b"}",  # ValueError: more than 4,300 digits
    b'{"id": ' + str(2 ** 63).encode() + b"}",  # OverflowError writing it to MongoDB
    b'{"id": 6, "email": "\\ud800"}',  # a lone surrogate: no UTF-8 (nor BSON) can hold it
], ids=["deep", "long-number", "id-over-8-bytes", "lone-surrogate"])
def test_signed_bodies_that_cannot_be_stored_are_refused_with_400(storage, body):
    answer = WebhookReceiver(storage, 1 << 20).receive("s1", headers("order.created", body), body)
    assert answer.status == 400
    assert storage.inbox.collection.count_documents({}) == 0


def test_surrogate_pairs_and_the_largest_id_are_accepted(storage):
    body = b'{"id": ' + str(2 ** 63 - 1).encode() + b', "first_name": "\\ud83d\\ude00"}'
    answer = WebhookReceiver(storage, 1 << 20).receive("s1", headers("customer.created", body), body)
    assert (answer.status, answer.body["status"]) == (200, "accepted")
