"""Segmentation's write side: customer and order events in, profile changes and events out.

Each incoming event updates one profile document by compare-and-set: the fact it brings (an
order's latest state, the customer's contact data), then everything derived from the facts
(stats, segment, rule-driven tags and groups), with the events those changes owe in the same
write. An event older than the fact already held (by `occurred_at`) changes nothing, so
redelivered and out-of-order events are harmless; an unchanged result publishes nothing.
Order events also come as a batch (`apply_order_events`): each profile's events applied in
memory by the same deciding code, then all profiles stored with one bulk write.
"""
from __future__ import annotations

import copy
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable, Iterable, Sequence

from pymongo import UpdateOne

from shared.errors import Conflict
from shared.events import Event, build_event
from shared.events.facts import fact_time
from shared.outbox import push_events
from services.segmentation import directory
from services.segmentation import fact_times
from services.segmentation import rules as rule_engine
from services.segmentation import stats as st
from services.segmentation.repository import (ACTIVE, DELETED, ERASED, ProfileWrites,
                                              SegmentationStorage)
from shared.times import utc_ms, utcnow
from shared.conflicts import attempts

log = logging.getLogger(__name__)

_NAMESPACE = uuid.UUID("0c5e7f5e-98a3-4c1b-9a53-2f3b6d7e8a90")

# A profile's life (its states are named in repository.py). Only active profiles are derived
# from (segments, rules, events), recomputed, reported and listed. A deleted customer's profile
# keeps its facts, since the shop keeps their orders; a merged guest's orders live on in the
# registered customer's profile; an erased profile is a marker holding nothing about the
# person, so late events cannot recreate one.
# Everything an erasure removes: every field of a profile but its key and the marker itself.
_PERSONAL_FIELDS = ("orders", "contact", "tags", "groups", "tag_list", "group_list", "segment",
                    "saved_segments",
                    "stats", "rfm", "evaluated_at", "created_at", "merged_into", "deleted_at",
                    "listing", "merges", "outbox")


@dataclass
class ProfileChange:
    events: list[str] = field(default_factory=list)
    touched: list[tuple[str, str]] = field(default_factory=list)

    def merge(self, other: "ProfileChange") -> None:
        """Adds another change's events and touched documents (a batch's are their sum)."""
        self.events.extend(other.events)
        self.touched.extend(other.touched)


# When a held fact was learnt and when it happened: not part of what it says.
_WHEN_KEYS = ("as_of", "fact_at")


def _fact_of(event: Event) -> datetime:
    """When the fact an event brings happened at the shop, or, where it does not say, when it
    was published."""
    return fact_time(event.event_type, event.data) or event.occurred_at


def contact_facts(data: dict) -> dict:
    """What a profile keeps of a `customer.*` event's contact fields: what the customer list
    (directory.py) shows and filters on, and what rules see (country, email domain). Names,
    email and company fall back to the billing address (a guest has only that)."""
    billing = data.get("billing") or {}

    def text(value) -> str:
        return (value or "").strip() if isinstance(value, str) else ""

    email = text(data.get("email")) or text(billing.get("email"))
    email_key = email.lower()
    return {
        "first_name": text(data.get("first_name")) or text(billing.get("first_name")),
        "last_name": text(data.get("last_name")) or text(billing.get("last_name")),
        "email": email, "email_key": email_key,
        "email_domain": email_key.rsplit("@", 1)[-1] if "@" in email_key else "",
        "company": text(data.get("company")) or text(billing.get("company")),
        "city": text(billing.get("city")), "state": text(billing.get("state")),
        "postcode": text(billing.get("postcode")),
        "country": text(billing.get("country")).upper(),
        "account_status": data.get("account_status") or ACTIVE,
        "registered": bool(data.get("registered")),
        "date_created": utc_ms(data.get("date_created")),
        # The store's own fields (docs/custom-fields.md): the list filters on them.
        "custom_fields": dict(data.get("custom_fields") or {}),
        # The company (B2B) in customer_sync: the list filters on it, company_stats adds up by it.
        "company_id": data.get("company_id") or None,
    }


def _comparable(contact: dict) -> dict:
    """Contact facts as compared: times to the millisecond, as a stored copy holds them."""
    return {k: (utc_ms(v) if isinstance(v, datetime) else v)
            for k, v in contact.items()}


def order_facts(doc: dict) -> list[st.OrderFact]:
    return [
        st.OrderFact(order_id=order_id, status=o["status"], total=o["total"], refunded=o["refunded"],
                     currency=o["currency"], date_created=o["date_created"])
        for order_id, o in (doc.get("orders") or {}).items() if o.get("date_created") is not None
    ]


def rule_view(doc: dict, stats: st.Stats, segment: str, now: datetime) -> dict:
    """What rules see of a customer."""
    contact = doc.get("contact") or {}
    return {
        "orders_count": stats.orders_count,
        "total_spent": stats.total_spent,
        "average_order_value": stats.average_order_value,
        "days_since_last_order": st.days_since_last_order(stats, now),
        "avg_days_between_orders": stats.avg_days_between_orders,
        "segment": segment,
        "tags": set(doc.get("tags") or {}),
        "groups": set(doc.get("groups") or {}),
        "country": contact.get("country", ""),
        "email_domain": contact.get("email_domain", ""),
        "largest_order": stats.largest_order,
        "last_order_month": stats.last_order_at.month if stats.last_order_at else None,
        # The store's own fields, as the last customer event carried them: `custom.<key>`.
        "custom_fields": contact.get("custom_fields") or {},
    }


def _order_change(event: Event) -> tuple[str | None, Callable[[dict], bool]]:
    """The customer an order event is about (None for an order without one) and the change it
    makes to their profile: the order's state as the event tells it, unless an older state
    than the one held or the same."""
    data = event.data
    fact = {"status": data["status"], "total": data["total"]["amount"],
            "refunded": data["total_refunded"]["amount"], "currency": data["currency"],
            "date_created": data["date_created"], "as_of": event.occurred_at,
            "fact_at": _fact_of(event)}
    compared = [k for k in fact if k not in _WHEN_KEYS]

    def change(doc: dict) -> bool:
        held = (doc.get("orders") or {}).get(data["order_id"])
        if held is not None and held.get("as_of") and held["as_of"] > event.occurred_at:
            return False  # an older state of this order than the one held
        if held is not None and {k: held.get(k) for k in compared} == \
                {k: fact[k] for k in compared}:
            return False
        doc.setdefault("orders", {})[data["order_id"]] = fact
        return True

    return data.get("customer_id") or None, change


def _customer_change(event: Event) -> tuple[str, Callable[[dict], bool]]:
    """The customer a `customer.created`/`updated` event is about and the change it makes to
    their profile: the contact as of the event, unless an older one than held or the same; a
    deleted profile comes back for a customer seen after their deletion."""
    data = event.data
    contact = {**contact_facts(data), "as_of": event.occurred_at, "fact_at": _fact_of(event)}

    def change(doc: dict) -> bool:
        held = doc.get("contact") or {}
        if held.get("as_of") and held["as_of"] > event.occurred_at:
            return False
        if doc.get("status") == DELETED:
            if doc.get("deleted_at") >= event.occurred_at:
                return False  # older than the deletion: delivered late
            doc["status"], doc["deleted_at"] = ACTIVE, None  # the shop has them again
        elif _comparable({k: held.get(k) for k in contact if k not in _WHEN_KEYS}) == \
                _comparable({k: v for k, v in contact.items() if k not in _WHEN_KEYS}):
            return False
        doc["contact"] = contact
        return True

    return data["customer_id"], change


@dataclass
class ProfileStep:
    """One write of the write path: the profile's new facts and derived fields, and the
    events it owes."""

    doc_id: str
    working: dict
    fields: dict
    events: list[Event]

    def result(self, held: dict | None) -> dict:
        """The profile as this write leaves it (owed events aside), from the one it read."""
        if held is None:
            return {**self.working, **self.fields, "version": 1}
        return {**held, **self.fields, "version": held["version"] + 1}

    def change(self) -> ProfileChange:
        return ProfileChange([e.event_type for e in self.events],
                             [("profiles", self.doc_id)] if self.events else [])


@dataclass(frozen=True)
class StoreContext:
    """What a profile's derived state depends on beyond its own facts."""

    thresholds: st.Thresholds
    vip_cutoff: int | None
    rfm_cutoffs: dict
    rules: list
    saved_segments: tuple = ()  # the store's saved segments, whose membership a profile keeps


def _before(doc: dict) -> dict:
    return {"tags": dict(doc.get("tags") or {}), "groups": dict(doc.get("groups") or {}),
            "segment": doc.get("segment"), "saved_segments": list(doc.get("saved_segments") or [])}


class Profiles:
    """The use cases: apply events, tag by hand, re-evaluate (the hourly drift check)."""

    def __init__(self, storage: SegmentationStorage, clock: Callable[[], datetime] = utcnow) -> None:
        self.storage = storage
        self.clock = clock

    # -- store-wide inputs --------------------------------------------------------------
    def _context(self, store_id: str) -> "StoreContext":
        settings = self.storage.settings.get(store_id)
        rules = self.storage.enabled_rules(store_id)
        return StoreContext(st.Thresholds.from_dict(settings.get("thresholds") or {}),
                            settings.get("vip_cutoff"), settings.get("rfm_cutoffs") or {}, rules,
                            tuple(self.storage.saved_segments.for_store(store_id)))

    # -- events in ----------------------------------------------------------------------
    def apply_order_event(self, event: Event) -> ProfileChange:
        customer_id, change = _order_change(event)
        if not customer_id:
            return ProfileChange()  # an order with no customer (no billing email) has no profile
        return self._update(event.store_id, customer_id, change, event)

    def apply_order_events(self, events: Sequence[Event]) -> ProfileChange:
        """Order events in delivery order, with the effects of applying them one by one: one
        read of their profiles, each profile's events applied in memory in order, and one bulk
        write of inserts and compare-and-sets. A profile another writer changed meanwhile
        takes the one-event path for its events, which finds what was applied already held."""
        return self._apply_batch(events, _order_change, self.apply_order_event)

    def apply_customer_events(self, events: Sequence[Event]) -> ProfileChange:
        """`customer.created` and `customer.updated` events in delivery order, as
        `apply_order_events` applies orders: one read, one bulk write, the same effects as
        `apply_customer_event` one by one."""
        return self._apply_batch(events, _customer_change, self.apply_customer_event)

    def _apply_batch(self, events: Sequence[Event],
                     change_of: Callable[[Event], tuple[str | None, Callable[[dict], bool]]],
                     one_event: Callable[[Event], ProfileChange]) -> ProfileChange:
        profiles = self.storage.profiles
        # By the profile's key, as the one-event path reads: events whose store and customer
        # ids spell the same key change the same document, in delivery order.
        by_profile: dict[str, list[tuple[Event, str, Callable[[dict], bool]]]] = {}
        for event in events:
            customer_id, change = change_of(event)
            if customer_id:
                by_profile.setdefault(profiles.key(event.store_id, customer_id), []).append(
                    (event, customer_id, change))
        if not by_profile:
            return ProfileChange()
        contexts = {store_id: self._context(store_id) for store_id in dict.fromkeys(
            event.store_id for changes in by_profile.values() for event, _, _ in changes)}
        stored = profiles.get_many(list(by_profile))
        writes: list[ProfileWrites] = []
        for doc_id, changes in by_profile.items():
            planned = self._plan(doc_id, stored.get(doc_id), changes, contexts)
            if planned.steps:
                writes.append(planned)
        lost = profiles.write_many(writes)
        result = ProfileChange()
        for planned in writes:
            if planned.doc_id in lost:
                for event, _, _ in by_profile[planned.doc_id]:
                    result.merge(one_event(event))
            else:
                for step in planned.steps:
                    result.merge(step.change())
        return result

    def _plan(self, doc_id: str, stored: dict | None,
              changes: list[tuple[Event, str, Callable[[dict], bool]]],
              contexts: dict[str, "StoreContext"]) -> ProfileWrites:
        """One profile's changes applied in memory, in order, each to the profile as the one
        before left it stored: the writes the one-event path would have made."""
        planned = ProfileWrites(doc_id, stored)
        held = stored
        for cause, customer_id, change in changes:
            step = self._step(held, cause.store_id, customer_id, change,
                              contexts[cause.store_id], cause)
            if step is None:
                continue
            planned.steps.append(step)
            held = self.storage.profiles.as_stored(step.result(held))
        return planned

    def apply_customer_event(self, event: Event) -> ProfileChange:
        customer_id, change = _customer_change(event)
        return self._update(event.store_id, customer_id, change, event)

    def apply_customer_deleted(self, event: Event) -> ProfileChange:
        """The shop deleted the customer. Their orders stay in the shop, so the profile keeps
        its facts, but it leaves every segment, listing, report and recompute, and publishes
        nothing more. A customer event older than the deletion does not bring it back."""

        def change(doc: dict) -> bool:
            held = doc.get("contact") or {}
            if doc.get("status") != ACTIVE:
                return False
            if held.get("as_of") and held["as_of"] > event.occurred_at:
                return False  # the customer was seen again after this deletion
            doc["status"], doc["deleted_at"] = DELETED, event.occurred_at
            return True

        return self._update(event.store_id, event.data["customer_id"], change, event)

    def erase(self, store_id: str, customer_ids: Iterable[str], request_id: str) -> dict:
        """GDPR erasure: each profile becomes a marker that holds nothing about the person
        (no orders, contact facts, stats, segment, tags, groups or owed events; nor do the
        receipts of its merges), and that any later event for that customer leaves alone. Idempotent; the counts are of what this
        request left erased, so a repeat answers the same."""
        ids = sorted(set(customer_ids))
        erased = self.storage.profiles.mark_erased(store_id, ids, self.clock(), request_id,
                                                   _PERSONAL_FIELDS)
        # Merge receipts copied the tags, groups and orders a merge moved.
        self.storage.merges.forget(store_id, ids)
        return {"profiles": erased}

    def change(self, store_id: str, customer_id: str, change: Callable[[dict], bool],
               cause: Event | None) -> ProfileChange:
        """Another use case's change of one profile's facts (merges.py): `change` edits a copy
        and says whether it did; derivation and owed events follow as for any event."""
        return self._update(store_id, customer_id, change, cause)

    # -- people ---------------------------------------------------------------------------
    def set_tags(self, store_id: str, customer_id: str, add: Iterable[str] = (),
                 remove: Iterable[str] = (), actor: str | None = None) -> ProfileChange:
        return self._set_members("tags", store_id, customer_id, add, remove, actor)

    def set_groups(self, store_id: str, customer_id: str, add: Iterable[str] = (),
                   remove: Iterable[str] = (), actor: str | None = None) -> ProfileChange:
        return self._set_members("groups", store_id, customer_id, add, remove, actor)

    def _set_members(self, kind: str, store_id: str, customer_id: str, add: Iterable[str],
                     remove: Iterable[str], actor: str | None) -> ProfileChange:
        """A person adds or removes tags or groups; rules run afterwards as on any change."""
        add, remove = list(add), list(remove)
        stamp = "added_at" if kind == "tags" else "joined_at"

        def change(doc: dict) -> bool:
            status = doc.get("status", ACTIVE)
            if status != ACTIVE:
                raise Conflict(f"customer {customer_id} is {status}: their {kind} cannot change")
            members = doc.setdefault(kind, {})
            changed = False
            for name in add:
                if name not in members:
                    members[name] = {"source": "manual", "actor": actor, stamp: self.clock()}
                    changed = True
            for name in remove:
                if name in members:
                    del members[name]
                    changed = True
            return changed

        return self._update(store_id, customer_id, change, None, actor=actor, manual=True)

    def change_tags(self, store_id: str, customer_id: str, change: Callable[[dict], bool],
                    actor: str | None = None) -> ProfileChange:
        """A store-wide tag change (tag_catalogue.py) on one profile: `change` edits its tags
        and says whether it did; what it adds or removes is published as a person's tagging."""
        return self._update(store_id, customer_id, change, None, actor=actor, manual=True)

    def recompute_store(self, store_id: str, batch_size: int = 1000,
                        progress: Callable[[int], None] | None = None) -> dict:
        """Recompute every profile of a store: the store-wide figures first (top-10% spend
        cutoff, RFM cut points), then each profile's stats, RFM, segment, tags and groups,
        written in bulk, one compare-and-set update per changed profile with its events.

        Two streaming passes over the profiles (nothing but the stats is held for the whole
        store) and one bulk write per `batch_size` changed profiles. The second pass reads the
        profiles without their orders: everything derived from the orders is in the stats of
        pass 1, which keeps a large store's recompute within memory. A profile changed by an
        event meanwhile fails its compare-and-set and is re-evaluated on its own."""
        started = time.monotonic()
        now = self.clock()
        profiles = self.storage.profiles
        base = self._context(store_id)
        all_stats: dict[str, st.Stats] = {}
        for doc in profiles.orders_of_active(store_id):
            all_stats[doc["_id"]] = st.compute_stats(order_facts(doc))
        cutoff = st.vip_cutoff([s.total_spent for s in all_stats.values()],
                               base.thresholds.vip_top_share)
        rfm_cutoffs = st.store_rfm_cutoffs(all_stats.values(), now)
        self.storage.settings.update(store_id, {"vip_cutoff": cutoff, "rfm_cutoffs": rfm_cutoffs,
                                                "recomputed_at": now})
        context = StoreContext(base.thresholds, cutoff, rfm_cutoffs, base.rules,
                               base.saved_segments)
        counts = {"profiles": 0, "changed": 0, "events": 0, "retried": 0}
        pending: list[tuple[str, int, UpdateOne]] = []

        def flush() -> None:
            if not pending:
                return
            applied = profiles.write_batch([op for _, _, op in pending])
            if applied < len(pending):
                versions = profiles.versions_of([doc_id for doc_id, _, _ in pending])
                for doc_id, version, _ in pending:
                    if versions.get(doc_id) == version:  # lost its compare-and-set: redo alone
                        counts["retried"] += 1
                        self.reevaluate(store_id, profiles.customer_of(doc_id))
            pending.clear()

        for doc in profiles.derived_of_active(store_id):
            counts["profiles"] += 1
            stats = all_stats.get(doc["_id"])
            if stats is None:  # created since pass 1: its orders were not read, so skip it
                continue        # here; the event that created it evaluated it already
            before = _before(doc)
            old = (doc.get("stats"), doc.get("rfm"), doc.get("segment"))
            old_listing = doc.get("listing")
            events = self._derive(doc, before, context, None, None, False, stats=stats)
            if events or (doc.get("stats"), doc.get("rfm"), doc.get("segment")) != old or \
                    not directory.same_listing(old_listing,
                                               directory.listing_keys(doc.get("contact"),
                                                                      doc.get("stats"))):
                counts["changed"] += 1
                counts["events"] += len(events)
                derived = {k: v for k, v in self._fields(doc).items()
                           if k not in ("orders", "contact")}  # facts are untouched here
                update = {"$set": derived, "$inc": {"version": 1}}
                pushed = push_events(events)
                if pushed:
                    update["$push"] = pushed
                pending.append((doc["_id"], doc["version"],
                                UpdateOne({"_id": doc["_id"], "version": doc["version"]}, update)))
                if len(pending) >= batch_size:
                    flush()
            if progress and counts["profiles"] % batch_size == 0:
                progress(counts["profiles"])
        flush()
        counts["seconds"] = round(time.monotonic() - started, 3)
        counts["vip_cutoff"] = cutoff
        return counts

    def members(self, store_id: str, definition: dict, after: str | None, size: int
                ) -> tuple[list[dict], str | None]:
        """Customers matching a saved segment's conditions, in customer-id order, a page at a
        time. Conditions are evaluated on each profile's stored stats (as of its last
        evaluation), scanning the store's profiles from the cursor on."""
        now = self.clock()
        found: list[dict] = []
        for doc in self.storage.profiles.active_from(store_id, after):
            if not doc.get("stats"):
                continue
            stats = st.Stats.from_dict(doc["stats"])
            if rule_engine.evaluate(definition, rule_view(doc, stats, doc.get("segment"), now)):
                found.append(doc)
                if len(found) > size:
                    break
        more = len(found) > size
        found = found[:size]
        return found, (found[-1]["customer_id"] if more and found else None)

    def reevaluate(self, store_id: str, customer_id: str) -> ProfileChange:
        """Recompute derived state only (segments drift with time; settings or rules changed)."""
        return self._update(store_id, customer_id, lambda doc: False, None)

    # -- the one write path ---------------------------------------------------------------
    def _update(self, store_id: str, customer_id: str, change: Callable[[dict], bool],
                cause: Event | None, actor: str | None = None, manual: bool = False
                ) -> ProfileChange:
        profiles = self.storage.profiles
        context = self._context(store_id)
        for _ in attempts(f"profile {customer_id}"):
            stored = profiles.get(store_id, customer_id)
            step = self._step(stored, store_id, customer_id, change, context, cause, actor,
                              manual)
            if step is None:
                return ProfileChange()
            if stored is None:
                ok = profiles.insert({**step.working, **step.fields, "version": 0}, step.events)
            else:
                ok = profiles.update(stored["_id"], stored["version"], step.fields, step.events)
            if ok:
                return step.change()

    def _step(self, stored: dict | None, store_id: str, customer_id: str,
              change: Callable[[dict], bool], context: "StoreContext", cause: Event | None,
              actor: str | None = None, manual: bool = False) -> ProfileStep | None:
        """What one change makes of a profile as read, or None when there is nothing to
        write: the deciding half of the write path, shared by one event and a batch."""
        if stored is not None and stored.get("status") == ERASED:
            return None  # forgotten: nothing about them is kept again
        doc = stored if stored is not None else self.storage.profiles.new(store_id, customer_id)
        before = _before(doc)
        working = copy.deepcopy(doc)
        fact_changed = change(working)
        if working.get("status", ACTIVE) == ACTIVE:
            events = self._derive(working, before, context, cause, actor, manual)
        else:
            events = []  # deleted or merged: facts are kept, nothing is derived or said
        derived_changed = (working.get("stats"), working.get("rfm")) != (
            doc.get("stats"), doc.get("rfm"))
        if not fact_changed and not events and not derived_changed and stored is not None:
            return None
        return ProfileStep(doc["_id"], working, self._fields(working), events)

    def _fields(self, working: dict) -> dict:
        fields = {k: working.get(k) for k in ("orders", "contact", "tags", "groups", "segment",
                                              "stats", "rfm")}
        fields["saved_segments"] = working.get("saved_segments") or []
        fields["status"] = working.get("status", ACTIVE)
        fields["deleted_at"] = working.get("deleted_at")
        fields["merged_into"] = working.get("merged_into")
        fields["merges"] = working.get("merges") or []  # merges.py: merge keys applied here
        fields["tag_list"] = sorted(working.get("tags") or {})
        fields["group_list"] = sorted(working.get("groups") or {})
        # the customer list's sort and filter keys (directory.py), kept with what they derive from
        fields["listing"] = directory.listing_keys(working.get("contact"), working.get("stats"))
        fields["evaluated_at"] = self.clock()
        return fields

    def _derive(self, doc: dict, before: dict, context: StoreContext, cause: Event | None,
                actor: str | None, manual: bool, stats: st.Stats | None = None) -> list[Event]:
        now = self.clock()
        rules = context.rules
        stats = stats or st.compute_stats(order_facts(doc))
        segment = st.classify(stats, now, context.thresholds, context.vip_cutoff)
        doc["stats"] = stats.to_dict()
        doc["segment"] = segment
        doc["rfm"] = st.rfm_scores(stats, now, context.rfm_cutoffs) if context.rfm_cutoffs else None
        # Rules see the profile as it now is, and act in their defined order.
        view = rule_view(doc, stats, segment, now)
        attribution: dict[tuple[str, str], str] = {}
        for action in rule_engine.plan_actions(rules, view):
            attribution[(action["type"], action["value"])] = action.get("rule_id")
        tags_after, groups_after = rule_engine.resulting_state(rules, view)
        tags = doc.setdefault("tags", {})
        for tag in list(tags):
            if tag not in tags_after:
                del tags[tag]
        for tag in tags_after:
            tags.setdefault(tag, {"source": "rule",
                                  "rule_id": attribution.get(("add_tag", tag)),
                                  "added_at": now})
        groups = doc.setdefault("groups", {})
        for group in list(groups):
            if group not in groups_after:
                del groups[group]
        for group in groups_after:
            groups.setdefault(group, {"source": "rule",
                                      "rule_id": attribution.get(("join_group", group)),
                                      "joined_at": now})
        # Saved segments see the customer as the rules left them.
        after = rule_view(doc, stats, segment, now)
        doc["saved_segments"] = sorted(s["segment_id"] for s in context.saved_segments
                                       if rule_engine.evaluate(s, after))
        changed = (doc["segment"] != before["segment"] or set(tags) != set(before["tags"])
                   or set(groups) != set(before["groups"])
                   or doc["saved_segments"] != before["saved_segments"])
        fact_at = self._fact_at(doc, stats, context, cause, manual, now) if changed else now
        names = {s["segment_id"]: s.get("name", "") for s in context.saved_segments}
        return self._events(doc, before, stats, cause, actor, manual, attribution, fact_at,
                            names)

    @staticmethod
    def _fact_at(doc: dict, stats: st.Stats, context: StoreContext, cause: Event | None,
                 manual: bool, now: datetime) -> datetime:
        """When what this derivation changes became true (fact_times.py): a person's action
        now; an event that dates its fact (an order, a sign-up), that fact's time; anything
        else, the newest fact held or the clock's last turn."""
        if manual:
            return now
        if cause is not None:
            dated = fact_time(cause.event_type, cause.data)
            if dated is not None:
                return dated
        # A store's recompute reads profiles without their orders: their stats date the last.
        held = [stats.last_order_at, *(o.get("fact_at") or o.get("date_created")
                                       for o in (doc.get("orders") or {}).values())]
        contact = doc.get("contact") or {}
        held.append(contact.get("fact_at") or contact.get("date_created"))
        def state_at(moment: datetime) -> tuple:
            segment = st.classify(stats, moment, context.thresholds, context.vip_cutoff)
            tags, groups = rule_engine.resulting_state(
                context.rules, rule_view(doc, stats, segment, moment))
            return segment, frozenset(tags), frozenset(groups)

        turns = fact_times.clock_turns(stats, context.thresholds, context.rules)
        return fact_times.derived_fact_at(held, turns, now, state_at)

    def _events(self, doc: dict, before: dict, stats: st.Stats, cause: Event | None,
                actor: str | None, manual: bool, attribution: dict,
                fact_at: datetime, segment_names: dict | None = None) -> list[Event]:
        store_id, customer_id, version = doc["store_id"], doc["customer_id"], doc.get("version", 0)
        correlation = cause.correlation_id if cause else None
        causation = cause.event_id if cause else None

        def make(event_type: str, data: dict, *parts: object) -> Event:
            event_id = str(uuid.uuid5(_NAMESPACE, ":".join(
                map(str, (store_id, customer_id, event_type, version, *parts)))))
            data = {**data, "fact_at": fact_at.isoformat()}
            return build_event(event_type, store_id=store_id, data=data, event_id=event_id,
                               correlation_id=correlation or event_id, causation_id=causation,
                               occurred_at=self.clock())

        def source_of(kind: str, value: str) -> dict:
            rule_id = attribution.get((kind, value))
            if rule_id is not None:
                return {"source": "rule", "rule_id": rule_id, "actor": None}
            return {"source": "manual" if manual else "rule", "rule_id": None, "actor": actor}

        events: list[Event] = []
        if doc["segment"] != before["segment"]:
            spent = ({"amount": stats.total_spent, "currency": stats.currency}
                     if stats.currency else None)
            events.append(make("customer.segment_changed", {
                "customer_id": customer_id, "old_segment": before["segment"],
                "new_segment": doc["segment"], "orders_count": stats.orders_count,
                "total_spent": spent}))
        for tag in sorted(set(doc["tags"]) - set(before["tags"])):
            events.append(make("customer.tagged", {"customer_id": customer_id, "tag": tag,
                                                   **source_of("add_tag", tag)}, tag))
        for tag in sorted(set(before["tags"]) - set(doc["tags"])):
            events.append(make("customer.untagged", {"customer_id": customer_id, "tag": tag,
                                                     **source_of("remove_tag", tag)}, tag))
        for group in sorted(set(doc["groups"]) - set(before["groups"])):
            events.append(make("customer.group_joined", {"customer_id": customer_id,
                                                         "group": group,
                                                         **source_of("join_group", group)}, group))
        for group in sorted(set(before["groups"]) - set(doc["groups"])):
            events.append(make("customer.group_left", {"customer_id": customer_id, "group": group,
                                                       **source_of("leave_group", group)}, group))
        names = segment_names or {}
        was, now_in = set(before["saved_segments"]), set(doc.get("saved_segments") or [])
        for segment_id in sorted(now_in - was):
            events.append(make("customer.saved_segment_entered", {
                "customer_id": customer_id, "segment_id": segment_id,
                "name": names.get(segment_id, "")}, segment_id))
        for segment_id in sorted(was - now_in):
            if segment_id in names:  # a deleted segment is no one's to leave
                events.append(make("customer.saved_segment_left", {
                    "customer_id": customer_id, "segment_id": segment_id,
                    "name": names[segment_id]}, segment_id))
        return events
