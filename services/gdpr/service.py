"""gdpr's nameko entrypoints. Thin: each calls the desk of the application `bootstrap` built
once; a timer works through verified requests, asking the other services over RPC."""
from __future__ import annotations

from nameko.rpc import RpcProxy, rpc

from services.gdpr.bootstrap import build
from services.gdpr.consent_bulk import bulk_set_consent
from services.gdpr.desk import Desk
from services.gdpr.repository import GdprStorage
from shared.dependencies import OutboxRelayProvider, Settings, WorkerLogContext
from shared.errors import EXPECTED_ERRORS
from shared.messaging.handlers import event_handler
from shared.mongo import MongoStorage
from shared.service_rpc import HealthRpc
from shared.timers import ConfiguredTimer


class GdprService(HealthRpc):
    name = "gdpr"

    app = MongoStorage(build)
    outbox = OutboxRelayProvider(lambda app: app.outbox_collections())
    log_context = WorkerLogContext()
    settings = Settings()
    customer_sync = RpcProxy("customer_sync")

    @property
    def storage(self) -> GdprStorage:
        """The repositories, where HealthRpc looks for the database."""
        return self.app.storage

    def _desk(self) -> Desk:
        return self.app.desk(self.customer_sync, self.outbox.notify)

    # -- the work ------------------------------------------------------------------------------
    @ConfiguredTimer.decorator(setting="GDPR_PROCESS_SECONDS")
    def process(self) -> None:
        desk = self._desk()
        desk.import_shop_erasures(self.app.services)
        desk.process_due(self.app.services)

    # -- events in ------------------------------------------------------------------------------
    @event_handler("gdpr", "gdpr.erasure_completed")
    def on_erasure_completed(self, event):
        self._desk().record_confirmation(event)

    @event_handler("gdpr", "consent.changed")
    def on_consent_changed(self, event):
        self._desk().record_consent_event(event)

    @event_handler("customer_sync", "customer.merged")
    def on_customer_merged(self, event):
        self.app.consent_merges.merge(event, self.outbox.notify)

    @event_handler("customer_sync", "customer.unmerged")
    def on_customer_unmerged(self, event):
        self.app.consent_merges.unmerge(event, self.outbox.notify)

    @event_handler("customer_sync", "consent.captured")
    def on_consent_captured(self, event):
        self._desk().record_capture(event)

    # -- RPC ---------------------------------------------------------------------------------

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def submit_request(self, store_id: str, type: str, email: str, details: dict | None = None,
                       actor: str = "operator") -> dict:  # noqa: A002 - the API's word
        """access, portability, rectification (details.fields), erasure or objection; due in
        30 days; nothing happens until an operator verifies the requester's identity."""
        return self._desk().submit(store_id, type, email, details, actor)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def verify_identity(self, request_id: str, actor: str, note: str = "") -> dict:
        """An operator confirms who asked; the next round of the timer starts the work."""
        return self._desk().verify_identity(request_id, actor, note)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def reject_request(self, request_id: str, reason: str, actor: str) -> dict:
        return self._desk().reject(request_id, reason, actor)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def get_request(self, request_id: str) -> dict:
        """The request with its state, due date, overdue flag, result and audit trail."""
        return self._desk().get(request_id)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def list_requests(self, store_id: str, state: str | None = None) -> list:
        """Overdue first, then open ones by due date."""
        return self._desk().list(store_id, state)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def download_export(self, request_id: str) -> dict:
        """The assembled access or portability document, with its manifest."""
        return self._desk().download_export(request_id)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def set_consent(self, store_id: str, customer_id: str, purpose: str, granted: bool,
                    source: str = "operator", actor: str = "operator", note: str = "") -> dict:
        return self._desk().set_consent(store_id, customer_id, purpose, granted, source, actor, note)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def set_consent_bulk(self, store_id: str, customer_ids: list, purpose: str, granted: bool,
                         reason: str, actor: str = "operator") -> dict:
        """One purpose on or off for many customers, with a reason; answers per customer."""
        return bulk_set_consent(self._desk(), store_id, customer_ids, purpose, granted, reason,
                                actor)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def get_consent(self, store_id: str, customer_id: str) -> dict:
        """Each purpose's state, and the full history of changes."""
        return self._desk().get_consent(store_id, customer_id)
