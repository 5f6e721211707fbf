"""customer_sync's nameko entrypoints. Thin: each one translates and calls plain code."""
from __future__ import annotations

from nameko.rpc import rpc
from nameko.web.handlers import http
from werkzeug.wrappers import Request, Response

from services.customer_sync.queries import CustomerQueries
from services.customer_sync.repository import CustomerSyncStorage
from services.customer_sync.stores import StoreAdmin
from services.customer_sync.webhooks import WebhookReceiver
from services.customer_sync.workers import InboxWorkers
from shared.config import Config
from shared.dependencies import OutboxRelayProvider, Settings, WorkerLogContext
from shared.errors import EXPECTED_ERRORS
from shared.health import json_response, readiness
from shared.mongo import MongoStorage
from shared.logs import log_context


def _storage(database, config: Config) -> CustomerSyncStorage:
    return CustomerSyncStorage(database, inbox_retention_days=config.int("INBOX_RETENTION_DAYS"))


class CustomerSyncService:
    name = "customer_sync"

    storage = MongoStorage(_storage)
    outbox = OutboxRelayProvider(lambda storage: storage.outbox_collections())
    inbox_workers = InboxWorkers()
    log_context = WorkerLogContext()
    settings = Settings()

    # -- WooCommerce ----------------------------------------------------------------------
    @http("POST", "/webhooks/woocommerce/<string:store_id>")
    def receive_webhook(self, request: Request, store_id: str) -> Response:
        limit = self.settings.int("WEBHOOK_MAX_BODY_BYTES")
        with log_context(store_id=store_id, service=self.name):
            if request.content_length is not None and request.content_length > limit:
                return json_response(413, {"status": "body too large", "limit_bytes": limit})
            body = request.stream.read(limit + 1)
            answer = WebhookReceiver(self.storage, limit).receive(store_id, request.headers, body)
            if answer.inbox_key is not None:
                self.inbox_workers.submit(answer.inbox_key)
            return json_response(answer.status, answer.body)

    # -- health -----------------------------------------------------------------------------
    @http("GET", "/health/live")
    def live(self, request: Request) -> Response:
        return json_response(200, {"live": True, "service": self.name})

    @http("GET", "/health/ready")
    def ready(self, request: Request) -> Response:
        state = readiness(self.settings.get("AMQP_URI"), self.storage.database)
        return json_response(200 if state["ready"] else 503, {**state, "service": self.name})

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
