"""Validation of what internal systems send over RPC (marshmallow), with errors naming fields."""
from __future__ import annotations

from typing import Any

from urllib.parse import urlsplit

from marshmallow import RAISE, Schema, ValidationError as MarshmallowError, fields, validate, validates

from shared.email_addresses import single_address
from shared.errors import ValidationError
from shared.events.fields import UtcDateTime

def one_address(value: str) -> None:
    """An email field takes exactly one plain address (marshmallow's Email also lets
    `"a,b"@example.com` through): what the shop itself would accept, and safe in a To."""
    if single_address(value) is None:
        raise MarshmallowError("must be one plain email address")


STORE_ID = validate.Regexp(r"^[a-z0-9][a-z0-9_-]{0,63}\Z",
                           error="must be 1-64 lower-case letters, digits, '-' or '_'")


class StoreSchema(Schema):
    class Meta:
        unknown = RAISE

    store_id = fields.String(required=True, validate=STORE_ID)
    shop_url = fields.Url(required=True, schemes={"http", "https"}, require_tld=False)
    webhook_secret = fields.String(required=True, validate=validate.Length(min=8, max=512))
    consumer_key = fields.String(required=True, validate=validate.Length(min=1, max=256))
    consumer_secret = fields.String(required=True, validate=validate.Length(min=1, max=256))
    reconcile_interval_minutes = fields.Integer(load_default=None, allow_none=True,
                                                validate=validate.Range(min=1, max=24 * 60))
    country = fields.String(load_default=None, allow_none=True,
                            validate=validate.Regexp(r"[A-Za-z]{2}\Z",
                                                     error="must be an ISO 3166 two-letter code"))

    @validates("shop_url")
    def _https_unless_local(self, value: str, **kwargs) -> None:
        """The REST keys travel with every request: only over HTTPS, except to this machine."""
        parts = urlsplit(value)
        if parts.scheme != "https" and parts.hostname not in ("localhost", "127.0.0.1", "::1"):
            raise MarshmallowError("must be an https:// URL (http only for localhost)")


class CustomerFiltersSchema(Schema):
    class Meta:
        unknown = RAISE

    email = fields.String(validate=validate.Length(min=1, max=320))
    name = fields.String(validate=validate.Length(min=1, max=200))
    registered = fields.Boolean()
    status = fields.String(validate=validate.OneOf(["active", "deleted", "merged"]))
    country = fields.String(validate=validate.Length(equal=2))
    created_after = UtcDateTime(format="iso")
    created_before = UtcDateTime(format="iso")


class PageSchema(Schema):
    class Meta:
        unknown = RAISE

    size = fields.Integer(load_default=50, validate=validate.Range(min=1, max=500))
    cursor = fields.String(load_default=None, allow_none=True)


def load(schema: Schema, data: Any, what: str) -> dict:
    """Load RPC input or raise the shared ValidationError with the failing fields."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValidationError(f"{what} must be an object", {"fields": {what: ["not an object"]}})
    try:
        return schema.load(data)
    except MarshmallowError as exc:
        raise ValidationError(f"invalid {what}: {exc.messages}", {"fields": exc.messages}) from None


def require_text(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(f"{name} must be a non-empty string", {"fields": {name: ["required"]}})
    return value.strip()
