"""The WooCommerce webhook door: check, record durably, answer fast. Plain code, no nameko.

Order of checks (docs/architecture.md, "How it works"): size, store, WooCommerce's unsigned
ping, signature (before the body is parsed), then the body: its JSON, then every field applying it will read (400 naming
the field), so nothing is answered 200 that the workers would then refuse. Nothing is recorded for a rejected request. An accepted
delivery is stored in the inbox under the key of the *change* it carries, so the same state
delivered twice is answered 200 and recorded once; applying it happens after the answer.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass, replace
from typing import Mapping

from pymongo.errors import PyMongoError

from services.customer_sync.core.normalise import NormalisationError, check_delivery, parse_body
from services.customer_sync.repository import CustomerSyncStorage
from services.customer_sync.door.signature import verify

log = logging.getLogger(__name__)

SUPPORTED_TOPICS = frozenset({
    "customer.created", "customer.updated", "customer.deleted",
    "order.created", "order.updated", "order.deleted", "order.restored",
})
_PING = re.compile(rb"^webhook_id=\d+$")
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
# The only request headers the door reads (lower-case).
WEBHOOK_HEADERS = ("x-wc-webhook-signature", "x-wc-webhook-topic", "x-wc-webhook-delivery-id",
                   "x-wc-webhook-id")


@dataclass(frozen=True)
class WebhookAnswer:
    status: int
    body: dict
    inbox_key: str | None = None  # set when a new delivery was recorded and needs applying
    store_known: bool = False  # the store exists: its id may label metrics (bounded set)

    @property
    def outcome(self) -> str:
        """accepted, duplicate, pong, ignored (all 200), rejected (4xx) or unavailable (503)."""
        if self.status == 200:
            return str(self.body.get("status"))
        return "unavailable" if self.status == 503 else "rejected"


def _answer(status: int, message: str, **extra: object) -> WebhookAnswer:
    return WebhookAnswer(status, {"status": message, **extra})


def delivery_key(store_id: str, resource: str, action: str, payload: dict, body: bytes,
                 delivery_id: str | None) -> str:
    """Identify the change, not the delivery (X-WC-Webhook-Delivery-ID is shared by every
    delivery of a webhook within one second). WooCommerce builds the body from the resource's
    state at delivery time, so the same state gives the same bytes: hashing the raw body is
    enough here, and cheaper than re-serialising it. (Applying compares normalised content.)"""
    rid = payload["id"]
    if action == "deleted":
        # A deleted body is only {"id": N}; a later re-trash of the same order is a new change.
        return f"{store_id}:{resource}:{rid}:deleted:{delivery_id or ''}"
    modified = payload.get("date_modified_gmt") or ""
    return f"{store_id}:{resource}:{rid}:{modified}:{hashlib.sha256(body).hexdigest()}"


class WebhookReceiver:
    def __init__(self, storage: CustomerSyncStorage, max_body_bytes: int) -> None:
        self.storage = storage
        self.max_body_bytes = max_body_bytes

    def receive(self, store_id: str, headers: Mapping[str, str], body: bytes) -> WebhookAnswer:
        if not all(name in headers for name in WEBHOOK_HEADERS):
            headers = {k.lower(): v for k, v in headers.items()}
        if len(body) > self.max_body_bytes:
            return _answer(413, "body too large", limit_bytes=self.max_body_bytes)
        try:
            store = self.storage.stores.get_cached(store_id)
        except PyMongoError:
            log.exception("database unavailable while receiving a webhook")
            return _answer(503, "temporarily unavailable")
        if store is None:
            return _answer(404, "unknown store")
        return replace(self._receive_for(store, store_id, headers, body), store_known=True)

    def _receive_for(self, store, store_id: str, headers: Mapping[str, str],
                     body: bytes) -> WebhookAnswer:
        """The checks and the recording once the store is known."""
        signature = headers.get("x-wc-webhook-signature")
        topic = (headers.get("x-wc-webhook-topic") or "").strip().lower()
        if not signature and not topic and _PING.match(body.strip()):
            log.info("answered WooCommerce's webhook ping")
            return _answer(200, "pong")
        if not verify(body, store.webhook_secret, signature):
            log.warning("webhook refused: missing or bad signature")
            return _answer(401, "bad signature")
        if topic not in SUPPORTED_TOPICS:
            # Answered 2xx whatever the body: WooCommerce disables a webhook after 5 failures.
            log.info("ignoring webhook topic %r", topic or None)
            return _answer(200, "ignored", topic=topic)
        try:
            text = body.decode("utf-8")
            payload = parse_body(text)
            if _SURROGATE_ESCAPE.search(body):
                # JSON may escape a lone UTF-16 surrogate ("\ud800"), which no UTF-8 text (nor
                # MongoDB) can hold: applying it would fail on every attempt. Pairs are fine.
                json.dumps(payload, ensure_ascii=False).encode("utf-8")
        except (ValueError, RecursionError):
            # UnicodeDecodeError and JSONDecodeError are ValueErrors; nesting deeper than the
            # interpreter's stack is a RecursionError. All are the sender's malformed body,
            # not our failure (fuzzing).
            return _answer(400, "malformed JSON")
        resource, action = topic.split(".", 1)
        try:
            check_delivery(resource, action, payload)
        except NormalisationError as exc:
            # Refused now rather than answered 200 and failed later: WooCommerce would not
            # send it again, so the change would be lost without the shop knowing.
            log.warning("webhook refused: invalid %s", exc.field)  # values may be personal
            return _answer(400, "invalid id" if exc.field == "id" else "invalid body",
                           field=exc.field, detail=str(exc))
        except RecursionError:  # a field nested deeper than the stack (fuzzing)
            return _answer(400, "invalid body", field=None, detail="nested too deeply")
        delivery_id = headers.get("x-wc-webhook-delivery-id")
        key = delivery_key(store_id, resource, action, payload, body, delivery_id)
        # The body is kept as the text that arrived (cheaper to store than the parsed form,
        # and exactly what the shop sent); the worker parses it again.
        delivery = {
            "store_id": store_id, "topic": topic, "resource": resource, "action": action,
            "resource_id": payload["id"], "body": text,
            "webhook_id": headers.get("x-wc-webhook-id"), "delivery_id": delivery_id,
        }
        try:
            recorded = self.storage.inbox.record(key, delivery)
        except PyMongoError:
            log.exception("database unavailable: delivery not recorded")
            return _answer(503, "temporarily unavailable")
        if not recorded:
            log.info("duplicate delivery of %s %s", topic, payload["id"])
            return _answer(200, "duplicate")
        return WebhookAnswer(200, {"status": "accepted"}, inbox_key=key)
