"""customer_sync's nameko entrypoints. Thin: each one translates and calls plain code."""
from __future__ import annotations

from nameko.rpc import rpc
from nameko.web.handlers import http
from werkzeug.wrappers import Request, Response

from services.customer_sync.queries import CustomerQueries
from services.customer_sync.repository import CustomerSyncStorage
from services.customer_sync.stores import StoreAdmin
from services.customer_sync.webhooks import WEBHOOK_HEADERS, WebhookReceiver
from services.customer_sync.backfill import run_view
from services.customer_sync.reconcile import store_health
from services.customer_sync.schemas import require_text
from services.customer_sync.workers import BackgroundJobs, InboxWorkers
from shared.config import Config
from shared.dependencies import OutboxRelayProvider, Settings, WorkerLogContext
from shared.errors import EXPECTED_ERRORS, NotFound, ValidationError
from shared.health import HealthEndpoints, json_response, readiness
from shared.mongo import MongoStorage
from shared.logs import log_context


def _storage(database, config: Config) -> CustomerSyncStorage:
    return CustomerSyncStorage(database, inbox_retention_days=config.int("INBOX_RETENTION_DAYS"))


class CustomerSyncService(HealthEndpoints):
    name = "customer_sync"

    storage = MongoStorage(_storage)
    outbox = OutboxRelayProvider(lambda storage: storage.outbox_collections())
    inbox_workers = InboxWorkers()
    jobs = BackgroundJobs()
    log_context = WorkerLogContext()
    settings = Settings()

    # -- WooCommerce ----------------------------------------------------------------------
    @http("POST", "/webhooks/woocommerce/<string:store_id>")
    def receive_webhook(self, request: Request, store_id: str) -> Response:
        limit = self.settings.int("WEBHOOK_MAX_BODY_BYTES")
        self.inbox_workers.note_request()
        with log_context(store_id=store_id, service=self.name):
            if request.content_length is not None and request.content_length > limit:
                return json_response(413, {"status": "body too large", "limit_bytes": limit})
            body = request.stream.read(limit + 1)
            headers = {name: request.headers.get(name) for name in WEBHOOK_HEADERS}
            answer = WebhookReceiver(self.storage, limit).receive(store_id, headers, body)
            if answer.inbox_key is not None:
                self.inbox_workers.submit(answer.inbox_key)
            return json_response(answer.status, answer.body)

    # -- health (GET /health/live and /health/ready come from HealthEndpoints) --------------
    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def health(self) -> dict:
        return {**readiness(self.settings.get("AMQP_URI"), self.storage.database),
                "service": self.name}

    # -- stores -----------------------------------------------------------------------------
    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def register_store(self, store: dict) -> dict:
        return StoreAdmin(self.storage, self.settings).register(store)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def list_stores(self) -> list[dict]:
        return StoreAdmin(self.storage, self.settings).list()

    # -- reads for internal systems ---------------------------------------------------------
    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def get_customer(self, store_id: str, customer_id: str) -> dict:
        return CustomerQueries(self.storage).get_customer(store_id, customer_id)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def find_customer(self, store_id: str, email: str) -> dict:
        return CustomerQueries(self.storage).find_customer(store_id, email)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def list_customers(self, store_id: str, filters: dict | None = None,
                       page: dict | None = None) -> dict:
        return CustomerQueries(self.storage).list_customers(store_id, filters, page)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def list_orders(self, store_id: str, customer_id: str, page: dict | None = None) -> dict:
        return CustomerQueries(self.storage).list_orders(store_id, customer_id, page)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def export_customer(self, store_id: str, customer_id: str) -> dict:
        return CustomerQueries(self.storage).export_customer(store_id, customer_id)

    # -- backfill and reconciliation ---------------------------------------------------------
    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def backfill(self, store_id: str, since: str | None = None) -> dict:
        """Start (or resume) a backfill of a store from its REST API; returns the run."""
        if since is not None:
            since = _iso_time(since, "since")
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


def _iso_time(value: object, name: str) -> str:
    """An ISO-8601 time as the shop's API takes it (UTC, no offset needed)."""
    from datetime import datetime, timezone

    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise ValidationError(f"{name} must be an ISO-8601 time", {"fields": {name: ["not a time"]}})
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(timezone.utc).replace(tzinfo=None)
    return parsed.replace(microsecond=0).isoformat()
