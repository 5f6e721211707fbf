"""Writes naming a customer who does not exist: refused with a 404 naming the customer, and
nothing stored anywhere (no phantom loyalty account, profile, tag, group or consent record).

Every write naming a customer asks customer_sync, the authority, about anyone the service does
not already hold; an id longer than any customer's is refused before any lookup.
"""
from __future__ import annotations

import json

import pytest
import requests
from nameko.standalone.rpc import ClusterRpcProxy

from services.customer_sync.service import CustomerSyncService
from services.customer_sync.door.signature import sign
from services.gdpr.service import GdprService
from services.loyalty.service import LoyaltyService
from services.segmentation.service import SegmentationService
from shared import mongo
from shared.customers import CUSTOMER_ID_MAX_LENGTH
from shared.errors import NotFound, ValidationError
from tests import payloads
from tests.gateway_system import STORE, shop, system  # noqa: F401 - fixtures
from tests.support import wait_until

PHANTOM = "phantom-customer-7f3a"
HUGE = "x" * 5_000


def traces(services, needle: str) -> list[str]:
    """Every document, in every database of the system, that mentions the needle."""
    client = mongo.connect(services.mongo_uri)
    found = []
    for db_name in client.list_database_names():
        for name in client[db_name].list_collection_names():
            for doc in client[db_name][name].find({}):
                if needle in json.dumps(doc, default=str):
                    found.append(f"{db_name}.{name}:{doc.get('_id')}")
    return found


def rpc_writes(rpc, customer_id: str) -> dict:
    """Every RPC write naming one customer, each a thunk."""
    return {
        "loyalty.adjust": lambda: rpc.loyalty.adjust(STORE, customer_id, 50, "goodwill", "ops"),
        "loyalty.issue_credit": lambda: rpc.loyalty.issue_credit(STORE, customer_id, 500,
                                                                 "goodwill", actor="ops"),
        "loyalty.redeem": lambda: rpc.loyalty.redeem(STORE, customer_id, 100),
        "loyalty.cancel_reward": lambda: rpc.loyalty.cancel_reward(STORE, customer_id,
                                                                   "any-reward", "ops"),
        "segmentation.tag": lambda: rpc.segmentation.tag(STORE, customer_id, ["vip"], "ops"),
        "segmentation.untag": lambda: rpc.segmentation.untag(STORE, customer_id, ["vip"], "ops"),
        "gdpr.set_consent": lambda: rpc.gdpr.set_consent(STORE, customer_id, "email_marketing",
                                                         True, "operator", "ops"),
    }


def test_an_rpc_write_naming_no_customer_is_not_found_and_stores_nothing(system):
    refused = {}
    for write, call in rpc_writes(system.rpc, PHANTOM).items():
        with pytest.raises(NotFound) as raised:
            call()
        refused[write] = str(raised.value)
    assert all(PHANTOM in message for message in refused.values()), refused
    assert traces(system.services, PHANTOM) == []


def test_an_rpc_write_naming_a_huge_id_is_refused_naming_the_field(system):
    for write, call in rpc_writes(system.rpc, HUGE).items():
        with pytest.raises(ValidationError) as raised:
            call()
        assert f"at most {CUSTOMER_ID_MAX_LENGTH} characters" in str(raised.value), write
        assert raised.value.details["fields"] == {"customer_id": ["too long"]}, write
    assert traces(system.services, HUGE[:100]) == []


def test_group_and_bulk_writes_answer_not_found_for_phantoms_and_act_on_the_rest(system):
    _, real = system.shop_customer(orders=1)
    system.rpc.segmentation.save_group(STORE, {"slug": "trade", "name": "Trade"})

    joined = system.rpc.segmentation.add_to_group(STORE, [real, PHANTOM], "trade", "ops")
    tagged = system.rpc.segmentation.bulk_tag(STORE, [PHANTOM, real], ["gift"], "ops")
    left = system.rpc.segmentation.remove_from_group(STORE, [PHANTOM], "trade", "ops")

    assert joined["results"] == {real: "changed", PHANTOM: "not found"}
    assert tagged["results"] == {PHANTOM: "not found", real: "tagged"}
    assert left["results"] == {PHANTOM: "not found"}
    with pytest.raises(ValidationError, match="customer_ids"):
        system.rpc.segmentation.bulk_tag(STORE, [HUGE], ["gift"], "ops")
    assert traces(system.services, PHANTOM) == []


API_WRITES = [
    ("POST", "/customers/{id}/loyalty/adjust", {"points": 50, "reason": "goodwill"}),
    ("POST", "/customers/{id}/loyalty/credit", {"amount": 500, "reason": "goodwill"}),
    ("POST", "/customers/{id}/loyalty/redeem", {"points": 100}),
    ("POST", "/customers/{id}/loyalty/rewards/reward-unknown/cancel", None),
    ("PUT", "/customers/{id}/consent", {"purpose": "email_marketing", "granted": True}),
    ("POST", "/customers/{id}/tags", {"tags": ["vip"]}),
    ("POST", "/customers/{id}/groups", {"groups": ["trade"]}),
]


def test_the_api_answers_404_naming_the_customer_and_stores_nothing(system):
    system.rpc.segmentation.save_group(STORE, {"slug": "trade", "name": "Trade"})
    client = system.client("read", "write", "gdpr")
    for method, path, body in API_WRITES:
        answer = client.request(method, path.format(id=PHANTOM), json=body)
        assert answer.status_code == 404, (path, answer.status_code, answer.text)
        assert answer.headers["Content-Type"].startswith("application/problem+json")
        assert PHANTOM in answer.json()["detail"], (path, answer.json())
    assert traces(system.services, PHANTOM) == []


def test_the_api_refuses_a_5000_character_id_with_a_400_naming_the_field(system):
    system.rpc.segmentation.save_group(STORE, {"slug": "trade", "name": "Trade"})
    client = system.client("read", "write", "gdpr")
    for method, path, body in API_WRITES:
        answer = client.request(method, path.format(id=HUGE), json=body)
        assert answer.status_code == 400, (path, answer.status_code, answer.text[:300])
        assert list(answer.json()["errors"].values()) == [["too long"]], (path, answer.json())
        assert f"at most {CUSTOMER_ID_MAX_LENGTH} characters" in answer.json()["detail"]
    assert traces(system.services, HUGE[:100]) == []


LOYALTY_READS = ["/customers/{id}/loyalty", "/customers/{id}/loyalty/history",
                 "/customers/{id}/loyalty/rewards",
                 "/customers/{id}/loyalty/redemption-quote?points=100"]


def test_loyalty_reads_refuse_a_5000_character_id_with_a_400_naming_the_field(system):
    client = system.client("read")
    for path in LOYALTY_READS:
        answer = client.get(path.format(id=HUGE))
        assert answer.status_code == 400, (path, answer.status_code, answer.text[:300])
        assert answer.json()["errors"] == {"customer_id": ["too long"]}, (path, answer.json())
        answer = client.get(path.format(id=PHANTOM))
        assert answer.status_code == 404, (path, answer.status_code, answer.text[:300])


def test_a_customer_the_services_have_not_heard_of_yet_is_asked_of_customer_sync(services):
    """The race the check must survive: customer_sync holds a customer whose customer.created
    never reached the others (they started after it was sent). Writes still succeed."""
    services.start(CustomerSyncService, RECONCILE_POLL_SECONDS="3600")
    secret = "whsec-phantom-race-1"
    with ClusterRpcProxy({"AMQP_URI": services.amqp_uri}, timeout=30) as rpc:
        rpc.customer_sync.register_store({
            "store_id": STORE, "shop_url": "https://shop.example", "webhook_secret": secret,
            "consumer_key": "ck", "consumer_secret": "cs"})
        raw = json.dumps(payloads.customer(woo_id=5, email="new@shop.example")).encode()
        answer = requests.post(f"{services.web_url}/webhooks/woocommerce/{STORE}", data=raw,
                               timeout=10, headers={"X-WC-Webhook-Topic": "customer.created",
                                                    "X-WC-Webhook-Signature": sign(raw, secret)})
        assert answer.status_code == 200, answer.text
        customer_id = wait_until(lambda: _customer_id(rpc), timeout=15, message="the customer")
        services.start(SegmentationService)
        services.start(LoyaltyService)
        services.start(GdprService, GDPR_PROCESS_SECONDS="3600")

        assert rpc.loyalty.adjust(STORE, customer_id, 25, "welcome", "ops")["entries"]
        assert rpc.segmentation.tag(STORE, customer_id, ["new"], "ops")["tags"][0]["tag"] == "new"
        consent = rpc.gdpr.set_consent(STORE, customer_id, "sms_marketing", True, "operator", "ops")
        assert consent["purposes"]["sms_marketing"]["granted"] is True


def _customer_id(rpc) -> str | None:
    try:
        return rpc.customer_sync.find_customer(STORE, "new@shop.example")["customer_id"]
    except NotFound:
        return None


API_READS = ["/customers/{id}/orders", "/customers/{id}/messages", "/customers/{id}/consent"]
# loyalty's reads of rewards: an unknown customer is a 404 as well, but an id no customer can
# have is looked up (and not found) rather than refused for its length.
LOYALTY_READS = ["/customers/{id}/loyalty/rewards",
                 "/customers/{id}/loyalty/redemption-quote?points=100"]


def test_the_api_reads_of_an_unknown_customer_are_404_not_an_empty_view(system):
    """An empty 200 would say the customer exists and has nothing: a probe for ids of other
    stores, and a console page for nobody."""
    client = system.client("read", "gdpr")
    for path in API_READS:
        answer = client.get(path.format(id=PHANTOM))
        assert answer.status_code == 404, (path, answer.status_code, answer.text)
        assert PHANTOM in answer.json()["detail"], (path, answer.json())
        huge = client.get(path.format(id=HUGE))
        assert huge.status_code == 400, (path, huge.status_code, huge.text[:300])
    _, real = system.shop_customer(orders=1)
    for path in API_READS:  # the customer's own reads still answer
        assert client.get(path.format(id=real)).status_code == 200, path


def test_leaving_a_group_and_a_bulk_send_naming_an_unknown_customer_are_refused(system):
    system.rpc.segmentation.save_group(STORE, {"slug": "trade", "name": "Trade"})
    client = system.client("write")
    assert client.put("/notifications/templates/hello",
                      json={"channel": "sms", "body": "Hi"}).status_code == 200
    _, real = system.shop_customer(orders=0)
    assert client.post(f"/customers/{real}/groups", json={"groups": ["trade"]}).status_code == 200

    left = client.delete(f"/customers/{PHANTOM}/groups/trade")
    assert left.status_code == 404 and PHANTOM in left.json()["detail"], left.text
    sent = client.post("/notifications/bulk-sends", json={
        "audience": {"customer_ids": [real, PHANTOM]}, "template": "hello",
        "purpose": "transactional"})
    assert sent.status_code in (400, 404), sent.text
    assert PHANTOM in sent.json()["detail"] and "customer_ids" in json.dumps(sent.json())
    notifications = mongo.connect(system.services.mongo_uri)["companion_notifications"]
    assert notifications["bulk_jobs"].count_documents({}) == 0  # nothing scheduled, even for
    assert notifications["sends"].count_documents({}) == 0  # the customer who exists
    assert traces(system.services, PHANTOM) == []


def test_the_reward_reads_of_an_unknown_customer_are_404_and_store_nothing(system):
    client = system.client("read")
    for path in LOYALTY_READS:
        answer = client.get(path.format(id=PHANTOM))
        assert answer.status_code == 404, (path, answer.status_code, answer.text)
        assert PHANTOM in answer.json()["detail"], (path, answer.json())
        huge = client.get(path.format(id=HUGE))
        assert huge.status_code in (400, 404), (path, huge.status_code, huge.text[:300])
    _, real = system.shop_customer(orders=1)
    wait_until(lambda: client.get(LOYALTY_READS[0].format(id=real)).status_code == 200,
               timeout=20, message="the customer's loyalty account")
    quote = client.get(LOYALTY_READS[1].format(id=real))
    assert quote.status_code == 200 and "allowed" in quote.json(), quote.text
    assert traces(system.services, PHANTOM) == [] and traces(system.services, HUGE[:100]) == []
