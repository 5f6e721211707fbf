"""customer_sync's nameko entrypoints. Thin: each one translates and calls the application
`bootstrap` built once."""
from __future__ import annotations

import time

from nameko.rpc import rpc
from pymongo.errors import PyMongoError
from werkzeug.exceptions import ClientDisconnected
from werkzeug.wrappers import Request, Response

from services.customer_sync.app_provider import AppProvider
from services.customer_sync.crm.timeline import record_foreign_events, timeline_page
from services.customer_sync.door.webhooks import WEBHOOK_HEADERS, WebhookAnswer
from services.customer_sync.privacy.erasure import document_owners
from services.customer_sync.privacy.erasure import shop_erasures as list_shop_erasures
from services.customer_sync.repository import CustomerSyncStorage
from services.customer_sync.schemas import require_text
from services.customer_sync.shop.backfill import run_view
from services.customer_sync.shop.reconcile import store_health
from services.customer_sync.workers import BackgroundJobs, InboxWorkers
from shared.dependencies import OutboxRelayProvider, Settings, WorkerLogContext
from shared.errors import EXPECTED_ERRORS, NotFound, ValidationError
from shared.health import HealthEndpoints, json_response
from shared.messaging.batches import batch_event_handler
from shared.periodic import PeriodicTasks, Task
from shared.logs import log_context
from shared.metrics import observe_webhook
from shared.personal_data import Owners
from shared.service_rpc import DataOwnerRpc, HealthRpc
from shared.web import http
from shared.times import parse_utc


def timeline_batches(source_service: str, event_type: str):
    """The batch entrypoint of another service's event that goes on customers' timelines."""
    return batch_event_handler(source_service, event_type, claims=False,
                               size_setting="CUSTOMER_TIMELINE_BATCH_SIZE",
                               wait_setting="CUSTOMER_TIMELINE_BATCH_WAIT_MS")


class CustomerSyncService(HealthEndpoints, DataOwnerRpc):
    name = "customer_sync"

    app = AppProvider(outbox="outbox")  # its `publish` notifies this relay
    outbox = OutboxRelayProvider(lambda app: app.outbox_collections())
    inbox_workers = InboxWorkers()
    jobs = BackgroundJobs()
    # Deliveries a restart, a retry delay or a full queue left unapplied, queued again once
    # the queue has drained; timeline entries a crash or another instance left owed, moved;
    # stores whose reconciliation is due, re-read from the shop (claimed, so one instance
    # runs each).
    background = PeriodicTasks(
        Task("inbox-sweep", lambda uses: uses.inbox_workers.sweep(uses.app.storage.inbox),
             setting="INBOX_SWEEP_SECONDS", again_at_once=True),
        Task("timeline-sweep", lambda uses: uses.app.timeline.sweep(),
             setting="TIMELINE_SWEEP_SECONDS", wait_first=False),
        Task("reconcile", lambda uses: uses.app.reconciler.run_due(),
             setting="RECONCILE_POLL_SECONDS", wait_first=False),
        # Customers written before match keys existed get theirs, a batch at a time.
        Task("match-keys", lambda uses: uses.app.duplicates.add_missing_keys(),
             setting="MATCH_KEYS_BATCH_SECONDS", wait_first=False, again_at_once=True),
        # Company and custom field work left to do: a company's or a field's deletion that
        # stopped short, customers joining companies by their email domain after matching was
        # turned on or a company got a domain, customers holding a company that is gone.
        Task("company-sweep", lambda uses: uses.app.company_sweep(),
             setting="COMPANY_SWEEP_SECONDS", wait_first=False, again_at_once=True),
        uses=("app", "inbox_workers"))
    log_context = WorkerLogContext()
    settings = Settings()

    @property
    def storage(self) -> CustomerSyncStorage:
        """The repositories, where DataOwnerRpc and the health checks look for the database."""
        return self.app.storage

    # -- WooCommerce ----------------------------------------------------------------------
    @http("POST", "/webhooks/woocommerce/<string:store_id>")
    def receive_webhook(self, request: Request, store_id: str) -> Response:
        started = time.perf_counter()
        limit = self.app.receiver.max_body_bytes
        self.inbox_workers.note_request()
        with log_context(store_id=store_id, service=self.name):
            if request.content_length is not None and request.content_length > limit:
                answer = WebhookAnswer(413, {"status": "body too large", "limit_bytes": limit})
            else:
                try:
                    body = request.stream.read(limit + 1)
                except ClientDisconnected:  # fewer bytes than Content-Length said (fuzzing)
                    body = None
                    answer = WebhookAnswer(400, {"status": "body shorter than Content-Length"})
                if body is not None:
                    headers = {name: request.headers.get(name) for name in WEBHOOK_HEADERS}
                    answer = self.app.receiver.receive(store_id, headers, body)
                    if answer.inbox_key is not None:
                        self.inbox_workers.submit(answer.inbox_key)
            response = json_response(answer.status, answer.body)
            # Unknown stores share one label: the path is the caller's to choose.
            observe_webhook(store_id if answer.store_known else "unknown", answer.outcome,
                            answer.status, time.perf_counter() - started)
            return response

    # -- health (GET /health/live and /health/ready come from HealthEndpoints) --------------
    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def health(self) -> dict:
        """Readiness, the webhook deliveries in quarantine per store, and where deliveries are
        applied: `companion health` reports quarantined ones as it reports parked messages,
        and a door whose appliers are all gone as a problem."""
        answer = HealthRpc.health(self)
        try:
            answer["quarantined"] = self.storage.inbox.quarantine_counts()
        except PyMongoError:
            answer["quarantined"] = None  # the database check already says it is down
        # Where deliveries are applied; with separate appliers, whether any is consuming.
        answer["inbox"] = inbox = self.inbox_workers.state()
        if inbox.get("appliers") == 0:
            answer["problems"] = ["no customer_sync_applier consumes the inbox queue: webhook "
                                  "deliveries are recorded but not applied"]
        return answer

    # -- webhook deliveries in quarantine ----------------------------------------------------
    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def list_quarantined(self, store_id: str, page: dict | None = None) -> dict:
        """Deliveries answered 200 that could not be applied, oldest first (no bodies)."""
        return self.app.quarantine.list(store_id, page)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def show_quarantined(self, store_id: str, quarantine_id: str) -> dict:
        return self.app.quarantine.show(store_id, quarantine_id)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def replay_quarantined(self, store_id: str, quarantine_ids: list | None = None,
                           replay_all: bool = False) -> dict:
        """Apply quarantined deliveries again once their cause is fixed (named, or all)."""
        answer, keys = self.app.quarantine.release(store_id, quarantine_ids, bool(replay_all))
        for key in keys:
            self.inbox_workers.submit(key)
        return answer

    def _document_owners(self) -> Owners:
        return document_owners(self.storage)

    # -- stores -----------------------------------------------------------------------------
    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def register_store(self, store: dict) -> dict:
        return self.app.stores.register(store)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def list_stores(self) -> list[dict]:
        return self.app.stores.list()

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def get_consent_capture(self, store_id: str) -> dict:
        """Which checkout meta keys and values mean consent, per purpose (privacy/consent_capture.py)."""
        return self.app.capture_settings.get(require_text(store_id, "store_id"))

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def set_consent_capture(self, store_id: str, settings: dict, actor: str) -> dict:
        """Replace the store's consent capture rules; orders already held are captured when
        the next backfill or reconciliation reads them."""
        return self.app.capture_settings.save(require_text(store_id, "store_id"), settings,
                                              require_text(actor, "actor"), self.app.clock())

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def register_webhooks(self, store_id: str, delivery_url: str) -> dict:
        """Create or re-activate, in the shop, the webhooks of every topic we need, signed
        with the store's secret; idempotent (shop/webhook_setup.py)."""
        return self.app.webhook_setup.register(store_id, delivery_url)

    # -- reads for internal systems ---------------------------------------------------------
    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def get_customer(self, store_id: str, customer_id: str) -> dict:
        return self.app.queries.get_customer(store_id, customer_id)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def known_customers(self, store_id: str, customer_ids: list) -> list[str]:
        """Which of the ids are the store's customers (shared/customers.py asks this)."""
        return self.app.queries.known_customers(store_id, customer_ids)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def find_customer(self, store_id: str, email: str) -> dict:
        return self.app.queries.find_customer(store_id, email)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def list_customers(self, store_id: str, filters: dict | None = None,
                       page: dict | None = None) -> dict:
        return self.app.queries.list_customers(store_id, filters, page)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def find_duplicates(self, store_id: str, cursor: str | None = None, limit: int = 50,
                        match: str | None = None) -> dict:
        """Groups of live customers who may be one person, scored, paged by `next_cursor`."""
        return self.app.duplicates.find(store_id, cursor, limit, match)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def merge_customers(self, store_id: str, primary_id: str, merged_ids: list,
                        field_choices: dict | None, actor: str) -> dict:
        """Merge records into the primary (docs/merging.md); answers the merge record."""
        return self.app.answer(self.app.merges.merge_customers(
            store_id, primary_id, merged_ids, field_choices, actor))

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def unmerge_customers(self, store_id: str, merge_id: str, actor: str) -> dict:
        """Undo a merge; answers what went where. Conflict when it was undone already."""
        return self.app.answer(self.app.merges.unmerge(store_id, merge_id, actor))

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def list_merges(self, store_id: str, customer_id: str | None = None,
                    page: dict | None = None) -> dict:
        return self.app.merges.list(store_id, customer_id, page)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def get_merge(self, store_id: str, merge_id: str) -> dict:
        return self.app.merges.get(store_id, merge_id)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def list_orders(self, store_id: str, customer_id: str, page: dict | None = None) -> dict:
        return self.app.queries.list_orders(store_id, customer_id, page)

    # -- GDPR (the erasure handler and export_customer come from DataOwnerRpc) ---------------
    def erase_person(self, store_id: str, customer_ids: list[str], request_id: str,
                     email: str | None) -> dict:
        """Forget the person: customers, orders anonymised, webhook deliveries; their guest
        records found by `email` too."""
        report = self.app.sync.erasure.erase(store_id, customer_ids, email, request_id)
        self.app.publish(report.touched)
        return report.counts

    def export_person(self, store_id: str, customer_id: str) -> dict | None:
        return self.app.queries.export_person(store_id, customer_id)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def shop_erasures(self, store_id: str, since: str | None = None, limit: int = 500) -> dict:
        """Customers the shop's own privacy eraser erased (erased here already), oldest first
        from `since` (inclusive), so gdpr can carry each erasure to every other service."""
        store_id = require_text(store_id, "store_id")
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 5000:
            raise ValidationError("limit must be a whole number from 1 to 5000",
                                  {"fields": {"limit": ["out of range"]}})
        after = _aware_time(since, "since") if since is not None else None
        return {"store_id": store_id,
                "erasures": list_shop_erasures(self.storage, store_id, after, limit)}

    # -- coupons written for other services (rewards, gifts in messages) ----------------------
    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def ensure_coupon(self, store_id: str, coupon: dict, customer_id: str | None = None) -> dict:
        """The coupon (`shared.coupons.CouponSpec` wire form), created at the shop unless an
        earlier call made it; with `customer_id`, restricted to that customer's email."""
        return self.app.shop_coupons.ensure(store_id, coupon, customer_id)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def delete_coupon(self, store_id: str, code: str, meta: dict) -> dict:
        """Delete the unused coupon `code` if `meta` names it as the caller's."""
        return self.app.shop_coupons.delete(store_id, code, meta)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def rectify_customer(self, store_id: str, customer_id: str, fields: dict, actor: str) -> dict:
        """Correct a person's contact fields: in the shop first (registered customers), then
        here, publishing customer.updated; a guest is corrected here only (the answer says)."""
        store_id = require_text(store_id, "store_id")
        customer_id = require_text(customer_id, "customer_id")
        actor = require_text(actor, "actor")
        return self.app.answer(self.app.rectifier.rectify(store_id, customer_id, fields, actor))

    # -- staff's CRM: notes, reminders, timeline, edits, status, deletion, import ------------
    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def add_note(self, store_id: str, customer_id: str, note: dict, actor: str) -> dict:
        return self.app.answer(self.app.notes.add(store_id, customer_id, note, actor))

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def list_notes(self, store_id: str, customer_id: str, category: str | None = None) -> list:
        return self.app.notes.list(store_id, customer_id, category)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def update_note(self, store_id: str, note_id: str, changes: dict, actor: str) -> dict:
        return self.app.answer(self.app.notes.update(store_id, note_id, changes, actor))

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def delete_note(self, store_id: str, note_id: str, actor: str) -> dict:
        return self.app.answer(self.app.notes.delete(store_id, note_id, actor))

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def add_reminder(self, store_id: str, customer_id: str, reminder: dict, actor: str) -> dict:
        return self.app.answer(self.app.reminders.add(store_id, customer_id, reminder, actor))

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def list_reminders(self, store_id: str, customer_id: str | None = None,
                       status: str | None = "open", due_before: str | None = None) -> list:
        return self.app.reminders.list(store_id, customer_id, status, due_before)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def complete_reminder(self, store_id: str, reminder_id: str, actor: str) -> dict:
        return self.app.answer(self.app.reminders.complete(store_id, reminder_id, actor))

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def delete_reminder(self, store_id: str, reminder_id: str, actor: str) -> dict:
        return self.app.answer(self.app.reminders.delete(store_id, reminder_id, actor))

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def timeline(self, store_id: str, customer_id: str, page: dict | None = None) -> dict:
        return timeline_page(self.storage, store_id, customer_id, page)

    # What other services did about a customer, on its timeline: upserts keyed by the event
    # id, idempotent by themselves, so without claims; in batches, one read of the customers
    # and one bulk write of the entries per batch (crm/timeline.py).
    @timeline_batches("segmentation", "customer.tagged")
    def on_customer_tagged(self, events) -> None:
        record_foreign_events(self.storage, events)

    @timeline_batches("segmentation", "customer.untagged")
    def on_customer_untagged(self, events) -> None:
        record_foreign_events(self.storage, events)

    @timeline_batches("segmentation", "customer.segment_changed")
    def on_segment_changed(self, events) -> None:
        record_foreign_events(self.storage, events)

    @timeline_batches("loyalty", "loyalty.points_changed")
    def on_points_changed(self, events) -> None:
        record_foreign_events(self.storage, events)

    @timeline_batches("loyalty", "loyalty.reward_issued")
    def on_reward_issued(self, events) -> None:
        record_foreign_events(self.storage, events)

    @timeline_batches("loyalty", "loyalty.reward_used")
    def on_reward_used(self, events) -> None:
        record_foreign_events(self.storage, events)

    @timeline_batches("loyalty", "loyalty.reward_returned")
    def on_reward_returned(self, events) -> None:
        record_foreign_events(self.storage, events)

    @timeline_batches("loyalty", "loyalty.reward_expired")
    def on_reward_expired(self, events) -> None:
        record_foreign_events(self.storage, events)

    @timeline_batches("notifications", "notification.sent")
    def on_notification_sent(self, events) -> None:
        record_foreign_events(self.storage, events)

    @timeline_batches("gdpr", "consent.changed")
    def on_consent_changed(self, events) -> None:
        """Every consent change, whoever made it (an operator, an unsubscribe link, an SMS
        STOP), on the customer's timeline."""
        record_foreign_events(self.storage, events)

    # -- custom fields: definitions per store, values per customer (crm/custom_fields.py) ----
    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def list_custom_fields(self, store_id: str) -> list:
        return self.app.custom_fields.list(store_id)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def create_custom_field(self, store_id: str, definition: dict, actor: str) -> dict:
        return self.app.custom_fields.create(store_id, definition, actor)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def update_custom_field(self, store_id: str, key: str, changes: dict, actor: str) -> dict:
        return self.app.custom_fields.update(store_id, key, changes, actor)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def delete_custom_field(self, store_id: str, key: str, actor: str) -> dict:
        result = self.app.custom_fields.delete(store_id, key, actor)
        self.app.publish(result.touched)
        return result.answer

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def set_custom_values(self, store_id: str, customer_id: str, values: dict,
                          actor: str) -> dict:
        result = self.app.custom_fields.set_values(store_id, customer_id, values, actor)
        self.app.publish(result.touched)
        return result.answer

    # -- companies (B2B): records, membership, matching by email domain (crm/companies.py) ---
    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def list_companies(self, store_id: str, filters: dict | None = None,
                       page: dict | None = None) -> dict:
        return self.app.companies.list(store_id, filters, page)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def get_company(self, store_id: str, company_id: str) -> dict:
        return self.app.companies.get(store_id, company_id)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def create_company(self, store_id: str, data: dict, actor: str) -> dict:
        return self.app.answer(self.app.companies.create(store_id, data, actor))

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def update_company(self, store_id: str, company_id: str, changes: dict, actor: str) -> dict:
        return self.app.answer(self.app.companies.update(store_id, company_id, changes, actor))

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def delete_company(self, store_id: str, company_id: str, actor: str) -> dict:
        return self.app.answer(self.app.companies.delete(store_id, company_id, actor))

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def set_customer_company(self, store_id: str, customer_id: str, company_id: str | None,
                             actor: str) -> dict:
        return self.app.answer(self.app.companies.set_customer_company(
            store_id, customer_id, company_id, actor))

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def company_names(self, store_id: str, company_ids: list) -> dict:
        return self.app.companies.names(store_id, company_ids)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def get_company_matching(self, store_id: str) -> dict:
        return self.app.companies.get_matching(store_id)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def set_company_matching(self, store_id: str, settings: dict, actor: str) -> dict:
        result = self.app.companies.set_matching(store_id, settings, actor)
        self.background.wake("company-sweep")
        return result

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def update_customer(self, store_id: str, customer_id: str, fields: dict, actor: str) -> dict:
        """A staff edit, written to the shop first (a guest: here only); Unavailable when the
        shop does not answer (nothing changed)."""
        return self.app.answer(self.app.staff_edits.update_customer(
            store_id, customer_id, fields, actor))

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def set_account_status(self, store_id: str, customer_ids: list, status: str,
                           actor: str) -> dict:
        return self.app.answer(self.app.account_status.set(store_id, customer_ids, status, actor))

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def delete_customers(self, store_id: str, customer_ids: list, orders: str,
                         actor: str) -> dict:
        return self.app.answer(self.app.deletion.delete(store_id, customer_ids, orders, actor))

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def import_customers(self, store_id: str, rows: list, apply: bool, actor: str,
                         mode: str = "create") -> dict:
        return self.app.answer(self.app.importer.run(store_id, rows, apply, actor, mode))

    # -- backfill and reconciliation ---------------------------------------------------------
    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def backfill(self, store_id: str, since: str | None = None) -> dict:
        """Start (or resume) a backfill of a store from its REST API; returns the run."""
        if since is not None:  # as the shop's API takes it: UTC, whole seconds, no offset
            since = _aware_time(since, "since").replace(tzinfo=None, microsecond=0).isoformat()
        return run_view(self.jobs.start_backfill(require_text(store_id, "store_id"), since))

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def backfill_status(self, store_id: str, run_id: str | None = None) -> dict:
        runs = self.storage.backfills
        run = runs.get(run_id) if run_id else next(iter(runs.latest(store_id, 1)), None)
        if run is None or run["store_id"] != store_id:
            raise NotFound(f"no backfill {run_id or ''} for store {store_id}".replace("  ", " "))
        return run_view(run)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def reconcile(self, store_id: str) -> dict:
        """Reconcile a store now rather than at its next turn."""
        return self.jobs.reconcile_now(require_text(store_id, "store_id"))

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def store_health(self, store_id: str) -> dict:
        health = store_health(self.storage, require_text(store_id, "store_id"))
        if health is None:
            raise NotFound(f"no store {store_id}")
        return health

    # -- the gateway's API keys --------------------------------------------------------------
    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def create_api_key(self, store_id: str, name: str, scopes: list, actor: str,
                       rate_limit_per_minute: int | None = None) -> dict:
        """A new key for the gateway; the answer's `api_key` is the only time it is shown."""
        store_id, actor = require_text(store_id, "store_id"), require_text(actor, "actor")
        if self.storage.stores.get(store_id) is None:
            raise NotFound(f"no store {store_id}")
        return self.storage.api_keys.create(store_id, name, scopes, actor, rate_limit_per_minute)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def list_api_keys(self, store_id: str, include_revoked: bool = False) -> list:
        return self.storage.api_keys.list(require_text(store_id, "store_id"), bool(include_revoked))

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def revoke_api_key(self, store_id: str, key_id: str, actor: str) -> dict:
        """Revoke a key: its console sessions end, and every gateway hears of it at once."""
        key_id = require_text(key_id, "key_id")
        view = self.storage.api_keys.revoke(require_text(store_id, "store_id"), key_id,
                                            require_text(actor, "actor"))
        self.app.publish([(self.storage.api_keys.collection.name, key_id)])
        self.storage.console_sessions.end_for_key(key_id)
        return view

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def authenticate_api_key(self, api_key: str) -> dict:
        """The key's store and scopes, or NotFound for anything but a live key."""
        return self.storage.api_keys.authenticate(api_key if isinstance(api_key, str) else "")

    # -- the admin console's sessions ----------------------------------------------------------
    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def open_console_session(self, api_key: str, idle_seconds: int, max_age_seconds: int) -> dict:
        """Sign in to the console with a live key; the answer's `session` is shown only here."""
        return self.storage.console_sessions.open(api_key if isinstance(api_key, str) else "",
                                                  idle_seconds, max_age_seconds)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def console_session(self, session: str) -> dict:
        """The open session's key, or NotFound once it was signed out, idled, aged or its key
        was revoked: asked on every console request, by every gateway instance."""
        return self.storage.console_sessions.check(session)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def end_console_session(self, session: str) -> dict:
        """Sign out, for every copy of the session's cookie."""
        return {"ended": self.storage.console_sessions.end(session)}


def _aware_time(value: object, name: str):
    """An ISO-8601 time as an aware UTC datetime (no offset means UTC)."""
    try:
        return parse_utc(str(value))
    except (ValueError, OverflowError):  # OverflowError: year 1 or 9999 moved past the range
        raise ValidationError(f"{name} must be an ISO-8601 time", {"fields": {name: ["not a time"]}})

