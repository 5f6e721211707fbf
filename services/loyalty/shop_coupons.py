"""The `shop_coupons` port over nameko RPC: customer_sync's coupon methods within a deadline,
so a customer_sync that is down or slow is `Unavailable` (the reward step tries again later)
rather than a worker waiting forever."""
from __future__ import annotations

import eventlet
from nameko.exceptions import UnknownService

from shared.errors import Unavailable


class CouponsOverRpc:
    def __init__(self, proxy, timeout_seconds: float) -> None:
        self.proxy = proxy
        self.timeout_seconds = timeout_seconds

    def ensure_coupon(self, store_id: str, coupon: dict, customer_id: str | None = None) -> dict:
        return self._call("ensure_coupon", store_id, coupon, customer_id)

    def delete_coupon(self, store_id: str, code: str, meta: dict) -> dict:
        return self._call("delete_coupon", store_id, code, meta)

    def _call(self, method: str, *args) -> dict:
        try:
            reply = getattr(self.proxy, method).call_async(*args)
            with eventlet.Timeout(self.timeout_seconds):
                return reply.result()
        except UnknownService:
            raise Unavailable("customer_sync is not running") from None
        except eventlet.Timeout:
            raise Unavailable(f"customer_sync did not answer {method} in "
                              f"{self.timeout_seconds:g}s") from None
