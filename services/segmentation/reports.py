"""Store reports from profiles: pure functions over their stored stats, one pass per report."""
from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime, timedelta
from typing import Iterable

from services.segmentation import stats as st

PERIODS = ("day", "week", "month")
CHURN_DAYS = 90


def _bucket(when: datetime, period: str) -> str:
    if period == "day":
        return when.date().isoformat()
    if period == "week":
        year, week, _ = when.isocalendar()
        return f"{year}-W{week:02d}"
    return f"{when.year}-{when.month:02d}"


def _percentile(sorted_values: list[int], share: float) -> int | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, round(share * (len(sorted_values) - 1))))
    return sorted_values[index]


def store_report(profiles: Iterable[dict], now: datetime, period: str) -> dict:
    """New customers per period (by first order), repeat purchase rate, churn (customers
    with an order but none in 90 days), segment sizes, lifetime value distribution, the top
    10% customers' share of revenue, and average order value by group. Money in minor units."""
    if period not in PERIODS:
        raise ValueError(f"period must be one of {', '.join(PERIODS)}")
    new_per_period: Counter = Counter()
    segments: Counter = Counter()
    spends: list[int] = []
    buyers = repeaters = churned = 0
    group_totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # spent, orders
    currency = None
    for doc in profiles:
        segments[doc.get("segment") or "prospect"] += 1
        if not doc.get("stats"):
            continue
        stats = st.Stats.from_dict(doc["stats"])
        if stats.orders_count == 0:
            continue
        currency = currency or stats.currency
        buyers += 1
        repeaters += stats.orders_count >= 2
        if stats.last_order_at and now - stats.last_order_at > timedelta(days=CHURN_DAYS):
            churned += 1
        if stats.first_order_at:
            new_per_period[_bucket(stats.first_order_at, period)] += 1
        spends.append(stats.total_spent)
        for group in doc.get("groups") or {}:
            group_totals[group][0] += stats.total_spent
            group_totals[group][1] += stats.orders_count
    spends.sort()
    revenue = sum(spends)
    top_n = max(1, len(spends) // 10) if spends else 0
    top_share = (sum(spends[-top_n:]) / revenue) if revenue else None
    return {
        "period": period,
        "currency": currency,
        "customers": sum(segments.values()),
        "buyers": buyers,
        "new_customers": [{"period": key, "count": new_per_period[key]}
                          for key in sorted(new_per_period)],
        "repeat_purchase_rate": round(repeaters / buyers, 4) if buyers else None,
        "churn_rate": round(churned / buyers, 4) if buyers else None,
        "segment_sizes": dict(sorted(segments.items())),
        "lifetime_value": {
            "total": revenue,
            "p25": _percentile(spends, 0.25), "median": _percentile(spends, 0.5),
            "p75": _percentile(spends, 0.75), "p90": _percentile(spends, 0.9),
            "max": spends[-1] if spends else None,
        },
        "top_10_percent_revenue_share": round(top_share, 4) if top_share is not None else None,
        "average_order_value_by_group": {
            group: (spent // orders if orders else None)
            for group, (spent, orders) in sorted(group_totals.items())
        },
    }
