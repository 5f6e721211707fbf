"""The erasure conversation: gdpr asks every data-owning service to forget a person, and each
answers when its slice is erased or anonymised.

Both events travel on the gdpr service's exchange (`gdpr.events`): the request fans out to every
data-owning service from there, and each service's answer goes back there, naming itself in
`service`, so gdpr consumes every confirmation from one queue and the contract has one home.
"""
from __future__ import annotations

from marshmallow import fields, validate

from shared.events.fields import BaseSchema

_non_empty = validate.Length(min=1)

# The data-subject requests gdpr keeps, and their states: part of its RPC contract, which the
# gateway's API validates and documents from these same values.
REQUEST_TYPES = ("access", "portability", "rectification", "erasure", "objection")
REQUEST_STATES = ("received", "verified", "in_progress", "completed", "rejected")


class ErasureRequestedData(BaseSchema):
    """Whom to forget. `customer_ids` are the system's ids for the person in this store (a
    registered customer and any guest records of the same email); `email` is there for the
    slices keyed by address rather than by id (contact projections, parked messages)."""

    request_id = fields.String(required=True, validate=_non_empty)
    customer_ids = fields.List(fields.String(validate=_non_empty), required=True,
                               validate=validate.Length(min=1))
    email = fields.String(load_default=None, allow_none=True)


class ErasureCompletedData(BaseSchema):
    """One service's confirmation: what it erased or anonymised, counted per kind of record.
    Counts are of what the request left erased, so a repeated answer carries the same counts."""

    request_id = fields.String(required=True, validate=_non_empty)
    service = fields.String(required=True, validate=_non_empty)
    customer_ids = fields.List(fields.String(), required=True)
    counts = fields.Dict(keys=fields.String(), values=fields.Integer(strict=True), required=True)
