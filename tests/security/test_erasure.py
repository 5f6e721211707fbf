"""Erasure against what real people share and do: a household's phone, a common name, and a
person who comes back after being forgotten.

The proof of an erasure runs here against customer_sync's real storage, erasure and search,
with the other services' databases holding the documents they keep (by `customer_id`), and
the gdpr desk driving it as it does in the service.
"""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import mongomock
import pytest

from services.customer_sync.erasure import document_owners, handle_erasure_requested
from services.customer_sync.queries import CustomerQueries
from services.customer_sync.repository import CustomerSyncStorage, Store
from services.customer_sync.sync import CustomerSync
from services.customer_sync.webhooks import delivery_key
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
    storage = CustomerSyncStorage(mongomock.MongoClient()["customer_sync"])
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
    others = {name: mongomock.MongoClient()[name] for name in SERVICES[1:]}
    for customer_id in (ada, namesake):
        others["segmentation"]["profiles"].insert_one({
            "_id": f"{STORE}:{customer_id}", "store_id": STORE, "customer_id": customer_id,
            "contact": {"first_name": "Ada", "last_name": "Lovelace", "phone": PHONE}})
    return storage, others, ada, namesake


def erase_everywhere(storage, others, request_id, customer_ids, email):
    """What each service does on gdpr.erasure_requested, answering with its confirmation."""
    event = build_event("gdpr.erasure_requested", store_id=STORE, data={
        "request_id": request_id, "customer_ids": customer_ids, "email": email})
    handle_erasure_requested(storage, event, lambda matches: 0)
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
    desk = Desk(GdprStorage(mongomock.MongoClient()["gdpr"]),
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
