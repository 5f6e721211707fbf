"""loyalty's merge and unmerge use cases on an in-memory MongoDB: customer_sync's
customer.merged / customer.unmerged in (twice, late, in either order), accounts, ledger, merge
notes and owed events out (the rules alone: test_loyalty_merge_rules.py)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from services.loyalty.accounts import Accounts
from services.loyalty.merges import Merges
from services.loyalty.repository import LoyaltyStorage
from shared.events import build_event
from tests.support import storage_at
from tests.unit.test_loyalty_accounts import ledger_sum, order_event, owed

T0 = datetime(2026, 6, 1, 12, tzinfo=timezone.utc)


@pytest.fixture
def setup(database):
    storage, clock = storage_at(LoyaltyStorage, database, T0)
    accounts = Accounts(storage, clock=clock)
    return storage, accounts, Merges(accounts), clock


def merged(primary: str, guest: str, merge_id: str | None = "m-1", kind: str = "guest"):
    return build_event("customer.merged", store_id="s1", data={
        "customer_id": primary, "merged_customer_id": guest, "merge_id": merge_id,
        "kind": kind}, occurred_at=T0)


def unmerged(primary: str, guest: str, merge_id: str = "m-1", orders_since: tuple = ()):
    return build_event("customer.unmerged", store_id="s1", data={
        "customer_id": primary, "restored_customer_id": guest, "merge_id": merge_id,
        "orders_since": list(orders_since)}, occurred_at=T0)


def points_messages(storage, customer: str) -> list[tuple]:
    return [(m["data"]["kind"], m["data"]["delta"], m["data"]["balance"]) for m in owed(storage)
            if m["event_type"] == "loyalty.points_changed" and m["data"]["customer_id"] == customer]


def tiers(storage, customer: str) -> list[tuple]:
    return [(m["data"]["old_tier"], m["data"]["new_tier"]) for m in owed(storage)
            if m["event_type"] == "loyalty.tier_changed" and m["data"]["customer_id"] == customer]


def test_a_merge_moves_the_account_closes_it_and_a_redelivery_adds_nothing(setup):
    storage, accounts, merges, _ = setup
    accounts.apply_order_event(order_event("g1", "guest", 8_000, at=T0 - timedelta(days=30)))
    accounts.apply_order_event(order_event("p1", "main", 3_000, at=T0 - timedelta(days=3)))
    merges.apply_merge(merged("main", "guest"))
    merges.apply_merge(merged("main", "guest"))  # redelivered
    main, guest = accounts.account_view("s1", "main"), accounts.account_view("s1", "guest")
    assert (main["balance"], main["tier"]) == (1_100, "silver")
    assert (guest["balance"], guest["status"], guest["tier"]) == (0, "merged", "bronze")
    assert main["next_expiry"] == {"at": "2027-05-02T12:00:00+00:00", "points": 800}
    assert points_messages(storage, "guest") == [("earn", 800, 800), ("merge_out", -800, 0)]
    assert points_messages(storage, "main") == [("earn", 300, 300), ("merge_in", 800, 1_100)]
    assert tiers(storage, "main") == [(None, "bronze"), ("bronze", "silver")]
    assert tiers(storage, "guest") == [(None, "bronze")]
    assert ledger_sum(storage, "main") == 1_100 and ledger_sum(storage, "guest") == 0
    assert accounts.ledger_check("s1", "main")["ok"] and accounts.ledger_check("s1", "guest")["ok"]
    note = storage.merges.get("s1", "m-1:guest")
    assert (note["state"], note["primary"], note["kind"]) == ("merged", "main", "guest")
    assert note["moved"] == {"points": 800, "credit": 0, "lots": 1, "rewards": [], "orders": 1}


def test_an_order_naming_the_merged_record_is_credited_to_the_primary_once(setup):
    storage, accounts, merges, _ = setup
    placed = order_event("g1", "guest", 10_000, at=T0 - timedelta(days=1))
    accounts.apply_order_event(placed)
    merges.apply_merge(merged("main", "guest"))
    accounts.apply_order_event(placed)  # redelivered late: the primary holds its earning
    accounts.apply_order_event(order_event("g2", "guest", 5_000, at=T0))  # late, new
    refunded = order_event("g1", "guest", 10_000, status="refunded", refunded=10_000,
                           at=T0 + timedelta(hours=1), event_type="order.refunded")
    accounts.apply_order_event(refunded)
    # 1,000 moved (silver: g2 earns 12 a unit), 600 for g2, the 1,000 of g1 reversed
    assert accounts.account_view("s1", "main")["balance"] == 600
    assert accounts.account_view("s1", "guest")["balance"] == 0
    assert [k for k, _, _ in points_messages(storage, "main")] == ["merge_in", "earn", "reverse"]
    assert ledger_sum(storage, "main") == 600


def test_unmerge_hands_back_what_remains_and_what_came_since_stays(setup):
    storage, accounts, merges, clock = setup
    accounts.apply_order_event(order_event("g1", "guest", 10_000, at=T0 - timedelta(days=60)))
    accounts.apply_order_event(order_event("p1", "main", 5_000, at=T0 - timedelta(days=5)))
    merges.apply_merge(merged("main", "guest"))
    clock.now = T0 + timedelta(days=3)
    accounts.adjust("s1", "main", -700, "spent at the counter", "ops@shop", request_id="a1")
    accounts.apply_order_event(order_event("p2", "main", 2_000, at=clock.now))  # since: stays
    merges.apply_unmerge(unmerged("main", "guest"))
    merges.apply_unmerge(unmerged("main", "guest"))  # redelivered
    guest, main = accounts.account_view("s1", "guest"), accounts.account_view("s1", "main")
    assert (guest["status"], guest["balance"]) == ("active", 300)  # 1,000 less the oldest 700
    assert main["balance"] == 500 + 240  # p2 earned at silver, which the merge brought
    assert points_messages(storage, "guest")[-1] == ("unmerge_in", 300, 300)
    assert points_messages(storage, "main")[-2:] == [("earn", 240, 1_040),
                                                     ("unmerge_out", -300, 740)]
    assert ledger_sum(storage, "guest") == 300 and ledger_sum(storage, "main") == 740
    assert accounts.ledger_check("s1", "main")["ok"] and accounts.ledger_check("s1", "guest")["ok"]
    note = storage.merges.get("s1", "m-1:guest")
    assert note["state"] == "unmerged" and note["handed_back"]["points"] == 300
    # the restored record earns on its own account again
    accounts.apply_order_event(order_event("g3", "guest", 1_000, at=clock.now))
    assert accounts.account_view("s1", "guest")["balance"] == 300 + 120  # silver: its own 1,000


def test_an_unmerge_before_its_merge_leaves_a_marker_and_the_late_merge_does_nothing(setup):
    storage, accounts, merges, _ = setup
    accounts.apply_order_event(order_event("g1", "guest", 10_000, at=T0))
    merges.apply_unmerge(unmerged("main", "guest"))
    merges.apply_merge(merged("main", "guest"))
    assert storage.merges.get("s1", "m-1:guest")["state"] == "unmerged_first"
    guest = accounts.account_view("s1", "guest")
    assert (guest["status"], guest["balance"]) == ("active", 1_000)
    assert storage.accounts.get("s1", "main") is None


def test_a_merge_interrupted_between_its_two_accounts_is_finished_once(setup, monkeypatch):
    storage, accounts, merges, _ = setup
    accounts.apply_order_event(order_event("g1", "guest", 10_000, at=T0))
    real_change, calls = accounts.change, []

    def crash_on_the_primary(store_id, customer_id, *args, **kwargs):
        calls.append(customer_id)
        if customer_id == "main" and calls.count("main") == 1:
            raise ConnectionError("the worker died")
        return real_change(store_id, customer_id, *args, **kwargs)

    monkeypatch.setattr(accounts, "change", crash_on_the_primary)
    with pytest.raises(ConnectionError):
        merges.apply_merge(merged("main", "guest"))
    assert storage.merges.get("s1", "m-1:guest")["state"] == "merging"
    merges.apply_merge(merged("main", "guest"))  # the retry
    merges.apply_merge(merged("main", "guest"))
    assert accounts.account_view("s1", "main")["balance"] == 1_000
    assert points_messages(storage, "guest") == [("earn", 1_000, 1_000), ("merge_out", -1_000, 0)]
    assert points_messages(storage, "main") == [("merge_in", 1_000, 1_000)]


def test_a_merge_of_a_record_never_seen_moves_nothing_and_closes_it(setup):
    storage, accounts, merges, _ = setup
    accounts.apply_order_event(order_event("p1", "main", 1_000, at=T0))
    merges.apply_merge(merged("main", "ghost"))
    assert storage.merges.get("s1", "m-1:ghost")["moved"]["points"] == 0
    assert accounts.account_view("s1", "ghost")["status"] == "merged"
    accounts.apply_order_event(order_event("x1", "ghost", 2_000, at=T0))
    assert accounts.account_view("s1", "main")["balance"] == 300
    assert accounts.account_view("s1", "ghost")["balance"] == 0


def test_an_unmerge_finds_a_merge_recorded_before_merge_ids(setup):
    storage, accounts, merges, _ = setup
    accounts.apply_order_event(order_event("g1", "guest", 10_000, at=T0))
    merges.apply_merge(merged("main", "guest", merge_id=None))
    assert accounts.account_view("s1", "main")["balance"] == 1_000
    merges.apply_unmerge(unmerged("main", "guest", merge_id="m-assigned-later"))
    assert accounts.account_view("s1", "guest")["balance"] == 1_000
    assert accounts.account_view("s1", "main")["balance"] == 0
    assert storage.merges.get("s1", "legacy:main:guest")["state"] == "unmerged"


def test_the_primarys_export_shows_what_moved_and_erasing_the_merged_record_works(setup):
    storage, accounts, merges, _ = setup
    accounts.apply_order_event(order_event("g1", "guest", 10_000, at=T0))
    merges.apply_merge(merged("main", "guest"))
    export = accounts.export("s1", "main")
    [entry] = export["ledger"]
    assert (entry["kind"], entry["delta"], entry["details"]["customer"]) == ("merge_in", 1_000,
                                                                             "guest")
    assert entry["details"]["lots"][0]["lot_id"] == "earn:g1"
    counts = accounts.erase("s1", ["guest"], "req-1")
    assert counts["accounts"] == 1
    assert accounts.export("s1", "guest") is None
    assert accounts.account_view("s1", "main")["balance"] == 1_000


def test_a_moved_reward_used_since_stays_and_an_unused_one_goes_back(setup):
    storage, accounts, merges, _ = setup
    accounts.apply_order_event(order_event("g1", "guest", 20_000, at=T0))
    used = accounts.redeem("s1", "guest", 500, request_id="r-used").answer["reward"]
    kept = accounts.redeem("s1", "guest", 300, request_id="r-kept").answer["reward"]
    merges.apply_merge(merged("main", "guest"))
    assert {r["reward_id"] for r in accounts.list_rewards("s1", "main")["items"]} == {
        used["reward_id"], kept["reward_id"]}
    spend = order_event("p7", "main", 1_000, at=T0 + timedelta(hours=1))
    spend.data["coupon_codes"] = [used["code"].upper()]
    accounts.apply_order_event(spend)  # the code is found on the primary's account
    merges.apply_unmerge(unmerged("main", "guest"))
    main = {r["reward_id"]: r["state"] for r in accounts.list_rewards("s1", "main")["items"]}
    guest = {r["reward_id"]: r["state"] for r in accounts.list_rewards("s1", "guest")["items"]}
    assert main == {used["reward_id"]: "used", kept["reward_id"]: "moved"}
    assert guest == {used["reward_id"]: "moved", kept["reward_id"]: "pending"}
    assert storage.accounts.holding_codes("s1", [kept["code"]]) == ["guest"]
    assert accounts.ledger_check("s1", "main")["ok"] and accounts.ledger_check("s1", "guest")["ok"]


def test_an_order_of_the_restored_records_own_since_the_merge_goes_back_and_earns_once(setup):
    storage, accounts, merges, clock = setup
    accounts.apply_order_event(order_event("g1", "guest", 4_000, at=T0 - timedelta(days=10)))
    merges.apply_merge(merged("main", "guest"))
    clock.now = T0 + timedelta(days=1)
    # placed while merged: customer_sync names the primary, which earns on it
    accounts.apply_order_event(order_event("g2", "main", 5_000, at=clock.now))
    accounts.apply_order_event(order_event("p1", "main", 2_000, at=clock.now))  # the primary's
    assert accounts.account_view("s1", "main")["balance"] == 400 + 500 + 200
    merges.apply_unmerge(unmerged("main", "guest", orders_since=["g2"]))
    merges.apply_unmerge(unmerged("main", "guest", orders_since=["g2"]))  # redelivered
    # from now on g2's events name the restored record, whose account holds its state
    updated = order_event("g2", "guest", 5_000, status="completed", at=clock.now + timedelta(
        hours=1), event_type="order.updated")
    accounts.apply_order_event(updated)
    guest, main = accounts.account_view("s1", "guest"), accounts.account_view("s1", "main")
    assert (guest["status"], guest["balance"]) == ("active", 400 + 500)
    assert main["balance"] == 200
    assert points_messages(storage, "guest")[-1] == ("unmerge_in", 900, 900)
    assert points_messages(storage, "main")[-1] == ("unmerge_out", -900, 200)
    assert ledger_sum(storage, "guest") == 900 and ledger_sum(storage, "main") == 200
    assert accounts.ledger_check("s1", "main")["ok"] and accounts.ledger_check("s1", "guest")["ok"]
    note = storage.merges.get("s1", "m-1:guest")
    assert note["handed_back"] == {"points": 900, "credit": 0, "lots": 2, "rewards": [],
                                   "orders": 2}
    [entry] = [e for e in accounts.export("s1", "guest")["ledger"] if e["kind"] == "unmerge_in"]
    assert {lot["lot_id"] for lot in entry["details"]["lots"]} == {"earn:g1", "earn:g2"}


def test_a_refund_after_the_unmerge_reverses_on_the_restored_account(setup):
    storage, accounts, merges, clock = setup
    merges.apply_merge(merged("main", "guest"))
    clock.now = T0 + timedelta(days=1)
    accounts.apply_order_event(order_event("g2", "main", 5_000, at=clock.now))
    accounts.apply_order_event(order_event("p1", "main", 3_000, at=clock.now))
    # spending while merged takes the oldest lot first; earned at the same moment, the lot id
    # decides (earn:g2 before earn:p1), so g2's lot gives the 100
    accounts.adjust("s1", "main", -100, "spent at the counter", "ops@shop", request_id="a1")
    merges.apply_unmerge(unmerged("main", "guest", orders_since=["g2"]))
    assert accounts.account_view("s1", "guest")["balance"] == 400  # what remains of g2's 500
    assert accounts.account_view("s1", "main")["balance"] == 300
    refunded = order_event("g2", "guest", 5_000, status="refunded", refunded=5_000,
                           at=clock.now + timedelta(hours=2), event_type="order.refunded")
    accounts.apply_order_event(refunded)
    accounts.apply_order_event(refunded)  # redelivered
    guest, main = accounts.account_view("s1", "guest"), accounts.account_view("s1", "main")
    assert guest["balance"] == -100  # the 500 reversed: 400 held, the 100 spent is owed
    assert main["balance"] == 300
    assert [k for k, _, _ in points_messages(storage, "guest")] == ["unmerge_in", "reverse"]
    assert accounts.ledger_check("s1", "main")["ok"] and accounts.ledger_check("s1", "guest")["ok"]


def test_an_erasure_after_a_merge_leaves_only_ids_and_state_in_its_note(setup, caplog):
    storage, accounts, merges, _ = setup
    accounts.apply_order_event(order_event("g1", "guest", 10_000, at=T0))
    event = merged("main", "guest")
    merges.apply_merge(event)
    assert storage.merges.get("s1", "m-1:guest")["moved"]["points"] == 1_000
    accounts.erase("s1", ["main", "guest"], "req-1")
    note = storage.merges.get("s1", "m-1:guest")
    assert {k: note.get(k) for k in ("moved", "handed_back", "state", "primary", "merged",
                                     "forgotten")} == \
        {"moved": None, "handed_back": None, "state": "merged", "primary": "main",
         "merged": "guest", "forgotten": True}
    # A redelivered merge and the unmerge after the erasure change nothing.
    held = (list(storage.accounts.collection.find()), list(storage.ledger.collection.find()))
    assert merges.apply_merge(event).events == []
    with caplog.at_level("INFO", logger="services.loyalty.merges"):
        assert merges.apply_unmerge(unmerged("main", "guest")).events == []
    assert (list(storage.accounts.collection.find()),
            list(storage.ledger.collection.find())) == held
    assert storage.merges.get("s1", "m-1:guest") == note
    assert any("hands back nothing" in r.getMessage() for r in caplog.records)
