"""Segmentation's pure logic: customer stats, every segment boundary, the VIP cutoff, RFM."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from services.segmentation import stats as st
from services.segmentation.stats import (
    AT_RISK,
    NEW,
    ONE_TIME,
    PROSPECT,
    REGULAR,
    VIP,
    OrderFact,
    Stats,
    ThresholdError,
    Thresholds,
    classify,
    compute_stats,
    days_since_last_order,
    quintile_cutoffs,
    rfm_scores,
    store_rfm_cutoffs,
    vip_cutoff,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
_ids = iter(range(1, 10_000))


def order(days_ago: float, total: int = 5_000, refunded: int = 0, status: str = "completed",
          currency: str = "EUR", order_id: str | None = None) -> OrderFact:
    return OrderFact(order_id=order_id or str(next(_ids)), status=status, total=total,
                     refunded=refunded, currency=currency,
                     date_created=NOW - timedelta(days=days_ago))


def segment(*orders: OrderFact, thresholds: Thresholds = Thresholds(),
            cutoff: int | None = None) -> str:
    return classify(compute_stats(orders), NOW, thresholds, cutoff)


# -- stats -------------------------------------------------------------------------------------

def test_stats_sum_counted_orders_net_of_refunds():
    stats = compute_stats([
        order(40, total=10_000, refunded=2_500),            # partly refunded: 7,500
        order(20, total=4_000, status="refunded", refunded=4_000),  # counts, adds nothing
        order(10, total=6_000, status="processing", currency="USD"),
        order(5, total=99_999, status="cancelled"),         # never a sale
    ])
    assert stats.orders_count == 3
    assert stats.total_spent == 7_500 + 0 + 6_000
    assert stats.average_order_value == 4_500
    assert stats.first_order_at == NOW - timedelta(days=40)
    assert stats.last_order_at == NOW - timedelta(days=10)
    assert stats.avg_days_between_orders == pytest.approx(15.0)
    assert stats.currency == "USD"  # of the latest counted order, not the cancelled one


@pytest.mark.parametrize("status", ["cancelled", "failed", "trash", "checkout-draft"])
def test_orders_that_never_became_sales_are_ignored_for_dates_and_money(status):
    stats = compute_stats([order(50, total=1_000), order(1, total=7_000, status=status)])
    assert (stats.orders_count, stats.total_spent) == (1, 1_000)
    assert stats.last_order_at == NOW - timedelta(days=50)
    assert stats.avg_days_between_orders is None


def test_a_refunded_status_counts_as_an_order_worth_nothing_even_before_the_refund_lands():
    fact = order(3, total=8_000, status="refunded", refunded=0)
    assert fact.counts and fact.net == 0
    stats = compute_stats([fact])
    assert (stats.orders_count, stats.total_spent, stats.average_order_value) == (1, 0, 0)


def test_a_refund_larger_than_the_order_never_makes_spend_negative():
    assert order(1, total=1_000, refunded=1_500).net == 0
    assert compute_stats([order(1, total=1_000, refunded=1_500), order(2, total=300)]
                         ).total_spent == 300


@pytest.mark.parametrize("totals,aov", [
    ([1_001, 1_000], 1_001),      # 1000.5 rounds half up
    ([1, 2], 2),                  # 1.5 -> 2
    ([1_000, 1_000, 1_001], 1_000),  # 1000.33 -> 1000
    ([1_000, 1_001, 1_001], 1_001),  # 1000.67 -> 1001
    ([999], 999),
])
def test_average_order_value_is_whole_minor_units_rounded_half_up(totals, aov):
    stats = compute_stats([order(i + 1, total=t) for i, t in enumerate(totals)])
    assert stats.average_order_value == aov
    assert isinstance(stats.average_order_value, int)


def test_no_orders_is_an_empty_profile():
    stats = compute_stats([order(1, status="cancelled")])
    assert stats == Stats()
    assert stats.to_dict() == {"orders_count": 0, "total_spent": 0, "average_order_value": 0,
                               "first_order_at": None, "last_order_at": None,
                               "avg_days_between_orders": None, "currency": None,
                               "largest_order": None}
    assert days_since_last_order(stats, NOW) is None


def test_largest_order_is_the_largest_counted_net_order():
    stats = compute_stats([order(10, total=5_000, refunded=4_000), order(4, total=3_000),
                           order(2, total=90_000, status="cancelled"),
                           order(1, total=70_000, status="refunded")])
    assert stats.largest_order == 3_000


def test_stats_to_dict_is_json_ready_and_reads_back():
    stats = compute_stats([order(10), order(4)])
    data = stats.to_dict()
    json.dumps(data)
    assert data["last_order_at"] == "2026-02-25T12:00:00+00:00"
    assert Stats.from_dict(data) == stats


def test_order_facts_take_minor_units():
    with pytest.raises(ValueError, match="total"):
        OrderFact("1", "completed", 10.5, 0, "EUR", NOW)
    with pytest.raises(ValueError, match="refunded"):
        OrderFact("1", "completed", 10, True, "EUR", NOW)


def test_days_since_last_order_counts_whole_days_floored():
    assert days_since_last_order(compute_stats([order(2 + 23 / 24)]), NOW) == 2
    assert days_since_last_order(compute_stats([order(3)]), NOW) == 3
    assert days_since_last_order(compute_stats([order(-1)]), NOW) == 0  # clock skew
    with pytest.raises(ValueError, match="timezone-aware"):
        days_since_last_order(compute_stats([order(3)]), NOW.replace(tzinfo=None))


# -- segment boundaries ------------------------------------------------------------------------

def test_no_counted_order_is_a_prospect():
    assert segment() == PROSPECT
    assert segment(order(2, status="failed")) == PROSPECT
    assert classify(Stats(), NOW, Thresholds(), vip_cutoff=1) == PROSPECT


@pytest.mark.parametrize("days_ago,expected", [
    (0, NEW), (29, NEW), (30, NEW), (30 + 23 / 24, NEW),  # whole days: 30 days 23 h is 30
    (31, ONE_TIME), (200, ONE_TIME),
])
def test_one_order_is_new_up_to_30_whole_days_then_one_time(days_ago, expected):
    assert segment(order(days_ago)) == expected


def test_new_means_fewer_than_three_orders():
    assert segment(order(29), order(5)) == NEW
    assert segment(order(29), order(10), order(5)) == REGULAR  # exactly 3 is no longer new


def test_new_is_judged_by_the_first_order():
    assert segment(order(31), order(2)) == REGULAR
    assert segment(order(29), order(2)) == NEW


def test_one_time_means_exactly_one_order():
    assert segment(order(31)) == ONE_TIME
    assert segment(order(45), order(40)) == REGULAR


@pytest.mark.parametrize("days_ago,expected", [
    (89, REGULAR), (90, REGULAR), (90 + 23 / 24, REGULAR), (91, AT_RISK), (400, AT_RISK),
])
def test_at_risk_when_no_order_in_more_than_90_whole_days(days_ago, expected):
    assert segment(order(days_ago + 60, total=8_000), order(days_ago, total=8_000)) == expected


def test_at_risk_needs_two_orders_and_a_valuable_history():
    assert segment(order(300, total=50_000)) == ONE_TIME  # one order is one-time, not at risk
    assert segment(order(200, total=4_999), order(100, total=5_000)) == REGULAR  # 99.99 spent
    assert segment(order(200, total=5_000), order(100, total=5_000)) == AT_RISK  # 100.00
    # refunds count: what was refunded is not value
    assert segment(order(200, total=5_000), order(100, total=5_000, refunded=1)) == REGULAR


def test_vip_threshold_is_spend_over_5000():
    assert segment(order(60, total=250_000), order(10, total=250_001)) == VIP
    assert segment(order(60, total=250_000), order(10, total=250_000)) == REGULAR  # not over


def test_a_refund_drops_a_vip_below_the_threshold():
    orders = [order(60, total=300_000), order(10, total=250_000, order_id="big")]
    assert segment(*orders) == VIP
    refunded = [orders[0], order(10, total=250_000, refunded=60_000, order_id="big")]
    assert compute_stats(refunded).total_spent == 490_000
    assert segment(*refunded) == REGULAR
    fully = [orders[0], order(10, total=250_000, status="refunded", refunded=250_000)]
    assert segment(*fully) == REGULAR


def test_vip_by_the_store_top_share_cutoff():
    orders = (order(60, total=1_200), order(10, total=1_300))  # spent 2,500
    assert segment(*orders, cutoff=2_500) == VIP  # at the cutoff is inside the top share
    assert segment(*orders, cutoff=2_501) == REGULAR
    assert segment(*orders, cutoff=None) == REGULAR
    # a customer whose orders were all refunded is never a top spender
    assert segment(order(60, status="refunded"), order(50, status="refunded"), cutoff=0) == REGULAR


def test_store_thresholds_change_the_boundaries():
    custom = Thresholds.from_dict({"new_days": 7, "vip_min_spent": None, "at_risk_days": 30,
                                   "at_risk_min_spent": 0})
    assert segment(order(7), thresholds=custom) == NEW
    assert segment(order(8), thresholds=custom) == REGULAR  # not new, not yet one-time (30)
    assert segment(order(31), thresholds=custom) == ONE_TIME
    assert segment(order(60, total=600_000), order(10), thresholds=custom) == REGULAR  # no VIP
    assert segment(order(60, total=1), order(31, total=1), thresholds=custom) == AT_RISK


# -- precedence --------------------------------------------------------------------------------

def test_a_lapsed_vip_is_at_risk():
    orders = (order(300, total=400_000), order(120, total=200_000))
    assert segment(*orders) == AT_RISK
    # valuable because VIP, even where the store's at-risk spend bar is higher
    high_bar = Thresholds(at_risk_min_spent=10_000_000)
    assert segment(*orders, thresholds=high_bar) == AT_RISK
    assert segment(order(300, total=100), order(120, total=100), thresholds=high_bar,
                   cutoff=200) == AT_RISK  # a top-share VIP who lapsed


def test_vip_beats_new_and_one_time():
    assert segment(order(2, total=600_000)) == VIP
    assert segment(order(2, total=100), cutoff=100) == VIP
    assert segment(order(200, total=600_000)) == VIP  # one order long ago, but a VIP


def test_new_beats_one_time_and_regular_is_the_rest():
    assert segment(order(1)) == NEW
    assert segment(order(40), order(30), order(20)) == REGULAR


# -- thresholds --------------------------------------------------------------------------------

def test_default_thresholds_are_the_documented_ones():
    assert Thresholds.from_dict({}).to_dict() == {
        "new_days": 30, "new_max_orders": 3, "one_time_days": 30, "vip_min_spent": 500_000,
        "vip_top_share": 0.10, "at_risk_days": 90, "at_risk_min_orders": 2,
        "at_risk_min_spent": 10_000}
    custom = Thresholds.from_dict({"vip_min_spent": None, "vip_top_share": 0})
    assert Thresholds.from_dict(custom.to_dict()) == custom


@pytest.mark.parametrize("data,field", [
    ({"new_days": -1}, "new_days"),
    ({"at_risk_days": "90"}, "at_risk_days"),
    ({"new_max_orders": 2.5}, "new_max_orders"),
    ({"one_time_days": True}, "one_time_days"),
    ({"vip_min_spent": -5}, "vip_min_spent"),
    ({"vip_min_spent": 5000.0}, "vip_min_spent"),
    ({"at_risk_min_spent": None}, "at_risk_min_spent"),
    ({"vip_top_share": 1.5}, "vip_top_share"),
    ({"vip_top_share": -0.1}, "vip_top_share"),
    ({"vip_top_share": "10%"}, "vip_top_share"),
    ({"vip_top_share": float("nan")}, "vip_top_share"),
    ({"vip_share": 0.2}, "vip_share"),
])
def test_bad_thresholds_are_refused_naming_the_field(data, field):
    with pytest.raises(ValueError) as info:
        Thresholds.from_dict(data)
    assert isinstance(info.value, ThresholdError) and info.value.field == field
    assert str(info.value).startswith(field)


# -- the top-share cutoff ----------------------------------------------------------------------

def test_vip_cutoff_is_the_smallest_spend_in_the_top_ten_percent():
    spends = [100 * i for i in range(1, 21)]  # 20 customers: the top 2
    assert vip_cutoff(spends) == 1_900
    assert vip_cutoff(spends[:10]) == 1_000  # 10 customers: the top 1
    assert vip_cutoff([300, 200, 100]) == 300  # fewer than 10: still the top one
    assert vip_cutoff(spends, top_share=0.25) == 1_600  # top 5


def test_vip_cutoff_counts_only_paying_customers():
    assert vip_cutoff([0] * 90 + [100 * i for i in range(1, 11)]) == 1_000
    assert vip_cutoff([]) is None
    assert vip_cutoff([0, 0, 0]) is None
    assert vip_cutoff([100, 200], top_share=0) is None  # the rule is off


def test_vip_cutoff_share_is_not_spoiled_by_float_error():
    spends = list(range(1, 101))  # 0.29 * 100 is 28.999999999999996 in floats
    assert vip_cutoff(spends, top_share=0.29) == 72  # the 29th largest


def test_equal_spends_at_the_cutoff_are_all_vip():
    spends = [500, 500, 400, 300, 200, 100, 90, 80, 70, 60]
    cutoff = vip_cutoff(spends)
    assert cutoff == 500
    assert segment(order(60, total=500), order(40, total=0), cutoff=cutoff) == VIP


# -- RFM ---------------------------------------------------------------------------------------

def test_quintile_cut_points_by_rank():
    assert quintile_cutoffs(list(range(1, 11))) == [2, 4, 6, 8]
    assert quintile_cutoffs([10, 9, 8, 7, 6, 5, 4, 3, 2, 1]) == [2, 4, 6, 8]  # order-free
    assert quintile_cutoffs(list(range(1, 6))) == [1, 2, 3, 4]
    assert quintile_cutoffs([7]) == [7, 7, 7, 7]
    assert quintile_cutoffs([]) == []


def _customer(orders_count: int, spent: int, last_days_ago: int) -> Stats:
    facts = [order(last_days_ago + 10 * i, total=spent // orders_count)
             for i in range(orders_count)]
    return compute_stats(facts)


def test_rfm_scores_on_a_store_of_ten():
    # customer i (1..10): i orders, spending 1,000*i, last order 10*(i-1) days ago
    store = [_customer(i, 1_000 * i, 10 * (10 - i)) for i in range(1, 11)]
    cutoffs = store_rfm_cutoffs(store + [Stats()], NOW)  # a prospect changes nothing
    assert cutoffs == {"recency_days": [10, 30, 50, 70], "frequency": [2, 4, 6, 8],
                       "monetary": [2_000, 4_000, 6_000, 8_000]}
    scores = [rfm_scores(s, NOW, cutoffs) for s in store]
    assert [s["frequency"] for s in scores] == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert [s["monetary"] for s in scores] == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    # customer 10 ordered today, customer 1 ninety days ago: more recent scores higher
    assert [s["recency"] for s in scores] == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    json.dumps(cutoffs)


def test_rfm_gives_equal_values_equal_scores():
    # seven one-order customers, three who ordered more; five ordered today
    store = ([_customer(1, 1_000, 0) for _ in range(5)]
             + [_customer(1, 1_000, 40), _customer(1, 1_000, 50)]
             + [_customer(3, 3_000, 60), _customer(5, 6_000, 70), _customer(8, 9_000, 80)])
    cutoffs = store_rfm_cutoffs(store, NOW)
    scores = [rfm_scores(s, NOW, cutoffs) for s in store]
    assert [s["frequency"] for s in scores] == [1] * 7 + [4, 5, 5]
    assert [s["monetary"] for s in scores] == [1] * 7 + [4, 5, 5]
    # by rank: 40 days is 6th of 10 (third fifth), 50 and 60 the fourth fifth
    assert [s["recency"] for s in scores] == [5] * 5 + [3, 2, 2, 1, 1]
    # same values, same scores, whatever their position in the store's list
    assert len({tuple(sorted(s.items())) for s in scores[:5]}) == 1


def test_rfm_scores_are_one_to_five():
    store = [_customer(1 + i % 4, 100 * (i + 1), i * 3) for i in range(37)]
    cutoffs = store_rfm_cutoffs(store, NOW)
    for s in store:
        assert set(rfm_scores(s, NOW, cutoffs).values()) <= {1, 2, 3, 4, 5}


def test_no_orders_no_rfm():
    cutoffs = store_rfm_cutoffs([_customer(2, 2_000, 5)], NOW)
    assert rfm_scores(Stats(), NOW, cutoffs) is None
    # a store whose cut points are not computed yet scores no one
    empty = store_rfm_cutoffs([], NOW)
    assert empty == {"recency_days": [], "frequency": [], "monetary": []}
    assert rfm_scores(_customer(2, 2_000, 5), NOW, empty) is None
    with pytest.raises(ValueError, match="frequency"):
        rfm_scores(_customer(2, 2_000, 5), NOW, {**cutoffs, "frequency": [1, 2]})


def test_email_domain_helper():
    assert st.email_domain(" Ada@ACME.example ") == "acme.example"
    assert st.email_domain("not-an-email") is None
    assert st.email_domain(None) is None
