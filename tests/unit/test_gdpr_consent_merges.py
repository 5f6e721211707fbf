"""gdpr's side of merges: the primary's consent becomes the most restrictive across the
records, and an unmerge gives back what the merge changed unless it changed since."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from devdoubles import mongomock_adapter
from services import registry
from services.gdpr.bootstrap import build
from services.gdpr.consent_merges import ConsentMerges, withdrawals_to_apply
from services.gdpr.desk import Desk
from services.gdpr.repository import GdprStorage
from shared.config import Config
from shared.events import build_event
from shared.outbox import OUTBOX_FIELD
from tests.support import Clock, storage_at

T0 = datetime(2026, 11, 1, 9, tzinfo=timezone.utc)


@pytest.fixture
def setup(database):
    storage, clock = storage_at(GdprStorage, database, T0)
    notified = []
    return (storage, Desk(storage, clock=clock),
            ConsentMerges(storage, clock=clock), clock, notified)


def merged(primary="reg", other="guest", merge_id="m1"):
    return build_event("customer.merged", store_id="s1", data={
        "customer_id": primary, "merged_customer_id": other, "merge_id": merge_id,
        "kind": "manual"})


def unmerged(primary="reg", other="guest", merge_id="m1"):
    return build_event("customer.unmerged", store_id="s1", data={
        "customer_id": primary, "restored_customer_id": other, "merge_id": merge_id})


def purposes(storage, customer_id: str) -> dict[str, bool]:
    doc = storage.consents.get("s1", customer_id) or {}
    return {p: s["granted"] for p, s in (doc.get("purposes") or {}).items()}


def published(storage) -> list[tuple]:
    out = []
    for doc in storage.consents.collection.find({f"{OUTBOX_FIELD}.0": {"$exists": True}}):
        out.extend((m["message"]["data"]["customer_id"], m["message"]["data"]["purpose"],
                    m["message"]["data"]["granted"], m["message"]["data"]["source"])
                   for m in doc[OUTBOX_FIELD])
    return out


def test_the_most_restrictive_rule_per_purpose():
    on, off = {"granted": True}, {"granted": False}
    pending = {"granted": False, "pending": True}
    primary = {"email_marketing": on, "sms_marketing": on, "data_processing": off}
    merged = {"email_marketing": off, "sms_marketing": pending, "data_processing": off}
    assert list(withdrawals_to_apply(primary, merged)) == ["email_marketing"]
    # a grant on the merged record alone grants nothing; a withdrawal where the primary has
    # no record withdraws there too
    assert withdrawals_to_apply({}, {"email_marketing": on, "sms_marketing": off}) == \
        {"sms_marketing": off}


def test_a_withdrawal_on_the_merged_record_withdraws_on_the_primary(setup):
    storage, desk, merges, clock, notified = setup
    desk.set_consent("s1", "reg", "email_marketing", True, "checkout", "shop")
    desk.set_consent("s1", "reg", "sms_marketing", True, "checkout", "shop")
    desk.set_consent("s1", "guest", "email_marketing", False, "unsubscribe_link", "customer")
    desk.set_consent("s1", "guest", "sms_marketing", True, "checkout", "shop")
    before = published(storage)
    clock.now = T0 + timedelta(minutes=1)
    assert merges.merge(merged(), notified.extend) == ["email_marketing"]
    assert purposes(storage, "reg") == {"email_marketing": False, "sms_marketing": True}
    assert [e for e in published(storage) if e not in before] == \
        [("reg", "email_marketing", False, "unsubscribe_link")]
    assert notified == [("consents", "s1:reg")]
    assert purposes(storage, "guest") == {"email_marketing": False, "sms_marketing": True}
    # Redelivered: nothing more.
    assert merges.merge(merged()) == []
    assert len(published(storage)) == len(before) + 1


def test_an_unmerge_gives_back_what_the_merge_changed_and_nothing_changed_since(setup):
    storage, desk, merges, clock, _ = setup
    desk.set_consent("s1", "reg", "email_marketing", True, "checkout", "shop")
    desk.set_consent("s1", "guest", "email_marketing", False, "unsubscribe_link", "customer")
    desk.set_consent("s1", "guest", "sms_marketing", False, "sms_stop", "customer")
    clock.now = T0 + timedelta(minutes=1)
    assert merges.merge(merged()) == ["email_marketing", "sms_marketing"]
    clock.now = T0 + timedelta(minutes=2)
    desk.set_consent("s1", "reg", "sms_marketing", True, "operator", "ops")  # changed since
    clock.now = T0 + timedelta(minutes=3)
    assert merges.unmerge(unmerged()) == ["email_marketing"]
    doc = storage.consents.get("s1", "reg")
    assert purposes(storage, "reg") == {"email_marketing": True, "sms_marketing": True}
    assert doc["purposes"]["email_marketing"]["source"] == "checkout"
    assert ("reg", "email_marketing", True, "checkout") in published(storage)
    assert purposes(storage, "guest") == {"email_marketing": False, "sms_marketing": False}
    assert merges.unmerge(unmerged()) == []  # redelivered


def test_a_purpose_the_primary_never_had_goes_back_to_no_record(setup):
    storage, desk, merges, clock, _ = setup
    desk.set_consent("s1", "guest", "sms_marketing", False, "sms_stop", "customer")
    merges.merge(merged())
    assert purposes(storage, "reg") == {"sms_marketing": False}
    clock.now = T0 + timedelta(minutes=1)
    assert merges.unmerge(unmerged()) == ["sms_marketing"]
    assert purposes(storage, "reg") == {}
    history = [e["change_id"] for e in storage.consents.get("s1", "reg")["history"]]
    assert history == ["merge:m1:guest:sms_marketing", "unmerge:m1:guest:sms_marketing"]


def test_an_unmerge_before_its_merge_makes_the_merge_change_nothing(setup):
    storage, desk, merges, _, _ = setup
    desk.set_consent("s1", "reg", "email_marketing", True, "checkout", "shop")
    desk.set_consent("s1", "guest", "email_marketing", False, "unsubscribe_link", "customer")
    assert merges.unmerge(unmerged()) == []
    assert merges.merge(merged()) == []
    assert purposes(storage, "reg") == {"email_marketing": True}


def test_gdpr_builds_its_consent_merges_once_on_its_storage_and_clock():
    clock = Clock(T0)
    config = Config({}, registry.settings(["gdpr"]))
    app = build(mongomock_adapter.client()["gdpr"], config, clock=clock)
    assert app.consent_merges is app.consent_merges
    assert (app.consent_merges.storage, app.consent_merges.clock) == (app.storage, clock)
