"""Erasure against what real people share and do: a household's phone, a common name, and a
person who comes back after being forgotten.

The proof of an erasure runs here against customer_sync's real storage, erasure and search,
with the other services' databases holding the documents they keep (by `customer_id`), and
the gdpr desk driving it as it does in the service.
"""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from devdoubles import mongomock_adapter
from services.customer_sync.privacy.erasure import CustomerErasure, document_owners
from shared.erasure import confirm_erasure
from services.customer_sync.core.queries import CustomerQueries
from services.customer_sync.repository import CustomerSyncStorage, Store
from services.customer_sync.core.sync import CustomerSync
from services.customer_sync.door.webhooks import delivery_key
from services.gdpr.desk import Desk, DeskSettings
from services.gdpr.repository import GdprStorage
from shared.errors import NotFound
from shared.events import build_event
from shared.outbox import OUTBOX_FIELD
from shared.personal_data import search
from tests import payloads
from tests.support import Clock

STORE = "s1"
T0 = datetime(2026, 11, 1, 9, tzinfo=timezone.utc)
SERVICES = ("customer_sync", "segmentation", "loyalty", "notifications")
PHONE = "+4400000001"  # payloads.address: the person's phone, and here her housemate's too
ADA = "ada@example.com"
NAMESAKE = "ada.l@another.example"


def record_done_delivery(storage: CustomerSyncStorage, topic: str, body: dict) -> None:
    """A delivery kept in the inbox after it was applied (as the inbox does, for days)."""
    raw = json.dumps(body).encode()
    resource, action = topic.split(".")
    key = delivery_key(STORE, resource, action, body, raw, f"d-{topic}-{body['id']}")
    storage.inbox.record(key, {"store_id": STORE, "topic": topic, "resource": resource,
                               "action": action, "resource_id": body["id"], "body": raw.decode(),
                               "webhook_id": "1", "delivery_id": "d-1"})
    storage.inbox.finish(key, "applied")


class LocalServices:
    """The desk's view of the data-owning services, answering from their databases with the
    same functions their RPCs run."""

    def __init__(self, customer_sync: CustomerSyncStorage, others: dict) -> None:
        self.customer_sync = customer_sync
        self.others = others
        self.searches = 0

    def call(self, service, method, *args):
        return self.call_all([service], method, *args)[service]

    def call_all(self, services, method, *args):
        out = {}
        for service in services:
            try:
                if method == "find_customer":
                    out[service] = ("ok", CustomerQueries(self.customer_sync).find_customer(*args))
                elif method == "search_personal_data":
                    self.searches += 1
                    if service == "customer_sync":
                        out[service] = ("ok", search(self.customer_sync.database, *args[:2],
                                                     service, *args[2:],
                                                     document_owners(self.customer_sync)))
                    else:
                        out[service] = ("ok", search(self.others[service], *args[:2], service,
                                                     *args[2:]))
            except NotFound as exc:
                out[service] = ("not_found", str(exc))
        return out


@pytest.fixture
def shop_data():
    """Ada and, at another address, Ada Lovelace the namesake who shares her household phone;
    each with an order, and each known to the other services by customer id."""
    storage = CustomerSyncStorage(mongomock_adapter.client()["customer_sync"])
    storage.ensure_indexes()
    storage.stores.save(Store(STORE, "https://shop.example/", "whsec-12345678", "ck", "cs"))
    sync = CustomerSync(storage)
    bodies = [("customer.created", payloads.customer(42, ADA)),
              ("customer.created", payloads.customer(43, NAMESAKE, username="adal")),
              ("order.created", payloads.order(1001, 42, email=ADA)),
              ("order.created", payloads.order(1002, 43, email=NAMESAKE))]
    for topic, body in bodies:
        resource, action = topic.split(".")
        sync.apply(STORE, resource, action, body, correlation_id="c")
        record_done_delivery(storage, topic, body)
    ada = storage.customers.by_woo_id(STORE, 42)["_id"]
    namesake = storage.customers.by_woo_id(STORE, 43)["_id"]
    others = {name: mongomock_adapter.client()[name] for name in SERVICES[1:]}
    for customer_id in (ada, namesake):
        others["segmentation"]["profiles"].insert_one({
            "_id": f"{STORE}:{customer_id}", "store_id": STORE, "customer_id": customer_id,
            "contact": {"first_name": "Ada", "last_name": "Lovelace", "phone": PHONE}})
    return storage, others, ada, namesake


def erase_everywhere(storage, others, request_id, customer_ids, email):
    """What each service does on gdpr.erasure_requested, answering with its confirmation."""
    event = build_event("gdpr.erasure_requested", store_id=STORE, data={
        "request_id": request_id, "customer_ids": customer_ids, "email": email})
    confirm_erasure("customer_sync", storage.erasures, event,
                    lambda: CustomerErasure(storage).erase(STORE, customer_ids, email,
                                                           request_id).counts,
                    lambda matches: 0)
    others["segmentation"]["profiles"].delete_many({"customer_id": {"$in": customer_ids}})
    receipt = storage.erasures.get(STORE, request_id)
    [confirmation] = [e["message"] for e in receipt[OUTBOX_FIELD]]
    confirmations = [confirmation["data"]] + [
        {"request_id": request_id, "service": s, "customer_ids": customer_ids, "counts": {}}
        for s in SERVICES[1:]]
    return [build_event("gdpr.erasure_completed", store_id=STORE, data=data)
            for data in confirmations]


def erasure_desk():
    clock = Clock(T0)
    desk = Desk(GdprStorage(mongomock_adapter.client()["gdpr"]),
                DeskSettings(services=SERVICES, retry_seconds=60), clock)
    desk.storage.ensure_indexes()
    return desk, clock


def run_erasure(shop_data, desk, clock):
    storage, others, ada, _ = shop_data
    services = LocalServices(storage, others)
    request_id = desk.submit(STORE, "erasure", ADA, None, "ops@shop")["request_id"]
    desk.verify_identity(request_id, "ops@shop")
    desk.process_due(services)
    stored = desk.storage.requests.get(request_id)
    assert stored["customer_ids"] == [ada]
    for confirmation in erase_everywhere(storage, others, request_id, [ada], ADA):
        desk.record_confirmation(confirmation)
    desk.process_due(services)
    return request_id, services


def test_an_erasure_completes_when_a_housemate_shares_the_phone_and_the_name(shop_data):
    storage, others, ada, namesake = shop_data
    desk, clock = erasure_desk()
    request_id, services = run_erasure(shop_data, desk, clock)

    done = desk.get(request_id)
    assert done["state"] == "completed", done.get("waiting_for")
    assert done["result"]["verification"] == "nothing found"
    assert done["needs_review"] is False
    assert services.searches == len(SERVICES)
    # The namesake keeps everything: her record, her order, her profile, her delivery.
    kept = CustomerQueries(storage).get_customer(STORE, namesake)
    assert (kept["status"], kept["email"], kept["phone"]) == ("active", NAMESAKE, PHONE)
    assert storage.orders.get(STORE, "1002")["billing"]["phone"] == PHONE
    assert others["segmentation"]["profiles"].count_documents({"customer_id": namesake}) == 1
    assert storage.inbox.collection.count_documents({"resource_id": {"$in": [43, 1002]}}) == 2
    assert CustomerQueries(storage).get_customer(STORE, ada)["status"] == "erased"


def test_the_phone_left_in_a_record_of_the_erased_person_still_holds_the_erasure_open(
        shop_data):
    storage, others, ada, _ = shop_data
    # A service kept her phone in a record filed under her id: that is hers, not ambiguous.
    others["loyalty"]["accounts"].insert_one({"_id": f"{STORE}:{ada}", "store_id": STORE,
                                              "customer_id": ada, "note": f"call {PHONE}"})
    desk, clock = erasure_desk()
    request_id, services = run_erasure(shop_data, desk, clock)
    state = desk.get(request_id)
    assert state["state"] == "in_progress" and "loyalty" in state["waiting_for"]
    assert state["verification"] == {"loyalty": [{"collection": "accounts", "count": 1}]}


def test_a_trace_no_one_can_be_tied_to_is_shown_as_ambiguous_instead_of_looping(shop_data):
    storage, others, ada, _ = shop_data
    # A bulk job's recipient list: her phone, and no customer named.
    others["notifications"]["bulk_jobs"].insert_one({"_id": "job-1", "store_id": STORE,
                                                     "recipients": [PHONE]})
    desk, clock = erasure_desk()
    request_id, services = run_erasure(shop_data, desk, clock)

    done = desk.get(request_id)
    assert done["state"] == "completed"
    assert done["needs_review"] is True
    assert done["result"]["verification"] == "ambiguous"
    assert done["result"]["ambiguous"] == {
        "notifications": [{"collection": "bulk_jobs", "count": 1}]}
    entry = done["audit"][-1]
    assert entry["action"] == "completed" and entry["detail"].startswith("needs review")
    assert "notifications (bulk_jobs)" in entry["detail"]
    searched = services.searches
    clock.now += timedelta(hours=1)
    assert desk.process_due(services) == 0  # nothing left to re-check
    assert services.searches == searched


# -- a person who comes back ----------------------------------------------------------------------
ERASED_AT = datetime(2026, 6, 1, 12, tzinfo=timezone.utc)
BEFORE = "2026-05-20T08:00:00"  # the shop's times (GMT, no offset), before the erasure
AFTER = "2026-06-10T08:00:00"  # and after it


@pytest.fixture
def erased_ada():
    """Ada, registered (shop customer 42) with an order, erased at ERASED_AT."""
    storage = CustomerSyncStorage(mongomock_adapter.client()["customer_sync"])
    storage.ensure_indexes()
    storage.stores.save(Store(STORE, "https://shop.example/", "whsec-12345678", "ck", "cs"))
    clock = Clock(ERASED_AT - timedelta(days=30))
    sync = CustomerSync(storage, clock)
    apply_all(sync, [("customer.created", payloads.customer(42, ADA)),
                     ("order.created", payloads.order(1001, 42, email=ADA))])
    erased_id = storage.customers.by_woo_id(STORE, 42)["_id"]
    clock.now = ERASED_AT
    sync.erasure.erase(STORE, [erased_id], ADA, "req-1")
    clock.now = ERASED_AT + timedelta(days=20)
    return storage, sync, erased_id


def apply_all(sync, deliveries):
    return [sync.apply(STORE, *topic.split("."), body, correlation_id="c")
            for topic, body in deliveries]


def shop_times(created: str, modified: str) -> dict:
    return {"date_created": created, "date_created_gmt": created,
            "date_modified": modified, "date_modified_gmt": modified}


def test_a_person_who_registers_again_after_the_erasure_is_recorded(erased_ada):
    storage, sync, erased_id = erased_ada
    [result] = apply_all(sync, [("customer.created",
                                 payloads.customer(57, ADA, **shop_times(AFTER, AFTER)))])
    assert result.outcome == "created" and not result.personal_data_dropped
    again = CustomerQueries(storage).find_customer(STORE, ADA)
    assert again["customer_id"] != erased_id
    assert (again["status"], again["email"], again["first_name"]) == ("active", ADA, "Ada")
    # Her new orders, as a registered customer and at a guest checkout, are hers again.
    apply_all(sync, [("order.created", payloads.order(2001, 57, email=ADA,
                                                      **shop_times(AFTER, AFTER))),
                     ("order.created", payloads.order(2002, 0, email=ADA,
                                                      **shop_times(AFTER, AFTER)))])
    for order_id in ("2001", "2002"):
        order = storage.orders.get(STORE, order_id)
        assert order["customer_id"] == again["customer_id"]
        assert order["billing"]["email"] == ADA and not order.get("personal_data_erased")
    # What the shop keeps of her erased past stays erased.
    assert CustomerQueries(storage).get_customer(STORE, erased_id)["status"] == "erased"
    assert storage.orders.get(STORE, "1001")["billing"]["email"] == ""


@pytest.mark.parametrize("topic, body", [
    # a late or repeated webhook, a backfill: her old account as it was before the erasure
    ("customer.updated", payloads.customer(42, ADA, **shop_times(BEFORE, BEFORE))),
    # her old account, touched at the shop after the erasure: still the erased account
    ("customer.updated", payloads.customer(42, ADA, **shop_times(BEFORE, AFTER))),
    # an account of hers from before the erasure that only now reaches us
    ("customer.created", payloads.customer(58, ADA, **shop_times(BEFORE, BEFORE))),
    # a guest order from before the erasure, completed at the shop after it
    ("order.updated", payloads.order(1003, 0, email=ADA, **shop_times(BEFORE, AFTER))),
    # an order of her old account placed after the erasure
    ("order.created", payloads.order(1004, 42, email=ADA, **shop_times(AFTER, AFTER))),
])
def test_replays_of_the_erased_past_bring_nothing_back(erased_ada, topic, body):
    storage, sync, erased_id = erased_ada
    [result] = apply_all(sync, [(topic, body)])
    assert result.personal_data_dropped
    with pytest.raises(NotFound):
        CustomerQueries(storage).find_customer(STORE, ADA)
    assert storage.customers.collection.count_documents(
        {"store_id": STORE, "status": "active"}) == 0
    for order in storage.orders.collection.find({"store_id": STORE}):
        assert order["customer_id"] == erased_id and order["billing"]["email"] == ""


def test_tombstones_still_hold_no_plain_identifier(erased_ada):
    storage, sync, _ = erased_ada
    apply_all(sync, [("customer.created", payloads.customer(57, ADA, **shop_times(AFTER, AFTER)))])
    stored = json.dumps(list(storage.tombstones.collection.find()), default=str).lower()
    assert "ada@" not in stored and "example.com" not in stored and '"42"' not in stored


def test_a_second_erasure_moves_the_line_on(erased_ada):
    storage, sync, _ = erased_ada
    apply_all(sync, [("customer.created", payloads.customer(57, ADA, **shop_times(AFTER, AFTER)))])
    again = CustomerQueries(storage).find_customer(STORE, ADA)["customer_id"]
    second = datetime(2026, 7, 1, tzinfo=timezone.utc)
    sync.clock.now = second
    sync.erasure.erase(STORE, [again], ADA, "req-2")
    sync.clock.now = second + timedelta(days=5)
    # Her second account, replayed from before the second erasure: gone for good.
    [replayed] = apply_all(sync, [("customer.updated", payloads.customer(
        59, ADA, **shop_times(AFTER, "2026-06-20T08:00:00")))])
    assert replayed.personal_data_dropped
    with pytest.raises(NotFound):
        CustomerQueries(storage).find_customer(STORE, ADA)
    # And a third registration after it is hers again.
    apply_all(sync, [("customer.created", payloads.customer(
        60, ADA, **shop_times("2026-07-03T08:00:00", "2026-07-03T08:00:00")))])
    assert CustomerQueries(storage).find_customer(STORE, ADA)["status"] == "active"
