"""Manners: whether a message may go now, later, or not at all. Pure.

- Marketing goes only to a contact whose consent for that channel is on (email_marketing,
  sms_marketing), as the latest `consent.changed` says; transactional always goes.
- Marketing SMS is held during the store's quiet hours (its own time zone) until they end;
  transactional messages are not.
- A contact gets at most the store's weekly cap of marketing messages in any 7 days.
Every refusal carries its reason, for the send log.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta, timezone
from typing import Any, Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from shared.email_addresses import mailbox, single_address
from shared.errors import ValidationError
from shared.events.facts import fact_time
from shared.events.notifications import MAX_TRIGGER_AGE_HOURS

_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_TEXT_SETTINGS = ("name", "url", "timezone", "quiet_start", "quiet_end", "from_email",
                  "unsubscribe_mailto", "sms_opt_out_text")
# Settings that no longer do anything: dropped from what was stored before, refused when saved.
# `unsubscribe_url` put one static page in every email, which changed no consent here; every
# marketing email now carries its recipient's own signed link (links.py).
RETIRED_SETTINGS = {"unsubscribe_url": "no longer used: every marketing email carries its "
                                       "recipient's own unsubscribe link"}
SMS_OPT_OUT_MAX_CHARS = 60


def too_old_to_trigger(settings: "StoreSettings", event_type: str, data: Mapping[str, Any],
                       now: datetime) -> bool:
    """Whether the event's fact is older than the store lets a workflow react to: an order or
    sign-up by its time at the shop, a tag, segment, group or tier by the fact that caused it
    (shared/events/facts.py), so a backfill of a shop's history starts nothing."""
    if not settings.max_trigger_age_hours:
        return False
    happened = fact_time(event_type, data)
    return happened is not None and now - happened > timedelta(hours=settings.max_trigger_age_hours)


@dataclass(frozen=True)
class StoreSettings:
    name: str = "our shop"
    url: str = ""
    timezone: str = "UTC"
    quiet_start: str = "21:00"  # marketing SMS quiet hours, store time; start == end: none
    quiet_end: str = "08:00"
    weekly_marketing_cap: int = 3
    from_email: str = ""  # empty: the service's MAIL_FROM
    # A mailbox the store reads and acts on, offered as a mailto in List-Unsubscribe beside
    # the https link (empty: the link alone).
    unsubscribe_mailto: str = ""
    # Appended to every marketing SMS when set, e.g. "Reply STOP to opt out".
    sms_opt_out_text: str = ""
    # Email marketing consent given at checkout, by import or by an operator waits (pending)
    # until the customer uses the link in a confirmation email.
    email_double_opt_in: bool = False
    # Workflows start for new facts only: an order, sign-up, status change, tag, segment, group
    # or tier whose fact is older than this when it reaches notifications (a backfill of a
    # shop's history, a replay, a rule applied to old customers) triggers nothing. 0: no limit.
    max_trigger_age_hours: int = 72

    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def load_settings(data: Mapping[str, Any] | None, new: bool = False) -> StoreSettings:
    """Store settings from `data`, or ValidationError naming each bad field. `new` settings
    (being saved) must also be fit for an email's headers: no line breaks anywhere, and a
    `from_email` that is one address; ones stored before that rule still load, and a message
    they cannot head fails on its own."""
    data = dict(data or {})
    data = {k: v for k, v in data.items() if k not in ("_id", "store_id", "updated_at")}
    errors: dict[str, list[str]] = {}
    for key, why in RETIRED_SETTINGS.items():
        if key in data:
            if new:
                errors[key] = [why]
            del data[key]
    known = set(StoreSettings.__dataclass_fields__)
    for key in sorted(set(data) - known):
        errors[key] = ["unknown field"]
    for key in _TEXT_SETTINGS:
        if key in data and not isinstance(data[key], str):
            errors[key] = ["must be a string"]
        elif new and key in data and _CONTROL.search(data[key]):
            errors[key] = ["must not contain line breaks or control characters"]
    from_email = data.get("from_email")
    if new and "from_email" not in errors and isinstance(from_email, str) and from_email \
            and mailbox(from_email) is None:
        errors["from_email"] = ["must be one email address, such as shop@example.com or "
                                "Tea & Co <shop@example.com>"]
    mailto = data.get("unsubscribe_mailto")
    if new and "unsubscribe_mailto" not in errors and isinstance(mailto, str) and mailto \
            and single_address(mailto) is None:
        errors["unsubscribe_mailto"] = ["must be one bare email address, such as "
                                        "unsubscribe@shop.example"]
    opt_out = data.get("sms_opt_out_text")
    if isinstance(opt_out, str) and len(opt_out) > SMS_OPT_OUT_MAX_CHARS:
        errors["sms_opt_out_text"] = [f"at most {SMS_OPT_OUT_MAX_CHARS} characters"]
    if "email_double_opt_in" in data and not isinstance(data["email_double_opt_in"], bool):
        errors["email_double_opt_in"] = ["must be true or false"]
    if isinstance(data.get("timezone"), str):
        try:
            ZoneInfo(data["timezone"])
        except (ZoneInfoNotFoundError, ValueError):
            errors["timezone"] = ["unknown time zone (use an IANA name such as Europe/Berlin)"]
    for key in ("quiet_start", "quiet_end"):
        if isinstance(data.get(key), str) and not _HHMM.match(data[key]):
            errors[key] = ["must be HH:MM (24-hour)"]
    cap = data.get("weekly_marketing_cap")
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or not 0 <= cap <= 100):
        errors["weekly_marketing_cap"] = ["must be a whole number, 0-100"]
    age = data.get("max_trigger_age_hours")
    if age is not None and (isinstance(age, bool) or not isinstance(age, int)
                            or not 0 <= age <= MAX_TRIGGER_AGE_HOURS):
        errors["max_trigger_age_hours"] = [f"must be a whole number, 0-{MAX_TRIGGER_AGE_HOURS}"]
    if errors:
        summary = "; ".join(f"{k}: {' '.join(v)}" for k, v in sorted(errors.items()))
        raise ValidationError(f"invalid store settings: {summary}", {"fields": errors})
    return StoreSettings(**{k: v for k, v in data.items() if k in known})


def _clock(value: str) -> time:
    hours, minutes = value.split(":")
    return time(int(hours), int(minutes))


def quiet_until(settings: StoreSettings, now: datetime) -> datetime | None:
    """When quiet hours end, if `now` is inside them (store time); None otherwise."""
    start, end = _clock(settings.quiet_start), _clock(settings.quiet_end)
    if start == end:
        return None
    local = now.astimezone(settings.zone())
    today = local.time()
    inside = (start <= today or today < end) if start > end else (start <= today < end)
    if not inside:
        return None
    end_day = local.date() if today < end else local.date() + timedelta(days=1)
    wake = datetime.combine(end_day, end, tzinfo=settings.zone())
    return wake.astimezone(timezone.utc)


CONSENT_FOR = {"email": "email_marketing", "sms": "sms_marketing"}
# A send can be due before the customer's contact details arrive: the event that triggers it
# (order.placed) and the ones that bring the address (customer.created, or customer.updated
# from the order's billing) come on different queues, in any order. For this long after it was
# scheduled, a send to a contact not known yet, or without the address, waits instead of
# being refused (found by the system scenario: guests' first-order SMS refused "no phone").
CONTACT_GRACE = timedelta(seconds=60)
CONTACT_RECHECK = timedelta(seconds=5)




@dataclass(frozen=True)
class Decision:
    action: str  # "send", "hold", "refuse"
    reason: str = ""
    until: datetime | None = None
    code: str = ""  # one of shared.send_log.HELD_REASONS, for a hold or a refusal


def decide(channel: str, purpose: str, contact: Mapping[str, Any], settings: StoreSettings,
           now: datetime, marketing_sent_this_week: int,
           wait_for_contact_until: datetime | None = None,
           suppressed: str | None = None) -> Decision:
    """May this message go now? Refusals are final for this send; holds come back later.

    Until `wait_for_contact_until`, a contact not known yet or without the channel's address
    is held (rechecked shortly) rather than refused: its details may still be on their way.
    `suppressed` says why the address is suppressed for this message, if it is
    (suppression.py decides which suppressions stop which purposes)."""
    status = contact.get("status", "active")
    address = contact.get("email") if channel == "email" else contact.get("phone")
    if wait_for_contact_until is not None and now < wait_for_contact_until and (
            status == "unknown" or (status == "active" and not address)):
        return Decision("hold", "waiting for the customer's contact details",
                        min(now + CONTACT_RECHECK, wait_for_contact_until), "waiting_for_contact")
    if status != "active":
        return Decision("refuse", f"the customer is {contact.get('status')}",
                        code="customer_inactive")
    if not address:
        return Decision("refuse", f"no {'email address' if channel == 'email' else 'phone number'}",
                        code="no_address")
    if suppressed:
        return Decision("refuse", f"suppressed: {suppressed}", code="suppressed")
    if purpose == "marketing":
        consent = (contact.get("consent") or {}).get(CONSENT_FOR[channel]) or {}
        if consent.get("granted") is not True:
            return Decision("refuse", f"no {CONSENT_FOR[channel]} consent", code="no_consent")
        if marketing_sent_this_week >= settings.weekly_marketing_cap:
            return Decision("refuse", f"weekly marketing cap of {settings.weekly_marketing_cap} "
                                      "reached", code="weekly_cap")
    if channel == "sms" and purpose == "marketing":
        # Quiet hours spare customers promotions at night; what they are waiting for (their
        # order's status, a code they asked for) goes when it happens.
        until = quiet_until(settings, now)
        if until is not None:
            return Decision("hold", f"quiet hours ({settings.quiet_start}-{settings.quiet_end} "
                                    f"{settings.timezone})", until, "quiet_hours")
    return Decision("send")
