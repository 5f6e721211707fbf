"""The pure parts of `make bench` (bench/system.py): percentiles, tying events to the orders
that caused them, pacing a sender, the per-second series the chart draws, and the check that no
order's effect was applied twice."""
from __future__ import annotations

import pytest

from bench.system import (Observed, Pacer, achieved_rate, double_effects, lag_summary,
                          match_orders, per_second, percentile, queue_owner, ratio)


def test_percentile_is_nearest_rank():
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 0.50) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 1.0) == 100.0
    assert percentile([7.0], 0.99) == 7.0
    assert percentile([], 0.5) is None


def test_lag_summary_in_milliseconds():
    summary = lag_summary([0.3, 0.1, 0.2, 1.5])
    assert summary == {"count": 4, "p50_ms": 200.0, "p95_ms": 1500.0, "p99_ms": 1500.0,
                       "max_ms": 1500.0, "mean_ms": 525.0}
    assert lag_summary([])["p99_ms"] is None


def test_pacer_keeps_a_fixed_schedule_and_never_catches_up_by_shifting_it():
    clock = {"now": 10.0}
    slept = []

    def sleep(seconds):
        slept.append(round(seconds, 6))
        clock["now"] += seconds

    pacer = Pacer(rate=4.0, start=10.0)
    assert [pacer.due(i) for i in range(3)] == [10.0, 10.25, 10.5]
    assert pacer.wait(0, now=lambda: clock["now"], sleep=sleep) == 10.0
    assert pacer.wait(1, now=lambda: clock["now"], sleep=sleep) == 10.25
    assert slept == [0.25]
    clock["now"] = 11.0  # item 2 is late (due 10.5): no sleep, and item 4 is still due at 11.0
    assert pacer.wait(2, now=lambda: clock["now"], sleep=sleep) == 10.5
    assert pacer.wait(4, now=lambda: clock["now"], sleep=sleep) == 11.0
    assert slept == [0.25]
    with pytest.raises(ValueError):
        Pacer(0, 0.0)


def test_achieved_rate_counts_intervals():
    assert achieved_rate([0.0, 0.01, 0.02, 0.03, 0.04]) == 100.0
    assert achieved_rate([1.0]) is None


def test_an_order_completes_when_both_its_earn_and_its_counted_segment_change_arrived():
    sends = {"1001": 100.0, "1002": 100.5, "1003": 101.0}
    seen = Observed(
        placed=[(100.1, "wh-a", "1001"), (100.6, "wh-b", "1002"), (101.2, "wh-c", "1003")],
        points=[(100.4, "wh-a", "1001", "earn"), (100.9, "wh-b", "1002", "earn"),
                (101.9, "wh-a", "1001", "earn")],  # a redelivery: the first receipt counts
        segments=[(100.2, "wh-a", "c-1", None),  # the customer.created's prospect: not the order
                  (100.7, "wh-a", "c-1", 1),
                  (101.5, "wh-c", "c-3", 1)],
    )
    matched = match_orders(sends, seen)
    assert matched["1001"]["done"] == 100.7 and matched["1001"]["lag"] == pytest.approx(0.7)
    assert matched["1001"]["placed"] == 100.1 and matched["1001"]["points"] == 100.4
    # 1002 earned but its segment change never came; 1003 the other way round
    assert matched["1002"]["done"] is None and matched["1002"]["lag"] is None
    assert matched["1003"]["done"] is None and matched["1003"]["segment"] == 101.5


def test_the_correlation_comes_from_the_earn_when_order_placed_was_not_watched():
    seen = Observed(placed=[], points=[(5.0, "wh-x", "7", "earn"), (5.1, "wh-y", "8", "reverse")],
                    segments=[(5.5, "wh-x", "c-7", 1), (5.2, "wh-y", "c-8", 1)])
    matched = match_orders({"7": 4.0, "8": 4.0}, seen)
    assert matched["7"]["lag"] == pytest.approx(1.5)
    assert matched["8"]["done"] is None  # a reversal is not the order's earn


def test_per_second_series_buckets_sends_and_completions_apart():
    records = [{"sent": 0.1, "done": 0.5, "lag": 0.4}, {"sent": 0.6, "done": 2.2, "lag": 1.6},
               {"sent": 1.2, "done": 1.4, "lag": 0.2}, {"sent": 1.5, "done": None, "lag": None}]
    series = per_second(records, origin=0.0)
    assert [s["t"] for s in series] == [0.0, 1.0, 2.0]
    assert [s["sent_per_s"] for s in series] == [2, 2, 0]
    assert [s["completed_per_s"] for s in series] == [1, 1, 1]
    assert series[0]["lag_p50_s"] == 0.4 and series[0]["lag_p99_s"] == 1.6
    assert series[1]["lag_p99_s"] == 0.2 and series[2]["lag_p50_s"] is None
    assert per_second([], 0.0) == []


def test_ratio_and_queue_owner():
    assert ratio(300.0, 12.0) == 25.0
    assert ratio(1.0, None) is None and ratio(None, 2.0) is None and ratio(1.0, 0) is None
    assert queue_owner("evt-customer_sync-order.placed--loyalty.on_order_placed") == "loyalty"


def test_sender_threads_scale_with_the_rate_within_bounds():
    from bench.system import sender_threads

    assert sender_threads(10) == 16
    assert sender_threads(100) == 50
    assert sender_threads(1000) == 256


def test_double_effects_tell_a_second_earn_from_a_copy_of_one_event():
    points = [
        (1.0, "c1", "7", "earn", "e-7", 50, 50),
        (1.1, "c1", "7", "earn", "e-7", 50, 50),  # the same event again: a copy
        (1.2, "c2", "8", "earn", "e-8", 40, 40),
        (1.3, "c2", "8", "earn", "e-8b", 40, 80),  # a second earn for order 8
        (1.4, "c3", "9", "reverse", "e-9r", -10, 0),  # not an earn
    ]
    segments = [
        (1.0, "c1", "cust-1", 0, "s-0"),  # no order counted yet
        (1.1, "c1", "cust-1", 1, "s-1"),
        (1.2, "c2", "cust-2", 1, "s-2"),
        (1.3, "c2", "cust-2", 1, "s-2b"),
    ]
    found = double_effects(points, segments)
    assert found["orders"] == 2 and found["earned_twice"] == 1
    assert found["earned_twice_sample"] == ["8"]
    assert found["balance_not_one_earn_sample"] == [("8", 40, 80)]
    assert found["customers"] == 2 and found["segment_changed_twice_sample"] == ["cust-2"]
    assert found["copies_received"] == 1 and found["none"] is False
    clean = double_effects(points[:3], segments[:3])
    assert clean["none"] is True and clean["copies_received"] == 1
    again = double_effects([points[0], (1.5, "c1", "7", "earn", "e-7", 50, 100)], [])
    assert again["balance_not_one_earn_sample"] == [("7", 50, 100)] and again["none"] is False
