"""Hostile order events in one of loyalty's batches. Whoever can publish to customer_sync's
exchange can send order events naming any customer and carrying any coupon codes: in a batch
they change exactly what they change one at a time (nobody else's account, no reward but the
one whose code they carry), and a flood of codes costs no more round trips."""
from __future__ import annotations

import random

from shared.events import parse_event
from tests.unit.test_loyalty_accounts import order_event
from tests.unit.test_loyalty_order_batches import two  # noqa: F401  (the fixture)


def hostile_events(codes: list[str]) -> list:
    rng = random.Random(5)
    flood = [f"reward-{rng.getrandbits(40):x}" for _ in range(2_000)]
    messages = [order_event(order_id, customer, 10_000).to_message() for order_id, customer in
                [("h-1", "$where"), ("h-2", "c0.balance"), ("h-3", "c0"), ("h-4", "s1:c0"),
                 ("h-5", "c1"), ("h-6", "c5")]]
    messages[0]["data"]["coupon_codes"] = flood
    messages[1]["data"]["coupon_codes"] = ["", " ", "$ne", "reward-"]
    messages[3]["data"]["coupon_codes"] = [codes[1].upper(), *flood[:50]]  # c1's, shouted
    # As the consumer gets them: through the contract, as the entrypoint loads them.
    return [parse_event(message) for message in messages]


def test_hostile_ids_and_codes_in_a_batch_change_what_one_at_a_time_changes(two):  # noqa: F811
    batched, oracle = two
    events = hostile_events(oracle.codes)
    oracle.one_at_a_time(events)
    batched.accounts.apply_order_events(events)
    assert batched.dump() == oracle.dump()
    # Only c1's reward took a use (from the event carrying its code), no other reward did.
    used = {customer: [r["state"] for r in batched.storage.accounts.get("s1", customer)
                       ["rewards"].values()] for customer in ("c0", "c1")}
    assert used == {"c0": ["pending"], "c1": ["used"]}
    # An id that looks like a key or a path is a customer of its own.
    assert batched.accounts.account_view("s1", "s1:c0")["balance"] == 1_000
    assert batched.accounts.account_view("s1", "c0.balance")["balance"] == 1_000


def test_a_flood_of_codes_costs_no_more_round_trips(two, monkeypatch):  # noqa: F811
    batched, _ = two
    calls: list[str] = []
    collection = batched.storage.accounts.collection
    original = collection.find

    def counted(*args, **kwargs):
        calls.append("find")
        return original(*args, **kwargs)

    monkeypatch.setattr(collection, "find", counted)
    batched.accounts.apply_order_events(hostile_events(batched.codes))
    assert calls == ["find", "find"]  # the codes' holders, then the accounts
