"""loyalty on the real broker: customer_sync's customer.merged and customer.unmerged in (twice,
and an unmerge before its merge), balances, lots, ledgers and tiers out."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from nameko.standalone.rpc import ClusterRpcProxy

from services.loyalty.service import LoyaltyService
from shared.events import build_event
from tests.integration.test_loyalty import order, points_events
from tests.support import EventBarrier, publish, wait_until

STORE = "loy"
NOW = datetime.now(timezone.utc).replace(microsecond=0)


@pytest.fixture
def rpc(services, events):
    events.listen("loyalty")
    services.start(LoyaltyService)
    with ClusterRpcProxy({"AMQP_URI": services.amqp_uri}, timeout=30) as proxy:
        yield proxy


def merged(primary: str, guest: str, merge_id: str) -> dict:
    return build_event("customer.merged", store_id=STORE, data={
        "customer_id": primary, "merged_customer_id": guest, "merge_id": merge_id,
        "kind": "manual"}).to_message()


def unmerged(primary: str, guest: str, merge_id: str, orders_since: tuple = ()) -> dict:
    return build_event("customer.unmerged", store_id=STORE, data={
        "customer_id": primary, "restored_customer_id": guest, "merge_id": merge_id,
        "orders_since": list(orders_since)}).to_message()


def tiers(events, customer: str) -> list[tuple]:
    return [(e["data"]["old_tier"], e["data"]["new_tier"])
            for e in events.of_type("loyalty.tier_changed") if e["data"]["customer_id"] == customer]


def test_a_merge_and_its_unmerge_move_points_both_ways_once(services, rpc, events):
    publish(services.amqp_uri,
            order("order.placed", "mg-guest", 8_000, at=NOW - timedelta(hours=2), order_id="m-1"),
            order("order.placed", "mg-main", 3_000, at=NOW - timedelta(hours=2), order_id="m-2"))
    wait_until(lambda: points_events(events, "mg-guest") and points_events(events, "mg-main"))
    barrier = EventBarrier(services, "loyalty", events).expect("customer.merged")
    message = merged("mg-main", "mg-guest", "merge-a")
    publish(services.amqp_uri, message, message)  # and again
    barrier.settled("customer.merged", 2)
    main, guest = rpc.loyalty.get_account(STORE, "mg-main"), rpc.loyalty.get_account(STORE, "mg-guest")
    assert (main["balance"], main["tier"]) == (1_100, "silver")
    assert (guest["balance"], guest["status"]) == (0, "merged")
    assert main["next_expiry"]["points"] == 1_100  # both lots, each keeping its own expiry
    assert points_events(events, "mg-main") == [("earn", 300, 300), ("merge_in", 800, 1_100)]
    assert points_events(events, "mg-guest") == [("earn", 800, 800), ("merge_out", -800, 0)]
    assert tiers(events, "mg-main") == [(None, "bronze"), ("bronze", "silver")]
    history = rpc.loyalty.history(STORE, "mg-main", {"size": 10})["items"]
    assert history[0]["details"]["lots"][0]["lot_id"] == "earn:m-1"
    export = rpc.loyalty.export_customer(STORE, "mg-main")
    assert [e["kind"] for e in export["ledger"]] == ["merge_in", "earn"]

    # spent since, oldest first: 700 of the guest's 800 (earned at the same moment, the order
    # id decides), then the merge is undone
    rpc.loyalty.adjust(STORE, "mg-main", -700, "spent in the shop", "ops@shop", request_id="mg-1")
    barrier = EventBarrier(services, "loyalty", events).expect("customer.unmerged")
    publish(services.amqp_uri, unmerged("mg-main", "mg-guest", "merge-a"))
    barrier.settled("customer.unmerged")
    main, guest = rpc.loyalty.get_account(STORE, "mg-main"), rpc.loyalty.get_account(STORE, "mg-guest")
    assert (guest["status"], guest["balance"]) == ("active", 100)
    assert (main["balance"], main["tier"]) == (300, "bronze")
    assert points_events(events, "mg-guest")[-1] == ("unmerge_in", 100, 100)
    assert points_events(events, "mg-main")[-1] == ("unmerge_out", -100, 300)
    assert tiers(events, "mg-main")[-1] == ("silver", "bronze")
    for customer in ("mg-main", "mg-guest"):
        check = rpc.loyalty.ledger_check(STORE, customer)
        assert check["ok"], check


def test_an_unmerge_before_its_merge_leaves_the_accounts_alone(services, rpc, events):
    publish(services.amqp_uri, order("order.placed", "mg-early", 5_000, at=NOW, order_id="m-3"))
    wait_until(lambda: points_events(events, "mg-early"))
    barrier = EventBarrier(services, "loyalty", events).expect("customer.merged",
                                                              "customer.unmerged")
    publish(services.amqp_uri, unmerged("mg-late", "mg-early", "merge-b"))
    barrier.settled("customer.unmerged")
    publish(services.amqp_uri, merged("mg-late", "mg-early", "merge-b"))
    barrier.settled("customer.merged")
    assert barrier.published() == 0
    assert rpc.loyalty.get_account(STORE, "mg-early")["balance"] == 500


def test_an_order_of_the_restored_record_since_the_merge_goes_back_and_its_refund_reverses_there(
        services, rpc, events):
    publish(services.amqp_uri,
            order("order.placed", "ms-guest", 4_000, at=NOW - timedelta(hours=3), order_id="m-10"))
    wait_until(lambda: points_events(events, "ms-guest"))
    barrier = EventBarrier(services, "loyalty", events).expect("customer.merged")
    publish(services.amqp_uri, merged("ms-main", "ms-guest", "merge-c"))
    barrier.settled("customer.merged")
    # placed while merged: customer_sync names the primary
    publish(services.amqp_uri,
            order("order.placed", "ms-main", 5_000, at=NOW - timedelta(hours=2), order_id="m-11"))
    wait_until(lambda: ("earn", 500, 900) in points_events(events, "ms-main"))
    barrier = EventBarrier(services, "loyalty", events).expect("customer.unmerged")
    message = unmerged("ms-main", "ms-guest", "merge-c", orders_since=["m-11"])
    publish(services.amqp_uri, message, message)  # and again
    barrier.settled("customer.unmerged", 2)
    assert points_events(events, "ms-guest")[-1] == ("unmerge_in", 900, 900)
    assert points_events(events, "ms-main")[-1] == ("unmerge_out", -900, 0)
    # its events name the restored record now: an update earns nothing, a refund reverses there
    barrier = EventBarrier(services, "loyalty", events).expect("order.updated", "order.refunded")
    publish(services.amqp_uri,
            order("order.updated", "ms-guest", 5_000, status="completed",
                  at=NOW - timedelta(hours=1), order_id="m-11"),
            order("order.refunded", "ms-guest", 5_000, refunded=5_000, status="refunded",
                  at=NOW, order_id="m-11"))
    barrier.settled("order.updated")
    barrier.settled("order.refunded")
    guest, main = rpc.loyalty.get_account(STORE, "ms-guest"), rpc.loyalty.get_account(STORE, "ms-main")
    assert (guest["status"], guest["balance"]) == ("active", 400)
    assert main["balance"] == 0
    assert points_events(events, "ms-guest")[-2:] == [("unmerge_in", 900, 900),
                                                     ("reverse", -500, 400)]
    for customer in ("ms-main", "ms-guest"):
        check = rpc.loyalty.ledger_check(STORE, customer)
        assert check["ok"], check
