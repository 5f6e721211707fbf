"""Custom fields across services on the real broker: customer_sync, segmentation and
notifications as real services. A saved segment on a custom field gains a customer when
`set_custom_values` gives them the value and loses them when the value changes or is removed,
with the counts right; entering it starts a workflow whose email reads another custom field."""
from __future__ import annotations

import pytest
from nameko.standalone.rpc import ClusterRpcProxy

from demo.shop import FakeWooShop
from services.customer_sync.service import CustomerSyncService
from services.segmentation.service import SegmentationService
from tests.integration.test_customer_sync_crm import SECRET, inbox_settled, post
from tests.integration.test_notifications import start
from tests.support import EventBarrier, wait_until

STORE = "shop1"  # the store test_customer_sync_crm's webhook helper posts to
VIP = {"segment_id": "vip-list", "name": "VIP list",
       "conditions": [{"field": "custom.vip", "op": "eq", "value": True}]}
TEMPLATE = {"slug": "vip-hello", "channel": "email", "name": "VIP hello",
            "subject": "Welcome to the {{ customer.custom_fields.tier }} VIP list",
            "html": "<p>Your tier: {{ customer.custom_fields.tier }}; "
                    "account {{ customer.custom_fields.account_no }}.</p>",
            "text": "Your tier: {{ customer.custom_fields.tier }}; "
                    "account {{ customer.custom_fields.account_no }}."}
WORKFLOW = {"workflow_id": "vip-hello", "name": "Hello VIP", "trigger": {
    "event": "customer.saved_segment_entered", "segment_id": "vip-list"},
    "delay_seconds": 0, "channel": "email", "template": "vip-hello",
    "purpose": "transactional"}


@pytest.fixture
def shop():
    with FakeWooShop(seed=11) as shop:
        yield shop


@pytest.fixture
def rpc(services, smtp, twilio, shop):
    services.start(CustomerSyncService, WOO_MAX_RETRIES=1)
    services.start(SegmentationService)
    start(services, smtp, twilio)
    with ClusterRpcProxy({"AMQP_URI": services.amqp_uri}, timeout=30) as proxy:
        proxy.customer_sync.register_store({
            "store_id": STORE, "shop_url": shop.base_url, "webhook_secret": SECRET,
            "consumer_key": shop.consumer_key, "consumer_secret": shop.consumer_secret})
        yield proxy


def _customer(services, rpc, shop) -> tuple[str, str]:
    """A shop customer delivered by webhook, known to segmentation and notifications."""
    woo = shop.add_customer()
    assert post(services, "customer.created", shop.webhook_body("customer.created", woo["id"])).ok
    wait_until(lambda: inbox_settled(services), message="the delivery applied")
    customer_id = rpc.customer_sync.find_customer(STORE, woo["email"])["customer_id"]
    wait_until(lambda: _profile(rpc, customer_id) and _contact(rpc, customer_id), timeout=15,
               message="the customer in segmentation and notifications")
    return customer_id, woo["email"]


def _profile(rpc, customer_id: str) -> dict | None:
    try:
        return rpc.segmentation.get_profile(STORE, customer_id)
    except Exception:
        return None


def _contact(rpc, customer_id: str) -> dict | None:
    try:
        return rpc.notifications.export_customer(STORE, customer_id)["contact"]
    except Exception:
        return None


def _in_segments(rpc, customer_id: str) -> list:
    return rpc.segmentation.export_customer(STORE, customer_id)["saved_segments"]


def _members(rpc) -> list[tuple[str, int]]:
    return [(s["segment_id"], s["customers"]) for s in rpc.segmentation.list_segments(STORE)]


def _set_values(services, rpc, customer_id: str, values: dict, change: str) -> None:
    """Set the values and wait for segmentation to settle the change and for notifications to
    settle what segmentation said of it (`change`: entered, left or none)."""
    segmentation = EventBarrier(services, "segmentation").expect("customer.updated")
    notifications = EventBarrier(services, "notifications").expect(
        "customer.updated", "customer.saved_segment_entered", "customer.saved_segment_left")
    rpc.customer_sync.set_custom_values(STORE, customer_id, values, "alice")
    segmentation.settled("customer.updated")
    notifications.settled("customer.updated")
    if change != "none":
        notifications.settled(f"customer.saved_segment_{change}")


def test_a_saved_segment_on_a_custom_field_follows_the_values_and_its_workflow_reads_them(
        services, smtp, rpc, shop):
    fields = rpc.customer_sync
    fields.create_custom_field(STORE, {"key": "tier", "label": "Tier", "type": "choice",
                                       "options": ["Gold", "Silver"]}, "alice")
    fields.create_custom_field(STORE, {"key": "vip", "label": "VIP", "type": "boolean"}, "alice")
    fields.create_custom_field(STORE, {"key": "account_no", "label": "Account",
                                       "type": "text"}, "alice")
    rpc.notifications.save_store_settings(STORE, {"name": "Tea & Co",
                                                  "url": "https://tea.example"})
    rpc.notifications.save_template(STORE, TEMPLATE)
    rpc.notifications.save_workflow(STORE, WORKFLOW)
    assert rpc.segmentation.save_segment(STORE, VIP)["segment_id"] == "vip-list"
    ada, ada_email = _customer(services, rpc, shop)
    bo, _ = _customer(services, rpc, shop)

    # values that do not meet the condition: no one enters
    _set_values(services, rpc, ada, {"tier": "Gold", "account_no": "<b>T-1</b>", "vip": False},
                "none")
    _set_values(services, rpc, bo, {"tier": "Silver"}, "none")
    assert _members(rpc) == [("vip-list", 0)] and smtp.received == 0

    # the value that does: Ada enters, and the workflow's email carries her other values
    _set_values(services, rpc, ada, {"tier": "Gold", "account_no": "<b>T-1</b>", "vip": True},
                "entered")
    assert _in_segments(rpc, ada) == ["vip-list"]
    assert _members(rpc) == [("vip-list", 1)]
    found = rpc.segmentation.search_customers(STORE, {"saved_segment": "vip-list"})
    assert [c["customer_id"] for c in found["items"]] == [ada]
    [mail] = smtp.wait_for(1, timeout=15)
    assert mail["To"] == ada_email
    assert mail["Subject"] == "Welcome to the Gold VIP list"
    assert "Your tier: Gold; account <b>T-1</b>." in mail.get_body(("plain",)).get_content()
    assert "account &lt;b&gt;T-1&lt;/b&gt;." in mail.get_body(("html",)).get_content()

    # the value changed: she leaves, and leaving sends nothing
    _set_values(services, rpc, ada, {"tier": "Gold", "vip": False}, "left")
    assert _in_segments(rpc, ada) == [] and _members(rpc) == [("vip-list", 0)]
    assert sorted(_contact(rpc, ada).get("saved_segments") or {}) == []

    # back in, then every value removed: she leaves again
    _set_values(services, rpc, ada, {"vip": True}, "entered")
    assert _members(rpc) == [("vip-list", 1)]
    _set_values(services, rpc, ada, {}, "left")
    assert _members(rpc) == [("vip-list", 0)]
    assert _in_segments(rpc, bo) == []
    # the second entry's email: a customer without the values gets them empty, not a failure
    second = smtp.wait_for(2, timeout=15)[1]
    assert second["Subject"] == "Welcome to the VIP list"
    assert "Your tier: ; account ." in second.get_body(("plain",)).get_content()
    assert [s["status"] for s in rpc.notifications.send_log(STORE, ada)] == ["sent", "sent"]
