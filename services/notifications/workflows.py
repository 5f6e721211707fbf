"""Workflows, stored per store as data: what triggers a message, after what delay, on which
channel with which template, for what purpose, and what cancels it before it goes. Pure.

    {"workflow_id": "cart", "name": "Abandoned cart", "enabled": true,
     "trigger": {"event": "customer.tagged", "tag": "abandoned-cart"},
     "delay_seconds": 3600, "channel": "email", "template": "abandoned_cart",
     "purpose": "marketing", "cancel": [{"if": "tag_removed", "tag": "abandoned-cart"},
                                        {"if": "order_placed"}]}

Triggers: an event with a condition (`customer.tagged` with a tag, `customer.segment_changed`
to a segment, `customer.saved_segment_entered` or `_left` with a saved segment's `segment_id`, `loyalty.tier_changed` up (or to a tier), `order.placed` that is the customer's
first, `customer.created`, an order's status change: `order.updated` (or `order.placed`, an
order first seen in that status) with `to_status`, a loyalty reward issued (of a kind), expired
or returned, points earned (`loyalty.points_changed` of kind earn or adjust, adding points),
points about to expire), or a date rule (`{"date": "birthday"}`, `{"date":
"days_since_last_order", "days": 90}`) checked by a timer.

A workflow may attach a unique coupon to each message it sends:

    "coupon": {"type": "percent", "amount": 10, "currency": "EUR", "validity_days": 30,
               "minimum_spend": 2000, "individual_use": true, "prefix": "welcome"}

`amount` is a whole percentage (1-100) or, for `fixed`, minor units of `currency` (the shop's
currency, in which `minimum_spend` is counted too).
"""
from __future__ import annotations

import re
from typing import Any, Mapping

from shared.coupons import check_prefix
from shared.errors import ValidationError
from shared.events.customer_sync import LIVE_ORDER_STATUSES

_SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
SEGMENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")  # segmentation's saved segment ids
SAVED_SEGMENT_TRIGGERS = ("customer.saved_segment_entered", "customer.saved_segment_left")
EVENT_TRIGGERS = {
    "customer.created": set(),
    "customer.tagged": {"tag"},
    "customer.segment_changed": {"to", "from"},
    "customer.saved_segment_entered": {"segment_id"},
    "customer.saved_segment_left": {"segment_id"},
    "loyalty.tier_changed": {"direction", "to"},
    "order.placed": {"first_order", "to_status"},
    "order.updated": {"to_status"},
    "loyalty.reward_issued": {"kind"},
    "loyalty.reward_expired": set(),
    "loyalty.reward_returned": set(),
    "loyalty.points_changed": {"kind"},
    "loyalty.points_expiring": set(),
}
REWARD_KINDS = ("points", "credit")
# Entries that give a customer points a message can celebrate ("you earned N points"); the
# others (reverse, redeem, expire, erase, return) are bookkeeping a customer is not told of.
POINTS_KINDS = ("earn", "adjust")
COUPON_TYPES = {"percent": "percent", "fixed": "fixed_cart"}  # ours: WooCommerce's
COUPON_FIELDS = {"type", "amount", "currency", "validity_days", "minimum_spend",
                 "individual_use", "prefix"}
MAX_COUPON_MINOR = 10 ** 12
MAX_COUPON_DAYS = 365
ORDER_TRIGGER_STATUSES = LIVE_ORDER_STATUSES
DATE_TRIGGERS = {"birthday": set(), "days_since_last_order": {"days"}}
CANCELS = {"tag_removed": {"tag"}, "order_placed": set()}
SEGMENTS = ("prospect", "new", "regular", "vip", "one_time", "at_risk")
MAX_DELAY_SECONDS = 90 * 86400


def _problem(errors: dict, field: str, message: str) -> None:
    errors.setdefault(field, []).append(message)


def validate_workflow(data: Mapping[str, Any], template_channels: Mapping[str, str]) -> dict:
    """A workflow to store, or ValidationError naming each bad field. `template_channels`
    maps the store's template slugs (its own and the shipped defaults) to their channel."""
    if not isinstance(data, Mapping):
        raise ValidationError("workflow must be an object", {"fields": {"workflow": ["not an object"]}})
    errors: dict[str, list[str]] = {}
    known = {"workflow_id", "name", "enabled", "trigger", "delay_seconds", "channel", "template",
             "purpose", "cancel", "coupon"}
    for key in sorted(set(data) - known):
        _problem(errors, key, "unknown field")
    workflow_id = data.get("workflow_id")
    if workflow_id is not None and (not isinstance(workflow_id, str) or not _SLUG.match(workflow_id)):
        _problem(errors, "workflow_id", "must be a lower-case slug")
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        _problem(errors, "name", "required")
    enabled = data.get("enabled", True)
    if not isinstance(enabled, bool):
        _problem(errors, "enabled", "must be true or false")
    trigger = data.get("trigger")
    if not isinstance(trigger, Mapping):
        _problem(errors, "trigger", "required: {\"event\": ...} or {\"date\": ...}")
    else:
        _check_trigger(dict(trigger), errors)
    delay = data.get("delay_seconds", 0)
    if isinstance(delay, bool) or not isinstance(delay, int) or not 0 <= delay <= MAX_DELAY_SECONDS:
        _problem(errors, "delay_seconds", f"must be a whole number of seconds, 0-{MAX_DELAY_SECONDS}")
    channel = data.get("channel")
    if channel not in ("email", "sms"):
        _problem(errors, "channel", "must be email or sms")
    template = data.get("template")
    if template not in template_channels:
        _problem(errors, "template", f"no template {template!r} in this store")
    elif channel in ("email", "sms") and template_channels[template] != channel:
        _problem(errors, "template", f"is an {template_channels[template]} template, not {channel}")
    purpose = data.get("purpose")
    if purpose not in ("marketing", "transactional"):
        _problem(errors, "purpose", "must be marketing or transactional")
    cancel = data.get("cancel", [])
    if not isinstance(cancel, list):
        _problem(errors, "cancel", "must be a list")
        cancel = []
    for i, rule in enumerate(cancel):
        if not isinstance(rule, Mapping) or rule.get("if") not in CANCELS:
            _problem(errors, f"cancel.{i}.if", f"must be one of {', '.join(CANCELS)}")
            continue
        extra = set(rule) - {"if"} - CANCELS[rule["if"]]
        for key in sorted(extra):
            _problem(errors, f"cancel.{i}.{key}", "unknown field")
        if rule["if"] == "tag_removed" and not (isinstance(rule.get("tag"), str)
                                                and _SLUG.match(rule["tag"])):
            _problem(errors, f"cancel.{i}.tag", "required: a lower-case slug")
    coupon = _check_coupon(data["coupon"], errors) if data.get("coupon") is not None else None
    if errors:
        summary = "; ".join(f"{k}: {' '.join(v)}" for k, v in sorted(errors.items()))
        raise ValidationError(f"invalid workflow: {summary}", {"fields": errors})
    workflow = {"workflow_id": workflow_id, "name": name.strip(), "enabled": enabled,
                "trigger": dict(trigger), "delay_seconds": delay, "channel": channel,
                "template": template, "purpose": purpose, "cancel": [dict(r) for r in cancel]}
    if coupon is not None:
        workflow["coupon"] = coupon
    return workflow


def _whole(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _check_coupon(coupon: Any, errors: dict) -> dict | None:
    """The coupon a workflow attaches to each message, normalised, or None after naming each
    bad field in `errors` (as `coupon.<field>`)."""
    if not isinstance(coupon, Mapping):
        _problem(errors, "coupon", "must be an object, or null for no coupon")
        return None
    before = len(errors)
    for key in sorted(set(coupon) - COUPON_FIELDS):
        _problem(errors, f"coupon.{key}", "unknown field")
    kind = coupon.get("type")
    if kind not in COUPON_TYPES:
        _problem(errors, "coupon.type", "required: percent or fixed")
    amount = coupon.get("amount")
    if kind == "percent" and not _whole(amount, 1, 100):
        _problem(errors, "coupon.amount", "must be a whole percentage, 1-100")
    elif kind != "percent" and not _whole(amount, 1, MAX_COUPON_MINOR):
        _problem(errors, "coupon.amount", "must be a whole number of minor units of the "
                                          f"currency (cents for EUR), 1-{MAX_COUPON_MINOR}")
    currency = coupon.get("currency")
    if not (isinstance(currency, str) and re.fullmatch(r"[A-Z]{3}", currency)):
        _problem(errors, "coupon.currency", "required: the shop's currency, an ISO-4217 code "
                                            "such as EUR")
    days = coupon.get("validity_days")
    if not _whole(days, 1, MAX_COUPON_DAYS):
        _problem(errors, "coupon.validity_days", f"required: whole days, 1-{MAX_COUPON_DAYS}")
    minimum = coupon.get("minimum_spend")
    if minimum is not None and not _whole(minimum, 0, MAX_COUPON_MINOR):
        _problem(errors, "coupon.minimum_spend", "must be a whole number of minor units, "
                                                 f"0-{MAX_COUPON_MINOR}, or null")
    individual = coupon.get("individual_use", False)
    if not isinstance(individual, bool):
        _problem(errors, "coupon.individual_use", "must be true or false")
    prefix = coupon.get("prefix")
    if prefix is not None:
        try:
            check_prefix(prefix)
        except ValueError as exc:
            _problem(errors, "coupon.prefix", str(exc))
    if len(errors) > before:
        return None
    return {"type": kind, "amount": amount, "currency": currency, "validity_days": days,
            "minimum_spend": minimum, "individual_use": individual, "prefix": prefix}


def _check_trigger(trigger: dict, errors: dict) -> None:
    if ("event" in trigger) == ("date" in trigger):
        _problem(errors, "trigger", "needs exactly one of event or date")
        return
    if "event" in trigger:
        event = trigger["event"]
        if event not in EVENT_TRIGGERS:
            _problem(errors, "trigger.event", f"must be one of {', '.join(EVENT_TRIGGERS)}")
            return
        for key in sorted(set(trigger) - {"event"} - EVENT_TRIGGERS[event]):
            _problem(errors, f"trigger.{key}", f"is not a condition of {event}")
        if event == "customer.tagged" and not (isinstance(trigger.get("tag"), str)
                                               and _SLUG.match(trigger["tag"])):
            _problem(errors, "trigger.tag", "required: a lower-case slug")
        for key in ("to", "from"):
            if event == "customer.segment_changed" and key in trigger \
                    and trigger[key] not in SEGMENTS:
                _problem(errors, f"trigger.{key}", f"must be one of {', '.join(SEGMENTS)}")
        if event in SAVED_SEGMENT_TRIGGERS and not (
                isinstance(trigger.get("segment_id"), str)
                and SEGMENT_ID.match(trigger["segment_id"])):
            _problem(errors, "trigger.segment_id", "required: a saved segment's id")
        if event == "customer.segment_changed" and "to" not in trigger:
            _problem(errors, "trigger.to", "required: the segment entered")
        if event == "loyalty.tier_changed" and trigger.get("direction", "up") not in ("up", "down"):
            _problem(errors, "trigger.direction", "must be up or down")
        if event == "order.placed" and not isinstance(trigger.get("first_order", False), bool):
            _problem(errors, "trigger.first_order", "must be true or false")
        if event == "order.updated" and "to_status" not in trigger:
            _problem(errors, "trigger.to_status", "required: the order status entered")
        elif "to_status" in trigger and trigger["to_status"] not in ORDER_TRIGGER_STATUSES:
            _problem(errors, "trigger.to_status",
                     f"must be one of {', '.join(ORDER_TRIGGER_STATUSES)}")
        if event == "loyalty.reward_issued" and "kind" in trigger \
                and trigger["kind"] not in REWARD_KINDS:
            _problem(errors, "trigger.kind", f"must be one of {', '.join(REWARD_KINDS)}")
        if event == "loyalty.points_changed" and trigger.get("kind", "earn") not in POINTS_KINDS:
            _problem(errors, "trigger.kind", f"must be one of {', '.join(POINTS_KINDS)}")
    else:
        date = trigger["date"]
        if date not in DATE_TRIGGERS:
            _problem(errors, "trigger.date", f"must be one of {', '.join(DATE_TRIGGERS)}")
            return
        for key in sorted(set(trigger) - {"date"} - DATE_TRIGGERS[date]):
            _problem(errors, f"trigger.{key}", f"is not a condition of {date}")
        if date == "days_since_last_order":
            days = trigger.get("days")
            if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= 3650:
                _problem(errors, "trigger.days", "required: whole days, 1-3650")


def triggered_by(workflow: Mapping[str, Any], event_type: str, data: Mapping[str, Any],
                 first_order: bool = False) -> bool:
    """Whether an event starts this workflow for its customer."""
    if not workflow.get("enabled", True):
        return False
    trigger = workflow["trigger"]
    if trigger.get("event") != event_type:
        return False
    if event_type == "customer.tagged":
        return data.get("tag") == trigger["tag"]
    if event_type == "customer.segment_changed":
        return data.get("new_segment") == trigger["to"] and (
            "from" not in trigger or data.get("old_segment") == trigger["from"])
    if event_type in SAVED_SEGMENT_TRIGGERS:
        return data.get("segment_id") == trigger["segment_id"]
    if event_type == "loyalty.tier_changed":
        return data.get("direction") == trigger.get("direction", "up") and (
            "to" not in trigger or data.get("new_tier") == trigger["to"])
    if event_type == "order.placed":
        return (first_order or not trigger.get("first_order", False)) and (
            "to_status" not in trigger or data.get("status") == trigger["to_status"])
    if event_type == "order.updated":
        return data.get("new_status") == trigger["to_status"] \
            and data.get("old_status") != data.get("new_status")
    if event_type == "loyalty.reward_issued":
        return "kind" not in trigger or data.get("kind") == trigger["kind"]
    if event_type == "loyalty.points_changed":
        # "You earned N points": an entry of the kind asked for (earn unless said) that adds.
        return data.get("kind") == trigger.get("kind", "earn") and (data.get("delta") or 0) > 0
    return True


def once_key(workflow: Mapping[str, Any], event_type: str, data: Mapping[str, Any],
             event_id: str) -> str:
    """What makes a triggered send one of a kind, after the workflow and the customer: the
    order and the status it entered for a status trigger (an order that goes back and forth
    is told once per status), otherwise the triggering event."""
    if "to_status" in workflow["trigger"] and event_type in ("order.placed", "order.updated"):
        return f"order:{data.get('order_id')}:{workflow['trigger']['to_status']}"
    return event_id


def cancelled_by(workflow_cancel: list[Mapping[str, Any]], contact: Mapping[str, Any],
                 scheduled_at) -> str | None:
    """The reason a scheduled send is cancelled at send time, or None to go ahead."""
    for rule in workflow_cancel:
        if rule["if"] == "tag_removed" and rule["tag"] not in (contact.get("tags") or {}):
            return f"tag {rule['tag']} was removed"
        if rule["if"] == "order_placed":
            last = (contact.get("last_order") or {}).get("seen_at")
            if last is not None and last > scheduled_at:
                return "an order came in"
    return None
