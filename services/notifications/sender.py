"""The sender: claims due sends one at a time (atomically, so two instances never send the same
one), applies the manners, renders, records the attempt, then calls the provider.

The attempt is written (state "calling") before the provider is called. If the process stops
between the call and recording its outcome, the next claim finds that attempt unfinished: the
message may or may not have left, so it is not sent again, and the log says so
("outcome unknown") rather than risking a duplicate.
"""
from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage
from typing import Callable

from jinja2.exceptions import SecurityError, TemplateError

from services.notifications import templates as tpl
from services.notifications.bounded_sandbox import RenderLimits
from services.notifications import workflows as wf
from services.notifications.channels import DeliveryFailed, EmailChannel, SmsChannel, new_message_id
from services.notifications.links import PublicLinks, new_link_id
from services.notifications.notifier import Notifier
from services.notifications.opt_out import (MessageLinks, list_unsubscribe_headers,
                                            with_sms_opt_out, with_unsubscribe_in_body)
from services.notifications.policy import CONTACT_GRACE, decide
from services.notifications.repository import NotificationsStorage, utcnow
from shared.events import Event, build_event
from shared.metrics import count_send
from shared.outbox import push_events

log = logging.getLogger(__name__)
_NAMESPACE = uuid.UUID("c0a8d3e2-51f7-4f0b-b2a5-0d9e6c4b7a13")


@dataclass(frozen=True)
class SenderSettings:
    max_attempts: int = 5
    retry_seconds: float = 60.0  # first retry; doubles each time
    lease_seconds: float = 120.0
    mail_domain: str = ""
    status_callback_url: str | None = None
    render_limits: RenderLimits = RenderLimits()
    links: PublicLinks | None = None  # None: no public address (NOTIFY_PUBLIC_URL empty)


def _aware(value):
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


def context(contact: dict, settings, links: MessageLinks = MessageLinks()) -> dict:
    """What templates see: the projection, shaped as templates.VARIABLES describes."""
    last = contact.get("last_order")
    first, last_name = contact.get("first_name") or "", contact.get("last_name") or ""
    return {
        "customer": {
            "first_name": first or "there", "last_name": last_name,
            "full_name": " ".join(p for p in (first, last_name) if p) or "there",
            "email": contact.get("email") or "", "phone": contact.get("phone") or "",
            "points": contact.get("points") or 0, "tier": contact.get("tier") or "",
            "segment": contact.get("segment") or "", "orders_count": len(contact.get("order_ids") or []),
            "birthday": contact.get("birthday") or "", "tags": sorted(contact.get("tags") or {}),
            "last_order": ({"number": last.get("number"), "total": last.get("total") or "",
                            "date": _aware(last["date"]).date().isoformat()} if last else None),
        },
        "store": {"name": settings.name, "url": settings.url},
        "message": links.context(),
    }


class Sender:
    def __init__(self, storage: NotificationsStorage, email: EmailChannel, sms: SmsChannel,
                 settings: SenderSettings, clock: Callable[[], datetime] = utcnow) -> None:
        self.storage = storage
        self.email = email
        self.sms = sms
        self.settings = settings
        self.clock = clock
        self.notifier = Notifier(storage, clock, settings.render_limits)
        self.owner = uuid.uuid4().hex
        self.touched: list[tuple[str, str]] = []  # sends that now owe events (for the relay)

    def take_touched(self) -> list[tuple[str, str]]:
        touched, self.touched = self.touched, []
        return touched

    def run_once(self, limit: int = 1000, batch: int = 200) -> dict:
        """Send what is due, up to `limit` sends, claimed `batch` at a time (a claim holds a
        send for NOTIFY_LEASE_SECONDS). Answers counts by outcome."""
        counts: dict[str, int] = {}
        while sum(counts.values()) < limit:
            now = self.clock()
            claimed = self.storage.sends.claim_batch(
                now, now + timedelta(seconds=self.settings.lease_seconds), self.owner,
                min(batch, limit - sum(counts.values())))
            if not claimed:
                break
            for send in claimed:
                try:
                    outcome = self.process(send)
                except Exception:
                    log.exception("a send failed unexpectedly; its lease expires and it is retried",
                                  extra={"store_id": send.get("store_id")})
                    outcome = "error"
                counts[outcome] = counts.get(outcome, 0) + 1
        return counts

    # -- one send ------------------------------------------------------------------------------
    def process(self, send: dict) -> str:
        now = self.clock()
        attempts = send.get("attempts") or []
        if attempts and attempts[-1].get("outcome") == "calling":
            count_send(send["channel"], "unknown")
            return self._finish(send, "failed", "outcome unknown: the sender stopped while the "
                                "provider was called; not sent again to avoid a duplicate",
                                permanent=False)
        store_id, customer_id = send["store_id"], send["customer_id"]
        contact = self.storage.contacts.get(store_id, customer_id) or {"status": "unknown"}
        reason = wf.cancelled_by(send.get("cancel") or [], contact, send["scheduled_at"])
        if reason:
            count_send(send["channel"], "cancelled")
            return self._finish(send, "cancelled", reason, permanent=True, announce=False)
        store = self.notifier.settings(store_id)
        week = self.storage.sends.marketing_sent_since(store_id, customer_id, now - timedelta(days=7)) \
            if send["purpose"] == "marketing" else 0
        # Workflow sends (and double opt-in confirmations) may outrun their contact's details;
        # a bulk send's audience is known.
        scheduled = send.get("scheduled_at") if send.get("workflow_id") \
            or send.get("links") == "confirm_email" else None
        if isinstance(scheduled, datetime) and scheduled.tzinfo is None:
            scheduled = scheduled.replace(tzinfo=timezone.utc)
        decision = decide(send["channel"], send["purpose"], contact, store, now, week,
                          scheduled + CONTACT_GRACE if isinstance(scheduled, datetime) else None)
        if decision.action == "refuse":
            count_send(send["channel"], "refused")
            return self._finish(send, "refused", decision.reason, permanent=True)
        if decision.action == "hold":
            count_send(send["channel"], "held")
            self._update(send, {"$set": {"status": "scheduled", "due_at": decision.until},
                                "$push": {"attempts": {"at": now, "outcome": "held",
                                                       "reason": decision.reason}}})
            return "held"
        template = self.notifier.templates(store_id).get(send["template"])
        if template is None:
            count_send(send["channel"], "failed_permanent")
            return self._finish(send, "failed", f"template {send['template']} no longer exists",
                                permanent=True)
        links = self._links(send)
        if links is None:
            count_send(send["channel"], "failed_permanent")
            return self._finish(send, "failed", "a marketing email needs its unsubscribe link, "
                                "and none can be made: NOTIFY_PUBLIC_URL is not set",
                                permanent=True)
        try:
            rendered = tpl.render(template, context(contact, store, links),
                                  self.settings.render_limits)
        except (TemplateError, SecurityError, TypeError, ValueError) as exc:
            count_send(send["channel"], "failed_permanent")
            return self._finish(send, "failed", f"template did not render: {exc}", permanent=True)
        if send["purpose"] == "marketing":
            rendered = (with_unsubscribe_in_body(rendered, links) if send["channel"] == "email"
                        else tpl.Rendered(None, None, with_sms_opt_out(rendered.text or "",
                                                                       store.sms_opt_out_text)))
        to = contact["email"] if send["channel"] == "email" else contact["phone"]
        try:
            message = self._build(send, to, rendered, store, links)
        except DeliveryFailed as exc:  # one that can never be built is never tried
            count_send(send["channel"], "failed_permanent")
            return self._finish(send, "failed", exc.reason, permanent=True)
        number = len(attempts) + 1
        if not self._update(send, {"$set": {"to": to, "subject": rendered.subject},
                                   "$push": {"attempts": {"n": number, "at": now,
                                                          "outcome": "calling"}}}):
            return "lost"  # another sender took it over: it is theirs now
        try:
            provider_id = self._deliver(to, rendered, message)
        except DeliveryFailed as exc:
            count_send(send["channel"], "failed_transient" if exc.transient else "failed_permanent")
            tries = sum(1 for a in attempts if a.get("outcome") not in ("held",)) + 1
            if exc.transient and tries < self.settings.max_attempts:
                delay = self.settings.retry_seconds * (2 ** (tries - 1))
                self._update(send, {"$set": {"status": "scheduled",
                                             "due_at": self.clock() + timedelta(seconds=delay),
                                             f"attempts.{len(attempts)}.outcome": "retry",
                                             f"attempts.{len(attempts)}.detail": exc.reason}})
                return "retry"
            return self._finish(send, "failed", exc.reason, permanent=not exc.transient,
                                attempt_index=len(attempts))
        count_send(send["channel"], "sent")
        return self._finish(send, "sent", None, permanent=False, attempt_index=len(attempts),
                            provider_id=provider_id)

    def _links(self, send: dict) -> MessageLinks | None:
        """The links this message offers: a marketing email its recipient's unsubscribe and
        preference links, a double opt-in confirmation its confirmation link, anything else
        none. None: a marketing email that cannot have its links (no public address)."""
        wants_unsubscribe = send["channel"] == "email" and send["purpose"] == "marketing"
        wants_confirm = send.get("links") == "confirm_email"
        if not (wants_unsubscribe or wants_confirm):
            return MessageLinks()
        public = self.settings.links
        if public is None:
            return None if wants_unsubscribe else MessageLinks()
        link_id = self.storage.contacts.link_id(send["store_id"], send["customer_id"],
                                                new_link_id())
        if link_id is None:  # the contact is gone; the send is refused before it renders
            return MessageLinks()
        if wants_confirm:
            return MessageLinks(confirm_url=public.confirm_email(link_id))
        return MessageLinks(unsubscribe_url=public.unsubscribe(link_id),
                            preferences_url=public.preferences(link_id))

    def _build(self, send: dict, to: str, rendered: tpl.Rendered, store,
               links: MessageLinks) -> EmailMessage | None:
        """The email to send (None for an SMS); DeliveryFailed if it cannot be built."""
        if send["channel"] != "email":
            return None
        return self.email.build(
            to, rendered.subject or "", rendered.text or "", rendered.html, store.from_email or None,
            new_message_id(send["_id"], self.settings.mail_domain),
            headers=list_unsubscribe_headers(links, store.unsubscribe_mailto) or None)

    def _deliver(self, to: str, rendered: tpl.Rendered, message: EmailMessage | None) -> str:
        if message is not None:
            return self.email.send(message)
        return self.sms.send(to, rendered.text or "", self.settings.status_callback_url)

    def _update(self, send: dict, update: dict) -> bool:
        result = self.storage.sends.collection.update_one(
            {"_id": send["_id"], "owner": self.owner, "status": "sending"}, update)
        return result.modified_count == 1

    def _finish(self, send: dict, status: str, reason: str | None, permanent: bool,
                announce: bool = True, attempt_index: int | None = None,
                provider_id: str | None = None) -> str:
        now = self.clock()
        fields: dict = {"status": status, "finished_at": now}
        if reason:
            fields["reason"] = reason
        if status == "sent":
            fields.update(sent_at=now, provider_id=provider_id, delivery_status="accepted")
        if attempt_index is not None:
            fields[f"attempts.{attempt_index}.outcome"] = status
            if reason:
                fields[f"attempts.{attempt_index}.detail"] = reason
        update: dict = {"$set": fields}
        tries = sum(1 for a in send.get("attempts") or [] if a.get("outcome") != "held") + (
            1 if attempt_index is not None and attempt_index >= len(send.get("attempts") or []) else 0)
        if announce:
            update["$push"] = push_events([self._event(send, status, reason, permanent, tries,
                                                       provider_id)])
        if not self._update(send, update):
            return "lost"
        if announce:
            self.touched.append((self.storage.sends.collection.name, send["_id"]))
        return status

    def _event(self, send: dict, status: str, reason: str | None, permanent: bool, attempts: int,
               provider_id: str | None) -> Event:
        common = {"send_id": send["_id"], "customer_id": send["customer_id"],
                  "channel": send["channel"], "purpose": send["purpose"],
                  "template": send["template"], "workflow_id": send.get("workflow_id"),
                  "bulk_id": send.get("bulk_id"), "attempts": attempts}
        event_type = "notification.sent" if status == "sent" else "notification.failed"
        data = ({**common, "provider_id": provider_id} if status == "sent"
                else {**common, "reason": reason or status, "permanent": permanent})
        event_id = str(uuid.uuid5(_NAMESPACE, f"{send['_id']}:{event_type}"))
        return build_event(event_type, store_id=send["store_id"], data=data, event_id=event_id,
                           correlation_id=send.get("trigger_event_id") or event_id)
