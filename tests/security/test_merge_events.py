"""Hostile merges at loyalty. customer.merged and customer.unmerged move points, rewards and
credit between accounts, so an event that names the same customer twice, an id no customer
could have, or a merge id of any size is refused naming the field (the handler parks it after
its retries) with nothing stored; and a merge or unmerge in one store never reaches another's
accounts."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from services.loyalty.accounts import Accounts
from services.loyalty.merges import Merges
from services.loyalty.repository import LoyaltyStorage
from shared.errors import ValidationError
from shared.events import build_event
from tests.support import Clock
from tests.unit.test_loyalty_accounts import order_event

T0 = datetime(2026, 6, 1, 12, tzinfo=timezone.utc)
MERGED = {"customer_id": "main", "merged_customer_id": "guest", "merge_id": "m-1"}
UNMERGED = {"customer_id": "main", "restored_customer_id": "guest", "merge_id": "m-1"}
HOSTILE = {
    "merged into itself": ("customer.merged", {"merged_customer_id": "main"},
                           "merged_customer_id"),
    "restored from itself": ("customer.unmerged", {"restored_customer_id": "main"},
                             "restored_customer_id"),
    "huge merge id": ("customer.merged", {"merge_id": "m" * 100_000}, "merge_id"),
    "blank merge id": ("customer.unmerged", {"merge_id": "  "}, "merge_id"),
    "control characters": ("customer.merged", {"merged_customer_id": "guest\n\x00"},
                           "merged_customer_id"),
    "huge customer id": ("customer.unmerged", {"customer_id": "c" * 100_000}, "customer_id"),
    "too many orders since": ("customer.unmerged",
                              {"orders_since": [str(n) for n in range(5_001)]}, "orders_since"),
    "huge order id since": ("customer.unmerged", {"orders_since": ["9" * 100_000]},
                            "orders_since"),
}


@pytest.fixture
def setup(database):
    storage = LoyaltyStorage(database)
    storage.ensure_indexes()
    accounts = Accounts(storage, clock=Clock(T0))
    accounts.apply_order_event(order_event("g1", "guest", 10_000, at=T0))
    accounts.apply_order_event(order_event("p1", "main", 10_000, at=T0))
    return storage, accounts, Merges(accounts)


def snapshot(storage) -> tuple[list, list, list]:
    return (list(storage.accounts.collection.find({}, {"outbox": 0})),
            list(storage.ledger.collection.find()), list(storage.merges.collection.find()))


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_hostile_merge_event_is_refused_naming_the_field_and_nothing_is_stored(setup, name):
    storage, _, merges = setup
    event_type, change, field = HOSTILE[name]
    base = MERGED if event_type == "customer.merged" else UNMERGED
    event = build_event(event_type, store_id="s1", data={**base, **change}, occurred_at=T0)
    before = snapshot(storage)
    apply = merges.apply_merge if event_type == "customer.merged" else merges.apply_unmerge
    with pytest.raises(ValidationError) as refused:
        apply(event)
    assert field in refused.value.details["fields"]
    assert snapshot(storage) == before


def test_a_merge_in_another_store_moves_nothing_here(setup):
    storage, accounts, merges = setup
    merges.apply_merge(build_event("customer.merged", store_id="s2", data=MERGED, occurred_at=T0))
    merges.apply_unmerge(build_event("customer.unmerged", store_id="s2", data=UNMERGED,
                                     occurred_at=T0))
    assert accounts.account_view("s1", "guest")["balance"] == 1_000
    assert accounts.account_view("s1", "guest")["status"] == "active"
    assert accounts.account_view("s1", "main")["balance"] == 1_000
    # and an unmerge here of a merge made there finds nothing to hand back
    merges.apply_unmerge(build_event("customer.unmerged", store_id="s1", data=UNMERGED,
                                     occurred_at=T0))
    assert storage.merges.get("s1", "m-1:guest")["state"] == "unmerged_first"
    assert accounts.account_view("s1", "main")["balance"] == 1_000
