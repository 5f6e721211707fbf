"""Companies (B2B): a store's company records and their members, the customers whose
`company_id` names them (crm/company_rules.py says what a record may hold; docs/companies.md
tells staff). A customer's membership rides on the customer document and in every
`customer.*` event, so it is written, like custom values, through the outbox with a timeline
entry."""
from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import Any, Callable

from services.customer_sync.core.sync import CustomerSync, customer_event_data
from services.customer_sync.core.written import DocumentRef, Written, written
from services.customer_sync.crm.company_matching import CompanyMatching
from services.customer_sync.crm.company_rules import (EDITABLE_FIELDS, MATCH_EMAIL_DOMAIN,
                                                      MAX_COMPANIES, MAX_NAMES_ASKED,
                                                      email_domain, joins_by_domain,
                                                      load_changes, load_company,
                                                      load_list_filters, load_matching,
                                                      load_page, name_key, new_company_id,
                                                      valid_company_id)
from services.customer_sync.crm.field_rules import check_values
from services.customer_sync.crm.timeline import entry_id, make_entry
from services.customer_sync.repository import CustomerSyncStorage
from services.customer_sync.schemas import require_text
from shared.conflicts import CONFLICT_RETRIES
from shared.customers import valid_customer_id
from shared.errors import Conflict, NotFound, ValidationError
from shared.paging import decode_cursor, encode_cursor
from shared.times import iso, to_millis, utcnow

log = logging.getLogger(__name__)

COMPANY_FIELD = "company_id"
# Members released, or customers swept, a round trip: each one a compare-and-set of its own.
RELEASE_BATCH = 100
SWEEP_BATCH = 200

# Which definitions a record's values are checked against (crm/field_rules.py `applies_to`).
CompanyDefinitions = Callable[[str], dict]


def company_view(doc: dict, member_count: int) -> dict:
    """A company as every RPC answers it (the contract's COMPANY)."""
    return {"company_id": doc["_id"], "store_id": doc["store_id"], "name": doc["name"],
            "domain": doc.get("domain"), "vat_id": doc.get("vat_id"),
            "address": dict(doc.get("address") or {}),
            "custom_fields": doc.get("custom_fields") or {}, "group": doc.get("group"),
            "member_count": member_count,
            "created_at": iso(doc.get("created_at")), "updated_at": iso(doc.get("updated_at")),
            "created_by": doc.get("created_by"), "updated_by": doc.get("updated_by")}


def _not_found(store_id: str, company_id: str) -> NotFound:
    return NotFound(f"no company {company_id} in store {store_id}",
                    {"fields": {COMPANY_FIELD: ["not found"]}})


def _domain_taken() -> Conflict:
    return Conflict("another company of the store has that domain",
                    {"fields": {"domain": ["taken"]}})


class Companies:
    """Company records, membership, and the matching of customers by email domain."""

    def __init__(self, storage: CustomerSyncStorage, sync: CustomerSync,
                 definitions: CompanyDefinitions, matching: CompanyMatching,
                 clock: Callable[[], datetime] = utcnow) -> None:
        """`definitions(store_id)` is the store's custom field definitions for companies."""
        self.storage = storage
        self.sync = sync
        self.definitions = definitions
        self.matching = matching
        self.clock = clock

    # -- records ----------------------------------------------------------------------------
    def list(self, store_id: str, filters: Any = None, page: Any = None) -> dict:
        store_id = require_text(store_id, "store_id")
        loaded = load_list_filters(filters)
        size, cursor = load_page(page)
        after = _decode(cursor) if cursor else None
        docs = self.storage.companies.page(store_id, loaded.get("q"), after, size + 1)
        more = len(docs) > size
        docs = docs[:size]
        counts = self.storage.companies.member_counts(store_id, [d["_id"] for d in docs])
        next_cursor = (encode_cursor({"k": docs[-1]["name_key"], "id": docs[-1]["_id"]})
                       if more else None)
        return {"items": [company_view(d, counts.get(d["_id"], 0)) for d in docs],
                "next_cursor": next_cursor}

    def get(self, store_id: str, company_id: Any) -> dict:
        store_id = require_text(store_id, "store_id")
        doc = self._live(store_id, company_id)
        return self._view(doc)

    def create(self, store_id: str, data: Any, actor: str) -> Written:
        """A new company; Conflict (field `domain`) when the domain is taken, ValidationError
        naming the field otherwise, or past MAX_COMPANIES."""
        store_id, actor = require_text(store_id, "store_id"), require_text(actor, "actor")
        loaded = load_company(data)
        loaded["custom_fields"] = self._values(store_id, loaded["custom_fields"])
        repo = self.storage.companies
        if repo.count(store_id) >= MAX_COMPANIES:
            raise _too_many()
        now = to_millis(self.clock())  # as MongoDB keeps it, so a read answers the same
        doc = {"_id": new_company_id(), "store_id": store_id, **loaded,
               "name_key": name_key(loaded["name"]), "created_at": now, "updated_at": now,
               "created_by": actor, "updated_by": actor}
        if not repo.insert(doc):
            raise _domain_taken()
        if repo.count(store_id) > MAX_COMPANIES:  # two made at once past the bound: undo ours
            repo.collection.delete_one({"_id": doc["_id"]})
            raise _too_many()
        if doc["domain"] and self.matching.enabled(store_id):
            self.matching.request_sweep(store_id)
        return written(company_view({**doc, "version": 1}, 0))

    def update(self, store_id: str, company_id: Any, changes: Any, actor: str) -> Written:
        """Change any field but the ids (null clears an optional one); compare-and-set."""
        store_id, actor = require_text(store_id, "store_id"), require_text(actor, "actor")
        data = load_changes(changes)
        if "custom_fields" in data:
            data["custom_fields"] = self._values(store_id, data["custom_fields"])
        for _ in range(CONFLICT_RETRIES):
            current = self._live(store_id, company_id)
            fields = {k: data[k] for k in EDITABLE_FIELDS if k in data}
            if "name" in fields:
                fields["name_key"] = name_key(fields["name"])
            fields.update(updated_at=to_millis(self.clock()), updated_by=actor)
            done = self.storage.companies.update(store_id, current["_id"], current["version"],
                                                 fields)
            if done is None:
                raise _domain_taken()
            if done:
                if (fields.get("domain") and fields["domain"] != current.get("domain")
                        and self.matching.enabled(store_id)):
                    self.matching.request_sweep(store_id)
                return written(self._view({**current, **fields}))
        raise Conflict("the company kept changing; ask again")

    def delete(self, store_id: str, company_id: Any, actor: str) -> Written:
        """Release every member (each its own `customer.updated`), then remove the record.
        Marked as being deleted first, so a repeat after a crash midway finishes the job."""
        store_id, actor = require_text(store_id, "store_id"), require_text(actor, "actor")
        company_id = valid_company_id(company_id)
        if self.storage.companies.get(store_id, company_id) is None:
            raise _not_found(store_id, company_id)
        self.storage.companies.mark_deleting(store_id, company_id, self.clock(), actor)
        released, touched = self.finish_deletion(store_id, company_id, actor)
        if self.storage.companies.get(store_id, company_id) is None:
            return written({"company_id": company_id, "deleted": True,
                            "members_released": released}, touched)
        # Members kept changing: the record stays marked, and the sweep (or a repeat) ends it.
        return written({"company_id": company_id, "deleted": False, "finishing": True,
                        "members_released": released}, touched)

    def finish_deletion(self, store_id: str, company_id: str, actor: str
                        ) -> tuple[int, list[DocumentRef]]:
        """Release the members of a company being deleted, a batch at a time, then remove it;
        answers how many were released and the customers written. It stops early, the record
        still marked, when a whole batch changed meanwhile."""
        correlation_id = f"staff-company-delete-{uuid.uuid4().hex[:16]}"
        released, touched = 0, []
        while True:
            batch = self.storage.companies.members(store_id, company_id, RELEASE_BATCH)
            if not batch:
                self.storage.companies.remove(store_id, company_id)
                return released, touched
            before = released
            for doc in batch:
                if self._write_company(store_id, doc, company_id, None, actor, correlation_id,
                                       "Left company (the company was deleted)"):
                    released += 1
                    touched.append((self.storage.customers.collection.name, doc["_id"]))
            if released == before:
                # Every member of the batch changed meanwhile: the company stays marked and
                # the next sweep (or a repeat) carries on, rather than this call spinning.
                log.warning("a company's members kept changing while it was deleted",
                            extra={"store_id": store_id, "company_id": company_id})
                return released, touched

    def names(self, store_id: str, company_ids: Any) -> dict:
        """{company_id: name} for the ids that exist (at most MAX_NAMES_ASKED a call)."""
        store_id = require_text(store_id, "store_id")
        if not isinstance(company_ids, list) or len(company_ids) > MAX_NAMES_ASKED:
            raise ValidationError(f"company_ids must be a list of at most {MAX_NAMES_ASKED} ids",
                                  {"fields": {"company_ids": ["list of at most 200"]}})
        ids = list(dict.fromkeys(valid_company_id(i, "company_ids") for i in company_ids))
        return self.storage.companies.names(store_id, ids) if ids else {}

    # -- membership -------------------------------------------------------------------------
    def set_customer_company(self, store_id: str, customer_id: Any, company_id: Any,
                             actor: str) -> Written:
        """Put the customer in the company (None: in none). Publishes `customer.updated`
        naming `company_id`, with a timeline entry, when it changed."""
        store_id, actor = require_text(store_id, "store_id"), require_text(actor, "actor")
        customer_id = valid_customer_id(customer_id)
        if company_id is not None:
            company_id = valid_company_id(company_id)
        correlation_id = f"staff-company-{uuid.uuid4().hex[:16]}"
        for _ in range(CONFLICT_RETRIES):
            doc = self.storage.customers.get(store_id, customer_id)
            if doc is None or doc.get("status") != "active":
                raise NotFound(f"no customer {customer_id} in store {store_id}",
                               {"fields": {"customer_id": ["not found"]}})
            company = None
            if company_id is not None:
                company = self.storage.companies.live(store_id, company_id)
                if company is None:
                    raise _not_found(store_id, company_id)
            answer = {"customer_id": doc["_id"], COMPANY_FIELD: company_id}
            if (doc.get(COMPANY_FIELD) or None) == company_id:
                return written({**answer, "changed": False})
            summary = (f"Joined company {company['name']}" if company is not None
                       else "Left company")
            if self._write_company(store_id, doc, doc.get(COMPANY_FIELD), company_id, actor,
                                   correlation_id, summary):
                if company_id is not None and self._gone(store_id, company_id):
                    self.release(store_id, doc["_id"], company_id, actor)
                    raise _not_found(store_id, company_id)
                return written({**answer, "changed": True},
                               [(self.storage.customers.collection.name, doc["_id"])])
        raise Conflict("the customer kept changing; ask again")

    def _gone(self, store_id: str, company_id: str) -> bool:
        """Read after a join: a deletion marks before it scans its members, so a join it may
        have missed sees the mark (or the record gone) here."""
        return self.storage.companies.live(store_id, company_id) is None

    def release(self, store_id: str, customer_id: str, company_id: str, actor: str) -> bool:
        """Take the customer out of a company being deleted (or gone) that it joined in the
        same instant, with its `customer.updated`; False when it holds that company no more."""
        correlation_id = f"company-release-{uuid.uuid4().hex[:16]}"
        for _ in range(CONFLICT_RETRIES):
            doc = self.storage.customers.get(store_id, customer_id)
            if doc is None or doc.get(COMPANY_FIELD) != company_id:
                return False
            if self._write_company(store_id, doc, company_id, None, actor, correlation_id,
                                   "Left company (the company was deleted)"):
                return True
        raise Conflict("the customer kept changing; ask again")

    def _write_company(self, store_id: str, doc: dict, expected: str | None,
                       company_id: str | None, actor: str, correlation_id: str,
                       summary: str) -> bool:
        """One compare-and-set of the customer's company, from `expected` (as read) to
        `company_id`, with its event and timeline entry; False when it lost a race."""
        if (doc.get(COMPANY_FIELD) or None) != expected:
            return False
        after = {**doc, COMPANY_FIELD: company_id}
        events = []
        if doc.get("status") == "active":
            events.append(self.sync._event(
                "customer.updated", store_id,
                {**customer_event_data(after), "changed_fields": [COMPANY_FIELD]},
                correlation_id, doc["_id"], doc["version"], COMPANY_FIELD))
        entry = make_entry(entry_id(doc["_id"], COMPANY_FIELD, doc["version"]), doc["_id"],
                           "customer.company_changed", summary, actor,
                           {"old_company_id": doc.get(COMPANY_FIELD),
                            "new_company_id": company_id}, self.clock())
        return self.storage.customers.update(doc["_id"], doc["version"],
                                             {COMPANY_FIELD: company_id}, events,
                                             entries=[entry], read=doc)

    # -- matching by email domain -----------------------------------------------------------
    def get_matching(self, store_id: str) -> dict:
        return self.matching.get(require_text(store_id, "store_id"))

    def set_matching(self, store_id: str, settings: Any, actor: str) -> dict:
        """Turn matching on or off; turning it on asks for a sweep of the customers there."""
        store_id, actor = require_text(store_id, "store_id"), require_text(actor, "actor")
        loaded = load_matching(settings)
        self.matching.get(store_id)  # NotFound for an unknown store, before any write
        if self.matching.save(store_id, loaded, actor):
            self.matching.request_sweep(store_id)
        return {MATCH_EMAIL_DOMAIN: loaded[MATCH_EMAIL_DOMAIN]}

    def sweep(self, batch: int = SWEEP_BATCH) -> tuple[bool, list[DocumentRef]]:
        """One bounded step of background company work: a company deletion a crash left, a
        batch of a store's customers without a company joined by their email domain, or else
        customers left holding a company that is gone (a write path joined them by domain in
        the instant the company was deleted). Answers whether more may be left, and the
        customers written."""
        for company in self.storage.companies.deleting(limit=1):
            released, touched = self.finish_deletion(company["store_id"], company["_id"],
                                                     "system")
            gone = self.storage.companies.get(company["store_id"], company["_id"]) is None
            # No progress (every member changed meanwhile): wait for the next round, not spin.
            return bool(released) or gone, touched
        pending = self.matching.pending_sweep()
        if pending is None:
            return self._release_dangling(batch)
        store_id, request = pending["_id"], pending["company_sweep"]
        docs = self.storage.companies.without_company(store_id, request.get("after_id"), batch)
        touched: list[DocumentRef] = []
        if self.matching.enabled(store_id):
            touched = self._join_by_domain(store_id, docs)
        last = docs[-1]["_id"] if len(docs) == batch else None
        self.matching.advance_sweep(store_id, request["requested_at"], last)
        if touched:
            log.info("customers joined companies by their email domain",
                     extra={"store_id": store_id, "customers": len(touched)})
        return True, touched

    def _release_dangling(self, batch: int) -> tuple[bool, list[DocumentRef]]:
        docs = self.storage.companies.dangling_members(batch)
        correlation_id = f"company-sweep-{uuid.uuid4().hex[:16]}"
        touched = [(self.storage.customers.collection.name, doc["_id"]) for doc in docs
                   if self._write_company(doc["store_id"], doc, doc[COMPANY_FIELD], None,
                                          "system", correlation_id,
                                          "Left company (the company was deleted)")]
        if touched:
            log.info("customers released from companies that are gone",
                     extra={"customers": len(touched)})
        return bool(touched), touched  # a batch that all changed meanwhile waits a round

    def _join_by_domain(self, store_id: str, docs: list[dict]) -> list[DocumentRef]:
        domains = {doc["_id"]: joins_by_domain(doc) for doc in docs}
        companies = self.storage.companies.by_domains(
            store_id, sorted({d for d in domains.values() if d}))
        correlation_id = f"company-sweep-{uuid.uuid4().hex[:16]}"
        touched = []
        for doc in docs:
            company_id = companies.get(domains[doc["_id"]] or "")
            if company_id is None:
                continue
            domain = email_domain(doc.get("email"))
            if self._write_company(store_id, doc, None, company_id, "system", correlation_id,
                                   f"Joined a company by email domain {domain}"):
                touched.append((self.storage.customers.collection.name, doc["_id"]))
            # A customer written meanwhile joined at that write, if it was to.
        return touched

    # -- helpers ----------------------------------------------------------------------------
    def _live(self, store_id: str, company_id: Any) -> dict:
        company_id = valid_company_id(company_id)
        doc = self.storage.companies.live(store_id, company_id)
        if doc is None:
            raise _not_found(store_id, company_id)
        return doc

    def _view(self, doc: dict) -> dict:
        counts = self.storage.companies.member_counts(doc["store_id"], [doc["_id"]])
        return company_view(doc, counts.get(doc["_id"], 0))

    def _values(self, store_id: str, values: dict) -> dict:
        """A company's custom values checked against the store's company definitions."""
        return check_values(self.definitions(store_id), values)


def _decode(cursor: str) -> tuple[str, str]:
    try:
        body = decode_cursor(cursor)
        key, last_id = body["k"], body["id"]
    except (ValueError, TypeError, KeyError):
        key = last_id = None
    if not isinstance(key, str) or not isinstance(last_id, str):
        raise ValidationError("page.cursor is not one this service issued",
                              {"fields": {"page.cursor": ["invalid"]}})
    return key, last_id


def _too_many() -> ValidationError:
    return ValidationError(f"a store has at most {MAX_COMPANIES} companies",
                           {"fields": {"name": [f"at most {MAX_COMPANIES} companies a store"]}})
