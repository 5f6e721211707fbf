"""Consent given at checkout, read from what the shop's opt-in plugins leave in meta data.

WooCommerce has no consent field of its own: a newsletter or SMS opt-in plugin stores the
checkout box in the order's (or the customer's) `meta_data`, under a key of its choosing and
with a value of its choosing. Each store therefore says, in its consent capture settings,
which keys and which values mean "yes" and which purpose they grant.

The rules here are one-way: a mapped key holding a "yes" value is a capture; anything else (no
such key, an empty box, a value not listed) is no signal at all, never a "no", because an
unticked box at one checkout does not withdraw consent given before. Every path that brings an
order or a customer (webhooks, backfill, reconciliation) goes through `CustomerSync.apply`,
which calls `ConsentCapture.after_apply`: each order or customer captures a purpose once (the
document remembers it), as a `consent.captured` event in the same write. gdpr records it with
the order's time, so a capture older than a change it holds never overrides that change.
"""
from __future__ import annotations

import time
from datetime import datetime
from typing import Any, Callable, Iterable

from marshmallow import RAISE, Schema, ValidationError as MarshmallowError, fields, validate, \
    validates

from services.customer_sync.repository import CustomerSyncStorage
from services.customer_sync.schemas import load
from shared.errors import NotFound, ValidationError
from shared.events import Event, build_event
from shared.events.consent_capture import CAPTURED_PURPOSES, EVIDENCE_MAX_LENGTH
from shared.times import utcnow

SCOPES = ("order", "customer")
MAX_RULES = 20
MAX_YES_VALUES = 10
META_KEY_MAX_LENGTH = 100
META_VALUE_MAX_LENGTH = 100
# The most meta entries looked at in one order or customer: plugins add a few dozen at most.
MAX_META_SCANNED = 500
# Values that say "no" in every plugin we know: mapping one of them to a grant would record
# consent for people who refused it.
NEGATIVE_VALUES = frozenset({"", "0", "no", "n", "false", "off", "none", "null", "unchecked",
                             "declined", "opt-out", "optout"})
# Order states in which no checkout was completed: a block checkout's draft, or a trashed order.
NO_CHECKOUT_STATUSES = frozenset({"checkout-draft", "trash"})
SETTINGS_FIELD = "consent_capture"


def _printable_key(value: str) -> None:
    if not value.strip() or not value.isprintable():
        raise MarshmallowError("must be printable text, not blank")


class CaptureRuleSchema(Schema):
    class Meta:
        unknown = RAISE

    scope = fields.String(required=True, validate=validate.OneOf(SCOPES))
    key = fields.String(required=True, validate=[validate.Length(min=1, max=META_KEY_MAX_LENGTH),
                                                 _printable_key])
    yes_values = fields.List(
        fields.String(validate=validate.Length(max=META_VALUE_MAX_LENGTH)), required=True,
        validate=validate.Length(min=1, max=MAX_YES_VALUES))
    purpose = fields.String(required=True, validate=validate.OneOf(CAPTURED_PURPOSES))

    @validates("yes_values")
    def _no_negatives(self, values: list[str], **kwargs) -> None:
        for value in values:
            if not value.isprintable():
                raise MarshmallowError("values must be printable text")
            if normalised_value(value) in NEGATIVE_VALUES:
                raise MarshmallowError(f"{value!r} means no (or nothing), not yes")


class CaptureSettingsSchema(Schema):
    class Meta:
        unknown = RAISE

    rules = fields.List(fields.Nested(CaptureRuleSchema), required=True,
                        validate=validate.Length(max=MAX_RULES))


def normalised_value(value: Any) -> str | None:
    """A meta value as compared with a store's "yes" values; None for anything that is not
    a scalar (a plugin's nested object is never a tick)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return value.strip().casefold()[:META_VALUE_MAX_LENGTH + 1]
    return None


def validate_settings(raw: Any) -> dict:
    """The store's capture rules, checked: ValidationError naming the field otherwise."""
    data = load(CaptureSettingsSchema(), raw, "consent_capture")
    seen = set()
    rules = []
    for index, rule in enumerate(data["rules"]):
        identity = (rule["scope"], rule["key"], rule["purpose"])
        if identity in seen:
            raise ValidationError(f"rules[{index}] repeats a scope, key and purpose",
                                  {"fields": {"rules": {str(index): ["duplicate"]}}})
        seen.add(identity)
        rules.append({**rule, "yes_values": sorted({normalised_value(v) for v in rule["yes_values"]})})
    return {"rules": rules}


def opt_ins(meta: Any, rules: Iterable[dict], scope: str) -> dict[str, str]:
    """purpose -> evidence ("order meta KEY = VALUE") for each purpose a "yes" grants."""
    if not isinstance(meta, list):
        return {}
    wanted = [r for r in rules if r["scope"] == scope]
    if not wanted:
        return {}
    found: dict[str, str] = {}
    for item in meta[:MAX_META_SCANNED]:
        if not isinstance(item, dict) or not isinstance(item.get("key"), str):
            continue
        value = normalised_value(item.get("value"))
        if value is None:
            continue
        for rule in wanted:
            if item["key"] == rule["key"] and value in rule["yes_values"] \
                    and rule["purpose"] not in found:
                found[rule["purpose"]] = f"{scope} meta {rule['key']} = {value}"[:EVIDENCE_MAX_LENGTH]
    return found


def captured_event(store_id: str, event_id: str, customer_id: str, purpose: str, source: str,
                   captured_at: datetime, capture_key: str, evidence: str,
                   order_id: str | None, correlation_id: str, now: datetime) -> Event:
    return build_event("consent.captured", store_id=store_id, event_id=event_id,
                       correlation_id=correlation_id, causation_id=correlation_id,
                       occurred_at=now,
                       data={"customer_id": customer_id, "purpose": purpose, "source": source,
                             "order_id": order_id, "captured_at": captured_at.isoformat(),
                             "capture_key": capture_key, "evidence": evidence})


class CaptureSettings:
    """The rules, kept with the store's settings (the store document), read through a short
    cache because every applied order asks: a change reaches the webhook and backfill workers
    within CACHE_SECONDS (and the next backfill captures what they applied meanwhile)."""

    CACHE_SECONDS = 5.0

    def __init__(self, storage: CustomerSyncStorage) -> None:
        self.collection = storage.stores.collection
        self._cache: dict[str, tuple[float, list[dict]]] = {}

    def rules(self, store_id: str) -> list[dict]:
        now = time.monotonic()
        hit = self._cache.get(store_id)
        if hit is not None and now - hit[0] < self.CACHE_SECONDS:
            return hit[1]
        doc = self.collection.find_one({"_id": store_id}, {SETTINGS_FIELD: 1}) or {}
        rules = list((doc.get(SETTINGS_FIELD) or {}).get("rules") or [])
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[store_id] = (now, rules)
        return rules

    def get(self, store_id: str) -> dict:
        doc = self.collection.find_one({"_id": store_id}, {SETTINGS_FIELD: 1})
        if doc is None:
            raise NotFound(f"no store {store_id}")
        settings = doc.get(SETTINGS_FIELD) or {"rules": []}
        return {"store_id": store_id, "rules": settings.get("rules") or [],
                "updated_at": settings["updated_at"].isoformat()
                if settings.get("updated_at") else None,
                "updated_by": settings.get("updated_by")}

    def save(self, store_id: str, raw: Any, actor: str, now: datetime) -> dict:
        settings = validate_settings(raw)
        result = self.collection.update_one(
            {"_id": store_id},
            {"$set": {SETTINGS_FIELD: {**settings, "updated_at": now, "updated_by": actor}}})
        if result.matched_count == 0:
            raise NotFound(f"no store {store_id}")
        self._cache.pop(store_id, None)
        return self.get(store_id)


class ConsentCapture:
    """Turns the mapped opt-ins of an applied order or customer into `consent.captured`
    events, each once per document and purpose."""

    def __init__(self, storage: CustomerSyncStorage, settings: CaptureSettings,
                 event_id: Callable[..., str], clock: Callable[[], datetime] = utcnow) -> None:
        self.storage = storage
        self.settings = settings
        self.event_id = event_id
        self.clock = clock

    def after_apply(self, store_id: str, resource: str, payload: Any,
                    correlation_id: str) -> list[tuple[str, Any]]:
        """The documents that now owe capture events (for the relay); none when the store maps
        nothing or the payload grants nothing."""
        rules = self.settings.rules(store_id)
        if not rules or not isinstance(payload, dict):
            return []
        found = opt_ins(payload.get("meta_data"), rules, resource)
        if not found:
            return []
        if resource == "order":
            return self._capture_order(store_id, str(payload.get("id")), found, correlation_id)
        if resource == "customer" and isinstance(payload.get("id"), int):
            return self._capture_customer(store_id, payload["id"], found, correlation_id)
        return []

    def _capture_order(self, store_id: str, order_id: str, found: dict[str, str],
                       correlation_id: str) -> list[tuple[str, Any]]:
        orders = self.storage.orders
        for _ in range(20):
            doc = orders.get(store_id, order_id)
            if (doc is None or not doc.get("customer_id") or doc.get("anonymized")
                    or doc.get("personal_data_erased")
                    or doc.get("status") in NO_CHECKOUT_STATUSES | {"deleted"}):
                return []
            at = doc.get("date_created") or doc.get("date_modified")
            done = set(doc.get("consent_captured") or [])
            new = [p for p in found if p not in done]
            if at is None or not new:
                return []
            key = f"checkout:order:{order_id}"
            events = [self._event(store_id, doc["customer_id"], purpose, at, key, found[purpose],
                                  order_id, correlation_id) for purpose in new]
            if orders.update(doc["_id"], doc["version"],
                             {"consent_captured": sorted(done | set(new))}, events):
                return [(orders.collection.name, doc["_id"])]
        return []  # kept changing: the next delivery, backfill or reconciliation captures it

    def _capture_customer(self, store_id: str, woo_customer_id: int, found: dict[str, str],
                          correlation_id: str) -> list[tuple[str, Any]]:
        customers = self.storage.customers
        for _ in range(20):
            doc = customers.by_woo_id(store_id, woo_customer_id)
            # The time of sign-up, never later: a capture must not override a change made
            # since (the customer's modification date moves with any edit).
            at = (doc or {}).get("date_created")
            if doc is None or doc.get("status") != "active" or at is None:
                return []
            done = set(doc.get("consent_captured") or [])
            new = [p for p in found if p not in done]
            if not new:
                return []
            key = f"checkout:customer:{doc['_id']}"
            events = [self._event(store_id, doc["_id"], purpose, at, key, found[purpose], None,
                                  correlation_id) for purpose in new]
            if customers.update(doc["_id"], doc["version"],
                                {"consent_captured": sorted(done | set(new))}, events):
                return [(customers.collection.name, doc["_id"])]
        return []

    def _event(self, store_id: str, customer_id: str, purpose: str, at: datetime, key: str,
               evidence: str, order_id: str | None, correlation_id: str) -> Event:
        return captured_event(store_id, self.event_id(store_id, "consent.captured", key, purpose),
                              customer_id, purpose, "checkout", at, key, evidence, order_id,
                              correlation_id, self.clock())
