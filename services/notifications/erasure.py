"""GDPR erasure in notifications: the person's suppressions lose their address in clear, their
message coupons are owed a withdrawal from the shop, then the contact and the send log are
erased (shared.erasure does the rest: parked messages, the receipt and the confirmation)."""
from __future__ import annotations

from datetime import timedelta

from services.notifications.notifier import Notifier
from services.notifications.repository import NotificationsStorage
from services.notifications.sender import coupon_meta
from services.notifications.suppression import Suppressions
from shared.times import utcnow


def erase(storage: NotificationsStorage, notifier: Notifier, suppressions: Suppressions,
          send_lease_seconds: float, store_id: str, customer_ids: list[str],
          request_id: str) -> dict:
    """Suppressions first (the address is read from the contact, which the erasure
    empties), then the coupons owed back, then the contact and the send log."""
    addresses = []
    for customer_id in customer_ids:
        contact = storage.contacts.get(store_id, customer_id) or {}
        addresses += [("email", contact.get("email")), ("sms", contact.get("phone"))]
    forgotten = suppressions.forget_addresses(store_id, addresses)
    withdrawals = owe_coupon_withdrawals(storage, send_lease_seconds, store_id, customer_ids)
    return {**notifier.erase(store_id, customer_ids, request_id),
            "suppressions": forgotten, "coupons_to_withdraw": withdrawals}


def owe_coupon_withdrawals(storage: NotificationsStorage, send_lease_seconds: float,
                           store_id: str, customer_ids: list[str]) -> int:
    """The person's message coupons carry their email at the shop: each one not already
    taken back is owed a deletion (shared.coupon_withdrawals), before the send log forgets
    them. A send being sent may still be asking for its coupon: its deletion waits for the
    send's lease."""
    now = utcnow()
    lease = timedelta(seconds=send_lease_seconds)
    owed = 0
    for send in storage.sends.coupons_not_withdrawn(store_id, customer_ids):
        not_before = now + lease if send.get("status") == "sending" else now
        storage.coupon_withdrawals.add(store_id, send["coupon"]["code"], coupon_meta(send),
                                       not_before, now)
        owed += 1
    return owed
