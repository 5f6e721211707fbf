"""The console's forms for the programme, workflows and templates: the form's values from an
API object, and the API body from a submitted form with the fields it could not read. Plain
functions, unit-tested; the API still validates everything and its refusals are shown next to
the fields they name (see `field_errors`)."""
from __future__ import annotations

import re
from typing import Any, Iterable, Mapping

from services.gateway.console import present
from services.gateway.console.present import to_day_start
from shared.events.customer_sync import LIVE_ORDER_STATUSES
from shared.money import exponent, to_units

# The order statuses WooCommerce knows that can earn points (void ones take points back).
EARNING_STATUS_CHOICES = ("pending", "processing", "on-hold", "completed")
PROGRAMME_INTEGERS = {
    "tier_window_days": "Tier window (days of points that count for the tier)",
    "points_per_unit": "Points per 1.00 of store credit",
    "min_redeem_points": "Fewest points redeemed at once",
    "max_redeem_points": "Most points redeemed at once (empty: no limit)",
    "expiry_months": "Points expire after (months, 0: never)",
}
PROGRAMME_FLAGS = {"exclude_shipping": "Shipping earns no points",
                   "exclude_tax": "Tax earns no points",
                   "guests_earn": "Guest checkouts earn points"}
# The reward coupons' settings: shown and saved when the programme has them.
REWARD_INTEGERS = {
    "reward_expiry_days": "Reward coupons are valid for (days)",
    "credit_expiry_days": "Store-credit coupons are valid for (days)",
    "expiry_warning_days": "Warn before points expire (days ahead, 0: no warning)",
}
REWARD_FLAGS = {"reward_individual_use": "A reward coupon cannot be combined with other coupons",
                "expired_rewards_return_points": "An expired reward gives its points back"}
NULLABLE = {"max_redeem_points"}
EMPTY_TIER_ROWS = 2  # blank rows to add tiers without script

EVENT_TRIGGERS = [("customer.created", "A customer is created"),
                  ("customer.tagged", "A customer is tagged"),
                  ("customer.segment_changed", "A customer enters a segment"),
                  ("customer.saved_segment_entered", "A customer enters a saved segment"),
                  ("customer.saved_segment_left", "A customer leaves a saved segment"),
                  ("loyalty.tier_changed", "A customer's loyalty tier changes"),
                  ("order.placed", "An order is placed"),
                  ("order.updated", "An order's status changes"),
                  ("loyalty.reward_issued", "A loyalty reward or store credit is issued"),
                  ("loyalty.reward_expired", "A loyalty reward expires unused"),
                  ("loyalty.reward_returned", "A loyalty reward is cancelled or refused"),
                  ("loyalty.points_changed", "A customer is given points"),
                  ("loyalty.points_expiring", "A customer's points are about to expire")]
REWARD_KIND_CHOICES = [("", "Any reward"), ("points", "Points redeemed"),
                       ("credit", "Store credit")]
POINTS_KIND_CHOICES = [("earn", "Earned with an order"), ("adjust", "Added by staff")]
COUPON_TYPE_CHOICES = [("percent", "A percentage off"), ("fixed", "A fixed amount off the cart")]
DATE_TRIGGERS = [("birthday", "On the customer's birthday"),
                 ("days_since_last_order", "Some days after the last order")]
TRIGGER_CHOICES = [(f"event:{k}", v) for k, v in EVENT_TRIGGERS] + \
    [(f"date:{k}", v) for k, v in DATE_TRIGGERS]
SEGMENT_CHOICES = ("prospect", "new", "regular", "vip", "one_time", "at_risk")
ORDER_STATUS_CHOICES = LIVE_ORDER_STATUSES
DELAY_UNITS = {"minutes": 60, "hours": 3600, "days": 86400}
_SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


def field_key(name: str) -> str:
    """One spelling for a field the API names: the schema check says tiers/1/rate, the
    services tiers.1.rate, and a page's fields are addressed the second way."""
    return name.replace("/", ".")


def field_errors(problem: Mapping[str, Any]) -> dict[str, str]:
    """The API's per-field messages, keyed as the form's fields are."""
    out: dict[str, str] = {}
    for name, messages in (problem.get("errors") or {}).items():
        if isinstance(messages, dict):  # nested, as marshmallow answers
            for inner, text in field_errors({"errors": messages}).items():
                out[f"{field_key(name)}.{inner}"] = text
            continue
        text = "; ".join(map(str, messages)) if isinstance(messages, list) else str(messages)
        out[field_key(name)] = text
    return out


def _int(form: Mapping, name: str, errors: dict, nullable: bool = False) -> int | None:
    raw = (form.get(name) or "").strip()
    if not raw:
        if nullable:
            return None
        errors[name] = "required: a whole number"
        return None
    if not re.fullmatch(r"-?\d{1,9}", raw):
        errors[name] = "must be a whole number"
        return None
    return int(raw)


# -- the loyalty programme ------------------------------------------------------------------

def programme_fields(programme: Mapping[str, Any]) -> tuple[dict, dict]:
    """The programme's number fields and flags the form shows (label by name): the reward
    settings among them when the programme has them."""
    return ({**PROGRAMME_INTEGERS, **{k: v for k, v in REWARD_INTEGERS.items() if k in programme}},
            {**PROGRAMME_FLAGS, **{k: v for k, v in REWARD_FLAGS.items() if k in programme}})


def programme_form(programme: Mapping[str, Any]) -> dict:
    """Form values (strings) from the API's programme."""
    integers, flags = programme_fields(programme)
    values = {name: "" if programme.get(name) is None else str(programme[name])
              for name in integers}
    values.update({name: bool(programme.get(name)) for name in flags})
    if "coupon_prefix" in programme:
        values["coupon_prefix"] = programme.get("coupon_prefix") or ""
    values["earning_statuses"] = list(programme.get("earning_statuses") or [])
    values["currency"] = programme.get("currency") or ""
    values["starts_at"] = (programme.get("starts_at") or "")[:10]
    values["tiers"] = [{k: "" if t.get(k) is None else str(t[k])
                        for k in ("name", "min_points", "max_points", "rate")}
                       for t in programme.get("tiers") or []]
    return values


def with_blank_tiers(values: dict) -> dict:
    blank = {"name": "", "min_points": "", "max_points": "", "rate": ""}
    return {**values, "tiers": list(values["tiers"]) + [dict(blank)] * EMPTY_TIER_ROWS}


def parse_programme(form, programme: Mapping[str, Any] | None = None
                    ) -> tuple[dict, dict, dict]:
    """(API body, form values to show again, errors by field), for the fields the form showed
    for `programme` (the one in force). A tier row with no name is left out, so a row is
    removed by clearing its name."""
    integers, flags = programme_fields(programme or {})
    errors: dict[str, str] = {}
    body: dict[str, Any] = {}
    for name in integers:
        value = _int(form, name, errors, nullable=name in NULLABLE)
        if name not in errors:
            body[name] = value
    for name in flags:
        body[name] = form.get(name) == "on"
    if "coupon_prefix" in (programme or {}):
        body["coupon_prefix"] = (form.get("coupon_prefix") or "").strip().lower()
    body["earning_statuses"] = [s for s in form.getlist("earning_statuses")
                                if s in EARNING_STATUS_CHOICES]
    if not body["earning_statuses"]:
        errors["earning_statuses"] = "choose at least one order status"
    currency = (form.get("currency") or "").strip().upper()
    body["currency"] = currency or None
    starts = (form.get("starts_at") or "").strip()
    if starts:
        try:
            body["starts_at"] = to_day_start(starts)
        except ValueError as exc:
            errors["starts_at"] = str(exc)
    else:
        body["starts_at"] = None
    rows = []
    names = form.getlist("tier_name")
    columns = {k: form.getlist(f"tier_{k}") for k in ("min_points", "max_points", "rate")}
    for i, name in enumerate(names):
        row = {"name": name.strip().lower(),
               **{k: (v[i] if i < len(v) else "").strip() for k, v in columns.items()}}
        if row["name"] or any(row[k] for k in columns):
            rows.append(row)
    tiers = []
    for i, row in enumerate(rows):
        tier: dict[str, Any] = {"name": row["name"]}
        if not row["name"]:
            errors[f"tiers.{i}.name"] = "required (clear the whole row to remove the tier)"
        for key in ("min_points", "max_points", "rate"):
            sub: dict = {}
            tier[key] = _int(row, key, sub, nullable=key == "max_points")
            if sub:
                errors[f"tiers.{i}.{key}"] = sub[key]
        tiers.append(tier)
    body["tiers"] = tiers
    if not tiers:
        errors["tiers"] = "add at least one tier"
    if body.get("coupon_prefix") == "":
        errors["coupon_prefix"] = "required: the start of every reward's code"
    shown = {**{n: (form.get(n) or "") for n in integers},
             **{n: body[n] for n in flags},
             **({"coupon_prefix": body["coupon_prefix"]} if "coupon_prefix" in body else {}),
             "earning_statuses": body["earning_statuses"], "currency": currency,
             "starts_at": starts, "tiers": rows}
    return body, shown, errors


def keep_unshown(current: Mapping[str, Any], body: dict, accepted: Iterable[str]) -> dict:
    """The programme to save: the form's fields over the current programme's other accepted
    fields. The API takes the programme whole (a field left out takes its default), so a
    setting this form does not show would otherwise be reset by every save."""
    kept = {name: current[name] for name in accepted if name in current and name not in body}
    return {**kept, **body}


# -- workflows --------------------------------------------------------------------------------

def trigger_summary(trigger: Mapping[str, Any]) -> str:
    """A workflow's trigger in words: 'A customer is tagged: abandoned-cart'."""
    if "event" in trigger:
        text = dict(EVENT_TRIGGERS).get(trigger["event"], trigger["event"])
        extra = [f"{k} {v}" if k != "tag" else str(v) for k, v in sorted(trigger.items())
                 if k != "event"]
        return text + (": " + ", ".join(extra) if extra else "")
    if trigger.get("date") == "days_since_last_order":
        return f"{trigger.get('days')} days after the last order"
    return dict(DATE_TRIGGERS).get(trigger.get("date"), str(trigger.get("date")))


def delay_text(seconds: int) -> str:
    if not seconds:
        return "at once"
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds % size == 0:
            count = seconds // size
            return f"after {count} {unit if count != 1 else unit[:-1]}"
    return f"after {seconds} seconds"


def workflow_form(workflow: Mapping[str, Any] | None) -> dict:
    workflow = workflow or {}
    trigger = workflow.get("trigger") or {"event": "customer.tagged"}
    kind = f"event:{trigger['event']}" if "event" in trigger else f"date:{trigger.get('date')}"
    delay = int(workflow.get("delay_seconds") or 0)
    unit = next((u for u in ("days", "hours", "minutes") if delay and delay % DELAY_UNITS[u] == 0),
                "minutes")
    cancel = workflow.get("cancel") or []
    tag_removed = next((c.get("tag", "") for c in cancel if c.get("if") == "tag_removed"), "")
    return {
        "workflow_id": workflow.get("workflow_id") or "", "name": workflow.get("name") or "",
        "enabled": workflow.get("enabled", True), "trigger": kind,
        "tag": trigger.get("tag", ""), "to": trigger.get("to", ""),
        "from": trigger.get("from", ""), "direction": trigger.get("direction", ""),
        "first_order": bool(trigger.get("first_order")), "days": str(trigger.get("days", "")),
        "to_status": trigger.get("to_status", "") if trigger.get("event") == "order.updated" else "",
        "placed_status": trigger.get("to_status", "") if trigger.get("event") == "order.placed"
        else "",
        "delay": str(delay // DELAY_UNITS[unit]) if delay else "0", "delay_unit": unit,
        "channel": workflow.get("channel") or "email", "template": workflow.get("template") or "",
        "purpose": workflow.get("purpose") or "marketing",
        "cancel_on_order": any(c.get("if") == "order_placed" for c in cancel),
        "cancel_tag": tag_removed,
        "reward_kind": trigger.get("kind", "") if trigger.get("event") == "loyalty.reward_issued"
        else "",
        "points_kind": trigger.get("kind", "earn")
        if trigger.get("event") == "loyalty.points_changed" else "earn",
        "entered_segment": trigger.get("segment_id", "")
        if trigger.get("event") == "customer.saved_segment_entered" else "",
        "left_segment": trigger.get("segment_id", "")
        if trigger.get("event") == "customer.saved_segment_left" else "",
        **coupon_form(workflow.get("coupon")),
    }


def coupon_form(coupon: Mapping[str, Any] | None) -> dict:
    """The coupon fields of the workflow form: amounts in the currency's units, as staff
    write them."""
    if not coupon:
        return {"coupon_on": False, "coupon_type": "percent", "coupon_amount": "",
                "coupon_currency": "", "coupon_days": "30", "coupon_minimum": "",
                "coupon_individual": False, "coupon_prefix": ""}
    currency = coupon.get("currency") or ""
    kind = coupon.get("type") or "percent"
    amount = coupon.get("amount")
    minimum = coupon.get("minimum_spend")
    return {"coupon_on": True, "coupon_type": kind,
            "coupon_amount": str(amount) if kind == "percent" else _units(amount, currency),
            "coupon_currency": currency, "coupon_days": str(coupon.get("validity_days") or ""),
            "coupon_minimum": _units(minimum, currency) if minimum else "",
            "coupon_individual": bool(coupon.get("individual_use")),
            "coupon_prefix": coupon.get("prefix") or ""}


def _units(minor: Any, currency: str) -> str:
    """Minor units as staff write the amount: 1250 EUR -> '12.50', 500 JPY -> '500'."""
    if not isinstance(minor, int):
        return ""
    return f"{to_units(minor, currency):.{exponent(currency)}f}"


def parse_workflow(form) -> tuple[dict, dict, dict]:
    """(API body, values to show again, errors by field, named as the API names them)."""
    errors: dict[str, str] = {}
    shown = {k: (form.get(k) or "").strip() for k in (
        "workflow_id", "name", "trigger", "tag", "to", "from", "direction", "days", "delay",
        "delay_unit", "channel", "template", "purpose", "cancel_tag", "to_status",
        "placed_status", "reward_kind", "points_kind", "entered_segment", "left_segment",
        "coupon_type", "coupon_amount",
        "coupon_currency", "coupon_days", "coupon_minimum", "coupon_prefix")}
    shown.update(enabled=form.get("enabled") == "on", first_order=form.get("first_order") == "on",
                 cancel_on_order=form.get("cancel_on_order") == "on",
                 coupon_on=form.get("coupon_on") == "on",
                 coupon_individual=form.get("coupon_individual") == "on")
    body: dict[str, Any] = {"name": shown["name"], "enabled": shown["enabled"],
                            "channel": shown["channel"], "template": shown["template"],
                            "purpose": shown["purpose"]}
    if shown["workflow_id"]:
        body["workflow_id"] = shown["workflow_id"]
    kind, _, what = shown["trigger"].partition(":")
    trigger: dict[str, Any] = {}
    if kind == "event" and what in dict(EVENT_TRIGGERS):
        trigger["event"] = what
        if what == "customer.tagged":
            trigger["tag"] = shown["tag"].lower()
        elif what == "customer.segment_changed":
            trigger["to"] = shown["to"]
            if shown["from"]:
                trigger["from"] = shown["from"]
        elif what == "customer.saved_segment_entered":
            trigger["segment_id"] = shown["entered_segment"]
        elif what == "customer.saved_segment_left":
            trigger["segment_id"] = shown["left_segment"]
        elif what == "loyalty.tier_changed":
            trigger["direction"] = shown["direction"] or "up"
        elif what == "order.placed":
            if shown["first_order"]:
                trigger["first_order"] = True
            if shown["placed_status"]:
                trigger["to_status"] = shown["placed_status"]
        elif what == "order.updated":
            trigger["to_status"] = shown["to_status"]
        elif what == "loyalty.reward_issued" and shown["reward_kind"]:
            trigger["kind"] = shown["reward_kind"]
        elif what == "loyalty.points_changed":
            trigger["kind"] = shown["points_kind"] or "earn"
    elif kind == "date" and what in dict(DATE_TRIGGERS):
        trigger["date"] = what
        if what == "days_since_last_order":
            days = _int(shown, "days", errors)
            if days is not None:
                trigger["days"] = days
            elif "days" in errors:
                errors["trigger.days"] = errors.pop("days")
    else:
        errors["trigger"] = "choose what starts the workflow"
    body["trigger"] = trigger
    delay = _int(shown, "delay", errors)
    unit = DELAY_UNITS.get(shown["delay_unit"], 60)
    if delay is not None:
        body["delay_seconds"] = delay * unit
    elif "delay" in errors:
        errors["delay_seconds"] = errors.pop("delay")
    cancel: list[dict] = []
    if shown["cancel_on_order"]:
        cancel.append({"if": "order_placed"})
    if shown["cancel_tag"]:
        cancel.append({"if": "tag_removed", "tag": shown["cancel_tag"].lower()})
    body["cancel"] = cancel
    body["coupon"] = _parse_coupon(shown, errors) if shown["coupon_on"] else None
    return body, shown, errors


def _parse_coupon(shown: dict, errors: dict) -> dict | None:
    """The workflow's coupon from the form, amounts in the currency's minor units; errors
    named as the API names them (`coupon.amount`)."""
    coupon: dict[str, Any] = {"type": shown["coupon_type"],
                              "currency": shown["coupon_currency"].upper(),
                              "individual_use": shown["coupon_individual"]}
    if shown["coupon_type"] not in dict(COUPON_TYPE_CHOICES):
        errors["coupon.type"] = "choose a percentage or a fixed amount"
    if not re.fullmatch(r"[A-Z]{3}", coupon["currency"]):
        errors["coupon.currency"] = "required: the shop's currency, three letters (EUR)"
    if shown["coupon_type"] == "percent":
        if re.fullmatch(r"\d{1,3}", shown["coupon_amount"]):
            coupon["amount"] = int(shown["coupon_amount"])
        else:
            errors["coupon.amount"] = "required: a whole percentage, 1-100"
    else:
        coupon["amount"] = _minor(shown, "coupon_amount", coupon["currency"], errors,
                                  "coupon.amount", required=True)
    minimum = _minor(shown, "coupon_minimum", coupon["currency"], errors, "coupon.minimum_spend")
    if minimum:
        coupon["minimum_spend"] = minimum
    if re.fullmatch(r"\d{1,4}", shown["coupon_days"]):
        coupon["validity_days"] = int(shown["coupon_days"])
    else:
        errors["coupon.validity_days"] = "required: whole days, 1-365"
    if shown["coupon_prefix"]:
        coupon["prefix"] = shown["coupon_prefix"].lower()
    return coupon


def _minor(shown: dict, name: str, currency: str, errors: dict, field: str,
           required: bool = False) -> int | None:
    raw = shown[name]
    if not raw:
        if required:
            errors[field] = "required: an amount such as 5 or 4.99"
        return None
    try:
        return present.to_minor_units(raw, currency)
    except ValueError as exc:
        errors[field] = str(exc)
        return None


# -- templates --------------------------------------------------------------------------------

TEMPLATE_PARTS = {"email": ("subject", "html", "text"), "sms": ("body",)}


def template_body(form) -> tuple[str, dict, dict]:
    """(slug, the API's template body, errors) from the template form."""
    errors: dict[str, str] = {}
    slug = (form.get("slug") or "").strip().lower()
    if not _SLUG.match(slug):
        errors["slug"] = "a lower-case slug: letters, digits, - and _"
    channel = form.get("channel") or ""
    if channel not in TEMPLATE_PARTS:
        errors["channel"] = "choose email or SMS"
        channel = "email"
    body: dict[str, Any] = {"channel": channel, "name": (form.get("name") or "").strip(),
                            "description": (form.get("description") or "").strip()}
    for part in TEMPLATE_PARTS[channel]:
        body[part] = form.get(part) or ""
    return slug, body, errors
