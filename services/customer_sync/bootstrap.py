"""customer_sync put together: its storage, its one write path (`CustomerSync`), every use case
and the shop's REST clients made once, from its database, its config and a clock, so entrypoints
and background work share one of each and a test can run the whole service on a clock it moves."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable, Iterable

from pymongo.collection import Collection
from pymongo.database import Database

from services.customer_sync.core.duplicate_search import DuplicateSearch
from services.customer_sync.core.importing import CustomerImport
from services.customer_sync.core.merges import CustomerMerges
from services.customer_sync.core.queries import CustomerQueries
from services.customer_sync.core.staff import AccountStatus, StaffEdits
from services.customer_sync.core.stores import StoreAdmin
from services.customer_sync.core.sync import CustomerSync
from services.customer_sync.core.written import DocumentRef, Written
from services.customer_sync.crm.companies import Companies
from services.customer_sync.crm.custom_fields import CustomFields
from services.customer_sync.crm.notes import Notes
from services.customer_sync.crm.reminders import Reminders
from services.customer_sync.crm.timeline import TimelineProjector
from services.customer_sync.door.inbox import InboxProcessor
from services.customer_sync.door.quarantine import WebhookQuarantine
from services.customer_sync.door.webhooks import WebhookReceiver
from services.customer_sync.privacy.consent_capture import CaptureSettings
from services.customer_sync.privacy.deletion import CustomerDeletion
from services.customer_sync.privacy.rectify import Rectifier
from services.customer_sync.repository import CustomerSyncStorage, Store
from services.customer_sync.shop.backfill import Backfiller, ClientFactory
from services.customer_sync.shop.reconcile import Reconciler
from services.customer_sync.shop.shop_coupons import ShopCoupons
from services.customer_sync.shop.webhook_setup import WebhookSetup
from services.customer_sync.shop.woo_client import WooClient
from shared.config import Config
from shared.times import to_millis, utcnow

log = logging.getLogger(__name__)


Notify = Callable[[list[DocumentRef]], None]


class Publication:
    """Where every write's documents go right after it: the events they owe to the outbox
    relay at once, once the service has wired its relay in (before that, and after a crash,
    the relay's sweep finds them), and the timeline entries they owe to the timeline."""

    def __init__(self, outbox_collections: Iterable[str], timeline: TimelineProjector) -> None:
        self.outbox_collections = frozenset(outbox_collections)
        self.timeline = timeline
        self.notify: Notify | None = None

    def publish(self, touched: Iterable[DocumentRef]) -> None:
        refs = list(dict.fromkeys(touched))
        if not refs:
            return
        # The relay knows only outbox collections; notes and reminders owe timeline entries only.
        owing = [ref for ref in refs if ref[0] in self.outbox_collections]
        if owing and self.notify is not None:
            self.notify(owing)
        try:
            self.timeline.flush(refs)
        except Exception:  # staff see it at the next sweep instead of on reload
            log.exception("timeline flush failed; the sweep will move the entries")


@dataclass(frozen=True)
class CustomerSyncApp:
    """What customer_sync's entrypoints and background providers see: one of each, sharing
    one publish path."""

    storage: CustomerSyncStorage
    sync: CustomerSync
    clock: Callable[[], datetime]
    receiver: WebhookReceiver
    inbox: InboxProcessor
    quarantine: WebhookQuarantine
    queries: CustomerQueries
    duplicates: DuplicateSearch
    merges: CustomerMerges
    stores: StoreAdmin
    capture_settings: CaptureSettings
    webhook_setup: WebhookSetup
    shop_coupons: ShopCoupons
    rectifier: Rectifier
    staff_edits: StaffEdits
    account_status: AccountStatus
    deletion: CustomerDeletion
    importer: CustomerImport
    notes: Notes
    reminders: Reminders
    timeline: TimelineProjector
    woo_clients: ClientFactory
    full_scan_every: timedelta
    backfiller: Backfiller
    reconciler: Reconciler
    publication: Publication
    custom_fields: CustomFields
    companies: Companies

    def ensure_indexes(self) -> None:
        self.storage.ensure_indexes()
        self.timeline.ensure_indexes()

    def publish(self, touched: Iterable[DocumentRef]) -> None:
        """Documents just written: publish their events, move their timeline entries."""
        self.publication.publish(touched)

    def answer(self, result: Written) -> Any:
        """A use case's answer, once what it wrote is published."""
        self.publication.publish(result.touched)
        return result.answer

    def wire_outbox(self, notify: Notify) -> None:
        """The outbox relay's `notify`, which `publish` hands owed events to from now on."""
        self.publication.notify = notify

    def outbox_collections(self) -> list[Collection]:
        return self.storage.outbox_collections()

    def company_sweep(self) -> bool:
        """One step of background work on companies and custom fields (a deletion left
        unfinished, a matching sweep), published; True while more may be left."""
        fields_more, touched = self.custom_fields.sweep()
        self.publish(touched)
        more, touched = self.companies.sweep()
        self.publish(touched)
        return more or fields_more


def woo_client_factory(config: Config) -> ClientFactory:
    """Clients for reads and customer writes, with the configured timeout and retries."""
    def make(store: Store) -> WooClient:
        return WooClient(store.shop_url, store.consumer_key, store.consumer_secret,
                         timeout=config.float("WOO_HTTP_TIMEOUT_SECONDS"),
                         max_retries=config.int("WOO_MAX_RETRIES"))
    return make


def coupon_client_factory(config: Config) -> ClientFactory:
    """Clients for coupon writes: few, short retries, because the caller's step stays pending
    and retries with its own backoff; an RPC held open through minutes of retries would
    outlive its caller's patience."""
    def make(store: Store) -> WooClient:
        return WooClient(store.shop_url, store.consumer_key, store.consumer_secret,
                         timeout=config.float("WOO_HTTP_TIMEOUT_SECONDS"),
                         max_retries=config.int("WOO_COUPON_RETRIES"), backoff_max=2.0)
    return make


def build(database: Database, config: Config,
          clock: Callable[[], datetime] = utcnow) -> CustomerSyncApp:
    """customer_sync from its own database and settings; `clock` dates what it writes."""
    storage = CustomerSyncStorage(database,
                                  inbox_retention_days=config.int("INBOX_RETENTION_DAYS"),
                                  clock=clock)
    sync = CustomerSync(storage, clock)
    woo_clients = woo_client_factory(config)

    def clock_ms() -> datetime:
        """Notes and reminders answer times to the millisecond MongoDB keeps."""
        return to_millis(clock())

    timeline = TimelineProjector(storage.timeline, storage.timeline_sources(),
                                 storage.customers.collection)
    publication = Publication([c.name for c in storage.outbox_collections()], timeline)
    # Backfills and reconciliation publish each applied change as they go, as webhooks do.
    backfiller = Backfiller(storage, sync, woo_clients, publish=publication.publish, clock=clock)
    full_scan_every = timedelta(hours=config.float("RECONCILE_FULL_CUSTOMER_SCAN_HOURS"))
    custom_fields = CustomFields(storage, sync, clock=clock)
    companies = Companies(storage, sync, custom_fields.company_definitions,
                          sync.company_matching, clock=clock)
    return CustomerSyncApp(
        storage=storage, sync=sync, clock=clock,
        receiver=WebhookReceiver(storage, config.int("WEBHOOK_MAX_BODY_BYTES")),
        inbox=InboxProcessor(storage, sync),
        quarantine=WebhookQuarantine(storage),
        queries=CustomerQueries(storage),
        duplicates=DuplicateSearch(storage, clock),
        merges=CustomerMerges(storage, sync, clock),
        stores=StoreAdmin(storage, config.int("RECONCILE_INTERVAL_MINUTES")),
        capture_settings=sync.capture_settings,
        webhook_setup=WebhookSetup(storage, woo_clients),
        shop_coupons=ShopCoupons(storage, coupon_client_factory(config)),
        rectifier=Rectifier(storage, sync, woo_clients, clock=clock),
        staff_edits=StaffEdits(storage, sync, woo_clients, clock=clock),
        account_status=AccountStatus(storage, sync),
        deletion=CustomerDeletion(storage, sync, woo_clients, clock=clock),
        importer=CustomerImport(storage, sync, clock=clock, client_factory=woo_clients,
                                custom_fields=custom_fields),
        notes=Notes(storage, clock=clock_ms),
        reminders=Reminders(storage, clock=clock_ms),
        timeline=timeline,
        woo_clients=woo_clients,
        full_scan_every=full_scan_every,
        backfiller=backfiller,
        reconciler=Reconciler(storage, backfiller, woo_clients, full_scan_every=full_scan_every,
                              clock=clock),
        publication=publication,
        custom_fields=custom_fields,
        companies=companies)
