"""notifications' pure rules: templates checked at save, workflows validated and matched,
manners (consent, caps, quiet hours) decided."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from services.notifications import templates as tpl
from services.notifications import workflows as wf
from services.notifications.notifier import _is_birthday
from services.notifications.policy import StoreSettings, decide, load_settings, quiet_until
from shared.errors import ValidationError

T0 = datetime(2026, 11, 29, 22, 30, tzinfo=timezone.utc)


def test_shipped_templates_are_valid_and_render_the_sample():
    assert set(tpl.DEFAULT_TEMPLATES) >= {"welcome", "abandoned_cart", "birthday", "win_back",
                                          "tier_upgrade"}
    for template in tpl.DEFAULT_TEMPLATES.values():
        tpl.validate_template(template)
        rendered = tpl.render(template, tpl.SAMPLE_CONTEXT)
        assert "Ada" in (rendered.text or "") or "Tea" in (rendered.text or "")


def test_a_syntax_error_or_unknown_variable_is_refused_with_part_and_line():
    with pytest.raises(ValidationError) as info:
        tpl.validate_template({"slug": "x", "channel": "email", "subject": "Hi",
                               "html": "<p>ok</p>\n<p>{% if %}</p>",
                               "text": "Hi {{ customer.first_name }}\n{{ customer.frist_name }}"})
    fields = info.value.details["fields"]
    assert fields["html"][0].startswith("line 2:")
    assert fields["text"] == ["line 2: unknown variable 'customer.frist_name'"]
    with pytest.raises(ValidationError, match="unknown variable 'secret'"):
        tpl.validate_template({"slug": "y", "channel": "sms", "body": "{{ secret }}"})
    # variables a template sets itself are fine
    tpl.validate_template({"slug": "z", "channel": "sms",
                           "body": "{% for t in customer.tags %}{{ t }}{% endfor %}"})


def test_html_is_escaped_and_the_sandbox_holds():
    evil = {**tpl.SAMPLE_CONTEXT, "customer": {**tpl.SAMPLE_CONTEXT["customer"],
                                               "first_name": "<script>x</script>"}}
    out = tpl.render({"channel": "email", "subject": "{{ customer.first_name }}",
                      "html": "<b>{{ customer.first_name }}</b>", "text": "{{ customer.first_name }}"}, evil)
    assert out.html == "<b>&lt;script&gt;x&lt;/script&gt;</b>"
    assert out.text == "<script>x</script>"  # the plain part is plain
    with pytest.raises(ValidationError):
        tpl.validate_template({"slug": "s", "channel": "sms",
                               "body": "{{ customer.__class__.__mro__ }}"})


CHANNELS = {"abandoned_cart": "email", "win_back_sms": "sms"}


def test_workflows_are_validated_naming_the_field():
    with pytest.raises(ValidationError) as info:
        wf.validate_workflow({"name": "x", "trigger": {"event": "customer.tagged"},
                              "channel": "sms", "template": "abandoned_cart",
                              "purpose": "spam", "delay_seconds": -1,
                              "cancel": [{"if": "moon"}]}, CHANNELS)
    fields = info.value.details["fields"]
    assert set(fields) == {"trigger.tag", "template", "purpose", "delay_seconds", "cancel.0.if"}
    ok = wf.validate_workflow({"name": "Lapsed", "trigger": {"date": "days_since_last_order",
                                                             "days": 90},
                               "channel": "sms", "template": "win_back_sms",
                               "purpose": "marketing"}, CHANNELS)
    assert ok["delay_seconds"] == 0 and ok["enabled"] is True


def test_triggers_match_their_conditions():
    tag = {"trigger": {"event": "customer.tagged", "tag": "abandoned-cart"}}
    assert wf.triggered_by(tag, "customer.tagged", {"tag": "abandoned-cart"})
    assert not wf.triggered_by(tag, "customer.tagged", {"tag": "gift"})
    assert not wf.triggered_by({**tag, "enabled": False}, "customer.tagged", {"tag": "abandoned-cart"})
    risk = {"trigger": {"event": "customer.segment_changed", "to": "at_risk"}}
    assert wf.triggered_by(risk, "customer.segment_changed", {"new_segment": "at_risk"})
    up = {"trigger": {"event": "loyalty.tier_changed", "direction": "up", "to": "gold"}}
    assert wf.triggered_by(up, "loyalty.tier_changed", {"direction": "up", "new_tier": "gold"})
    assert not wf.triggered_by(up, "loyalty.tier_changed", {"direction": "down", "new_tier": "gold"})
    first = {"trigger": {"event": "order.placed", "first_order": True}}
    assert wf.triggered_by(first, "order.placed", {}, first_order=True)
    assert not wf.triggered_by(first, "order.placed", {}, first_order=False)


def test_cancel_conditions_are_checked_against_the_projection():
    cancel = [{"if": "tag_removed", "tag": "abandoned-cart"}, {"if": "order_placed"}]
    scheduled = datetime(2026, 11, 29, 10, tzinfo=timezone.utc)
    assert wf.cancelled_by(cancel, {"tags": {"abandoned-cart": True}}, scheduled) is None
    assert wf.cancelled_by(cancel, {"tags": {}}, scheduled) == "tag abandoned-cart was removed"
    later = {"tags": {"abandoned-cart": True},
             "last_order": {"seen_at": datetime(2026, 11, 29, 11, tzinfo=timezone.utc)}}
    assert wf.cancelled_by(cancel, later, scheduled) == "an order came in"


def contact(**consent):
    return {"status": "active", "email": "a@example.com", "phone": "+447700900123",
            "consent": {k: {"granted": v} for k, v in consent.items()}}


def test_manners_consent_cap_and_quiet_hours():
    store = StoreSettings(timezone="Europe/Berlin", quiet_start="21:00", quiet_end="08:00",
                          weekly_marketing_cap=2)
    day = datetime(2026, 11, 29, 12, tzinfo=timezone.utc)
    assert decide("email", "marketing", contact(), store, day, 0).reason == "no email_marketing consent"
    assert decide("email", "transactional", contact(), store, day, 9).action == "send"
    assert decide("email", "marketing", contact(email_marketing=True), store, day, 1).action == "send"
    capped = decide("email", "marketing", contact(email_marketing=True), store, day, 2)
    assert capped.action == "refuse" and "cap of 2" in capped.reason
    night = decide("sms", "marketing", contact(sms_marketing=True), store, T0, 0)  # 23:30 Berlin
    assert night.action == "hold" and night.until == datetime(2026, 11, 30, 7, tzinfo=timezone.utc)
    assert decide("sms", "marketing", {**contact(sms_marketing=True), "phone": None}, store, day,
                  0).reason == "no phone number"
    assert decide("email", "transactional", {"status": "erased"}, store, day, 0).action == "refuse"


def test_quiet_hours_within_one_day_and_off():
    store = StoreSettings(timezone="UTC", quiet_start="12:00", quiet_end="14:00")
    assert quiet_until(store, datetime(2026, 1, 1, 13, tzinfo=timezone.utc)) == datetime(
        2026, 1, 1, 14, tzinfo=timezone.utc)
    assert quiet_until(store, datetime(2026, 1, 1, 14, tzinfo=timezone.utc)) is None
    assert quiet_until(StoreSettings(quiet_start="00:00", quiet_end="00:00"), T0) is None


def test_store_settings_are_validated():
    with pytest.raises(ValidationError) as info:
        load_settings({"timezone": "Mars/Olympus", "quiet_start": "25:00",
                       "weekly_marketing_cap": -1, "colour": "red"})
    assert set(info.value.details["fields"]) == {"timezone", "quiet_start",
                                                 "weekly_marketing_cap", "colour"}
    for age in (-1, True, "72", 24 * 366 * 10 + 1):
        with pytest.raises(ValidationError) as info:
            load_settings({"max_trigger_age_hours": age})
        assert set(info.value.details["fields"]) == {"max_trigger_age_hours"}
    assert load_settings({"max_trigger_age_hours": 0}).max_trigger_age_hours == 0
    assert load_settings({}).max_trigger_age_hours == 72


def test_birthdays_including_the_29th_of_february():
    from datetime import date
    assert _is_birthday("12-10", date(2026, 12, 10)) and _is_birthday("1990-12-10", date(2026, 12, 10))
    assert _is_birthday("02-29", date(2027, 2, 28)) and not _is_birthday("02-29", date(2028, 2, 28))
    assert not _is_birthday("nonsense", date(2026, 12, 10)) and not _is_birthday(None, date(2026, 1, 1))


def test_render_limits_come_from_the_documented_settings():
    from services import registry
    from services.notifications.bounded_sandbox import RenderLimits
    from shared.config import Config

    notifications = registry.settings(["notifications"])
    assert RenderLimits.from_config(Config({}, notifications)) == RenderLimits()  # defaults agree
    tight = RenderLimits.from_config(Config({"TEMPLATE_SMS_MAX_CHARS": "20",
                                             "TEMPLATE_EMAIL_MAX_CHARS": "30"}, notifications))
    sms = {"slug": "s", "channel": "sms", "body": "{{ 'x' * 21 }}"}
    with pytest.raises(ValidationError, match="TEMPLATE_SMS_MAX_CHARS \\(20 characters\\)"):
        tpl.validate_template(sms, tight)
    tpl.validate_template(sms)  # within the default
    email = {"slug": "e", "channel": "email", "subject": "Hi", "html": "<p>hi</p>",
             "text": "{% for t in range(31) %}x{% endfor %}"}
    with pytest.raises(ValidationError) as info:
        tpl.validate_template(email, tight)
    assert list(info.value.details["fields"]) == ["text"]
    assert "TEMPLATE_EMAIL_MAX_CHARS" in info.value.details["fields"]["text"][0]


def test_a_saved_segment_trigger_names_a_segment_id_and_matches_only_it():
    with pytest.raises(ValidationError) as info:
        wf.validate_workflow({"name": "x", "trigger": {"event": "customer.saved_segment_entered",
                                                       "segment_id": "a.b"},
                              "channel": "sms", "template": "win_back_sms",
                              "purpose": "marketing"}, CHANNELS)
    assert set(info.value.details["fields"]) == {"trigger.segment_id"}
    left = {"trigger": {"event": "customer.saved_segment_left", "segment_id": "gift"}}
    assert wf.triggered_by(left, "customer.saved_segment_left", {"segment_id": "gift"})
    assert not wf.triggered_by(left, "customer.saved_segment_left", {"segment_id": "big"})
    assert not wf.triggered_by(left, "customer.saved_segment_entered", {"segment_id": "gift"})
