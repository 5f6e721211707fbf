"""WooCommerce REST/webhook JSON built field by field, for tests that need exact control."""
from __future__ import annotations

import copy


def address(email: str = "", **overrides: str) -> dict:
    base = {"first_name": "Ada", "last_name": "Lovelace", "company": "", "address_1": "1 Way",
            "address_2": "", "city": "London", "state": "", "postcode": "N1", "country": "GB",
            "email": email, "phone": "+4400000001"}
    base.update(overrides)
    return base


def customer(woo_id: int = 42, email: str = "ada@example.com", modified: str = "2026-03-01T10:00:00",
             **overrides) -> dict:
    body = {
        "id": woo_id, "date_created": "2026-01-01T09:00:00", "date_created_gmt": "2026-01-01T09:00:00",
        "date_modified": modified, "date_modified_gmt": modified, "email": email,
        "first_name": "Ada", "last_name": "Lovelace", "role": "customer", "username": "ada",
        "billing": address(email), "shipping": {k: v for k, v in address().items()
                                                if k not in ("email", "phone")},
        "is_paying_customer": True, "avatar_url": "https://example.invalid/a.png",
        "meta_data": [], "_links": {"self": [{"href": "https://shop.example/x"}]},
    }
    body.update(overrides)
    return body


def order(order_id: int = 1001, customer_id: int = 42, status: str = "processing",
          modified: str = "2026-03-02T10:00:00", total: str = "49.90", email: str = "ada@example.com",
          refunds: list | None = None, **overrides) -> dict:
    body = {
        "id": order_id, "parent_id": 0, "number": str(order_id), "order_key": f"wc_order_{order_id}",
        "created_via": "checkout", "status": status, "currency": "EUR",
        "date_created": "2026-03-02T09:00:00", "date_created_gmt": "2026-03-02T09:00:00",
        "date_modified": modified, "date_modified_gmt": modified,
        "date_paid": "2026-03-02T09:01:00", "date_paid_gmt": "2026-03-02T09:01:00",
        "date_completed": None, "date_completed_gmt": None,
        "discount_total": "0.00", "shipping_total": "4.90", "total_tax": "0.00", "total": total,
        "prices_include_tax": False, "customer_id": customer_id,
        "billing": address(email), "shipping": address(),
        "payment_method": "stripe",
        "line_items": [{"id": 1, "name": "Tea", "product_id": 7, "variation_id": 0, "quantity": 3,
                        "subtotal": "45.00", "total": "45.00", "sku": "TEA", "price": 15,
                        "meta_data": []}],
        "shipping_lines": [], "fee_lines": [], "coupon_lines": [],
        "refunds": refunds or [], "meta_data": [],
    }
    body.update(overrides)
    return copy.deepcopy(body)
