"""Twilio's calls to us: delivery status callbacks and inbound SMS.

Both are refused (403) unless `X-Twilio-Signature` is Twilio's HMAC of the URL Twilio called
and the posted form, made with our auth token. Behind a proxy that URL is not the one the
request arrives at, so NOTIFY_PUBLIC_URL names it. Status callbacks arrive repeated and out of
order: a message's status only ever moves forward (queued, sending, sent, then delivered or
undelivered or failed). STOP / START from a customer's phone change their SMS consent. A
failure with error 21610 (the number opted out at Twilio) suppresses SMS to that number.
"""
from __future__ import annotations

from dataclasses import dataclass

from twilio.request_validator import RequestValidator

from services.notifications.notifier import Notifier
from services.notifications.repository import NotificationsStorage
from services.notifications.suppression import TWILIO_UNSUBSCRIBED, Change, Suppressions
from shared.times import utcnow

STATUS_PATH = "/twilio/status"
INBOUND_PATH = "/twilio/inbound"
MAX_FORM_BYTES = 64 * 1024

# How far along a message is; a callback never moves it back.
STATUS_RANK = {"accepted": 0, "scheduled": 0, "queued": 1, "sending": 2, "sent": 3,
               "delivered": 4, "undelivered": 4, "failed": 4, "read": 5, "canceled": 4}


@dataclass(frozen=True)
class HookConfig:
    auth_token: str
    public_url: str


def _verified_form(config: HookConfig, request) -> dict | None:
    if not config.auth_token:
        return None  # without the token nothing can be verified: refuse everything
    if (request.content_length or 0) > MAX_FORM_BYTES:
        return None
    form = {k: request.form.get(k) for k in request.form.keys()}
    if config.public_url:
        url = config.public_url.rstrip("/") + request.full_path.rstrip("?")
    else:
        url = request.url
    signature = request.headers.get("X-Twilio-Signature", "")
    if not signature or not RequestValidator(config.auth_token).validate(url, form, signature):
        return None
    return form


def status_callback(storage: NotificationsStorage, config: HookConfig, request) -> tuple[int, dict]:
    form = _verified_form(config, request)
    if form is None:
        return 403, {"error": "invalid Twilio signature"}
    sid = form.get("MessageSid") or form.get("SmsSid")
    status = (form.get("MessageStatus") or form.get("SmsStatus") or "").lower()
    if not sid or status not in STATUS_RANK:
        return 400, {"error": "MessageSid and a known MessageStatus are required"}
    rank = STATUS_RANK[status]
    now = utcnow()
    fields = {"delivery_status": status, "delivery_rank": rank, "delivery_at": now}
    if form.get("ErrorCode"):
        fields["delivery_error"] = form["ErrorCode"]
    applied = storage.sends.record_delivery(sid, rank, fields)
    if form.get("ErrorCode") == str(TWILIO_UNSUBSCRIBED) and status in ("failed", "undelivered"):
        send = storage.sends.sms_by_provider_id(sid)
        if send and send.get("to"):
            Suppressions(storage.suppressions).suppress(
                send["store_id"], "sms_unsubscribed", send["to"], Change(
                    "suppressed", now, "sms_unsubscribed", "twilio_status",
                    f"Twilio error {TWILIO_UNSUBSCRIBED} for message {sid}",
                    key=f"twilio:{sid}"))
    return 200, {"status": status, "applied": applied}


def inbound(storage: NotificationsStorage, config: HookConfig, request
            ) -> tuple[int, dict, list[tuple[str, str]]]:
    form = _verified_form(config, request)
    if form is None:
        return 403, {"error": "invalid Twilio signature"}, []
    events = Notifier(storage).inbound_sms(form.get("From") or "", form.get("Body") or "",
                                           utcnow())
    touched = [(storage.contacts.collection.name,
                storage.contacts.key(e.store_id, e.data["customer_id"])) for e in events]
    return 200, {"consent_changes": len(events)}, touched
