"""gdpr put together: its storage, the desk's settings and the way to the other services made
once, from its database, its config and a clock, so every entrypoint's desk shares them and a
test runs the whole service on a clock it moves (a request filed now, overdue a month later)."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Iterable

from nameko.exceptions import MethodNotFound, RpcTimeout, UnknownService
from nameko.standalone.rpc import ClusterRpcProxy
from pymongo.collection import Collection
from pymongo.database import Database

from services.gdpr.consent_merges import ConsentMerges
from services.gdpr.desk import Desk, DeskSettings, DocumentRef
from services.gdpr.repository import GdprStorage
from shared.config import Config
from shared.customers import CustomerCheck, customer_sync_over_rpc
from shared.errors import NotFound
from shared.times import utcnow
from shared.tls import amqp_ssl_options


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


def desk_settings(config: Config) -> DeskSettings:
    """Which services hold personal data, and how long the desk waits for them."""
    services = tuple(s.strip() for s in config.get("GDPR_SERVICES").split(",") if s.strip())
    return DeskSettings(services=services, retry_seconds=config.float("GDPR_RETRY_SECONDS"),
                        confirmation_minutes=config.float("GDPR_CONFIRMATION_MINUTES"))


@dataclass(frozen=True)
class Gdpr:
    """What gdpr's workers see. customer_sync is checked through the calling worker's RPC
    proxy, which belongs to that worker, so the desk over it is made per call; it is a few
    references, the storage and settings behind it are made once."""

    storage: GdprStorage
    settings: DeskSettings
    services: RpcServices
    clock: Callable[[], datetime]
    customer_check_seconds: float
    consent_merges: ConsentMerges

    def ensure_indexes(self) -> None:
        self.storage.ensure_indexes()

    def outbox_collections(self) -> list[Collection]:
        return self.storage.outbox_collections()

    def desk(self, customer_sync: Any, notify: Callable[[Iterable[DocumentRef]], None]) -> Desk:
        """The desk for one worker: customers checked through its customer_sync proxy, owed
        events handed to `notify` (the outbox relay) right after each write."""
        customers = CustomerCheck(customer_sync_over_rpc(customer_sync,
                                                         self.customer_check_seconds))
        return Desk(self.storage, self.settings, clock=self.clock, notify=notify,
                    customers=customers)


def build(database: Database, config: Config,
          clock: Callable[[], datetime] = utcnow) -> Gdpr:
    """gdpr from its own database and settings; `clock` dates requests, due dates and retries."""
    rpc_config = {"AMQP_URI": config.get("AMQP_URI"), "serializer": "json",
                  "AMQP_SSL": amqp_ssl_options(config)}
    storage = GdprStorage(database)
    return Gdpr(storage=storage, settings=desk_settings(config),
                services=RpcServices(rpc_config, config.float("GDPR_RPC_TIMEOUT_SECONDS")),
                clock=clock,
                customer_check_seconds=config.float("CUSTOMER_CHECK_TIMEOUT_SECONDS"),
                consent_merges=ConsentMerges(storage, clock=clock))
