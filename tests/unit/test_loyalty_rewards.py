"""Rewards as coupons: loyalty's rules and use cases with an in-memory stand-in for
customer_sync's coupon RPCs, a pinned clock and seeded codes. Every scenario ends with the
ledger check: the entries sum to the balance and no reward was both spent and given back."""
from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pytest

from services.loyalty.accounts import Accounts
from services.loyalty.repository import LoyaltyStorage
from services.loyalty.rewards import RetryPolicy, Rewards
from shared.coupon_withdrawals import WithdrawalPolicy
from shared.coupons import CODE_ALPHABET, CouponSpec
from shared.errors import Conflict, NotFound, Refused, Unavailable, ValidationError
from shared.events import build_event, contract
from shared.outbox import OUTBOX_FIELD
from tests.support import storage_at

T0 = datetime(2026, 6, 1, 12, tzinfo=timezone.utc)
STORE = "s1"


class FakeShopCoupons:
    """customer_sync's ensure_coupon / delete_coupon as the interface states them: a code is
    looked up before it is created, a coupon carrying the meta is answered as it is."""

    def __init__(self) -> None:
        self.coupons: dict[str, dict] = {}
        self.creates = 0
        self.calls: list[tuple] = []
        self.failure: Exception | None = None

    def ensure_coupon(self, store_id: str, coupon: dict, customer_id: str | None = None) -> dict:
        self.calls.append(("ensure", store_id, coupon["code"], customer_id))
        if self.failure is not None:
            raise self.failure
        spec = CouponSpec.from_wire(coupon)  # what customer_sync will accept
        held = self.coupons.get(spec.code)
        if held is None:
            self.creates += 1
            held = self.coupons[spec.code] = {"coupon_id": self.creates, "wire": coupon,
                                              "customer_id": customer_id, "usage_count": 0}
        elif not coupon["meta"].items() <= held["wire"]["meta"].items():
            raise Refused("the code belongs to somebody else's coupon")
        return {"coupon_id": held["coupon_id"], "code": spec.code, "status": "publish",
                "usage_count": held["usage_count"], "expires_at": coupon["expires_at"]}

    def delete_coupon(self, store_id: str, code: str, meta: dict) -> dict:
        self.calls.append(("delete", store_id, code))
        if self.failure is not None:
            raise self.failure
        held = self.coupons.get(code)
        if held is None or not meta.items() <= held["wire"]["meta"].items():
            return {"deleted": False, "usage_count": 0}
        del self.coupons[code]
        return {"deleted": True, "usage_count": held["usage_count"]}


@pytest.fixture
def world(database):
    storage, clock = storage_at(LoyaltyStorage, database, T0)
    accounts = Accounts(storage, clock=clock, choose=random.Random(7).choice)
    shop = FakeShopCoupons()
    rewards = Rewards(accounts, shop, RetryPolicy(retry_seconds=30, retry_max_seconds=100))
    return storage, accounts, rewards, shop, clock


def order_event(order_id: str, customer: str | None, total: int, *, status: str = "processing",
                at: datetime = T0, codes: tuple[str, ...] = (), event_type: str = "order.placed"):
    data = {**contract("order.placed").sample, "order_id": order_id, "number": order_id,
            "customer_id": customer, "status": status, "coupon_codes": list(codes),
            "total": {"amount": total, "currency": "EUR"},
            "shipping_total": {"amount": 0, "currency": "EUR"},
            "tax_total": {"amount": 0, "currency": "EUR"},
            "total_refunded": {"amount": total if status == "refunded" else 0, "currency": "EUR"},
            "date_created": at.isoformat(), "date_paid": None, "is_guest": customer is None}
    if event_type == "order.updated":
        data.update(old_status="processing", new_status=status, changed_fields=["status"])
    return build_event(event_type, store_id=STORE, data=data, occurred_at=at)


def earn(accounts: Accounts, customer: str, points: int, order_id: str = "1") -> None:
    accounts.apply_order_event(order_event(order_id, customer, points * 10))


def owed(storage, event_type: str) -> list[dict]:
    out = []
    for doc in storage.accounts.collection.find({f"{OUTBOX_FIELD}.0": {"$exists": True}}):
        out.extend(e["message"]["data"] for e in doc[OUTBOX_FIELD]
                   if e["message"]["event_type"] == event_type)
    return out


def balanced(accounts: Accounts, customer: str) -> dict:
    check = accounts.ledger_check(STORE, customer)
    assert check["ok"], check["problems"]
    return check


def reward_of(outcome) -> dict:
    return outcome.answer["reward"]


# -- redeeming -----------------------------------------------------------------------------------

def test_a_redemption_takes_the_points_and_makes_one_single_use_coupon_at_once(world):
    storage, accounts, rewards, shop, _ = world
    earn(accounts, "c1", 2_000)
    outcome = rewards.redeem(STORE, "c1", 500, request_id="r-1", actor="ops@shop")
    reward = reward_of(outcome)
    assert reward["state"] == "issued" and reward["issued_at"] == T0.isoformat()
    assert reward["code"].startswith("reward-") and len(reward["code"]) == len("reward-") + 10
    assert set(reward["code"][len("reward-"):]) <= set(CODE_ALPHABET)
    assert reward["amount"] == {"amount": 500, "currency": "EUR"} and reward["points"] == 500
    assert reward["expires_at"] == (T0 + timedelta(days=90)).isoformat()
    assert [e["kind"] for e in outcome.answer["entries"]] == ["redeem"]
    [(call, store, code, customer)] = shop.calls
    assert (call, store, code, customer) == ("ensure", STORE, reward["code"], "c1")
    wire = shop.coupons[reward["code"]]["wire"]
    assert wire["discount_type"] == "fixed_cart" and wire["amount"] == 500
    assert wire["currency"] == "EUR" and wire["usage_limit"] == 1
    assert wire["individual_use"] is False and wire["email"] is None  # customer_sync adds it
    assert wire["expires_at"] == (T0 + timedelta(days=90)).isoformat()
    assert wire["meta"] == {"loyalty_customer": "c1", "loyalty_reward": reward["reward_id"],
                            "loyalty_entry": "redeem:r-1"}
    view = accounts.account_view(STORE, "c1")
    assert view["balance"] == 1_500 and view["rewards_pending"] == 0
    [issued] = owed(storage, "loyalty.reward_issued")
    assert issued["code"] == reward["code"] and issued["points"] == 500
    assert issued["amount"] == {"amount": 500, "currency": "EUR"}
    # The same request again: the same reward and code, no second coupon, no second debit.
    again = rewards.redeem(STORE, "c1", 500, request_id="r-1", actor="ops@shop")
    assert reward_of(again) == reward and shop.creates == 1
    assert accounts.account_view(STORE, "c1")["balance"] == 1_500
    assert balanced(accounts, "c1")["totals"] == {"earn": 2_000, "redeem": -500}


def test_the_programme_names_the_prefix_expiry_and_individual_use(world):
    _, accounts, rewards, shop, _ = world
    accounts.save_programme(STORE, {"coupon_prefix": "vip", "reward_expiry_days": 30,
                                    "reward_individual_use": True})
    earn(accounts, "c1", 1_000)
    reward = reward_of(rewards.redeem(STORE, "c1", 200))
    assert reward["code"].startswith("vip-")
    wire = shop.coupons[reward["code"]]["wire"]
    assert wire["individual_use"] is True
    assert wire["expires_at"] == (T0 + timedelta(days=30)).isoformat()


@pytest.mark.parametrize("programme, field", [
    ({"coupon_prefix": "Reward"}, "coupon_prefix"), ({"coupon_prefix": "no-dash"}, "coupon_prefix"),
    ({"reward_expiry_days": 0}, "reward_expiry_days"), ({"credit_expiry_days": 0}, "credit_expiry_days"),
    ({"expiry_warning_days": -1}, "expiry_warning_days"),
    ({"expired_rewards_return_points": "maybe"}, "expired_rewards_return_points"),
])
def test_reward_settings_are_validated_naming_the_field(world, programme, field):
    _, accounts, _, _, _ = world
    with pytest.raises(ValidationError) as refused:
        accounts.save_programme(STORE, programme)
    assert field in refused.value.args[1]["fields"]


@pytest.mark.parametrize("points, error, reason", [
    (1_600, Conflict, "insufficient"), (50, ValidationError, "at least 100"),
    (150, ValidationError, "multiple of"), ("500", ValidationError, "whole number"),
])
def test_a_refused_redemption_takes_nothing_and_makes_no_coupon(world, points, error, reason):
    _, accounts, rewards, shop, _ = world
    accounts.save_programme(STORE, {"points_per_unit": 200})  # EUR: multiples of 2
    earn(accounts, "c1", 1_501)
    with pytest.raises(error, match=reason):
        rewards.redeem(STORE, "c1", points if points != 150 else 151)
    assert accounts.account_view(STORE, "c1")["balance"] == 1_501
    assert accounts.list_rewards(STORE, "c1") == {"items": []} and shop.calls == []


def test_a_quote_says_what_a_redemption_would_give_and_changes_nothing(world):
    _, accounts, _, shop, _ = world
    earn(accounts, "c1", 700)
    quote = accounts.quote_redemption(STORE, "c1", 500)
    assert quote == {"points": 500, "amount": {"amount": 500, "currency": "EUR"},
                     "balance": 700, "allowed": True, "reason": None,
                     "expires_at": (T0 + timedelta(days=90)).isoformat()}
    refused = accounts.quote_redemption(STORE, "c1", 800)
    assert not refused["allowed"] and "800 points asked, 700 available" in refused["reason"]
    assert accounts.quote_redemption(STORE, "c1", 50)["reason"] == "at least 100 points per redemption"
    with pytest.raises(NotFound):
        accounts.quote_redemption(STORE, "nobody", 100)
    assert accounts.account_view(STORE, "c1")["balance"] == 700 and shop.calls == []


# -- the shop away, or refusing ------------------------------------------------------------------

def test_a_shop_outage_leaves_the_reward_pending_and_retried_with_a_doubling_wait(world):
    storage, accounts, rewards, shop, clock = world
    earn(accounts, "c1", 1_000)
    shop.failure = Unavailable("the shop answered 503")
    reward = reward_of(rewards.redeem(STORE, "c1", 300, request_id="r-1"))
    assert reward["state"] == "pending" and reward["attempts"] == 1
    assert reward["next_attempt_at"] == (T0 + timedelta(seconds=30)).isoformat()
    assert reward["last_error"] == "Unavailable: the shop answered 503"
    view = accounts.account_view(STORE, "c1")
    assert view["balance"] == 700 and view["rewards_pending"] == 1  # the points left already
    assert rewards.run_due()[0] == {"accounts": 0, "attempts": 0}  # not due yet
    waits = []
    for _ in range(4):
        clock.now = datetime.fromisoformat(
            accounts.list_rewards(STORE, "c1")["items"][0]["next_attempt_at"])
        before = clock.now
        assert rewards.run_due()[0] == {"accounts": 1, "attempts": 1}
        after = datetime.fromisoformat(accounts.list_rewards(STORE, "c1")["items"][0]["next_attempt_at"])
        waits.append((after - before).total_seconds())
    assert waits == [60, 100, 100, 100]  # doubling from 30, capped at the maximum
    shop.failure = None
    clock.now += timedelta(seconds=100)
    rewards.run_due()
    [listed] = accounts.list_rewards(STORE, "c1")["items"]
    assert listed["state"] == "issued" and listed["attempts"] == 6 and listed["last_error"] is None
    assert listed["code"] == reward["code"] and shop.creates == 1
    assert {c[2] for c in shop.calls} == {reward["code"]}  # every try asked for the same code
    assert len(owed(storage, "loyalty.reward_issued")) == 1
    assert accounts.account_view(STORE, "c1")["rewards_pending"] == 0
    balanced(accounts, "c1")


def test_an_answer_lost_after_the_shop_made_the_coupon_finds_it_instead_of_making_two(world):
    _, accounts, rewards, shop, clock = world
    earn(accounts, "c1", 1_000)
    real = shop.ensure_coupon

    def made_then_lost(*args):
        real(*args)
        raise Unavailable("outcome unknown")

    shop.ensure_coupon = made_then_lost
    reward = reward_of(rewards.redeem(STORE, "c1", 300))
    assert reward["state"] == "pending" and shop.creates == 1
    shop.ensure_coupon = real
    clock.now += timedelta(seconds=30)
    rewards.run_due()
    assert accounts.list_rewards(STORE, "c1")["items"][0]["state"] == "issued"
    assert shop.creates == 1


@pytest.mark.parametrize("failure", [Refused("woocommerce_rest_shop_coupon_not_created"),
                                     ValidationError("email must be one lower-cased email"),
                                     NotFound("no store s1")])
def test_a_permanent_refusal_gives_the_points_back_once(world, failure):
    storage, accounts, rewards, shop, clock = world
    earn(accounts, "c1", 1_000)
    shop.failure = failure
    reward = reward_of(rewards.redeem(STORE, "c1", 400, request_id="r-1"))
    assert reward["state"] == "returned" and reward["last_error"].startswith(type(failure).__name__)
    assert accounts.account_view(STORE, "c1")["balance"] == 1_000
    [returned] = owed(storage, "loyalty.reward_returned")
    assert (returned["reason"], returned["points_returned"]) == ("refused", 400)
    changes = [(e["kind"], e["delta"]) for e in owed(storage, "loyalty.points_changed")]
    assert changes[-2:] == [("redeem", -400), ("return", 400)]
    shop.failure = None
    clock.now += timedelta(days=1)
    assert rewards.run_due()[0]["attempts"] == 0  # a returned reward is done
    rewards.redeem(STORE, "c1", 400, request_id="r-1")  # the request again: answered, not redone
    assert accounts.account_view(STORE, "c1")["balance"] == 1_000
    assert balanced(accounts, "c1")["totals"] == {"earn": 1_000, "redeem": -400, "return": 400}


def test_returned_points_keep_the_expiry_of_the_points_they_were(world):
    _, accounts, rewards, shop, clock = world
    earn(accounts, "c1", 1_000)
    shop.failure = Refused("no")
    rewards.redeem(STORE, "c1", 400)
    doc = accounts.storage.accounts.get(STORE, "c1")
    [back] = [lot for lot in doc["lots"] if lot["source"] == "return"]
    assert back["expires_at"] == datetime(2027, 6, 1, 12, tzinfo=timezone.utc)
    clock.now = datetime(2027, 6, 1, 12, tzinfo=timezone.utc)
    accounts.daily(STORE, "c1")
    assert accounts.account_view(STORE, "c1")["balance"] == 0
    balanced(accounts, "c1")


# -- used by orders --------------------------------------------------------------------------------

def test_an_order_with_the_code_uses_the_reward_whoever_placed_it_and_cancelling_gives_it_back(world):
    storage, accounts, rewards, _, clock = world
    earn(accounts, "c1", 1_000)
    earn(accounts, "c2", 1_000, order_id="2")
    reward = reward_of(rewards.redeem(STORE, "c1", 500))
    code = reward["code"]
    # Used in an order of another customer (the shop checks the email, not the account).
    clock.now += timedelta(hours=1)
    accounts.apply_order_event(order_event("77", "c2", 3_000, codes=(code.upper(),),
                                           at=clock.now))
    [used] = accounts.list_rewards(STORE, "c1")["items"]
    assert (used["state"], used["order_id"]) == ("used", "77")
    [event] = owed(storage, "loyalty.reward_used")
    assert (event["order_id"], event["code"]) == ("77", code)
    # An older state of the same order arriving late changes nothing.
    accounts.apply_order_event(order_event("77", "c2", 3_000, codes=(code,), status="cancelled",
                                           at=clock.now - timedelta(minutes=5),
                                           event_type="order.updated"))
    assert accounts.list_rewards(STORE, "c1")["items"][0]["state"] == "used"
    # Cancelled: WooCommerce gives the use back, the reward can be spent again.
    accounts.apply_order_event(order_event("77", "c2", 3_000, codes=(code,), status="cancelled",
                                           at=clock.now + timedelta(minutes=5),
                                           event_type="order.updated"))
    again = accounts.list_rewards(STORE, "c1")["items"][0]
    assert (again["state"], again["order_id"]) == ("issued", None)
    assert accounts.account_view(STORE, "c1")["balance"] == 500  # no points moved either way
    # A guest's order uses it, then is refunded: a refund keeps the use.
    accounts.apply_order_event(order_event("78", None, 3_000, codes=(code,),
                                           at=clock.now + timedelta(minutes=10)))
    accounts.apply_order_event(order_event("78", None, 3_000, codes=(code,), status="refunded",
                                           at=clock.now + timedelta(minutes=20),
                                           event_type="order.updated"))
    final = accounts.list_rewards(STORE, "c1")["items"][0]
    assert (final["state"], final["order_id"]) == ("used", "78")
    assert [e["order_id"] for e in owed(storage, "loyalty.reward_used")] == ["77", "78"]
    # Used, it never expires or comes back.
    clock.now += timedelta(days=200)
    rewards.run_due()
    assert accounts.list_rewards(STORE, "c1")["items"][0]["state"] == "used"
    assert accounts.account_view(STORE, "c1")["balance"] == 500
    balanced(accounts, "c1")
    balanced(accounts, "c2")


@pytest.mark.parametrize("cancel_first", [True, False], ids=["cancel-first", "reuse-first"])
def test_a_code_given_back_and_spent_again_is_used_whichever_webhook_arrives_first(
        world, cancel_first):
    """Order A spends the code, A is cancelled at the shop (the use given back) and order B
    spends it again. B's webhook may overtake A's cancellation: the reward ends used by B."""
    storage, accounts, rewards, _, clock = world
    earn(accounts, "c1", 1_000)
    code = reward_of(rewards.redeem(STORE, "c1", 500))["code"]
    placed_a = order_event("A", "c1", 2_000, codes=(code,), at=T0 + timedelta(minutes=1))
    cancelled_a = order_event("A", "c1", 2_000, codes=(code,), status="cancelled",
                              at=T0 + timedelta(minutes=2), event_type="order.updated")
    placed_b = order_event("B", "c1", 2_000, codes=(code,), at=T0 + timedelta(minutes=3))
    accounts.apply_order_event(placed_a)
    for event in ([cancelled_a, placed_b] if cancel_first else [placed_b, cancelled_a]):
        accounts.apply_order_event(event)
    [reward] = accounts.list_rewards(STORE, "c1")["items"]
    assert (reward["state"], reward["order_id"]) == ("used", "B")
    assert [e["order_id"] for e in owed(storage, "loyalty.reward_used")] == ["A", "B"]
    # B's cancellation gives it back; a late copy of A's placement changes nothing.
    accounts.apply_order_event(order_event("B", "c1", 2_000, codes=(code,), status="cancelled",
                                           at=T0 + timedelta(minutes=4),
                                           event_type="order.updated"))
    accounts.apply_order_event(placed_a)
    [reward] = accounts.list_rewards(STORE, "c1")["items"]
    assert (reward["state"], reward["order_id"]) == ("issued", None)
    balanced(accounts, "c1")


def test_two_orders_counting_one_code_leave_it_used_by_the_first(world):
    """Were the shop ever to count one code twice, the reward stays used by the first order:
    a second use is not a second reward."""
    storage, accounts, rewards, _, _ = world
    earn(accounts, "c1", 1_000)
    code = reward_of(rewards.redeem(STORE, "c1", 500))["code"]
    accounts.apply_order_event(order_event("B", "c1", 2_000, codes=(code,),
                                           at=T0 + timedelta(minutes=3)))
    accounts.apply_order_event(order_event("A", "c1", 2_000, codes=(code,),
                                           at=T0 + timedelta(minutes=5)))
    [reward] = accounts.list_rewards(STORE, "c1")["items"]
    assert (reward["state"], reward["order_id"]) == ("used", "B")
    assert [e["order_id"] for e in owed(storage, "loyalty.reward_used")] == ["B"]
    accounts.apply_order_event(order_event("B", "c1", 2_000, codes=(code,), status="failed",
                                           at=T0 + timedelta(minutes=6),
                                           event_type="order.updated"))
    [reward] = accounts.list_rewards(STORE, "c1")["items"]
    assert (reward["state"], reward["order_id"]) == ("used", "A")
    balanced(accounts, "c1")


def test_an_order_with_an_unknown_code_changes_nothing(world):
    storage, accounts, _, _, _ = world
    earn(accounts, "c1", 1_000)
    accounts.apply_order_event(order_event("9", "c1", 1_000, codes=("summer10",)))
    assert owed(storage, "loyalty.reward_used") == []


# -- cancelled and expired -------------------------------------------------------------------------

def test_cancelling_deletes_the_coupon_then_gives_the_points_back(world):
    storage, accounts, rewards, shop, clock = world
    earn(accounts, "c1", 1_000)
    reward = reward_of(rewards.redeem(STORE, "c1", 500))
    shop.failure = Unavailable("down")
    closing = rewards.cancel(STORE, "c1", reward["reward_id"], "ops@shop").answer
    assert closing["state"] == "closing" and closing["last_error"] == "Unavailable: down"
    assert accounts.account_view(STORE, "c1")["balance"] == 500  # not before the shop confirmed
    with pytest.raises(Conflict, match="closing"):
        rewards.cancel(STORE, "c1", reward["reward_id"], "ops@shop")
    shop.failure = None
    clock.now += timedelta(seconds=30)
    rewards.run_due()
    [done] = accounts.list_rewards(STORE, "c1")["items"]
    assert done["state"] == "returned" and reward["code"] not in shop.coupons
    assert accounts.account_view(STORE, "c1")["balance"] == 1_000
    [returned] = owed(storage, "loyalty.reward_returned")
    assert (returned["reason"], returned["points_returned"]) == ("cancelled", 500)
    with pytest.raises(NotFound):
        rewards.cancel(STORE, "c1", "no-such-reward", "ops@shop")
    with pytest.raises(ValidationError):
        rewards.cancel(STORE, "c1", reward["reward_id"], "")
    balanced(accounts, "c1")


def test_a_coupon_the_shop_says_was_used_stays_spent_and_the_webhook_names_the_order(world):
    storage, accounts, rewards, shop, clock = world
    earn(accounts, "c1", 1_000)
    reward = reward_of(rewards.redeem(STORE, "c1", 500))
    shop.coupons[reward["code"]]["usage_count"] = 1  # an order the webhook has not told yet
    answer = rewards.cancel(STORE, "c1", reward["reward_id"], "ops@shop").answer
    assert (answer["state"], answer["order_id"]) == ("used", None)
    assert accounts.account_view(STORE, "c1")["balance"] == 500
    accounts.apply_order_event(order_event("90", "c1", 2_000, codes=(reward["code"],),
                                           at=clock.now + timedelta(minutes=1)))
    assert accounts.list_rewards(STORE, "c1")["items"][0]["order_id"] == "90"
    assert [e["order_id"] for e in owed(storage, "loyalty.reward_used")] == ["90"]
    assert owed(storage, "loyalty.reward_returned") == []
    with pytest.raises(Conflict, match="used"):
        rewards.cancel(STORE, "c1", reward["reward_id"], "ops@shop")
    balanced(accounts, "c1")


def test_a_cancel_waits_for_a_coupon_call_that_may_still_be_running(world):
    _, accounts, _, _, clock = world
    earn(accounts, "c1", 1_000)
    reward = reward_of(accounts.redeem(STORE, "c1", 500))

    def claim(account):
        return account.claim_step(reward["reward_id"], 30, 100, 30) is not None

    accounts.change(STORE, "c1", claim)  # a worker took the step and is asking the shop
    clock.now += timedelta(seconds=5)
    cancelled = accounts.cancel_reward(STORE, "c1", reward["reward_id"], "ops@shop").answer
    assert cancelled["state"] == "closing"
    assert cancelled["next_attempt_at"] == (T0 + timedelta(seconds=30)).isoformat()


@pytest.mark.parametrize("give_back", [True, False])
def test_an_unused_reward_expires_its_coupon_is_deleted_and_its_points_come_back(world, give_back):
    storage, accounts, rewards, shop, clock = world
    accounts.save_programme(STORE, {"expired_rewards_return_points": give_back})
    earn(accounts, "c1", 1_000)
    reward = reward_of(rewards.redeem(STORE, "c1", 500))
    clock.now = T0 + timedelta(days=90) - timedelta(seconds=1)
    assert rewards.run_due()[0]["attempts"] == 0  # still valid at the shop
    clock.now = T0 + timedelta(days=90)
    rewards.run_due()
    [done] = accounts.list_rewards(STORE, "c1")["items"]
    assert done["state"] == "expired" and reward["code"] not in shop.coupons
    assert shop.calls[-1] == ("delete", STORE, reward["code"])
    assert accounts.account_view(STORE, "c1")["balance"] == (1_000 if give_back else 500)
    [expired] = owed(storage, "loyalty.reward_expired")
    assert (expired["reason"], expired["points_returned"]) == ("expired", 500 if give_back else 0)
    balanced(accounts, "c1")


# -- erasure ---------------------------------------------------------------------------------------

def test_an_erasure_withdraws_the_persons_unused_coupons_from_the_shop_and_keeps_no_one(world):
    """Coupons carry the person's email at the shop: an erasure owes their deletion (unused
    ones; a used one is the shop's order's), retried while the shop is away, with nothing
    about the person kept but the code and the coupon's meta."""
    storage, accounts, rewards, shop, clock = world
    earn(accounts, "c1", 2_000)
    issued = reward_of(rewards.redeem(STORE, "c1", 500))
    used = reward_of(rewards.redeem(STORE, "c1", 500, request_id="r-used"))
    accounts.apply_order_event(order_event("55", "c1", 2_000, codes=(used["code"],),
                                           at=T0 + timedelta(minutes=1)))
    shop.coupons[used["code"]]["usage_count"] = 1
    shop.failure = Unavailable("down")
    pending = reward_of(rewards.redeem(STORE, "c1", 500, request_id="r-pending"))
    assert pending["state"] == "pending"
    shop.failure = None
    earn(accounts, "c2", 1_000, order_id="2")
    kept = reward_of(rewards.redeem(STORE, "c2", 500))

    counts = accounts.erase(STORE, ["c1"], "req-1")
    assert counts["coupons_to_withdraw"] == 2  # the issued and the pending one
    withdrawals = storage.coupon_withdrawals.collection
    assert {w["code"] for w in withdrawals.find()} == {issued["code"], pending["code"]}
    for held in withdrawals.find():
        assert set(held) == {"_id", "store_id", "code", "meta", "created_at", "attempts",
                             "next_attempt_at", "last_error"}
    # The shop is away: nothing lost, tried again after the wait.
    shop.failure = Unavailable("down")
    clock.now += timedelta(minutes=1)
    assert rewards_step_withdrawals(storage, shop, clock)["retrying"] == 2
    assert withdrawals.count_documents({"last_error": "Unavailable: down"}) == 2
    assert rewards_step_withdrawals(storage, shop, clock)["retrying"] == 0  # not due yet
    shop.failure = None
    clock.now += timedelta(seconds=30)
    counts = rewards_step_withdrawals(storage, shop, clock)
    assert (counts["withdrawn"], counts["absent"], counts["waiting"]) == (1, 1, 0)
    assert issued["code"] not in shop.coupons and used["code"] in shop.coupons
    assert kept["code"] in shop.coupons  # somebody else's reward is not touched
    # Asked again (gdpr retries): nothing more is owed.
    accounts.erase(STORE, ["c1"], "req-1")
    assert withdrawals.count_documents({}) == 0


def rewards_step_withdrawals(storage, shop, clock) -> dict:
    return storage.coupon_withdrawals.run_due(shop.delete_coupon, clock.now,
                                              WithdrawalPolicy(30, 100))


# -- store credit ----------------------------------------------------------------------------------

def test_store_credit_is_a_credit_coupon_and_its_balance_the_unused_ones(world):
    storage, accounts, rewards, shop, clock = world
    earn(accounts, "c1", 100)
    first = rewards.issue_credit(STORE, "c1", 1_500, "goodwill", "late parcel", "ops@shop",
                                 request_id="k-1")
    credit = reward_of(first)
    assert first.answer["entries"] == []  # no points move
    assert (credit["kind"], credit["state"], credit["points"]) == ("credit", "issued", None)
    assert (credit["reason"], credit["note"]) == ("goodwill", "late parcel")
    assert credit["expires_at"] == (T0 + timedelta(days=365)).isoformat()
    wire = shop.coupons[credit["code"]]["wire"]
    assert (wire["amount"], wire["discount_type"], wire["usage_limit"]) == (1_500, "fixed_cart", 1)
    assert wire["meta"]["loyalty_entry"] == "credit:k-1"
    later = T0 + timedelta(days=10)
    clock.now += timedelta(minutes=1)
    second = reward_of(rewards.issue_credit(STORE, "c1", 500, "refund_alternative",
                                            expires_at=later))
    assert second["expires_at"] == later.isoformat()
    view = accounts.account_view(STORE, "c1")
    assert view["store_credit"] == {"amount": 2_000, "currency": "EUR"}
    assert view["legacy_credit"] == {"amount": 0, "currency": "EUR"}
    accounts.apply_order_event(order_event("5", "c1", 3_000, codes=(credit["code"],)))
    assert accounts.account_view(STORE, "c1")["store_credit"]["amount"] == 500  # spent
    [issued_event] = [e for e in owed(storage, "loyalty.reward_issued") if e["kind"] == "credit"][:1]
    assert issued_event["points"] is None
    with pytest.raises(ValidationError, match="reason"):
        rewards.issue_credit(STORE, "c1", 100, "redemption")
    with pytest.raises(ValidationError, match="expires_at"):
        rewards.issue_credit(STORE, "c1", 100, "goodwill", expires_at=T0 - timedelta(days=1))
    with pytest.raises(ValidationError, match="amount"):
        rewards.issue_credit(STORE, "c1", 0, "goodwill")
    assert len(accounts.list_rewards(STORE, "c1")["items"]) == 2
    # Credit refused by the shop, or expired: nothing to give back, and it says so.
    shop.failure = Refused("no")
    clock.now += timedelta(minutes=1)
    refused = reward_of(rewards.issue_credit(STORE, "c1", 100, "goodwill"))
    assert refused["state"] == "returned"
    shop.failure = None
    clock.now = later
    rewards.run_due()
    assert accounts.account_view(STORE, "c1")["store_credit"]["amount"] == 0
    assert [(e["reason"], e["points_returned"]) for e in owed(storage, "loyalty.reward_expired")] == [
        ("expired", 0)]
    assert [r["state"] for r in accounts.list_rewards(STORE, "c1")["items"]] == [
        "returned", "expired", "used"]
    balanced(accounts, "c1")


# -- warnings and the check itself -------------------------------------------------------------------

def test_points_about_to_expire_are_announced_once_per_lot(world):
    storage, accounts, _, _, clock = world
    earn(accounts, "c1", 300)  # expires 2027-06-01 12:00
    clock.now = datetime(2027, 5, 18, 11, tzinfo=timezone.utc)  # 14 days and 1 hour before
    accounts.daily(STORE, "c1")
    assert owed(storage, "loyalty.points_expiring") == []
    clock.now = datetime(2027, 5, 18, 12, tzinfo=timezone.utc)
    accounts.daily(STORE, "c1")
    accounts.daily(STORE, "c1")
    [warning] = owed(storage, "loyalty.points_expiring")
    assert warning == {"customer_id": "c1", "lot_id": "earn:1", "points": 300,
                       "expires_at": "2027-06-01T12:00:00+00:00", "balance": 300}
    accounts.save_programme(STORE, {"expiry_warning_days": 0})
    earn(accounts, "c2", 300)
    accounts.daily(STORE, "c2")
    assert len(owed(storage, "loyalty.points_expiring")) == 1


def test_the_ledger_check_finds_points_both_spent_and_returned(world):
    _, accounts, rewards, shop, _ = world
    earn(accounts, "c1", 1_000)
    shop.failure = Refused("no")
    reward = reward_of(rewards.redeem(STORE, "c1", 400))
    balanced(accounts, "c1")
    accounts.storage.accounts.collection.update_one(
        {"_id": "s1:c1"}, {"$set": {f"rewards.{reward['reward_id']}.state": "used"}})
    check = accounts.ledger_check(STORE, "c1")
    assert not check["ok"] and any("came back" in p for p in check["problems"])
    accounts.storage.accounts.collection.update_one({"_id": "s1:c1"}, {"$inc": {"debt": 1}})
    assert any("entries sum to" in p for p in accounts.ledger_check(STORE, "c1")["problems"])


def test_credit_held_from_before_coupons_becomes_a_credit_coupon_once(world):
    storage, accounts, rewards, shop, _ = world
    earn(accounts, "c1", 100)
    lot = {"credit_id": "credit:old", "reason": "redemption", "amount": 1_000, "remaining": 600,
           "issued_at": T0 - timedelta(days=30), "expires_at": None}
    gone = {**lot, "credit_id": "credit:gone", "expires_at": T0 - timedelta(days=1)}
    storage.accounts.collection.update_one({"_id": "s1:c1"},
                                           {"$set": {"credit_lots": [lot, gone]}})
    assert accounts.account_view(STORE, "c1")["legacy_credit"]["amount"] == 1_200
    accounts.daily(STORE, "c1")
    accounts.daily(STORE, "c1")
    [pending] = accounts.list_rewards(STORE, "c1")["items"]
    assert (pending["kind"], pending["state"], pending["amount"]["amount"]) == ("credit", "pending", 600)
    assert pending["expires_at"] == (T0 + timedelta(days=365)).isoformat()
    rewards.run_due()
    view = accounts.account_view(STORE, "c1")
    assert view["store_credit"]["amount"] == 600 and view["legacy_credit"]["amount"] == 0
    assert shop.coupons[pending["code"]]["wire"]["meta"]["loyalty_entry"] == "legacy:credit:old"
    kinds = [(e["kind"], e["delta"]) for e in storage.ledger.collection.find({"book": "credit"})]
    assert sorted(kinds) == [("credit_convert", -600), ("credit_expire", -600)]
    balanced(accounts, "c1")
