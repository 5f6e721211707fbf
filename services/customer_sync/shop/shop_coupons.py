"""Coupons written to a shop for other services (loyalty's rewards, notifications' gifts).

customer_sync holds each shop's REST credentials and its customers' emails, so it is the one
service that writes coupons. Each call is one idempotent step a caller may repeat: `ensure`
looks the code up before creating it and recognises its own coupon by the meta it carries,
so a retry after a lost answer or a killed worker never makes a second coupon. The shop is
asked with few retries: the caller keeps its step pending and retries with its own backoff,
rather than holding an RPC open through the client's long one.
"""
from __future__ import annotations

import logging
from decimal import Decimal
from typing import Callable

from services.customer_sync.repository import CustomerSyncStorage, Store
from services.customer_sync.shop.woo_client import (
    CouponCodeTaken,
    CouponRequest,
    ShopCoupon,
    WooApiError,
    WooClient,
    WooUnavailable,
)
from shared.coupons import CouponSpec
from shared.errors import NotFound, Refused, Unavailable, ValidationError
from shared.money import to_units

log = logging.getLogger(__name__)

# Answers that say nothing final about the coupon: the shop is down, throttling, not
# letting us in (an operator can fix the keys), or answering something we cannot read.
_TRY_AGAIN_STATUSES = frozenset({401, 403, 408, 409, 429})


class ShopCoupons:
    def __init__(self, storage: CustomerSyncStorage,
                 client_factory: Callable[[Store], WooClient]) -> None:
        self.storage = storage
        self.client_factory = client_factory

    def ensure(self, store_id: str, coupon: object, customer_id: str | None = None) -> dict:
        """The coupon `coupon` (a `CouponSpec` wire form) describes, created unless an earlier
        call made it. With `customer_id` it is restricted to that customer's email as held
        here now. Raises ValidationError, NotFound, Refused (for good) or Unavailable (later)."""
        try:
            spec = CouponSpec.from_wire(coupon)
        except ValueError as exc:
            name = str(exc).split(" ", 1)[0]
            raise ValidationError(f"coupon.{exc}", {"fields": {f"coupon.{name}": [str(exc)]}}) from None
        store = self._store(store_id)
        email = spec.email
        if customer_id is not None:
            if email is not None:
                raise ValidationError("give the coupon's email or customer_id, not both",
                                      {"fields": {"coupon.email": ["given with customer_id"]}})
            email = self._customer_email(store_id, customer_id)
        request = _request(spec, email)
        with self.client_factory(store) as client:
            try:
                made = client.ensure_coupon(request)
            except CouponCodeTaken:
                raise Refused(f"the shop has another coupon with the code {spec.code}",
                              {"shop_code": "coupon_code_taken"}) from None
            except WooApiError as exc:
                raise _shop_error(exc, "create the coupon") from None
        log.info("coupon ensured at the shop", extra={"store_id": store_id, "coupon_id": made.id})
        return _answer(made)

    def delete(self, store_id: str, code: object, meta: object) -> dict:
        """Delete the coupon with `code` if it is the one `meta` names and nobody used it.

        Answers `deleted` (this call removed it) and `usage_count` (the shop's count when
        looked at): a used coupon is left alone, so the caller learns it was spent rather than
        giving back what paid for it. No coupon, or another's coupon with this code: nothing
        to delete."""
        if not isinstance(code, str) or not code.strip() or len(code) > 64:
            raise ValidationError("code must be a coupon code", {"fields": {"code": ["invalid"]}})
        if (not isinstance(meta, dict) or not meta
                or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items())):
            raise ValidationError("meta must name whose coupon it is",
                                  {"fields": {"meta": ["invalid"]}})
        store = self._store(store_id)
        with self.client_factory(store) as client:
            try:
                found = client.find_coupon(code)
                if found is None or not found.carries(meta):
                    return {"deleted": False, "usage_count": 0, "found": found is not None}
                if found.usage_count > 0:
                    return {"deleted": False, "usage_count": found.usage_count, "found": True}
                deleted = client.delete_coupon(found.id)
            except WooApiError as exc:
                raise _shop_error(exc, "delete the coupon") from None
        log.info("coupon deleted at the shop", extra={"store_id": store_id, "coupon_id": found.id})
        return {"deleted": deleted, "usage_count": 0, "found": True}

    def _store(self, store_id: str) -> Store:
        store = self.storage.stores.get(store_id) if isinstance(store_id, str) else None
        if store is None:
            raise NotFound(f"no store {store_id}")
        return store

    def _customer_email(self, store_id: str, customer_id: object) -> str:
        doc = (self.storage.customers.get(store_id, customer_id)
               if isinstance(customer_id, str) and customer_id else None)
        if doc is None or doc.get("status") not in (None, "active"):
            raise NotFound(f"no customer {customer_id} in store {store_id}")
        email = (doc.get("email") or "").strip().lower()
        if not email:
            raise Refused(f"customer {customer_id} has no email to restrict the coupon to")
        return email


def _request(spec: CouponSpec, email: str | None) -> CouponRequest:
    if spec.discount_type == "percent":
        amount = Decimal(spec.amount)
    else:
        amount = to_units(spec.amount, spec.currency)
    minimum = to_units(spec.minimum_spend, spec.currency) if spec.minimum_spend else None
    try:
        return CouponRequest(
            code=spec.code, amount=amount, currency=spec.currency,
            discount_type=spec.discount_type, usage_limit=spec.usage_limit,
            usage_limit_per_user=1, email_restrictions=(email,) if email else (),
            expires_at=spec.expires_at, individual_use=spec.individual_use,
            minimum_spend=minimum, description=spec.description, meta=dict(spec.meta))
    except ValueError as exc:  # an email the shop would refuse, say
        raise Refused(f"the coupon cannot be written: {exc}") from None


def _shop_error(exc: WooApiError, doing: str) -> Exception:
    details = {"shop_status": exc.status, "shop_code": exc.code}
    # A 2xx we could not read (the coupon may exist) or the answers above: ask again later.
    if (isinstance(exc, WooUnavailable) or exc.status < 400 or exc.status >= 500
            or exc.status in _TRY_AGAIN_STATUSES):
        return Unavailable(f"the shop could not {doing} now: {exc}", details)
    return Refused(f"the shop refused to {doing}: {exc.message}", details)


def _answer(coupon: ShopCoupon) -> dict:
    return {"coupon_id": coupon.id, "code": coupon.code, "status": coupon.status,
            "usage_count": coupon.usage_count,
            "expires_at": coupon.expires_at.isoformat() if coupon.expires_at else None}
