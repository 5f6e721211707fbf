"""Companies' rules, pure: what a company record may hold (a name, a domain, a VAT id, an
address, custom values, a group), what its id looks like, and which customer's email domain
joins which company. No database and no clock, so the RPC, the matching and the tests judge
a record the same way (docs/companies.md states them)."""
from __future__ import annotations

import re
import secrets
from typing import Any

from marshmallow import (RAISE, Schema, ValidationError as MarshmallowError, fields, validate,
                         validates)

from services.customer_sync.schemas import load
from shared.errors import ValidationError

MAX_NAME = 200
MAX_COMPANIES = 10_000
MAX_NAMES_ASKED = 200
MAX_QUERY = 200
MAX_ADDRESS_LINE = 200
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 100
COMPANY_ID = re.compile(r"co_[0-9a-f]{24}\Z")
# A lower-case hostname with at least one dot: labels of letters, digits and inner hyphens.
_DOMAIN = re.compile(r"(?=.{4,253}\Z)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}\Z")
# Two letters of a country, then 2-13 letters or digits (EU VAT ids and their like).
_VAT = re.compile(r"[A-Z]{2}[A-Z0-9]{2,13}\Z")
_GROUP = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}\Z")
_COUNTRY = re.compile(r"[A-Z]{2}\Z")
# Mail services anyone can sign up to: a company on one of them would gather strangers.
FREE_MAIL_DOMAINS = frozenset({
    "gmail.com", "googlemail.com", "outlook.com", "hotmail.com", "live.com", "msn.com",
    "yahoo.com", "yahoo.de", "yahoo.co.uk", "ymail.com", "icloud.com", "me.com", "mac.com",
    "aol.com", "gmx.de", "gmx.net", "gmx.com", "web.de", "t-online.de", "proton.me",
    "protonmail.com", "mail.com", "yandex.com", "yandex.ru", "mail.ru", "zoho.com",
    "hotmail.de", "outlook.de", "freenet.de", "posteo.de",
})
ADDRESS_FIELDS = ("address_1", "address_2", "city", "state", "postcode", "country")
EMPTY_ADDRESS = {name: "" for name in ADDRESS_FIELDS}
# What a company's owner may set; the rest (ids, times, counts) are the record's own.
EDITABLE_FIELDS = ("name", "domain", "vat_id", "address", "custom_fields", "group")
MATCH_EMAIL_DOMAIN = "match_email_domain"


def new_company_id() -> str:
    return "co_" + secrets.token_hex(12)


def valid_company_id(value: Any, field: str = "company_id") -> str:
    """A company id as issued (`co_` and 24 lower-case hex digits), else ValidationError."""
    if not isinstance(value, str) or not COMPANY_ID.match(value):
        raise ValidationError(f"{field} must be a company id (co_ and 24 hex digits)",
                              {"fields": {field: ["not a company id"]}})
    return value


def _printable(value: str) -> None:
    if not value.isprintable():
        raise MarshmallowError("must be printable text")


def _not_blank(value: str) -> None:
    if not value.strip():
        raise MarshmallowError("must not be blank")


class _Strict(Schema):
    class Meta:
        unknown = RAISE


class AddressSchema(_Strict):
    address_1 = fields.String(validate=[validate.Length(max=MAX_ADDRESS_LINE), _printable])
    address_2 = fields.String(validate=[validate.Length(max=MAX_ADDRESS_LINE), _printable])
    city = fields.String(validate=[validate.Length(max=MAX_ADDRESS_LINE), _printable])
    state = fields.String(validate=[validate.Length(max=MAX_ADDRESS_LINE), _printable])
    postcode = fields.String(validate=[validate.Length(max=20), _printable])
    country = fields.String(validate=validate.Regexp(
        r"^([A-Za-z]{2})?\Z", error="must be an ISO 3166-1 alpha-2 code"))


class CompanyChangesSchema(_Strict):
    """Every field optional: a change names what it changes; null clears an optional one."""

    name = fields.String(validate=[validate.Length(min=1, max=MAX_NAME), _printable,
                                   _not_blank])
    domain = fields.String(allow_none=True, validate=validate.Length(max=253))
    vat_id = fields.String(allow_none=True, validate=validate.Length(max=40))
    address = fields.Nested(AddressSchema, allow_none=True)
    custom_fields = fields.Dict(allow_none=True)
    group = fields.String(allow_none=True, validate=validate.Regexp(
        _GROUP, error="must be a group's slug (lower-case letters, digits, '_' or '-')"))

    @validates("domain")
    def _domain(self, value: str | None, **kwargs) -> None:
        if value is not None:
            domain_refusal(value)

    @validates("vat_id")
    def _vat(self, value: str | None, **kwargs) -> None:
        if value is not None and not _VAT.match(normalised_vat_id(value)):
            raise MarshmallowError("must be a 2-letter country prefix and 2-13 letters or digits")


class CompanySchema(CompanyChangesSchema):
    name = fields.String(required=True, validate=[validate.Length(min=1, max=MAX_NAME),
                                                  _printable, _not_blank])


def domain_refusal(value: str) -> None:
    """MarshmallowError when `value` is no company domain: not a lower-case hostname, or a
    free-mail service's."""
    if not _DOMAIN.match(value):
        raise MarshmallowError("must be a lower-case hostname such as acme.example")
    if value in FREE_MAIL_DOMAINS:
        raise MarshmallowError("is a free-mail domain: matching on it would join strangers")


def normalised_vat_id(value: str) -> str:
    """A VAT id as stored: upper-case, without spaces, dots or dashes."""
    return re.sub(r"[\s.\-]", "", value).upper()


def _address(value: dict | None) -> dict:
    address = {**EMPTY_ADDRESS, **{k: v.strip() for k, v in (value or {}).items()}}
    address["country"] = address["country"].upper()
    return address


def _normalised(data: dict) -> dict:
    """Loaded fields as stored: names trimmed, VAT ids upper-case, addresses complete."""
    out = dict(data)
    if "name" in out:
        out["name"] = out["name"].strip()
    if out.get("vat_id") is not None:
        out["vat_id"] = normalised_vat_id(out["vat_id"])
    if "address" in out:
        out["address"] = _address(out["address"])
    if "custom_fields" in out and out["custom_fields"] is None:
        out["custom_fields"] = {}
    return out


def load_company(data: Any) -> dict:
    """A new company from outside, every field present (None or empty where not given);
    `custom_fields` still to be checked against the store's definitions."""
    loaded = _normalised(load(CompanySchema(), data, "company"))
    return {"name": loaded["name"], "domain": loaded.get("domain"),
            "vat_id": loaded.get("vat_id"), "address": loaded.get("address", dict(EMPTY_ADDRESS)),
            "custom_fields": loaded.get("custom_fields") or {}, "group": loaded.get("group")}


def load_changes(changes: Any) -> dict:
    """The fields a change names, as stored; ValidationError when it names none."""
    loaded = _normalised(load(CompanyChangesSchema(), changes, "changes"))
    if not loaded:
        raise ValidationError("changes must name something to change",
                              {"fields": {"changes": ["empty"]}})
    return loaded


def name_key(name: str) -> str:
    """What the listing sorts by: the name case-folded."""
    return name.casefold()


def email_domain(email: Any) -> str | None:
    """The domain part of an email, lower-case; None when there is none."""
    if not isinstance(email, str) or "@" not in email:
        return None
    domain = email.rsplit("@", 1)[1].strip().lower()
    return domain or None


def joins_by_domain(customer: dict) -> str | None:
    """The email domain a live customer without a company may join a company by (None: it
    joins none by matching)."""
    if customer.get("status") != "active" or customer.get("company_id"):
        return None
    domain = email_domain(customer.get("email"))
    return domain if domain and domain not in FREE_MAIL_DOMAINS else None


def load_matching(settings: Any) -> dict:
    """The store's company matching settings: {"match_email_domain": bool}."""
    if not isinstance(settings, dict):
        raise ValidationError("settings must be an object",
                              {"fields": {"settings": ["not an object"]}})
    unknown = sorted(str(k)[:64] for k in settings if k != MATCH_EMAIL_DOMAIN)
    if unknown:
        raise ValidationError(f"unknown settings: {', '.join(unknown)}",
                              {"fields": {name: ["unknown field"] for name in unknown[:20]}})
    value = settings.get(MATCH_EMAIL_DOMAIN)
    if not isinstance(value, bool):
        raise ValidationError(f"{MATCH_EMAIL_DOMAIN} must be true or false",
                              {"fields": {MATCH_EMAIL_DOMAIN: ["not a boolean"]}})
    return {MATCH_EMAIL_DOMAIN: value}


def load_list_filters(filters: Any) -> dict:
    """{"q": text} (case-insensitive, on name or domain), or nothing."""
    if filters is None:
        return {}
    if not isinstance(filters, dict):
        raise ValidationError("filters must be an object", {"fields": {"filters": ["not an object"]}})
    unknown = [str(k)[:64] for k in filters if k != "q"]
    if unknown:
        raise ValidationError("filters take only q",
                              {"fields": {"filters": {name: ["unknown field"]
                                                      for name in unknown[:20]}}})
    q = filters.get("q")
    if q is None:
        return {}
    if not isinstance(q, str) or len(q) > MAX_QUERY or not q.isprintable():
        raise ValidationError(f"filters.q must be printable text of at most {MAX_QUERY} "
                              "characters", {"fields": {"filters": {"q": ["invalid"]}}})
    q = q.strip()
    return {"q": q} if q else {}


def load_page(page: Any) -> tuple[int, Any]:
    """The page size (1-MAX_PAGE_SIZE) and the cursor text (or None)."""
    if page is None:
        page = {}
    if not isinstance(page, dict) or set(page) - {"size", "cursor"}:
        raise ValidationError("page takes size and cursor",
                              {"fields": {"page": ["size and cursor only"]}})
    size = page.get("size", DEFAULT_PAGE_SIZE)
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_PAGE_SIZE:
        raise ValidationError(f"page.size must be 1-{MAX_PAGE_SIZE}",
                              {"fields": {"page.size": ["range"]}})
    cursor = page.get("cursor")
    if cursor is not None and (not isinstance(cursor, str) or len(cursor) > 2000):
        raise ValidationError("page.cursor is not one this service issued",
                              {"fields": {"page.cursor": ["invalid"]}})
    return size, cursor
