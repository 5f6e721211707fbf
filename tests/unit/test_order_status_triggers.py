"""Transactional messages on an order's status change ("your order is on its way"): a workflow
trigger on order.updated or order.placed with `to_status`, once per order and status, and not
held by quiet hours, which are for marketing."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from services.gateway.console import forms
from services.notifications import workflows as wf
from services.notifications.notifier import Notifier
from services.notifications.policy import StoreSettings, decide
from services.notifications.repository import NotificationsStorage
from shared.errors import ValidationError
from shared.events import build_event, contract
from tests.support import Clock

NOW = datetime(2026, 11, 29, 22, 30, tzinfo=timezone.utc)  # inside the default quiet hours
TEMPLATES = {"welcome": "email", "win_back_sms": "sms"}
SHIPPED = {"workflow_id": "shipped", "name": "On its way", "channel": "email",
           "template": "welcome", "purpose": "transactional",
           "trigger": {"event": "order.updated", "to_status": "completed"}}


def test_a_status_trigger_is_validated_naming_its_field():
    assert wf.validate_workflow(SHIPPED, TEMPLATES)["trigger"] == SHIPPED["trigger"]
    placed = {**SHIPPED, "trigger": {"event": "order.placed", "to_status": "processing",
                                     "first_order": True}}
    assert wf.validate_workflow(placed, TEMPLATES)["trigger"]["to_status"] == "processing"
    for trigger, field in (({"event": "order.updated"}, "trigger.to_status"),
                           ({"event": "order.updated", "to_status": "shipped"},
                            "trigger.to_status"),
                           ({"event": "order.updated", "to_status": "cancelled"},
                            "trigger.to_status"),
                           ({"event": "order.updated", "to_status": "completed", "tag": "x"},
                            "trigger.tag"),
                           ({"event": "customer.tagged", "tag": "x", "to_status": "completed"},
                            "trigger.to_status")):
        with pytest.raises(ValidationError) as info:
            wf.validate_workflow({**SHIPPED, "trigger": trigger}, TEMPLATES)
        assert set(info.value.details["fields"]) == {field}, trigger


def _order(event_type: str, order_id: str, status: str, old_status: str | None = None,
           modified: datetime = NOW):
    data = {**contract("order.placed").sample, "customer_id": "c1", "order_id": order_id,
            "status": status, "date_created": (NOW - timedelta(days=2)).isoformat(),
            "date_modified": modified.isoformat()}
    if event_type == "order.updated":
        data.update(old_status=old_status, new_status=status, changed_fields=["status"])
    return build_event(event_type, store_id="s1", occurred_at=NOW, data=data)


@pytest.fixture
def notifier(database):
    storage = NotificationsStorage(database)
    storage.ensure_indexes()
    notifier = Notifier(storage, Clock(NOW))
    notifier.save_workflow("s1", SHIPPED)
    notifier.save_workflow("s1", {**SHIPPED, "workflow_id": "paid", "trigger": {
        "event": "order.placed", "to_status": "processing"}})
    return notifier


def test_once_per_order_and_status_however_the_status_comes_and_goes(notifier):
    sends = notifier.storage.sends.collection
    assert notifier.apply(_order("order.placed", "1", "processing")) == 1
    assert notifier.apply(_order("order.placed", "2", "pending")) == 0
    assert notifier.apply(_order("order.updated", "1", "processing", "pending")) == 0  # amounts
    assert notifier.apply(_order("order.updated", "1", "completed", "processing")) == 1
    # back to processing and completed again (staff fixing a mistake): told once
    assert notifier.apply(_order("order.updated", "1", "processing", "completed")) == 0
    again = _order("order.updated", "1", "completed", "processing",
                   modified=NOW + timedelta(minutes=5))
    assert notifier.apply(again) == 0
    assert notifier.apply(_order("order.updated", "2", "completed", "pending")) == 1
    assert sorted(s["_id"] for s in sends.find()) == [
        "wf:paid:c1:order:1:processing", "wf:shipped:c1:order:1:completed",
        "wf:shipped:c1:order:2:completed"]


def test_a_status_change_of_long_ago_starts_nothing(notifier):
    """Reconciliation can publish a change the webhooks missed days later: the order's own
    date_modified dates it, and the store's trigger-age limit applies."""
    late = _order("order.updated", "3", "completed", "processing",
                  modified=NOW - timedelta(days=5))
    assert notifier.apply(late) == 0


def test_quiet_hours_hold_marketing_sms_only():
    store = StoreSettings(timezone="UTC", quiet_start="21:00", quiet_end="08:00")
    contact = {"status": "active", "phone": "+447700900123",
               "consent": {"sms_marketing": {"granted": True}}}
    assert decide("sms", "transactional", contact, store, NOW, 0).action == "send"
    held = decide("sms", "marketing", contact, store, NOW, 0)
    assert held.action == "hold" and held.until == datetime(2026, 11, 30, 8, tzinfo=timezone.utc)


def test_the_console_reads_and_writes_a_status_trigger():
    form = {"name": "On its way", "trigger": "event:order.updated", "to_status": "completed",
            "placed_status": "processing", "channel": "email", "template": "welcome",
            "purpose": "transactional", "delay": "0", "delay_unit": "minutes"}
    body, _, errors = forms.parse_workflow(form)
    assert errors == {} and body["trigger"] == {"event": "order.updated", "to_status": "completed"}
    placed, _, _ = forms.parse_workflow({**form, "trigger": "event:order.placed"})
    assert placed["trigger"] == {"event": "order.placed", "to_status": "processing"}
    shown = forms.workflow_form({**SHIPPED, "trigger": placed["trigger"]})
    assert (shown["trigger"], shown["placed_status"], shown["to_status"]) == (
        "event:order.placed", "processing", "")
    assert forms.trigger_summary(SHIPPED["trigger"]) == \
        "An order's status changes: to_status completed"
