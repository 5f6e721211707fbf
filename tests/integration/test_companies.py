"""Companies on the real broker: customer_sync and segmentation as nameko services, the
local WooCommerce stand-in as the shop. Customers put in a company over RPC reach
segmentation through their `customer.updated` events, so `company_stats` and the customer
list's `company_id` filter follow; deleting the company releases them everywhere; and a store
turning matching on has the customers already there joined by the background sweep."""
from __future__ import annotations

import pytest
from nameko.standalone.rpc import ClusterRpcProxy

from demo.shop import FakeWooShop
from services.customer_sync.service import CustomerSyncService
from services.segmentation.service import SegmentationService
from shared.errors import NotFound
from tests.integration.test_customer_sync_crm import SECRET, STORE_ID, from_shop
from tests.support import wait_until


@pytest.fixture
def shop():
    with FakeWooShop(seed=11) as shop:
        yield shop


@pytest.fixture
def rpc(services, events, shop):
    events.listen("customer_sync")
    services.start(CustomerSyncService, WOO_MAX_RETRIES=1, TIMELINE_SWEEP_SECONDS=0.2,
                   COMPANY_SWEEP_SECONDS=0.2)
    services.start(SegmentationService)
    with ClusterRpcProxy({"AMQP_URI": services.amqp_uri}, timeout=30) as proxy:
        proxy.customer_sync.register_store({
            "store_id": STORE_ID, "shop_url": shop.base_url, "webhook_secret": SECRET,
            "consumer_key": shop.consumer_key, "consumer_secret": shop.consumer_secret})
        yield proxy


def orders_counted(rpc, customer_id: str) -> int | None:
    """The orders segmentation counted for a customer; None while it has no profile yet (its
    customer and order events come in batches, a moment after customer_sync published them)."""
    try:
        return rpc.segmentation.get_profile(STORE_ID, customer_id)["stats"]["orders_count"]
    except NotFound:
        return None


def members(rpc, company_id: str) -> list[str]:
    page = rpc.segmentation.search_customers(STORE_ID, {"company_id": company_id})
    assert all(row["company_id"] == company_id for row in page["items"])
    return sorted(row["customer_id"] for row in page["items"])


def test_membership_reaches_the_stats_and_the_list_and_a_deletion_takes_it_away(
        services, rpc, events, shop):
    customer_sync = rpc.customer_sync
    _, ada, ada_orders = from_shop(services, customer_sync, events, shop, orders=2)
    _, bob, bob_orders = from_shop(services, customer_sync, events, shop, orders=1)
    wait_until(lambda: orders_counted(rpc, bob) == 1, timeout=20, message="orders counted")
    company = customer_sync.create_company(STORE_ID, {"name": "Acme GmbH", "vat_id": "DE 123456789",
                                                      "address": {"city": "Berlin",
                                                                  "country": "DE"}}, "alice")
    company_id = company["company_id"]
    assert (company["vat_id"], company["member_count"]) == ("DE123456789", 0)
    for customer_id in (ada, bob):
        assert customer_sync.set_customer_company(STORE_ID, customer_id, company_id, "alice") \
            == {"customer_id": customer_id, "company_id": company_id, "changed": True}
    assert customer_sync.get_customer(STORE_ID, ada)["company_id"] == company_id
    assert customer_sync.get_company(STORE_ID, company_id)["member_count"] == 2
    assert customer_sync.company_names(STORE_ID, [company_id]) == {company_id: "Acme GmbH"}

    spent = sum(int(round(float(o["total"]) * 100)) for o in ada_orders + bob_orders)
    wait_until(lambda: rpc.segmentation.company_stats(STORE_ID, [company_id])[company_id][
        "members"] == 2, timeout=20, message="segmentation saw both join")
    stats = rpc.segmentation.company_stats(STORE_ID, [company_id])[company_id]
    assert (stats["orders_count"], stats["total_spent"]["amount"]) == (3, spent)
    assert stats["last_order_at"] is not None
    assert members(rpc, company_id) == sorted([ada, bob])
    joined = [e for e in events.of_type("customer.updated")
              if e["data"]["changed_fields"] == ["company_id"]]
    assert sorted(e["data"]["customer_id"] for e in joined) == sorted([ada, bob])

    deleted = customer_sync.delete_company(STORE_ID, company_id, "alice")
    assert deleted == {"company_id": company_id, "deleted": True, "members_released": 2}
    with pytest.raises(NotFound):
        customer_sync.get_company(STORE_ID, company_id)
    wait_until(lambda: rpc.segmentation.company_stats(STORE_ID, [company_id])[company_id][
        "members"] == 0, timeout=20, message="segmentation saw both leave")
    assert members(rpc, company_id) == []
    assert customer_sync.get_customer(STORE_ID, bob)["company_id"] is None
    left = [e for e in events.of_type("customer.updated")
            if e["data"]["changed_fields"] == ["company_id"] and e["data"]["company_id"] is None]
    assert sorted(e["data"]["customer_id"] for e in left) == sorted([ada, bob])


def test_turning_matching_on_joins_the_customers_already_there(services, rpc, events):
    customer_sync = rpc.customer_sync
    report = customer_sync.import_customers(STORE_ID, [
        {"line": 2, "email": "dora@acme.example"}, {"line": 3, "email": "emil@other.example"}],
        True, "alice")
    dora, emil = (row["customer_id"] for row in report["rows"])
    company_id = customer_sync.create_company(STORE_ID, {"name": "Acme",
                                                         "domain": "acme.example"},
                                              "alice")["company_id"]
    assert customer_sync.get_company_matching(STORE_ID) == {"match_email_domain": False}
    assert customer_sync.set_company_matching(STORE_ID, {"match_email_domain": True},
                                              "alice") == {"match_email_domain": True}
    wait_until(lambda: customer_sync.get_customer(STORE_ID, dora)["company_id"] == company_id,
               timeout=20, message="the sweep joined the customer")
    wait_until(lambda: members(rpc, company_id) == [dora], timeout=20,
               message="segmentation saw the customer join")
    assert customer_sync.get_customer(STORE_ID, emil)["company_id"] is None
    # A customer written from now on joins in the write that makes them.
    report = customer_sync.import_customers(STORE_ID, [{"line": 2, "email": "fritz@acme.example"}],
                                            True, "alice")
    fritz = report["rows"][0]["customer_id"]
    assert customer_sync.get_customer(STORE_ID, fritz)["company_id"] == company_id
    created = [e for e in events.of_type("customer.created") if e["data"]["customer_id"] == fritz]
    assert created and created[0]["data"]["company_id"] == company_id
