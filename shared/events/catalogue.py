"""Every event the system knows: type, source service, schema version, schema and a sample.

Publishers and consumers both look contracts up here; a test holds each entry to its sample.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from marshmallow import Schema

from shared.events import consent_capture as capture
from shared.events import customer_sync as cs
from shared.events import gdpr
from shared.events import loyalty
from shared.events import notifications as nt
from shared.events import segmentation as seg
from shared.events.fastload import SchemaLoader


@dataclass(frozen=True)
class EventContract:
    event_type: str
    source: str
    schema_version: int
    schema: type[Schema]
    description: str
    sample: dict = field(default_factory=dict, compare=False)

    def loader(self) -> SchemaLoader:
        """One loader per contract: building nested schemas on every event is slow, loading
        keeps no state on the instance, and the compiled path (shared/events/fastload.py) is
        built once."""
        instance = _LOADERS.get(self.event_type, {}).get(self.schema_version)
        if instance is None:
            instance = SchemaLoader(self.schema())
            _LOADERS.setdefault(self.event_type, {})[self.schema_version] = instance
        return instance


_LOADERS: dict[str, dict[int, SchemaLoader]] = {}


def _money(amount: int, currency: str = "EUR") -> dict:
    return {"amount": amount, "currency": currency}


_ADDRESS = {
    "first_name": "Ada", "last_name": "Lovelace", "company": "", "address_1": "1 Analytical Way",
    "address_2": "", "city": "London", "state": "", "postcode": "N1 1AA", "country": "GB",
    "email": "ada@example.com", "phone": "+441234567890",
}
_CUSTOMER = {
    "customer_id": "c-3f2a", "woo_customer_id": 42, "registered": True,
    "email": "ada@example.com", "first_name": "Ada", "last_name": "Lovelace",
    "phone": "+441234567890", "company": "", "billing": _ADDRESS, "shipping": _ADDRESS,
    "date_created": "2026-01-02T10:00:00+00:00", "date_modified": "2026-01-02T10:00:00+00:00",
    "custom_fields": {"favourite_tea": "assam", "newsletter_issue": 12},
    "company_id": "co_5f2a9c0e1b7d4a3c8e6f0a12",
}
_ORDER = {
    "order_id": "1001", "number": "1001", "customer_id": "c-3f2a", "is_guest": False,
    "status": "processing", "currency": "EUR", "total": _money(4990), "subtotal": _money(4500),
    "discount_total": _money(0), "shipping_total": _money(490), "tax_total": _money(0),
    "total_refunded": _money(0), "date_created": "2026-01-03T09:00:00+00:00",
    "date_paid": "2026-01-03T09:01:00+00:00", "date_completed": None,
    "date_modified": "2026-01-03T09:01:00+00:00",
    "line_items": [{
        "line_id": 1, "product_id": 7, "variation_id": 0, "name": "Tea", "sku": "TEA",
        "quantity": 3, "subtotal": _money(4500), "total": _money(4500),
    }],
    "coupon_codes": [], "payment_method": "stripe", "billing_country": "GB",
}

_ENTRIES = (
    EventContract("customer.created", "customer_sync", 1, cs.CustomerData,
                  "A customer was seen for the first time (registered, or a guest by email).",
                  _CUSTOMER),
    EventContract("customer.updated", "customer_sync", 1, cs.CustomerUpdatedData,
                  "A customer's contact data, custom fields, standing or company changed; "
                  "`changed_fields` names what.",
                  {**_CUSTOMER, "changed_fields": ["phone"]}),
    EventContract("customer.deleted", "customer_sync", 1, cs.CustomerDeletedData,
                  "The shop deleted a registered customer; their orders remain.",
                  {"customer_id": "c-3f2a", "woo_customer_id": 42}),
    EventContract("customer.merged", "customer_sync", 1, cs.CustomerMergedData,
                  "A record was merged into another (the primary, `customer_id`): a guest into "
                  "the registered customer with the same email, or duplicates merged by a "
                  "person (one event per merged record, sharing `merge_id`). Every data owner "
                  "moves its slice to the primary.",
                  {"customer_id": "c-3f2a", "merged_customer_id": "c-77b0",
                   "merge_id": "m-5d1e", "kind": "manual"}),
    EventContract("customer.unmerged", "customer_sync", 1, cs.CustomerUnmergedData,
                  "A merge was undone: `restored_customer_id` is a record of its own again and "
                  "every data owner hands back what it moved under `merge_id`.",
                  {"customer_id": "c-3f2a", "restored_customer_id": "c-77b0",
                   "merge_id": "m-5d1e", "orders_since": ["1042"]}),
    EventContract("order.placed", "customer_sync", 1, cs.OrderData,
                  "An order was first seen in a real status (pending, processing, on-hold, "
                  "completed), or refunded (then followed by its `order.refunded`).", _ORDER),
    EventContract("order.updated", "customer_sync", 1, cs.OrderUpdatedData,
                  "A placed order's status or amounts changed (not into cancelled).",
                  {**_ORDER, "status": "completed", "old_status": "processing",
                   "new_status": "completed", "changed_fields": ["status"]}),
    EventContract("order.refunded", "customer_sync", 1, cs.OrderRefundedData,
                  "The refunded amount of a placed order grew by `refund_delta`.",
                  {**_ORDER, "total_refunded": _money(1000), "refund_delta": _money(1000)}),
    EventContract("order.cancelled", "customer_sync", 1, cs.OrderCancelledData,
                  "A placed order became cancelled, failed or trashed.",
                  {**_ORDER, "status": "cancelled", "old_status": "processing"}),
    EventContract("api_key.revoked", "customer_sync", 1, cs.ApiKeyRevokedData,
                  "A gateway API key was revoked: every gateway instance forgets it at once "
                  "(a broadcast).",
                  {"key_id": "5f0c3a9d2e7b1c44", "revoked_at": "2026-11-29T10:00:00+00:00"}),
    EventContract("consent.captured", "customer_sync", 1, capture.ConsentCapturedData,
                  "A customer opted in where they gave consent (a checkout box mapped by the "
                  "store's consent capture settings, or an import row with its proof); gdpr "
                  "records it, keyed by `capture_key`, and publishes `consent.changed`.",
                  {"customer_id": "c-3f2a", "purpose": "email_marketing", "source": "checkout",
                   "order_id": "1001", "captured_at": "2026-01-03T09:00:00+00:00",
                   "capture_key": "checkout:order:1001",
                   "evidence": "order meta _newsletter_optin = yes"}),
    EventContract("customer.tagged", "segmentation", 1, seg.TagChangeData,
                  "A tag was added to a customer, by a rule or by a person (`source`); `fact_at` "
                  "dates the fact that caused it.",
                  {"customer_id": "c-3f2a", "tag": "loyal", "source": "rule", "rule_id": "r-1",
                   "actor": None, "fact_at": "2026-01-03T09:00:00+00:00"}),
    EventContract("customer.untagged", "segmentation", 1, seg.TagChangeData,
                  "A tag was removed from a customer.",
                  {"customer_id": "c-3f2a", "tag": "abandoned-cart", "source": "manual",
                   "rule_id": None, "actor": "ops@shop.example",
                   "fact_at": "2026-01-04T15:30:00+00:00"}),
    EventContract("customer.segment_changed", "segmentation", 1, seg.SegmentChangedData,
                  "A customer's segment changed (`old_segment` is null the first time); `fact_at` "
                  "dates the fact that caused it.",
                  {"customer_id": "c-3f2a", "old_segment": "new", "new_segment": "regular",
                   "orders_count": 3, "total_spent": {"amount": 14970, "currency": "EUR"},
                   "fact_at": "2026-01-03T09:00:00+00:00"}),
    EventContract("customer.group_joined", "segmentation", 1, seg.GroupChangeData,
                  "A customer joined a group (by a rule or by a person); `fact_at` dates the fact "
                  "that caused it.",
                  {"customer_id": "c-3f2a", "group": "wholesale", "source": "rule",
                   "rule_id": "r-2", "actor": None, "fact_at": "2026-01-03T09:00:00+00:00"}),
    EventContract("customer.group_left", "segmentation", 1, seg.GroupChangeData,
                  "A customer left a group.",
                  {"customer_id": "c-3f2a", "group": "wholesale", "source": "manual",
                   "rule_id": None, "actor": "ops@shop.example",
                   "fact_at": "2026-01-04T15:30:00+00:00"}),
    EventContract("customer.saved_segment_entered", "segmentation", 1,
                  seg.SavedSegmentMembershipData,
                  "A customer now meets a saved segment's conditions (`segment_id`, its `name` "
                  "when it was entered): after an event changed their stats, tags or groups, the "
                  "hourly recompute, or the segment being saved; `fact_at` dates the cause.",
                  {"customer_id": "c-3f2a", "segment_id": "gift-buyers", "name": "Gift buyers",
                   "fact_at": "2026-01-03T09:00:00+00:00"}),
    EventContract("customer.saved_segment_left", "segmentation", 1,
                  seg.SavedSegmentMembershipData,
                  "A customer no longer meets a saved segment's conditions (a deleted segment "
                  "publishes no leaving).",
                  {"customer_id": "c-3f2a", "segment_id": "gift-buyers", "name": "Gift buyers",
                   "fact_at": "2026-01-04T15:30:00+00:00"}),
    EventContract("loyalty.points_changed", "loyalty", 1, loyalty.PointsChangedData,
                  "A customer's points changed by one ledger entry (earn, reverse, redeem, "
                  "expire, adjust, return: a reward's points given back); `balance` is after it.",
                  {"customer_id": "c-3f2a", "entry_key": "earn:1001", "kind": "earn",
                   "delta": 450, "balance": 1450, "reason": "order 1001",
                   "order_id": "1001"}),
    EventContract("loyalty.tier_changed", "loyalty", 1, loyalty.TierChangedData,
                  "A customer's tier changed (on an earn or reversal, or by the daily check "
                  "when points fall out of the 12-month window); `fact_at` is the order's time or "
                  "the daily check's.",
                  {"customer_id": "c-3f2a", "old_tier": "bronze", "new_tier": "silver",
                   "direction": "up", "points_in_window": 1450,
                   "fact_at": "2026-01-03T09:01:00+00:00"}),
    EventContract("loyalty.reward_issued", "loyalty", 1, loyalty.RewardData,
                  "A reward's coupon exists at the shop and can be used: bought with points "
                  "(`kind` points) or store credit (`kind` credit).",
                  {"customer_id": "c-3f2a", "reward_id": "rw-5b1c", "kind": "points",
                   "code": "shop-7kq2m9xwpa", "amount": {"amount": 500, "currency": "EUR"},
                   "points": 500, "expires_at": "2027-03-06T12:00:00+00:00"}),
    EventContract("loyalty.reward_used", "loyalty", 1, loyalty.RewardUsedData,
                  "An order used a reward's code (learnt from the order's coupon lines).",
                  {"customer_id": "c-3f2a", "reward_id": "rw-5b1c", "kind": "points",
                   "code": "shop-7kq2m9xwpa", "amount": {"amount": 500, "currency": "EUR"},
                   "points": 500, "expires_at": "2027-03-06T12:00:00+00:00",
                   "order_id": "1002"}),
    EventContract("loyalty.reward_returned", "loyalty", 1, loyalty.RewardReturnedData,
                  "A reward will not be spent (refused by the shop, or cancelled) and its "
                  "points went back to the balance.",
                  {"customer_id": "c-3f2a", "reward_id": "rw-5b1c", "kind": "points",
                   "code": "shop-7kq2m9xwpa", "amount": {"amount": 500, "currency": "EUR"},
                   "points": 500, "expires_at": "2027-03-06T12:00:00+00:00",
                   "reason": "cancelled", "points_returned": 500}),
    EventContract("loyalty.reward_expired", "loyalty", 1, loyalty.RewardReturnedData,
                  "A reward expired unused: its coupon is deleted at the shop and, when the "
                  "programme says so, its points went back.",
                  {"customer_id": "c-3f2a", "reward_id": "rw-5b1c", "kind": "points",
                   "code": "shop-7kq2m9xwpa", "amount": {"amount": 500, "currency": "EUR"},
                   "points": 500, "expires_at": "2027-03-06T12:00:00+00:00",
                   "reason": "expired", "points_returned": 500}),
    EventContract("loyalty.points_expiring", "loyalty", 1, loyalty.PointsExpiringData,
                  "Points of one lot expire soon (once per lot, the programme's warning days "
                  "ahead).",
                  {"customer_id": "c-3f2a", "lot_id": "earn:1001", "points": 450,
                   "expires_at": "2027-01-05T10:00:00+00:00", "balance": 1450}),
    EventContract("notification.sent", "notifications", 1, nt.NotificationSentData,
                  "A message to a customer was accepted by its provider.",
                  {"send_id": "wf-1:c-3f2a:e-9", "customer_id": "c-3f2a", "channel": "email",
                   "purpose": "marketing", "template": "abandoned_cart", "workflow_id": "wf-1",
                   "bulk_id": None, "provider_id": "<20261129.1@shop.example>", "attempts": 1}),
    EventContract("notification.failed", "notifications", 1, nt.NotificationFailedData,
                  "A message will not go out (refused for good, attempts exhausted, or held "
                  "back by consent, the weekly cap or its cancel condition).",
                  {"send_id": "wf-1:c-3f2a:e-9", "customer_id": "c-3f2a", "channel": "sms",
                   "purpose": "marketing", "template": "win_back", "workflow_id": "wf-1",
                   "bulk_id": None, "reason": "no sms_marketing consent", "permanent": True,
                   "attempts": 0}),
    EventContract("consent.changed", "gdpr", 1, nt.ConsentChangedData,
                  "A customer's consent for a purpose changed (published by gdpr, or by "
                  "notifications for an SMS STOP/START, an unsubscribe link, the preference "
                  "page or an email confirmation, on the gdpr exchange; `origin` says which). "
                  "`pending`: an email opt-in waiting for its confirmation.",
                  {"customer_id": "c-3f2a", "purpose": "sms_marketing", "granted": False,
                   "source": "sms_stop", "changed_at": "2026-11-29T10:00:00+00:00",
                   "origin": "notifications", "note": "", "pending": False}),
    EventContract("gdpr.erasure_requested", "gdpr", 1, gdpr.ErasureRequestedData,
                  "Forget a person: every data-owning service erases or anonymises its slice "
                  "and answers with `gdpr.erasure_completed`.",
                  {"request_id": "req-7", "customer_ids": ["c-3f2a", "c-77b0"],
                   "email": "ada@example.com"}),
    EventContract("gdpr.erasure_completed", "gdpr", 1, gdpr.ErasureCompletedData,
                  "One data-owning service has erased its slice of a person (published by "
                  "that service, on the gdpr exchange; `service` names it).",
                  {"request_id": "req-7", "service": "segmentation",
                   "customer_ids": ["c-3f2a", "c-77b0"], "counts": {"profiles": 2}}),
)

CATALOGUE: dict[tuple[str, int], EventContract] = {
    (entry.event_type, entry.schema_version): entry for entry in _ENTRIES
}
_LATEST: dict[str, int] = {}
for _type, _version in CATALOGUE:
    _LATEST[_type] = max(_version, _LATEST.get(_type, 0))


def contract(event_type: str, schema_version: int | None = None) -> EventContract:
    """The contract for a type (latest version unless one is named); KeyError if unknown."""
    version = schema_version if schema_version is not None else _LATEST.get(event_type)
    try:
        return CATALOGUE[(event_type, version)]
    except KeyError:
        raise KeyError(f"no contract for event {event_type!r} version {version}") from None


def contracts_from(source: str) -> list[EventContract]:
    """Latest contracts of the events a service publishes."""
    return [c for (t, v), c in CATALOGUE.items() if c.source == source and _LATEST[t] == v]
