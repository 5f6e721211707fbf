"""notifications' nameko entrypoints. Thin: events go to `Notifier`, due sends to the
background `Sender` (background.py), Twilio's callbacks to `twilio_hooks`, the links in
messages to `PreferenceDoor`; everything is built once in bootstrap.py."""
from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

import eventlet
from nameko.rpc import RpcProxy, rpc
from pymongo.errors import PyMongoError

from services.notifications import channel_health, email_reports, twilio_hooks
from services.notifications import links as ln
from services.notifications.background import run_date_rules, send_due
from services.notifications.bootstrap import build
from services.notifications.notifier import Notifier
from services.notifications.preference_door import Answer, PreferenceDoor, Unavailable
from services.notifications.repository import ERASED, NotificationsStorage
from services.notifications.sender import coupon_meta
from services.notifications.sender import context as template_context
from services.notifications.suppression import Suppressions, list_request
from services.notifications.templates import (SAMPLE_CONTEXT, SAMPLE_EXTRAS, RenderFailed, render,
                                               validate_template)
from shared.customers import not_found, valid_customer_id, valid_customer_ids
from shared.dependencies import OutboxRelayProvider, Settings, WorkerLogContext
from shared.erasure import confirm_erasure
from shared.errors import EXPECTED_ERRORS, NotFound, Unavailable, ValidationError
from shared.health import HealthEndpoints, json_response
from shared.messaging.handlers import event_handler
from shared.mongo import MongoStorage
from shared.periodic import MINUTES, PeriodicTasks, Task
from shared.service_rpc import DataOwnerRpc
from shared.timers import ConfiguredTimer
from shared.web import http

log = logging.getLogger(__name__)
SEND_FILTERS = ("channel", "status", "template", "customer_id", "workflow_id", "held_reason")


def _send_task(uses) -> dict:
    return send_due(uses.app.sender, uses.outbox.notify)


def _date_rules_task(uses) -> int:
    return run_date_rules(uses.app.storage, lambda: uses.background.wake("send"))


class NotificationsService(HealthEndpoints, DataOwnerRpc):
    name = "notifications"

    app = MongoStorage(build)
    outbox = OutboxRelayProvider(lambda app: app.outbox_collections())
    log_context = WorkerLogContext()
    settings = Settings()
    # Sends what is due every NOTIFY_POLL_SECONDS (at once while more is due, sooner when
    # woken); checks the date rules every NOTIFY_DATE_RULES_MINUTES.
    background = PeriodicTasks(
        Task("send", _send_task, setting="NOTIFY_POLL_SECONDS", wait_first=False,
             again_at_once=True, at_stop=lambda uses: uses.app.sender.email.close()),
        Task("date-rules", _date_rules_task, setting="NOTIFY_DATE_RULES_MINUTES", unit=MINUTES),
        uses=("app", "outbox", "background"))
    customer_sync = RpcProxy("customer_sync")
    gdpr = RpcProxy("gdpr")

    @property
    def storage(self) -> NotificationsStorage:
        """The repositories, where DataOwnerRpc looks for the database."""
        return self.app.storage

    def _notifier(self) -> Notifier:
        return self.app.notifier()

    def _existing(self, store_id: str, customer_ids: list[str]) -> set[str]:
        """Which of the ids are customers of the store: a contact held here (made from
        customer_sync's events) says so; customer_sync answers for anyone not heard of yet."""
        check = self.app.customer_check(self.customer_sync)

        def held_here(customer_id: str) -> bool:
            contact = self.storage.contacts.get(store_id, customer_id)
            return contact is not None and contact.get("status") != ERASED

        return check.existing(store_id, customer_ids, held_here)

    def _audience_customers_exist(self, store_id: str, audience: object) -> None:
        """A bulk send to a list of customers names only the store's customers: an unknown id
        is refused, naming it, before anything is scheduled (never silently left out)."""
        if not isinstance(audience, dict) or "customer_ids" not in audience:
            return
        ids = valid_customer_ids(audience["customer_ids"], "audience.customer_ids")
        existing = self._existing(store_id, ids)
        missing = [c for c in ids if c not in existing]
        if missing:
            shown = ", ".join(missing[:10]) + (" and more" if len(missing) > 10 else "")
            raise NotFound(f"no customers {shown} in store {store_id}: nothing was sent",
                           {"fields": {"audience.customer_ids": ["not found"]},
                            "customer_ids": missing})

    def _apply(self, event) -> None:
        notifier = self._notifier()
        scheduled = notifier.apply(event)
        self.outbox.notify(notifier.touched)  # a consent held for confirmation, announced
        if scheduled or notifier.touched:
            self.background.wake("send")  # a workflow without delay should not wait for the poll

    # -- events in: the projection, and the triggers ----------------------------------------------
    # No claims (shared/messaging/handlers.py): the projection is written only over older
    # facts (a time stamp per fact), an order is recorded once, and a triggered send is keyed
    # by workflow, customer and event, so a duplicate changes and schedules nothing. Two
    # database writes per event fewer, on the service that consumes the most events.
    @event_handler("customer_sync", "customer.created", claims=False)
    def on_customer_created(self, event):
        self._apply(event)

    @event_handler("customer_sync", "customer.updated", claims=False)
    def on_customer_updated(self, event):
        self._apply(event)

    @event_handler("customer_sync", "customer.deleted", claims=False)
    def on_customer_deleted(self, event):
        self._apply(event)

    @event_handler("customer_sync", "order.placed", claims=False)
    def on_order_placed(self, event):
        self._apply(event)

    @event_handler("customer_sync", "order.updated", claims=False)
    def on_order_updated(self, event):
        self._apply(event)

    @event_handler("segmentation", "customer.tagged", claims=False)
    def on_tagged(self, event):
        self._apply(event)

    @event_handler("segmentation", "customer.untagged", claims=False)
    def on_untagged(self, event):
        self._apply(event)

    @event_handler("segmentation", "customer.segment_changed", claims=False)
    def on_segment_changed(self, event):
        self._apply(event)

    @event_handler("segmentation", "customer.group_joined", claims=False)
    def on_group_joined(self, event):
        self._apply(event)

    @event_handler("segmentation", "customer.group_left", claims=False)
    def on_group_left(self, event):
        self._apply(event)

    @event_handler("segmentation", "customer.saved_segment_entered", claims=False)
    def on_saved_segment_entered(self, event):
        self._apply(event)

    @event_handler("segmentation", "customer.saved_segment_left", claims=False)
    def on_saved_segment_left(self, event):
        self._apply(event)

    @event_handler("loyalty", "loyalty.points_changed", claims=False)
    def on_points_changed(self, event):
        self._apply(event)

    @event_handler("loyalty", "loyalty.tier_changed", claims=False)
    def on_tier_changed(self, event):
        self._apply(event)

    @event_handler("loyalty", "loyalty.reward_issued", claims=False)
    def on_reward_issued(self, event):
        self._apply(event)

    @event_handler("loyalty", "loyalty.reward_expired", claims=False)
    def on_reward_expired(self, event):
        self._apply(event)

    @event_handler("loyalty", "loyalty.reward_returned", claims=False)
    def on_reward_returned(self, event):
        self._apply(event)

    @event_handler("loyalty", "loyalty.points_expiring", claims=False)
    def on_points_expiring(self, event):
        self._apply(event)

    @event_handler("gdpr", "consent.changed", claims=False)
    def on_consent_changed(self, event):
        self._apply(event)

    @event_handler("gdpr", "gdpr.erasure_requested")
    def on_erasure_requested(self, event):
        data = event.data
        receipt = confirm_erasure(
            self.name, self.storage.erasures, event,
            lambda: self._erase(event.store_id, data["customer_ids"], data["request_id"]),
            self._drop_parked)
        self.outbox.notify([(self.storage.erasures.collection.name, receipt)])

    def _erase(self, store_id: str, customer_ids: list[str], request_id: str) -> dict:
        """The person's suppressions lose their address in clear first (it is read from the
        contact, which the erasure empties), then the contact and the send log are erased."""
        addresses = []
        for customer_id in customer_ids:
            contact = self.storage.contacts.get(store_id, customer_id) or {}
            addresses += [("email", contact.get("email")), ("sms", contact.get("phone"))]
        forgotten = self._suppressions().forget_addresses(store_id, addresses)
        withdrawals = self._owe_coupon_withdrawals(store_id, customer_ids)
        return {**self._notifier().erase(store_id, customer_ids, request_id),
                "suppressions": forgotten, "coupons_to_withdraw": withdrawals}

    def _owe_coupon_withdrawals(self, store_id: str, customer_ids: list[str]) -> int:
        """The person's message coupons carry their email at the shop: each one not already
        taken back is owed a deletion (shared.coupon_withdrawals), before the send log
        forgets them. A send being sent may still be asking for its coupon: its deletion
        waits for the send's lease."""
        now = datetime.now(timezone.utc)
        lease = timedelta(seconds=self.settings.float("NOTIFY_LEASE_SECONDS"))
        owed = 0
        for send in self.storage.sends.collection.find(
                {"store_id": store_id, "customer_id": {"$in": list(customer_ids)},
                 "coupon.code": {"$type": "string"}, "coupon.withdrawn": {"$ne": True}},
                {"store_id": 1, "coupon": 1, "status": 1}):
            not_before = now + lease if send.get("status") == "sending" else now
            self.storage.coupon_withdrawals.add(store_id, send["coupon"]["code"],
                                                coupon_meta(send), not_before, now)
            owed += 1
        return owed

    @ConfiguredTimer.decorator(setting="NOTIFY_COUPON_WITHDRAW_SECONDS")
    def coupon_withdrawal_step(self) -> None:
        """Erased customers' message coupons deleted at the shop, retried while it is away."""
        self._run_coupon_withdrawals()

    def _run_coupon_withdrawals(self) -> dict:
        return self.storage.coupon_withdrawals.run_due(
            self.app.shop_coupons.delete_coupon, datetime.now(timezone.utc),
            self.app.withdrawal_policy)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def run_coupon_withdrawals(self) -> dict:
        """Run the coupon withdrawal step now (operators; tests): what it did, what waits."""
        return self._run_coupon_withdrawals()

    def _suppressions(self) -> Suppressions:
        return self.app.suppressions


    # -- Twilio's callbacks -----------------------------------------------------------------------
    @http("POST", twilio_hooks.STATUS_PATH)
    def twilio_status(self, request):
        status, body = twilio_hooks.status_callback(self.storage, self._twilio_config(), request)
        return json_response(status, body)

    @http("POST", twilio_hooks.INBOUND_PATH)
    def twilio_inbound(self, request):
        status, body, touched = twilio_hooks.inbound(self.storage, self._twilio_config(), request)
        self.outbox.notify(touched)
        return json_response(status, body)

    # -- bounces and complaints reported later ---------------------------------------------------
    @http("POST", email_reports.REPORT_PATH)
    def email_report(self, request):
        status, body = email_reports.answer(
            self._suppressions(), self._store_known, self.settings.get("EMAIL_REPORT_SECRET"),
            request, datetime.now(timezone.utc))
        return json_response(status, body)

    def _store_known(self, store_id: str) -> bool:
        """A store notifications has heard of: its settings, or any customer of it."""
        return (self.storage.settings.find_one({"_id": store_id}, {"_id": 1}) is not None
                or self.storage.contacts.collection.find_one({"store_id": store_id},
                                                             {"_id": 1}) is not None)

    # -- the links in messages: unsubscribe, preferences, email confirmation --------------------
    def _door(self) -> PreferenceDoor:
        notifier = self._notifier()
        return PreferenceDoor(
            self.storage, self.app.signer, lambda store_id: notifier.settings(store_id).name,
            self._file_erasure, notifier.clock,
            max_body_bytes=self.settings.int("NOTIFY_UNSUBSCRIBE_MAX_BODY_BYTES"))

    def _answer(self, answer: Answer):
        self.outbox.notify(answer.touched)  # consent changes are published now, not at a sweep
        return answer.response

    def _file_erasure(self, contact: dict) -> str:
        """gdpr's erasure request for the person, received and waiting for an operator to
        verify who asked; Unavailable if gdpr does not answer in time (nothing filed)."""
        timeout = self.settings.float("CUSTOMER_CHECK_TIMEOUT_SECONDS")
        try:
            reply = self.gdpr.submit_request.call_async(
                contact["store_id"], "erasure", contact.get("email") or "",
                {"origin": "preference_page", "customer_id": contact["customer_id"]},
                "customer (preference page)")
            with eventlet.Timeout(timeout):
                return reply.result()["request_id"]
        except eventlet.Timeout:
            raise Unavailable(f"gdpr did not answer in {timeout:g}s") from None
        except Exception as exc:  # gdpr down, or it refused: nothing was filed
            log.warning("an erasure request from the preference page was not filed: %s",
                        type(exc).__name__, extra={"store_id": contact["store_id"]})
            raise Unavailable(type(exc).__name__) from None

    @http("GET", ln.STYLE_PATH)
    def page_style(self, request):
        return self._door().stylesheet()

    @http("GET", ln.UNSUBSCRIBE_PATH)
    def unsubscribe_page(self, request, token):
        return self._answer(self._door().unsubscribe_page(token))

    @http("POST", ln.UNSUBSCRIBE_PATH)
    def unsubscribe(self, request, token):
        return self._answer(self._door().unsubscribe(request, token))

    @http("GET", ln.PREFERENCES_PATH)
    def preferences_page(self, request, token):
        return self._answer(self._door().preferences_page(token))

    @http("POST", ln.PREFERENCES_PATH)
    def save_preferences(self, request, token):
        return self._answer(self._door().save_preferences(request, token))

    @http("POST", ln.FORGET_PATH)
    def forget(self, request, token):
        return self._answer(self._door().forget(request, token))

    @http("GET", ln.CONFIRM_PATH)
    def confirm_page(self, request, token):
        return self._answer(self._door().confirm_page(token))

    @http("POST", ln.CONFIRM_PATH)
    def confirm(self, request, token):
        return self._answer(self._door().confirm(request, token))

    def _twilio_config(self) -> twilio_hooks.HookConfig:
        return twilio_hooks.HookConfig(auth_token=self.settings.get("TWILIO_AUTH_TOKEN"),
                                       public_url=self.settings.get("NOTIFY_PUBLIC_URL"))

    # -- RPC --------------------------------------------------------------------------------------
    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def health(self) -> dict:
        """Readiness, and each channel's run of failures: `companion health` names a channel
        that keeps failing (channel_health.py), as it names parked messages."""
        answer = DataOwnerRpc.health(self)
        try:
            answer.update(channel_health.report(self.storage.channel_state.all()))
        except PyMongoError:
            answer["channels"] = None  # the database check already says it is down
        return answer


    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def save_store_settings(self, store_id: str, settings: dict) -> dict:
        """Store name and URL (for templates), time zone, SMS quiet hours, weekly marketing
        cap, From address, unsubscribe mailto, SMS opt-out text, email double opt-in."""
        return self._notifier().save_settings(store_id, settings).to_dict()

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def get_store_settings(self, store_id: str) -> dict:
        return self._notifier().settings(store_id).to_dict()

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def save_template(self, store_id: str, template: dict) -> dict:
        """Refused with the part and line of a syntax error or an unknown variable."""
        return self._notifier().save_template(store_id, _writable(template))

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def list_templates(self, store_id: str) -> list:
        return [_read_view(t) for t in sorted(self._notifier().templates(store_id).values(),
                                              key=lambda t: t["slug"])]

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def get_template(self, store_id: str, slug: str) -> dict:
        template = self._notifier().templates(store_id).get(slug)
        if template is None:
            raise NotFound(f"no template {slug} in store {store_id}")
        return _read_view(template)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def delete_template(self, store_id: str, slug: str) -> dict:
        return self._notifier().delete_template(store_id, slug)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def preview(self, store_id: str, template, customer_id: str | None = None) -> dict:
        """Render a stored template (by slug) or a draft (an object) with a customer's data,
        or with sample data when no customer is named."""
        notifier = self._notifier()
        if isinstance(template, str):
            found = notifier.templates(store_id).get(template)
            if found is None:
                raise NotFound(f"no template {template} in store {store_id}")
            template = found
        else:
            template = validate_template(template, notifier.render_limits)
        if customer_id:
            contact = self.storage.contacts.get(store_id, customer_id)
            if contact is None or contact.get("status") == ERASED:
                raise NotFound(f"no customer {customer_id} in store {store_id}")
            # The customer's own data, with sample coupon and loyalty facts: a preview makes
            # no coupon at the shop.
            context = {**SAMPLE_EXTRAS, **template_context(contact, notifier.settings(store_id))}
        else:
            context = SAMPLE_CONTEXT
        try:
            rendered = render(template, context, notifier.render_limits)
        except RenderFailed as exc:  # this customer's data cannot fill it, or makes it too big
            raise ValidationError(f"template does not render: {exc}",
                                  {"fields": {"template": [str(exc)], exc.part: [exc.reason]}}
                                  ) from None
        return {"subject": rendered.subject, "html": rendered.html, "text": rendered.text}

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def save_workflow(self, store_id: str, workflow: dict) -> dict:
        return self._notifier().save_workflow(store_id, _writable(workflow))

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def list_workflows(self, store_id: str) -> list:
        return [_read_view(w) for w in sorted(self._notifier().workflows(store_id),
                                              key=lambda w: w["workflow_id"])]

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def delete_workflow(self, store_id: str, workflow_id: str) -> dict:
        return self._notifier().delete_workflow(store_id, workflow_id)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def bulk_send(self, store_id: str, audience: dict, template: str, when: str | None = None,
                  purpose: str = "marketing", bulk_id: str | None = None) -> dict:
        """A message to a segment, group, tag or list of customers, now or at `when`;
        consent, caps and quiet hours apply to each. Progress: `bulk_status`."""
        self._audience_customers_exist(store_id, audience)
        status = self._notifier().bulk_send(store_id, audience, template, when, purpose, bulk_id)
        self.background.wake("send")
        return status

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def bulk_status(self, store_id: str, bulk_id: str) -> dict:
        return self._notifier().bulk_status(store_id, bulk_id)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def send_log(self, store_id: str, customer_id: str, limit: int = 100) -> list:
        """Every message to the customer, newest first, with each attempt and its outcome;
        NotFound for anyone who is not a customer of the store (not an empty log)."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1000:
            raise ValidationError("limit must be 1-1000", {"fields": {"limit": ["range"]}})
        customer_id = valid_customer_id(customer_id)
        if not self._existing(store_id, [customer_id]):
            raise not_found(store_id, customer_id)
        docs = self.storage.sends.collection.find(
            {"store_id": store_id, "customer_id": customer_id}, {"outbox": 0, "owner": 0}
        ).sort("created_at", -1).limit(limit)
        return [_json(doc) for doc in docs]

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def list_sends(self, store_id: str, filters: dict | None = None,
                   page: dict | None = None) -> dict:
        """The store's send log, newest first: filters channel, status, template, customer_id,
        workflow_id, held_reason (each an exact value); page = {"size": 50, "cursor": null}. Answers
        {"items", "next_cursor"}."""
        filters = dict(filters or {})
        page = page or {}
        unknown = sorted(set(filters) - set(SEND_FILTERS))
        bad = unknown + [k for k, v in filters.items()
                         if k in SEND_FILTERS and not (isinstance(v, str) and 0 < len(v) <= 200)]
        if bad:
            raise ValidationError(f"filters {', '.join(bad)}: unknown or not a string",
                                  {"fields": {f"filters.{k}": ["invalid"] for k in bad}})
        size = page.get("size", 50)
        if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= 500:
            raise ValidationError("page.size must be 1-500", {"fields": {"page.size": ["range"]}})
        cursor = page.get("cursor")
        if cursor is not None and not isinstance(cursor, str):
            raise ValidationError("page.cursor must be a string",
                                  {"fields": {"page.cursor": ["invalid"]}})
        docs, next_cursor = self.storage.sends.page(store_id, filters, size, cursor)
        return {"items": [_json(doc) for doc in docs], "next_cursor": next_cursor}

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def list_suppressions(self, store_id: str, filters: dict | None = None,
                          page: dict | None = None) -> dict:
        """The store's suppressed addresses (active only unless filters.include_lifted), each
        with its kinds, what it blocks and its history; filters channel, address (exact);
        page = {"size": 100, "cursor": null}. Answers {"items", "next_cursor"}."""
        return self._suppressions().page(store_id, *list_request(filters, page))

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def lift_suppression(self, store_id: str, channel: str, address: str, reason: str,
                         actor: str) -> dict:
        """An operator lets an address be sent to again, saying why (kept in its history);
        NotFound when it is not suppressed."""
        return self._suppressions().lift(store_id, channel, address, reason,
                                         str(actor or "unknown")[:200],
                                         datetime.now(timezone.utc))

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def run_date_rules(self) -> dict:
        return {"scheduled": self.background.run_now("date-rules")}

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def export_customer(self, store_id: str, customer_id: str) -> dict:
        """Everything notifications holds about one person (GDPR access and portability)."""
        contact = self.storage.contacts.get(store_id, customer_id)
        if contact is None or contact.get("status") == ERASED:
            raise NotFound(f"no customer {customer_id} in store {store_id}")
        return {"service": self.name, "contact": _json(contact),
                "send_log": self.send_log(store_id, customer_id, 1000),
                "suppressions": self._suppressions().of_addresses(
                    store_id, [("email", contact.get("email")), ("sms", contact.get("phone"))])}


def _json(value):
    """Stored documents as JSON-ready values (times as ISO-8601 UTC)."""
    if isinstance(value, dict):
        return {k: _json(v) for k, v in value.items() if k != "outbox"}
    if isinstance(value, list):
        return [_json(v) for v in value]
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).isoformat()
    return value


def _read_view(doc: dict) -> dict:
    """A template or workflow as RPC answers it: times as ISO-8601 UTC (docs/design.md)."""
    view = dict(doc)
    updated = view.get("updated_at")
    if isinstance(updated, datetime):
        if updated.tzinfo is None:
            updated = updated.replace(tzinfo=timezone.utc)
        view["updated_at"] = updated.isoformat()
    return view


def _writable(data):
    """What a caller saves, without the read-only `updated_at` it may have fetched along, so
    a template or workflow read and saved back unchanged is accepted."""
    if isinstance(data, dict) and "updated_at" in data:
        return {k: v for k, v in data.items() if k != "updated_at"}
    return data
