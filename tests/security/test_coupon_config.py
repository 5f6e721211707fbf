"""Hostile coupon settings on a workflow. A key that may write workflows decides what every
message's coupon is worth at the shop: a 1000 % or zero discount, a negative minimum spend, a
coupon valid for ever, or keys WooCommerce would take as more (free shipping) are refused when
the workflow is saved, naming the field, and nothing is stored."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from services.notifications.notifier import Notifier
from services.notifications.repository import NotificationsStorage
from shared.errors import ValidationError
from tests.gateway_system import shop, system  # noqa: F401 - fixtures
from tests.support import Clock

T0 = datetime(2026, 11, 29, 12, tzinfo=timezone.utc)
COUPON = {"type": "percent", "amount": 10, "currency": "EUR", "validity_days": 30}
WORKFLOW = {"workflow_id": "gift", "name": "Welcome gift", "trigger": {"event": "customer.created"},
            "channel": "email", "template": "welcome", "purpose": "transactional"}
HOSTILE = {
    "zero amount": ({"amount": 0}, "coupon.amount"),
    "1000 %": ({"amount": 1000}, "coupon.amount"),
    "negative fixed": ({"type": "fixed", "amount": -500}, "coupon.amount"),
    "negative minimum": ({"minimum_spend": -1}, "coupon.minimum_spend"),
    "huge validity": ({"validity_days": 100_000}, "coupon.validity_days"),
    "no validity": ({"validity_days": 0}, "coupon.validity_days"),
    "unknown key": ({"free_shipping": True}, "coupon.free_shipping"),
    "usage limit": ({"usage_limit": 0}, "coupon.usage_limit"),
    "string amount": ({"amount": "10"}, "coupon.amount"),
    "boolean amount": ({"amount": True}, "coupon.amount"),
    "prefix with markup": ({"prefix": "<b>x</b>"}, "coupon.prefix"),
    "type": ({"type": "fixed_product"}, "coupon.type"),
}
# Refused by the API's schema before notifications is asked, or by notifications after it:
# either way with the field named.
GATEWAY_HOSTILE = ("zero amount", "1000 %", "negative minimum", "huge validity", "unknown key")


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_hostile_coupon_is_refused_naming_the_field_and_nothing_is_stored(database, name):
    change, field = HOSTILE[name]
    notifier = Notifier(NotificationsStorage(database), Clock(T0))
    with pytest.raises(ValidationError) as info:
        notifier.save_workflow("s1", {**WORKFLOW, "coupon": {**COUPON, **change}})
    assert field in info.value.details["fields"]
    assert database["workflows"].count_documents({}) == 0


def test_the_api_refuses_hostile_coupons_naming_the_field_and_stores_nothing(system):
    admin = system.client("write")
    for name in GATEWAY_HOSTILE:
        change, field = HOSTILE[name]
        answer = admin.post("/notifications/workflows",
                            json={**WORKFLOW, "coupon": {**COUPON, **change}})
        assert answer.status_code == 400, (name, answer.text)
        errors = answer.json()["errors"]
        # The schema names a field by its path ("coupon/amount"), and an unknown one in its
        # object's message; notifications by its dotted name.
        said = " ".join(f"{where}: {' '.join(texts)}" for where, texts in errors.items())
        assert (field in errors or field.replace(".", "/") in errors
                or ("coupon" in errors and repr(field.split(".")[-1]) in said)), (name, errors)
    assert admin.get("/notifications/workflows").json() == []
    # the same coupon, sane, is taken
    saved = admin.post("/notifications/workflows", json={**WORKFLOW, "coupon": COUPON})
    assert saved.status_code == 201, saved.text
    assert saved.json()["coupon"]["amount"] == 10
