"""Events published by loyalty: a customer's points and tier, whenever they change."""
from __future__ import annotations

from marshmallow import fields, validate

from shared.events.fields import BaseSchema

ENTRY_KINDS = ("earn", "reverse", "redeem", "expire", "adjust", "erase")


class PointsChangedData(BaseSchema):
    """One ledger entry applied: `delta` points (negative for debits), the balance after it
    (negative after a reversal that outran a redemption), and why."""

    customer_id = fields.String(required=True)
    entry_key = fields.String(required=True)  # the entry's natural idempotency key
    kind = fields.String(required=True, validate=validate.OneOf(ENTRY_KINDS))
    delta = fields.Integer(required=True, strict=True)
    balance = fields.Integer(required=True, strict=True)
    reason = fields.String(required=True)
    order_id = fields.String(load_default=None, allow_none=True)


class TierChangedData(BaseSchema):
    """`direction` is up or down; `old_tier` is null when a customer first gets a tier."""

    customer_id = fields.String(required=True)
    old_tier = fields.String(required=True, allow_none=True)
    new_tier = fields.String(required=True)
    direction = fields.String(required=True, validate=validate.OneOf(("up", "down")))
    points_in_window = fields.Integer(required=True, strict=True)
