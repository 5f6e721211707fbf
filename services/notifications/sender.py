"""The sender: claims due sends one at a time (atomically, so two instances never send the same
one), applies the manners, renders, records the attempt, then calls the provider.

A send whose workflow attaches a coupon gets it just before rendering: its code is chosen and
stored on the send first, then the shop is asked (through customer_sync) to make the coupon
with that code and the send named in its meta, so a retried or taken-over send asks for the
same coupon again and the shop never holds two. A shop that cannot make it now delays the send
like a provider's transient failure; a refusal fails the send for good.

The attempt is written (state "calling") before the provider is called. If the process stops
between the call and recording its outcome, the next claim finds that attempt unfinished: the
message may or may not have left, so it is not sent again, and the log says so
("outcome unknown") rather than risking a duplicate.
"""
from __future__ import annotations

import logging
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage
from typing import Callable, Protocol

from jinja2.exceptions import SecurityError, TemplateError
from pymongo.errors import PyMongoError

from services.notifications import templates as tpl
from services.notifications.channel_health import without_recipient
from services.notifications.bounded_sandbox import RenderLimits
from services.notifications import workflows as wf
from services.notifications.channels import DeliveryFailed, EmailChannel, SmsChannel, new_message_id
from services.notifications.links import PublicLinks, new_link_id
from services.notifications.notifier import Notifier, coupon_amount, local_date
from services.notifications.opt_out import (MessageLinks, list_unsubscribe_headers,
                                            with_sms_opt_out, with_unsubscribe_in_body)
from services.notifications.policy import CONTACT_GRACE, decide
from services.notifications.repository import NotificationsStorage
from services.notifications.suppression import Change, Suppressions, describe, kind_for_failure
from shared.coupons import CouponSpec, new_coupon_code
from shared.errors import NotFound, Refused, ValidationError
from shared.events import Event, build_event
from shared.metrics import count_send
from shared.outbox import push_events
from shared.times import utcnow

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
    coupon_prefix: str = "gift"  # NOTIFY_COUPON_PREFIX: a workflow's coupon.prefix wins
    links: PublicLinks | None = None  # None: no public address (NOTIFY_PUBLIC_URL empty)


class ShopCoupons(Protocol):
    """customer_sync's coupon writing, as the sender needs it (the RPC in the service)."""

    def ensure_coupon(self, store_id: str, coupon: dict, customer_id: str | None = None
                      ) -> dict: ...

    def delete_coupon(self, store_id: str, code: str, meta: dict) -> dict: ...


# The shop's answers that asking again will not change: the send fails for good.
PERMANENT_COUPON_ERRORS = (Refused, ValidationError, NotFound)


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
                            "date": last["date"].date().isoformat()} if last else None),
            "custom_fields": tpl.CustomValues(contact.get("custom_fields")),
        },
        "store": {"name": settings.name, "url": settings.url},
        "message": links.context(),
    }


def coupon_meta(send: dict) -> dict:
    """What marks a coupon at the shop as this send's (meta values hold 200 characters)."""
    send_id = send["_id"] if len(send["_id"]) <= 200 else str(uuid.uuid5(_NAMESPACE, send["_id"]))
    return {"companion_send": send_id}


class Sender:
    def __init__(self, storage: NotificationsStorage, email: EmailChannel, sms: SmsChannel,
                 settings: SenderSettings, clock: Callable[[], datetime] = utcnow,
                 shop_coupons: ShopCoupons | None = None,
                 choose: Callable[[str], str] = secrets.choice) -> None:
        self.storage = storage
        self.shop_coupons = shop_coupons
        self.choose = choose  # draws coupon codes' characters (tests seed it)
        self.email = email
        self.sms = sms
        self.settings = settings
        self.clock = clock
        self.notifier = Notifier(storage, clock, settings.render_limits)
        self.suppressions = Suppressions(storage.suppressions)
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
            self._log_failure(send, len(attempts), "not tried again", "outcome unknown: the "
                              "sender stopped while the provider was called", None)
            return self._finish(send, "failed", "outcome unknown: the sender stopped while the "
                                "provider was called; not sent again to avoid a duplicate",
                                permanent=False)
        store_id, customer_id = send["store_id"], send["customer_id"]
        contact = self.storage.contacts.get(store_id, customer_id) or {"status": "unknown"}
        reason = wf.cancelled_by(send.get("cancel") or [], contact, send["scheduled_at"])
        if reason:
            count_send(send["channel"], "cancelled")
            return self._finish(send, "cancelled", reason, permanent=True, announce=False,
                                held_reason="cancelled")
        store = self.notifier.settings(store_id)
        week = self.storage.sends.marketing_sent_since(store_id, customer_id, now - timedelta(days=7)) \
            if send["purpose"] == "marketing" else 0
        # Workflow sends (and double opt-in confirmations) may outrun their contact's details;
        # a bulk send's audience is known.
        scheduled = send.get("scheduled_at") if send.get("workflow_id") \
            or send.get("links") == "confirm_email" else None
        if isinstance(scheduled, datetime) and scheduled.tzinfo is None:
            scheduled = scheduled.replace(tzinfo=timezone.utc)
        blocking = self.suppressions.blocking(
            store_id, send["channel"],
            contact.get("email") if send["channel"] == "email" else contact.get("phone"),
            send["purpose"])
        decision = decide(send["channel"], send["purpose"], contact, store, now, week,
                          scheduled + CONTACT_GRACE if isinstance(scheduled, datetime) else None,
                          suppressed=describe(blocking) if blocking else None)
        if decision.action == "refuse":
            count_send(send["channel"], "refused")
            return self._finish(send, "refused", decision.reason, permanent=True,
                                held_reason=decision.code)
        if decision.action == "hold":
            count_send(send["channel"], "held")
            self._update(send, {"$set": {"status": "scheduled", "due_at": decision.until,
                                         "held_reason": decision.code,
                                         "reason": decision.reason},
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
        values = {**context(contact, store, links), **(send.get("facts") or {})}
        if send.get("coupon"):
            coupon = self._coupon(send, store, attempts)
            if isinstance(coupon, str):  # the send's outcome: retried, failed or lost
                return coupon
            values["coupon"] = coupon
        try:
            rendered = tpl.render(template, values, self.settings.render_limits)
        except (TemplateError, SecurityError, TypeError, ValueError) as exc:
            count_send(send["channel"], "failed_permanent")
            self._withdraw_coupon(send)
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
            self._withdraw_coupon(send)
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
            if not exc.transient:
                self._suppress_after(send, to, exc)
            outcome = self._retry_or_fail(send, attempts, len(attempts), exc.reason,
                                          exc.transient, provider_error=exc.reason, recipient=to)
            self._channel_state(send["channel"], without_recipient(exc.reason, to))
            return outcome
        count_send(send["channel"], "sent")
        outcome = self._finish(send, "sent", None, permanent=False, attempt_index=len(attempts),
                               provider_id=provider_id)
        self._channel_state(send["channel"], None)
        return outcome

    # -- its coupon ------------------------------------------------------------------------------
    def _coupon(self, send: dict, store, attempts: list) -> dict | str:
        """The send's coupon as its template shows it, made at the shop if it is not yet; or
        the send's outcome when it cannot be made now ("retry") or ever ("failed")."""
        coupon = dict(send["coupon"])
        if not coupon.get("code"):
            code = new_coupon_code(coupon.get("prefix") or self.settings.coupon_prefix,
                                   self.choose)
            expires = self.clock() + timedelta(days=coupon["validity_days"])
            # Kept before the shop is asked: whatever happens next, this send's coupon is
            # this code, and a retry asks for it again rather than for a second one.
            if not self._update(send, {"$set": {"coupon.code": code,
                                                "coupon.expires_at": expires}}):
                return "lost"
            coupon.update(code=code, expires_at=expires)
            send["coupon"] = coupon
        if coupon.get("coupon_id") is None:
            if self.shop_coupons is None:
                return self._coupon_failed(send, attempts, "no way to the shop's coupons is "
                                           "configured", transient=False)
            try:
                spec = self._coupon_spec(send, coupon)
            except ValueError as exc:  # a coupon stored before a rule it breaks
                return self._coupon_failed(send, attempts, str(exc), transient=False)
            try:
                # customer_sync restricts it to the customer's email as it holds it now.
                made = self.shop_coupons.ensure_coupon(send["store_id"], spec.to_wire(),
                                                       send["customer_id"])
            except PERMANENT_COUPON_ERRORS as exc:
                return self._coupon_failed(send, attempts, f"{type(exc).__name__}: {exc}",
                                           transient=False)
            except Exception as exc:  # Unavailable, or no answer in time: later
                return self._coupon_failed(send, attempts, f"{type(exc).__name__}: {exc}",
                                           transient=True)
            coupon["coupon_id"] = made.get("coupon_id")
            if not self._update(send, {"$set": {"coupon.coupon_id": coupon["coupon_id"]}}):
                return "lost"
            send["coupon"] = coupon
        return {"code": coupon["code"], "amount": coupon_amount(coupon),
                "expires": local_date(coupon["expires_at"], store)}

    def _withdraw_coupon(self, send: dict) -> None:
        """A message that will never go takes its coupon back from the shop (customer_sync
        deletes it only if it is this send's and unused). Best effort: a coupon left there is
        single-use, the customer's alone, and expires; the send log says it was left."""
        coupon = send.get("coupon") or {}
        if coupon.get("coupon_id") is None or self.shop_coupons is None:
            return
        try:
            answer = self.shop_coupons.delete_coupon(send["store_id"], coupon["code"],
                                                     coupon_meta(send))
            outcome = {"coupon.withdrawn": bool(answer.get("deleted"))}
        except Exception as exc:
            log.warning("a failed send's coupon could not be deleted at the shop: %s", exc,
                        extra={"store_id": send["store_id"]})
            outcome = {"coupon.withdrawn": False,
                       "coupon.left_because": f"{type(exc).__name__}: {exc}"[:300]}
        self._update(send, {"$set": outcome})

    def _coupon_spec(self, send: dict, coupon: dict) -> CouponSpec:
        return CouponSpec(
            code=coupon["code"], discount_type=wf.COUPON_TYPES[coupon["type"]],
            amount=coupon["amount"], currency=coupon["currency"],
            expires_at=coupon["expires_at"], email=None,
            individual_use=coupon["individual_use"], minimum_spend=coupon["minimum_spend"],
            usage_limit=1, description=f"Message {send['template']} of workflow "
                                       f"{send.get('workflow_id')}"[:500],
            meta=coupon_meta(send))

    def _coupon_failed(self, send: dict, attempts: list, reason: str, transient: bool) -> str:
        """Recorded as an attempt, so a shop that cannot make the coupon now is retried with
        the providers' back-off and attempt limit, and a refusal ends the send with it."""
        reason = f"coupon not created: {reason}"
        index = len(attempts)
        if not self._update(send, {"$push": {"attempts": {"n": index + 1, "at": self.clock(),
                                                          "outcome": "coupon"}}}):
            return "lost"
        send = {**send, "attempts": [*attempts, {"n": index + 1, "outcome": "coupon"}]}
        count_send(send["channel"], "failed_transient" if transient else "failed_permanent")
        return self._retry_or_fail(send, attempts, index, reason, transient)

    def _retry_or_fail(self, send: dict, attempts: list, index: int, reason: str,
                       transient: bool, provider_error: str | None = None,
                       recipient: str | None = None) -> str:
        """After the failed attempt at `index`: due again after the back-off while attempts
        are left and the failure is transient, else failed with `reason`. `reason` is on the
        send's row either way (the send log shows why one waits, not only its attempts);
        `provider_error` is the provider's own words, kept there too."""
        tries = sum(1 for a in attempts if a.get("outcome") not in ("held",)) + 1
        if transient and tries < self.settings.max_attempts:
            delay = self.settings.retry_seconds * (2 ** (tries - 1))
            fields = {"status": "scheduled", "due_at": self.clock() + timedelta(seconds=delay),
                      "reason": reason,
                      f"attempts.{index}.outcome": "retry", f"attempts.{index}.detail": reason}
            if provider_error:
                fields["provider_error"] = provider_error
            self._update(send, {"$set": fields})
            self._log_failure(send, tries, f"tried again in {delay:g}s", reason, recipient)
            return "retry"
        self._withdraw_coupon(send)
        self._log_failure(send, tries, "not tried again" if not transient
                          else "no attempts left", reason, recipient)
        return self._finish(send, "failed", reason, permanent=not transient, attempt_index=index,
                            provider_error=provider_error)

    def _log_failure(self, send: dict, tries: int, next_step: str, reason: str,
                     recipient: str | None) -> None:
        """One line an operator can grep, without a traceback: the failure is expected."""
        log.warning("%s send %s failed (attempt %d of %d, %s): %s", send["channel"],
                    send["_id"], tries, self.settings.max_attempts, next_step,
                    without_recipient(reason, recipient),
                    extra={"store_id": send.get("store_id"), "send_id": send["_id"]})

    def _channel_state(self, channel: str, error: str | None) -> None:
        """Count the provider call towards (or end) the channel's run of failures. After the
        send is recorded: a database hiccup here must not leave a sent message unrecorded."""
        try:
            if error is None:
                self.storage.channel_state.sent(channel, self.clock())
            else:
                self.storage.channel_state.failed(channel, error, self.clock())
        except PyMongoError as exc:
            log.warning("the %s channel's state could not be recorded: %s", channel, exc)

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

    def _suppress_after(self, send: dict, to: str, failure: DeliveryFailed) -> None:
        """A permanent refusal of the address itself suppresses it, before the send is
        finished, so the next decision about that address already knows."""
        kind = kind_for_failure(send["channel"], failure.code, failure.recipient_refused,
                                failure.reason)
        if kind is not None:
            self.suppressions.suppress(send["store_id"], kind, to, Change(
                "suppressed", self.clock(), kind, "send", failure.reason,
                key=f"send:{send['_id']}"))

    def _deliver(self, to: str, rendered: tpl.Rendered, message: EmailMessage | None) -> str:
        if message is not None:
            return self.email.send(message)
        return self.sms.send(to, rendered.text or "", self.settings.status_callback_url)

    def _update(self, send: dict, update: dict) -> bool:
        return self.storage.sends.update_claimed(send["_id"], self.owner, update)

    def _finish(self, send: dict, status: str, reason: str | None, permanent: bool,
                announce: bool = True, attempt_index: int | None = None,
                provider_id: str | None = None, held_reason: str | None = None,
                provider_error: str | None = None) -> str:
        now = self.clock()
        fields: dict = {"status": status, "finished_at": now}
        cleared: dict = {}
        if reason:
            fields["reason"] = reason
        if held_reason:
            fields["held_reason"] = held_reason
        if provider_error:
            fields["provider_error"] = provider_error
        if status == "sent":  # what held or failed it before no longer says why it is here
            cleared = {"reason": "", "provider_error": ""}
        if not held_reason:
            cleared["held_reason"] = ""
        if status == "sent":
            fields.update(sent_at=now, provider_id=provider_id, delivery_status="accepted")
        if attempt_index is not None:
            fields[f"attempts.{attempt_index}.outcome"] = status
            if reason:
                fields[f"attempts.{attempt_index}.detail"] = reason
        update: dict = {"$set": fields, **({"$unset": cleared} if cleared else {})}
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
