"""The GDPR desk with stand-in services: lifecycle, audit, exports, erasure to its proof."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from services.gdpr.consent_merges import ConsentMerges
from services.gdpr.desk import Desk, DeskSettings
from services.gdpr.repository import GdprStorage
from shared.errors import Conflict, NotFound, ValidationError
from shared.events import build_event
from shared.outbox import OUTBOX_FIELD
from tests.support import storage_at

T0 = datetime(2026, 11, 1, 9, tzinfo=timezone.utc)
SERVICES = ("customer_sync", "segmentation", "loyalty", "notifications")



class StandIns:
    """Services that answer, or not, as a test says."""

    def __init__(self) -> None:
        self.down: set[str] = set()
        self.found: dict[str, list] = {}
        self.calls: list[tuple] = []

    def call(self, service, method, *args):
        return self.call_all([service], method, *args)[service]

    def call_all(self, services, method, *args):
        out = {}
        for service in services:
            self.calls.append((service, method, args))
            if service in self.down:
                out[service] = ("unavailable", "RpcTimeout")
            elif method == "find_customer":
                out[service] = ("ok", {"customer_id": "c-1", "email": "ada@example.com",
                                       "phone": "+447700900123", "first_name": "Ada",
                                       "last_name": "Lovelace"})
            elif method == "export_customer":
                out[service] = (("not_found", "no profile") if service == "loyalty"
                                else ("ok", {"service": service, "held": True}))
            elif method == "search_personal_data":
                out[service] = ("ok", {"service": service, "matches": self.found.get(service, [])})
            elif method == "rectify_customer":
                out[service] = ("ok", {"written_back": True})
        return out


@pytest.fixture
def desk(database):
    storage, clock = storage_at(GdprStorage, database, T0)
    return Desk(storage, DeskSettings(services=SERVICES, retry_seconds=30,
                                      confirmation_minutes=60), clock), clock


def run(desk, clock, services, minutes=0):
    clock.now += timedelta(minutes=minutes)
    return desk.process_due(services)


def test_lifecycle_audit_and_refusals(desk):
    desk, clock = desk
    with pytest.raises(ValidationError) as info:
        desk.submit("s1", "forget-me", "not-an-email", None, "ops")
    assert set(info.value.details["fields"]) == {"type", "email"}
    with pytest.raises(ValidationError, match="details.fields"):
        desk.submit("s1", "rectification", "ada@example.com", {"fields": {"password": "x"}}, "ops")
    request = desk.submit("s1", "access", "ada@example.com", None, "ops@shop")
    assert request["state"] == "received"
    assert request["due_at"] == (T0 + timedelta(days=30)).isoformat()
    with pytest.raises(NotFound):
        desk.get("req-nope")
    rejected = desk.submit("s1", "erasure", "bo@example.com", None, "ops@shop")
    with pytest.raises(ValidationError):
        desk.reject(rejected["request_id"], " ", "ops")
    done = desk.reject(rejected["request_id"], "could not verify identity", "ops@shop")
    assert done["state"] == "rejected"
    with pytest.raises(Conflict):
        desk.verify_identity(rejected["request_id"], "ops@shop")
    # overdue first in the list
    clock.now = T0 + timedelta(days=31)
    late = desk.submit("s1", "objection", "cy@example.com", None, "ops")
    listed = desk.list("s1")
    assert [r["request_id"] for r in listed][:1] == [request["request_id"]]
    assert listed[0]["overdue"] is True and late["overdue"] is False
    assert [a["action"] for a in desk.get(rejected["request_id"])["audit"]] == ["received", "rejected"]


def test_access_asks_every_service_waits_for_the_silent_one_and_assembles(desk):
    desk, clock = desk
    services = StandIns()
    request = desk.submit("s1", "access", "ada@example.com", None, "ops@shop")
    desk.verify_identity(request["request_id"], "ops@shop", "passport seen")
    services.down = {"segmentation"}
    run(desk, clock, services)
    state = desk.get(request["request_id"])
    assert state["state"] == "in_progress" and "segmentation" in state["waiting_for"]
    assert run(desk, clock, services) == 0  # not due again before the retry delay
    services.down = set()
    run(desk, clock, services, minutes=1)
    state = desk.get(request["request_id"])
    assert state["state"] == "completed"
    export = desk.download_export(request["request_id"])
    assert {m["service"]: m["status"] for m in export["manifest"]} == {
        "customer_sync": "data", "segmentation": "data", "loyalty": "nothing held",
        "notifications": "data", "gdpr": "data"}
    assert export["data"]["customer_sync"] == {"service": "customer_sync", "held": True}
    # the silent service was asked again; the others were not asked twice
    asked = [c[0] for c in services.calls if c[1] == "export_customer"]
    assert sorted(asked) == sorted(list(SERVICES) + ["segmentation"])
    actions = [a["action"] for a in state["audit"]]
    assert actions[:3] == ["received", "identity_verified", "in_progress"]
    assert "waiting" in actions and actions[-1] == "completed"


def test_erasure_completes_only_after_every_confirmation_and_a_clean_search(desk):
    desk, clock = desk
    services = StandIns()
    request = desk.submit("s1", "erasure", "ada@example.com", None, "ops@shop")
    request_id = request["request_id"]
    desk.verify_identity(request_id, "ops@shop")
    run(desk, clock, services)
    stored = desk.storage.requests.collection.find_one({"_id": request_id})
    [owed] = [e["message"] for e in stored[OUTBOX_FIELD]]
    assert owed["event_type"] == "gdpr.erasure_requested"
    assert owed["data"] == {"request_id": request_id, "customer_ids": ["c-1"],
                            "email": "ada@example.com"}

    def confirm(service):
        desk.record_confirmation(build_event("gdpr.erasure_completed", store_id="s1", data={
            "request_id": request_id, "service": service, "customer_ids": ["c-1"],
            "counts": {"records": 1}}))

    for service in ("customer_sync", "segmentation", "loyalty"):
        confirm(service)
    confirm("loyalty")  # a repeat changes nothing
    assert run(desk, clock, services, minutes=30) == 0
    # an hour without the last confirmation: overdue, asked again, named
    run(desk, clock, services, minutes=31)
    state = desk.get(request_id)
    assert state["state"] == "in_progress" and state["erasure"]["overdue_services"] == ["notifications"]
    stored = desk.storage.requests.collection.find_one({"_id": request_id})
    assert len({e["event_id"] for e in stored[OUTBOX_FIELD]}) == 2
    confirm("notifications")
    services.found = {"notifications": [{"collection": "sends", "count": 1}]}
    run(desk, clock, services)
    state = desk.get(request_id)
    assert state["state"] == "in_progress" and "notifications" in state["waiting_for"]
    services.found = {}
    run(desk, clock, services, minutes=1)
    state = desk.get(request_id)
    assert state["state"] == "completed" and state["result"]["verification"] == "nothing found"
    assert "search_terms" not in desk.storage.requests.collection.find_one({"_id": request_id}) or \
        desk.storage.requests.collection.find_one({"_id": request_id})["search_terms"] is None
    # The email is searched for everywhere; the phone and the name only where a service ties
    # them to the erased ids.
    searched = [c for c in services.calls if c[1] == "search_personal_data"][0][2]
    assert searched == ("s1", ["ada@example.com"], ["+447700900123", "Ada Lovelace"], ["c-1"])


def erasure_asked(desk, clock, services):
    """A verified erasure request, asked of every service: its id, and how a service confirms."""
    request_id = desk.submit("s1", "erasure", "ada@example.com", None, "ops@shop")["request_id"]
    desk.verify_identity(request_id, "ops@shop")
    run(desk, clock, services)

    def confirm(service):
        desk.record_confirmation(build_event("gdpr.erasure_completed", store_id="s1", data={
            "request_id": request_id, "service": service, "customer_ids": ["c-1"],
            "counts": {"records": 1}}))
    return request_id, confirm


def test_the_last_two_confirmations_at_once_still_start_the_verification(desk, monkeypatch):
    """Two services confirm at the same moment: each handler read the request before the
    other wrote, so neither saw all four. The request must still be verified right away, not
    an hour later when the missing confirmations would be asked for again."""
    desk, clock = desk
    services = StandIns()
    request_id, confirm = erasure_asked(desk, clock, services)
    confirm("segmentation")
    confirm("loyalty")
    read_before_either_wrote = desk.storage.requests.get(request_id)
    monkeypatch.setattr(desk.storage.requests, "get", lambda _id: read_before_either_wrote)
    confirm("customer_sync")
    confirm("notifications")
    monkeypatch.undo()
    stored = desk.storage.requests.collection.find_one({"_id": request_id})
    assert set(stored["erasure"]["confirmations"]) == set(SERVICES)
    assert run(desk, clock, services) == 1  # due now: no clock moved
    assert desk.get(request_id)["state"] == "completed"


def test_the_last_confirmation_landing_while_the_processor_holds_the_request_is_not_lost(
        desk, monkeypatch):
    """The processor read three confirmations of four and is about to park the request until
    confirmations are asked for again; the fourth lands in between, while the request is due
    (so its own 'verify now' finds nothing to move). The processor's write must not hide it."""
    desk, clock = desk
    services = StandIns()
    request_id, confirm = erasure_asked(desk, clock, services)
    for service in ("segmentation", "loyalty", "customer_sync"):
        confirm(service)
    requests = desk.storage.requests
    requests.collection.update_one({"_id": request_id}, {"$set": {"next_attempt_at": clock.now}})
    park = requests.step

    def fourth_confirmation_lands_first(*args, **kwargs):
        monkeypatch.setattr(requests, "step", park)
        confirm("notifications")
        return park(*args, **kwargs)

    monkeypatch.setattr(requests, "step", fourth_confirmation_lands_first)
    run(desk, clock, services)  # parked, due again at once, verified: no clock moved
    assert desk.get(request_id)["state"] == "completed"


def test_objection_and_consent_records(desk):
    desk, clock = desk
    services = StandIns()
    desk.set_consent("s1", "c-1", "email_marketing", True, "checkout", "shop")
    request = desk.submit("s1", "objection", "ada@example.com", None, "ops@shop")
    desk.verify_identity(request["request_id"], "ops@shop")
    clock.now += timedelta(seconds=1)
    run(desk, clock, services)
    consent = desk.get_consent("s1", "c-1")
    assert consent["purposes"]["email_marketing"]["granted"] is False
    assert consent["purposes"]["sms_marketing"]["granted"] is False
    assert [h["source"] for h in consent["history"]] == ["checkout", "request", "request"]
    # an SMS STOP from notifications is recorded, not re-published
    stop = build_event("consent.changed", store_id="s1", data={
        "customer_id": "c-2", "purpose": "sms_marketing", "granted": False, "source": "sms_stop",
        "changed_at": T0.isoformat(), "origin": "notifications"})
    desk.record_consent_event(stop)
    desk.record_consent_event(stop)
    doc = desk.storage.consents.collection.find_one({"_id": "s1:c-2"})
    assert len(doc["history"]) == 1 and doc["outbox"] == []
    with pytest.raises(ValidationError):
        desk.set_consent("s1", "c-1", "telepathy", True, "operator", "ops")


def test_rectification_goes_to_customer_sync(desk):
    desk, clock = desk
    services = StandIns()
    request = desk.submit("s1", "rectification", "ada@example.com",
                          {"fields": {"last_name": "King"}}, "ops")
    desk.verify_identity(request["request_id"], "ops")
    run(desk, clock, services)
    assert desk.get(request["request_id"])["result"]["rectified"] is True
    [call] = [c for c in services.calls if c[1] == "rectify_customer"]
    assert call[2][:3] == ("s1", "c-1", {"last_name": "King"})


def test_a_pending_email_opt_in_from_notifications_is_recorded_as_pending_then_granted(desk):
    """Double opt-in: the grant, then notifications holding it for confirmation, then the
    confirmation; the record shows each, and the current state follows the latest."""
    desk, clock = desk
    desk.set_consent("s1", "c-1", "email_marketing", True, "checkout", "shop")

    def from_notifications(at, granted, pending, source):
        return build_event("consent.changed", store_id="s1", data={
            "customer_id": "c-1", "purpose": "email_marketing", "granted": granted,
            "source": source, "changed_at": at.isoformat(), "origin": "notifications",
            "pending": pending})

    desk.record_consent_event(from_notifications(T0 + timedelta(seconds=1), False, True,
                                                 "checkout"))
    state = desk.get_consent("s1", "c-1")["purposes"]["email_marketing"]
    assert (state["granted"], state["pending"]) == (False, True)
    desk.record_consent_event(from_notifications(T0 + timedelta(minutes=5), True, False,
                                                 "email_confirmation"))
    consent = desk.get_consent("s1", "c-1")
    assert consent["purposes"]["email_marketing"]["granted"] is True
    assert consent["purposes"]["email_marketing"]["pending"] is False
    assert [(h["source"], h["pending"]) for h in consent["history"]] == [
        ("checkout", False), ("checkout", True), ("email_confirmation", False)]


def test_an_erasure_forgets_the_consent_states_a_merge_kept_in_its_receipt(desk, caplog):
    desk, clock = desk
    merges = ConsentMerges(desk.storage, clock=clock)
    desk.set_consent("s1", "c-1", "email_marketing", True, "checkout", "shop")
    desk.set_consent("s1", "c-2", "email_marketing", False, "unsubscribe_link", "customer")
    merge = build_event("customer.merged", store_id="s1", data={
        "customer_id": "c-1", "merged_customer_id": "c-2", "merge_id": "m1", "kind": "manual"})
    assert merges.merge(merge) == ["email_marketing"]
    assert desk.storage.merges.get("s1", "m1", "c-2")["consent"]  # what the erasure forgets
    services = StandIns()
    erasure_asked(desk, clock, services)
    receipt = desk.storage.merges.get("s1", "m1", "c-2")
    assert {k: receipt[k] for k in ("consent", "state", "primary_id", "forgotten")} == \
        {"consent": {}, "state": "merged", "primary_id": "c-1", "forgotten": True}
    for trace in ("checkout", "shop", "email_marketing"):
        assert trace not in repr(desk.storage.merges.collection.find_one({"_id": receipt["_id"]}))
    # A redelivered merge and the unmerge after the erasure change nothing.
    consents = list(desk.storage.consents.collection.find())
    assert merges.merge(merge) == []
    with caplog.at_level("INFO", logger="shared.merge_receipts"):
        assert merges.unmerge(build_event("customer.unmerged", store_id="s1", data={
            "customer_id": "c-1", "restored_customer_id": "c-2", "merge_id": "m1"})) == []
    assert list(desk.storage.consents.collection.find()) == consents
    assert desk.storage.merges.get("s1", "m1", "c-2") == receipt
    assert any("hands back nothing" in r.getMessage() for r in caplog.records)
