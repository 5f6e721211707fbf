"""notifications' nameko entrypoints. Thin: events go to `Notifier`, due sends to the
background `Sender` (background.py), Twilio's callbacks to `twilio_hooks`, the links in
messages to `PreferenceDoor`; everything is built once in bootstrap.py."""
from __future__ import annotations

import logging

import eventlet
from nameko.rpc import RpcProxy, rpc
from pymongo.errors import PyMongoError

from services.notifications import channel_health, email_reports, twilio_hooks
from services.notifications import links as ln
from services.notifications import views
from services.notifications.audience import require_audience, require_customer
from services.notifications.background import run_date_rules, send_due
from services.notifications.bootstrap import build
from services.notifications.erasure import erase
from services.notifications.notifier import Notifier
from services.notifications.preference_door import Answer, PreferenceDoor
from services.notifications.repository import NotificationsStorage
from services.notifications.schemas import send_log_limit, writable
from services.notifications.suppression import list_request
from services.notifications.trigger_gate import trigger_only_batches
from shared.customers import CustomerCheck
from shared.dependencies import OutboxRelayProvider, Settings, WorkerLogContext
from shared.errors import EXPECTED_ERRORS, Unavailable
from shared.health import HealthEndpoints, json_response
from shared.messaging.batches import batch_event_handler
from shared.messaging.handlers import event_handler
from shared.mongo import MongoStorage
from shared.periodic import MINUTES, PeriodicTasks, Task
from shared.service_rpc import DataOwnerRpc
from shared.timers import ConfiguredTimer
from shared.web import http
from shared.times import utcnow

log = logging.getLogger(__name__)


def projection_batches(source_service: str, event_type: str):
    """A projection event's batch entrypoint: no claims (the writes compare facts' times and
    sends have natural keys), its size and wait under notifications' own settings."""
    return batch_event_handler(source_service, event_type, claims=False,
                               size_setting="NOTIFY_PROJECTION_BATCH_SIZE",
                               wait_setting="NOTIFY_PROJECTION_BATCH_WAIT_MS")


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

    def _check(self) -> CustomerCheck:
        return self.app.customer_check(self.customer_sync)

    def _apply(self, event) -> None:
        notifier = self._notifier()
        scheduled = notifier.apply(event)
        self.outbox.notify(notifier.touched)  # a consent held for confirmation, announced
        if scheduled or notifier.touched:
            self.background.wake("send")  # a workflow without delay should not wait for the poll

    def _apply_all(self, events) -> None:
        notifier = self._notifier()
        scheduled = notifier.apply_all(events)
        self.outbox.notify(notifier.touched)
        if scheduled or notifier.touched:
            self.background.wake("send")

    # -- events in: the projection, and the triggers ----------------------------------------------
    # No claims (shared/messaging/handlers.py): the projection is written only over older
    # facts (a time stamp per fact), an order is recorded once, and a triggered send is keyed
    # by workflow, customer and event, so a duplicate changes and schedules nothing. Two
    # database writes per event fewer, on the service that consumes the most events.
    # The projection's busiest events come in batches: one read and one bulk write of the
    # contacts per batch (Notifier.apply_all, docs/services/notifications.md).
    @projection_batches("customer_sync", "customer.created")
    def on_customer_created(self, events):
        self._apply_all(events)

    @projection_batches("customer_sync", "customer.updated")
    def on_customer_updated(self, events):
        self._apply_all(events)

    @event_handler("customer_sync", "customer.deleted", claims=False)
    def on_customer_deleted(self, event):
        self._apply(event)

    @event_handler("customer_sync", "customer.merged")
    def on_customer_merged(self, event):
        self.app.merges.merge(event)

    @event_handler("customer_sync", "customer.unmerged")
    def on_customer_unmerged(self, event):
        self.app.merges.unmerge(event)

    @projection_batches("customer_sync", "order.placed")
    def on_order_placed(self, events):
        self._apply_all(events)

    # Only a trigger: acknowledged unread while no workflow of any store uses it.
    @trigger_only_batches("customer_sync", "order.updated", claims=False,
                          size_setting="NOTIFY_PROJECTION_BATCH_SIZE",
                          wait_setting="NOTIFY_PROJECTION_BATCH_WAIT_MS")
    def on_order_updated(self, events):
        self._apply_all(events)

    @projection_batches("segmentation", "customer.tagged")
    def on_tagged(self, events):
        self._apply_all(events)

    @projection_batches("segmentation", "customer.untagged")
    def on_untagged(self, events):
        self._apply_all(events)

    @projection_batches("segmentation", "customer.segment_changed")
    def on_segment_changed(self, events):
        self._apply_all(events)

    @projection_batches("segmentation", "customer.group_joined")
    def on_group_joined(self, events):
        self._apply_all(events)

    @projection_batches("segmentation", "customer.group_left")
    def on_group_left(self, events):
        self._apply_all(events)

    @projection_batches("segmentation", "customer.saved_segment_entered")
    def on_saved_segment_entered(self, events):
        self._apply_all(events)

    @projection_batches("segmentation", "customer.saved_segment_left")
    def on_saved_segment_left(self, events):
        self._apply_all(events)

    @projection_batches("loyalty", "loyalty.points_changed")
    def on_points_changed(self, events):
        self._apply_all(events)

    @projection_batches("loyalty", "loyalty.tier_changed")
    def on_tier_changed(self, events):
        self._apply_all(events)

    @projection_batches("loyalty", "loyalty.reward_issued")
    def on_reward_issued(self, events):
        self._apply_all(events)

    @projection_batches("loyalty", "loyalty.reward_expired")
    def on_reward_expired(self, events):
        self._apply_all(events)

    @projection_batches("loyalty", "loyalty.reward_returned")
    def on_reward_returned(self, events):
        self._apply_all(events)

    @projection_batches("loyalty", "loyalty.points_expiring")
    def on_points_expiring(self, events):
        self._apply_all(events)

    @event_handler("gdpr", "consent.changed", claims=False)
    def on_consent_changed(self, event):
        self._apply(event)

    # -- GDPR: DataOwnerRpc handles the request and the export; these say what is held ------
    def erase_person(self, store_id: str, customer_ids: list[str], request_id: str,
                     email: str | None) -> dict:
        """Contacts by customer id; their addresses are read from the contacts (the email
        is not needed)."""
        return erase(self.storage, self._notifier(), self.app.suppressions,
                     self.app.sender.settings.lease_seconds, store_id, customer_ids, request_id)

    def export_person(self, store_id: str, customer_id: str) -> dict | None:
        return views.export(self.storage, self.app.suppressions, store_id, customer_id)

    @ConfiguredTimer.decorator(setting="NOTIFY_COUPON_WITHDRAW_SECONDS")
    def coupon_withdrawal_step(self) -> None:
        """Erased customers' message coupons deleted at the shop, retried while it is away."""
        self._run_coupon_withdrawals()

    def _run_coupon_withdrawals(self) -> dict:
        return self.storage.coupon_withdrawals.run_due(
            self.app.shop_coupons.delete_coupon, utcnow(),
            self.app.withdrawal_policy)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def run_coupon_withdrawals(self) -> dict:
        """Run the coupon withdrawal step now (operators; tests): what it did, what waits."""
        return self._run_coupon_withdrawals()

    # -- Twilio's callbacks -----------------------------------------------------------------------
    @http("POST", twilio_hooks.STATUS_PATH)
    def twilio_status(self, request):
        status, body = twilio_hooks.status_callback(self.storage, self.app.twilio, request)
        return json_response(status, body)

    @http("POST", twilio_hooks.INBOUND_PATH)
    def twilio_inbound(self, request):
        status, body, touched = twilio_hooks.inbound(self.storage, self.app.twilio, request)
        self.outbox.notify(touched)
        return json_response(status, body)

    # -- bounces and complaints reported later ---------------------------------------------------
    @http("POST", email_reports.REPORT_PATH)
    def email_report(self, request):
        status, body = email_reports.answer(
            self.app.suppressions, self.storage.knows_store,
            self.settings.get("EMAIL_REPORT_SECRET"), request, utcnow())
        return json_response(status, body)

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
        return self._notifier().save_template(store_id, writable(template))

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def list_templates(self, store_id: str) -> list:
        return views.templates(self._notifier(), store_id)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def get_template(self, store_id: str, slug: str) -> dict:
        return views.template(self._notifier(), store_id, slug)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def delete_template(self, store_id: str, slug: str) -> dict:
        return self._notifier().delete_template(store_id, slug)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def preview(self, store_id: str, template, customer_id: str | None = None) -> dict:
        """Render a stored template (by slug) or a draft (an object) with a customer's data,
        or with sample data when no customer is named."""
        return views.preview(self.storage, self._notifier(), store_id, template, customer_id)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def save_workflow(self, store_id: str, workflow: dict) -> dict:
        return self._notifier().save_workflow(store_id, writable(workflow))

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def list_workflows(self, store_id: str) -> list:
        return views.workflows(self._notifier(), store_id)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def delete_workflow(self, store_id: str, workflow_id: str) -> dict:
        return self._notifier().delete_workflow(store_id, workflow_id)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def bulk_send(self, store_id: str, audience: dict, template: str, when: str | None = None,
                  purpose: str = "marketing", bulk_id: str | None = None) -> dict:
        """A message to a segment, group, tag or list of customers, now or at `when`;
        consent, caps and quiet hours apply to each. Progress: `bulk_status`."""
        require_audience(self._check(), self.storage, store_id, audience)
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
        send_log_limit(limit)  # refused before customer_sync is asked
        customer_id = require_customer(self._check(), self.storage, store_id, customer_id)
        return views.send_log(self.storage, store_id, customer_id, limit)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def list_sends(self, store_id: str, filters: dict | None = None,
                   page: dict | None = None) -> dict:
        """The store's send log, newest first: filters channel, status, template, customer_id,
        workflow_id, held_reason (each an exact value); page = {"size": 50, "cursor": null}. Answers
        {"items", "next_cursor"}."""
        return views.sends(self.storage, store_id, filters, page)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def list_suppressions(self, store_id: str, filters: dict | None = None,
                          page: dict | None = None) -> dict:
        """The store's suppressed addresses (active only unless filters.include_lifted), each
        with its kinds, what it blocks and its history; filters channel, address (exact);
        page = {"size": 100, "cursor": null}. Answers {"items", "next_cursor"}."""
        return self.app.suppressions.page(store_id, *list_request(filters, page))

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def lift_suppression(self, store_id: str, channel: str, address: str, reason: str,
                         actor: str) -> dict:
        """An operator lets an address be sent to again, saying why (kept in its history);
        NotFound when it is not suppressed."""
        return self.app.suppressions.lift(store_id, channel, address, reason,
                                          str(actor or "unknown")[:200],
                                          utcnow())

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def run_date_rules(self) -> dict:
        return {"scheduled": self.background.run_now("date-rules")}
