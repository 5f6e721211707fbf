"""What a merge of two customer records moves between their loyalty accounts, and what an
unmerge hands back, without a database (the use cases: test_loyalty_merges.py)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from services.loyalty import ledger as lg
from services.loyalty.programme import DEFAULT_PROGRAMME

T0 = datetime(2026, 3, 2, 12, tzinfo=timezone.utc)
KEY = "m-1:guest"


def order(order_id: str, total: int, at: datetime) -> lg.OrderSnapshot:
    return lg.OrderSnapshot(order_id=order_id, status="processing", currency="EUR", total=total,
                            shipping=0, tax=0, refunded=0, created_at=at, paid_at=None,
                            is_guest=False, as_of=at)


def account(customer_id: str, now: datetime, doc: dict | None = None) -> lg.Account:
    doc = doc if doc is not None else {"customer_id": customer_id}
    return lg.Account(doc, DEFAULT_PROGRAMME, now)


def issued_reward(a: lg.Account, name: str, points: int) -> dict:
    reward = a.redeem(f"redeem:{name}", points, None, f"reward-{name}", f"code-{name}")
    a.coupon_made(reward["reward_id"], {"coupon_id": 1})
    return reward


def merge(guest: lg.Account, primary: lg.Account) -> dict:
    parcel = guest.give_for_merge(KEY, primary.doc["customer_id"])
    primary.receive(parcel)
    return parcel


def lots(a: lg.Account) -> list[tuple]:
    return [(lot["lot_id"], lot["earned_at"], lot["expires_at"], lot["remaining"])
            for lot in a.doc["lots"]]


def test_lots_move_with_their_own_dates_and_expiries_as_one_entry_pair():
    guest = account("guest", T0)
    guest.apply_order(order("g1", 5_000, T0 - timedelta(days=200)))
    guest.apply_order(order("g2", 3_000, T0 - timedelta(days=10)))
    primary = account("main", T0)
    primary.apply_order(order("p1", 2_000, T0 - timedelta(days=50)))
    guest.entries, primary.entries = [], []
    merge(guest, primary)
    assert guest.balance == 0 and primary.balance == 200 + 500 + 300
    assert lots(primary) == [
        ("earn:g1", T0 - timedelta(days=200), datetime(2026, 8, 14, 12, tzinfo=timezone.utc), 500),
        ("earn:p1", T0 - timedelta(days=50), datetime(2027, 1, 11, 12, tzinfo=timezone.utc), 200),
        ("earn:g2", T0 - timedelta(days=10), datetime(2027, 2, 20, 12, tzinfo=timezone.utc), 300)]
    [out] = [e for e in guest.entries if e.book == lg.POINTS]
    [into] = [e for e in primary.entries if e.book == lg.POINTS]
    assert (out.key, out.kind, out.delta) == (f"merge-out:{KEY}", "merge_out", -800)
    assert (into.key, into.kind, into.delta) == (f"merge-in:{KEY}", "merge_in", 800)
    assert [lot["lot_id"] for lot in into.details["lots"]] == ["earn:g1", "earn:g2"]
    # the guest's orders are the primary's now: a late refund reverses there, nothing earns twice
    assert primary.doc["orders"]["g1"]["earned"] == 500
    primary.apply_order(order("g1", 5_000, T0 - timedelta(days=200)))
    assert primary.balance == 1_000
    # earned in the window, the moved points count for the primary's tier
    assert primary.points_in_window() == 1_000 and guest.points_in_window() == 0


def test_unmerge_gives_back_what_remains_after_spending_took_the_oldest_first():
    guest = account("guest", T0)
    guest.apply_order(order("g1", 5_000, T0 - timedelta(days=100)))  # 500, older
    primary = account("main", T0)
    primary.apply_order(order("p1", 3_000, T0 - timedelta(days=20)))  # 300, newer
    merge(guest, primary)
    later = T0 + timedelta(days=5)
    primary = account("main", later, primary.doc)
    primary.redeem("redeem:r1", 400, None, "reward-r1", "code-r1")  # 400 of the guest's 500
    primary.apply_order(order("p2", 1_000, later))  # earned since: stays
    primary.entries = []
    parcel = primary.give_back(KEY, "guest")
    restored = account("guest", later, guest.doc)
    restored.receive(parcel)
    assert [(lot["lot_id"], lot["remaining"]) for lot in restored.doc["lots"]] == [("earn:g1", 100)]
    assert restored.balance == 100 and primary.balance == 300 + 100
    [out] = primary.entries
    assert (out.key, out.kind, out.delta) == (f"unmerge-out:{KEY}", "unmerge_out", -100)
    assert restored.entries[-1].key == f"unmerge-in:{KEY}"
    assert restored.entries[-1].delta == 100
    # the order moved goes back; the tier window follows the lots
    assert "g1" in [o for o, state in parcel["orders"]]
    assert restored.points_in_window() == 500 and primary.points_in_window() == 400


def test_the_restored_records_own_orders_since_go_back_with_what_remains_of_their_points():
    guest = account("guest", T0)
    primary = account("main", T0)
    merge(guest, primary)
    later = T0 + timedelta(days=5)
    primary = account("main", later, primary.doc)
    primary.apply_order(order("g2", 4_000, later))  # the restored record's own, since: 400
    primary.apply_order(order("p2", 2_000, later))  # the primary's own, since: 200
    primary.adjust("adjust:a1", -100, "spent", "ops")  # earn:g2 is the oldest lot (by id)
    primary.entries = []
    parcel = primary.give_back(KEY, "guest", ["g2", "unknown"])
    restored = account("guest", later, guest.doc)
    restored.receive(parcel)
    assert [(lot["lot_id"], lot["remaining"]) for lot in restored.doc["lots"]] == [("earn:g2", 300)]
    assert restored.balance == 300 and primary.balance == 200
    assert [o for o, _ in parcel["orders"]] == ["g2"]
    [out] = primary.entries
    assert (out.key, out.delta) == (f"unmerge-out:{KEY}", -300)
    assert (restored.entries[-1].key, restored.entries[-1].delta) == (f"unmerge-in:{KEY}", 300)
    assert restored.points_in_window() == 400 and primary.points_in_window() == 200
    # its state is here now: delivered again it earns nothing, a refund reverses here
    restored.apply_order(order("g2", 4_000, later))
    assert restored.balance == 300
    refunded = lg.OrderSnapshot(order_id="g2", status="processing", currency="EUR", total=4_000,
                                shipping=0, tax=0, refunded=2_000, created_at=later,
                                paid_at=None, is_guest=False, as_of=later + timedelta(hours=1))
    restored.apply_order(refunded)
    assert restored.balance == 300 - 200 and primary.balance == 200


def test_rewards_go_back_only_while_unused_and_keep_their_coupons_owner():
    guest = account("guest", T0)
    guest.apply_order(order("g1", 10_000, T0))
    unused = issued_reward(guest, "a", 300)
    spent = issued_reward(guest, "b", 200)
    primary = account("main", T0)
    parcel = merge(guest, primary)
    assert {r["reward_id"] for r in parcel["rewards"]} == {unused["reward_id"], spent["reward_id"]}
    assert guest.doc["rewards"][unused["reward_id"]]["state"] == lg.MOVED
    assert guest.doc["reward_codes"] == [] and sorted(primary.doc["reward_codes"]) == [
        "code-a", "code-b"]
    # the coupons were made for the guest: the shop knows them by that meta
    assert lg.coupon_meta("main", primary.reward(unused["reward_id"]))["loyalty_customer"] == "guest"
    assert primary.apply_coupon_use("code-b", "p9", "processing", T0 + timedelta(hours=1))
    back = primary.give_back(KEY, "guest")
    assert [r["reward_id"] for r in back["rewards"]] == [unused["reward_id"]]
    restored = account("guest", T0, guest.doc)
    restored.receive(back)
    assert restored.reward(unused["reward_id"])["state"] == lg.ISSUED
    assert restored.doc["reward_codes"] == ["code-a"] and primary.doc["reward_codes"] == ["code-b"]
    assert primary.reward(spent["reward_id"])["state"] == lg.USED


def test_points_coming_in_repay_a_debt_first():
    primary = account("main", T0, {"customer_id": "main", "debt": 150})
    guest = account("guest", T0)
    guest.apply_order(order("g1", 5_000, T0))
    merge(guest, primary)
    assert primary.doc["debt"] == 0 and primary.balance == 350
    assert primary.entries[-1].delta == 500  # the entry moves what left the guest


def test_a_ledger_pair_sums_to_nothing_and_each_ledger_still_checks():
    guest = account("guest", T0)
    guest.apply_order(order("g1", 5_000, T0))
    issued_reward(guest, "a", 100)
    primary = account("main", T0)
    merge(guest, primary)
    for a in (guest, primary):
        entries = [e.to_dict() for e in a.entries]
        assert lg.ledger_check(entries, a.doc)["ok"], lg.ledger_check(entries, a.doc)
    assert sum(e.delta for e in guest.entries + primary.entries
               if e.kind.startswith("merge")) == 0


def test_a_reward_being_withdrawn_at_the_merge_returns_its_points_to_the_primary():
    guest = account("guest", T0)
    guest.apply_order(order("g1", 10_000, T0))
    reward = issued_reward(guest, "a", 400)
    guest.cancel_reward(reward["reward_id"], "ops@shop")  # its coupon is being deleted
    primary = account("main", T0)
    merge(guest, primary)
    assert primary.coupon_deleted(reward["reward_id"], {"usage_count": 0})
    assert primary.balance == 600 + 400 and guest.balance == 0
    assert primary.reward(reward["reward_id"])["state"] == lg.RETURNED
    entries = [e.to_dict() for e in primary.entries]
    assert lg.ledger_check(entries, primary.doc)["ok"]
    # an unmerge gives back only what is unused: the points returned since stay
    assert primary.give_back(KEY, "guest")["rewards"] == []
