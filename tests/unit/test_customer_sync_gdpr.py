"""customer_sync's GDPR side without a broker: tombstones, anonymisation, WooCommerce's own
privacy eraser, the personal-data scanner, erasure and rectification on an in-memory MongoDB."""
from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from types import SimpleNamespace

import pytest
from nameko.testing.services import worker_factory

from devdoubles import mongomock_adapter
from services.customer_sync.privacy.anonymise import (
    anonymise_order_snapshot,
    is_blank_customer,
    is_placeholder,
    is_shop_erasure,
    redact_customer_payload,
    redact_order_payload,
    redact_payload,
)
from services.customer_sync.privacy.erasure import (
    CustomerErasure,
    shop_erasures,
    tombstone_holds,
)
from services.customer_sync.service import CustomerSyncService
from shared.personal_data import search, search_personal_data, search_terms, value_mentions
from services.customer_sync.door.inbox import InboxProcessor
from services.customer_sync.core.normalise import normalise_customer, normalise_order, order_content_hash
from services.customer_sync.privacy.rectify import (
    Rectifier,
    guest_fields,
    load_correction,
    shop_customer_update,
)
from services.customer_sync.repository import CustomerSyncStorage, Store
from services.customer_sync.core.sync import CustomerSync
from services.customer_sync.crm.timeline import TIMELINE_FIELD
from services.customer_sync.privacy.tombstones import (
    EMAIL,
    WOO_CUSTOMER,
    TombstoneKeys,
    tombstone_digest,
    tombstone_values,
)
from services.customer_sync.door.webhooks import delivery_key
from shared.errors import Conflict, NotFound, ValidationError
from shared.events import build_event
from shared.outbox import OUTBOX_FIELD
from tests import payloads
from tests.support import Clock

STORE = "s1"
# Everything personal the test person is made of (payloads.customer / payloads.order).
PERSONAL = ["ada@example.com", "Ada", "Lovelace", "+4400000001", "1 Way", "N1"]


@pytest.fixture
def storage():
    s = CustomerSyncStorage(mongomock_adapter.client()["customer_sync"])
    s.ensure_indexes()
    s.stores.save(Store(STORE, "https://shop.example/", "whsec-12345678", "ck", "cs"))
    return s


@pytest.fixture
def sync(storage):
    return CustomerSync(storage)


def apply(sync, resource, action, body):
    return sync.apply(STORE, resource, action, body, correlation_id="corr-1")


def owed(storage) -> list[dict]:
    out = []
    for collection in storage.outbox_collections():
        for doc in collection.find({f"{OUTBOX_FIELD}.0": {"$exists": True}}):
            out.extend(entry["message"] for entry in doc[OUTBOX_FIELD])
    return out


def clear_outbox(storage) -> None:
    for collection in storage.outbox_collections():
        collection.update_many({}, {"$set": {OUTBOX_FIELD: []}})


def traces(storage, terms=PERSONAL) -> list[dict]:
    return search_personal_data(storage.database, STORE, terms)


def record_delivery(storage, topic: str, body: dict) -> str:
    raw = json.dumps(body).encode()
    resource, action = topic.split(".")
    key = delivery_key(STORE, resource, action, body, raw, "d-1")
    storage.inbox.record(key, {"store_id": STORE, "topic": topic, "resource": resource,
                               "action": action, "resource_id": body["id"], "body": raw.decode(),
                               "webhook_id": "1", "delivery_id": "d-1"})
    return key


def erasure_request(customer_ids, email="ada@example.com", request_id="req-1"):
    return build_event("gdpr.erasure_requested", store_id=STORE,
                       data={"request_id": request_id, "customer_ids": customer_ids, "email": email})


# -- tombstones ---------------------------------------------------------------------------------
def test_tombstone_digests_are_keyed_and_never_the_value():
    one, other = b"k" * 32, b"j" * 32
    digest = tombstone_digest(one, EMAIL, "ada@example.com")
    assert digest == tombstone_digest(one, EMAIL, "ada@example.com")
    assert digest != tombstone_digest(other, EMAIL, "ada@example.com")
    assert tombstone_digest(one, EMAIL, "42") != tombstone_digest(one, WOO_CUSTOMER, "42")
    assert "ada" not in digest and len(digest) == 64


def test_tombstone_values_normalise_emails_and_drop_blanks():
    assert tombstone_values([" Ada@Example.COM ", "", None], [42, None]) == [
        (EMAIL, "ada@example.com"), (WOO_CUSTOMER, "42")]


def test_an_email_tombstone_holds_for_the_past_and_a_shop_id_tombstone_for_ever():
    erased = datetime(2026, 6, 1, tzinfo=timezone.utc)
    before = datetime(2026, 5, 1, tzinfo=timezone.utc)
    after = datetime(2026, 7, 1, tzinfo=timezone.utc)
    email = {"kind": EMAIL, "first_erased_at": datetime(2026, 1, 1, tzinfo=timezone.utc),
             "erased_at": erased}
    assert tombstone_holds(email, before, after)  # created before: the erased past
    assert tombstone_holds(email, None, before)  # no creation time: the modification time
    assert tombstone_holds(email, None, None)  # no shop time at all: kept out
    assert tombstone_holds(email, erased, erased)
    assert not tombstone_holds(email, after, after)  # created after: someone who came back
    assert not tombstone_holds(email, None, after)
    legacy = {"kind": EMAIL, "first_erased_at": erased}  # written before `erased_at` existed
    assert tombstone_holds(legacy, before, None) and not tombstone_holds(legacy, after, None)
    assert tombstone_holds({"kind": WOO_CUSTOMER, "erased_at": erased}, after, after)


def test_a_store_key_is_created_once_and_only_when_asked(storage):
    keys = TombstoneKeys(storage.stores.collection)
    assert keys.get(STORE) is None  # looking does not create
    assert keys.get("unknown", create=True) is None
    created = keys.get(STORE, create=True)
    assert len(created) == 32
    assert TombstoneKeys(storage.stores.collection).get(STORE) == created  # another instance
    # Re-registering the store (a rotated webhook secret) keeps the key.
    storage.stores.save(Store(STORE, "https://shop.example/", "whsec-rotated-1", "ck", "cs"))
    assert TombstoneKeys(storage.stores.collection).get(STORE) == created
    assert "tombstone_key" not in storage.stores.get(STORE).public()


def test_tombstones_match_by_email_or_shop_id_and_hold_no_plain_value(storage):
    erasure = CustomerErasure(storage)
    storage.tombstones.record(STORE, tombstone_values(["ada@example.com"], [42]), "c1", ["c1"],
                              "gdpr", datetime.now(timezone.utc))
    assert erasure.erased_customer_for(STORE, 42) == "c1"
    assert erasure.erased_customer_for(STORE, None, "ADA@example.com ") == "c1"
    assert erasure.erased_customer_for(STORE, 43, "other@example.com") is None
    assert erasure.erased_customer_for("other-store", 42) is None
    # Each tombstone is keyed by store, kind and a keyed digest: the digest is 64 hex characters
    # and is neither the plain value nor anything else of it. (A substring check on the dump
    # would depend on chance: random hex can contain "42".)
    docs = list(storage.tombstones.collection.find({}))
    assert sorted(doc["kind"] for doc in docs) == ["email", "woo_customer"]
    for doc in docs:
        store, kind, digest = doc["_id"].split(":")
        assert (store, kind) == (STORE, doc["kind"])
        assert re.fullmatch(r"[0-9a-f]{64}", digest)
        assert digest not in ("ada@example.com", "42")
        plain_fields = {key: value for key, value in doc.items() if key != "_id"}
        assert "ada@example.com" not in json.dumps(plain_fields, default=str)
        assert 42 not in plain_fields.values() and "42" not in plain_fields.values()


# -- anonymisation ------------------------------------------------------------------------------
def test_order_content_hash_is_the_hash_normalise_gives():
    snap = normalise_order(payloads.order(refunds=[{"id": 1, "reason": "late", "total": "-1.00"}]))
    assert order_content_hash(snap) == snap.content_hash


def test_an_anonymised_order_keeps_accounts_and_loses_the_buyer():
    snap = normalise_order(payloads.order(
        refunds=[{"id": 1, "reason": "Ada broke it", "total": "-5.00"}]))
    anonymised = anonymise_order_snapshot(snap)
    assert (anonymised.total, anonymised.line_items, anonymised.status, anonymised.date_created) == \
        (snap.total, snap.line_items, snap.status, snap.date_created)
    assert anonymised.billing["country"] == "GB" and anonymised.billing["email"] == ""
    assert anonymised.refunds == [{"refund_id": 1, "reason": "", "amount": 500}]
    assert anonymised.woo_customer_id is None
    assert not value_mentions(anonymised.billing | anonymised.shipping, search_terms(PERSONAL))
    # Another copy of the same order with other personal data anonymises to the same state.
    other = normalise_order(payloads.order(
        email="x@example.com", billing=payloads.address("x@example.com", first_name="X"),
        refunds=[{"id": 1, "reason": "", "total": "-5.00"}]))
    assert anonymise_order_snapshot(other).content_hash == anonymised.content_hash


def test_redacted_payloads_hold_nothing_personal_but_stay_applicable():
    order = payloads.order(customer_note="Ring Ada on +4400000001",
                           customer_ip_address="10.1.2.3",
                           line_items=[{**payloads.order()["line_items"][0],
                                        "meta_data": [{"key": "engraving", "value": "For Ada"}]}])
    redacted = redact_order_payload(order)
    assert not value_mentions(redacted, search_terms(PERSONAL + ["10.1.2.3"]))
    snap = normalise_order(redacted)
    assert (snap.total, snap.status, snap.woo_customer_id) == (4990, "processing", 42)
    customer = redact_customer_payload(payloads.customer(meta_data=[{"key": "birthday",
                                                                      "value": "1815-12-10"}]))
    assert not value_mentions(customer, search_terms(PERSONAL + ["1815"]))
    assert normalise_customer(customer).woo_customer_id == 42


def test_woocommerce_erasers_blank_customer_is_recognised():
    blank = normalise_customer(payloads.customer(
        email="", first_name="", last_name="", billing={k: "" for k in payloads.address()},
        shipping={k: "" for k in payloads.address()}))
    assert is_blank_customer(blank)
    placeholders = normalise_customer(payloads.customer(
        email="deleted@site.invalid", first_name="[deleted]", last_name="",
        billing=payloads.address("deleted@site.invalid", first_name="[deleted]", last_name="")))
    assert is_blank_customer(placeholders)
    assert is_placeholder(" ") and not is_placeholder("Ada")
    live = {"status": "active", "email": "ada@example.com", "first_name": "Ada"}
    assert is_shop_erasure(live, blank)
    assert not is_shop_erasure(None, blank)
    assert not is_shop_erasure({**live, "status": "deleted"}, blank)
    no_names = normalise_customer(payloads.customer(first_name="", last_name=""))
    assert not is_shop_erasure(live, no_names)  # an email left: not erased


# -- the scanner --------------------------------------------------------------------------------
def test_scanner_finds_terms_at_any_depth_and_only_in_the_store():
    db = mongomock_adapter.client()["any_service"]
    db["a"].insert_many([
        {"store_id": STORE, "deep": [{"x": {"y": "Contact: ADA@Example.com"}}]},
        {"store_id": STORE, "tags": {"lovelace-fan": True}},  # a key
        {"store_id": STORE, "body": json.dumps({"name": "Jos\u00e9"})},  # \u00e9 escaped
        {"store_id": "other", "email": "ada@example.com"},
        {"store_id": STORE, "digest": "ada" + "0" * 61, "other": "nothing here"},
    ])
    db["settings"].insert_one({"_id": "global", "note": "ada@example.com"})  # not store-keyed
    db["b"].insert_one({"store_id": STORE, "n": 5})
    assert search_personal_data(db, STORE, ["ada@example.com", "Lovelace", "josé"]) == [
        {"collection": "a", "count": 3}, {"collection": "settings", "count": 1}]
    assert search_personal_data(db, STORE, ["ada"]) == [
        {"collection": "a", "count": 1}, {"collection": "settings", "count": 1}]
    with pytest.raises(ValueError):
        search_terms(["a"])
    with pytest.raises(ValueError):
        search_terms([None])


def test_the_proof_counts_a_shared_phone_or_name_only_where_it_is_tied_to_the_erased_ids():
    db = mongomock_adapter.client()["any_service"]
    db["profiles"].insert_many([
        {"store_id": STORE, "customer_id": "gone", "contact": {"phone": "+44 1"}},
        {"store_id": STORE, "customer_id": "housemate", "contact": {"phone": "+44 1",
                                                                    "name": "Ada Lovelace"}},
        {"store_id": STORE, "customer_id": "housemate", "email": "ada@example.com"},
    ])
    db["jobs"].insert_one({"store_id": STORE, "recipients": ["Ada Lovelace"]})
    db["groups"].insert_one({"store_id": STORE, "customer_ids": ["x", "gone"], "n": "+44 1"})
    answer = search(db, STORE, ["ada@example.com"], "svc", ["+44 1", "Ada Lovelace"], ["gone"])
    assert answer == {"service": "svc",
                      "matches": [{"collection": "groups", "count": 1},
                                  {"collection": "profiles", "count": 2}],
                      "ambiguous": [{"collection": "jobs", "count": 1}]}
    # Without tied terms the answer is the plain search, as before.
    assert search(db, STORE, ["+44 1"], "svc") == {
        "service": "svc", "matches": [{"collection": "groups", "count": 1},
                                      {"collection": "profiles", "count": 2}]}


@pytest.mark.parametrize("args, field", [
    (("ada@example.com", None, None), "terms"),
    (([], [], []), "terms"),
    ((["ada@example.com"], ["+44 1"], []), "customer_ids"),
    ((["ada@example.com"], ["+44 1"], [""]), "customer_ids"),
    ((["ada@example.com"], "+44 1", ["c"]), "tied_terms"),
    ((["ada@example.com"], ["+"], ["c"]), "tied_terms"),
    ((["a"], ["+44 1"], ["c"]), "terms"),
])
def test_a_malformed_proof_search_is_refused_naming_the_field(args, field):
    db = mongomock_adapter.client()["any_service"]
    terms, tied, ids = args
    with pytest.raises(ValidationError) as info:
        search(db, STORE, terms, "svc", tied, ids)
    assert list(info.value.details["fields"]) == [field]


# -- erasure ------------------------------------------------------------------------------------
def seed_person(sync, storage) -> str:
    """Ada: registered (42), a guest order under her email before she registered (merged),
    two orders, and the webhook deliveries that brought them."""
    apply(sync, "order", "created", payloads.order(1, customer_id=0))
    guest_id = storage.orders.get(STORE, "1")["customer_id"]
    apply(sync, "customer", "created", payloads.customer(email="ada@other.example"))
    apply(sync, "customer", "updated", payloads.customer(modified="2026-03-01T11:00:00"))
    apply(sync, "order", "created", payloads.order(2, refunds=[{"id": 9, "reason": "Ada asked",
                                                                 "total": "-1.00"}]))
    record_delivery(storage, "customer.updated", payloads.customer())
    record_delivery(storage, "order.created", payloads.order(2))
    registered = storage.customers.by_woo_id(STORE, 42)
    assert storage.customers.get(STORE, guest_id)["merged_into"] == registered["_id"]
    return registered["_id"]


def test_erasure_leaves_markers_anonymised_orders_and_no_trace(sync, storage):
    customer_id = seed_person(sync, storage)
    grace = {"first_name": "Grace", "last_name": "Hopper", "address_1": "2 Road",
             "postcode": "E2", "phone": "+4411111111"}
    bystander = payloads.customer(woo_id=7, email="grace@example.com", first_name="Grace",
                                  last_name="Hopper", username="grace",
                                  billing=payloads.address("grace@example.com", **grace),
                                  shipping=payloads.address(**grace))
    apply(sync, "customer", "created", bystander)
    assert traces(storage)
    report = CustomerErasure(storage).erase(STORE, [customer_id], "ada@example.com", "req-1")
    assert report.counts == {"customers": 2, "orders": 2, "inbox_deliveries": 2}
    assert traces(storage) == []
    assert traces(storage, ["ada@other.example"]) == []
    marker = storage.customers.get(STORE, customer_id)
    assert marker["status"] == "erased" and marker["orders_count"] == 2
    assert set(marker) <= {"_id", "store_id", "status", "registered", "version", "date_created",
                           "created_at", "erased_at", "erased_by", "erasure_request_ids",
                           "orders_count", "merged_into", "shop_erased_at"}
    order = storage.orders.get(STORE, "2")
    assert (order["customer_id"], order["total"], order["status"]) == (customer_id, 4990, "processing")
    assert order["is_guest"] is False and order["refunds"][0]["reason"] == ""
    # The bystander is untouched; erasing again counts the same.
    assert storage.customers.by_woo_id(STORE, 7)["first_name"] == "Grace"
    again = CustomerErasure(storage).erase(STORE, [customer_id], "ada@example.com", "req-1")
    assert again.counts["customers"] == 2 and again.counts["orders"] == 2


def test_erasure_by_request_confirms_with_counts_once(sync, storage):
    """The handler customer_sync inherits from DataOwnerRpc erases through its sync's erasure,
    the guest records found by the request's email included."""
    published: list = []
    app = SimpleNamespace(storage=storage, sync=sync, publish=published.extend)
    service = worker_factory(CustomerSyncService, app=app)
    customer_id = seed_person(sync, storage)
    dropped = []
    service._drop_parked = lambda matches: dropped.append(matches) or 0  # the broker's queue
    request = erasure_request([customer_id])
    service.on_erasure_requested(request)
    receipt = storage.erasures.key(STORE, request.data["request_id"])
    service.outbox.notify.assert_called_once_with([("erasures", receipt)])
    assert published == []  # a request's erasure owes no customer events, only the receipt's
    [confirmation] = storage.erasures.collection.find_one({"_id": receipt})[OUTBOX_FIELD]
    assert confirmation["message"]["data"]["counts"] == {
        "customers": 2, "orders": 2, "inbox_deliveries": 2, "parked_messages": 0}
    assert confirmation["message"]["data"]["service"] == "customer_sync"
    body = {"store_id": STORE, "data": {"customer_id": customer_id}}
    assert dropped[0](body) and dropped[0]({"data": {"note": "ADA@example.com"}})


def test_after_erasure_webhooks_and_backfill_bring_no_personal_data_back(sync, storage):
    customer_id = seed_person(sync, storage)
    CustomerErasure(storage).erase(STORE, [customer_id], "ada@example.com", "req-1")
    clear_outbox(storage)
    assert apply(sync, "customer", "updated", payloads.customer()).outcome == "erased"
    assert apply(sync, "customer", "updated",
                 payloads.customer(modified="2026-09-01T00:00:00", first_name="Ada2")).outcome == "erased"
    result = sync.apply(STORE, "order", "updated", payloads.order(2, modified="2026-09-01T00:00:00",
                                                                  status="completed"),
                        correlation_id="backfill-x", from_rest=True)
    assert result.personal_data_dropped
    new_guest_order = apply(sync, "order", "created", payloads.order(3, customer_id=0))
    assert new_guest_order.outcome == "created" and new_guest_order.personal_data_dropped
    assert apply(sync, "customer", "deleted", {"id": 42}).outcome == "erased"
    assert traces(storage, PERSONAL + ["Ada2"]) == []
    assert storage.customers.collection.count_documents({}) == 2  # no new record, even erased
    assert storage.orders.get(STORE, "3")["customer_id"] == customer_id
    events = owed(storage)
    assert sorted(e["event_type"] for e in events) == ["order.placed", "order.updated"]
    assert all(e["data"]["customer_id"] == customer_id for e in events)
    assert not value_mentions(events, search_terms(PERSONAL))


def test_the_inbox_redacts_what_it_applied_for_an_erased_person(sync, storage):
    customer_id = seed_person(sync, storage)
    CustomerErasure(storage).erase(STORE, [customer_id], None, "req-1")
    key = record_delivery(storage, "order.updated", payloads.order(2, modified="2026-09-01T00:00:00"))
    result = InboxProcessor(storage, sync).process(key)
    assert result.personal_data_dropped
    delivery = storage.inbox.collection.find_one({"_id": key})
    assert delivery["status"] == "done" and delivery["redacted"] is True
    assert traces(storage) == []


def test_pending_deliveries_of_the_person_are_redacted_and_still_applied(sync, storage):
    customer_id = seed_person(sync, storage)
    key = record_delivery(storage, "order.updated",
                          payloads.order(2, status="completed", modified="2026-09-01T00:00:00"))
    CustomerErasure(storage).erase(STORE, [customer_id], None, "req-1")
    assert traces(storage) == []
    InboxProcessor(storage, sync).process(key)
    order = storage.orders.get(STORE, "2")
    assert (order["status"], order["customer_id"]) == ("completed", customer_id)
    assert traces(storage) == []


def test_quarantined_deliveries_of_the_person_are_redacted_and_kept(sync, storage):
    customer_id = seed_person(sync, storage)
    key = record_delivery(storage, "order.updated",
                          payloads.order(2, total="NaN", modified="2026-09-01T00:00:00"))
    InboxProcessor(storage, sync).process(key)  # recorded by an older door: quarantined
    CustomerErasure(storage).erase(STORE, [customer_id], None, "req-1")
    delivery = storage.inbox.collection.find_one({"_id": key})
    assert (delivery["status"], delivery["redacted"]) == ("quarantined", True)
    assert traces(storage) == []


# -- WooCommerce's own privacy eraser ------------------------------------------------------------
def blanked_customer(**overrides):
    return payloads.customer(email="", first_name="", last_name="", username="ada",
                             modified="2026-05-01T00:00:00",
                             billing={k: "" for k in payloads.address()},
                             shipping={k: "" for k in payloads.address()}, **overrides)


def test_a_blanked_customer_is_the_shops_erasure_of_that_person(sync, storage):
    customer_id = seed_person(sync, storage)
    clear_outbox(storage)
    result = apply(sync, "customer", "updated", blanked_customer())
    assert result.outcome == "erased" and result.personal_data_dropped
    marker = storage.customers.get(STORE, customer_id)
    assert marker["status"] == "erased" and marker["shop_erased_at"] is not None
    assert storage.customers.collection.count_documents({"status": {"$ne": "erased"}}) == 0
    [event] = owed(storage)  # consumers learn the contact fields are gone
    assert event["event_type"] == "customer.updated"
    assert event["data"]["email"] is None and event["data"]["first_name"] == ""
    assert event["data"]["customer_id"] == customer_id
    assert traces(storage) == []
    listed = {e["customer_id"]: e for e in shop_erasures(storage, STORE, None, 10)}
    assert listed[customer_id]["orders_count"] == 2 and listed[customer_id]["registered"]
    [guest] = [e for e in listed.values() if e["customer_id"] != customer_id]
    assert guest["merged_into"] == customer_id  # the guest she was before registering
    # The anonymised orders that follow stay with the erased person.
    anonymised = payloads.order(2, customer_id=0, email="deleted@site.invalid",
                                modified="2026-05-01T00:00:01",
                                meta_data=[{"id": 1, "key": "_anonymized", "value": "yes"}])
    apply(sync, "order", "updated", anonymised)
    assert storage.orders.get(STORE, "2")["customer_id"] == customer_id
    assert storage.customers.collection.count_documents({}) == 2


def test_a_blanked_customer_never_seen_is_no_new_person(sync, storage):
    assert apply(sync, "customer", "updated", blanked_customer(id=77)).outcome == "erased"
    [marker] = storage.customers.collection.find()
    assert marker["status"] == "erased" and "email" not in marker
    assert owed(storage) == []
    apply(sync, "order", "created", payloads.order(5, customer_id=77))
    assert storage.orders.get(STORE, "5")["customer_id"] == marker["_id"]
    assert traces(storage) == []


def test_a_guest_whose_orders_the_shop_all_anonymised_is_erased(sync, storage):
    apply(sync, "order", "created", payloads.order(1, customer_id=0, email="g@example.com"))
    apply(sync, "order", "created", payloads.order(2, customer_id=0, email="g@example.com"))
    guest_id = storage.orders.get(STORE, "1")["customer_id"]

    def anonymised(order_id):
        return payloads.order(order_id, customer_id=0, email="deleted@site.invalid",
                              modified="2026-05-01T00:00:00",
                              billing=payloads.address("deleted@site.invalid", first_name="[deleted]"),
                              meta_data=[{"id": 1, "key": "_anonymized", "value": "yes"}])

    apply(sync, "order", "updated", anonymised(1))
    assert storage.customers.get(STORE, guest_id)["status"] == "active"  # one order still named
    assert apply(sync, "order", "updated", anonymised(2)).personal_data_dropped
    assert storage.customers.get(STORE, guest_id)["status"] == "erased"
    assert [e["customer_id"] for e in shop_erasures(storage, STORE, None, 10)] == [guest_id]
    assert traces(storage, ["g@example.com", "Lovelace"]) == []
    # A later guest checkout with that email is filed under the erased guest, anonymised.
    apply(sync, "order", "created", payloads.order(3, customer_id=0, email="g@example.com"))
    assert storage.orders.get(STORE, "3")["customer_id"] == guest_id
    assert traces(storage, ["g@example.com"]) == []


def test_an_anonymised_order_alone_does_not_erase_a_registered_customer(sync, storage):
    """WooCommerce's retention policy anonymises old completed orders of live customers."""
    apply(sync, "customer", "created", payloads.customer())
    apply(sync, "order", "created", payloads.order(1))
    anonymised = payloads.order(1, customer_id=42, email="deleted@site.invalid",
                                modified="2026-05-01T00:00:00",
                                billing=payloads.address("deleted@site.invalid", first_name="[deleted]"),
                                meta_data=[{"id": 1, "key": "_anonymized", "value": "yes"}])
    apply(sync, "order", "updated", anonymised)
    customer = storage.customers.by_woo_id(STORE, 42)
    assert customer["status"] == "active" and customer["first_name"] == "Ada"
    assert storage.orders.get(STORE, "1")["billing"]["first_name"] == ""
    assert storage.customers.collection.count_documents({"email_key": "deleted@site.invalid"}) == 0


# -- rectification ------------------------------------------------------------------------------
def test_corrections_are_validated_and_name_the_failing_fields():
    with pytest.raises(ValidationError) as info:
        load_correction({"email": "not-an-email", "colour": "red"})
    assert "email" in str(info.value) and "colour" in str(info.value)
    with pytest.raises(ValidationError):
        load_correction({})
    with pytest.raises(ValidationError):
        load_correction({"billing": {"country": "Germany"}})
    assert load_correction({"first_name": " Ada ", "billing": {"country": "de"}}) == {
        "first_name": "Ada", "billing": {"country": "DE"}}


def test_the_shop_keeps_phone_and_company_on_the_billing_address():
    assert shop_customer_update({"first_name": "Ada", "phone": "+49 30 1", "company": "AE",
                                 "shipping": {"city": "Berlin"}}) == {
        "first_name": "Ada", "billing": {"phone": "+49 30 1", "company": "AE"},
        "shipping": {"city": "Berlin"}}


def test_a_guest_is_corrected_here_only(sync, storage):
    apply(sync, "order", "created", payloads.order(1, customer_id=0, email="g@example.com"))
    guest_id = storage.orders.get(STORE, "1")["customer_id"]
    clear_outbox(storage)
    assert guest_fields({"billing": {"first_name": "A"}}, {"last_name": "B"})["billing"] == {
        "first_name": "A", "last_name": "B"}
    answer = Rectifier(storage, sync, client_factory=None).rectify(
        STORE, guest_id, {"email": "G2@example.com", "first_name": "Gee"}, "operator-1").answer
    assert answer["written_to_shop"] is False and "guest" in answer["note"]
    assert answer["customer"]["email"] == "G2@example.com"
    assert storage.customers.by_email(STORE, "g2@example.com")["_id"] == guest_id
    [event] = owed(storage)
    assert event["event_type"] == "customer.updated"
    assert sorted(event["data"]["changed_fields"]) == ["billing", "email", "first_name"]
    # An order placed before the correction does not undo it.
    apply(sync, "order", "updated", payloads.order(1, customer_id=0, email="g2@example.com",
                                                   modified="2026-04-01T00:00:00"))
    assert storage.customers.get(STORE, guest_id)["first_name"] == "Gee"


def test_a_correction_is_dated_by_the_clock_it_is_given(sync, storage):
    apply(sync, "order", "created", payloads.order(1, customer_id=0, email="g@example.com"))
    guest_id = storage.orders.get(STORE, "1")["customer_id"]
    pinned = datetime(2025, 1, 2, 3, 4, 5, 678000, tzinfo=timezone.utc)
    Rectifier(storage, sync, None, clock=Clock(pinned)).rectify(
        STORE, guest_id, {"first_name": "Gee"}, "operator-1")
    doc = storage.customers.get(STORE, guest_id)
    assert doc["rectifications"][-1]["at"] == pinned
    assert doc["contact_from_order_at"] == pinned
    assert [e["at"] for e in doc[TIMELINE_FIELD] if e["kind"] == "customer.rectified"] == [pinned]


def test_a_correction_is_refused_for_the_erased_and_the_unknown(sync, storage):
    customer_id = seed_person(sync, storage)
    CustomerErasure(storage).erase(STORE, [customer_id], None, "req-1")
    with pytest.raises(Conflict):
        Rectifier(storage, sync, None).rectify(STORE, customer_id, {"first_name": "X"}, "op")
    with pytest.raises(NotFound):
        Rectifier(storage, sync, None).rectify(STORE, "nobody", {"first_name": "X"}, "op")


@pytest.mark.parametrize("shape", [[], ["x"], 5, "text", {"a": 1}, None])
def test_an_erased_persons_delivery_is_redacted_whatever_shape_its_optional_parts_have(shape):
    """Found by the webhook fuzzing: an order whose optional parts (addresses, meta data, the
    extra line lists) are of another shape is applied (they are dropped), but redacting it
    for an erased person raised, leaving the applied delivery unfinished and retried."""
    payload = {"id": 7, "status": "processing", "total": "10.00", "billing": shape,
               "shipping": shape, "meta_data": shape, "shipping_lines": shape,
               "fee_lines": shape, "coupon_lines": shape, "refunds": shape if shape != [] else []}
    redacted = redact_order_payload(payload)
    assert redacted["billing"]["email"] == "" and redacted["shipping"]["first_name"] == ""
    for part in ("meta_data", "shipping_lines", "fee_lines", "coupon_lines", "refunds"):
        assert isinstance(redacted[part], list)
    assert json.loads(json.dumps(redact_payload("order", payload)))["id"] == 7
