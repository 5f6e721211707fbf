"""Field types every event schema shares: money, addresses, UTC times."""
from __future__ import annotations

from datetime import timezone

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate

CURRENCY = validate.Regexp(r"^[A-Z]{3}\Z", error="must be an ISO-4217 code such as EUR")


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


class UtcDateTime(fields.AwareDateTime):
    """A timezone-aware ISO-8601 time, loaded as UTC; naive times are refused. A time whose UTC
    falls outside the years 1-9999 (`0001-01-01T00:00:00+14:00`) is refused as a field error
    here, rather than overflowing later where MongoDB or a comparison converts it."""

    def _deserialize(self, value, attr, data, **kwargs):
        moment = super()._deserialize(value, attr, data, **kwargs)
        try:
            return moment.astimezone(timezone.utc)
        except OverflowError:
            raise ValidationError("Time out of range in UTC (years 1 to 9999).") from None


def UtcTime(**kwargs) -> fields.AwareDateTime:  # noqa: N802
    """A timezone-aware ISO-8601 time, as UTC; naive times are refused."""
    return UtcDateTime(format="iso", **kwargs)


def FactAt() -> fields.Field:  # noqa: N802 - reads as a field type
    """Added in place (fields are only ever added; older publishers leave it out): the time of
    the fact that caused the change (an order's or a sign-up's time at the shop, a person's
    action, the moment the clock made it true), not of its publication. A backfill's derived
    events are dated in the past by it, so consumers reacting to news can tell."""
    return UtcDateTime(format="iso", load_default=None, allow_none=True)


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
