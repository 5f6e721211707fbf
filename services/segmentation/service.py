"""segmentation's nameko entrypoints. Thin: each translates and calls `Profiles`."""
from __future__ import annotations

import logging
import re
import uuid

import eventlet
from nameko.extensions import DependencyProvider
from marshmallow import RAISE, Schema, ValidationError as MarshmallowError, fields, validate
from nameko.rpc import RpcProxy, rpc

from services.segmentation import thresholds
from services.segmentation.erasure import handle_erasure_requested
from services.segmentation.profiles import ERASED, Profiles
from services.segmentation.repository import SegmentationStorage
from services.segmentation.saved_segments import SavedSegments
from services.segmentation.tag_catalogue import TagCatalogue, description_text, tag_slug
from shared.config import from_nameko
from shared.customers import (CustomerCheck, not_found,
                              valid_customer_id, valid_customer_ids)
from shared.dependencies import OutboxRelayProvider, Settings, WorkerLogContext
from shared.errors import EXPECTED_ERRORS, Conflict, NotFound, ValidationError
from shared.messaging.handlers import event_handler
from shared.mongo import MongoStorage
from shared.service_rpc import DataOwnerRpc
from shared.times import utcnow
from shared.paging import page_size

log = logging.getLogger(__name__)

_TAG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


def _storage(database, config) -> SegmentationStorage:
    return SegmentationStorage(database)


def _tags(values) -> list[str]:
    if isinstance(values, str):
        values = [values]
    if not isinstance(values, (list, tuple)) or not values:
        raise ValidationError("tags must be a non-empty list", {"fields": {"tags": ["required"]}})
    slugs = [str(v).strip().lower() for v in values]
    bad = [v for v in slugs if not _TAG.match(v)]
    if bad:
        raise ValidationError(f"tags must be lower-case slugs: {bad}", {"fields": {"tags": bad}})
    return slugs


class GroupSchema(Schema):
    class Meta:
        unknown = RAISE

    slug = fields.String(required=True, validate=validate.Regexp(r"^[a-z0-9][a-z0-9_-]{0,63}$"))
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    description = fields.String(load_default="", validate=validate.Length(max=2000))
    discount_percent = fields.Decimal(load_default=None, allow_none=True, as_string=True,
                                      validate=validate.Range(min=0, max=100))
    free_shipping_threshold = fields.Integer(load_default=None, allow_none=True, strict=True,
                                             validate=validate.Range(min=0))
    payment_terms_days = fields.Integer(load_default=None, allow_none=True, strict=True,
                                        validate=validate.Range(min=0, max=365))


def load_group(data) -> dict:
    if not isinstance(data, dict):
        raise ValidationError("group must be an object", {"fields": {"group": ["not an object"]}})
    try:
        group = GroupSchema().load(data)
    except MarshmallowError as exc:
        raise ValidationError(f"invalid group: {exc.messages}", {"fields": exc.messages}) from None
    if group["discount_percent"] is not None:
        group["discount_percent"] = str(group["discount_percent"])  # exact, and JSON-safe
    return group


def profile_view(doc: dict) -> dict:
    def iso(value):
        return value.isoformat() if hasattr(value, "isoformat") else value

    return {
        "store_id": doc["store_id"], "customer_id": doc["customer_id"],
        "status": doc.get("status", "active"),
        "segment": doc.get("segment"), "stats": doc.get("stats"),
        "tags": [{"tag": t, "source": v.get("source"), "rule_id": v.get("rule_id"),
                  "added_at": iso(v.get("added_at"))} for t, v in sorted((doc.get("tags") or {}).items())],
        "groups": [{"group": g, "source": v.get("source"), "rule_id": v.get("rule_id")}
                   for g, v in sorted((doc.get("groups") or {}).items())],
        "country": (doc.get("contact") or {}).get("country", ""),
        "email_domain": (doc.get("contact") or {}).get("email_domain", ""),
    }


class Recomputer(DependencyProvider):
    """Recomputes every store every SEGMENT_RECOMPUTE_MINUTES: a customer drifts into At Risk
    by not ordering, which no event announces."""

    def setup(self) -> None:
        self.minutes = from_nameko(self.container.config).float("SEGMENT_RECOMPUTE_MINUTES")
        self._running = False
        self._thread = None

    def start(self) -> None:
        self._running = True
        self._thread = self.container.spawn_managed_thread(self._loop, identifier="recomputer")

    def _loop(self) -> None:
        storage = next(d for d in self.container.dependencies
                       if isinstance(d, MongoStorage)).repositories
        outbox = next(d for d in self.container.dependencies if isinstance(d, OutboxRelayProvider))
        while self._running:
            eventlet.sleep(self.minutes * 60)
            for store_id in storage.profiles.collection.distinct("store_id"):
                try:
                    counts = Profiles(storage).recompute_store(store_id)
                    log.info("recomputed store", extra={"store_id": store_id, **counts})
                except Exception:
                    log.exception("recomputing a store failed; next round retries",
                                  extra={"store_id": store_id})
            outbox.request_sweep()

    def stop(self) -> None:
        self._running = False
        if self._thread is not None:
            self._thread.kill()

    def kill(self) -> None:
        self.stop()

    def get_dependency(self, worker_ctx) -> None:
        return None


class SegmentationService(DataOwnerRpc):
    name = "segmentation"

    storage = MongoStorage(_storage)
    outbox = OutboxRelayProvider(lambda storage: storage.outbox_collections())
    log_context = WorkerLogContext()
    settings = Settings()
    recomputer = Recomputer()
    customer_sync = RpcProxy("customer_sync")

    def _done(self, change) -> None:
        self.outbox.notify(change.touched)

    def _existing(self, store_id: str, customer_ids: list[str]) -> set[str]:
        """Which customers a tag or group may name: a profile held here (made from
        customer_sync's events) says so; customer_sync answers for anyone whose events have
        not arrived yet. Everyone else is not found, and no profile is made for them."""
        check = CustomerCheck.over_rpc(self.customer_sync, self.settings)

        def held_here(customer_id: str) -> bool:
            profile = self.storage.profiles.get(store_id, customer_id)
            return profile is not None and profile.get("status") != ERASED

        return check.existing(store_id, customer_ids, held_here)

    def _require_customer(self, store_id: str, customer_id) -> str:
        customer_id = valid_customer_id(customer_id)
        if not self._existing(store_id, [customer_id]):
            raise not_found(store_id, customer_id)
        return customer_id

    # -- events in ---------------------------------------------------------------------------
    # No claims (shared/messaging/handlers.py): each is a compare-and-set of the profile
    # keyed by the fact the event brings (an order's state, the contact as of a time), which a
    # duplicate finds already held; two database writes per event fewer.
    @event_handler("customer_sync", "order.placed", claims=False)
    def on_order_placed(self, event):
        self._done(Profiles(self.storage).apply_order_event(event))

    @event_handler("customer_sync", "order.updated", claims=False)
    def on_order_updated(self, event):
        self._done(Profiles(self.storage).apply_order_event(event))

    @event_handler("customer_sync", "order.refunded", claims=False)
    def on_order_refunded(self, event):
        self._done(Profiles(self.storage).apply_order_event(event))

    @event_handler("customer_sync", "order.cancelled", claims=False)
    def on_order_cancelled(self, event):
        self._done(Profiles(self.storage).apply_order_event(event))

    @event_handler("customer_sync", "customer.created", claims=False)
    def on_customer_created(self, event):
        self._done(Profiles(self.storage).apply_customer_event(event))

    @event_handler("customer_sync", "customer.updated", claims=False)
    def on_customer_updated(self, event):
        self._done(Profiles(self.storage).apply_customer_event(event))

    @event_handler("customer_sync", "customer.merged")
    def on_customer_merged(self, event):
        self._done(Profiles(self.storage).apply_merge(event))

    @event_handler("customer_sync", "customer.deleted", claims=False)
    def on_customer_deleted(self, event):
        self._done(Profiles(self.storage).apply_customer_deleted(event))

    @event_handler("gdpr", "gdpr.erasure_requested")
    def on_erasure_requested(self, event):
        self._done(handle_erasure_requested(Profiles(self.storage), event, self._drop_parked))


    # -- RPC -------------------------------------------------------------------------------

    def _profile(self, store_id: str, customer_id: str) -> dict:
        doc = self.storage.profiles.get(store_id, customer_id)
        if doc is None or doc.get("status") == ERASED:
            raise NotFound(f"no profile for customer {customer_id} in store {store_id}")
        return doc

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def get_profile(self, store_id: str, customer_id: str) -> dict:
        """Stats, segment, tags and groups; `status` says whether the shop deleted them."""
        return profile_view(self._profile(store_id, customer_id))

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def tag(self, store_id: str, customer_id: str, tags, actor: str | None = None) -> dict:
        slugs = _tags(tags)
        customer_id = self._require_customer(store_id, customer_id)
        self._done(Profiles(self.storage).set_tags(store_id, customer_id, add=slugs,
                                                   actor=actor))
        return self.get_profile(store_id, customer_id)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def untag(self, store_id: str, customer_id: str, tags, actor: str | None = None) -> dict:
        customer_id = valid_customer_id(customer_id)
        self._profile(store_id, customer_id)
        self._done(Profiles(self.storage).set_tags(store_id, customer_id, remove=_tags(tags),
                                                   actor=actor))
        return self.get_profile(store_id, customer_id)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def bulk_tag(self, store_id: str, customer_ids: list, tags, actor: str | None = None) -> dict:
        """Tag many customers; answers each customer's outcome."""
        slugs = _tags(tags)
        if not isinstance(customer_ids, list):
            raise ValidationError("customer_ids must be a non-empty list",
                                  {"fields": {"customer_ids": ["required"]}})
        customer_ids = valid_customer_ids([str(c) for c in customer_ids])
        existing = self._existing(store_id, customer_ids)
        profiles = Profiles(self.storage)
        results = {}
        for customer_id in customer_ids:
            if customer_id not in existing:
                results[customer_id] = "not found"
                continue
            try:
                change = profiles.set_tags(store_id, customer_id, add=slugs, actor=actor)
            except Conflict as exc:
                results[customer_id] = f"refused: {exc}"
                continue
            self._done(change)
            results[customer_id] = "tagged" if change.events else "unchanged"
        return {"results": results}

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def recompute_store(self, store_id: str) -> dict:
        """Recompute every profile of a store now (the hourly timer does this too)."""
        counts = Profiles(self.storage).recompute_store(store_id)
        self.outbox.request_sweep()  # bulk-written profiles owe their events: publish them now
        return counts

    # -- groups ------------------------------------------------------------------------------
    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def save_group(self, store_id: str, group: dict) -> dict:
        """A named group with a description and benefits other systems read (discount
        percent, free-shipping threshold in minor units, payment terms in days)."""
        saved = load_group(group)
        self.storage.groups.replace_one({"store_id": store_id, "slug": saved["slug"]},
                                        {**saved, "store_id": store_id}, upsert=True)
        return saved

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def list_groups(self, store_id: str) -> list:
        """Saved groups by slug, each with `customers`: how many active customers are in it."""
        from services.segmentation.directory import member_counts

        counts = member_counts(self.storage.profiles.collection, store_id, "group_list")
        return [{**group, "customers": counts.get(group["slug"], 0)}
                for group in self.storage.groups.find({"store_id": store_id},
                                                      {"_id": 0, "store_id": 0}).sort("slug", 1)]

    # -- the customer list (the gateway's directory) ------------------------------------------
    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def search_customers(self, store_id: str, filters: dict | None = None,
                         sort: dict | None = None, page: dict | None = None) -> dict:
        """A page of the store's active customers, filtered by contact fields, segment, tags,
        groups and stats, sorted, with a keyset cursor: {"items", "next_cursor", "total"}."""
        from services.segmentation.directory import search_customers

        saved = (filters or {}).get("saved_segment") if isinstance(filters, dict) else None
        if isinstance(saved, str) and self.storage.saved_segments.get(store_id, saved) is None:
            raise ValidationError(f"no saved segment {saved} in store {store_id}",
                                  {"fields": {"filters": {"saved_segment": ["not found"]}}})
        return search_customers(self.storage.profiles.collection, store_id, filters, sort, page)

    # -- the tag catalogue ---------------------------------------------------------------------
    def _catalogue(self) -> TagCatalogue:
        return TagCatalogue(self.storage, Profiles(self.storage))

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def list_tags(self, store_id: str) -> list:
        """Every tag of the store (catalogued, or carried by a customer) by tag: its
        description and how many active customers carry it."""
        return self._catalogue().list(store_id)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def create_tag(self, store_id: str, tag, description=None, actor: str | None = None) -> dict:
        return self._catalogue().create(store_id, tag, description, actor)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def update_tag(self, store_id: str, tag, changes, actor: str | None = None) -> dict:
        """Rename (`new_tag`: every carrier follows) and/or describe (`description`) a tag;
        answers the tag and `renamed`: how many customers now carry the new name."""
        if not isinstance(changes, dict) or not changes or \
                set(changes) - {"new_tag", "description"}:
            raise ValidationError("changes must hold new_tag and/or description",
                                  {"fields": {"changes": ["new_tag, description"]}})
        catalogue = self._catalogue()
        tag = tag_slug(tag)
        if "description" in changes:
            description_text(changes["description"])  # refused before anything is renamed
        renamed = 0
        if "new_tag" in changes:
            _, change = catalogue.rename(store_id, tag, changes["new_tag"], actor)
            self.outbox.notify(change.touched)
            tag, renamed = tag_slug(changes["new_tag"], "new_tag"), change.customers
        if "description" in changes:
            catalogue.describe(store_id, tag, changes["description"])
        return {**catalogue.get(store_id, tag), "renamed": renamed}

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def delete_tag(self, store_id: str, tag, actor: str | None = None) -> dict:
        """Take the tag off every customer and out of the catalogue; says how many."""
        change = self._catalogue().delete(store_id, tag, actor)
        self.outbox.notify(change.touched)
        return {"deleted": tag_slug(tag), "customers": change.customers}

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def add_to_group(self, store_id: str, customer_ids: list, group: str,
                     actor: str | None = None) -> dict:
        return self._membership(store_id, customer_ids, group, actor, join=True)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def remove_from_group(self, store_id: str, customer_ids: list, group: str,
                          actor: str | None = None) -> dict:
        return self._membership(store_id, customer_ids, group, actor, join=False)

    def _membership(self, store_id, customer_ids, group, actor, join: bool) -> dict:
        slug = _tags([group])[0]
        if self.storage.groups.find_one({"store_id": store_id, "slug": slug}) is None:
            raise NotFound(f"no group {slug} in store {store_id}: save_group first")
        if isinstance(customer_ids, str):
            customer_ids = [customer_ids]
        if not isinstance(customer_ids, list):
            raise ValidationError("customer_ids must be a non-empty list",
                                  {"fields": {"customer_ids": ["required"]}})
        customer_ids = valid_customer_ids([str(c) for c in customer_ids])
        existing = self._existing(store_id, customer_ids)
        profiles = Profiles(self.storage)
        results = {}
        for customer_id in customer_ids:
            if customer_id not in existing:
                results[customer_id] = "not found"
                continue
            try:
                change = (profiles.set_groups(store_id, customer_id, add=[slug], actor=actor)
                          if join else
                          profiles.set_groups(store_id, customer_id, remove=[slug], actor=actor))
            except Conflict as exc:
                results[customer_id] = f"refused: {exc}"
                continue
            self._done(change)
            results[customer_id] = "changed" if change.events else "unchanged"
        return {"results": results}

    # -- reports and GDPR -----------------------------------------------------------------------
    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def report(self, store_id: str, period: str = "month") -> dict:
        from services.segmentation.reports import PERIODS, store_report

        if period not in PERIODS:
            raise ValidationError(f"period must be one of {', '.join(PERIODS)}",
                                  {"fields": {"period": ["invalid"]}})
        profiles = self.storage.profiles.collection.find(
            {"store_id": store_id, "status": "active"},
            {"stats": 1, "segment": 1, "groups": 1})
        return {"store_id": store_id, **store_report(profiles, utcnow(), period)}

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def export_customer(self, store_id: str, customer_id: str) -> dict:
        """Everything segmentation holds about one person (GDPR access and portability)."""
        doc = self._profile(store_id, customer_id)
        orders = [{"order_id": order_id, **{k: (v.isoformat() if hasattr(v, "isoformat") else v)
                                            for k, v in fact.items()}}
                  for order_id, fact in sorted((doc.get("orders") or {}).items())]
        contact = {k: (v.isoformat() if hasattr(v, "isoformat") else v)
                   for k, v in (doc.get("contact") or {}).items()}
        return {"service": "segmentation", "profile": profile_view(doc), "rfm": doc.get("rfm"),
                "saved_segments": doc.get("saved_segments") or [], "contact": contact,
                "orders": orders}

    # -- saved segments -------------------------------------------------------------------------
    def _saved_segments(self) -> SavedSegments:
        return SavedSegments(self.storage.saved_segments)

    def _recompute_now(self, store_id: str) -> None:
        """A saved segment or a threshold written: every profile of the store is evaluated
        against it once now (events keep it current after that), and what is owed published."""
        Profiles(self.storage).recompute_store(store_id)
        self.outbox.request_sweep()

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def save_segment(self, store_id: str, segment: dict) -> dict:
        """A saved custom segment, e.g. last order in November or December, an order over
        100.00, tagged gift (refused with the failing field named)."""
        saved = self._saved_segments().create(store_id, segment)
        self._recompute_now(store_id)
        return saved

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def update_segment(self, store_id: str, segment_id: str, segment: dict) -> dict:
        """Change a saved segment's name, match or conditions, validated as on create."""
        saved = self._saved_segments().update(store_id, segment_id, segment)
        self._recompute_now(store_id)
        return saved

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def delete_segment(self, store_id: str, segment_id: str) -> dict:
        deleted = self._saved_segments().delete(store_id, segment_id)
        self.storage.profiles.forget_saved_segment(store_id, deleted["deleted"])
        return deleted

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def get_segment(self, store_id: str, segment_id: str) -> dict:
        return self._saved_segments().get(store_id, segment_id)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def list_segments(self, store_id: str) -> list:
        """Saved segments by name, each with `customers`: how many active customers are in it."""
        from services.segmentation.directory import member_counts

        counts = member_counts(self.storage.profiles.collection, store_id, "saved_segments")
        return [{**segment, "customers": counts.get(segment["segment_id"], 0)}
                for segment in self._saved_segments().list(store_id)]

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def segment_members(self, store_id: str, segment_id: str, page: dict | None = None) -> dict:
        """Members of a built-in segment (vip, new, ...) or a saved one, a page at a time:
        page = {"size": 50, "cursor": null}; answers items and next_cursor."""
        page = page or {}
        size = page_size(page, default=50)
        definition = self._saved_segments().definition(store_id, segment_id)
        docs, next_cursor = Profiles(self.storage).members(store_id, definition,
                                                           page.get("cursor"), size)
        return {"items": [profile_view(d) for d in docs], "next_cursor": next_cursor}

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
        from services.segmentation.rules import validate_rule

        saved = validate_rule(rule)
        saved["rule_id"] = saved.get("rule_id") or uuid.uuid4().hex[:12]
        self.storage.rules.replace_one({"_id": f"{store_id}:{saved['rule_id']}"},
                                       {**saved, "store_id": store_id}, upsert=True)
        return saved

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def list_rules(self, store_id: str) -> list:
        rules = self.storage.rules.find({"store_id": store_id}, {"_id": 0, "store_id": 0})
        return sorted(rules, key=lambda r: (r.get("position", 0), r.get("rule_id", "")))

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def delete_rule(self, store_id: str, rule_id: str) -> dict:
        result = self.storage.rules.delete_one({"_id": f"{store_id}:{rule_id}"})
        if not result.deleted_count:
            raise NotFound(f"no rule {rule_id} in store {store_id}")
        return {"deleted": rule_id}
