"""The customer list on the real broker: customer_sync's events in, `search_customers` over
RPC out, with the stats, segment and tags segmentation derived from them."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from nameko.standalone.rpc import ClusterRpcProxy

from services.segmentation.service import SegmentationService
from shared.errors import ValidationError
from shared.events import build_event, contract
from tests.support import publish, wait_until

STORE = "dir"
NOW = datetime.now(timezone.utc).replace(microsecond=0)


@pytest.fixture
def rpc(services):
    services.start(SegmentationService)
    with ClusterRpcProxy({"AMQP_URI": services.amqp_uri}, timeout=20) as proxy:
        yield proxy


def customer(event_type: str, customer_id: str, first: str, last: str, at: datetime) -> dict:
    data = {**contract(event_type).sample, "customer_id": customer_id, "first_name": first,
            "last_name": last, "email": f"{first}.{last}@example.com".lower(),
            "billing": {**contract(event_type).sample["billing"], "city": "Leeds",
                        "country": "GB"},
            "date_created": (NOW - timedelta(days=10)).isoformat()}
    return build_event(event_type, store_id=STORE, data=data, occurred_at=at).to_message()


def order(order_id: str, customer_id: str, amount: int) -> dict:
    data = {**contract("order.placed").sample, "order_id": order_id, "number": order_id,
            "customer_id": customer_id, "status": "processing",
            "total": {"amount": amount, "currency": "EUR"},
            "total_refunded": {"amount": 0, "currency": "EUR"},
            "date_created": (NOW - timedelta(days=2)).isoformat()}
    return build_event("order.placed", store_id=STORE, data=data, occurred_at=NOW).to_message()


def test_the_list_finds_a_customer_with_their_stats_and_follows_a_name_change(services, rpc):
    publish(services.amqp_uri,
            customer("customer.created", "c-ada", "Ada", "Lovelace", NOW - timedelta(minutes=5)),
            customer("customer.created", "c-alan", "Alan", "Turing", NOW - timedelta(minutes=5)),
            order("7001", "c-ada", 4990), order("7002", "c-ada", 12_500))

    def found():
        items = rpc.segmentation.search_customers(STORE, {"q": "lovelace"})["items"]
        return items if items and items[0]["stats"]["orders_count"] == 2 else None

    [row] = wait_until(found, timeout=15, message="Ada listed with both orders")
    assert row["customer_id"] == "c-ada" and row["name"] == "Ada Lovelace"
    assert row["email"] == "ada.lovelace@example.com" and row["city"] == "Leeds"
    assert row["segment"] == "new" and row["account_status"] == "active"
    assert row["stats"]["total_spent"] == {"amount": 17_490, "currency": "EUR"}
    assert row["stats"]["average_order_value"] == {"amount": 8_745, "currency": "EUR"}
    assert datetime.fromisoformat(row["stats"]["last_order_at"]) == NOW - timedelta(days=2)

    everyone = rpc.segmentation.search_customers(
        STORE, {"country": "GB"}, {"field": "total_spent", "direction": "desc"}, {"size": 1})
    assert everyone["total"] == 2 and [i["customer_id"] for i in everyone["items"]] == ["c-ada"]
    rest = rpc.segmentation.search_customers(
        STORE, {"country": "GB"}, {"field": "total_spent", "direction": "desc"},
        {"size": 1, "cursor": everyone["next_cursor"]})
    assert [i["customer_id"] for i in rest["items"]] == ["c-alan"] and rest["next_cursor"] is None
    with pytest.raises(ValidationError, match="cursor"):
        rpc.segmentation.search_customers(STORE, {"country": "FR"}, None,
                                          {"cursor": everyone["next_cursor"]})
    with pytest.raises(ValidationError, match="colour"):
        rpc.segmentation.search_customers(STORE, {"colour": "red"})

    rpc.segmentation.tag(STORE, "c-ada", ["gift"])
    rpc.segmentation.tag(STORE, "c-alan", ["gift", "b2b"])
    assert [(t["tag"], t["customers"]) for t in rpc.segmentation.list_tags(STORE)] == [
        ("b2b", 1), ("gift", 2)]
    for slug in ("trade", "staff"):
        rpc.segmentation.save_group(STORE, {"slug": slug, "name": slug.title()})
    rpc.segmentation.add_to_group(STORE, ["c-alan"], "trade")
    assert [(g["slug"], g["customers"]) for g in rpc.segmentation.list_groups(STORE)] == [
        ("staff", 0), ("trade", 1)]
    assert [i["customer_id"] for i in rpc.segmentation.search_customers(
        STORE, {"groups": ["trade"], "tags": ["gift"]})["items"]] == ["c-alan"]

    # she marries: the next customer event renames her in the list
    publish(services.amqp_uri, customer("customer.updated", "c-ada", "Ada", "King", NOW))
    wait_until(lambda: rpc.segmentation.search_customers(STORE, {"q": "king"})["total"] == 1,
               timeout=15, message="the new name listed")
    assert rpc.segmentation.search_customers(STORE, {"q": "lovelace"})["total"] == 0
    [renamed] = rpc.segmentation.search_customers(
        STORE, {"tags": ["gift"]}, {"field": "name", "direction": "asc"}, {"size": 1})["items"]
    assert renamed["last_name"] == "King" and renamed["stats"]["orders_count"] == 2
