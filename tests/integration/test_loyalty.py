"""loyalty on the real broker: customer_sync's order events in (late, twice, out of order),
RPC requests at once, points and tier events out."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from nameko.standalone.rpc import ClusterRpcProxy

from services.loyalty.service import LoyaltyService
from shared.errors import Conflict, NotFound
from shared.events import build_event, contract
from tests.support import EventBarrier, publish, wait_until

STORE = "loy"
NOW = datetime.now(timezone.utc).replace(microsecond=0)


@pytest.fixture
def rpc(services, events):
    events.listen("loyalty")
    events.listen("gdpr", "gdpr.erasure_completed")
    services.start(LoyaltyService)
    with ClusterRpcProxy({"AMQP_URI": services.amqp_uri}, timeout=30) as proxy:
        yield proxy



def order(event_type: str, customer: str, total: int, *, at: datetime, refunded: int = 0,
          status: str = "processing", order_id: str = "5001") -> dict:
    data = {**contract("order.placed").sample, "order_id": order_id, "number": order_id,
            "customer_id": customer, "status": status, "date_paid": None,
            "date_created": (NOW - timedelta(days=1)).isoformat(),
            "total": {"amount": total, "currency": "EUR"},
            "shipping_total": {"amount": 0, "currency": "EUR"},
            "tax_total": {"amount": 0, "currency": "EUR"},
            "total_refunded": {"amount": refunded, "currency": "EUR"}}
    if event_type == "order.refunded":
        data["refund_delta"] = {"amount": refunded, "currency": "EUR"}
    if event_type in ("order.cancelled", "order.updated"):
        data["old_status"] = "processing"
    if event_type == "order.updated":
        data.update(new_status=status, changed_fields=["status"])
    return build_event(event_type, store_id=STORE, data=data, occurred_at=at).to_message()


def points_events(events, customer: str) -> list[tuple]:
    return [(e["data"]["kind"], e["data"]["delta"], e["data"]["balance"])
            for e in events.of_type("loyalty.points_changed") if e["data"]["customer_id"] == customer]


def test_redelivered_and_out_of_order_events_award_once(services, rpc, events):
    refunded = order("order.refunded", "c-ooo", 10_000, refunded=2_500, at=NOW)
    placed = order("order.placed", "c-ooo", 10_000, at=NOW - timedelta(hours=1))
    completed = order("order.updated", "c-ooo", 10_000, status="completed",
                      at=NOW - timedelta(minutes=30))
    publish(services.amqp_uri, refunded)  # the latest state first
    events.wait_for(lambda got: len(points_events(events, "c-ooo")) >= 2)
    barrier = EventBarrier(services, "loyalty", events).expect(
        "order.placed", "order.updated", "order.refunded")
    publish(services.amqp_uri, placed, completed, placed, refunded)  # late, and twice
    barrier.settled("order.placed", 2)
    barrier.settled("order.updated")
    barrier.settled("order.refunded")
    assert barrier.published() == 0
    # One earn and one reversal, whatever the deliveries (their order on the wire is not
    # asserted: a consumer orders them by their ledger balance, not by arrival).
    assert sorted(points_events(events, "c-ooo")) == [("earn", 1_000, 1_000), ("reverse", -250, 750)]
    account = rpc.loyalty.get_account(STORE, "c-ooo")
    assert account["balance"] == 750 and account["tier"] == "bronze"
    history = rpc.loyalty.history(STORE, "c-ooo", {"size": 10})
    assert [e["kind"] for e in history["items"]] == ["reverse", "earn"]
    tiers = [e["data"] for e in events.of_type("loyalty.tier_changed")
             if e["data"]["customer_id"] == "c-ooo"]
    assert [(t["old_tier"], t["new_tier"]) for t in tiers] == [(None, "bronze")]


def test_a_full_refund_after_a_partial_redemption(services, rpc, events):
    publish(services.amqp_uri, order("order.placed", "c-neg", 20_000, at=NOW - timedelta(hours=1),
                                     order_id="6001"))
    wait_until(lambda: points_events(events, "c-neg"))
    result = rpc.loyalty.redeem(STORE, "c-neg", 1_500, request_id="r-neg")
    assert [e["kind"] for e in result["entries"]] == ["redeem"]
    assert result["reward"]["points"] == 1_500  # its coupon: no customer_sync here, so pending
    publish(services.amqp_uri, order("order.refunded", "c-neg", 20_000, refunded=20_000,
                                     status="refunded", at=NOW, order_id="6001"))
    events.wait_for(lambda got: any(k == "reverse" for k, _, _ in points_events(events, "c-neg")))
    account = rpc.loyalty.get_account(STORE, "c-neg")
    assert account["balance"] == -1_500 and account["negative_balance"] is True
    assert account["rewards_pending"] == 1  # the reward stays: it is the shop's to honour
    assert points_events(events, "c-neg")[-1] == ("reverse", -2_000, -1_500)
    with pytest.raises(Conflict):
        rpc.loyalty.redeem(STORE, "c-neg", 100)
    # the next order pays the debt back first
    publish(services.amqp_uri, order("order.placed", "c-neg", 20_000, at=NOW, order_id="6002"))
    wait_until(lambda: rpc.loyalty.get_account(STORE, "c-neg")["balance"] == 500)


def test_fifty_concurrent_redemptions_against_a_balance_for_ten(services, rpc, events):
    publish(services.amqp_uri, order("order.placed", "c-race", 10_000, at=NOW, order_id="7001"))
    wait_until(lambda: points_events(events, "c-race"))  # 1,000 points
    calls = [rpc.loyalty.redeem.call_async(STORE, "c-race", 100, request_id=f"race-{n}")
             for n in range(50)]
    won, refused = 0, 0
    for call in calls:
        try:
            call.result()
            won += 1
        except Conflict:
            refused += 1
    assert (won, refused) == (10, 40)
    account = rpc.loyalty.get_account(STORE, "c-race")
    assert account["balance"] == 0 and len(rpc.loyalty.list_rewards(STORE, "c-race")["items"]) == 10
    redeemed = [e for e in rpc.loyalty.history(STORE, "c-race", {"size": 100})["items"]
                if e["kind"] == "redeem"]
    assert len(redeemed) == 10


def test_programme_credit_and_export_over_rpc(services, rpc, events):
    from shared.errors import ValidationError

    with pytest.raises(ValidationError) as info:
        rpc.loyalty.save_programme(STORE, {"tiers": [
            {"name": "a", "min_points": 0, "max_points": 99, "rate": 10},
            {"name": "b", "min_points": 90, "max_points": None, "rate": 12}]})
    assert "tiers.1.min_points" in str(info.value)
    saved = rpc.loyalty.save_programme(STORE, {"min_redeem_points": 200})
    assert saved["min_redeem_points"] == 200 and rpc.loyalty.get_programme(STORE) == saved
    # Credit is issued only to a customer of the store: their order made the account here.
    publish(services.amqp_uri, order("order.placed", "c-credit", 1_000, at=NOW, order_id="9001"))
    wait_until(lambda: points_events(events, "c-credit"))
    issued = rpc.loyalty.issue_credit(STORE, "c-credit", 2_000, "goodwill", note="late parcel",
                                      actor="ops@shop", expires_at=(NOW + timedelta(days=90)).isoformat())
    assert issued["entries"] == [] and issued["reward"]["kind"] == "credit"
    assert issued["reward"]["amount"] == {"amount": 2_000, "currency": "EUR"}
    export = rpc.loyalty.export_customer(STORE, "c-credit")
    assert [r["reward_id"] for r in export["rewards"]] == [issued["reward"]["reward_id"]]
    assert not hasattr(LoyaltyService, "use_credit")


def test_erasure_confirms_and_forgets(services, rpc, events):
    publish(services.amqp_uri, order("order.placed", "c-gone", 10_000, at=NOW, order_id="8001"))
    wait_until(lambda: points_events(events, "c-gone"))
    rpc.loyalty.adjust(STORE, "c-gone", 10, "asked about her birthday", "ops@shop")
    request = build_event("gdpr.erasure_requested", store_id=STORE,
                          data={"request_id": "req-9", "customer_ids": ["c-gone"],
                                "email": "gone@example.com"}).to_message()
    publish(services.amqp_uri, request)
    got = events.wait_for(lambda got: events.of_type("gdpr.erasure_completed"), timeout=15)
    [done] = [e for e in got if e["event_type"] == "gdpr.erasure_completed"]
    assert done["data"]["service"] == "loyalty"
    assert done["data"]["counts"] == {"accounts": 1, "ledger_entries": 2, "coupons_to_withdraw": 0,
                                      "parked_messages": 0}
    with pytest.raises(NotFound):
        rpc.loyalty.get_account(STORE, "c-gone")
