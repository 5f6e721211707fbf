"""The pure rules: freshness of an incoming state and the events an order change owes."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from services.customer_sync.core.changes import Freshness, freshness, plan_order_events
from services.customer_sync.core.normalise import normalise_order
from tests import payloads

T0 = datetime(2026, 3, 1, tzinfo=timezone.utc)


def test_freshness_by_time_then_content():
    assert freshness(None, None, T0, "h") is Freshness.NEWER
    assert freshness(T0, "h", T0 - timedelta(seconds=1), "x") is Freshness.STALE
    assert freshness(T0, "h", T0 + timedelta(seconds=1), "h") is Freshness.NEWER
    assert freshness(T0, "h", T0, "h") is Freshness.SAME
    assert freshness(T0, "h", T0, "other") is Freshness.NEWER


def stored(status: str, placed: bool = True, refunded: int = 0, **extra) -> dict:
    snap = normalise_order(payloads.order(status=status))
    return {"status": status, "placed": placed, "total_refunded": refunded, "total": snap.total,
            "subtotal": snap.subtotal, "discount_total": snap.discount_total,
            "shipping_total": snap.shipping_total, "tax_total": snap.tax_total,
            "line_items": snap.line_items, **extra}


def plan(previous, **order):
    result = plan_order_events(previous, normalise_order(payloads.order(**order)))
    return [(e.event_type, e.extra) for e in result.events], result.placed


def test_first_sight_in_a_real_status_is_placed():
    for status in ("pending", "processing", "on-hold", "completed"):
        assert plan(None, status=status) == ([("order.placed", {})], True)


def test_first_sight_outside_real_statuses_publishes_nothing():
    for status in ("checkout-draft", "failed", "cancelled", "trash"):
        assert plan(None, status=status) == ([], False)


def test_first_sight_of_a_refunded_order_is_placed_and_refunded():
    # It was placed and paid: consumers must count it as if they had seen it live.
    events, placed = plan(None, status="refunded", refunds=[{"id": 1, "total": "-12.00"}])
    assert (events, placed) == ([("order.placed", {}), ("order.refunded", {"refund_delta": 1200})],
                                True)


def test_status_change_of_a_placed_order():
    events, _ = plan(stored("processing"), status="completed")
    assert events == [("order.updated", {"old_status": "processing", "new_status": "completed",
                                         "changed_fields": ["status"]})]


def test_into_cancelled_failed_or_trash_is_cancelled_once():
    for status in ("cancelled", "failed", "trash"):
        assert plan(stored("processing"), status=status)[0] == [
            ("order.cancelled", {"old_status": "processing"})]
    # cancelled -> failed is a status change, not a second cancellation
    assert plan(stored("cancelled"), status="failed")[0][0][0] == "order.updated"


def test_refund_growth_carries_the_delta():
    events, _ = plan(stored("completed", refunded=500), status="completed",
                     refunds=[{"id": 1, "total": "-5.00"}, {"id": 2, "total": "-7.50"}])
    assert events == [("order.refunded", {"refund_delta": 750})]


def test_amount_change_without_status_change_is_an_update():
    events, _ = plan(stored("processing"), status="processing", total="60.00",
                     line_items=[{"id": 1, "quantity": 4, "subtotal": "60.00", "total": "60.00"}])
    assert events[0][0] == "order.updated"
    assert set(events[0][1]["changed_fields"]) >= {"total", "line_items"}


def test_placed_order_first_seen_with_refunds_reports_them():
    events, _ = plan(None, status="completed", refunds=[{"id": 1, "total": "-3.00"}])
    assert events == [("order.placed", {}), ("order.refunded", {"refund_delta": 300})]
