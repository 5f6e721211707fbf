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


class CustomerUpdatedData(CustomerData):
    changed_fields = fields.List(fields.String(), required=True)


class CustomerDeletedData(BaseSchema):
    customer_id = fields.String(required=True)
    woo_customer_id = fields.Integer(allow_none=True, load_default=None)


class CustomerMergedData(BaseSchema):
    """A guest record was found to be a registered customer: its orders now belong to `customer_id`."""

    customer_id = fields.String(required=True)
    merged_customer_id = fields.String(required=True)


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
