"""Segmentation's side of merges: what moves to the primary, what an unmerge hands back, and
redelivered or out-of-order merge events."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from services.segmentation.merges import Merges
from services.segmentation.profiles import Profiles
from services.segmentation.repository import SegmentationStorage
from services.segmentation.rules import validate_rule
from shared.events import build_event
from tests.support import storage_at
from tests.unit.test_segmentation_profiles import order_event, owed

T0 = datetime(2026, 6, 1, 12, tzinfo=timezone.utc)


@pytest.fixture
def setup(database):
    storage, clock = storage_at(SegmentationStorage, database, T0)
    profiles = Profiles(storage, clock=clock)
    return storage, profiles, Merges(storage, profiles, clock=clock), clock


def merged(primary="reg", other="guest", merge_id="m1", kind="manual"):
    return build_event("customer.merged", store_id="s1", data={
        "customer_id": primary, "merged_customer_id": other, "merge_id": merge_id, "kind": kind})


def unmerged(primary="reg", other="guest", merge_id="m1", orders_since=()):
    return build_event("customer.unmerged", store_id="s1", data={
        "customer_id": primary, "restored_customer_id": other, "merge_id": merge_id,
        "orders_since": list(orders_since)})


def seed(profiles):
    profiles.apply_order_event(order_event("1", "guest", 3000))
    profiles.apply_order_event(order_event("2", "reg", 4000))
    profiles.set_tags("s1", "guest", add=["gift", "shared"])
    profiles.set_groups("s1", "guest", add=["wholesale"])
    profiles.set_tags("s1", "reg", add=["shared"])


def test_a_legacy_guest_merge_without_an_id_moves_the_orders(setup):
    storage, profiles, merges, _ = setup
    profiles.apply_order_event(order_event("1", "guest", 3000))
    profiles.apply_order_event(order_event("2", "reg", 4000))
    merges.merge(build_event("customer.merged", store_id="s1",
                             data={"customer_id": "reg", "merged_customer_id": "guest"}))
    assert storage.profiles.get("s1", "reg")["stats"]["orders_count"] == 2
    assert storage.profiles.get("s1", "guest")["status"] == "merged"
    assert storage.merges.get("s1", "legacy:reg", "guest")["state"] == "merged"


def test_a_merge_moves_orders_and_the_manual_tags_and_groups_the_primary_lacks(setup):
    storage, profiles, merges, _ = setup
    seed(profiles)
    merges.merge(merged())
    reg = storage.profiles.get("s1", "reg")
    assert sorted(reg["orders"]) == ["1", "2"] and reg["stats"]["orders_count"] == 2
    assert reg["tag_list"] == ["gift", "shared"] and reg["group_list"] == ["wholesale"]
    record = storage.merges.get("s1", "m1", "guest")
    assert (record["orders"], sorted(record["tags"]), sorted(record["groups"])) == \
        (["1"], ["gift"], ["wholesale"])
    guest = storage.profiles.get("s1", "guest")
    assert (guest["status"], guest["merged_into"]) == ("merged", "reg")
    said = {(m["event_type"], m["data"].get("tag") or m["data"].get("group"))
            for m in owed(storage) if m["data"]["customer_id"] == "reg"}
    assert {("customer.tagged", "gift"), ("customer.group_joined", "wholesale")} <= said


def test_a_redelivered_merge_changes_nothing(setup):
    storage, profiles, merges, _ = setup
    seed(profiles)
    event = merged()
    merges.merge(event)
    profiles.set_tags("s1", "reg", remove=["gift"])  # a person removes a moved tag
    before = storage.profiles.get("s1", "reg")
    assert merges.merge(event).events == []
    assert storage.profiles.get("s1", "reg")["version"] == before["version"]
    assert storage.profiles.get("s1", "reg")["tag_list"] == ["shared"]


def test_an_unmerge_hands_back_what_moved_and_keeps_what_came_since(setup):
    storage, profiles, merges, clock = setup
    seed(profiles)
    merges.merge(merged())
    clock.now = T0 + timedelta(hours=1)
    profiles.apply_order_event(order_event("3", "reg", 5000, at=clock.now))  # arrived since
    profiles.apply_order_event(order_event("1", "reg", 3000, status="completed",
                                           at=clock.now, event_type="order.updated"))
    profiles.set_tags("s1", "reg", add=["later"])
    profiles.set_groups("s1", "reg", remove=["wholesale"])  # removed since: goes to no one
    merges.unmerge(unmerged())
    reg = storage.profiles.get("s1", "reg")
    guest = storage.profiles.get("s1", "guest")
    assert sorted(reg["orders"]) == ["2", "3"] and reg["stats"]["orders_count"] == 2
    assert reg["tag_list"] == ["later", "shared"] and reg["group_list"] == []
    assert reg["merges"] == []
    assert guest["status"] == "active" and guest["merged_into"] is None
    assert sorted(guest["orders"]) == ["1"] and guest["orders"]["1"]["status"] == "completed"
    assert guest["tag_list"] == ["gift", "shared"] and guest["group_list"] == []
    assert guest["stats"]["orders_count"] == 1
    assert storage.merges.get("s1", "m1", "guest")["state"] == "unmerged"
    said = {(m["event_type"], m["data"].get("tag"))
            for m in owed(storage) if m["data"]["customer_id"] == "reg"}
    assert ("customer.untagged", "gift") in said
    # Redelivered: nothing changes, nothing more is owed.
    count = len(owed(storage))
    versions = (reg["version"], guest["version"])
    merges.unmerge(unmerged())
    assert (storage.profiles.get("s1", "reg")["version"],
            storage.profiles.get("s1", "guest")["version"]) == versions
    assert len(owed(storage)) == count


def test_orders_since_the_merge_of_the_restored_records_own_account_go_back_with_it(setup):
    storage, profiles, merges, clock = setup
    seed(profiles)
    merges.merge(merged())
    clock.now = T0 + timedelta(hours=1)
    profiles.apply_order_event(order_event("3", "reg", 5000, at=clock.now))  # the guest's own
    profiles.apply_order_event(order_event("4", "reg", 7000, at=clock.now))  # the primary's
    merges.unmerge(unmerged(orders_since=["3"]))
    reg, guest = storage.profiles.get("s1", "reg"), storage.profiles.get("s1", "guest")
    assert sorted(reg["orders"]) == ["2", "4"] and reg["stats"]["orders_count"] == 2
    assert sorted(guest["orders"]) == ["1", "3"] and guest["stats"]["orders_count"] == 2


def test_the_restored_record_is_evaluated_again_with_the_rules_of_now(setup):
    storage, profiles, merges, _ = setup
    seed(profiles)
    merges.merge(merged())
    storage.put_rule("s1", validate_rule({  # a rule made while the guest was merged
        "rule_id": "buyer", "name": "bought", "enabled": True,
        "conditions": [{"field": "orders_count", "op": "gte", "value": 1}],
        "actions": [{"type": "add_tag", "value": "buyer"}]}))
    merges.unmerge(unmerged())
    assert "buyer" in storage.profiles.get("s1", "guest")["tag_list"]
    said = [(m["data"]["customer_id"], m["data"]["tag"]) for m in owed(storage)
            if m["event_type"] == "customer.tagged" and m["data"]["tag"] == "buyer"]
    assert ("guest", "buyer") in said


def test_an_unmerge_before_its_merge_makes_the_late_merge_a_no_op(setup):
    storage, profiles, merges, _ = setup
    seed(profiles)
    merges.unmerge(unmerged())
    merges.merge(merged())
    assert sorted(storage.profiles.get("s1", "reg")["orders"]) == ["2"]
    assert storage.profiles.get("s1", "guest")["status"] == "active"
    assert storage.merges.get("s1", "m1", "guest")["before_merge"] is True


def test_a_merge_of_a_record_never_seen_moves_nothing_and_keeps_it_inactive(setup):
    storage, profiles, merges, _ = setup
    profiles.apply_order_event(order_event("2", "reg", 4000))
    merges.merge(merged(other="ghost"))
    record = storage.merges.get("s1", "m1", "ghost")
    assert (record["orders"], record["tags"], record["groups"]) == ([], {}, {})
    assert storage.profiles.get("s1", "ghost")["status"] == "merged"
    assert storage.profiles.get("s1", "reg")["stats"]["orders_count"] == 1


def test_a_merge_interrupted_after_the_primary_is_finished_on_redelivery(setup):
    storage, profiles, merges, _ = setup
    seed(profiles)
    event = merged()
    real = storage.merges.set_state
    calls = []

    def crash(*args):
        calls.append(args)
        raise RuntimeError("worker died")

    storage.merges.set_state = crash
    with pytest.raises(RuntimeError):
        merges.merge(event)
    storage.merges.set_state = real
    merges.merge(event)
    reg = storage.profiles.get("s1", "reg")
    assert reg["merges"] == ["m1"] and reg["stats"]["orders_count"] == 2
    assert storage.merges.get("s1", "m1", "guest")["state"] == "merged"


def _erased_after_a_merge(setup):
    storage, profiles, merges, _ = setup
    seed(profiles)
    profiles.set_tags("s1", "guest", add=["complained-about-size-xl"], actor="ops@shop.test")
    event = merged()
    merges.merge(event)
    profiles.erase("s1", ["reg", "guest"], "r1")
    return event


def test_an_erasure_after_a_merge_leaves_nothing_of_what_moved_in_its_receipt(setup):
    storage, _, merges, _ = setup
    event = _erased_after_a_merge(setup)
    receipt = storage.merges.get("s1", "m1", "guest")
    assert (receipt["orders"], receipt["tags"], receipt["groups"]) == ([], {}, {})
    assert (receipt["state"], receipt["primary_id"], receipt["forgotten"]) == \
        ("merged", "reg", True)
    for trace in ("complained-about-size-xl", "gift", "wholesale", "ops@shop.test"):
        assert trace not in repr(storage.merges.collection.find_one({"_id": receipt["_id"]}))
    # A redelivered merge after the erasure changes nothing, and brings nothing back.
    before = {c: storage.profiles.get("s1", c) for c in ("reg", "guest")}
    assert merges.merge(event).events == []
    assert {c: storage.profiles.get("s1", c) for c in ("reg", "guest")} == before
    assert storage.merges.get("s1", "m1", "guest") == receipt


def test_an_erasure_of_the_merged_record_alone_forgets_the_receipt_too(setup):
    storage, profiles, merges, _ = setup
    seed(profiles)
    merges.merge(merged())
    profiles.erase("s1", ["guest"], "r1")
    assert storage.merges.get("s1", "m1", "guest")["tags"] == {}


def test_an_unmerge_of_a_forgotten_receipt_hands_back_nothing_and_says_so(setup, caplog):
    storage, profiles, merges, _ = setup
    seed(profiles)
    merges.merge(merged())
    profiles.erase("s1", ["guest"], "r1")
    held = {c: storage.profiles.get("s1", c) for c in ("reg", "guest")}
    with caplog.at_level("INFO", logger="shared.merge_receipts"):
        assert merges.unmerge(unmerged()).events == []
    assert {c: storage.profiles.get("s1", c) for c in ("reg", "guest")} == held
    assert any("hands back nothing" in r.getMessage() for r in caplog.records)
