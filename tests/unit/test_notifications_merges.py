"""notifications' side of merges: the merged contact leaves every audience, its pending sends
move to the primary (or are cancelled as duplicates), and an unmerge hands them back."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from services.notifications.merges import ContactMerges
from services.notifications.notifier import Notifier
from services.notifications.policy import decide, load_settings
from services.notifications.repository import NotificationsStorage
from shared.events import build_event, contract
from tests.support import storage_at

T0 = datetime(2026, 11, 29, 12, tzinfo=timezone.utc)


@pytest.fixture
def setup(database):
    storage, clock = storage_at(NotificationsStorage, database, T0)
    notifier = Notifier(storage, clock)
    notifier.save_workflow("s1", {"workflow_id": "vip", "name": "VIP welcome",
                                  "trigger": {"event": "customer.tagged", "tag": "vip"},
                                  "delay_seconds": 86400, "channel": "email",
                                  "template": "win_back", "purpose": "marketing"})
    return storage, notifier, ContactMerges(storage, clock)


def known(notifier, customer_id: str, email: str, *tags: str) -> None:
    notifier.apply(build_event("customer.created", store_id="s1", occurred_at=T0, data={
        **contract("customer.created").sample, "customer_id": customer_id, "email": email}))
    for tag in tags:
        notifier.apply(build_event("customer.tagged", store_id="s1", occurred_at=T0, data={
            **contract("customer.tagged").sample, "customer_id": customer_id, "tag": tag,
            "fact_at": T0.isoformat()}))


def merged(primary="reg", other="guest", merge_id="m1", kind="manual"):
    return build_event("customer.merged", store_id="s1", data={
        "customer_id": primary, "merged_customer_id": other, "merge_id": merge_id, "kind": kind})


def unmerged(primary="reg", other="guest", merge_id="m1"):
    return build_event("customer.unmerged", store_id="s1", data={
        "customer_id": primary, "restored_customer_id": other, "merge_id": merge_id})


def sends(storage) -> dict[str, tuple]:
    return {s["_id"]: (s["customer_id"], s["status"], s.get("reason"))
            for s in storage.sends.collection.find()}


def test_a_guest_merged_by_email_gets_no_bulk_send(setup):
    storage, notifier, merges = setup
    known(notifier, "reg", "ada@example.com", "news")
    known(notifier, "guest", "ada@example.com", "news")  # the stale guest of the same person
    merges.merge(build_event("customer.merged", store_id="s1", data={
        "customer_id": "reg", "merged_customer_id": "guest", "kind": "guest"}))
    notifier.bulk_send("s1", {"tag": "news"}, "win_back", None, bulk_id="b1")
    assert [c for c, _, _ in sends(storage).values()] == ["reg"]
    for kind, value in (("customer_ids", ["guest"]), ("segment", None)):
        assert [c["customer_id"] for c in storage.contacts.in_audience("s1", kind, value)
                if c["customer_id"] == "guest"] == []
    assert [c["customer_id"] for c in storage.contacts.dates_of_active("s1")] == ["reg"]
    guest = storage.contacts.get("s1", "guest")
    decision = decide("email", "transactional", guest, load_settings(None), T0, 0)
    assert decision.code == "customer_inactive"  # nothing at all goes to a merged contact


def test_pending_sends_move_to_the_primary_and_duplicates_are_cancelled(setup):
    storage, notifier, merges = setup
    known(notifier, "reg", "ada@example.com", "vip")
    known(notifier, "guest", "ada@old.example", "vip")
    notifier.bulk_send("s1", {"customer_ids": ["guest"]}, "win_back", None, bulk_id="only-guest")
    notifier.bulk_send("s1", {"tag": "vip"}, "win_back", None, bulk_id="both")
    before = sends(storage)
    [guest_vip] = [k for k, v in before.items() if k.startswith("wf:vip:guest")]
    assert merges.merge(merged()) == {"moved": 1, "cancelled": 2}
    after = sends(storage)
    assert after["bulk:only-guest:guest"] == ("reg", "scheduled", None)
    assert after["bulk:both:guest"] == ("guest", "cancelled", "merged duplicate")
    assert after[guest_vip] == ("guest", "cancelled", "merged duplicate")
    assert after["bulk:both:reg"] == ("reg", "scheduled", None)
    assert storage.contacts.get("s1", "guest")["status"] == "merged"
    # Redelivered: nothing more moves or is cancelled.
    assert merges.merge(merged()) == {"moved": 0, "cancelled": 0}
    assert sends(storage) == after


def test_an_unmerge_brings_the_contact_back_with_the_moved_sends_still_pending(setup):
    storage, notifier, merges = setup
    known(notifier, "reg", "ada@example.com")
    known(notifier, "guest", "ada@old.example", "news")
    notifier.bulk_send("s1", {"customer_ids": ["guest"]}, "win_back", None, bulk_id="b1")
    notifier.bulk_send("s1", {"customer_ids": ["guest"]}, "win_back",
                       (T0 + timedelta(days=2)).isoformat(), bulk_id="b2")
    merges.merge(merged())
    storage.sends.collection.update_one({"_id": "bulk:b1:guest"},
                                        {"$set": {"status": "sent"}})  # went out meanwhile
    assert merges.unmerge(unmerged()) == {"returned": 1}
    after = sends(storage)
    assert after["bulk:b1:guest"] == ("reg", "sent", None)
    assert after["bulk:b2:guest"] == ("guest", "scheduled", None)
    guest = storage.contacts.get("s1", "guest")
    assert guest["status"] == "active" and "merged_into" not in guest
    assert [c["customer_id"] for c in storage.contacts.in_audience("s1", "tag", "news")] == \
        ["guest"]
    assert merges.unmerge(unmerged()) == {"returned": 0}  # redelivered


def test_an_unmerge_before_its_merge_makes_the_merge_a_no_op(setup):
    storage, notifier, merges = setup
    known(notifier, "reg", "ada@example.com")
    known(notifier, "guest", "ada@old.example")
    notifier.bulk_send("s1", {"customer_ids": ["guest"]}, "win_back", None, bulk_id="b1")
    merges.unmerge(unmerged())
    assert merges.merge(merged()) == {"moved": 0, "cancelled": 0}
    assert storage.contacts.get("s1", "guest")["status"] == "active"
    assert sends(storage)["bulk:b1:guest"] == ("guest", "scheduled", None)


def test_a_merge_of_a_contact_never_seen_keeps_a_late_one_out_of_audiences(setup):
    storage, notifier, merges = setup
    known(notifier, "reg", "ada@example.com")
    merges.merge(merged(other="ghost"))
    known(notifier, "ghost", "ghost@example.com", "news")  # its events arrive late
    assert storage.contacts.get("s1", "ghost")["status"] == "merged"
    assert list(storage.contacts.in_audience("s1", "tag", "news")) == []
    merges.unmerge(unmerged(other="ghost"))
    assert storage.contacts.get("s1", "ghost")["status"] == "active"


def test_an_erasure_after_a_merge_leaves_only_ids_and_state_in_its_receipt(setup, caplog):
    storage, notifier, merges = setup
    known(notifier, "reg", "ada@example.com", "vip")
    known(notifier, "guest", "ada@old.example", "vip")
    notifier.bulk_send("s1", {"customer_ids": ["guest"]}, "win_back",
                       (T0 + timedelta(days=2)).isoformat(), bulk_id="b2")
    event = merged()
    merges.merge(event)
    assert storage.merges.get("s1", "m1", "guest")["moved_sends"]  # what the erasure blanks
    notifier.erase("s1", ["guest"], "r1")
    receipt = storage.merges.get("s1", "m1", "guest")
    assert {k: receipt[k] for k in ("moved_sends", "cancelled_sends", "contact_status",
                                    "state", "primary_id", "forgotten")} == \
        {"moved_sends": [], "cancelled_sends": [], "contact_status": None, "state": "merged",
         "primary_id": "reg", "forgotten": True}
    # A redelivered merge and the unmerge after the erasure change nothing.
    held = sends(storage)
    assert merges.merge(event) == {"moved": 0, "cancelled": 0}
    with caplog.at_level("INFO", logger="shared.merge_receipts"):
        assert merges.unmerge(unmerged()) == {"returned": 0}
    assert sends(storage) == held
    assert storage.contacts.get("s1", "guest")["status"] == "erased"
    assert any("hands back nothing" in r.getMessage() for r in caplog.records)
