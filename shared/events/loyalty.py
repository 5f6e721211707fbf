"""Events published by loyalty: a customer's points and tier, whenever they change."""
from __future__ import annotations

from marshmallow import fields, validate

from shared.events.fields import BaseSchema, FactAt, Money, UtcDateTime

# merge_* and unmerge_*: points a merge of two customer records moved, or its undoing gave back.
ENTRY_KINDS = ("earn", "reverse", "redeem", "expire", "adjust", "erase", "return", "merge_out",
               "merge_in", "unmerge_out", "unmerge_in")
REWARD_KINDS = ("points", "credit")
RETURN_REASONS = ("refused", "cancelled", "expired")


class PointsChangedData(BaseSchema):
    """One ledger entry applied: `delta` points (negative for debits), the balance after it
    (negative after a reversal that outran a redemption), and why. `fact_at`: the order's time
    for an entry an order brought (a backfill earns points dated in the past), else now."""

    customer_id = fields.String(required=True)
    entry_key = fields.String(required=True)  # the entry's natural idempotency key
    kind = fields.String(required=True, validate=validate.OneOf(ENTRY_KINDS))
    delta = fields.Integer(required=True, strict=True)
    balance = fields.Integer(required=True, strict=True)
    reason = fields.String(required=True)
    order_id = fields.String(load_default=None, allow_none=True)
    fact_at = FactAt()


class TierChangedData(BaseSchema):
    """`direction` is up or down; `old_tier` is null when a customer first gets a tier.
    `fact_at`: the order's time for a change an order brought, the daily run's for one the
    tier window brought."""

    customer_id = fields.String(required=True)
    old_tier = fields.String(required=True, allow_none=True)
    new_tier = fields.String(required=True)
    direction = fields.String(required=True, validate=validate.OneOf(("up", "down")))
    points_in_window = fields.Integer(required=True, strict=True)
    fact_at = FactAt()


class RewardData(BaseSchema):
    """A reward the customer can spend at the shop: a single-use WooCommerce coupon bought with
    points (`kind` points, `points` what it cost) or store credit issued by staff (`kind`
    credit, `points` null). `code` is the coupon code to enter at checkout."""

    customer_id = fields.String(required=True)
    reward_id = fields.String(required=True)
    kind = fields.String(required=True, validate=validate.OneOf(REWARD_KINDS))
    code = fields.String(required=True)
    amount = Money(required=True)
    points = fields.Integer(load_default=None, allow_none=True, strict=True)
    expires_at = UtcDateTime(load_default=None, allow_none=True)


class RewardUsedData(RewardData):
    """The reward's code was used by an order (`order_id`); a cancelled or failed order gives
    the use back and the reward is issued again (`loyalty.reward_issued` is not repeated)."""

    order_id = fields.String(required=True)


class RewardReturnedData(RewardData):
    """The reward will not be spent: the shop refused its coupon for good, or an operator
    cancelled it, or it expired unused; `points_returned` went back to the balance (0 for
    credit, or when the programme keeps expired rewards' points)."""

    reason = fields.String(required=True, validate=validate.OneOf(RETURN_REASONS))
    points_returned = fields.Integer(required=True, strict=True)


class PointsExpiringData(BaseSchema):
    """Points of one lot expire soon: sent once per lot, `days_before` (the programme's
    warning) ahead of `expires_at`, while the lot still holds them."""

    customer_id = fields.String(required=True)
    lot_id = fields.String(required=True)
    points = fields.Integer(required=True, strict=True)
    expires_at = UtcDateTime(required=True)
    balance = fields.Integer(required=True, strict=True)
