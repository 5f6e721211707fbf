"""gdpr's nameko entrypoints. Thin: requests and consent go to `Desk`; a timer works through
verified requests, asking the other services over RPC."""
from __future__ import annotations

import logging
from typing import Any, Iterable

from nameko.exceptions import MethodNotFound, RpcTimeout, UnknownService
from nameko.rpc import RpcProxy, rpc
from nameko.standalone.rpc import ClusterRpcProxy

from services.gdpr.consent_bulk import bulk_set_consent
from services.gdpr.desk import Desk, DeskSettings
from services.gdpr.repository import GdprStorage
from shared.customers import CustomerCheck
from shared.dependencies import Clock, OutboxRelayProvider, Settings, WorkerLogContext
from shared.errors import EXPECTED_ERRORS, NotFound
from shared.messaging.handlers import event_handler
from shared.mongo import MongoStorage
from shared.service_rpc import HealthRpc
from shared.timers import ConfiguredTimer
from shared.tls import amqp_ssl_options
from shared.times import utcnow

log = logging.getLogger(__name__)


def _storage(database, config) -> GdprStorage:
    return GdprStorage(database)


class RpcServices:
    """The desk's way to the other services: nameko RPC with a timeout, calls in parallel.
    A service that does not answer in time is "unavailable" (the desk tries again later);
    NotFound is an answer ("holds nothing")."""

    def __init__(self, config: dict, timeout: float) -> None:
        self.config = config
        self.timeout = timeout

    def call(self, service: str, method: str, *args: Any) -> Any:
        return self.call_all([service], method, *args)[service]

    def call_all(self, services: Iterable[str], method: str, *args: Any
                 ) -> dict[str, tuple[str, Any]]:
        outcomes: dict[str, tuple[str, Any]] = {}
        with ClusterRpcProxy(self.config, timeout=self.timeout) as proxy:
            calls = {}
            for service in services:
                calls[service] = getattr(getattr(proxy, service), method).call_async(*args)
            for service, reply in calls.items():
                try:
                    outcomes[service] = ("ok", reply.result())
                except NotFound as exc:
                    outcomes[service] = ("not_found", str(exc))
                except (RpcTimeout, UnknownService, MethodNotFound, OSError) as exc:
                    outcomes[service] = ("unavailable", f"{type(exc).__name__}: {exc}")
                except Exception as exc:  # a failure over there: try again later
                    outcomes[service] = ("unavailable", f"{type(exc).__name__}: {exc}")
        return outcomes


def desk_settings(config) -> DeskSettings:
    services = tuple(s.strip() for s in config.get("GDPR_SERVICES").split(",") if s.strip())
    return DeskSettings(services=services, retry_seconds=config.float("GDPR_RETRY_SECONDS"),
                        confirmation_minutes=config.float("GDPR_CONFIRMATION_MINUTES"))


class GdprService(HealthRpc):
    name = "gdpr"

    storage = MongoStorage(_storage)
    outbox = OutboxRelayProvider(lambda storage: storage.outbox_collections())
    log_context = WorkerLogContext()
    settings = Settings()
    customer_sync = RpcProxy("customer_sync")

    clock = Clock(utcnow)  # the desk's due dates and overdue flags

    def _desk(self) -> Desk:
        customers = CustomerCheck.over_rpc(self.customer_sync, self.settings)
        return Desk(self.storage, desk_settings(self.settings), clock=self.clock,
                    notify=self.outbox.notify, customers=customers)

    # -- the work ------------------------------------------------------------------------------
    @ConfiguredTimer.decorator(setting="GDPR_PROCESS_SECONDS")
    def process(self) -> None:
        timeout = self.settings.float("GDPR_RPC_TIMEOUT_SECONDS")
        config = {"AMQP_URI": self.settings.get("AMQP_URI"), "serializer": "json",
                  "AMQP_SSL": amqp_ssl_options(self.settings)}
        services = RpcServices(config, timeout)
        desk = self._desk()
        desk.import_shop_erasures(services)
        desk.process_due(services)

    # -- events in ------------------------------------------------------------------------------
    @event_handler("gdpr", "gdpr.erasure_completed")
    def on_erasure_completed(self, event):
        self._desk().record_confirmation(event)

    @event_handler("gdpr", "consent.changed")
    def on_consent_changed(self, event):
        self._desk().record_consent_event(event)

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
