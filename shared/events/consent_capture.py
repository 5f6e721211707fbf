"""Consent a customer gave where they shopped or signed up, as customer_sync first sees it.

customer_sync holds what the shop and imports send (order and customer meta data, import
rows); gdpr owns consent records. So customer_sync publishes what it captured, once per order
and purpose (or customer and purpose, or import row and purpose), and gdpr records it keyed the
same way: a redelivery or a second backfill records nothing twice, and a capture older than a
change gdpr already holds goes into the history without overriding it.
"""
from __future__ import annotations

from marshmallow import fields, validate

from shared.events.fields import BaseSchema, UtcTime

# The purposes a checkout box or an import column can grant (data processing is not asked
# for at checkout).
CAPTURED_PURPOSES = ("email_marketing", "sms_marketing")
CAPTURE_SOURCES = ("checkout", "import")
EVIDENCE_MAX_LENGTH = 500


class ConsentCapturedData(BaseSchema):
    """A customer said yes to `purpose` at `captured_at`; `evidence` says where it shows
    (the meta key and value of an order, or an import row's proof column)."""

    customer_id = fields.String(required=True)
    purpose = fields.String(required=True, validate=validate.OneOf(CAPTURED_PURPOSES))
    source = fields.String(required=True, validate=validate.OneOf(CAPTURE_SOURCES))
    order_id = fields.String(load_default=None, allow_none=True)
    captured_at = UtcTime(required=True)
    capture_key = fields.String(required=True, validate=validate.Length(min=1, max=200))
    evidence = fields.String(load_default="", validate=validate.Length(max=EVIDENCE_MAX_LENGTH))
