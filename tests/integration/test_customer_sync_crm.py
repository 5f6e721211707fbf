"""customer_sync's staff RPCs on the real broker, with the local WooCommerce stand-in: an edit
written back to the shop, account status, deletion with each orders option, import, and
notes, reminders and the timeline."""
from __future__ import annotations

import json

import pytest
import requests
from nameko.standalone.rpc import ClusterRpcProxy

from services.customer_sync.service import CustomerSyncService
from services.customer_sync.door.signature import sign
from shared import mongo
from shared.errors import NotFound, Unavailable
from demo.shop import FakeWooShop
from tests.support import wait_until

SECRET = "whsec-test-1234"
STORE_ID = "shop1"


@pytest.fixture
def shop():
    with FakeWooShop(seed=7) as shop:
        yield shop


@pytest.fixture
def rpc(services, events, shop):
    events.listen("customer_sync")
    services.start(CustomerSyncService, WOO_MAX_RETRIES=1, TIMELINE_SWEEP_SECONDS=0.2)
    with ClusterRpcProxy({"AMQP_URI": services.amqp_uri}, timeout=30) as proxy:
        proxy.customer_sync.register_store({
            "store_id": STORE_ID, "shop_url": shop.base_url, "webhook_secret": SECRET,
            "consumer_key": shop.consumer_key, "consumer_secret": shop.consumer_secret})
        yield proxy.customer_sync


def database(services):
    return mongo.connect(services.mongo_uri)["companion_customer_sync"]


def post(services, topic: str, body: bytes) -> requests.Response:
    headers = {"Content-Type": "application/json", "X-WC-Webhook-Topic": topic,
               "X-WC-Webhook-ID": "3", "X-WC-Webhook-Delivery-ID": "hash",
               "X-WC-Webhook-Signature": sign(body, SECRET)}
    return requests.post(f"{services.web_url}/webhooks/woocommerce/{STORE_ID}", data=body,
                         headers=headers, timeout=10)


def inbox_settled(services) -> bool:
    return database(services)["webhook_inbox"].count_documents(
        {"status": {"$in": ["pending", "processing"]}}) == 0


def from_shop(services, rpc, events, shop, orders: int = 0) -> tuple[dict, str, list[dict]]:
    """A shop customer (and orders) delivered here by webhook, as the shop would."""
    woo = shop.add_customer()
    assert post(services, "customer.created", shop.webhook_body("customer.created", woo["id"])).ok
    placed = []
    for _ in range(orders):
        order = shop.add_order(customer_id=woo["id"])
        assert post(services, "order.created", shop.webhook_body("order.created", order["id"])).ok
        placed.append(order)
    wait_until(lambda: inbox_settled(services), message="deliveries applied")
    events.wait_for(lambda got: len([e for e in events.of_type("order.placed")
                                     if e["data"]["order_id"] in {str(o["id"]) for o in placed}])
                    == orders and events.of_type("customer.created"))
    customer_id = rpc.find_customer(STORE_ID, woo["email"])["customer_id"]
    return woo, customer_id, placed


def about(events, event_type: str, customer_id: str) -> list[dict]:
    return [e for e in events.of_type(event_type) if e["data"].get("customer_id") == customer_id]


def test_a_staff_edit_reaches_the_shop_and_publishes_once(services, rpc, events, shop):
    woo, customer_id, _ = from_shop(services, rpc, events, shop)
    shop.clock.advance(60)
    answer = rpc.update_customer(STORE_ID, customer_id,
                                 {"first_name": "Renée", "billing": {"city": "Ockham"}}, "alice")
    assert answer["written_to_shop"] is True and answer["customer"]["first_name"] == "Renée"
    assert shop.customers[woo["id"]]["first_name"] == "Renée"
    assert shop.customers[woo["id"]]["billing"]["city"] == "Ockham"
    events.wait_for(lambda got: about(events, "customer.updated", customer_id))
    # The shop's webhook for the change it made comes too: nothing more is published.
    assert post(services, "customer.updated",
                shop.webhook_body("customer.updated", woo["id"])).ok
    wait_until(lambda: inbox_settled(services), message="deliveries applied")
    [updated] = about(events, "customer.updated", customer_id)
    assert set(updated["data"]["changed_fields"]) == {"first_name", "billing"}
    timeline = rpc.timeline(STORE_ID, customer_id)["items"]
    assert (timeline[0]["kind"], timeline[0]["actor"]) == ("customer.staff_edit", "alice")

    shop.fail_next(10, status=503)
    with pytest.raises(Unavailable):
        rpc.update_customer(STORE_ID, customer_id, {"first_name": "Never"}, "alice")
    assert rpc.get_customer(STORE_ID, customer_id)["first_name"] == "Renée"


def test_account_status_change_is_published(services, rpc, events, shop):
    _, customer_id, _ = from_shop(services, rpc, events, shop)
    answer = rpc.set_account_status(STORE_ID, [customer_id, "nobody"], "inactive", "alice")
    assert [r["outcome"] for r in answer["results"]] == ["changed", "not_found"]
    events.wait_for(lambda got: about(events, "customer.updated", customer_id))
    [event] = about(events, "customer.updated", customer_id)
    assert event["data"]["account_status"] == "inactive"
    assert event["data"]["changed_fields"] == ["account_status"]
    assert rpc.set_account_status(STORE_ID, [customer_id], "inactive", "bob")["results"][0][
        "outcome"] == "unchanged"
    assert rpc.list_customers(STORE_ID)["items"][0]["customer_id"] == customer_id


@pytest.mark.parametrize("mode", ["anonymise", "delete"])
def test_delete_customers_with_each_orders_option(services, rpc, events, shop, mode):
    woo, customer_id, orders = from_shop(services, rpc, events, shop, orders=2)
    rpc.add_note(STORE_ID, customer_id, {"category": "general", "text": "Prefers email"}, "alice")
    answer = rpc.delete_customers(STORE_ID, [customer_id, "nobody"], mode, "alice")
    assert answer["results"] == [
        {"customer_id": customer_id, "outcome": "deleted", "orders": 2},
        {"customer_id": "nobody", "outcome": "not_found", "orders": 0}]
    assert woo["id"] not in shop.customers
    events.wait_for(lambda got: about(events, "customer.deleted", customer_id))
    db = database(services)
    local_orders = list(db["orders"].find({"customer_id": customer_id}))
    if mode == "anonymise":
        assert all(o["id"] in shop.orders for o in orders)
        assert all(o["personal_data_erased"] and o["billing"]["email"] == "" for o in local_orders)
        assert not about(events, "order.cancelled", customer_id)
    else:
        assert all(o["id"] not in shop.orders for o in orders)
        assert [o["status"] for o in local_orders] == ["deleted", "deleted"]
        events.wait_for(lambda got: len(about(events, "order.cancelled", customer_id)) == 2)
    with pytest.raises(NotFound):
        rpc.list_notes(STORE_ID, "nobody")
    assert rpc.list_notes(STORE_ID, customer_id) == []
    doc = db["customers"].find_one({"_id": customer_id})
    assert doc["status"] == "deleted" and woo["email"] not in json.dumps(doc, default=str)

    # The shop's own customer.deleted webhook then changes and publishes nothing more.
    assert post(services, "customer.deleted", b'{"id":%d}' % woo["id"]).ok
    wait_until(lambda: inbox_settled(services), message="deliveries applied")
    assert len(about(events, "customer.deleted", customer_id)) == 1


ROWS = [
    {"line": 2, "email": "lena@example.com", "first_name": "Lena", "billing_country": "AT"},
    {"line": 3, "email": "broken", "first_name": "Broken"},
    {"line": 4, "email": "LENA@example.com", "first_name": "Lena again"},
    {"line": 5, "email": "max@example.com", "phone": "+43 660 1234", "billing_country": "Austria"},
    {"line": 6, "email": "jo@example.com", "company": "Jo GmbH"},
]


def test_import_dry_run_apply_and_reapply(services, rpc, events, shop):
    dry = rpc.import_customers(STORE_ID, ROWS, False, "alice")
    assert [r["outcome"] for r in dry["rows"]] == ["create", "invalid", "duplicate_in_file",
                                                  "invalid", "create"]
    assert database(services)["customers"].count_documents({}) == 0

    applied = rpc.import_customers(STORE_ID, ROWS, True, "alice")
    assert applied["summary"]["created"] == 2 and applied["summary"]["invalid"] == 2
    assert applied["rows"][3]["errors"] == {"billing_country": ["must be a two-letter ISO 3166 code"]}
    events.wait_for(lambda got: len(events.of_type("customer.created")) == 2)
    assert {e["data"]["email"] for e in events.of_type("customer.created")} == {
        "lena@example.com", "jo@example.com"}
    assert all(e["data"]["registered"] is False for e in events.of_type("customer.created"))
    assert not shop.customers  # companion-only contacts: no shop accounts, no emails sent

    again = rpc.import_customers(STORE_ID, ROWS, True, "alice")
    assert again["summary"]["created"] == 0 and again["summary"]["exists"] == 2
    assert database(services)["customers"].count_documents({}) == 2
    wait_until(lambda: True)
    assert len(events.of_type("customer.created")) == 2


def test_notes_reminders_and_timeline_over_rpc(services, rpc, events, shop):
    _, customer_id, orders = from_shop(services, rpc, events, shop, orders=1)
    note = rpc.add_note(STORE_ID, customer_id, {"category": "follow-up", "text": "Send samples"},
                        "alice")
    rpc.update_note(STORE_ID, note["note_id"], {"category": "meeting"}, "bob")
    assert [n["category"] for n in rpc.list_notes(STORE_ID, customer_id)] == ["meeting"]
    reminder = rpc.add_reminder(STORE_ID, customer_id,
                                {"due_at": "2026-06-01T09:00:00+00:00", "text": "Follow up"},
                                "alice")
    assert [r["reminder_id"] for r in rpc.list_reminders(STORE_ID)] == [reminder["reminder_id"]]
    rpc.complete_reminder(STORE_ID, reminder["reminder_id"], "bob")
    assert rpc.list_reminders(STORE_ID, customer_id) == []
    rpc.delete_note(STORE_ID, note["note_id"], "alice")

    kinds = [e["kind"] for e in rpc.timeline(STORE_ID, customer_id, {"size": 50})["items"]]
    assert set(kinds) >= {"note.added", "note.edited", "note.deleted", "reminder.added",
                          "reminder.completed", "order.placed", "customer.created"}
    first = rpc.timeline(STORE_ID, customer_id, {"size": 3})
    rest = rpc.timeline(STORE_ID, customer_id, {"size": 50, "cursor": first["next_cursor"]})
    assert len(first["items"]) + len(rest["items"]) == len(kinds)
    with pytest.raises(NotFound):
        rpc.add_note(STORE_ID, "nobody", {"category": "general", "text": "x"}, "alice")


def test_other_services_events_reach_the_timeline_once(services, rpc, events, shop):
    from shared.events import build_event, contract
    from tests.support import publish

    _, customer_id, _ = from_shop(services, rpc, events, shop)
    messages = [build_event(t, store_id=STORE_ID,
                            data={**contract(t).sample, "customer_id": customer_id}).to_message()
                for t in ("customer.tagged", "customer.segment_changed", "loyalty.points_changed",
                          "loyalty.reward_issued", "loyalty.reward_used", "loyalty.reward_returned",
                          "loyalty.reward_expired", "notification.sent")]
    unknown = build_event("customer.tagged", store_id=STORE_ID,
                          data={**contract("customer.tagged").sample,
                                "customer_id": "nobody"}).to_message()
    publish(services.amqp_uri, *messages, unknown)
    publish(services.amqp_uri, messages[0])  # a redelivery

    def foreign():
        return [e for e in rpc.timeline(STORE_ID, customer_id, {"size": 50})["items"]
                if e["actor"] != "shop"]
    wait_until(lambda: len(foreign()) == len(messages), timeout=15, message="one entry each")
    assert {e["entry_id"] for e in foreign()} == {m["event_id"] for m in messages}
    summaries = {e["kind"]: e["summary"] for e in foreign()}
    assert summaries["loyalty.reward_issued"] == "Reward (500 points) 5.00 EUR issued"
    assert summaries["loyalty.reward_used"] == "Reward (500 points) 5.00 EUR used on order 1002"
    assert summaries["loyalty.reward_returned"] == (
        "Reward (500 points) 5.00 EUR returned, 500 points back")
    assert database(services)["timeline"].count_documents({"customer_id": "nobody"}) == 0
