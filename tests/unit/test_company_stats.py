"""Companies in segmentation: the profile keeps each customer's `company_id` from customer_sync's
`customer.*` events, the customer list filters and shows it, and `company_stats` adds up the
active members' stats, on an in-memory MongoDB with a pinned clock."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from devdoubles import mongomock_adapter
from services.segmentation import directory
from services.segmentation.company_stats import MAX_COMPANIES_ASKED, company_stats
from services.segmentation.profiles import Profiles
from services.segmentation.repository import SegmentationStorage
from shared.errors import ValidationError
from shared.events import build_event, contract
from tests.support import Clock

T0 = datetime(2026, 6, 1, 12, tzinfo=timezone.utc)
STORE = "s1"
ACME = "co_" + "a" * 24
BETA = "co_" + "b" * 24
EMPTY = "co_" + "e" * 24


def customer_event(customer_id: str, company_id: str | None, at: datetime,
                   event_type: str = "customer.created", store_id: str = STORE):
    data = {**contract(event_type).sample, "customer_id": customer_id,
            "email": f"{customer_id}@example.com", "company_id": company_id}
    if event_type == "customer.updated":
        data["changed_fields"] = ["company_id"]
    return build_event(event_type, store_id=store_id, data=data, occurred_at=at)


def order_event(order_id: str, customer_id: str, amount: int, created: datetime,
                store_id: str = STORE):
    data = {**contract("order.placed").sample, "order_id": order_id, "number": order_id,
            "customer_id": customer_id, "status": "processing",
            "total": {"amount": amount, "currency": "EUR"},
            "total_refunded": {"amount": 0, "currency": "EUR"},
            "date_created": created.isoformat()}
    return build_event("order.placed", store_id=store_id, data=data, occurred_at=created)


@pytest.fixture
def seeded():
    storage = SegmentationStorage(mongomock_adapter.client()["segmentation"])
    storage.ensure_indexes()
    profiles = Profiles(storage, clock=Clock(T0))
    for customer_id, company_id in (("c1", ACME), ("c2", ACME), ("c3", BETA), ("c4", None),
                                    ("c5", ACME)):
        profiles.apply_customer_event(customer_event(customer_id, company_id,
                                                     T0 - timedelta(days=30)))
    profiles.apply_order_event(order_event("1", "c1", 4990, T0 - timedelta(days=10)))
    profiles.apply_order_event(order_event("2", "c1", 1000, T0 - timedelta(days=5)))
    profiles.apply_order_event(order_event("3", "c2", 2500, T0 - timedelta(days=2)))
    profiles.apply_order_event(order_event("4", "c3", 700, T0 - timedelta(days=1)))
    profiles.apply_order_event(order_event("5", "c4", 9999, T0 - timedelta(days=1)))
    profiles.apply_order_event(order_event("6", "c5", 100_000, T0 - timedelta(days=1)))
    # c5 was deleted at the shop: no longer an active member.
    profiles.apply_customer_deleted(build_event(
        "customer.deleted", store_id=STORE, occurred_at=T0 - timedelta(hours=1),
        data={"customer_id": "c5", "woo_customer_id": 5}))
    # Another store's customer in a company with the same id counts nowhere here.
    profiles.apply_customer_event(customer_event("x1", ACME, T0 - timedelta(days=3),
                                                 store_id="s2"))
    profiles.apply_order_event(order_event("7", "x1", 5, T0, store_id="s2"))
    return storage, profiles


def test_stats_add_up_the_active_members_of_each_company_asked(seeded):
    storage, _ = seeded
    stats = company_stats(storage.profiles, STORE, [ACME, BETA, EMPTY, ACME])
    assert stats == {
        ACME: {"members": 2, "orders_count": 3,
               "total_spent": {"amount": 8490, "currency": "EUR"},
               "last_order_at": (T0 - timedelta(days=2)).isoformat()},
        BETA: {"members": 1, "orders_count": 1,
               "total_spent": {"amount": 700, "currency": "EUR"},
               "last_order_at": (T0 - timedelta(days=1)).isoformat()},
        EMPTY: {"members": 0, "orders_count": 0,
                "total_spent": {"amount": 0, "currency": None}, "last_order_at": None}}
    assert company_stats(storage.profiles, STORE, []) == {}


def test_leaving_a_company_moves_a_customer_out_of_its_stats_and_its_list(seeded):
    storage, profiles = seeded
    profiles.apply_customer_event(customer_event("c2", BETA, T0, "customer.updated"))
    stats = company_stats(storage.profiles, STORE, [ACME, BETA])
    assert (stats[ACME]["members"], stats[ACME]["total_spent"]["amount"]) == (1, 5990)
    assert (stats[BETA]["members"], stats[BETA]["total_spent"]["amount"]) == (2, 3200)
    profiles.apply_customer_event(customer_event("c3", None, T0 + timedelta(seconds=1),
                                                 "customer.updated"))
    listed = directory.search_customers(storage.profiles, STORE, {"company_id": BETA})
    assert [row["customer_id"] for row in listed["items"]] == ["c2"]


def test_the_list_filters_on_a_company_and_shows_each_rows_company(seeded):
    storage, _ = seeded
    listed = directory.search_customers(storage.profiles, STORE, {"company_id": ACME},
                                        {"field": "name", "direction": "asc"})
    assert sorted(row["customer_id"] for row in listed["items"]) == ["c1", "c2"]
    assert listed["total"] == 2
    assert {row["company_id"] for row in listed["items"]} == {ACME}
    every = directory.search_customers(storage.profiles, STORE)["items"]
    assert {row["customer_id"]: row["company_id"] for row in every} == {
        "c1": ACME, "c2": ACME, "c3": BETA, "c4": None}


@pytest.mark.parametrize("ids", [
    ["co_" + f"{n:024x}" for n in range(MAX_COMPANIES_ASKED + 1)],
    ["not-a-company"], [ACME.upper()], [None], "co_" + "a" * 24, {"ids": [ACME]},
])
def test_company_stats_takes_at_most_a_hundred_real_company_ids(seeded, ids):
    storage, _ = seeded
    with pytest.raises(ValidationError) as refused:
        company_stats(storage.profiles, STORE, ids)
    assert "company_ids" in refused.value.details["fields"]


@pytest.mark.parametrize("bad", ["co_123", ACME + "0", {"$ne": None}, 7, ""])
def test_the_list_refuses_a_company_filter_that_is_no_company_id(seeded, bad):
    storage, _ = seeded
    with pytest.raises(ValidationError) as refused:
        directory.search_customers(storage.profiles, STORE, {"company_id": bad})
    assert "company_id" in refused.value.details["fields"]["filters"]
