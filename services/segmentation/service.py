"""segmentation's nameko entrypoints. Thin: each translates and calls the application
`bootstrap` built once."""
from __future__ import annotations

from nameko.rpc import RpcProxy, rpc

from services.segmentation import store_setup, thresholds, views
from services.segmentation.bootstrap import build
from services.segmentation.company_stats import company_stats
from services.segmentation.recompute import recompute_stores
from services.segmentation.repository import SegmentationStorage
from services.segmentation.tag_catalogue import tag_slug
from shared.customers import CustomerCheck
from shared.dependencies import OutboxRelayProvider, Settings, WorkerLogContext
from shared.errors import EXPECTED_ERRORS
from shared.messaging.batches import batch_event_handler
from shared.messaging.handlers import event_handler
from shared.mongo import MongoStorage
from shared.periodic import MINUTES, PeriodicTasks, Task
from shared.service_rpc import DataOwnerRpc

# The settings (settings.py) of every order handler's batch size and wait.
_ORDER_BATCHES = {"size_setting": "SEGMENT_ORDER_BATCH_SIZE",
                  "wait_setting": "SEGMENT_ORDER_BATCH_WAIT_MS"}
_CUSTOMER_BATCHES = {"size_setting": "SEGMENT_CUSTOMER_BATCH_SIZE",
                     "wait_setting": "SEGMENT_CUSTOMER_BATCH_WAIT_MS"}


class SegmentationService(DataOwnerRpc):
    name = "segmentation"

    app = MongoStorage(build)
    outbox = OutboxRelayProvider(lambda app: app.outbox_collections())
    log_context = WorkerLogContext()
    settings = Settings()
    background = PeriodicTasks(
        Task("recompute", lambda uses: recompute_stores(uses.app.profiles,
                                                        uses.outbox.request_sweep),
             setting="SEGMENT_RECOMPUTE_MINUTES", unit=MINUTES),
        uses=("app", "outbox"))
    customer_sync = RpcProxy("customer_sync")

    @property
    def storage(self) -> SegmentationStorage:
        """The repositories, where DataOwnerRpc looks for the database."""
        return self.app.storage

    def _done(self, change) -> None:
        self.outbox.notify(change.touched)

    def _check(self) -> CustomerCheck:
        return self.app.customer_check(self.customer_sync)

    # -- events in ---------------------------------------------------------------------------
    # No claims (shared/messaging/handlers.py): each is a compare-and-set of the profile
    # keyed by the fact the event brings (an order's state, the contact as of a time), which a
    # duplicate finds already held; two database writes per event fewer.
    # Order events and customers' creations and updates come in batches (docs/batching.md):
    # one read of the batch's profiles and one bulk write, with the effects of applying them
    # one by one in delivery order.
    @batch_event_handler("customer_sync", "order.placed", claims=False, **_ORDER_BATCHES)
    def on_order_placed(self, events):
        self._done(self.app.profiles.apply_order_events(events))

    @batch_event_handler("customer_sync", "order.updated", claims=False, **_ORDER_BATCHES)
    def on_order_updated(self, events):
        self._done(self.app.profiles.apply_order_events(events))

    @batch_event_handler("customer_sync", "order.refunded", claims=False, **_ORDER_BATCHES)
    def on_order_refunded(self, events):
        self._done(self.app.profiles.apply_order_events(events))

    @batch_event_handler("customer_sync", "order.cancelled", claims=False, **_ORDER_BATCHES)
    def on_order_cancelled(self, events):
        self._done(self.app.profiles.apply_order_events(events))

    @batch_event_handler("customer_sync", "customer.created", claims=False,
                         **_CUSTOMER_BATCHES)
    def on_customer_created(self, events):
        self._done(self.app.profiles.apply_customer_events(events))

    @batch_event_handler("customer_sync", "customer.updated", claims=False,
                         **_CUSTOMER_BATCHES)
    def on_customer_updated(self, events):
        self._done(self.app.profiles.apply_customer_events(events))

    @event_handler("customer_sync", "customer.merged")
    def on_customer_merged(self, event):
        self._done(self.app.merges.merge(event))

    @event_handler("customer_sync", "customer.unmerged")
    def on_customer_unmerged(self, event):
        self._done(self.app.merges.unmerge(event))

    @event_handler("customer_sync", "customer.deleted", claims=False)
    def on_customer_deleted(self, event):
        self._done(self.app.profiles.apply_customer_deleted(event))

    # -- GDPR: DataOwnerRpc handles the request and the export; these say what is held ------
    def erase_person(self, store_id: str, customer_ids: list[str], request_id: str,
                     email: str | None) -> dict:
        """Profiles by customer id (the email is not needed)."""
        return self.app.profiles.erase(store_id, customer_ids, request_id)

    def export_person(self, store_id: str, customer_id: str) -> dict | None:
        return views.export(self.storage, store_id, customer_id)

    # -- RPC -------------------------------------------------------------------------------

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def get_profile(self, store_id: str, customer_id: str) -> dict:
        """Stats, segment, tags and groups; `status` says whether the shop deleted them."""
        return views.profile_view(views.active_profile(self.storage, store_id, customer_id))

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def tag(self, store_id: str, customer_id: str, tags, actor: str | None = None) -> dict:
        customer_id, change = self.app.membership.tag(self._check(), store_id, customer_id,
                                                      tags, actor)
        self._done(change)
        return self.get_profile(store_id, customer_id)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def untag(self, store_id: str, customer_id: str, tags, actor: str | None = None) -> dict:
        customer_id, change = self.app.membership.untag(store_id, customer_id, tags, actor)
        self._done(change)
        return self.get_profile(store_id, customer_id)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def bulk_tag(self, store_id: str, customer_ids: list, tags, actor: str | None = None) -> dict:
        """Tag many customers; answers each customer's outcome."""
        return self.app.membership.bulk_tag(self._check(), store_id, customer_ids, tags, actor,
                                            self.outbox.notify)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def recompute_store(self, store_id: str) -> dict:
        """Recompute every profile of a store now (the hourly timer does this too)."""
        counts = self.app.profiles.recompute_store(store_id)
        self.outbox.request_sweep()  # bulk-written profiles owe their events: publish them now
        return counts

    # -- groups ------------------------------------------------------------------------------
    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def save_group(self, store_id: str, group: dict) -> dict:
        """A named group with a description and benefits other systems read (discount
        percent, free-shipping threshold in minor units, payment terms in days)."""
        return store_setup.save_group(self.storage, store_id, group)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def list_groups(self, store_id: str) -> list:
        """Saved groups by slug, each with `customers`: how many active customers are in it."""
        return views.groups_with_counts(self.storage, store_id)

    # -- the customer list (the gateway's directory) ------------------------------------------
    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def search_customers(self, store_id: str, filters: dict | None = None,
                         sort: dict | None = None, page: dict | None = None) -> dict:
        """A page of the store's active customers, filtered by contact fields, segment, tags,
        groups and stats, sorted, with a keyset cursor: {"items", "next_cursor", "total"}."""
        return views.search(self.storage, store_id, filters, sort, page)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def company_stats(self, store_id: str, company_ids: list) -> dict:
        """Each company's active members' stats added up (at most 100 ids a call)."""
        return company_stats(self.storage.profiles, store_id, company_ids)

    # -- the tag catalogue ---------------------------------------------------------------------
    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def list_tags(self, store_id: str) -> list:
        """Every tag of the store (catalogued, or carried by a customer) by tag: its
        description and how many active customers carry it."""
        return self.app.catalogue.list(store_id)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def create_tag(self, store_id: str, tag, description=None, actor: str | None = None) -> dict:
        return self.app.catalogue.create(store_id, tag, description, actor)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def update_tag(self, store_id: str, tag, changes, actor: str | None = None) -> dict:
        """Rename (`new_tag`: every carrier follows) and/or describe (`description`) a tag;
        answers the tag and `renamed`: how many customers now carry the new name."""
        return self.app.catalogue.update(store_id, tag, changes, actor, self.outbox.notify)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def delete_tag(self, store_id: str, tag, actor: str | None = None) -> dict:
        """Take the tag off every customer and out of the catalogue; says how many."""
        change = self.app.catalogue.delete(store_id, tag, actor)
        self.outbox.notify(change.touched)
        return {"deleted": tag_slug(tag), "customers": change.customers}

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def add_to_group(self, store_id: str, customer_ids: list, group: str,
                     actor: str | None = None) -> dict:
        return self.app.membership.group(self._check(), store_id, customer_ids, group, actor,
                                         True, self.outbox.notify)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def remove_from_group(self, store_id: str, customer_ids: list, group: str,
                          actor: str | None = None) -> dict:
        return self.app.membership.group(self._check(), store_id, customer_ids, group, actor,
                                         False, self.outbox.notify)

    # -- reports -----------------------------------------------------------------------------
    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def report(self, store_id: str, period: str = "month") -> dict:
        return views.report(self.storage, store_id, period)

    # -- saved segments -------------------------------------------------------------------------
    def _recompute_now(self, store_id: str) -> None:
        """A saved segment or a threshold written: every profile of the store is evaluated
        against it once now (events keep it current after that), and what is owed published."""
        self.app.profiles.recompute_store(store_id)
        self.outbox.request_sweep()

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def save_segment(self, store_id: str, segment: dict) -> dict:
        """A saved custom segment, e.g. last order in November or December, an order over
        100.00, tagged gift (refused with the failing field named)."""
        saved = self.app.saved_segments.create(store_id, segment)
        self._recompute_now(store_id)
        return saved

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def update_segment(self, store_id: str, segment_id: str, segment: dict) -> dict:
        """Change a saved segment's name, match or conditions, validated as on create."""
        saved = self.app.saved_segments.update(store_id, segment_id, segment)
        self._recompute_now(store_id)
        return saved

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def delete_segment(self, store_id: str, segment_id: str) -> dict:
        deleted = self.app.saved_segments.delete(store_id, segment_id)
        self.storage.profiles.forget_saved_segment(store_id, deleted["deleted"])
        return deleted

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def get_segment(self, store_id: str, segment_id: str) -> dict:
        return self.app.saved_segments.get(store_id, segment_id)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def list_segments(self, store_id: str) -> list:
        """Saved segments by name, each with `customers`: how many active customers are in it."""
        return views.segments_with_counts(self.storage, self.app.saved_segments, store_id)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def segment_members(self, store_id: str, segment_id: str, page: dict | None = None) -> dict:
        """Members of a built-in segment (vip, new, ...) or a saved one, a page at a time:
        page = {"size": 50, "cursor": null}; answers items and next_cursor."""
        return views.segment_members(self.app.profiles, self.app.saved_segments, store_id,
                                     segment_id, page)

    # -- built-in segment thresholds -------------------------------------------------------------
    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def get_thresholds(self, store_id: str) -> dict:
        return thresholds.current(self.storage.settings, store_id)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def set_thresholds(self, store_id: str, values: dict) -> dict:
        """Change the store's built-in segment thresholds; every customer is re-classified
        at once (and their segment changes published)."""
        changed = thresholds.change(self.storage.settings, store_id, values)
        self._recompute_now(store_id)
        return changed

    # -- rules -------------------------------------------------------------------------------
    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def save_rule(self, store_id: str, rule: dict) -> dict:
        """Validate and store a rule (refused with the failing field named)."""
        return store_setup.save_rule(self.storage, store_id, rule)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def list_rules(self, store_id: str) -> list:
        return self.storage.rules_of(store_id)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def delete_rule(self, store_id: str, rule_id: str) -> dict:
        return store_setup.delete_rule(self.storage, store_id, rule_id)
