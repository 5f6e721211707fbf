"""loyalty's use cases on an in-memory MongoDB: events and requests in, accounts, ledger and
owed events out."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from services.loyalty.accounts import Accounts
from services.loyalty.repository import JOURNAL, LoyaltyStorage
from shared.errors import Conflict, NotFound, ValidationError
from shared.events import build_event, contract
from shared.outbox import OUTBOX_FIELD
from tests.support import storage_at

T0 = datetime(2026, 6, 1, 12, tzinfo=timezone.utc)



@pytest.fixture
def setup(database):
    storage, clock = storage_at(LoyaltyStorage, database, T0)
    return storage, Accounts(storage, clock=clock), clock


def order_event(order_id: str, customer: str, total: int, *, status: str = "processing",
                refunded: int = 0, at: datetime = T0, event_type: str = "order.placed"):
    data = {**contract("order.placed").sample, "order_id": order_id, "number": order_id,
            "customer_id": customer, "status": status,
            "total": {"amount": total, "currency": "EUR"},
            "shipping_total": {"amount": 0, "currency": "EUR"},
            "tax_total": {"amount": 0, "currency": "EUR"},
            "total_refunded": {"amount": refunded, "currency": "EUR"},
            "date_created": at.isoformat(), "date_paid": None}
    if event_type == "order.refunded":
        data["refund_delta"] = {"amount": refunded, "currency": "EUR"}
    if event_type in ("order.cancelled", "order.updated"):
        data["old_status"] = "processing"
    if event_type == "order.updated":
        data.update(new_status=status, changed_fields=["status"])
    return build_event(event_type, store_id="s1", data=data, occurred_at=at)


def owed(storage) -> list[dict]:
    out = []
    for doc in storage.accounts.collection.find({f"{OUTBOX_FIELD}.0": {"$exists": True}}):
        out.extend(e["message"] for e in doc[OUTBOX_FIELD])
    return out


def ledger_sum(storage, customer: str) -> int:
    return sum(e["delta"] for e in storage.ledger.collection.find(
        {"store_id": "s1", "customer_id": customer, "book": "points"}))


def test_an_order_earns_once_and_says_so_once(setup):
    storage, accounts, _ = setup
    event = order_event("1", "c1", 4_990)
    accounts.apply_order_event(event)
    accounts.apply_order_event(event)  # redelivered
    accounts.apply_order_event(order_event("1", "c1", 4_990, status="completed",
                                           at=T0 + timedelta(minutes=1), event_type="order.updated"))
    view = accounts.account_view("s1", "c1")
    assert view["balance"] == 499 and view["tier"] == "bronze"
    assert view["cash_value"] == {"amount": 499, "currency": "EUR"}
    assert view["member_since"] == T0.isoformat()
    assert view["next_expiry"] == {"at": "2027-06-01T12:00:00+00:00", "points": 499}
    messages = owed(storage)
    points = [m for m in messages if m["event_type"] == "loyalty.points_changed"]
    assert [(m["data"]["kind"], m["data"]["delta"], m["data"]["balance"]) for m in points] == [
        ("earn", 499, 499)]
    tiers = [m["data"] for m in messages if m["event_type"] == "loyalty.tier_changed"]
    assert [(t["old_tier"], t["new_tier"]) for t in tiers] == [(None, "bronze")]
    # the ledger holds the entry, the journal is empty again, and the two agree with the balance
    assert ledger_sum(storage, "c1") == 499
    assert storage.accounts.collection.find_one({"_id": "s1:c1"})[JOURNAL] == []


def test_out_of_order_refund_first_then_the_late_placement(setup):
    storage, accounts, _ = setup
    accounts.apply_order_event(order_event("1", "c1", 10_000, refunded=2_500,
                                           at=T0 + timedelta(hours=1), event_type="order.refunded"))
    accounts.apply_order_event(order_event("1", "c1", 10_000, at=T0))  # older: ignored
    assert accounts.account_view("s1", "c1")["balance"] == 750
    assert ledger_sum(storage, "c1") == 750
    kinds = [e["kind"] for e in storage.ledger.collection.find().sort("seq", 1)]
    assert kinds == ["earn", "reverse"]


def test_requests_are_idempotent_by_request_id_and_refused_clearly(setup):
    storage, accounts, _ = setup
    accounts.apply_order_event(order_event("1", "c1", 20_000))  # 2,000 points
    first = accounts.redeem("s1", "c1", 500, request_id="r-1")
    again = accounts.redeem("s1", "c1", 500, request_id="r-1")
    assert first.answer == again.answer and [e["kind"] for e in first.answer["entries"]] == [
        "redeem"]
    assert first.answer["reward"]["state"] == "pending"  # no shop asked by Accounts alone
    view = accounts.account_view("s1", "c1")
    assert view["balance"] == 1_500 and view["rewards_pending"] == 1
    assert view["store_credit"] == {"amount": 0, "currency": "EUR"}
    with pytest.raises(Conflict, match="insufficient"):
        accounts.redeem("s1", "c1", 1_600, request_id="r-2")
    with pytest.raises(ValidationError, match="at least 100"):
        accounts.redeem("s1", "c1", 50)
    with pytest.raises(ValidationError):
        accounts.redeem("s1", "c1", "500")
    with pytest.raises(ValidationError, match="reason"):
        accounts.adjust("s1", "c1", 10, "", "ops")
    assert len(accounts.list_rewards("s1", "c1")["items"]) == 1  # nothing made on refusal


def test_history_pages_newest_first(setup):
    storage, accounts, clock = setup
    for n in range(7):
        clock.now = T0 + timedelta(minutes=n)
        accounts.apply_order_event(order_event(str(n), "c1", 1_000, at=clock.now))
    page = accounts.history("s1", "c1", {"size": 3})
    assert [e["key"] for e in page["items"]] == ["earn:6", "earn:5", "earn:4"]
    rest = accounts.history("s1", "c1", {"size": 10, "cursor": page["next_cursor"]})
    assert [e["key"] for e in rest["items"]] == ["earn:3", "earn:2", "earn:1", "earn:0"]
    assert rest["next_cursor"] is None
    with pytest.raises(ValidationError):
        accounts.history("s1", "c1", {"size": 0})


def test_a_journal_left_by_a_crash_is_still_in_history_and_swept_into_the_ledger(setup):
    storage, accounts, _ = setup
    accounts.apply_order_event(order_event("1", "c1", 1_000))
    entry = storage.ledger.collection.find_one()
    storage.ledger.collection.delete_many({})  # as if the process stopped before copying
    storage.accounts.collection.update_one({"_id": "s1:c1"}, {"$push": {JOURNAL: entry}})
    assert [e["key"] for e in accounts.history("s1", "c1", None)["items"]] == ["earn:1"]
    assert storage.ledger.sweep() == 1
    assert storage.ledger.sweep() == 0
    assert storage.ledger.collection.count_documents({}) == 1


def test_daily_run_expires_and_drops_tiers(setup):
    storage, accounts, clock = setup
    accounts.apply_order_event(order_event("1", "c1", 10_000))  # 1,000: silver
    assert accounts.account_view("s1", "c1")["tier"] == "silver"
    clock.now = T0 + timedelta(days=366)
    accounts.daily("s1", "c1")
    view = accounts.account_view("s1", "c1")
    assert view["balance"] == 0 and view["tier"] == "bronze"
    tiers = [m["data"] for m in owed(storage) if m["event_type"] == "loyalty.tier_changed"]
    assert (tiers[-1]["old_tier"], tiers[-1]["new_tier"], tiers[-1]["direction"]) == (
        "silver", "bronze", "down")
    assert ledger_sum(storage, "c1") == 0


def test_programme_is_validated_and_used(setup):
    storage, accounts, _ = setup
    with pytest.raises(ValidationError, match="tiers.1.min_points"):
        accounts.save_programme("s1", {"tiers": [
            {"name": "a", "min_points": 0, "max_points": 10, "rate": 1},
            {"name": "b", "min_points": 5, "max_points": None, "rate": 2}]})
    accounts.save_programme("s1", {"tiers": [
        {"name": "member", "min_points": 0, "max_points": None, "rate": 1}]})
    accounts.apply_order_event(order_event("1", "c1", 10_000))
    assert accounts.account_view("s1", "c1")["balance"] == 100


def test_erasure_keeps_anonymised_ledger_and_a_marker(setup):
    storage, accounts, _ = setup
    accounts.apply_order_event(order_event("1", "c1", 10_000))
    accounts.adjust("s1", "c1", 50, "called about her late parcel", "ops@shop")
    counts = accounts.erase("s1", ["c1", "c-none"], "req-1")
    assert counts == {"accounts": 1, "ledger_entries": 2, "coupons_to_withdraw": 0}
    marker = storage.accounts.collection.find_one({"_id": "s1:c1"})
    assert set(marker) == {"_id", "store_id", "customer_id", "version", "status", "erased_at",
                           "erasure_request_id", "had_account"}
    assert {e["reason"] for e in storage.ledger.collection.find()} == {"[erased]"}
    with pytest.raises(NotFound):
        accounts.account_view("s1", "c1")
    # a late event does not bring the account back
    accounts.apply_order_event(order_event("2", "c1", 10_000, at=T0 + timedelta(hours=1)))
    assert storage.accounts.collection.find_one({"_id": "s1:c1"})["status"] == "erased"
    assert accounts.erase("s1", ["c1", "c-none"], "req-1") == counts
