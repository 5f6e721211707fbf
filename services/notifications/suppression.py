"""Addresses a store must not send to, and why: kept per store, channel and address, checked
before every send decision, lifted only by an operator who says why, with every change kept.

What suppresses, and what it blocks:

- `smtp_refusal`: the mail server refused the recipient for good (a 5xx to RCPT TO) when we
  sent. Every email is pointless, transactional ones too.
- `bounce`: a hard bounce reported later (the signed report door). Likewise every email.
- `complaint`: the recipient reported a message as spam. Marketing email stops; transactional
  email (an order confirmation) still goes, as the person is still a customer.
- `sms_unsubscribed`: Twilio answered 21610 (the number replied STOP to our sending number,
  where Twilio keeps the opt-out itself). Twilio refuses every SMS to it, so every SMS stops.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable

from services.notifications.repository import SuppressionRepository, normalised
from shared.errors import NotFound, ValidationError
from shared.paging import decode_cursor, encode_cursor
from shared.times import iso

KIND_CHANNEL = {"smtp_refusal": "email", "bounce": "email", "complaint": "email",
                "sms_unsubscribed": "sms"}
BLOCKS_TRANSACTIONAL = frozenset({"smtp_refusal", "bounce", "sms_unsubscribed"})
KIND_TEXT = {"smtp_refusal": "the mail server refused the address",
             "bounce": "the address bounced", "complaint": "the recipient complained of spam",
             "sms_unsubscribed": "the number unsubscribed from our SMS at Twilio (21610)"}
REASON_MAX_CHARS = 500
TWILIO_UNSUBSCRIBED = 21610
# RFC 5321 4.5.3.1.10: a 552 to RCPT TO (too many recipients, storage) is to be treated as
# temporary; every other 5xx there says the address itself is refused.
_NOT_ABOUT_THE_ADDRESS = {552}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_ENHANCED = re.compile(r"\b5\d\d[ -]5\.(\d{1,3})\.(\d{1,3})\b")  # "550 5.1.1", after the code


def blocks(record: dict | None, purpose: str) -> bool:
    """Whether an active suppression stops a message of this purpose."""
    if not record or not record.get("active"):
        return False
    kinds = set(record.get("kinds") or [])
    return purpose == "marketing" or bool(kinds & BLOCKS_TRANSACTIONAL)


def describe(record: dict) -> str:
    """Why an address is suppressed, in words for the send log."""
    return "; ".join(KIND_TEXT.get(k, k) for k in sorted(record.get("kinds") or []))


def kind_for_failure(channel: str, code: int | None, recipient_refused: bool,
                     reply: str = "") -> str | None:
    """The suppression a permanent provider failure calls for, or None when the failure says
    nothing about the address (a message refused for its content, a bad From, a relay that
    refuses us: suppressing then would silence every address the relay refuses).

    A refusal of the recipient with an enhanced status code (RFC 3463, in `reply`) suppresses
    only when the code is about the address or mailbox (5.1.x but the sender's 5.1.7 and
    5.1.8, 5.2.0, 5.2.1); without one, only 550, 551 and 553 do."""
    if code is None:
        return None
    if channel == "email":
        if not recipient_refused or not 500 <= code < 600 or code in _NOT_ABOUT_THE_ADDRESS:
            return None
        enhanced = _ENHANCED.search(reply or "")
        if enhanced:
            subject, detail = int(enhanced.group(1)), int(enhanced.group(2))
            about_address = (subject == 1 and detail not in (7, 8)) or (
                subject == 2 and detail in (0, 1))
            return "smtp_refusal" if about_address else None
        return "smtp_refusal" if code in (550, 551, 553) else None
    if channel == "sms" and code == TWILIO_UNSUBSCRIBED:
        return "sms_unsubscribed"
    return None


@dataclass(frozen=True)
class Change:
    """One suppression or lift, as the history keeps it."""

    action: str  # "suppressed", "lifted", or "reported" (a report older than the last lift)
    at: datetime
    kind: str | None = None
    source: str = ""  # "send", "report", "twilio_status", "operator"
    detail: str = ""
    key: str | None = None  # what makes a repeated report the same one
    actor: str | None = None

    def to_doc(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v not in (None, "")}


class Suppressions:
    """The use cases: suppress, lift, check, list, and forget an erased person's address."""

    def __init__(self, repository: SuppressionRepository) -> None:
        self.repository = repository

    def blocking(self, store_id: str, channel: str, address: str | None,
                 purpose: str) -> dict | None:
        """The suppression that stops this message, or None."""
        if not address:
            return None
        record = self.repository.get(store_id, channel, address)
        return record if blocks(record, purpose) else None

    def suppress(self, store_id: str, kind: str, address: str, change: Change) -> bool:
        """Suppress `address` for the kind's channel. A change with a `key` already applied
        changes nothing (reports are repeated); one older than the last lift is kept in the
        history without suppressing again (the operator lifted it knowing of it). True when
        the address is now suppressed by this change."""
        channel = KIND_CHANNEL[kind]
        _id = self.repository.key(store_id, channel, address)
        held = self.repository.state(_id)
        lifted_at = (held or {}).get("lifted_at")
        if lifted_at is not None and change.at <= lifted_at:
            entry = Change("reported", change.at, kind, change.source, change.detail, change.key)
            self.repository.add_history(_id, change.key, entry.to_doc())
            return False
        since = {} if held is not None and held.get("active") else {"suppressed_at": change.at}
        return self.repository.suppress(
            _id, change.key, {"updated_at": change.at, "address_erased": False,
                              "address": normalised(channel, address), **since},
            kind, {"store_id": store_id, "channel": channel}, change.to_doc())

    def lift(self, store_id: str, channel: Any, address: Any, reason: Any, actor: str,
             now: datetime) -> dict:
        """An operator lifts an active suppression, saying why; the history keeps it."""
        errors: dict[str, list[str]] = {}
        if channel not in ("email", "sms"):
            errors["channel"] = ["must be email or sms"]
        if not isinstance(address, str) or not address.strip() or len(address) > 254:
            errors["address"] = ["must be the suppressed address or number"]
        if not isinstance(reason, str) or not reason.strip():
            errors["reason"] = ["required: say why the address may be sent to again"]
        elif len(reason) > REASON_MAX_CHARS or _CONTROL.search(reason):
            errors["reason"] = [f"at most {REASON_MAX_CHARS} characters, no line breaks"]
        if errors:
            raise ValidationError("the suppression was not lifted: " + "; ".join(
                f"{k}: {v[0]}" for k, v in sorted(errors.items())), {"fields": errors})
        _id = self.repository.key(store_id, channel, address)
        change = Change("lifted", now, source="operator", detail=reason.strip(), actor=actor)
        lifted = self.repository.lift(_id, now, change.to_doc())
        if lifted is None:
            raise NotFound(f"no active {channel} suppression of that address in store "
                           f"{store_id}", {"fields": {"address": ["not suppressed"]}})
        return view(lifted)

    def page(self, store_id: str, channel: str | None, address: str | None,
             include_lifted: bool, size: int, cursor: str | None) -> dict:
        """The store's suppressions by key, `size` at a time; the cursor names the last one."""
        keys = None
        if address:
            keys = [self.repository.key(store_id, c, address)
                    for c in ((channel,) if channel else ("email", "sms"))]
        after = _decode_cursor(cursor) if cursor else None
        docs = self.repository.page(store_id, keys, channel, include_lifted, after, size + 1)
        more = len(docs) > size
        docs = docs[:size]
        return {"items": [view(d) for d in docs],
                "next_cursor": encode_cursor(docs[-1]["_id"]) if more else None}

    def of_addresses(self, store_id: str, addresses: Iterable[tuple[str, str | None]]
                     ) -> list[dict]:
        """The suppressions of these (channel, address) pairs, lifted ones too (an export)."""
        keys = [self.repository.key(store_id, channel, address)
                for channel, address in addresses if address]
        return [view(d) for d in self.repository.of_keys(keys)]

    def forget_addresses(self, store_id: str, addresses: Iterable[tuple[str, str]]) -> int:
        """GDPR erasure: the address in clear and every detail that could quote it (a provider's
        reply, an operator's reason) go; the record stays, under the address's digest, so the
        person is still not sent to."""
        keys = [self.repository.key(store_id, channel, address)
                for channel, address in addresses if address]
        return self.repository.forget_addresses(keys)


def list_request(filters: dict | None, page: dict | None
                 ) -> tuple[str | None, str | None, bool, int, str | None]:
    """A list request's (channel, address, include_lifted, size, cursor), or ValidationError
    naming each bad part."""
    filters, page = dict(filters or {}), dict(page or {})
    errors = {f"filters.{k}": ["unknown"] for k in filters
              if k not in ("channel", "address", "include_lifted")}
    channel, address = filters.get("channel"), filters.get("address")
    if channel is not None and channel not in ("email", "sms"):
        errors["filters.channel"] = ["must be email or sms"]
    if address is not None and not (isinstance(address, str) and 0 < len(address) <= 254):
        errors["filters.address"] = ["must be an address of at most 254 characters"]
    include_lifted = filters.get("include_lifted", False)
    if not isinstance(include_lifted, bool):
        errors["filters.include_lifted"] = ["must be true or false"]
    size = page.get("size", 100)
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= 500:
        errors["page.size"] = ["must be 1-500"]
    cursor = page.get("cursor")
    if cursor is not None and not (isinstance(cursor, str) and len(cursor) <= 2000):
        errors["page.cursor"] = ["must be a cursor this list issued"]
    if errors:
        raise ValidationError(f"invalid {', '.join(sorted(errors))}", {"fields": errors})
    return channel, address, include_lifted, size, cursor


def view(doc: dict) -> dict:
    """A suppression as RPC answers it: JSON types, times as ISO-8601 UTC."""
    return {"channel": doc["channel"], "address": doc.get("address"),
            "address_erased": bool(doc.get("address_erased")), "active": bool(doc.get("active")),
            "kinds": sorted(doc.get("kinds") or []),
            "blocks": ("all" if set(doc.get("kinds") or []) & BLOCKS_TRANSACTIONAL
                       else "marketing" if doc.get("active") else "nothing"),
            "suppressed_at": iso(doc.get("suppressed_at")),
            "lifted_at": iso(doc.get("lifted_at")), "updated_at": iso(doc.get("updated_at")),
            "history": [{**entry, "at": iso(entry.get("at"))}
                        for entry in doc.get("history") or []]}


def _decode_cursor(cursor: str) -> str:
    try:
        last_id = decode_cursor(cursor)
        if not isinstance(last_id, str):
            raise ValueError
        return last_id
    except ValueError:
        raise ValidationError("cursor is not one this service issued",
                              {"fields": {"cursor": ["not a cursor of this list"]}}) from None
