"""Events about messages to customers and their consent.

`consent.changed` has two publishers: gdpr (consent records, objections, operators) and
notifications (an SMS STOP or START from the customer's phone). Like the erasure conversation it
travels on the gdpr service's exchange, whoever publishes it, with `origin` naming the
publisher, so every consumer binds one queue and the contract has one home.
"""
from __future__ import annotations

from marshmallow import fields, validate

from shared.events.fields import BaseSchema, UtcDateTime

CHANNELS = ("email", "sms")
PURPOSES = ("marketing", "transactional")
CONSENT_PURPOSES = ("email_marketing", "sms_marketing", "data_processing")
CONSENT_SOURCES = ("checkout", "operator", "sms_stop", "sms_start", "request", "import",
                   "unsubscribe_link", "preference_page", "email_confirmation")
# The most a store may set as notifications' max_trigger_age_hours (ten years): the settings
# validation and the gateway's schema share it.
MAX_TRIGGER_AGE_HOURS = 24 * 366 * 10


class _MessageData(BaseSchema):
    """What both outcomes of a message say about it."""

    send_id = fields.String(required=True)
    customer_id = fields.String(required=True)
    channel = fields.String(required=True, validate=validate.OneOf(CHANNELS))
    purpose = fields.String(required=True, validate=validate.OneOf(PURPOSES))
    template = fields.String(required=True)
    workflow_id = fields.String(load_default=None, allow_none=True)
    bulk_id = fields.String(load_default=None, allow_none=True)
    attempts = fields.Integer(required=True, strict=True)


class NotificationSentData(_MessageData):
    """A message left for the customer: the provider accepted it (SMTP 250, Twilio 201)."""

    provider_id = fields.String(load_default=None, allow_none=True)


class NotificationFailedData(_MessageData):
    """A message that will not go out: a permanent refusal, attempts exhausted, or a
    rule (consent, quiet hours held too long, the weekly cap, a cancel condition)."""

    reason = fields.String(required=True)
    permanent = fields.Boolean(required=True)


class ConsentChangedData(BaseSchema):
    """A customer's consent for one purpose, as of `changed_at`. Consumers keep the newest.
    `pending`: given, but not in force until the customer confirms it (email double opt-in);
    `granted` is false meanwhile, so a consumer that knows nothing of it sends nothing."""

    customer_id = fields.String(required=True)
    purpose = fields.String(required=True, validate=validate.OneOf(CONSENT_PURPOSES))
    granted = fields.Boolean(required=True)
    source = fields.String(required=True, validate=validate.OneOf(CONSENT_SOURCES))
    changed_at = UtcDateTime(required=True, format="iso")
    origin = fields.String(required=True, validate=validate.OneOf(("gdpr", "notifications")))
    note = fields.String(load_default="")
    pending = fields.Boolean(load_default=False)
    # Added in place: the order whose checkout gave the consent (source checkout).
    order_id = fields.String(load_default=None, allow_none=True)
