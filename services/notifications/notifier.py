"""notifications' write side: events keep the contact projection and start workflows; people
keep templates, workflows and store settings; bulk sends fan out to an audience.

A workflow an event triggers becomes one scheduled send, keyed by workflow, customer and the
triggering event (an order-status trigger: the order and status), stored before anything is
sent: however often the event comes, one send.
"""
from __future__ import annotations

import copy
import logging
import uuid
from datetime import datetime, timedelta
from typing import Any, Callable, Iterable, Sequence

from services.notifications import projection as proj
from services.notifications import templates as tpl
from services.notifications import workflows as wf
from services.notifications.bounded_sandbox import RenderLimits
from services.notifications.policy import StoreSettings, load_settings, too_old_to_trigger
from services.notifications.subscriptions import (CONFIRMATION_TEMPLATE, CONFIRMED_SOURCES,
                                                  EMAIL_MARKETING, Subscriptions)
from services.notifications.repository import (ERASED, NotificationsStorage, ProjectedWrite,
                                               phone_key)
from shared.errors import NotFound, ValidationError
from shared.events import Event, build_event
from shared.events.facts import fact_time
from shared.money import money_text
from shared.read_cache import ReadCache
from shared.times import parse_aware, utcnow

log = logging.getLogger(__name__)

_CACHE_SECONDS = 5.0
_read_cache = ReadCache(_CACHE_SECONDS)
# The gate's answer for all stores: read again each second. Steady traffic keeps it warm, so
# with the stores' five seconds a workflow enabled through another instance could see its
# events dropped unread for five seconds; one small query a second keeps that under one.
GATE_SECONDS = 1.0
_gate_cache = ReadCache(GATE_SECONDS)
_NAMESPACE = uuid.UUID("9b7e61c4-3f0e-4d59-8d0b-4c1b7a3e2f58")
STOP_WORDS = {"stop", "stopall", "unsubscribe", "cancel", "end", "quit"}
START_WORDS = {"start", "yes", "unstop"}


def _cached(storage: NotificationsStorage, kind: str, store_id: str, load: Callable[[], Any]) -> Any:
    return _read_cache.get(storage, (kind, store_id), load)


def _forget(storage: NotificationsStorage, kind: str, store_id: str) -> None:
    _read_cache.forget(storage, (kind, store_id))


def format_money(amount: dict | None) -> str | None:
    """{"amount": 500, "currency": "EUR"} as "5.00 EUR", as customers read it."""
    if not amount:
        return None
    return money_text(amount["amount"], amount["currency"])


def coupon_amount(coupon: dict) -> str:
    """A workflow coupon's discount as its message says it: "10 %" or "5.00 EUR"."""
    if coupon["type"] == "percent":
        return f"{coupon['amount']} %"
    return format_money({"amount": coupon["amount"], "currency": coupon["currency"]}) or ""


def local_date(moment: Any, settings: StoreSettings) -> str:
    """An instant as the date it is in the store's time zone ("" for none)."""
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    if not isinstance(moment, datetime):
        return ""
    return moment.astimezone(settings.zone()).date().isoformat()


def trigger_facts(event: Event, settings: StoreSettings) -> dict:
    """What a loyalty event tells its message's template (templates.TRIGGER_VARIABLES), kept
    on the send so the message says what the event said, however late it goes."""
    data = event.data
    kind = tpl.TRIGGER_VARIABLES.get(event.event_type)
    if kind == "reward":
        return {"reward": {"code": data["code"], "amount": format_money(data["amount"]) or "",
                           "expires": local_date(data.get("expires_at"), settings)}}
    if event.event_type == "loyalty.points_changed":
        return {"points": {"delta": data["delta"], "balance": data["balance"], "expiring": 0,
                           "expires": ""}}
    if event.event_type == "loyalty.points_expiring":
        return {"points": {"delta": 0, "balance": data["balance"], "expiring": data["points"],
                           "expires": local_date(data["expires_at"], settings)}}
    return {}


class Notifier:
    def __init__(self, storage: NotificationsStorage, clock: Callable[[], datetime] = utcnow,
                 render_limits: RenderLimits = RenderLimits()) -> None:
        self.storage = storage
        self.clock = clock
        self.render_limits = render_limits
        self.touched: list[tuple[str, Any]] = []  # documents that now owe events

    # -- store data ----------------------------------------------------------------------------
    def settings(self, store_id: str) -> StoreSettings:
        return _cached(self.storage, "settings", store_id, lambda: load_settings(
            self.storage.settings.get(store_id)))

    def save_settings(self, store_id: str, data: dict) -> StoreSettings:
        settings = load_settings(data, new=True)
        self.storage.settings.put(store_id, settings.to_dict())
        _forget(self.storage, "settings", store_id)
        return settings

    def templates(self, store_id: str) -> dict[str, dict]:
        """The store's templates over the shipped defaults (a store may replace a default)."""
        def load() -> dict[str, dict]:
            found = dict(tpl.DEFAULT_TEMPLATES)
            for doc in self.storage.templates.for_store(store_id):
                found[doc["slug"]] = doc
            return found
        return _cached(self.storage, "templates", store_id, load)

    def save_template(self, store_id: str, data: dict) -> dict:
        template = tpl.validate_template(data, self.render_limits)
        for workflow in self.workflows(store_id):  # changed under a workflow, it must still fit
            if workflow["template"] == template["slug"]:
                _template_fits(workflow, template)
        self.storage.templates.put(store_id, template)
        _forget(self.storage, "templates", store_id)
        return template

    def delete_template(self, store_id: str, slug: str) -> dict:
        used = self.storage.workflows.using_template(store_id, slug)
        if used and slug not in tpl.DEFAULT_TEMPLATES:
            raise ValidationError(f"template {slug} is used by workflows {', '.join(used)}",
                                  {"fields": {"slug": ["in use"]}})
        if not self.storage.templates.delete(store_id, slug):
            raise NotFound(f"no template {slug} of store {store_id} (shipped defaults stay)")
        _forget(self.storage, "templates", store_id)
        return {"deleted": slug}

    def workflows(self, store_id: str) -> list[dict]:
        return _cached(self.storage, "workflows", store_id,
                       lambda: self.storage.workflows.for_store(store_id))

    def starts_workflows(self, event_type: str) -> bool:
        """Whether an enabled workflow of any store is triggered by `event_type`. At least as
        fresh as the store's workflows that decide a trigger (`workflows`): read again after
        `GATE_SECONDS`, and at once after a save or delete through this instance."""
        return event_type in _gate_cache.get(self.storage, "trigger_events",
                                             self.storage.workflows.trigger_events)

    def save_workflow(self, store_id: str, data: dict) -> dict:
        channels = {slug: t["channel"] for slug, t in self.templates(store_id).items()}
        workflow = wf.validate_workflow(data, channels)
        _template_fits(workflow, self.templates(store_id)[workflow["template"]])
        workflow["workflow_id"] = workflow["workflow_id"] or uuid.uuid4().hex[:12]
        self.storage.workflows.put(store_id, workflow)
        _forget(self.storage, "workflows", store_id)
        _gate_cache.forget(self.storage, "trigger_events")
        return workflow

    def delete_workflow(self, store_id: str, workflow_id: str) -> dict:
        if not self.storage.workflows.delete(store_id, workflow_id):
            raise NotFound(f"no workflow {workflow_id} in store {store_id}")
        _forget(self.storage, "workflows", store_id)
        _gate_cache.forget(self.storage, "trigger_events")
        cancelled = self.storage.sends.cancel_for_workflow(store_id, workflow_id)
        return {"deleted": workflow_id, "cancelled_sends": cancelled}

    # -- events in: the projection -----------------------------------------------------------------
    def apply(self, event: Event) -> int:
        """Keep the projection, then schedule what the event triggers. Answers how many sends
        were scheduled."""
        data, store_id = event.data, event.store_id
        customer_id = data.get("customer_id")
        if not customer_id:
            return 0
        contacts = self.storage.contacts
        first_order = False
        kind = event.event_type
        fact = proj.fact_of(event)
        if fact is not None:
            contacts.apply(store_id, customer_id, fact.stamp, fact.at, fact.fields,
                           unset=list(fact.unset) or None)
        elif kind == "order.placed":
            _, first_order = contacts.add_order(
                store_id, customer_id, proj.order_of(event, format_money(data.get("total"))))
        elif kind == "consent.changed":
            purpose = data["purpose"]
            if self._held_for_confirmation(event):
                return 0
            contacts.apply(store_id, customer_id, f"consent_at.{purpose}", data["changed_at"],
                           {f"consent.{purpose}": {"granted": data["granted"],
                                                   "source": data["source"],
                                                   "at": data["changed_at"]}})
        return self.schedule_for(event, first_order)

    def apply_all(self, events: Sequence[Event]) -> int:
        """`apply` for a list of events in delivery order, with the same effects, in as few
        round trips as the data allows: the batch's contacts read at once, each one's events
        applied in memory in order (projection.py), every contact written once by one bulk
        compare-and-set write; a contact changed meanwhile has its events go the one-event
        way. Scheduling is as `apply`'s (a write only where a workflow starts). Answers how
        many sends were scheduled."""
        if any(event.event_type not in proj.BATCHED_EVENTS for event in events):
            return sum(self.apply(event) for event in events)
        contacts = self.storage.contacts
        groups: dict[str, list[Event]] = {}
        for event in events:
            customer_id = event.data.get("customer_id")
            if customer_id and (event.event_type == "order.placed" or proj.fact_of(event)):
                groups.setdefault(contacts.key(event.store_id, customer_id), []).append(event)
        held = contacts.of_keys(list(groups))
        first_orders: dict[int, bool] = {}
        writes = [self._projected(key, held.get(key), group, first_orders)
                  for key, group in groups.items()]
        failed = contacts.write_projected([w for w in writes if w is not None])
        scheduled = 0
        for event in events:
            customer_id = event.data.get("customer_id")
            if not customer_id:
                continue
            if contacts.key(event.store_id, customer_id) in failed:
                scheduled += self.apply(event)  # changed under the batch: the one-event way
            else:
                scheduled += self.schedule_for(event, first_orders.get(id(event), False))
        return scheduled

    def _projected(self, key: str, before: dict | None, group: list[Event],
                   first_orders: dict[int, bool]) -> ProjectedWrite | None:
        """One contact's events applied in memory, as the write that stores them (None when
        they change nothing); each order's first-order answer noted by event."""
        first = group[0]
        contact = copy.deepcopy(before) if before is not None else \
            self.storage.contacts.fresh(first.store_id, first.data["customer_id"])
        paths = {"status"}
        for event in group:
            if event.event_type == "order.placed":
                order = proj.order_of(event, format_money(event.data.get("total")))
                first_orders[id(event)] = proj.add_order(contact, order)
                paths |= {"order_seen_at", "order_ids", "last_order.date"}
            else:
                fact = proj.fact_of(event)
                proj.apply_fact(contact, fact)
                paths.add(fact.stamp)
        if before is None:
            return ProjectedWrite(key, document=contact)
        to_set, to_unset = proj.changes(before, contact)
        if not to_set and not to_unset:
            return None
        expected = {}
        for path in sorted(paths):
            value = proj.get_path(before, path)
            expected[path] = {"$exists": False} if value is proj.ABSENT else value
        return ProjectedWrite(key, expected=expected, to_set=to_set, to_unset=to_unset)

    def _held_for_confirmation(self, event: Event) -> bool:
        """Double opt-in: an email marketing grant from elsewhere waits for the customer's
        confirmation, and the confirmation email is scheduled (subscriptions.py)."""
        data = event.data
        if data["purpose"] != EMAIL_MARKETING or not data["granted"] \
                or data["source"] in CONFIRMED_SOURCES or data.get("origin") == "notifications" \
                or not self.settings(event.store_id).email_double_opt_in:
            return False
        taken, change = Subscriptions(self.storage, self.clock).hold_for_confirmation(
            event.store_id, data["customer_id"], data, data["changed_at"])
        if change.changed:
            now = self.clock()
            self.storage.sends.schedule({
                "_id": f"confirm:{data['customer_id']}:{event.event_id}",
                "store_id": event.store_id, "customer_id": data["customer_id"],
                "workflow_id": None, "bulk_id": None, "trigger_event_id": event.event_id,
                "channel": "email", "template": CONFIRMATION_TEMPLATE,
                "purpose": "transactional", "links": "confirm_email", "cancel": [],
                "due_at": now, "scheduled_at": now})
            self.touched.extend(change.touched)
        return taken

    def schedule_for(self, event: Event, first_order: bool = False) -> int:
        scheduled = 0
        customer_id = event.data["customer_id"]
        workflows = [w for w in self.workflows(event.store_id)
                     if wf.triggered_by(w, event.event_type, event.data, first_order)]
        if workflows and too_old_to_trigger(self.settings(event.store_id), event.event_type,
                                            event.data, self.clock()):
            # A backfill of the shop's history, say: an old order is no news to its customer.
            log.info("%s of %s is older than the store's max_trigger_age_hours: no workflow "
                     "starts", event.event_type, fact_time(event.event_type, event.data),
                     extra={"store_id": event.store_id, "customer_id": customer_id,
                            "event_id": event.event_id})
            return 0
        for workflow in workflows:
            once = wf.once_key(workflow, event.event_type, event.data, event.event_id)
            send_id = f"wf:{workflow['workflow_id']}:{customer_id}:{once}"
            due = event.occurred_at + timedelta(seconds=workflow["delay_seconds"])
            send = self._send(event.store_id, customer_id, send_id, due, workflow=workflow,
                              trigger=event.event_id)
            facts = trigger_facts(event, self.settings(event.store_id))
            if facts:
                send["facts"] = facts
            if self.storage.sends.schedule(send):
                scheduled += 1
        return scheduled

    def _send(self, store_id: str, customer_id: str, send_id: str, due: datetime,
              workflow: dict | None = None, trigger: str | None = None,
              bulk: dict | None = None) -> dict:
        source = workflow or bulk
        send = {"_id": send_id, "store_id": store_id, "customer_id": customer_id,
                "workflow_id": workflow["workflow_id"] if workflow else None,
                "bulk_id": bulk["bulk_id"] if bulk else None, "trigger_event_id": trigger,
                "channel": source["channel"], "template": source["template"],
                "purpose": source["purpose"], "cancel": (workflow or {}).get("cancel", []),
                "due_at": due, "scheduled_at": self.clock()}
        if workflow and workflow.get("coupon"):
            # The coupon as the workflow said when the message was due to go; its code is
            # chosen and kept here by the sender before the shop is asked to create it.
            send["coupon"] = dict(workflow["coupon"])
        return send

    # -- date rules (a timer) --------------------------------------------------------------------
    def run_date_rules(self, store_id: str, now: datetime | None = None) -> int:
        """Birthdays (once a year, on the day in the store's time zone) and lapses (N days
        after the last order, once per last order)."""
        now = now or self.clock()
        rules = [w for w in self.workflows(store_id) if w.get("enabled", True)
                 and "date" in w["trigger"]]
        if not rules:
            return 0
        today = now.astimezone(self.settings(store_id).zone()).date()
        scheduled = 0
        for contact in self.storage.contacts.dates_of_active(store_id):
            for workflow in rules:
                trigger = workflow["trigger"]
                key = None
                if trigger["date"] == "birthday":
                    if _is_birthday(contact.get("birthday"), today):
                        key = str(today.year)
                else:
                    last = contact.get("last_order") or {}
                    if last.get("date") is not None and (
                            now - last["date"]).days >= trigger["days"]:
                        key = f"after-{last['order_id']}"
                if key is None:
                    continue
                send_id = f"wf:{workflow['workflow_id']}:{contact['customer_id']}:{key}"
                due = now + timedelta(seconds=workflow["delay_seconds"])
                if self.storage.sends.schedule(self._send(store_id, contact["customer_id"],
                                                          send_id, due, workflow=workflow)):
                    scheduled += 1
        return scheduled

    # -- consent from the phone ------------------------------------------------------------------
    def inbound_sms(self, from_number: str, body: str, received_at: datetime) -> list[Event]:
        """STOP / UNSUBSCRIBE turn SMS marketing off for every contact with that number,
        START turns it back on; the change is recorded here at once and announced."""
        word = (body or "").strip().split(" ")[0].lower() if (body or "").strip() else ""
        if word in STOP_WORDS:
            granted, source = False, "sms_stop"
        elif word in START_WORDS:
            granted, source = True, "sms_start"
        else:
            return []
        key = phone_key(from_number)
        if not key:
            return []
        announced = []
        for contact in self.storage.contacts.active_with_phone(key):
            store_id, customer_id = contact["store_id"], contact["customer_id"]
            event = build_event("consent.changed", store_id=store_id, occurred_at=received_at,
                                event_id=str(uuid.uuid5(_NAMESPACE, f"{store_id}:{customer_id}:"
                                                                    f"{source}:{received_at.isoformat()}")),
                                data={"customer_id": customer_id, "purpose": "sms_marketing",
                                      "granted": granted, "source": source,
                                      "changed_at": received_at.isoformat(),
                                      "origin": "notifications",
                                      "note": f"SMS {word.upper()} from the customer's phone"})
            changed = self.storage.contacts.apply(
                store_id, customer_id, "consent_at.sms_marketing", received_at,
                {"consent.sms_marketing": {"granted": granted, "source": source,
                                           "at": received_at}})
            if changed:
                self.storage.contacts.owe(contact["_id"], [event])
                announced.append(event)
        return announced

    # -- bulk --------------------------------------------------------------------------------------
    def bulk_send(self, store_id: str, audience: dict, template: str, when: str | None,
                  purpose: str = "marketing", bulk_id: str | None = None,
                  progress: Callable[[int], None] | None = None) -> dict:
        """Schedule one send per member of the audience (a segment, group, tag or list of
        customer ids), now or at `when`. Consent, caps and quiet hours are applied to each at
        send time. Asked again with the same bulk_id, schedules nobody twice."""
        templates = self.templates(store_id)
        if template not in templates:
            raise ValidationError(f"no template {template!r}", {"fields": {"template": ["unknown"]}})
        if purpose not in ("marketing", "transactional"):
            raise ValidationError("purpose must be marketing or transactional",
                                  {"fields": {"purpose": ["invalid"]}})
        kind, value = self._audience(audience)
        due = self._when(when)
        bulk_id = bulk_id or uuid.uuid4().hex[:12]
        job = {"bulk_id": bulk_id, "channel": templates[template]["channel"], "template": template,
               "purpose": purpose}
        self.storage.bulk_jobs.start(store_id, bulk_id,
                                     {**job, "audience": audience, "due_at": due})
        total, batch = 0, []

        def flush() -> None:
            self.storage.sends.add_new(batch)
            batch.clear()

        now = utcnow()
        for contact in self.storage.contacts.in_audience(store_id, kind, value):
            send = self._send(store_id, contact["customer_id"],
                              f"bulk:{bulk_id}:{contact['customer_id']}", due, bulk=job)
            batch.append({**send, "status": "scheduled", "attempts": [], "created_at": now})
            total += 1
            if len(batch) >= 500:
                flush()
                if progress:
                    progress(total)
        flush()
        self.storage.bulk_jobs.scheduled(store_id, bulk_id, total)
        return self.bulk_status(store_id, bulk_id)

    @staticmethod
    def _audience(audience: Any) -> tuple[str, Any]:
        """A bulk send's audience checked: its kind and value."""
        if not isinstance(audience, dict) or len(audience) != 1:
            raise ValidationError("audience must be one of segment, saved_segment, group, tag "
                                  "or customer_ids",
                                  {"fields": {"audience": ["invalid"]}})
        (kind, value), = audience.items()
        if kind in ("segment", "group", "tag") and isinstance(value, str):
            return kind, value
        if kind == "saved_segment" and isinstance(value, str) and wf.SEGMENT_ID.match(value):
            return kind, value
        if kind == "customer_ids" and isinstance(value, list) and value \
                and all(isinstance(v, str) for v in value):
            return kind, value
        raise ValidationError(f"audience {kind!r} is not one of segment, saved_segment, "
                              "group, tag, customer_ids (with a value)", {"fields": {"audience": ["invalid"]}})

    def _when(self, when: str | None) -> datetime:
        if when in (None, "", "now"):
            return self.clock()
        return parse_aware("when", when, "'now' or an ISO-8601 time with its offset")

    def bulk_status(self, store_id: str, bulk_id: str) -> dict:
        job = self.storage.bulk_jobs.get(store_id, bulk_id)
        if job is None:
            raise NotFound(f"no bulk send {bulk_id} in store {store_id}")
        counts = self.storage.sends.statuses_of_bulk(store_id, bulk_id)
        total = job.get("total", sum(counts.values()))
        done = sum(n for s, n in counts.items() if s not in ("scheduled", "sending"))
        state = job.get("state")
        if state == "scheduled" and done >= total:
            state = "completed"
            self.storage.bulk_jobs.completed(store_id, bulk_id, utcnow())
        return {"bulk_id": bulk_id, "state": state, "template": job["template"],
                "channel": job["channel"], "purpose": job["purpose"], "total": total,
                "done": done, "by_status": counts}

    # -- GDPR -------------------------------------------------------------------------------------
    def erase(self, store_id: str, customer_ids: Iterable[str], request_id: str) -> dict:
        """The contact becomes a marker holding nothing; the send log keeps each message's
        facts (when, which template, what happened) without address, number or subject, and
        nothing scheduled for the person goes out; their merges' receipts keep only ids and
        state."""
        ids = sorted(set(customer_ids))
        contacts = self.storage.contacts
        for customer_id in ids:
            held = contacts.stored(store_id, customer_id)
            if held is not None and held.get("status") == ERASED:
                continue
            contacts.mark_erased(store_id, customer_id, held, self.clock(), request_id)
        sends = self.storage.sends.erase_for(store_id, ids)
        # Merge receipts named the sends a merge moved or cancelled.
        self.storage.merges.forget(store_id, ids)
        return {"contacts": contacts.count_erased(store_id, ids), "sends": sends}


def _template_fits(workflow: dict, template: dict) -> None:
    """A workflow's template may use a coupon only if the workflow attaches one, and a
    reward's or points' facts only if its trigger brings them: else every send would fail."""
    used = tpl.variables_used(template)
    brings = {tpl.TRIGGER_VARIABLES.get(workflow["trigger"].get("event"))}
    if workflow.get("coupon"):
        brings.add("coupon")
    errors = {}
    if "coupon" in used and "coupon" not in brings:
        errors["coupon"] = [f"template {template['slug']} uses coupon: workflow "
                            f"{workflow.get('workflow_id') or workflow['name']} attaches none"]
    for name in sorted(used & {"reward", "points"} - brings):
        errors.setdefault("template", []).append(
            f"{template['slug']} uses {name}, which only a {name} event's trigger brings "
            f"(workflow {workflow.get('workflow_id') or workflow['name']})")
    if errors:
        summary = "; ".join(f"{k}: {' '.join(v)}" for k, v in sorted(errors.items()))
        raise ValidationError(f"template and workflow do not fit: {summary}", {"fields": errors})


def _is_birthday(birthday: str | None, today) -> bool:
    """A birthday is MM-DD or YYYY-MM-DD; 29 February is celebrated on 28 February in other
    years."""
    if not isinstance(birthday, str):
        return False
    parts = birthday.strip().split("-")[-2:]
    try:
        month, day = int(parts[0]), int(parts[1])
    except (ValueError, IndexError):
        return False
    if (month, day) == (2, 29):
        import calendar

        if not calendar.isleap(today.year):
            return (today.month, today.day) == (2, 28)
    return (today.month, today.day) == (month, day)
