"""Saved-segment membership kept on each profile, one customer at a time, by the events that
change them; entering and leaving published once, with the segment's id and name."""
from __future__ import annotations

from datetime import timedelta

import pytest

from services.segmentation.directory import search_customers
from services.segmentation.saved_segments import SavedSegments
from shared.events import contract
from tests.unit.test_segmentation_profiles import T0, order_event, owed, setup  # noqa: F401

BIG = {"segment_id": "big", "name": "Big spenders",
       "conditions": [{"field": "total_spent", "op": "gt", "value": 10000}]}
GIFT = {"segment_id": "gift", "name": "Gift buyers",
        "conditions": [{"field": "tags", "op": "contains", "value": "gift"}]}


def membership(storage) -> list[tuple[str, str, str]]:
    return [(m["event_type"].rsplit("_", 1)[1], m["data"]["customer_id"], m["data"]["segment_id"])
            for m in owed(storage) if m["event_type"].startswith("customer.saved_segment_")]


def test_an_order_that_crosses_the_conditions_enters_and_a_refund_leaves(setup):
    storage, profiles, _ = setup
    SavedSegments(storage.saved_segments).create("s1", BIG)
    profiles.apply_order_event(order_event("1", "c1", 5000))
    assert storage.profiles.get("s1", "c1")["saved_segments"] == []
    profiles.apply_order_event(order_event("2", "c1", 6000))
    profiles.apply_order_event(order_event("2", "c1", 6000))  # redelivered: nothing new
    assert storage.profiles.get("s1", "c1")["saved_segments"] == ["big"]
    profiles.apply_order_event(order_event("2", "c1", 6000, refunded=6000,
                                           at=T0 + timedelta(minutes=1),
                                           event_type="order.refunded"))
    assert storage.profiles.get("s1", "c1")["saved_segments"] == []
    assert membership(storage) == [("entered", "c1", "big"), ("left", "c1", "big")]
    entered = next(m for m in owed(storage)
                   if m["event_type"] == "customer.saved_segment_entered")
    assert entered["data"]["name"] == "Big spenders"
    contract("customer.saved_segment_entered").schema().load(entered["data"])


def test_a_tag_by_hand_enters_a_segment_conditioned_on_it_and_only_that_customer(setup):
    storage, profiles, _ = setup
    SavedSegments(storage.saved_segments).create("s1", GIFT)
    profiles.apply_order_event(order_event("1", "c1", 5000))
    profiles.apply_order_event(order_event("2", "c2", 5000))
    before = storage.profiles.get("s1", "c2")["version"]
    profiles.set_tags("s1", "c1", add=["gift"], actor="ops")
    assert storage.profiles.get("s1", "c2")["version"] == before  # no rescan of the store
    profiles.set_tags("s1", "c1", remove=["gift"], actor="ops")
    assert membership(storage) == [("entered", "c1", "gift"), ("left", "c1", "gift")]


def test_the_customer_list_filters_by_a_saved_segment(setup):
    storage, profiles, _ = setup
    SavedSegments(storage.saved_segments).create("s1", BIG)
    profiles.apply_order_event(order_event("1", "c1", 50000))
    profiles.apply_order_event(order_event("2", "c2", 500))
    found = search_customers(storage.profiles, "s1", {"saved_segment": "big"})
    assert [c["customer_id"] for c in found["items"]] == ["c1"] and found["total"] == 1


def test_a_segment_saved_later_is_evaluated_by_the_recompute_and_a_deleted_one_leaves_quietly(
        setup):
    storage, profiles, _ = setup
    profiles.apply_order_event(order_event("1", "c1", 50000))
    segments = SavedSegments(storage.saved_segments)
    segments.create("s1", BIG)
    profiles.recompute_store("s1")
    assert storage.profiles.get("s1", "c1")["saved_segments"] == ["big"]
    segments.delete("s1", "big")
    assert storage.profiles.forget_saved_segment("s1", "big") == 1
    profiles.reevaluate("s1", "c1")
    assert storage.profiles.get("s1", "c1")["saved_segments"] == []
    assert membership(storage) == [("entered", "c1", "big")]  # no leaving a deleted segment


@pytest.mark.parametrize("bad", ["a:b", "x" * 65])
def test_the_filter_refuses_an_id_that_is_not_one(setup, bad):
    from shared.errors import ValidationError

    storage, _, _ = setup
    with pytest.raises(ValidationError):
        search_customers(storage.profiles, "s1", {"saved_segment": bad})
