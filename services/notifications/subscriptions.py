"""What a customer changes through the links in their messages: one-click unsubscribe, the
preference page (email and SMS marketing on or off, "forget me"), and the confirmation of an
email opt-in under double opt-in.

Each change is one conditional write of the contact: its consent and the `consent.changed` it
owes, in the same update, only if the consent is still what the page saw. So a change applied
twice (a double click, a mail client's retried POST) records and announces one change, and the
caller hands the contact to the outbox relay at once: the next send decision already sees it.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable, Mapping

from services.notifications.policy import CONSENT_FOR
from services.notifications.repository import ACTIVE, NotificationsStorage
from shared.events import Event, build_event

_NAMESPACE = uuid.UUID("5d0f3a8e-7c1b-4e26-9a4f-2b8c6d1e0f37")
DocumentRef = tuple[str, Any]
EMAIL_MARKETING = CONSENT_FOR["email"]
SMS_MARKETING = CONSENT_FOR["sms"]
CONFIRMATION_TEMPLATE = "confirm_email_opt_in"
# Grants made by the customer through a link that was mailed to them: the mailbox is proven,
# so double opt-in asks nothing more of them.
CONFIRMED_SOURCES = ("email_confirmation", "preference_page", "unsubscribe_link")


@dataclass(frozen=True)
class Change:
    """What one action did: the purposes it changed, and the documents owing events."""

    changed: tuple[str, ...]
    touched: tuple[DocumentRef, ...]


def consent_state(contact: Mapping[str, Any], purpose: str) -> str:
    """"granted", "pending" (given, waiting for its confirmation) or "off"."""
    held = (contact.get("consent") or {}).get(purpose) or {}
    if held.get("granted") is True:
        return "granted"
    return "pending" if held.get("pending") is True else "off"


def consent_event(store_id: str, customer_id: str, purpose: str, granted: bool, source: str,
                  at: datetime, note: str, pending: bool = False) -> Event:
    event_id = uuid.uuid5(_NAMESPACE, f"{store_id}:{customer_id}:{purpose}:{source}:"
                                      f"{pending}:{at.isoformat()}")
    return build_event("consent.changed", store_id=store_id, occurred_at=at, event_id=str(event_id),
                       data={"customer_id": customer_id, "purpose": purpose, "granted": granted,
                             "source": source, "changed_at": at.isoformat(),
                             "origin": "notifications", "note": note, "pending": pending})


class Subscriptions:
    def __init__(self, storage: NotificationsStorage, clock: Callable[[], datetime]) -> None:
        # The clock is the caller's (Notifier's, the service's): tests pin it.
        self.storage = storage
        self.clock = clock

    def _set(self, contact: Mapping[str, Any], purpose: str, state: str, source: str,
             note: str, at: datetime | None = None) -> bool:
        """Move one purpose to `state` if it is still what `contact` holds; True if it moved."""
        before = consent_state(contact, purpose)
        if before == state:
            return False
        at = at or self.clock()
        granted, pending = state == "granted", state == "pending"
        held: dict = {"granted": granted, "source": source, "at": at}
        if pending:
            held["pending"] = True
        event = consent_event(contact["store_id"], contact["customer_id"], purpose, granted,
                              source, at, note, pending)
        return self.storage.contacts.change_consent(contact["_id"], purpose, before, held, at,
                                                    [event])

    def _change(self, contact: Mapping[str, Any], wanted: Mapping[str, str], source: str,
                note: str) -> Change:
        changed = tuple(p for p, state in wanted.items()
                        if self._set(contact, p, state, source, note))
        touched = ((self.storage.contacts.collection.name, contact["_id"]),) if changed else ()
        return Change(changed, touched)

    def unsubscribe(self, contact: Mapping[str, Any], channel: str = "email") -> Change:
        """The one-click unsubscribe: that channel's marketing off (a pending opt-in too)."""
        return self._change(contact, {CONSENT_FOR[channel]: "off"}, "unsubscribe_link",
                            "unsubscribed through the link in a message")

    def set_preferences(self, contact: Mapping[str, Any], email: bool, sms: bool) -> Change:
        """The preference page's choices. Turning email on here needs no confirmation: the
        page was reached through a link mailed to the address."""
        wanted = {EMAIL_MARKETING: "granted" if email else "off",
                  SMS_MARKETING: "granted" if sms else "off"}
        return self._change(contact, wanted, "preference_page", "changed on the preference page")

    def confirm_email(self, contact: Mapping[str, Any]) -> Change:
        """The double opt-in link used: a pending email opt-in comes into force. Anything else
        (already confirmed, or withdrawn since) is left as it is."""
        if consent_state(contact, EMAIL_MARKETING) != "pending":
            return Change((), ())
        return self._change(contact, {EMAIL_MARKETING: "granted"}, "email_confirmation",
                            "confirmed through the link in the confirmation email")

    # -- double opt-in, when a grant arrives -----------------------------------------------------
    def hold_for_confirmation(self, store_id: str, customer_id: str, data: Mapping[str, Any],
                              changed_at: datetime) -> tuple[bool, Change]:
        """An email marketing grant from elsewhere (checkout, import, an operator), in a store
        that asks for double opt-in. Answers (whether this took the grant, and its change):
        the contact's consent becomes pending, announced, and the caller schedules the
        confirmation email. A grant to someone already confirmed, or already pending, is not
        held again (no second confirmation email)."""
        contacts = self.storage.contacts
        if contacts.get(store_id, customer_id) is None:
            # The grant came before the customer: hold it on a contact made for it, whose
            # details follow (the confirmation waits for its address, sender.py).
            contacts.apply(store_id, customer_id, "consent_seen_at", changed_at, {})
        contact = contacts.get(store_id, customer_id)
        if contact is None or contact.get("status") != ACTIVE:
            return True, Change((), ())  # nobody to confirm: nothing is granted either
        state = consent_state(contact, EMAIL_MARKETING)
        if state == "granted":
            return False, Change((), ())
        if state == "pending":
            return True, Change((), ())
        held = (contact.get("consent") or {}).get(EMAIL_MARKETING) or {}
        if held.get("at") is not None and held["at"] >= changed_at:
            return True, Change((), ())  # a newer decision is held: this grant is old news
        # Later than the grant it answers, so gdpr's record moves on to it.
        at = max(self.clock(), changed_at + timedelta(microseconds=1))
        moved = self._set(contact, EMAIL_MARKETING, "pending", data.get("source") or "checkout",
                          "waiting for the customer to confirm by email", at)
        touched = ((self.storage.contacts.collection.name, contact["_id"]),) if moved else ()
        return True, Change((EMAIL_MARKETING,) if moved else (), touched)
