"""`customer.custom_fields.<key>` in message templates: any key is accepted when a template is
saved (notifications does not know the store's fields), the projection keeps the values the
customer events carry, and a customer without a value gets an empty text, not a failed send."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from services.notifications import templates as tpl
from services.notifications.notifier import Notifier
from services.notifications.policy import StoreSettings
from services.notifications.repository import NotificationsStorage
from services.notifications.sender import context
from shared.errors import ValidationError
from shared.events import build_event, contract
from tests.support import storage_at

T0 = datetime(2026, 11, 29, 12, tzinfo=timezone.utc)

TEMPLATE = {"slug": "tiered", "channel": "email",
            "subject": "Your {{ customer.custom_fields.tier }} offer",
            "html": "<p>Tier: {{ customer.custom_fields.tier }}"
                    "{% if customer.custom_fields.vip %} (VIP){% endif %}</p>",
            "text": "Tier: {{ customer.custom_fields.tier }}, visits "
                    "{{ customer.custom_fields['visits'] }}"}


def test_any_custom_field_key_is_accepted_and_the_sample_renders_it_empty():
    saved = tpl.validate_template(TEMPLATE)
    rendered = tpl.render(saved, tpl.SAMPLE_CONTEXT)
    assert rendered.subject == "Your offer" and rendered.html == "<p>Tier: </p>"
    assert rendered.text == "Tier: , visits "


@pytest.mark.parametrize("body, problem", [
    ("{{ customer.custom_fields }}", "use one custom field at a time"),
    ("{{ customer.custom_fields|length }}", "use one custom field at a time"),
    ("{{ customer.custom_fields.Tier }}", "unknown variable 'customer.custom_fields.Tier'"),
    ("{{ customer.custom_fields.tier.upper }}",
     "unknown variable 'customer.custom_fields.tier.upper'"),
    ("{{ customer.custom_fields._values }}", "unknown variable"),
    ("{{ customer.custom_fields.__class__ }}", "unknown variable"),
])
def test_a_custom_field_is_read_one_key_at_a_time(body, problem):
    with pytest.raises(ValidationError) as info:
        tpl.validate_template({"slug": "x", "channel": "sms", "body": body})
    assert problem in " ".join(info.value.details["fields"]["body"])


def test_the_values_offer_only_their_keys():
    values = tpl.CustomValues({"tier": "Gold", "items": 3, "bad key": "x", "nested": {"a": 1},
                               "list": [1]})
    assert values.tier == "Gold" and values.items == 3  # a key, not a dict method
    assert values.nested == "" and values.list == "" and values.keys == ""
    assert values["tier"] == "Gold"
    with pytest.raises(AttributeError):
        getattr(values, "_values_")
    rendered = tpl.render({"channel": "sms", "body": "{{ customer.custom_fields.items }}"},
                          {**tpl.SAMPLE_CONTEXT,
                           "customer": {"custom_fields": tpl.CustomValues({"items": 3})}})
    assert rendered.text == "3"


def customer_updated(values: dict, at: datetime):
    data = {**contract("customer.updated").sample, "customer_id": "c1",
            "custom_fields": values, "changed_fields": ["custom_fields"]}
    return build_event("customer.updated", store_id="s1", data=data, occurred_at=at)


def test_the_projection_keeps_the_values_and_templates_read_them(database):
    storage, clock = storage_at(NotificationsStorage, database, T0)
    notifier = Notifier(storage, clock)
    notifier.apply(customer_updated({"tier": "Gold", "visits": 3, "vip": True}, T0))
    contact = storage.contacts.get("s1", "c1")
    rendered = tpl.render(TEMPLATE, context(contact, StoreSettings()))
    assert rendered.subject == "Your Gold offer"
    assert rendered.html == "<p>Tier: Gold (VIP)</p>"
    assert rendered.text == "Tier: Gold, visits 3"
    # values removed: the next event has none, and the message still renders
    notifier.apply(customer_updated({}, T0 + timedelta(minutes=1)))
    contact = storage.contacts.get("s1", "c1")
    rendered = tpl.render(TEMPLATE, context(contact, StoreSettings()))
    assert rendered.subject == "Your offer" and rendered.html == "<p>Tier: </p>"
    # an older event delivered late does not bring them back
    notifier.apply(customer_updated({"tier": "Gold"}, T0 - timedelta(minutes=1)))
    assert storage.contacts.get("s1", "c1")["custom_fields"] == {}
