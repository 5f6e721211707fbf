"""Message templates: jinja2 in a sandbox, checked when saved, rendered from the projection.

A template has a channel. An email template has a subject, an HTML part (autoescaped: a
customer's name cannot inject markup) and a plain-text part; an SMS template has a body. Every
part is parsed when the template is saved: a syntax error, or a variable the projection does
not provide (`{{ customer.frist_name }}`), is refused with its part and line, so a typo is
found by the person writing it rather than by a customer at 3 a.m. Rendering never calls out:
everything a template can use is in the context built from the service's own projection.

Every render, whether to check a template being saved, to preview it or to send it, runs in
the bounded sandbox (bounded_sandbox.py) within RenderLimits: a template that asks for too much
text or time is refused with the limit it hit, wherever it is rendered.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Mapping

from jinja2 import StrictUndefined, TemplateSyntaxError, nodes

from services.notifications.bounded_sandbox import (BoundedSandbox, RenderBudget,
                                                    RenderLimitExceeded, RenderLimits,
                                                    render_within)
from shared.errors import ValidationError

_SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
# A custom field's key as customer_sync allows it (docs/custom-fields.md): the store's own
# fields are not known here, so any such key is accepted and reads "" where there is no value.
_CUSTOM_KEY = re.compile(r"[a-z][a-z0-9_]{0,39}")
CUSTOM_FIELDS = "a custom field's key"  # VARIABLES' mark for `customer.custom_fields.<key>`


class CustomValues:
    """A customer's custom field values as templates read them: `custom_fields.<key>` is the
    value (text, a number or a boolean), or "" when the customer has none, so a message to a
    customer without the value still goes. It offers nothing but the keys (a dict would also
    answer `.items` or `.keys` with its methods)."""

    __slots__ = ("_values",)

    def __init__(self, values: Any = None) -> None:
        held = values if isinstance(values, Mapping) else {}
        self._values = {key: value for key, value in held.items()
                        if isinstance(key, str) and _CUSTOM_KEY.fullmatch(key)
                        and isinstance(value, (str, int, float, bool))}

    def __getattr__(self, key: str) -> Any:
        if not _CUSTOM_KEY.fullmatch(key):
            raise AttributeError(key)
        return self._values.get(key, "")

    def __getitem__(self, key: Any) -> Any:
        if not isinstance(key, str) or not _CUSTOM_KEY.fullmatch(key):
            raise KeyError(key)
        return self._values.get(key, "")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CustomValues) and other._values == self._values

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"CustomValues({self._values!r})"

# What templates may use: names and the attributes each offers (None: a plain value).
VARIABLES: dict[str, dict[str, Any]] = {
    "customer": {
        "first_name": None, "last_name": None, "full_name": None, "email": None, "phone": None,
        "points": None, "tier": None, "segment": None, "orders_count": None, "birthday": None,
        "last_order": {"number": None, "total": None, "date": None},
        "tags": None,
        "custom_fields": CUSTOM_FIELDS,  # any key: `customer.custom_fields.tier`
    },
    "store": {"name": None, "url": None},
    # Links (links.py): unsubscribe and preferences in marketing emails only (empty in any
    # other), confirm_url in the double opt-in confirmation only.
    "message": {"unsubscribe_url": None, "preferences_url": None, "confirm_url": None},
    # Only in messages that have them: a workflow's coupon, and the facts of the loyalty event
    # that triggered the message (TRIGGER_VARIABLES says which event brings which).
    "coupon": {"code": None, "amount": None, "expires": None},
    "reward": {"code": None, "amount": None, "expires": None},
    "points": {"delta": None, "balance": None, "expiring": None, "expires": None},
}
TRIGGER_VARIABLES = {"loyalty.reward_issued": "reward", "loyalty.reward_expired": "reward",
                     "loyalty.reward_returned": "reward", "loyalty.points_changed": "points",
                     "loyalty.points_expiring": "points"}

SAMPLE_CONTEXT: dict[str, Any] = {
    "customer": {"first_name": "Ada", "last_name": "Lovelace", "full_name": "Ada Lovelace",
                 "email": "ada@example.com", "phone": "+447700900123", "points": 1250,
                 "tier": "silver", "segment": "regular", "orders_count": 4,
                 "birthday": "12-10", "tags": ["gift"],
                 # as a customer without values: a template must render for them
                 "custom_fields": CustomValues(),
                 "last_order": {"number": "1001", "total": "49.90 EUR", "date": "2026-11-02"}},
    "store": {"name": "Tea & Co", "url": "https://shop.example"},
    "message": {"unsubscribe_url": "https://notify.shop.example/unsubscribe/sample",
                "preferences_url": "https://notify.shop.example/preferences/sample",
                "confirm_url": "https://notify.shop.example/confirm/sample"},
}
# Codes no shop holds ("0" is not in a real code's alphabet): a preview creates nothing.
SAMPLE_EXTRAS: dict[str, Any] = {
    "coupon": {"code": "gift-sample00000", "amount": "10 %", "expires": "2026-12-31"},
    "reward": {"code": "reward-sample00000", "amount": "5.00 EUR", "expires": "2027-03-06"},
    "points": {"delta": 450, "balance": 1450, "expiring": 200, "expires": "2027-01-31"},
}
SAMPLE_CONTEXT.update(SAMPLE_EXTRAS)

EMAIL_PARTS = ("subject", "html", "text")
SMS_PARTS = ("body",)
SMS_MAX_CHARS = 1600  # Twilio's limit for one message body


class RenderFailed(ValueError):
    """A part that cannot be rendered: its data lacks something, or it hit a limit (`limit`
    names it). A send of it can never succeed."""

    def __init__(self, part: str, reason: str, limit: str | None = None) -> None:
        super().__init__(f"{part}: {reason}")
        self.part = part
        self.reason = reason
        self.limit = limit


def _environment(autoescape: bool) -> BoundedSandbox:
    return BoundedSandbox(autoescape=autoescape, undefined=StrictUndefined,
                          keep_trailing_newline=True)


_HTML = _environment(True)
_PLAIN = _environment(False)


def _env_for(part: str) -> BoundedSandbox:
    return _HTML if part == "html" else _PLAIN


@dataclass(frozen=True)
class Rendered:
    subject: str | None
    html: str | None
    text: str | None  # the SMS body for SMS templates


def _unknown_variables(source: str, part: str) -> list[str]:
    """Variables and attributes the template uses that the context will not have."""
    tree = _env_for(part).parse(source)
    assigned = {n.name for n in tree.find_all(nodes.Name) if n.ctx in ("store", "param")}
    problems = []
    # what another attribute or item is read from (`customer.custom_fields` in
    # `customer.custom_fields.tier`), as against a value used as it is
    read_from = {id(n.node) for n in tree.find_all((nodes.Getattr, nodes.Getitem))}
    for node in tree.find_all(nodes.Name):
        if node.ctx == "load" and node.name not in VARIABLES and node.name not in assigned \
                and node.name not in ("loop", "range", "true", "false", "none"):
            problems.append(f"line {node.lineno}: unknown variable '{node.name}'")
    for node in tree.find_all(nodes.Getattr):
        path = []
        current: nodes.Node = node
        while isinstance(current, nodes.Getattr):
            path.append(current.attr)
            current = current.node
        if not isinstance(current, nodes.Name) or current.name not in VARIABLES:
            continue
        spec: Any = VARIABLES[current.name]
        name = f"{current.name}.{'.'.join(reversed(path))}"
        for attr in reversed(path):
            if spec is CUSTOM_FIELDS and _CUSTOM_KEY.fullmatch(attr):
                spec = None
            elif not isinstance(spec, dict) or attr not in spec:
                problems.append(f"line {node.lineno}: unknown variable '{name}'")
                break
            else:
                spec = spec[attr]
        else:
            if spec is CUSTOM_FIELDS and id(node) not in read_from:
                problems.append(f"line {node.lineno}: use one custom field at a time, "
                                f"'{name}.<key>'")
    return sorted(set(problems))


def variables_used(template: Mapping[str, Any]) -> set[str]:
    """The top-level variables (customer, coupon, ...) a stored template's parts read."""
    used: set[str] = set()
    for part in (*EMAIL_PARTS, *SMS_PARTS):
        source = template.get(part)
        if isinstance(source, str):
            tree = _env_for(part).parse(source)
            used |= {n.name for n in tree.find_all(nodes.Name)
                     if n.ctx == "load" and n.name in VARIABLES}
    return used


def validate_template(data: Mapping[str, Any], limits: RenderLimits = RenderLimits()) -> dict:
    """A template to store, or ValidationError naming each bad part and line, or the
    rendering limit a part exceeds with sample data."""
    if not isinstance(data, Mapping):
        raise ValidationError("template must be an object", {"fields": {"template": ["not an object"]}})
    errors: dict[str, list[str]] = {}
    slug = data.get("slug")
    if not isinstance(slug, str) or not _SLUG.match(slug):
        errors["slug"] = ["must be a lower-case slug"]
    channel = data.get("channel")
    if channel not in ("email", "sms"):
        errors["channel"] = ["must be email or sms"]
    parts = EMAIL_PARTS if channel == "email" else SMS_PARTS
    unknown = sorted(set(data) - {"slug", "channel", "name", "description", *EMAIL_PARTS, *SMS_PARTS})
    for key in unknown:
        errors[key] = ["unknown field"]
    extra = [p for p in (EMAIL_PARTS + SMS_PARTS) if p in data and p not in parts]
    for key in extra:
        errors[key] = [f"not a part of {channel} templates"]
    started = time.monotonic()
    for part in parts:
        source = data.get(part)
        if not isinstance(source, str) or not source.strip():
            errors[part] = ["required"]
            continue
        try:
            problems = _unknown_variables(source, part)
        except TemplateSyntaxError as exc:
            errors[part] = [f"line {exc.lineno}: {exc.message}"]
            continue
        if problems:
            errors[part] = problems
            continue
        try:
            render_part(part, source, SAMPLE_CONTEXT, limits.budget(channel, started))
        except RenderFailed as exc:
            errors[part] = [f"exceeds a rendering limit: {exc.reason}" if exc.limit
                            else f"does not render with sample data: {exc.reason}"]
    if channel == "sms" and "body" not in errors and len(data["body"]) > SMS_MAX_CHARS:
        errors["body"] = [f"longer than {SMS_MAX_CHARS} characters"]
    if errors:
        summary = "; ".join(f"{k}: {' '.join(v)}" for k, v in sorted(errors.items()))
        raise ValidationError(f"invalid template: {summary}", {"fields": errors})
    return {"slug": slug, "channel": channel, "name": str(data.get("name") or slug),
            "description": str(data.get("description") or ""),
            **{part: data[part] for part in parts}}


@lru_cache(maxsize=512)
def _compiled(part: str, source: str):
    """Compiling costs more than rendering: a bulk send renders one template thousands of
    times, so each (part, source) is compiled once per process."""
    return _env_for(part).compile_bounded(source)


def render_part(part: str, source: str, context: Mapping[str, Any], budget: RenderBudget) -> str:
    """One part within `budget`; whatever stops it (a missing value, a limit, a runaway
    macro's recursion) is RenderFailed naming the part."""
    try:
        return render_within(_compiled(part, source), context, budget)
    except RenderLimitExceeded as exc:
        raise RenderFailed(part, str(exc), exc.limit) from None
    except RecursionError:
        raise RenderFailed(part, "macros or loops nest too deeply") from None
    except Exception as exc:  # the template's own error: undefined, wrong type, syntax...
        raise RenderFailed(part, str(exc) or type(exc).__name__) from None


def render(template: Mapping[str, Any], context: Mapping[str, Any],
           limits: RenderLimits = RenderLimits()) -> Rendered:
    """Render a stored template within `limits` (its parts share the time limit); raises
    RenderFailed if the context lacks something or a limit is hit."""
    started = time.monotonic()

    def part(name: str) -> str:
        return render_part(name, template[name], context, limits.budget(template["channel"], started))

    if template["channel"] == "email":
        return Rendered(" ".join(part("subject").split()), part("html"), part("text"))
    return Rendered(None, None, part("body").strip())


# -- the shipped defaults ------------------------------------------------------------------------

def _email(slug: str, name: str, subject: str, body_text: str, body_html: str) -> dict:
    return {"slug": slug, "channel": "email", "name": name, "description": "shipped default",
            "subject": subject, "text": body_text, "html": body_html}


_FOOTER_TEXT = ("\n--\n{{ store.name }} · {{ store.url }}\n{% if message.unsubscribe_url %}"
                "Unsubscribe: {{ message.unsubscribe_url }}\n"
                "Your preferences: {{ message.preferences_url }}\n{% endif %}")
_FOOTER_HTML = ('<p style="color:#595959;font-size:12px">{{ store.name }}'
                '{% if message.unsubscribe_url %} · <a href="{{ message.unsubscribe_url }}">'
                'Unsubscribe</a> · <a href="{{ message.preferences_url }}">Your preferences</a>'
                '{% endif %}</p>')

DEFAULT_TEMPLATES: dict[str, dict] = {t["slug"]: t for t in (
    _email("welcome", "Welcome", "Welcome to {{ store.name }}, {{ customer.first_name }}!",
           "Hi {{ customer.first_name }},\n\nThanks for joining {{ store.name }}."
           "{% if customer.points %} You already have {{ customer.points }} points.{% endif %}\n"
           + _FOOTER_TEXT,
           "<p>Hi {{ customer.first_name }},</p><p>Thanks for joining {{ store.name }}."
           "{% if customer.points %} You already have {{ customer.points }} points.{% endif %}</p>"
           + _FOOTER_HTML),
    _email("abandoned_cart", "Abandoned cart", "{{ customer.first_name }}, your cart is waiting",
           "Hi {{ customer.first_name }},\n\nYou left something in your cart at {{ store.name }}. "
           "It is still there: {{ store.url }}\n" + _FOOTER_TEXT,
           "<p>Hi {{ customer.first_name }},</p><p>You left something in your cart at "
           "{{ store.name }}. <a href=\"{{ store.url }}\">It is still there.</a></p>" + _FOOTER_HTML),
    _email("birthday", "Birthday", "Happy birthday, {{ customer.first_name }}!",
           "Happy birthday, {{ customer.first_name }}! Everyone at {{ store.name }} wishes you "
           "a lovely day.\n" + _FOOTER_TEXT,
           "<p>Happy birthday, {{ customer.first_name }}!</p><p>Everyone at {{ store.name }} "
           "wishes you a lovely day.</p>" + _FOOTER_HTML),
    _email("win_back", "Win-back", "We miss you, {{ customer.first_name }}",
           "Hi {{ customer.first_name }},\n\nIt has been a while since your last order"
           "{% if customer.last_order %} (#{{ customer.last_order.number }} on "
           "{{ customer.last_order.date }}){% endif %}. Come and see what is new at "
           "{{ store.name }}: {{ store.url }}\n" + _FOOTER_TEXT,
           "<p>Hi {{ customer.first_name }},</p><p>It has been a while since your last order"
           "{% if customer.last_order %} (#{{ customer.last_order.number }} on "
           "{{ customer.last_order.date }}){% endif %}. <a href=\"{{ store.url }}\">Come and see "
           "what is new.</a></p>" + _FOOTER_HTML),
    _email("tier_upgrade", "Tier upgrade", "You reached {{ customer.tier|title }}!",
           "Congratulations {{ customer.first_name }}: you are now {{ customer.tier|title }} at "
           "{{ store.name }}, with {{ customer.points }} points.\n" + _FOOTER_TEXT,
           "<p>Congratulations {{ customer.first_name }}: you are now "
           "<strong>{{ customer.tier|title }}</strong> at {{ store.name }}, with "
           "{{ customer.points }} points.</p>" + _FOOTER_HTML),
    _email("confirm_email_opt_in", "Confirm your subscription",
           "Please confirm: news from {{ store.name }}",
           "Hi {{ customer.first_name }},\n\nYou asked to hear from {{ store.name }} by email. "
           "Please confirm by opening this link:\n{{ message.confirm_url }}\n\nIf you did not "
           "ask, ignore this email: you will get no marketing from us.\n",
           "<p>Hi {{ customer.first_name }},</p><p>You asked to hear from {{ store.name }} by "
           "email. <a href=\"{{ message.confirm_url }}\">Please confirm your subscription.</a>"
           "</p><p>If you did not ask, ignore this email: you will get no marketing from us.</p>"),
    {"slug": "win_back_sms", "channel": "sms", "name": "Win-back (SMS)",
     "description": "shipped default",
     "body": "{{ store.name }}: we miss you, {{ customer.first_name }}! {{ store.url }} "
             "Reply STOP to opt out."},
)}
