"""A pattern ending in `$` also matches before a trailing newline: "shop\\n" passed as a store id,
"EUR\\n" as a currency, "DE\\n" as a country, and was stored as given. Every pattern that checks
input ends in `\\Z`; these are refused, naming the field."""
from __future__ import annotations

import pytest
from marshmallow import ValidationError as SchemaError

from services.customer_sync.schemas import StoreSchema
from services.loyalty.programme import load_programme
from services.segmentation.schemas import GroupSchema
from shared.errors import ValidationError
from shared.events.fields import MoneySchema

STORE = {"store_id": "shop", "shop_url": "https://shop.example/", "webhook_secret": "whsec-123456",
         "consumer_key": "ck", "consumer_secret": "cs"}


@pytest.mark.parametrize("field, value", [("store_id", "shop\n"), ("country", "DE\n")])
def test_a_store_refuses_a_trailing_newline(field, value):
    with pytest.raises(SchemaError) as refused:
        StoreSchema().load({**STORE, field: value})
    assert list(refused.value.messages) == [field]
    assert StoreSchema().load({**STORE, field: value.strip()})[field] == value.strip()


def test_a_group_slug_and_a_currency_refuse_a_trailing_newline():
    with pytest.raises(SchemaError) as refused:
        GroupSchema().load({"slug": "vip\n", "name": "VIP"})
    assert list(refused.value.messages) == ["slug"]
    with pytest.raises(SchemaError) as refused:
        MoneySchema().load({"amount": 100, "currency": "EUR\n"})
    assert list(refused.value.messages) == ["currency"]


def test_a_loyalty_programme_refuses_a_currency_with_a_trailing_newline():
    with pytest.raises(ValidationError) as refused:
        load_programme({"currency": "EUR\n"})
    assert "currency" in refused.value.details["fields"]
