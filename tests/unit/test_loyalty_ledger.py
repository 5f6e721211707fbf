"""The loyalty account's rules, without a database: earning, rounding, tiers, reversals, debt,
FIFO expiry, redemption limits and legacy store credit (rewards: test_loyalty_rewards.py)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from services.loyalty import ledger as lg
from services.loyalty.programme import DEFAULT_PROGRAMME, Programme, load_programme
from shared.money import minor_per_unit
from shared.errors import ValidationError

T0 = datetime(2026, 3, 31, 12, tzinfo=timezone.utc)


def order(order_id: str = "1", total: int = 10_000, *, shipping: int = 0, tax: int = 0,
          refunded: int = 0, status: str = "processing", at: datetime = T0,
          created: datetime | None = None, currency: str = "EUR", guest: bool = False
          ) -> lg.OrderSnapshot:
    return lg.OrderSnapshot(order_id=order_id, status=status, currency=currency, total=total,
                            shipping=shipping, tax=tax, refunded=refunded,
                            created_at=created or at, paid_at=None, is_guest=guest, as_of=at)


def account(programme: Programme = DEFAULT_PROGRAMME, now: datetime = T0, doc: dict | None = None
            ) -> lg.Account:
    return lg.Account(doc if doc is not None else {}, programme, now)


def redeem(a: lg.Account, key: str, points: int, actor: str | None = None) -> dict:
    """A redemption with its reward's id and code named after the request."""
    name = key.split(":", 1)[1]
    return a.redeem(key, points, actor, f"reward-of-{name}", f"reward-{name}")


def consistent(a: lg.Account) -> None:
    """The balance is what the lots hold minus the debt; debt only when the lots are empty."""
    held = sum(lot["remaining"] for lot in a.doc["lots"])
    assert a.balance == held - a.doc["debt"]
    assert a.doc["debt"] == 0 or held == 0
    assert a.doc["balance"] == a.balance


# -- earning and rounding ----------------------------------------------------------------------

def test_ten_points_per_unit_on_the_total_without_shipping_and_tax_rounded_down():
    a = account()
    a.apply_order(order(total=5_999, shipping=490, tax=500))  # basis 50.09
    assert a.balance == 500  # 500.9 points: the fraction is never awarded
    [entry] = a.entries
    assert (entry.kind, entry.delta, entry.key) == ("earn", 500, "earn:1")
    assert entry.details == {"basis": 5_009, "rate": 10, "tier": "bronze"}
    consistent(a)


def test_shipping_and_tax_can_count_and_zero_decimal_currencies_earn_per_unit():
    programme = load_programme({"exclude_shipping": False, "exclude_tax": False})
    a = account(programme)
    a.apply_order(order(total=5_999, shipping=490, tax=500))
    assert a.balance == 599
    yen = account()
    yen.apply_order(order(total=1_234, currency="JPY"))
    assert yen.balance == 12_340
    assert minor_per_unit("KWD") == 1000 and minor_per_unit("eur") == 100


def test_an_order_earns_once_however_often_and_in_whatever_order_its_states_come():
    a = account()
    a.apply_order(order(status="pending", at=T0))
    assert a.balance == 0 and not a.entries
    a.apply_order(order(status="processing", at=T0 + timedelta(minutes=1)))
    a.apply_order(order(status="completed", at=T0 + timedelta(minutes=2)))
    a.apply_order(order(status="processing", at=T0 + timedelta(minutes=1)))  # redelivered, late
    assert a.balance == 1_000 and [e.kind for e in a.entries] == ["earn"]


def test_statuses_guests_and_the_programme_start_decide_what_earns():
    a = account()
    for status in ("pending", "on-hold", "cancelled", "failed", "refunded", "checkout-draft"):
        a.apply_order(order(order_id=status, status=status))
    assert a.balance == 0
    a.apply_order(order(order_id="g", guest=True))
    assert a.balance == 0
    late = account(load_programme({"starts_at": T0.isoformat()}))
    late.apply_order(order(order_id="old", created=T0 - timedelta(days=1)))
    late.apply_order(order(order_id="new", created=T0))
    assert late.balance == 1_000
    guests = account(load_programme({"guests_earn": True}))
    guests.apply_order(order(guest=True))
    assert guests.balance == 1_000


# -- tiers -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("points,tier", [(0, "bronze"), (999, "bronze"), (1_000, "silver"),
                                         (4_999, "silver"), (5_000, "gold"), (10**9, "gold")])
def test_tier_boundaries(points, tier):
    assert DEFAULT_PROGRAMME.tier_for(points).name == tier


def test_tiers_rise_on_earning_earn_at_the_rate_before_and_fall_out_of_the_window():
    a = account()
    a.apply_order(order("1", total=9_990))  # 999 points: still bronze
    assert a.doc["tier"] == "bronze" and a.tier_change.new == "bronze"
    a = account(doc=a.doc, now=T0 + timedelta(days=1))
    a.apply_order(order("2", total=100, at=T0 + timedelta(days=1)))  # 10 points at bronze's rate
    assert a.entries[0].delta == 10
    assert a.doc["tier"] == "silver" and a.tier_change.direction == "up"
    a = account(doc=a.doc, now=T0 + timedelta(days=2))
    a.apply_order(order("3", total=1_000, at=T0 + timedelta(days=2)))
    assert a.entries[0].delta == 120  # silver earns 12 per 1.00
    # a year after the first two orders they leave the window: silver needs 1,000 within it
    later = account(doc=a.doc, now=T0 + timedelta(days=366))
    assert later.evaluate_tier().new == "bronze" and later.tier_change.direction == "down"


def test_a_refund_can_drop_a_tier():
    a = account()
    a.apply_order(order("1", total=10_000))  # 1,000 points: silver
    assert a.doc["tier"] == "silver"
    a = account(doc=a.doc, now=T0 + timedelta(hours=1))
    a.apply_order(order("1", total=10_000, refunded=1_000, at=T0 + timedelta(hours=1)))
    assert a.balance == 900 and a.doc["tier"] == "bronze"
    assert a.tier_change.direction == "down"


# -- reversals -------------------------------------------------------------------------------

def test_partial_refunds_take_back_in_proportion_and_never_more_than_earned():
    a = account()
    a.apply_order(order(total=9_999, shipping=0))  # 999 points
    refunds = [3_333, 6_666, 9_999]  # cumulative: thirds, then all
    for n, refunded in enumerate(refunds, start=1):
        a.apply_order(order(total=9_999, refunded=refunded, at=T0 + timedelta(minutes=n)))
    reversals = [e.delta for e in a.entries if e.kind == "reverse"]
    assert reversals == [-333, -333, -333]
    assert a.balance == 0 and sum(reversals) == -999
    # the same cumulative refund again reverses nothing
    a.apply_order(order(total=9_999, refunded=9_999, at=T0 + timedelta(minutes=9)))
    assert len([e for e in a.entries if e.kind == "reverse"]) == 3
    consistent(a)


def test_rounding_of_a_partial_refund_favours_the_customer_until_the_full_refund():
    a = account()
    a.apply_order(order(total=1_000))  # 100 points
    a.apply_order(order(total=1_000, refunded=1, at=T0 + timedelta(minutes=1)))
    assert a.balance == 100  # 0.1 point: not taken yet
    a.apply_order(order(total=1_000, refunded=15, at=T0 + timedelta(minutes=2)))
    assert a.balance == 99  # 1.5 points taken back: 1
    a.apply_order(order(total=1_000, status="refunded", refunded=1_000, at=T0 + timedelta(minutes=3)))
    assert a.balance == 0


def test_cancellation_takes_back_everything_the_order_earned():
    a = account()
    a.apply_order(order("1", total=5_000))
    a.apply_order(order("2", total=5_000))
    a.apply_order(order("1", total=5_000, status="cancelled", at=T0 + timedelta(minutes=1)))
    assert a.balance == 500
    [reverse] = [e for e in a.entries if e.kind == "reverse"]
    assert reverse.details["taken"] == {"earn:1": 500} and reverse.reason == "order 1 cancelled"


def test_full_refund_after_a_partial_redemption_leaves_a_negative_balance_that_earns_back_first():
    a = account()
    a.apply_order(order("1", total=10_000))  # 1,000 points
    redeem(a, "redeem:r1", 600)  # 400 left
    a.apply_order(order("1", total=10_000, refunded=10_000, status="refunded",
                        at=T0 + timedelta(minutes=1)))
    assert a.balance == -600 and a.doc["debt"] == 600
    consistent(a)
    with pytest.raises(lg.InsufficientBalance):
        redeem(a, "redeem:r2", 100)
    a.apply_order(order("2", total=10_000, at=T0 + timedelta(minutes=2)))  # earns 1,000
    assert a.balance == 400 and a.doc["debt"] == 0
    lot = next(l for l in a.doc["lots"] if l["lot_id"] == "earn:2")
    assert lot["paid_debt"] == 600 and lot["remaining"] == 400
    consistent(a)
    # the reward already made stays: its coupon is the shop's to honour
    assert [r["state"] for r in a.doc["rewards"].values()] == ["pending"]


# -- expiry ----------------------------------------------------------------------------------

def test_points_expire_twelve_months_after_earning_oldest_first():
    a = account()
    a.apply_order(order("1", total=1_000, at=T0))  # 100 points, expire 2027-03-31
    a = account(doc=a.doc, now=T0 + timedelta(days=40))
    a.apply_order(order("2", total=2_000, at=T0 + timedelta(days=40)))  # 200, expire 2027-05-10
    redeem(a, "redeem:r", 150)  # takes the oldest first: 100 of lot 1, 50 of lot 2
    lots = {l["lot_id"]: l["remaining"] for l in a.doc["lots"]}
    assert lots == {"earn:1": 0, "earn:2": 150}
    assert a.next_expiry() == {"at": datetime(2027, 5, 10, 12, tzinfo=timezone.utc), "points": 150}
    early = account(doc=a.doc, now=datetime(2027, 5, 10, 11, tzinfo=timezone.utc))
    assert early.expire_due() == 0
    due = account(doc=a.doc, now=datetime(2027, 5, 10, 12, tzinfo=timezone.utc))
    assert due.expire_due() == 150
    assert [(e.kind, e.delta, e.key) for e in due.entries] == [("expire", -150, "expire:earn:2")]
    assert due.balance == 0
    assert account(doc=due.doc, now=due.now).expire_due() == 0  # once only
    consistent(due)


def test_expiry_follows_calendar_months_and_expired_points_are_not_reversed_twice():
    assert lg.add_months(datetime(2026, 1, 31, tzinfo=timezone.utc), 1).day == 28
    assert lg.add_months(datetime(2027, 12, 15, tzinfo=timezone.utc), 12).year == 2028
    a = account()
    a.apply_order(order("1", total=1_000))  # 100
    a.apply_order(order("2", total=5_000))  # 500
    redeem(a, "redeem:r", 100)  # lot 1 spent; lot 2 keeps 500
    b = account(doc=a.doc, now=T0 + timedelta(days=400))
    assert b.expire_due() == 500
    # order 2 is refunded after its points expired: nothing is left of it to take back
    b.apply_order(order("2", total=5_000, status="refunded", refunded=5_000,
                        at=T0 + timedelta(days=400)))
    assert b.balance == 0 and not [e for e in b.entries if e.kind == "reverse"]
    # order 1 was redeemed, not expired: its refund does take back (into debt)
    b.apply_order(order("1", total=1_000, status="refunded", refunded=1_000,
                        at=T0 + timedelta(days=400)))
    assert b.balance == -100


# -- redemption and credit ------------------------------------------------------------------

def test_redemption_limits_and_steps():
    a = account(load_programme({"min_redeem_points": 500, "max_redeem_points": 2_000}))
    a.apply_order(order(total=10_000))  # 1,000 points (bronze rate)
    with pytest.raises(lg.InvalidRequest, match="at least 500"):
        redeem(a, "redeem:a", 400)
    with pytest.raises(lg.InvalidRequest, match="at most 2000"):
        redeem(a, "redeem:b", 2_500)
    with pytest.raises(lg.InsufficientBalance):
        redeem(a, "redeem:c", 1_100)
    reward = redeem(a, "redeem:d", 600, "ops@shop")
    [debit] = a.entries[-1:]
    assert (debit.kind, debit.delta, debit.book, debit.actor) == ("redeem", -600, "points", "ops@shop")
    assert (reward["amount"], reward["currency"], reward["points"]) == (600, "EUR", 600)
    assert a.balance == 400 and a.credit_balance == 0
    yen = account(load_programme({"points_per_unit": 100}))
    yen.apply_order(order(total=1_000, currency="JPY"))  # 10,000 points; 100 points = 1 yen
    with pytest.raises(lg.InvalidRequest, match="multiple of 100"):
        redeem(yen, "redeem:y", 150)
    assert redeem(yen, "redeem:y", 200)["amount"] == 2


def test_legacy_store_credit_stays_readable_and_still_expires():
    """Credit lots from before credit became coupons: shown, never spent here, expired by the
    daily run as they always were."""
    issued = {"credit_id": "credit:a", "reason": "goodwill", "amount": 1_000, "remaining": 700,
              "issued_at": T0, "expires_at": T0 + timedelta(days=10)}
    a = account(doc={"credit_lots": [issued, {**issued, "credit_id": "credit:b",
                                               "expires_at": None}]})
    assert a.credit_balance == 1_400 and a.rewards_credit == 0
    later = account(doc=a.doc, now=T0 + timedelta(days=10))
    later.expire_due()
    assert [(e.kind, e.delta) for e in later.entries] == [("credit_expire", -700)]
    assert later.credit_balance == 700
    assert not hasattr(later, "use_credit")


def test_adjustments_add_lots_outside_tiers_and_never_go_below_zero():
    a = account()
    a.adjust("adjust:1", 2_000, "welcome gift", "ops@shop")
    assert a.balance == 2_000 and a.points_in_window() == 0
    with pytest.raises(lg.InsufficientBalance):
        a.adjust("adjust:2", -2_001, "typo", "ops@shop")
    a.adjust("adjust:3", -500, "typo", "ops@shop")
    assert a.balance == 1_500 and a.has_request("adjust:3")


# -- the programme -------------------------------------------------------------------------------

@pytest.mark.parametrize("data,field", [
    ({"tiers": [{"name": "a", "min_points": 0, "max_points": 100, "rate": 10},
                {"name": "b", "min_points": 50, "max_points": None, "rate": 12}]}, "tiers.1.min_points"),
    ({"tiers": [{"name": "a", "min_points": 0, "max_points": 100, "rate": 10},
                {"name": "b", "min_points": 200, "max_points": None, "rate": 12}]}, "tiers.1.min_points"),
    ({"tiers": [{"name": "a", "min_points": 10, "max_points": None, "rate": 10}]}, "tiers.0.min_points"),
    ({"tiers": [{"name": "a", "min_points": 0, "max_points": None, "rate": 0}]}, "tiers.0.rate"),
    ({"tiers": [{"name": "a", "min_points": 0, "max_points": 9, "rate": 1}]}, "tiers.0.max_points"),
    ({"earning_statuses": ["cancelled"]}, "earning_statuses"),
    ({"min_redeem_points": 500, "max_redeem_points": 100}, "max_redeem_points"),
    ({"points_per_unit": 0}, "points_per_unit"),
    ({"bonus": 1}, "bonus"),
])
def test_a_bad_programme_is_refused_naming_the_field(data, field):
    with pytest.raises(ValidationError) as info:
        load_programme(data)
    assert field in info.value.details["fields"], info.value.details
    assert field in str(info.value)


def test_programme_round_trips_through_its_stored_form():
    programme = load_programme({"tiers": [
        {"name": "member", "min_points": 0, "max_points": 499, "rate": 5},
        {"name": "insider", "min_points": 500, "max_points": None, "rate": 8}],
        "starts_at": "2026-01-01T00:00:00+00:00", "currency": "GBP"})
    assert load_programme(programme.to_dict()) == programme
    assert programme.tier_for(499).name == "member" and programme.tier_for(500).name == "insider"
