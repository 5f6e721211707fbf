"""GDPR rectification: a person's corrected contact fields, written to the shop first.

WooCommerce is where the data lives: a correction made only here would be undone by the next
webhook or reconciliation. So a registered customer's correction goes to the shop
(`PUT /wp-json/wc/v3/customers/<id>`, retried on 429/5xx by `WooClient`), and the customer the
shop answers with is applied locally through the path webhooks take (customer.updated as usual;
the shop's new `date_modified` makes any older delivery stale). A guest has no record in the
shop to correct (their data sits on their orders, which the REST API cannot rewrite for
them): the correction is applied here only, and the answer says so.
"""
from __future__ import annotations

import logging
import uuid
from typing import Any

from marshmallow import RAISE, Schema, ValidationError as MarshmallowError, fields, post_load, validate
from pymongo.errors import DuplicateKeyError

from services.customer_sync.core import changes
from services.customer_sync.core.normalise import email_key, normalise_customer
from services.customer_sync.core.queries import customer_view
from services.customer_sync.core.sync import ApplyResult, customer_event_data
from services.customer_sync.core.written import Written, written
from services.customer_sync.shop.woo_client import WooApiError, WooUnavailable
from services.customer_sync.shop.write_back import ShopWriteBack
from services.customer_sync.schemas import one_address
from services.customer_sync.crm.timeline import TIMELINE_FIELD, entry_id, make_entry
from shared.errors import Conflict, NotFound, Unavailable, ValidationError
from shared.conflicts import CONFLICT_RETRIES

log = logging.getLogger(__name__)

_PHONE = validate.Regexp(r"^\+?[0-9][0-9 ()./-]{2,31}\Z", error="is not a phone number")
_COUNTRY = validate.Regexp(r"^[A-Za-z]{2}\Z", error="must be a two-letter ISO 3166 code")


class _Trimmed(Schema):
    class Meta:
        unknown = RAISE

    @post_load
    def _trim(self, data: dict, **kwargs: Any) -> dict:
        trimmed = {k: v.strip() if isinstance(v, str) else v for k, v in data.items()}
        if trimmed.get("country"):
            trimmed["country"] = trimmed["country"].upper()
        return trimmed


class ShippingCorrection(_Trimmed):
    first_name = fields.String(validate=validate.Length(max=200))
    last_name = fields.String(validate=validate.Length(max=200))
    company = fields.String(validate=validate.Length(max=200))
    address_1 = fields.String(validate=validate.Length(max=200))
    address_2 = fields.String(validate=validate.Length(max=200))
    city = fields.String(validate=validate.Length(max=200))
    state = fields.String(validate=validate.Length(max=100))
    postcode = fields.String(validate=validate.Length(max=20))
    country = fields.String(validate=_COUNTRY)


class BillingCorrection(ShippingCorrection):
    email = fields.Email(validate=[validate.Length(max=254), one_address])
    phone = fields.String(validate=_PHONE)


class ContactCorrection(_Trimmed):
    """What a person may have corrected: names, email, phone, company, address parts."""

    first_name = fields.String(validate=validate.Length(max=200))
    last_name = fields.String(validate=validate.Length(max=200))
    email = fields.Email(validate=[validate.Length(max=254), one_address])
    phone = fields.String(validate=_PHONE)
    company = fields.String(validate=validate.Length(max=200))
    billing = fields.Nested(BillingCorrection)
    shipping = fields.Nested(ShippingCorrection)


def load_correction(data: Any) -> dict:
    """Validated corrections, or the shared ValidationError naming the failing fields."""
    if not isinstance(data, dict):
        raise ValidationError("fields must be an object", {"fields": {"fields": ["not an object"]}})
    try:
        correction = ContactCorrection().load(data)
    except MarshmallowError as exc:
        raise ValidationError(f"invalid fields: {exc.messages}", {"fields": exc.messages}) from None
    correction = {k: v for k, v in correction.items() if v != {}}
    if not correction:
        raise ValidationError("fields must name at least one contact field to correct",
                              {"fields": {"fields": ["empty"]}})
    return correction


def shop_customer_update(correction: dict) -> dict:
    """The body of `PUT customers/<id>`: WooCommerce keeps phone and company on the billing
    address, not on the account."""
    body = {name: correction[name] for name in ("first_name", "last_name", "email")
            if name in correction}
    billing = dict(correction.get("billing") or {})
    for name in ("phone", "company"):
        if name in correction:
            billing[name] = correction[name]
    if billing:
        body["billing"] = billing
    if correction.get("shipping"):
        body["shipping"] = dict(correction["shipping"])
    return body


_GUEST_CONTACT = ("first_name", "last_name", "phone", "company", "email")


def guest_fields(doc: dict, correction: dict) -> dict:
    """A guest record's new contact fields. A guest's names, phone, company and email are
    those of their billing address, so a correction of either changes both."""
    billing_correction = correction.get("billing") or {}
    billing = {**(doc.get("billing") or {}), **billing_correction}
    shipping = {**(doc.get("shipping") or {}), **(correction.get("shipping") or {})}
    updated: dict = {}
    for name in _GUEST_CONTACT:
        if name in correction:
            billing[name] = correction[name]
        if name in correction or name in billing_correction:
            updated[name] = billing[name]
    if "email" in updated:
        key = email_key(updated["email"])
        updated.update(email_key=key, guest_email_key=key)
    updated.update(billing=billing, shipping=shipping)
    return updated


class Rectifier(ShopWriteBack):
    """Correcting a person's contact fields in the shop and here; the clock dates the audit
    entry and the guest's contact change."""

    def rectify(self, store_id: str, customer_id: str, fields_: Any, actor: str,
                purpose: str = "rectification") -> Written:
        """Correct a person's contact fields; answers the view, and the customer (its event
        and timeline entry) to publish.
        `purpose` "staff_edit" is the same write-back for a staff member's edit (core/staff.py):
        recorded under `staff_edits` instead of the GDPR `rectifications` audit."""
        correction = load_correction(fields_)
        doc = self.storage.customers.get(store_id, customer_id)
        if doc is None:
            raise NotFound(f"no customer {customer_id} in store {store_id}")
        if doc.get("status") != "active":
            raise Conflict(f"customer {customer_id} is {doc.get('status')}: there is nothing to "
                           "correct", {"status": doc.get("status")})
        if doc.get("woo_customer_id") is not None:
            result = self._in_shop(store_id, doc, correction)
            shop_written, note = True, "corrected in the shop, then here"
        else:
            result = self._guest(store_id, doc, correction)
            shop_written, note = False, ("a guest has no customer record in the shop: corrected here "
                                    "only; the shop's orders keep the details given at checkout")
        now = self.clock()
        push: dict = {"staff_edits" if purpose == "staff_edit" else "rectifications": {
            "at": now, "actor": actor, "fields": sorted(correction), "written_to_shop": shop_written}}
        if "customer.updated" in result.events:
            # The timeline names who asked (the shop's customer.updated it caused is not
            # recorded as the shop's: its correlation id says it is this change's).
            changed = ", ".join(sorted(correction))
            kind = "customer.staff_edit" if purpose == "staff_edit" else "customer.rectified"
            summary = (f"Edited by staff: {changed}" if purpose == "staff_edit"
                       else f"Corrected on request (GDPR): {changed}")
            push[TIMELINE_FIELD] = make_entry(
                entry_id(customer_id, kind, uuid.uuid4().hex), customer_id, kind,
                f"{summary} ({'written to the shop' if shop_written else 'here only: a guest'})",
                actor, {"fields": sorted(correction), "written_to_shop": shop_written}, now)
        self.storage.customers.collection.update_one({"_id": customer_id}, {"$push": push})
        log.info("customer rectified", extra={"customer_id": customer_id, "actor": actor,
                                              "fields": sorted(correction), "written_to_shop": shop_written})
        after = self.storage.customers.get(store_id, customer_id)
        changed = [e for e in result.events if e == "customer.updated"]
        touched = [*result.touched, (self.storage.customers.collection.name, customer_id)]
        return written({"customer": customer_view(after), "written_to_shop": shop_written,
                        "fields": sorted(correction), "published": changed, "note": note},
                       touched)

    def _in_shop(self, store_id: str, doc: dict, correction: dict) -> ApplyResult:
        store = self.storage.stores.get(store_id)
        if store is None:
            raise NotFound(f"no store {store_id}")
        woo_id = doc["woo_customer_id"]
        client = self.client_factory(store)
        try:
            answer = client.put(f"customers/{woo_id}", shop_customer_update(correction))
        except WooUnavailable as exc:
            # Nothing changed here; the caller retries later (the PUT is idempotent).
            raise Unavailable(f"the shop did not answer: {exc}",
                              {"shop_status": exc.status, "shop_code": exc.code}) from None
        except WooApiError as exc:
            raise _shop_refusal(exc, woo_id) from None
        finally:
            client.close()
        if not isinstance(answer, dict) or answer.get("id") != woo_id:
            raise ValidationError("the shop's answer is not the customer it was asked to correct")
        return self.sync.apply_customer(store_id, normalise_customer(answer),
                                        f"rectify-{uuid.uuid4().hex[:16]}")

    def _guest(self, store_id: str, doc: dict, correction: dict) -> ApplyResult:
        customers = self.storage.customers
        for _ in range(CONFLICT_RETRIES):
            updated = guest_fields(doc, correction)
            new_key = updated.get("email_key")
            if new_key and new_key != doc.get("email_key"):
                other = customers.by_email(store_id, new_key)
                if other is not None and other["_id"] != doc["_id"]:
                    raise Conflict("another customer has that email", {"fields": ["email"]})
            # Orders placed before now carry the old details: they must not undo this.
            updated["contact_from_order_at"] = self.clock()
            updated.update(self.sync.company_matching.joined(store_id, {**doc, **updated}))
            after = {**doc, **updated}
            changed = changes.changed_contact_fields(doc, after)
            if "company_id" in updated:
                changed.append("company_id")
            events = []
            if changed:
                events.append(self.sync._event(
                    "customer.updated", store_id,
                    {**customer_event_data(after), "changed_fields": changed},
                    f"rectify-{doc['_id']}", doc["_id"], doc["version"]))
            try:
                ok = customers.update(doc["_id"], doc["version"], updated, events)
            except DuplicateKeyError:
                raise Conflict("another customer has that email", {"fields": ["email"]}) from None
            if ok:
                return ApplyResult("updated", [e.event_type for e in events],
                                   [("customers", doc["_id"])] if events else [])
            doc = customers.get(store_id, doc["_id"])
            if doc is None or doc.get("status") != "active":
                raise Conflict("the customer changed while being corrected; ask again")
        raise Conflict("the customer kept changing while being corrected; ask again")


def _shop_refusal(exc: WooApiError, woo_id: int) -> Exception:
    details = {"shop_status": exc.status, "shop_code": exc.code}
    if exc.status == 404:
        return NotFound(f"the shop has no customer {woo_id}", details)
    if exc.code == "registration-error-email-exists":
        return Conflict(f"the shop refused the correction: {exc.message}",
                        {**details, "fields": ["email"]})
    return ValidationError(f"the shop refused the correction: {exc.message}", details)
