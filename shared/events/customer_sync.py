"""Events published by customer_sync: who the shop's customers are and what they ordered.

`customer.*` events carry the contact fields that segmentation and notifications keep;
`order.*` events carry no personal data beyond the customer's id.
"""
from __future__ import annotations

from marshmallow import fields, validate

from shared.events.fields import AddressSchema, BaseSchema, Money, UtcTime

ORDER_STATUSES = (
    "pending",
    "processing",
    "on-hold",
    "completed",
    "cancelled",
    "refunded",
    "failed",
    "trash",
    "checkout-draft",
)
_status = validate.OneOf(ORDER_STATUSES)
# The statuses an order.placed or order.updated can carry (order.cancelled has the others):
# what a workflow may wait for an order to enter.
LIVE_ORDER_STATUSES = ("pending", "processing", "on-hold", "completed", "refunded")
ACCOUNT_STATUSES = ("active", "inactive")


class CustomerData(BaseSchema):
    customer_id = fields.String(required=True)
    woo_customer_id = fields.Integer(allow_none=True, load_default=None)
    registered = fields.Boolean(required=True)
    email = fields.String(required=True, allow_none=True)
    first_name = fields.String(load_default="")
    last_name = fields.String(load_default="")
    phone = fields.String(load_default="")
    company = fields.String(load_default="")
    billing = fields.Nested(AddressSchema, load_default=dict)
    shipping = fields.Nested(AddressSchema, load_default=dict)
    date_created = UtcTime(allow_none=True, load_default=None)
    # Added in place (fields are only ever added): "MM-DD" or "YYYY-MM-DD" when the shop keeps
    # one (a birthday plugin's customer meta data), for birthday messages.
    birthday = fields.String(load_default=None, allow_none=True,
                             validate=validate.Regexp(r"^(\d{4}-)?\d{2}-\d{2}\Z"))
    # Added in place: the standing staff give a customer in the companion (WooCommerce has no
    # such field). "inactive" customers stay listed and keep their data, and can be filtered.
    account_status = fields.String(load_default="active",
                                   validate=validate.OneOf(ACCOUNT_STATUSES))
    # Added in place: when the shop last changed the contact data the event carries (its
    # date_modified, or the order whose billing refreshed it); null when it never said.
    date_modified = UtcTime(allow_none=True, load_default=None)
    # Added in place: the store's own fields (key to text, number, "YYYY-MM-DD" date, choice or
    # boolean; docs/custom-fields.md), for segments and messages that use them.
    custom_fields = fields.Dict(keys=fields.String(), load_default=dict)
    # Added in place: the company (B2B) the customer belongs to, `co_` and 24 hex digits
    # (docs/companies.md); null when none.
    company_id = fields.String(load_default=None, allow_none=True)


class CustomerUpdatedData(CustomerData):
    changed_fields = fields.List(fields.String(), required=True)


class CustomerDeletedData(BaseSchema):
    customer_id = fields.String(required=True)
    woo_customer_id = fields.Integer(allow_none=True, load_default=None)


# How two records came to be merged: a guest found to be a registered customer by email, or a
# person choosing the primary record in the console, the API or the CLI.
MERGE_KINDS = ("guest", "manual")


class CustomerMergedData(BaseSchema):
    """`merged_customer_id` now belongs to `customer_id` (the primary record): every data owner
    moves its slice of the merged record to the primary, and remembers what it moved under
    `merge_id` so that a `customer.unmerged` can hand it back."""

    customer_id = fields.String(required=True)
    merged_customer_id = fields.String(required=True)
    # Added in place: the merge record customer_sync stores (one per merge, naming every record
    # merged into the primary); null on merges recorded before merge records existed.
    merge_id = fields.String(load_default=None, allow_none=True)
    kind = fields.String(load_default="guest", validate=validate.OneOf(MERGE_KINDS))


class CustomerUnmergedData(BaseSchema):
    """Merge `merge_id` was undone: `restored_customer_id` is a record of its own again, and
    each data owner hands back what it moved to `customer_id` under that merge. What arrived
    since the merge stays with the primary unless it belongs to the restored record's own shop
    account (docs/merging.md states the rules)."""

    customer_id = fields.String(required=True)
    restored_customer_id = fields.String(required=True)
    merge_id = fields.String(required=True)
    # The orders (shop order ids) that arrived since the merge for the restored record's own
    # shop account: they were the primary's while merged and are the restored record's now.
    orders_since = fields.List(fields.String(), load_default=list)


class LineItemData(BaseSchema):
    line_id = fields.Integer(required=True)
    product_id = fields.Integer(load_default=0)
    variation_id = fields.Integer(load_default=0)
    name = fields.String(load_default="")
    sku = fields.String(load_default="")
    quantity = fields.Integer(required=True)
    subtotal = Money(required=True)
    total = Money(required=True)


class OrderData(BaseSchema):
    order_id = fields.String(required=True)
    number = fields.String(required=True)
    customer_id = fields.String(required=True, allow_none=True)
    is_guest = fields.Boolean(required=True)
    status = fields.String(required=True, validate=_status)
    currency = fields.String(required=True)
    total = Money(required=True)
    subtotal = Money(required=True)
    discount_total = Money(required=True)
    shipping_total = Money(required=True)
    tax_total = Money(required=True)
    total_refunded = Money(required=True)
    date_created = UtcTime(required=True, allow_none=True)
    date_paid = UtcTime(allow_none=True, load_default=None)
    date_completed = UtcTime(allow_none=True, load_default=None)
    # Added in place: the shop's time of the state the event carries, which dates a status
    # change (reconciliation can publish one hours after it happened).
    date_modified = UtcTime(allow_none=True, load_default=None)
    line_items = fields.List(fields.Nested(LineItemData), load_default=list)
    coupon_codes = fields.List(fields.String(), load_default=list)
    payment_method = fields.String(load_default="")
    billing_country = fields.String(load_default="")


class OrderUpdatedData(OrderData):
    old_status = fields.String(required=True, validate=_status)
    new_status = fields.String(required=True, validate=_status)
    changed_fields = fields.List(fields.String(), required=True)


class OrderRefundedData(OrderData):
    refund_delta = Money(required=True)


class OrderCancelledData(OrderData):
    old_status = fields.String(required=True, validate=_status)


class ApiKeyRevokedData(BaseSchema):
    """A gateway API key stopped being valid: every gateway instance drops what it cached of it
    at once, rather than trusting its cache until the entry expires."""

    key_id = fields.String(required=True, validate=validate.Length(min=1))
    revoked_at = UtcTime(required=True)
