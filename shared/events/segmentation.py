"""Events published by segmentation: who each customer is for the shop, when that changes."""
from __future__ import annotations

from marshmallow import fields, validate

from shared.events.fields import BaseSchema, FactAt, Money

SEGMENTS = ("prospect", "new", "regular", "vip", "one_time", "at_risk")
SOURCES = ("rule", "manual", "import")
_slug = validate.Regexp(r"^[a-z0-9][a-z0-9_-]{0,63}\Z", error="must be a lower-case slug")


class _Change(BaseSchema):
    customer_id = fields.String(required=True)
    source = fields.String(required=True, validate=validate.OneOf(SOURCES))
    rule_id = fields.String(load_default=None, allow_none=True)
    actor = fields.String(load_default=None, allow_none=True)
    fact_at = FactAt()


class TagChangeData(_Change):
    tag = fields.String(required=True, validate=_slug)


class GroupChangeData(_Change):
    group = fields.String(required=True, validate=_slug)


class SegmentChangedData(BaseSchema):
    customer_id = fields.String(required=True)
    old_segment = fields.String(required=True, allow_none=True, validate=validate.OneOf(SEGMENTS))
    new_segment = fields.String(required=True, validate=validate.OneOf(SEGMENTS))
    orders_count = fields.Integer(required=True)
    total_spent = Money(required=True, allow_none=True)
    fact_at = FactAt()


class SavedSegmentMembershipData(BaseSchema):
    customer_id = fields.String(required=True)
    segment_id = fields.String(required=True, validate=validate.Regexp(
        r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$", error="must be 1-64 letters, digits, '-' or '_'"))
    name = fields.String(required=True)
    fact_at = FactAt()
