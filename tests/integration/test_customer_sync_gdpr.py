"""customer_sync's GDPR side on the real broker: erasure by request (with its confirmation,
parked messages, and webhooks and a backfill that come after it), WooCommerce's own privacy
eraser, and rectification written back to a shop (the local WooCommerce stand-in)."""
from __future__ import annotations

import json

import pytest
import requests
from nameko.standalone.rpc import ClusterRpcProxy

from services.customer_sync.service import CustomerSyncService
from services.customer_sync.door.signature import sign
from shared import mongo
from shared.errors import ValidationError
from shared.events import build_event
from shared.messaging.parking import ParkedMessages
from tests import payloads
from demo.shop import FakeWooShop
from tests.support import publish, wait_until

SECRET = "whsec-test-1234"
STORE_ID = "shop1"

# A person made of strings that appear nowhere else (none of them can hide in a hex id).
EMAIL, PHONE = "augusta.king@example.com", "+44 7700 900123"
FIRST, LAST, STREET, POSTCODE = "Augusta", "Lovelace", "12 Analytical Engine Row", "ZZ9 9ZZ"
PERSON = [EMAIL, PHONE, FIRST, LAST, STREET, POSTCODE]


def person_address(email: str = "") -> dict:
    return payloads.address(email, first_name=FIRST, last_name=LAST, address_1=STREET,
                            postcode=POSTCODE, phone=PHONE)


def person_customer(**overrides) -> dict:
    return payloads.customer(woo_id=42, email=EMAIL, first_name=FIRST, last_name=LAST,
                             username="augusta", billing=person_address(EMAIL),
                             shipping=person_address(), **overrides)


def person_order(order_id: int, customer_id: int = 42, **overrides) -> dict:
    return payloads.order(order_id, customer_id=customer_id, email=EMAIL,
                          billing=person_address(EMAIL), shipping=person_address(),
                          customer_note=f"Call {FIRST} on {PHONE}", **overrides)


@pytest.fixture
def shop():
    with FakeWooShop(seed=5) as shop:
        yield shop


@pytest.fixture
def rpc(services, events, shop):
    events.listen("customer_sync")
    events.listen("gdpr", "gdpr.erasure_completed")
    # The timeline sweep is off in practice: what a write shows there, it moved itself.
    services.start(CustomerSyncService, WOO_MAX_RETRIES=3, TIMELINE_SWEEP_SECONDS=3600)
    with ClusterRpcProxy({"AMQP_URI": services.amqp_uri}, timeout=30) as proxy:
        proxy.customer_sync.register_store({
            "store_id": STORE_ID, "shop_url": shop.base_url, "webhook_secret": SECRET,
            "consumer_key": shop.consumer_key, "consumer_secret": shop.consumer_secret})
        yield proxy


def database(services):
    return mongo.connect(services.mongo_uri)["companion_customer_sync"]


def post(services, topic: str, body: dict | bytes) -> requests.Response:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", "X-WC-Webhook-Topic": topic,
               "X-WC-Webhook-ID": "3", "X-WC-Webhook-Delivery-ID": "same-second-hash",
               "X-WC-Webhook-Signature": sign(raw, SECRET)}
    return requests.post(f"{services.web_url}/webhooks/woocommerce/{STORE_ID}", data=raw,
                         headers=headers, timeout=10)



def strings_left(services, terms: list[str]) -> dict[str, list[str]]:
    """An independent check of the whole database: which terms each collection still holds
    (every document as JSON text, compared case-insensitively)."""
    db = database(services)
    found: dict[str, list[str]] = {}
    for name in db.list_collection_names():
        text = "\n".join(json.dumps(doc, default=str, ensure_ascii=False)
                         for doc in db[name].find()).casefold()
        hits = [term for term in terms if term.casefold() in text]
        if hits:
            found[name] = hits
    return found


def inbox_settled(services) -> bool:
    return database(services)["webhook_inbox"].count_documents(
        {"status": {"$in": ["pending", "processing"]}}) == 0


def erasure_request(customer_ids: list[str], request_id: str = "req-1", email: str = EMAIL) -> dict:
    return build_event("gdpr.erasure_requested", store_id=STORE_ID,
                       data={"request_id": request_id, "customer_ids": customer_ids,
                             "email": email}).to_message()


def test_erasure_by_request_forgets_the_person_and_later_webhooks_bring_nothing_back(
        services, rpc, events):
    assert post(services, "customer.created", person_customer()).status_code == 200
    assert post(services, "order.created", person_order(1001)).status_code == 200
    assert post(services, "order.created", person_order(1002, customer_id=0)).status_code == 200
    events.wait_for(lambda got: len(events.of_type("order.placed")) == 2)
    wait_until(lambda: inbox_settled(services), message="deliveries applied")
    customer_id = rpc.customer_sync.find_customer(STORE_ID, EMAIL)["customer_id"]
    assert set(strings_left(services, PERSON)) == {"customers", "orders", "webhook_inbox"}

    # A message about her that cannot be applied is parked (it breaks its contract).
    broken = erasure_request([customer_id], request_id="broken")
    broken["data"]["customer_ids"] = []
    publish(services.amqp_uri, broken)
    parked = ParkedMessages(services.amqp_uri)
    wait_until(lambda: parked.list("customer_sync"), timeout=15, message="a parked message")

    request = erasure_request([customer_id])
    publish(services.amqp_uri, request)
    events.wait_for(lambda got: events.of_type("gdpr.erasure_completed"), timeout=15)
    [done] = events.of_type("gdpr.erasure_completed")
    assert done["data"] == {"request_id": "req-1", "service": "customer_sync",
                            "customer_ids": [customer_id],
                            "counts": {"customers": 1, "orders": 2, "inbox_deliveries": 3,
                                       "parked_messages": 1}}
    assert done["causation_id"] == request["event_id"]
    assert parked.list("customer_sync") == []
    assert strings_left(services, PERSON) == {}
    assert rpc.customer_sync.search_personal_data(STORE_ID, PERSON) == {
        "service": "customer_sync", "matches": []}
    erased = rpc.customer_sync.get_customer(STORE_ID, customer_id)
    assert erased["status"] == "erased" and erased["email"] is None

    # The same signed webhooks again, a newer state of an order, and a new order of hers.
    seen = len(events.received)
    assert post(services, "customer.created", person_customer()).json()["status"] == "accepted"
    assert post(services, "customer.updated", person_customer(
        modified="2026-04-01T00:00:00")).status_code == 200
    assert post(services, "order.created", person_order(1001)).status_code == 200
    post(services, "order.updated", person_order(1001, status="completed",
                                                 modified="2026-04-01T00:00:00"))
    post(services, "order.created", person_order(1003, customer_id=0))
    events.wait_for(lambda got: {("order.placed", "1003"), ("order.updated", "1001")} <= {
        (e["event_type"], e["data"].get("order_id")) for e in got})
    wait_until(lambda: inbox_settled(services), message="deliveries applied")
    assert strings_left(services, PERSON) == {}
    later = events.received[seen:]
    assert not [e for e in later if e["event_type"].startswith("customer.")]
    assert {(e["event_type"], e["data"]["order_id"]) for e in later} == {
        ("order.updated", "1001"), ("order.placed", "1003")}
    assert all(e["data"]["customer_id"] == customer_id for e in later)
    assert not any(term.casefold() in json.dumps(later).casefold() for term in PERSON)
    orders = rpc.customer_sync.list_orders(STORE_ID, customer_id)["items"]
    assert sorted((o["order_id"], o["total"]["amount"]) for o in orders) == [
        ("1001", 4990), ("1002", 4990), ("1003", 4990)]

    # Asked again (gdpr retries when it has not heard back): answered again, same counts.
    publish(services.amqp_uri, erasure_request([customer_id]))
    events.wait_for(lambda got: len(events.of_type("gdpr.erasure_completed")) == 2, timeout=15)
    assert events.of_type("gdpr.erasure_completed")[1]["data"] == done["data"]


def test_a_backfill_after_an_erasure_brings_nothing_back(services, rpc, events, shop):
    person = shop.add_customer(email=EMAIL, first_name=FIRST, last_name=LAST,
                               billing={**person_address(EMAIL), "country": "GB"},
                               shipping={**person_address(), "country": "GB"})
    shop.add_order(customer_id=person["id"])
    shop.add_order(customer_id=0, billing={**person_address(EMAIL), "country": "GB"})
    run = rpc.customer_sync.backfill(STORE_ID)
    wait_until(lambda: rpc.customer_sync.backfill_status(STORE_ID, run["run_id"])["status"]
               == "completed", timeout=20, message="first backfill")
    customer_id = rpc.customer_sync.find_customer(STORE_ID, EMAIL)["customer_id"]
    events.wait_for(lambda got: len(events.of_type("order.placed")) == 2)

    publish(services.amqp_uri, erasure_request([customer_id]))
    events.wait_for(lambda got: events.of_type("gdpr.erasure_completed"), timeout=15)
    seen = len(events.received)
    shop.clock.advance(60)
    shop.update_customer(person["id"], last_name="Lovelace-King")  # the shop still has her
    run = rpc.customer_sync.backfill(STORE_ID)
    wait_until(lambda: rpc.customer_sync.backfill_status(STORE_ID, run["run_id"])["status"]
               == "completed", timeout=20, message="second backfill")
    assert strings_left(services, PERSON) == {}
    assert not [e for e in events.received[seen:] if e["event_type"].startswith("customer.")]
    assert database(services)["customers"].count_documents({"status": {"$ne": "erased"}}) == 0


def test_woocommerces_privacy_eraser_is_an_erasure_of_the_existing_person(
        services, rpc, events, shop):
    url = f"{services.web_url}/webhooks/woocommerce/{STORE_ID}"
    for topic in ("customer.created", "customer.updated", "order.created", "order.updated"):
        shop.add_webhook(topic, url, SECRET)
    person = shop.add_customer(email=EMAIL, first_name=FIRST, last_name=LAST,
                               billing={**person_address(EMAIL), "country": "GB"},
                               shipping={**person_address(), "country": "GB"})
    order = shop.add_order(customer_id=person["id"])
    shop.deliver_webhooks("customer.created", person["id"])
    shop.deliver_webhooks("order.created", order["id"])
    events.wait_for(lambda got: events.of_type("order.placed"))
    customer_id = rpc.customer_sync.find_customer(STORE_ID, EMAIL)["customer_id"]

    shop.clock.advance(60)
    shop.erase_customer(person["id"])  # blanks the customer, anonymises the order
    shop.deliver_webhooks("order.updated", order["id"])  # the order's delivery may come first
    shop.deliver_webhooks("customer.updated", person["id"])
    events.wait_for(lambda got: any(e["event_type"] == "customer.updated" for e in got))
    wait_until(lambda: inbox_settled(services), message="deliveries applied")

    [blanked] = events.of_type("customer.updated")
    assert blanked["data"]["customer_id"] == customer_id and blanked["data"]["email"] is None
    customers = list(database(services)["customers"].find())
    assert [(c["_id"], c["status"]) for c in customers] == [(customer_id, "erased")]
    [listed] = rpc.customer_sync.shop_erasures(STORE_ID)["erasures"]
    assert listed["customer_id"] == customer_id and listed["registered"] is True
    assert rpc.customer_sync.shop_erasures(STORE_ID, "2999-01-01T00:00:00Z")["erasures"] == []
    assert strings_left(services, PERSON) == {}
    orders = rpc.customer_sync.list_orders(STORE_ID, customer_id)["items"]
    assert [o["order_id"] for o in orders] == [str(order["id"])]


def test_rectification_is_written_to_the_shop_and_not_undone_by_the_next_webhook(
        services, rpc, events, shop):
    person = shop.add_customer(email=EMAIL, first_name=FIRST, last_name=LAST,
                               billing={**person_address(EMAIL), "country": "GB"})
    before = shop.webhook_body("customer.updated", person["id"])
    assert post(services, "customer.created", before).status_code == 200
    events.wait_for(lambda got: events.of_type("customer.created"))
    customer_id = rpc.customer_sync.find_customer(STORE_ID, EMAIL)["customer_id"]

    shop.clock.advance(60)
    shop.fail_next(1, 503)  # the shop stumbles once: the PUT is retried
    answer = rpc.customer_sync.rectify_customer(
        STORE_ID, customer_id,
        {"last_name": "King", "phone": "+44 7700 900999", "billing": {"city": "Ockham"}},
        "operator@shop.example")
    assert answer["written_to_shop"] is True
    assert answer["customer"]["last_name"] == "King"
    assert answer["customer"]["phone"] == "+44 7700 900999"
    in_shop = shop.customers[person["id"]]
    assert (in_shop["last_name"], in_shop["billing"]["phone"], in_shop["billing"]["city"]) == (
        "King", "+44 7700 900999", "Ockham")
    assert shop.count_requests(f"customers/{person['id']}", status=503) == 1
    [entry] = [e for e in rpc.customer_sync.timeline(STORE_ID, customer_id)["items"]
               if e["kind"] == "customer.rectified"]  # at once, not at the next sweep
    assert entry["actor"] == "operator@shop.example"
    events.wait_for(lambda got: events.of_type("customer.updated"))
    [updated] = events.of_type("customer.updated")
    assert set(updated["data"]["changed_fields"]) >= {"last_name", "phone", "billing"}

    # The shop's next webhook carries the corrected state; an older delivery comes late.
    assert post(services, "customer.updated",
                shop.webhook_body("customer.updated", person["id"])).status_code == 200
    assert post(services, "customer.updated", before).json()["status"] == "duplicate"
    post(services, "customer.updated", json.loads(before) | {"first_name": "Ada"})
    wait_until(lambda: inbox_settled(services), message="deliveries applied")
    customer = rpc.customer_sync.get_customer(STORE_ID, customer_id)
    assert (customer["first_name"], customer["last_name"]) == (FIRST, "King")
    assert len(events.of_type("customer.updated")) == 1

    with pytest.raises(ValidationError) as info:
        rpc.customer_sync.rectify_customer(STORE_ID, customer_id, {"email": "nope"}, "op")
    assert "email" in str(info.value)

    assert post(services, "order.created",
                payloads.order(7, customer_id=0, email="guest@example.com")).status_code == 200
    events.wait_for(lambda got: events.of_type("order.placed"))
    guest_id = rpc.customer_sync.find_customer(STORE_ID, "guest@example.com")["customer_id"]
    answer = rpc.customer_sync.rectify_customer(STORE_ID, guest_id, {"first_name": "Grace"}, "op")
    assert answer["written_to_shop"] is False and "guest" in answer["note"]
    assert rpc.customer_sync.get_customer(STORE_ID, guest_id)["first_name"] == "Grace"


def test_the_proof_search_over_rpc_leaves_a_housemates_phone_and_name_to_her(
        services, rpc, events):
    """Two customers share a phone and a name; the erased one's proof finds nothing of her,
    and the other's records (and stored deliveries) are hers, not traces."""
    housemate = payloads.customer(woo_id=43, email="ada.king@example.com", first_name=FIRST,
                                  last_name=LAST, username="ada", billing=person_address(
                                      "ada.king@example.com"), shipping=person_address())
    assert post(services, "customer.created", person_customer()).status_code == 200
    assert post(services, "customer.created", housemate).status_code == 200
    assert post(services, "order.created", person_order(1001)).status_code == 200
    assert post(services, "order.created", payloads.order(
        1002, customer_id=43, email="ada.king@example.com",
        billing=person_address("ada.king@example.com"))).status_code == 200
    events.wait_for(lambda got: len(events.of_type("order.placed")) == 2)
    wait_until(lambda: inbox_settled(services), message="deliveries applied")
    customer_id = rpc.customer_sync.find_customer(STORE_ID, EMAIL)["customer_id"]
    tied = [PHONE, f"{FIRST} {LAST}"]
    before = rpc.customer_sync.search_personal_data(STORE_ID, [EMAIL], tied, [customer_id])
    assert {m["collection"] for m in before["matches"]} == {"customers", "orders",
                                                            "webhook_inbox"}

    publish(services.amqp_uri, erasure_request([customer_id]))
    events.wait_for(lambda got: events.of_type("gdpr.erasure_completed"), timeout=15)
    assert rpc.customer_sync.search_personal_data(STORE_ID, [EMAIL], tied, [customer_id]) == {
        "service": "customer_sync", "matches": [], "ambiguous": []}
    # The plain search still sees the housemate's phone: hers, and kept.
    assert rpc.customer_sync.search_personal_data(STORE_ID, [PHONE])["matches"]
    assert rpc.customer_sync.find_customer(STORE_ID, "ada.king@example.com")["phone"] == PHONE
    with pytest.raises(ValidationError):
        rpc.customer_sync.search_personal_data(STORE_ID, [EMAIL], tied, [])
