"""What segmentation accepts from callers, checked before anything is read or written: tags,
groups and lists of customers, refused with the failing field named."""
from __future__ import annotations

import re

from marshmallow import RAISE, Schema, ValidationError as MarshmallowError, fields, validate

from shared.customers import valid_customer_ids
from shared.errors import ValidationError

_TAG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


def tag_slugs(values: object) -> list[str]:
    """One tag or a non-empty list of them, as lower-case slugs."""
    if isinstance(values, str):
        values = [values]
    if not isinstance(values, (list, tuple)) or not values:
        raise ValidationError("tags must be a non-empty list", {"fields": {"tags": ["required"]}})
    slugs = [str(v).strip().lower() for v in values]
    bad = [v for v in slugs if not _TAG.match(v)]
    if bad:
        raise ValidationError(f"tags must be lower-case slugs: {bad}", {"fields": {"tags": bad}})
    return slugs


def customer_id_list(values: object) -> list[str]:
    """A list of customer ids, each checked as one."""
    if not isinstance(values, list):
        raise ValidationError("customer_ids must be a non-empty list",
                              {"fields": {"customer_ids": ["required"]}})
    return valid_customer_ids([str(c) for c in values])


class GroupSchema(Schema):
    class Meta:
        unknown = RAISE

    slug = fields.String(required=True, validate=validate.Regexp(r"^[a-z0-9][a-z0-9_-]{0,63}\Z"))
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    description = fields.String(load_default="", validate=validate.Length(max=2000))
    discount_percent = fields.Decimal(load_default=None, allow_none=True, as_string=True,
                                      validate=validate.Range(min=0, max=100))
    free_shipping_threshold = fields.Integer(load_default=None, allow_none=True, strict=True,
                                             validate=validate.Range(min=0))
    payment_terms_days = fields.Integer(load_default=None, allow_none=True, strict=True,
                                        validate=validate.Range(min=0, max=365))


def load_group(data: object) -> dict:
    """A group as stored: its discount an exact decimal string (JSON-safe)."""
    if not isinstance(data, dict):
        raise ValidationError("group must be an object", {"fields": {"group": ["not an object"]}})
    try:
        group = GroupSchema().load(data)
    except MarshmallowError as exc:
        raise ValidationError(f"invalid group: {exc.messages}", {"fields": exc.messages}) from None
    if group["discount_percent"] is not None:
        group["discount_percent"] = str(group["discount_percent"])
    return group
