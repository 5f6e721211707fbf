"""Custom fields in conditions and templates, attacked: condition keys that are operators,
paths or a megabyte long, values that are query operators, oversized text and lists, numbers
JSON cannot carry; a customer's custom value written as markup or as template code. A refused
condition names its part (`conditions.0.field`, `conditions.0.value`), answers in bounded
text and stores nothing; a hostile value held on a profile matches nothing it should not; a
hostile custom value in a message is text, escaped in HTML, never run as template code."""
from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from demo.mailbox import SmtpServer
from services.notifications.channels import EmailChannel, SmsChannel, SmtpSettings, TwilioSettings
from services.notifications.notifier import Notifier
from services.notifications.repository import NotificationsStorage
from services.notifications.sender import Sender, SenderSettings
from services.segmentation.repository import SegmentationStorage
from services.segmentation.rules import condition_holds, validate_filter
from services.segmentation.saved_segments import SavedSegments
from services.segmentation.store_setup import save_rule
from shared.errors import ValidationError
from shared.events import build_event, contract
from tests.security.test_api_answers import app  # noqa: F401 - the app fixture
from tests.security.test_scopes import RecordingBackends
from tests.support import Clock

T0 = datetime(2026, 11, 29, 12, tzinfo=timezone.utc)
MEGABYTE = "x" * 1_000_000


class StoreBackends(RecordingBackends):
    """The recorder, with a store whose one custom field is `tier`."""

    def call(self, service: str, method: str, *args, **kwargs):
        if (service, method) == ("customer_sync", "list_custom_fields"):
            self.calls.append((service, method))
            return [{"key": "tier", "label": "Tier", "type": "text", "required": False},
                    {"key": "trade_no", "label": "Trade no", "type": "text", "required": False,
                     "applies_to": "company"}]
        return super().call(service, method, *args, **kwargs)


def _send(app, method: str, path: str, body) -> tuple[int, dict, list]:
    backends = StoreBackends({"good": ("admin",)})
    environ = EnvironBuilder(path="/api/v1" + path, method=method,
                             data=json.dumps(body).encode(),
                             headers={"Authorization": "Bearer good",
                                      "Content-Type": "application/json"},
                             environ_base={"REMOTE_ADDR": "192.0.2.10"}).get_environ()
    response = app.handle(Request(environ), backends)
    asked = [call for call in backends.calls if call[1] != "authenticate_api_key"]
    return response.status_code, json.loads(response.get_data()), asked


@pytest.mark.parametrize("path", ["/segments", "/rules"])
@pytest.mark.parametrize("field", ["custom.$where", "custom.a.b", "custom.Tier", "custom.",
                                   "custom." + MEGABYTE[:100_000], "custom.__proto__",
                                   "custom_fields.tier"])
def test_the_gateway_refuses_a_field_that_is_no_custom_key_before_any_service(app, path,
                                                                               field):
    body = {"name": "n", "conditions": [{"field": field, "op": "eq", "value": "x"}],
            **({"actions": [{"type": "add_tag", "value": "t"}]} if path == "/rules" else {})}
    status, problem, asked = _send(app, "POST", path, body)
    assert status == 400 and "conditions/0/field" in problem["errors"], problem
    assert asked == []
    assert len(json.dumps(problem)) < 5_000  # the megabyte key is not echoed back


@pytest.mark.parametrize("method, path", [("POST", "/segments"), ("POST", "/rules"),
                                          ("PUT", "/segments/seg1")])
def test_the_api_refuses_a_custom_field_the_store_never_defined_before_segmentation(
        app, method, path):
    body = {"name": "n", "conditions": [
        {"field": "custom.tier", "op": "eq", "value": "Gold"},
        {"field": "custom.teir", "op": "eq", "value": "Gold"},
        {"field": "custom.trade_no", "op": "eq", "value": "T-1"}],  # a company's field
        **({"actions": [{"type": "add_tag", "value": "t"}]} if path == "/rules" else {})}
    status, problem, asked = _send(app, method, path, body)
    assert status == 400 and problem["errors"] == {
        "conditions.1.field": ["no such custom field in this store"],
        "conditions.2.field": ["no such custom field in this store"]}, problem
    assert asked == [("customer_sync", "list_custom_fields")]  # segmentation never asked
    body["conditions"] = body["conditions"][:1]
    _, _, asked = _send(app, method, path, body)
    assert asked[0] == ("customer_sync", "list_custom_fields") and asked[1][0] == "segmentation"


HOSTILE = [
    ({"field": "custom.tier\n", "op": "eq", "value": "x"}, "conditions.0.field"),
    ({"field": "custom.tier", "op": "eq", "value": {"$ne": None}}, "conditions.0.value"),
    ({"field": "custom.tier", "op": "eq", "value": {"$where": "sleep(1000)"}},
     "conditions.0.value"),
    ({"field": "custom.tier", "op": "in", "value": [{"$gt": ""}]}, "conditions.0.value.0"),
    ({"field": "custom.tier", "op": "in", "value": [[["deep"]]]}, "conditions.0.value.0"),
    ({"field": "custom.tier", "op": "eq", "value": MEGABYTE}, "conditions.0.value"),
    ({"field": "custom.tier", "op": "contains", "value": "x" * 2001}, "conditions.0.value"),
    ({"field": "custom.tier", "op": "in", "value": ["v"] * 101}, "conditions.0.value"),
    ({"field": "custom.tier", "op": "in", "value": [str(i) for i in range(100_000)]},
     "conditions.0.value"),
    ({"field": "custom.visits", "op": "gt", "value": float("inf")}, "conditions.0.value"),
    ({"field": "custom.visits", "op": "gt", "value": 10 ** 400}, "conditions.0.value"),
    ({"field": "custom.day", "op": "before", "value": "9999-99-99"}, "conditions.0.value"),
    ({"field": "custom.day", "op": "is_set", "value": {"$exists": True}}, "conditions.0.value"),
    ({"field": "custom.day", "op": "$regex", "value": ".*"}, "conditions.0.op"),
]


@pytest.mark.parametrize("condition, path", HOSTILE)
def test_segmentation_refuses_a_hostile_condition_naming_it_and_stores_nothing(
        database, condition, path):
    storage = SegmentationStorage(database)
    storage.ensure_indexes()
    segments = SavedSegments(storage.saved_segments)
    with pytest.raises(ValidationError) as segment_refusal:
        segments.create("s1", {"segment_id": "hostile", "name": "n",
                               "conditions": [condition]})
    with pytest.raises(ValidationError) as rule_refusal:
        save_rule(storage, "s1", {"name": "n", "conditions": [condition],
                                  "actions": [{"type": "add_tag", "value": "t"}]})
    for refusal in (segment_refusal.value, rule_refusal.value):
        assert path in refusal.details["fields"], refusal.details
        assert len(str(refusal)) + len(json.dumps(refusal.details, default=str)) < 5_000
    assert segments.list("s1") == [] and storage.rules_of("s1") == []


@pytest.mark.parametrize("held", [{"$ne": None}, ["Gold"], MEGABYTE, float("nan"), None,
                                  {"tier": "Gold"}])
def test_a_hostile_value_held_on_a_profile_matches_no_condition_but_is_set(held):
    conditions = validate_filter({"name": "n", "conditions": [
        {"field": "custom.tier", "op": "eq", "value": "Gold"},
        {"field": "custom.tier", "op": "ne", "value": "Silver"},
        {"field": "custom.tier", "op": "gte", "value": 0},
        {"field": "custom.tier", "op": "contains", "value": "G"},
        {"field": "custom.tier", "op": "not_in", "value": ["Silver"]},
        {"field": "custom.tier", "op": "after", "value": "2000-01-01"}]})["conditions"]
    profile = {"custom_fields": {"tier": held}}
    wrong = [c for c in conditions if condition_holds(c, profile)]
    if isinstance(held, str):  # text is text: the long one is simply not "Gold"
        assert [c["op"] for c in wrong] == ["ne", "not_in"]
    else:
        assert wrong == []
    assert not condition_holds({"field": "custom.tier", "op": "is_set", "value": None},
                               {"custom_fields": "not a mapping"})


INJECTED = ("{{ 7*7 }}{% for i in range(10**9) %}x{% endfor %}"
            "<script>alert(1)</script><a href=\"javascript:x\">")


def test_a_custom_value_is_text_in_a_message_never_template_code(database):
    """A value set through the API is hostile text: the email carries it escaped in HTML and
    as written in plain text; none of it runs as template code."""
    storage = NotificationsStorage(database)
    storage.ensure_indexes()
    clock = Clock(T0)
    notifier = Notifier(storage, clock)
    data = {**contract("customer.updated").sample, "customer_id": "c1",
            "email": "c1@example.com", "custom_fields": {"tier": INJECTED}}
    notifier.apply(build_event("customer.updated", store_id="s1", data=data, occurred_at=T0))
    notifier.save_template("s1", {
        "slug": "tiered", "channel": "email", "subject": "Tier {{ customer.custom_fields.tier }}",
        "html": "<p>{{ customer.custom_fields.tier }}</p>",
        "text": "{{ customer.custom_fields.tier }}"})
    workflow = notifier.save_workflow("s1", {
        "workflow_id": "w", "name": "Tiered", "trigger": {"event": "order.placed"},
        "channel": "email", "template": "tiered", "purpose": "transactional"})
    storage.sends.schedule(notifier._send("s1", "c1", "wf:w:c1:e1", T0, workflow=workflow,
                                          trigger="e1"))
    with SmtpServer() as smtp:
        email = EmailChannel(SmtpSettings(smtp.host, smtp.port, "none", "", "", 5,
                                          "s@example.com"))
        sender = Sender(storage, email, SmsChannel(TwilioSettings("", "", "", "", 5)),
                        SenderSettings(), clock)
        assert sender.run_once() == {"sent": 1}
        [message] = smtp.messages
    html = message.get_body(("html",)).get_content()
    text = message.get_body(("plain",)).get_content()
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;a href=&#34;javascript:x&#34;&gt;" in html
    assert INJECTED in text and "49" not in text  # as written: not run
    assert message["Subject"].startswith("Tier {{ 7*7 }}")


@pytest.mark.parametrize("condition", [
    {"field": "orders_count", "op": "gt", "value": 10 ** 400},   # no float holds it
    {"field": "total_spent", "op": "gt", "value": 10 ** 30},     # no 8-byte integer holds it
    {"field": "days_since_last_order", "op": "in", "value": [1, -10 ** 20]},
])
def test_a_built_in_condition_on_a_number_no_stat_can_reach_is_refused(database, condition):
    storage = SegmentationStorage(database)
    with pytest.raises(ValidationError) as refusal:
        SavedSegments(storage.saved_segments).create("s1", {"name": "n",
                                                            "conditions": [condition]})
    assert any(path.startswith("conditions.0.value") for path in refusal.value.details["fields"])
    assert SavedSegments(storage.saved_segments).list("s1") == []
