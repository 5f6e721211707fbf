"""Importing contacts from a file (rows the gateway parsed from CSV).

Every row is checked (marshmallow: a valid email, a two-letter country, phone characters),
then compared with the rows before it (same email: `duplicate_in_file`, the first one wins)
and with the customers held here (same email: `exists`). A dry run (apply=False) writes
nothing and answers what applying would do.

Applied rows become companion-only contacts: *not* created at the shop, because creating a
WooCommerce account sends that person a "your account was created" email, which an import
must not do to thousands of people. They are guest-like records (registered false, keyed by
their email like a guest), published as `customer.created` so the other services know them;
if the person later registers or orders at the shop, the shop's customer or order finds this
record by email and takes it over, as for any guest. Re-applying the same file imports nothing
twice: the emails now exist (and the guest email index refuses a second record even when two
imports race). An email erased on request (a GDPR tombstone) is refused as invalid.

Consent columns (`email_marketing`, `sms_marketing`: yes or no) each need their proof column
(`email_marketing_source`: where and when the person agreed): a row claiming consent without
it is invalid, naming the row and the field. A created contact's "yes" is published as
`consent.captured` (source import, the proof as evidence) in the same insert, for gdpr to
record; "no" records nothing, as a new contact has no consent anyway.

The mode says what a row of someone already held (same email, case-folded) does: `create`
(the default) reports it as `exists` and changes nothing; `update` changes their contact
fields to the row's non-empty cells and creates nobody (a new email is refused naming the
email); `upsert` does both. A change goes through the staff edit's write-back (staff.py): a
shop customer's at the shop first, so the shop and its later webhooks agree, a guest's or an
imported contact's here only. A row the shop refuses, or that races another change, is
`refused` with the field and changes nothing; a row whose cells all match is `unchanged`.

A column `custom.<key>` sets the store's custom field `<key>` (crm/field_rules.py): each cell
is read in the field's type and refused naming the row and the column; an empty cell gives no
value (an update keeps what is held). A row that sets custom fields must leave each required
one with a value. Custom fields are the companion's own: written here only, never to the shop.
"""
from __future__ import annotations

import re
import uuid
from typing import Any, Callable

from marshmallow import (EXCLUDE, Schema, ValidationError as MarshmallowError, fields, validate,
                         validates_schema)

from services.customer_sync.privacy.consent_capture import captured_event
from services.customer_sync.core.normalise import ADDRESS_FIELDS, email_key
from services.customer_sync.privacy.rectify import Rectifier
from services.customer_sync.repository import CustomerSyncStorage, Store, new_customer_id
from services.customer_sync.schemas import one_address, require_text
from services.customer_sync.core.sync import CustomerSync, customer_event_data, stable_event_id
from services.customer_sync.core.written import Written, written
from services.customer_sync.crm.custom_fields import CustomFields
from services.customer_sync.crm.field_rules import MAX_FIELDS, check_cells, missing_required
from services.customer_sync.crm.timeline import entry_id, make_entry
from services.customer_sync.privacy.tombstones import EMAIL, tombstone_digest
from services.customer_sync.shop.woo_client import WooClient
from shared.errors import NotFound, ServiceError, ValidationError
from shared.events.consent_capture import CAPTURED_PURPOSES, EVIDENCE_MAX_LENGTH
from shared.times import utcnow

MAX_ROWS = 10_000
_CHUNK = 500
_PHONE = validate.Regexp(r"^\+?[0-9][0-9 ()./-]{2,31}\Z", error="is not a phone number")
_COUNTRY = validate.Regexp(r"^[A-Za-z]{2}\Z", error="must be a two-letter ISO 3166 code")
_ADDRESS_PARTS = ("address_1", "address_2", "city", "state", "postcode", "country")
OUTCOMES = ("create", "duplicate_in_file", "exists", "invalid", "update", "unchanged",
            "refused")
MODES = ("create", "update", "upsert")
# The row's cells an update may change, as staff.py's edit names them.
_CONTACT_CELLS = ("first_name", "last_name", "phone", "company")
# A column naming one of the store's custom fields: `custom.<key>`.
CUSTOM_PREFIX = "custom."
_YES = frozenset({"yes", "y", "true", "1"})
_NO = frozenset({"no", "n", "false", "0"})


_SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
MAX_SLUGS = 20


class SlugList(fields.Field):
    """Comma-separated lower-case slugs (tags, group slugs) of a cell, as a list."""

    def _deserialize(self, value, attr, data, **kwargs) -> list[str]:
        if not isinstance(value, str):
            raise MarshmallowError("must be comma-separated slugs")
        slugs = list(dict.fromkeys(s.strip().lower() for s in value.split(",") if s.strip()))
        bad = [s for s in slugs if not _SLUG.match(s)]
        if bad:
            raise MarshmallowError(f"not slugs (1-64 lower-case letters, digits, - or _): "
                                   f"{', '.join(bad[:5])[:200]}")
        if len(slugs) > MAX_SLUGS:
            raise MarshmallowError(f"at most {MAX_SLUGS}")
        return slugs


def _text(max_length: int = 200) -> fields.String:
    return fields.String(validate=validate.Length(max=max_length))


class ImportRowSchema(Schema):
    """One contact row; unknown columns are ignored (and named in the summary)."""

    class Meta:
        unknown = EXCLUDE

    email = fields.Email(required=True, validate=[validate.Length(max=254), one_address])
    first_name = _text()
    last_name = _text()
    phone = fields.String(validate=_PHONE)
    company = _text()
    billing_address_1 = _text()
    billing_address_2 = _text()
    billing_city = _text()
    billing_state = _text(100)
    billing_postcode = _text(20)
    billing_country = fields.String(validate=_COUNTRY)
    shipping_address_1 = _text()
    shipping_address_2 = _text()
    shipping_city = _text()
    shipping_state = _text(100)
    shipping_postcode = _text(20)
    shipping_country = fields.String(validate=_COUNTRY)
    email_marketing = fields.String(validate=validate.OneOf(
        sorted(_YES | _NO), error="must be yes or no"))
    email_marketing_source = fields.String(validate=validate.Length(max=EVIDENCE_MAX_LENGTH))
    sms_marketing = fields.String(validate=validate.OneOf(
        sorted(_YES | _NO), error="must be yes or no"))
    sms_marketing_source = fields.String(validate=validate.Length(max=EVIDENCE_MAX_LENGTH))
    # segmentation owns tags and groups: checked here, applied by the caller (the gateway) to
    # the customers the report names, through segmentation's own tagging.
    tags = SlugList()
    groups = SlugList()

    @validates_schema
    def _consent_has_proof(self, data: dict, **kwargs) -> None:
        """Consent claimed without saying where it was given is no proof of consent."""
        errors = {}
        for purpose in CAPTURED_PURPOSES:
            if data.get(purpose) in _YES and not data.get(f"{purpose}_source"):
                errors[f"{purpose}_source"] = [
                    f"required when {purpose} is yes: where and when the person agreed"]
        if errors:
            raise MarshmallowError(errors)


def granted_purposes(data: dict) -> list[str]:
    return [p for p in CAPTURED_PURPOSES if data.get(p) in _YES]


def _consent_not_recorded(row: dict, data: dict) -> None:
    """A row of someone already held changes no consent: said on the row, not dropped in
    silence (an import cannot tell whether its proof is older than their last change)."""
    purposes = granted_purposes(data)
    if purposes:
        row["warnings"] = {p: ["not recorded: this customer already exists; change their "
                               "consent with the API or the console"] for p in purposes}


KNOWN_COLUMNS = frozenset(ImportRowSchema().fields) | {"line"}
_SCHEMA = ImportRowSchema()


def _clean(row: dict) -> dict:
    """CSV cells as text, trimmed; empty cells left out (an empty column means no value)."""
    cleaned = {}
    for key, value in row.items():
        if key == "line" or value is None:
            continue
        text = str(value).strip()
        if key in ("email_marketing", "sms_marketing"):
            text = text.lower()
        if text:
            cleaned[str(key)] = text
    return cleaned


def _address(data: dict, prefix: str, with_contact: bool) -> dict:
    address = {name: "" for name in ADDRESS_FIELDS
               if with_contact or name not in ("email", "phone")}
    for part in _ADDRESS_PARTS:
        address[part] = data.get(f"{prefix}_{part}", "")
    if address["country"]:
        address["country"] = address["country"].upper()
    for name in ("first_name", "last_name", "company"):
        address[name] = data.get(name, "")
    if with_contact:
        address["email"] = data["email"]
        address["phone"] = data.get("phone", "")
    return address


def contact_doc(store_id: str, data: dict, actor: str, now) -> dict:
    key = email_key(data["email"])
    return {
        "_id": new_customer_id(), "store_id": store_id, "status": "active",
        "registered": False, "woo_customer_id": None,
        "email": data["email"], "email_key": key, "guest_email_key": key,
        "first_name": data.get("first_name", ""), "last_name": data.get("last_name", ""),
        "phone": data.get("phone", ""), "company": data.get("company", ""),
        "billing": _address(data, "billing", True), "shipping": _address(data, "shipping", False),
        "date_created": now, "created_at": now, "contact_from_order_at": None,
        "woo_date_modified": None, "content_hash": None, "source": "import",
        "imported_by": actor, "account_status": "active",
    }


def contact_changes(doc: dict, data: dict) -> dict:
    """The edit (staff.py's shape) that brings a held customer to the row's non-empty cells;
    empty when they already match. The email is the match, never changed here."""
    edit: dict = {name: data[name] for name in _CONTACT_CELLS
                  if name in data and data[name] != (doc.get(name) or "")}
    for kind in ("billing", "shipping"):
        held = doc.get(kind) or {}
        part_changes = {}
        for part in _ADDRESS_PARTS:
            value = data.get(f"{kind}_{part}")
            if value is None:
                continue
            value = value.upper() if part == "country" else value
            if value != (held.get(part) or ""):
                part_changes[part] = value
        if part_changes:
            edit[kind] = part_changes
    return edit


def _refusal(exc: ServiceError) -> dict:
    """A refused update's errors by field, as the row report names them."""
    details = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], dict) else {}
    named = details.get("fields")
    if isinstance(named, dict):
        return {str(k): v if isinstance(v, list) else [str(v)] for k, v in named.items()}
    if isinstance(named, list) and named:
        return {str(k): [str(exc.args[0])] for k in named}
    return {"row": [str(exc.args[0]) if exc.args else "refused"]}


def _let_others_run() -> None:
    """A 10,000-row import takes seconds; under eventlet, a database that never blocks on a
    socket (mongomock) would hold the whole process meanwhile, webhooks included."""
    try:
        import eventlet

        eventlet.sleep(0)
    except ImportError:  # plain code without eventlet: nothing to share the thread with
        pass


class CustomerImport:
    def __init__(self, storage: CustomerSyncStorage, sync: CustomerSync, clock=utcnow,
                 client_factory: Callable[[Store], WooClient] | None = None,
                 custom_fields: CustomFields | None = None) -> None:
        self.storage = storage
        self.sync = sync
        self.clock = clock
        self.client_factory = client_factory
        self.custom_fields = custom_fields or CustomFields(storage, sync, clock)

    def run(self, store_id: str, rows: Any, apply: Any, actor: str, mode: Any = "create"
            ) -> Written:
        """Check (and with apply=True import) the rows; answers the per-row report, and the
        documents that owe events and timeline entries."""
        store_id, actor = require_text(store_id, "store_id"), require_text(actor, "actor")
        if not isinstance(apply, bool):
            raise ValidationError("apply must be true or false", {"fields": {"apply": ["boolean"]}})
        if mode not in MODES:
            raise ValidationError(f"mode must be one of {', '.join(MODES)}",
                                  {"fields": {"mode": ["unknown mode"]}})
        if not isinstance(rows, list) or len(rows) > MAX_ROWS:
            raise ValidationError(f"rows must be a list of at most {MAX_ROWS} rows",
                                  {"fields": {"rows": [f"at most {MAX_ROWS}"]}})
        if self.storage.stores.get(store_id) is None:
            raise NotFound(f"no store {store_id}")
        definitions = self.custom_fields.definitions(store_id)
        report, ignored, valid = self._check(rows, definitions)
        keys = [email_key(data["email"]) for _, data in valid]
        existing = self._existing(store_id, keys)
        erased = self._erased(store_id, keys)
        live = self._live(store_id, keys) if mode != "create" else {}
        creates: list[tuple[dict, dict]] = []
        updates: list[tuple[dict, dict, dict, dict | None]] = []
        for row, data in valid:
            key = email_key(data["email"])
            values = data.get("custom_fields")
            if key in erased:
                row.update(outcome="invalid",
                           errors={"email": ["this person's data was erased on request; "
                                             "not imported"]})
            elif key in live:
                edit = contact_changes(live[key], data)
                held = live[key].get("custom_fields") or {}
                custom = {**held, **values} if values and {**held, **values} != held else None
                if custom is not None and _lacks_required(row, definitions, custom):
                    continue
                row.update(outcome="update" if edit or custom is not None else "unchanged",
                           customer_id=live[key]["_id"])
                _consent_not_recorded(row, data)
                if edit or custom is not None:
                    updates.append((row, live[key], edit, custom))
            elif key in existing:
                row["outcome"] = "exists"
                _consent_not_recorded(row, data)
            elif mode == "update":
                row.update(outcome="invalid", errors={"email": [
                    "no customer has this email; mode update changes existing customers only"]})
            elif not (values and _lacks_required(row, definitions, values)):
                creates.append((row, data))
        touched: list[tuple[str, Any]] = []
        created = updated = 0
        if apply:
            for count, (row, doc, edit, custom) in enumerate(updates, 1):
                if count % 100 == 0:
                    _let_others_run()
                if self._update(store_id, row, doc, edit, custom, actor, touched):
                    updated += 1
            now = self.clock()
            correlation_id = f"staff-import-{uuid.uuid4().hex[:16]}"
            for count, (row, data) in enumerate(creates, 1):
                if count % 100 == 0:
                    _let_others_run()
                doc = contact_doc(store_id, data, actor, now)
                if data.get("custom_fields"):
                    doc["custom_fields"] = data["custom_fields"]
                doc.update(self.sync.company_matching.joined(store_id, doc))
                event = self.sync._event("customer.created", store_id, customer_event_data(doc),
                                         correlation_id, doc["_id"])
                entry = make_entry(entry_id(doc["_id"], "imported"), doc["_id"],
                                   "customer.created", "Contact imported from a file", actor,
                                   {"source": "import", "line": row["line"],
                                    "registered": False}, now)
                consent = self._captured(store_id, doc, data, correlation_id, now)
                if consent:
                    doc["consent_captured"] = sorted(e.data["purpose"] for e in consent)
                    row["consent"] = doc["consent_captured"]
                if self.storage.customers.insert(doc, [event, *consent], entries=[entry]):
                    row["customer_id"] = doc["_id"]
                    touched.append((self.storage.customers.collection.name, doc["_id"]))
                    created += 1
                else:  # created meanwhile (another import, a guest order)
                    row["outcome"] = "exists"
                    row.pop("consent", None)
                    _consent_not_recorded(row, data)
        summary = {name: sum(1 for r in report if r["outcome"] == name) for name in OUTCOMES}
        summary.update(rows=len(report), applied=apply, created=created, updated=updated,
                       mode=mode, ignored_columns=sorted(ignored))
        return written({"rows": report, "summary": summary}, touched)

    def _update(self, store_id: str, row: dict, doc: dict, edit: dict, custom: dict | None,
                actor: str, touched: list) -> bool:
        """One held customer's contact change (all of it or, refused, none of it), then its
        custom fields (`custom`: the whole set it is to hold, None when unchanged)."""
        if edit:
            if self.client_factory is None:
                raise RuntimeError("an import that updates needs the shop's client factory")
            try:
                result = Rectifier(self.storage, self.sync, self.client_factory).rectify(
                    store_id, doc["_id"], edit, actor, purpose="staff_edit")
            except ServiceError as exc:
                row.update(outcome="refused", errors=_refusal(exc))
                return False
            touched.extend(result.touched)  # its event and timeline entry
        if custom is not None:
            try:
                result = self.custom_fields.set_values(store_id, doc["_id"], custom, actor)
            except ServiceError as exc:
                row.update(outcome="refused", errors=_column_names(_refusal(exc)))
                return bool(edit)  # the contact change stands; the row says what did not
            touched.extend(result.touched)
        return True

    def _live(self, store_id: str, keys: list[str]) -> dict[str, dict]:
        """The live customers holding these emails, by email key."""
        found: dict[str, dict] = {}
        collection = self.storage.customers.collection
        for start in range(0, len(keys), _CHUNK):
            for doc in collection.find({"store_id": store_id, "status": "active",
                                        "email_key": {"$in": keys[start:start + _CHUNK]}}):
                found.setdefault(doc["email_key"], doc)
        return found

    def _captured(self, store_id: str, doc: dict, data: dict, correlation_id: str,
                  now) -> list:
        """consent.captured for each purpose the row says yes to, with its proof."""
        key = f"import:{doc['_id']}"
        return [captured_event(store_id, stable_event_id(store_id, "consent.captured", key,
                                                         purpose),
                               doc["_id"], purpose, "import", now, key,
                               data[f"{purpose}_source"], None, correlation_id, now)
                for purpose in granted_purposes(data)]

    def _check(self, rows: list, definitions: dict[str, dict]
               ) -> tuple[list[dict], set[str], list[tuple[dict, dict]]]:
        report: list[dict] = []
        ignored: set[str] = set()
        valid: list[tuple[dict, dict]] = []
        seen: set[str] = set()
        for index, raw in enumerate(rows):
            if not isinstance(raw, dict):
                report.append({"line": index + 1, "email": None, "outcome": "invalid",
                               "errors": {"row": ["not an object"]}})
                continue
            line = raw.get("line")
            line = line if isinstance(line, int) and not isinstance(line, bool) else index + 1
            ignored |= {str(k) for k in raw
                        if k not in KNOWN_COLUMNS and not str(k).startswith(CUSTOM_PREFIX)}
            cleaned = _clean(raw)
            email = cleaned.get("email")
            row = {"line": line, "email": email, "outcome": "create", "errors": {}}
            report.append(row)
            values, custom_errors = _custom_cells(cleaned, definitions)
            try:
                data = _SCHEMA.load(cleaned)
            except MarshmallowError as exc:
                row.update(outcome="invalid", errors={**exc.messages, **custom_errors})
                continue
            if custom_errors:
                row.update(outcome="invalid", errors=custom_errors)
                continue
            data["custom_fields"] = values
            for name in ("tags", "groups"):
                if data.get(name):
                    row[name] = data[name]
            key = email_key(data["email"])
            if key in seen:
                row["outcome"] = "duplicate_in_file"
                continue
            seen.add(key)
            valid.append((row, data))
        return report, ignored, valid

    def _existing(self, store_id: str, keys: list[str]) -> set[str]:
        """Emails of live customers, and of guest records (any status) that hold the email."""
        found: set[str] = set()
        collection = self.storage.customers.collection
        for start in range(0, len(keys), _CHUNK):
            chunk = keys[start:start + _CHUNK]
            for doc in collection.find({"store_id": store_id, "$or": [
                    {"email_key": {"$in": chunk}, "status": "active"},
                    {"guest_email_key": {"$in": chunk}}]},
                    {"email_key": 1, "guest_email_key": 1, "status": 1}):
                for name in ("email_key", "guest_email_key"):
                    if doc.get(name) in chunk and (name == "guest_email_key"
                                                   or doc.get("status") == "active"):
                        found.add(doc[name])
        return found

    def _erased(self, store_id: str, keys: list[str]) -> set[str]:
        """Emails tombstoned by an erasure (checked by keyed hash, as every apply does)."""
        tombstones = self.storage.tombstones
        secret = tombstones.keys.get(store_id, create=True)
        if secret is None or not keys:
            return set()
        by_id = {tombstones.doc_id(store_id, EMAIL, tombstone_digest(secret, EMAIL, key)): key
                 for key in keys}
        ids = sorted(by_id)
        erased: set[str] = set()
        for start in range(0, len(ids), _CHUNK):
            for doc in tombstones.collection.find({"_id": {"$in": ids[start:start + _CHUNK]}},
                                                  {"_id": 1}):
                erased.add(by_id[doc["_id"]])
        return erased


def _custom_cells(cleaned: dict, definitions: dict[str, dict]) -> tuple[dict, dict]:
    """The row's `custom.<key>` cells as values, and their refusals named by column."""
    cells = {k[len(CUSTOM_PREFIX):]: v for k, v in cleaned.items()
             if k.startswith(CUSTOM_PREFIX)}
    if len(cells) > MAX_FIELDS:
        return {}, {"custom": [f"at most {MAX_FIELDS} custom.<key> columns"]}
    values, errors = check_cells(definitions, cells)
    return values, {CUSTOM_PREFIX + key: messages for key, messages in errors.items()}


def _lacks_required(row: dict, definitions: dict[str, dict], values: dict) -> bool:
    """Mark the row invalid when the custom fields it writes leave a required one empty."""
    missing = missing_required(definitions, values)
    if missing:
        row.update(outcome="invalid",
                   errors={CUSTOM_PREFIX + key: ["is required"] for key in missing})
    return bool(missing)


def _column_names(errors: dict) -> dict:
    """customer_sync's `custom_fields.<key>` as the file names it: `custom.<key>`."""
    return {CUSTOM_PREFIX + k[len("custom_fields."):] if k.startswith("custom_fields.") else k: v
            for k, v in errors.items()}
