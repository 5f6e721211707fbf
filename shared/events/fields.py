"""Field types every event schema shares: money, addresses, UTC times."""
from __future__ import annotations

from marshmallow import EXCLUDE, Schema, fields, validate

CURRENCY = validate.Regexp(r"^[A-Z]{3}$", error="must be an ISO-4217 code such as EUR")


class BaseSchema(Schema):
    """Consumers drop fields they do not know: producers only ever add fields."""

    class Meta:
        unknown = EXCLUDE


class MoneySchema(BaseSchema):
    """Money is an integer in minor units plus its currency, never a float."""

    amount = fields.Integer(required=True, strict=True)
    currency = fields.String(required=True, validate=CURRENCY)


def Money(**kwargs) -> fields.Nested:  # noqa: N802 - reads as a field type
    return fields.Nested(MoneySchema, **kwargs)


def UtcTime(**kwargs) -> fields.AwareDateTime:  # noqa: N802
    """A timezone-aware ISO-8601 time; naive times are refused."""
    return fields.AwareDateTime(format="iso", **kwargs)


class AddressSchema(BaseSchema):
    first_name = fields.String(load_default="")
    last_name = fields.String(load_default="")
    company = fields.String(load_default="")
    address_1 = fields.String(load_default="")
    address_2 = fields.String(load_default="")
    city = fields.String(load_default="")
    state = fields.String(load_default="")
    postcode = fields.String(load_default="")
    country = fields.String(load_default="")
    email = fields.String(load_default="")
    phone = fields.String(load_default="")
