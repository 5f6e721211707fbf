"""The fake WooCommerce shop behaves like the shop described in docs/woocommerce.md."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import threading
import time
from collections import Counter
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
import requests

from demo.shop import (
    CouponRejected,
    FakeWooShop,
    delivery_id,
    ping_body,
    sign,
    webhook_headers,
)
from demo.traffic import WooTraffic

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d$")
CUSTOMER_KEYS = {
    "id", "date_created", "date_created_gmt", "date_modified", "date_modified_gmt", "email",
    "first_name", "last_name", "role", "username", "billing", "shipping", "is_paying_customer",
    "avatar_url", "meta_data",
}
BILLING_KEYS = {"first_name", "last_name", "company", "address_1", "address_2", "city", "state",
                "postcode", "country", "email", "phone"}


@pytest.fixture(scope="module")
def shop():
    with FakeWooShop(customers=300, orders=600, seed=7) as running:
        yield running


@pytest.fixture()
def session():
    with requests.Session() as s:
        s.auth = ("ck_test", "cs_test")
        yield s


def D(text: str) -> Decimal:
    assert re.fullmatch(r"-?\d+\.\d\d", text), text
    return Decimal(text)


# ------------------------------------------------------------------ generated data


def test_same_seed_same_data_and_other_seed_other_data():
    a, b, c = (FakeWooShop(customers=50, orders=80, seed=s) for s in (3, 3, 4))
    assert a.customers == b.customers and a.orders == b.orders
    assert a.customers != c.customers


def test_customers_look_like_woocommerce(shop):
    assert len(shop.customers) == 300
    emails = [c["email"] for c in shop.customers.values()]
    assert len({e.lower() for e in emails}) == 300  # unique, case-insensitively
    assert any(e != e.lower() for e in emails)  # some typed with capitals
    for customer in shop.customers.values():
        assert set(customer) == CUSTOMER_KEYS
        assert set(customer["billing"]) == BILLING_KEYS
        assert {"email"} & set(customer["shipping"]) == set()
        assert customer["role"] == "customer" and customer["meta_data"] == []
        for field in ("date_created", "date_created_gmt", "date_modified", "date_modified_gmt"):
            assert ISO.match(customer[field]), customer[field]
        assert customer["date_modified_gmt"] >= customer["date_created_gmt"]
        assert "2024-01-01" <= customer["date_created_gmt"] < "2026-01-01"
    first = shop.customers[min(shop.customers)]
    # local time is UTC+1 by default
    assert first["date_created"][11:13] == f"{(int(first['date_created_gmt'][11:13]) + 1) % 24:02d}"


def test_orders_totals_are_consistent(shop):
    for order in shop.orders.values():
        lines = sum(D(li["total"]) for li in order["line_items"])
        fees = sum(D(f["total"]) for f in order["fee_lines"])
        assert lines + fees + D(order["shipping_total"]) + D(order["total_tax"]) == D(order["total"])
        assert D(order["cart_tax"]) + D(order["shipping_tax"]) == D(order["total_tax"])
        subtotals = sum(D(li["subtotal"]) for li in order["line_items"])
        assert subtotals - lines == D(order["discount_total"])
        if order["coupon_lines"]:
            assert D(order["coupon_lines"][0]["discount"]) == D(order["discount_total"])
        assert order["number"] == str(order["id"]) and order["parent_id"] == 0
        assert order["prices_include_tax"] is False and order["currency"] == "EUR"
        assert (order["date_paid_gmt"] is None) == (order["status"] not in ("processing", "completed", "refunded"))


def test_orders_statuses_guests_and_refunds(shop):
    orders = list(shop.orders.values())
    statuses = Counter(o["status"] for o in orders)
    assert set(statuses) == {"completed", "processing", "pending", "on-hold", "cancelled", "refunded", "failed"}
    assert statuses["completed"] > len(orders) / 2

    guests = [o for o in orders if o["customer_id"] == 0]
    assert 0.12 < len(guests) / len(orders) < 0.3
    registered = {c["email"].lower() for c in shop.customers.values()}
    guest_emails = Counter(o["billing"]["email"].lower() for o in guests)
    assert any(e in registered for e in guest_emails)  # a guest checkout by a registered person
    assert any(n >= 2 for e, n in guest_emails.items() if e not in registered)  # repeat guests
    assert all(o["customer_id"] in shop.customers for o in orders if o["customer_id"])

    for order in orders:
        refunded = -sum(D(r["total"]) for r in order["refunds"])
        assert all(r["total"].startswith("-") for r in order["refunds"])
        if order["status"] == "refunded":
            assert refunded == D(order["total"])
        else:
            assert refunded < D(order["total"]) or not order["refunds"]
    assert any(o["status"] == "completed" and o["refunds"] for o in orders)  # partial refunds


def test_a_big_shop_generates_and_serves_every_page():
    big = FakeWooShop(customers=3000, orders=3000, seed=2)
    with big, requests.Session() as s:
        s.auth = ("ck_test", "cs_test")
        seen = 0
        for resource in ("customers", "orders"):
            for page in range(1, 31):
                r = s.get(big.api_url + resource, params={"page": page, "per_page": 100})
                assert r.status_code == 200
                seen += len(r.json())
    assert seen == 6000


# ------------------------------------------------------------------ lists


def test_list_headers_links_and_page_past_the_end(shop, session):
    r = session.get(shop.api_url + "customers", params={"page": 2, "per_page": 25, "orderby": "id"})
    assert r.status_code == 200
    assert r.headers["X-WP-Total"] == "300" and r.headers["X-WP-TotalPages"] == "12"
    assert 'page=1' in r.headers["Link"] and 'rel="prev"' in r.headers["Link"]
    assert 'page=3' in r.headers["Link"] and 'rel="next"' in r.headers["Link"]
    ids = sorted(shop.customers)
    assert [c["id"] for c in r.json()] == ids[25:50]

    past = session.get(shop.api_url + "customers", params={"page": 13, "per_page": 25})
    assert past.status_code == 200 and past.json() == []
    assert past.headers["X-WP-TotalPages"] == "12" and 'rel="next"' not in past.headers["Link"]

    default = session.get(shop.api_url + "orders")
    assert len(default.json()) == 10  # per_page defaults to 10, newest first
    dates = [o["date_created_gmt"] for o in default.json()]
    assert dates == sorted(dates, reverse=True)


def test_per_page_over_100_is_refused_like_woocommerce(shop, session):
    r = session.get(shop.api_url + "orders", params={"per_page": 101})
    assert r.status_code == 400
    body = r.json()
    assert body["code"] == "rest_invalid_param"
    assert body["data"]["status"] == 400 and "per_page" in body["data"]["params"]


def test_orderby_and_order(shop, session):
    r = session.get(shop.api_url + "orders", params={"orderby": "modified", "order": "asc", "per_page": 100})
    stamps = [o["date_modified_gmt"] for o in r.json()]
    assert stamps == sorted(stamps)
    r = session.get(shop.api_url + "customers", params={"orderby": "registered_date", "order": "desc",
                                                        "per_page": 5})
    expected = sorted(shop.customers.values(), key=lambda c: (c["date_created_gmt"], c["id"]), reverse=True)
    assert [c["id"] for c in r.json()] == [c["id"] for c in expected[:5]]
    bad = session.get(shop.api_url + "orders", params={"orderby": "total"})
    assert bad.status_code == 400 and bad.json()["code"] == "rest_invalid_param"


def test_modified_after_filters_orders_strictly_local_or_gmt(shop, session):
    stamps = sorted(o["date_modified_gmt"] for o in shop.orders.values())
    cut = stamps[500]
    expected = {o["id"] for o in shop.orders.values() if o["date_modified_gmt"] > cut}
    gmt = session.get(shop.api_url + "orders", params={"modified_after": cut, "dates_are_gmt": "true",
                                                       "per_page": 100, "status": "any"})
    assert gmt.headers["X-WP-Total"] == str(len(expected))
    assert {o["id"] for o in gmt.json()} == expected
    # without dates_are_gmt the same value is read as shop-local time (UTC+1): one hour more
    local = session.get(shop.api_url + "orders", params={"modified_after": cut, "per_page": 100})
    local_expected = {o["id"] for o in shop.orders.values() if o["date_modified"] > cut}
    assert {o["id"] for o in local.json()} == local_expected
    assert len(local_expected) >= len(expected)
    # an explicit offset is converted
    zulu = session.get(shop.api_url + "orders", params={"modified_after": cut + "Z", "per_page": 100})
    assert {o["id"] for o in zulu.json()} == expected


def test_customers_ignore_modified_after(shop, session):
    r = session.get(shop.api_url + "customers", params={"modified_after": "2099-01-01T00:00:00"})
    assert r.status_code == 200 and r.headers["X-WP-Total"] == "300"


def test_status_and_customer_filters(shop, session):
    r = session.get(shop.api_url + "orders", params={"status": "refunded,cancelled", "per_page": 100})
    expected = sum(o["status"] in ("refunded", "cancelled") for o in shop.orders.values())
    assert r.headers["X-WP-Total"] == str(expected)
    customer_id = next(o["customer_id"] for o in shop.orders.values() if o["customer_id"])
    r = session.get(shop.api_url + "orders", params={"customer": customer_id, "per_page": 100})
    assert {o["customer_id"] for o in r.json()} == {customer_id}
    guests = session.get(shop.api_url + "orders", params={"customer": 0, "per_page": 1})
    assert guests.headers["X-WP-Total"] == str(sum(o["customer_id"] == 0 for o in shop.orders.values()))


def test_single_resources_and_404(shop, session):
    cid = min(shop.customers)
    assert session.get(shop.api_url + f"customers/{cid}").json() == shop.customers[cid]
    missing = session.get(shop.api_url + "customers/999999")
    assert missing.status_code == 404 and missing.json()["code"] == "woocommerce_rest_invalid_id"
    r = session.get(shop.api_url + "nothing-here")
    assert r.status_code == 404 and r.json()["code"] == "rest_no_route"


# ------------------------------------------------------------------ auth


def test_auth_missing_wrong_and_query(shop):
    missing = requests.get(shop.api_url + "customers")
    assert missing.status_code == 401
    assert missing.json() == {"code": "woocommerce_rest_cannot_view",
                              "message": "Sorry, you cannot list resources.", "data": {"status": 401}}
    wrong = requests.get(shop.api_url + "customers", auth=("ck_test", "cs_wrong"))
    assert wrong.status_code == 401 and wrong.json()["message"] == "Consumer secret is invalid."
    via_query = requests.get(shop.api_url + "customers",
                             params={"consumer_key": "ck_test", "consumer_secret": "cs_test"})
    assert via_query.status_code == 200


def test_dropped_authorization_header_only_accepts_query_auth():
    with FakeWooShop(customers=3, drop_authorization_header=True) as dropped:
        assert requests.get(dropped.api_url + "customers", auth=("ck_test", "cs_test")).status_code == 401
        r = requests.get(dropped.api_url + "customers",
                         params={"consumer_key": "ck_test", "consumer_secret": "cs_test"})
        assert r.status_code == 200 and len(r.json()) == 3


# ------------------------------------------------------------------ faults and log


def test_fail_next_with_retry_after_then_recovers():
    with FakeWooShop(customers=5) as s, requests.Session() as http:
        http.auth = ("ck_test", "cs_test")
        s.fail_next(2, 429, retry_after="7")
        first = http.get(s.api_url + "customers")
        assert first.status_code == 429 and first.headers["Retry-After"] == "7"
        assert first.json()["data"]["status"] == 429
        assert http.get(s.api_url + "customers").status_code == 429
        assert http.get(s.api_url + "customers").status_code == 200
        assert s.count_requests("customers") == 3
        assert s.count_requests("customers", status=429) == 2
        assert [entry.status for entry in s.requests_log] == [429, 429, 200]
        assert s.requests_log[0].method == "GET" and s.requests_log[0].path == "/wp-json/wc/v3/customers"


def test_fail_page_fails_one_page_until_reset_and_pages_are_counted():
    with FakeWooShop(customers=5, orders=25) as s, requests.Session() as http:
        http.auth = ("ck_test", "cs_test")
        s.fail_page("orders", 2)
        for _ in range(2):
            assert http.get(s.api_url + "orders", params={"page": 2, "per_page": 10}).status_code == 500
        assert http.get(s.api_url + "orders", params={"page": 1, "per_page": 10}).status_code == 200
        assert http.get(s.api_url + "orders", params={"page": 3, "per_page": 10}).status_code == 200
        assert http.get(s.api_url + "customers", params={"page": 2, "per_page": 2}).status_code == 200
        s.reset_faults()
        assert http.get(s.api_url + "orders", params={"page": 2, "per_page": 10}).status_code == 200
        assert s.page_requests("orders") == {1: 1, 2: 3, 3: 1}
        assert s.page_requests("orders", status=500) == {2: 2}
        assert s.page_requests("customers") == {2: 1}
        http.get(s.api_url + "orders", params={"page": 1, "status": "trash"})
        assert s.page_requests("orders", query={"status": None}) == {1: 1, 2: 3, 3: 1}
        assert s.page_requests("orders", query={"status": "trash"}) == {1: 1}
        assert s.page_requests("orders", since=len(s.requests_log) - 1) == {1: 1}


def test_fault_rate_is_seeded_and_resettable():
    def run() -> list[int]:
        with FakeWooShop(customers=5, seed=11) as s, requests.Session() as http:
            http.auth = ("ck_test", "cs_test")
            s.fault_rate(0.3, statuses=(429, 503))
            codes = [http.get(s.api_url + "customers").status_code for _ in range(60)]
            s.reset_faults()
            assert http.get(s.api_url + "customers").status_code == 200
            return codes

    codes = run()
    assert codes == run()
    assert set(codes) == {200, 429, 503}
    assert [c for c in codes if c != 200][:4] == [429, 503, 429, 503]  # statuses take turns
    assert 8 <= sum(c != 200 for c in codes) <= 30


# ------------------------------------------------------------------ mutations


def test_update_bumps_modified_and_shows_in_modified_after():
    s = FakeWooShop(customers=20, orders=40, seed=5)
    order_id = max(s.orders)
    before = s.orders[order_id]["date_modified_gmt"]
    latest = max(o["date_modified_gmt"] for o in s.orders.values())
    s.clock.advance(10)
    updated = s.update_order(order_id, status="completed")
    assert updated["date_modified_gmt"] > before and updated["date_modified_gmt"] > latest
    again = s.update_order(order_id, customer_note="x")  # same clock second: still one more
    assert again["date_modified_gmt"] == (
        datetime.fromisoformat(updated["date_modified_gmt"]) + timedelta(seconds=1)).isoformat()
    with s, requests.Session() as http:
        http.auth = ("ck_test", "cs_test")
        r = http.get(s.api_url + "orders", params={"modified_after": latest, "dates_are_gmt": "true"})
        assert [o["id"] for o in r.json()] == [order_id]
        assert r.json()[0]["customer_note"] == "x"


def test_refund_order_partial_then_full():
    s = FakeWooShop(customers=5, orders=30, seed=9)
    order_id = next(i for i, o in s.orders.items() if o["status"] == "completed" and not o["refunds"])
    total = Decimal(s.orders[order_id]["total"])
    partial = s.refund_order(order_id, "1.00", reason="Scratched")
    assert partial["refunds"][0]["total"] == "-1.00" and partial["status"] != "refunded"
    full = s.refund_order(order_id, str(total - 1))
    assert full["status"] == "refunded"
    assert sum(Decimal(r["total"]) for r in full["refunds"]) == -total
    assert full["date_modified_gmt"] > partial["date_modified_gmt"]
    with pytest.raises(ValueError):
        s.refund_order(order_id, "0.01")


def test_put_customer_over_http_and_add_delete():
    with FakeWooShop(customers=10, orders=20, seed=3) as s, requests.Session() as http:
        http.auth = ("ck_test", "cs_test")
        cid = min(s.customers)
        before = s.customers[cid]["date_modified_gmt"]
        r = http.put(s.api_url + f"customers/{cid}", json={"first_name": "Renamed",
                                                           "billing": {"phone": "+49 1"}})
        assert r.status_code == 200
        assert s.customers[cid]["first_name"] == "Renamed"
        assert s.customers[cid]["billing"]["phone"] == "+49 1"
        assert s.customers[cid]["billing"]["city"]  # merged, not replaced
        assert s.customers[cid]["date_modified_gmt"] > before
        other = max(s.customers)
        clash = http.put(s.api_url + f"customers/{cid}", json={"email": s.customers[other]["email"].upper()})
        assert clash.status_code == 400

        added = s.add_customer(email="new@example.com")
        assert added["date_created_gmt"] == "2026-01-01T00:00:00" and added["id"] > other
        order = s.add_order(customer_id=added["id"])
        assert order["customer_id"] == added["id"] and order["billing"]["email"] == added["billing"]["email"]
        s.delete_customer(added["id"])
        assert s.orders[order["id"]]["customer_id"] == 0
        assert http.get(s.api_url + f"customers/{added['id']}").status_code == 404


def test_webhooks_endpoint_create_list_and_status():
    with FakeWooShop() as s, requests.Session() as http:
        http.auth = ("ck_test", "cs_test")
        r = http.post(s.api_url + "webhooks", json={"name": "sync", "topic": "order.updated",
                                                    "delivery_url": "https://companion.example/hook",
                                                    "secret": "sekrit"})
        assert r.status_code == 201
        hook = r.json()
        assert (hook["status"], hook["resource"], hook["event"], hook["secret"]) == (
            "active", "order", "updated", "sekrit")
        bad = http.post(s.api_url + "webhooks", json={"topic": "order.eaten", "delivery_url": "https://x.example/"})
        assert bad.status_code == 400
        s.set_webhook_status(hook["id"], "disabled")
        listed = http.get(s.api_url + "webhooks").json()
        assert [(w["id"], w["status"]) for w in listed] == [(hook["id"], "disabled")]


# ------------------------------------------------------------------ webhook helpers


def test_sign_matches_an_independent_hmac():
    body = b'{"id":42,"email":"a@example.com"}'
    expected = base64.b64encode(hmac.new(b"s3cret", body, hashlib.sha256).digest()).decode()
    assert sign(body, "s3cret") == expected
    # WooCommerce decodes HTML entities in the secret before keying the HMAC
    assert sign(body, "a&amp;b") == base64.b64encode(hmac.new(b"a&b", body, hashlib.sha256).digest()).decode()


def test_webhook_headers_fields():
    body = b'{"id":7}'
    headers = webhook_headers("order.updated", body, "s3cret", "https://shop.example/", webhook_id=3,
                              delivery_id="abc")
    assert headers["X-WC-Webhook-Topic"] == "order.updated"
    assert headers["X-WC-Webhook-Resource"] == "order" and headers["X-WC-Webhook-Event"] == "updated"
    assert headers["X-WC-Webhook-ID"] == "3" and headers["X-WC-Webhook-Delivery-ID"] == "abc"
    assert headers["X-WC-Webhook-Source"] == "https://shop.example/"
    assert headers["X-WC-Webhook-Signature"] == sign(body, "s3cret")
    assert headers["Content-Type"] == "application/json"


def test_delivery_id_is_shared_within_a_second_like_woocommerce_so_it_is_not_an_idempotency_key():
    assert delivery_id(5, now=1_767_225_600.1) == delivery_id(5, now=1_767_225_600.9)
    assert delivery_id(5, now=1_767_225_600.9) != delivery_id(5, now=1_767_225_601.0)
    assert delivery_id(5, now=1_767_225_600) != delivery_id(6, now=1_767_225_600)
    for _ in range(5):  # with the real clock: two deliveries in the same second share it
        second = int(time.time())
        a = webhook_headers("order.updated", b"{}", "s", "https://shop.example/", 5)
        b = webhook_headers("order.updated", b'{"other":1}', "s", "https://shop.example/", 5)
        if int(time.time()) == second:
            assert a["X-WC-Webhook-Delivery-ID"] == b["X-WC-Webhook-Delivery-ID"]
            return
    pytest.fail("could not make two calls within one second")


def test_webhook_bodies():
    s = FakeWooShop(customers=3, orders=3, seed=1)
    assert ping_body(12) == b"webhook_id=12"
    order_id = min(s.orders)
    body = s.webhook_body("order.updated", order_id)
    assert json.loads(body) == s.orders[order_id]
    assert body.startswith(b'{"id":%d,"parent_id":0,"status":' % order_id)  # compact, like PHP
    assert b"https:\\/\\/" in body  # slashes escaped, like PHP's json_encode
    assert s.webhook_body("customer.deleted", 99) == b'{"id":99}'


def test_erase_customer_blanks_the_person_and_anonymises_their_orders():
    s = FakeWooShop(customers=20, orders=60, seed=4)
    cid = next(o["customer_id"] for o in s.orders.values() if o["customer_id"])
    mine = [i for i, o in s.orders.items() if o["customer_id"] == cid]
    erased = s.erase_customer(cid)
    assert (erased["email"], erased["first_name"], erased["billing"]["email"]) == ("", "", "")
    for order_id in mine:
        order = s.orders[order_id]
        assert order["billing"]["email"] == "deleted@site.invalid" and order["customer_id"] == 0
        assert {"key": "_anonymized", "value": "yes"}.items() <= order["meta_data"][-1].items()


def test_deliver_webhooks_signs_and_disables_after_more_than_five_failures():
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    received: list[tuple[dict, bytes]] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((dict(self.headers), body))
            self.send_response(500 if self.path.endswith("/broken") else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    receiver = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{receiver.server_address[1]}"
    try:
        with FakeWooShop(customers=3, orders=3, seed=1) as s:
            good = s.add_webhook("order.updated", url + "/ok", secret="k")
            bad = s.add_webhook("order.updated", url + "/broken", secret="k")
            order_id = min(s.orders)
            assert s.deliver_webhooks("order.updated", order_id) == [(good["id"], 200), (bad["id"], 500)]
            headers, body = received[0]
            assert headers["X-WC-Webhook-Signature"] == sign(body, "k")
            assert json.loads(body) == s.orders[order_id]
            for _ in range(5):
                s.deliver_webhooks("order.updated", order_id)
            assert (s.webhooks[good["id"]]["status"], s.webhooks[bad["id"]]["status"]) == ("active", "disabled")
    finally:
        receiver.shutdown()
        receiver.server_close()


# ------------------------------------------------------------------ coupons

COUPON_KEYS = {
    "id", "code", "amount", "status", "date_created", "date_created_gmt", "date_modified",
    "date_modified_gmt", "discount_type", "description", "date_expires", "date_expires_gmt",
    "usage_count", "individual_use", "product_ids", "excluded_product_ids", "usage_limit",
    "usage_limit_per_user", "limit_usage_to_x_items", "free_shipping", "product_categories",
    "excluded_product_categories", "exclude_sale_items", "minimum_amount", "maximum_amount",
    "email_restrictions", "used_by", "meta_data",
}


@pytest.fixture()
def coupon_shop():
    """A small shop of its own: coupon tests change usage counts and must not meet each other."""
    with FakeWooShop(customers=20, orders=20, seed=11) as running:
        yield running


def _reward(**fields):
    return {"code": "WC-7K3M9Q2XPL", "discount_type": "fixed_cart", "amount": "5.00",
            "usage_limit": 1, "usage_limit_per_user": 1,
            "email_restrictions": ["Anna.Keller@Example.com"],
            "date_expires_gmt": "2026-04-01T00:00:00",
            "meta_data": [{"key": "_companion_ledger_entry", "value": "redeem:r-1"}], **fields}


def test_create_coupon_answers_201_with_woocommerces_shape(coupon_shop, session):
    r = session.post(coupon_shop.api_url + "coupons", json=_reward())
    assert r.status_code == 201
    coupon = r.json()
    assert set(coupon) == COUPON_KEYS
    assert r.headers["Location"].endswith(f"/wp-json/wc/v3/coupons/{coupon['id']}")
    assert coupon["id"] not in coupon_shop.orders  # coupons are posts: one id sequence with orders
    assert coupon["code"] == "wc-7k3m9q2xpl"  # wc_format_coupon_code lower-cases
    assert coupon["amount"] == "5.00" and coupon["status"] == "publish"
    assert coupon["email_restrictions"] == ["anna.keller@example.com"]
    assert (coupon["date_expires_gmt"], coupon["date_expires"]) == ("2026-04-01T00:00:00", "2026-04-01T01:00:00")
    assert (coupon["usage_count"], coupon["usage_limit"], coupon["usage_limit_per_user"]) == (0, 1, 1)
    assert coupon["used_by"] == [] and coupon["limit_usage_to_x_items"] is None
    assert [(m["key"], m["value"]) for m in coupon["meta_data"]] == [("_companion_ledger_entry", "redeem:r-1")]
    assert session.get(coupon_shop.api_url + f"coupons/{coupon['id']}").json() == coupon


def test_a_local_expiry_is_read_in_the_shops_timezone(coupon_shop, session):
    r = session.post(coupon_shop.api_url + "coupons",
                     json={"code": "local", "date_expires": "2026-04-01T00:00:00"})
    assert (r.json()["date_expires"], r.json()["date_expires_gmt"]) == ("2026-04-01T00:00:00", "2026-03-31T23:00:00")
    r = session.post(coupon_shop.api_url + "coupons",
                     json={"code": "offset", "date_expires": "2026-04-01T00:00:00+02:00"})
    assert r.json()["date_expires_gmt"] == "2026-03-31T22:00:00"


def test_codes_are_unique_whatever_their_case(coupon_shop, session):
    first = session.post(coupon_shop.api_url + "coupons", json={"code": "Spring-Gift"}).json()
    other = session.post(coupon_shop.api_url + "coupons", json={"code": "other"}).json()
    for attempt in ("SPRING-GIFT", "spring-gift", " Spring-Gift "):
        r = session.post(coupon_shop.api_url + "coupons", json={"code": attempt})
        assert (r.status_code, r.json()["code"]) == (400, "woocommerce_rest_coupon_code_already_exists")
        assert r.json()["message"] == "The coupon code already exists"
    r = session.put(coupon_shop.api_url + f"coupons/{other['id']}", json={"code": "SPRING-gift"})
    assert (r.status_code, r.json()["code"]) == (400, "woocommerce_rest_coupon_code_already_exists")
    assert coupon_shop.coupons[other["id"]]["code"] == "other"  # nothing changed on refusal
    r = session.put(coupon_shop.api_url + f"coupons/{first['id']}", json={"code": "SPRING-GIFT", "amount": "3"})
    assert r.status_code == 200 and r.json()["amount"] == "3.00"  # its own code is no clash
    # The lookup only sees published coupons: a trashed coupon's code is free again.
    session.delete(coupon_shop.api_url + f"coupons/{first['id']}")
    assert session.post(coupon_shop.api_url + "coupons", json={"code": "spring-gift"}).status_code == 201


@pytest.mark.parametrize("body, status, code", [
    ({}, 400, "rest_missing_callback_param"),
    ({"code": ""}, 400, "woocommerce_rest_empty_coupon_code"),
    ({"code": 12}, 400, "rest_invalid_param"),
    ({"code": "x", "discount_type": "free_money"}, 400, "rest_invalid_param"),
    ({"code": "x", "amount": "-1"}, 400, "coupon_invalid_amount"),
    ({"code": "x", "amount": "150", "discount_type": "percent"}, 201, None),  # type is set after amount
    ({"code": "x", "email_restrictions": ["not-an-email"]}, 400, "coupon_invalid_email_address"),
    ({"code": "x", "email_restrictions": "a@example.com"}, 400, "rest_invalid_param"),
    ({"code": "x", "usage_limit": "1"}, 400, "rest_invalid_param"),
    ({"code": "x", "usage_limit": True}, 400, "rest_invalid_param"),
    ({"code": "x", "individual_use": "yes"}, 400, "rest_invalid_param"),
    ({"code": "x", "date_expires": "next tuesday"}, 400, "rest_invalid_param"),
    ({"code": "x", "product_ids": ["1"]}, 400, "rest_invalid_param"),
    ({"code": "x", "id": 5}, 400, "woocommerce_rest_shop_coupon_exists"),
])
def test_create_coupon_refuses_bad_input_and_stores_nothing(coupon_shop, session, body, status, code):
    r = session.post(coupon_shop.api_url + "coupons", json=body)
    assert r.status_code == status
    if code is None:
        return
    assert r.json()["code"] == code and r.json()["data"]["status"] == 400
    assert coupon_shop.coupons == {}


def test_percent_above_100_is_refused_once_the_coupon_is_a_percent_coupon(coupon_shop, session):
    coupon = session.post(coupon_shop.api_url + "coupons", json={"code": "pct", "discount_type": "percent"}).json()
    r = session.put(coupon_shop.api_url + f"coupons/{coupon['id']}", json={"amount": "100.01"})
    assert (r.status_code, r.json()["code"]) == (400, "coupon_invalid_amount")
    assert coupon_shop.coupons[coupon["id"]]["amount"] == "0.00"
    assert session.put(coupon_shop.api_url + f"coupons/{coupon['id']}", json={"amount": "100"}).status_code == 200


def test_an_update_may_blank_the_code_and_a_blank_code_is_never_found(coupon_shop, session):
    coupon = coupon_shop.add_coupon("named", amount="1")
    r = session.put(coupon_shop.api_url + f"coupons/{coupon['id']}", json={"code": ""})
    assert r.status_code == 200 and r.json()["code"] == ""
    assert coupon_shop.coupon_by_code("") is None and coupon_shop.coupon_by_code("named") is None
    with pytest.raises(CouponRejected):
        coupon_shop.add_order(coupon_code="")


def test_non_numeric_amounts_become_zero_as_woocommerce_does(coupon_shop, session):
    r = session.post(coupon_shop.api_url + "coupons", json={"code": "zero", "amount": "ten", "minimum_amount": "1e9"})
    assert r.status_code == 201 and (r.json()["amount"], r.json()["minimum_amount"]) == ("0.00", "0.00")


def test_coupon_list_pages_searches_and_finds_one_code(coupon_shop, session):
    for i in range(7):
        coupon_shop.add_coupon(f"Batch-{i}", amount="1")
    r = session.get(coupon_shop.api_url + "coupons", params={"per_page": 3, "page": 2, "orderby": "id", "order": "asc"})
    assert r.status_code == 200
    assert (r.headers["X-WP-Total"], r.headers["X-WP-TotalPages"]) == ("7", "3")
    assert [c["code"] for c in r.json()] == ["batch-3", "batch-4", "batch-5"]
    assert 'rel="next"' in r.headers["Link"] and 'rel="prev"' in r.headers["Link"]

    found = session.get(coupon_shop.api_url + "coupons", params={"code": "BATCH-5"})
    assert [c["code"] for c in found.json()] == ["batch-5"] and found.headers["X-WP-Total"] == "1"
    missing = session.get(coupon_shop.api_url + "coupons", params={"code": "batch-50"})
    assert missing.json() == [] and missing.headers["X-WP-TotalPages"] == "0"
    assert len(session.get(coupon_shop.api_url + "coupons", params={"search": "batch-"}).json()) == 7

    trashed = coupon_shop.coupon_by_code("batch-2")["id"]
    session.delete(coupon_shop.api_url + f"coupons/{trashed}")
    assert session.get(coupon_shop.api_url + "coupons", params={"code": "batch-2"}).json() == []
    assert session.get(coupon_shop.api_url + "coupons").headers["X-WP-Total"] == "6"
    assert [c["id"] for c in session.get(coupon_shop.api_url + "coupons", params={"status": "trash"}).json()] == [trashed]


def test_coupon_trash_then_force_delete_and_unknown_ids(coupon_shop, session):
    coupon = coupon_shop.add_coupon("bye", amount="2")
    url = coupon_shop.api_url + f"coupons/{coupon['id']}"
    trashed = session.delete(url)
    assert trashed.status_code == 200 and trashed.json()["status"] == "publish"  # the coupon as it was
    assert coupon_shop.coupons[coupon["id"]]["status"] == "trash"
    again = session.delete(url)
    assert (again.status_code, again.json()["code"]) == (410, "woocommerce_rest_already_trashed")
    gone = session.delete(url, params={"force": "true"})
    assert gone.status_code == 200 and gone.json()["id"] == coupon["id"] and coupon["id"] not in coupon_shop.coupons
    for method, status in (("GET", 404), ("DELETE", 404), ("PUT", 400)):
        r = session.request(method, url, json={})
        assert (r.status_code, r.json()["code"]) == (status, "woocommerce_rest_shop_coupon_invalid_id")
    order_id = min(coupon_shop.orders)  # a post of another type is no coupon
    assert session.get(coupon_shop.api_url + f"coupons/{order_id}").status_code == 404


def test_an_order_applies_a_code_with_its_discount_and_coupon_lines(coupon_shop):
    coupon_shop.add_coupon("fixed-5", amount="5.00")
    coupon_shop.add_coupon("pct-10", amount="10", discount_type="percent")
    fixed = coupon_shop.add_order(coupon_code="FIXED-5", customer_id=0)
    assert [line["code"] for line in fixed["coupon_lines"]] == ["fixed-5"]
    assert D(fixed["discount_total"]) == D("5.00") == D(fixed["coupon_lines"][0]["discount"])
    pct = coupon_shop.add_order(coupon_code="pct-10", customer_id=0)
    subtotal = sum(D(li["subtotal"]) for li in pct["line_items"])
    assert abs(D(pct["discount_total"]) - subtotal / 10) <= D("0.03")  # rounded per line
    assert coupon_shop.orders[pct["id"]]["coupon_lines"] == pct["coupon_lines"]
    with pytest.raises(CouponRejected) as refused:
        coupon_shop.add_order(coupon_code="no-such-code")
    assert refused.value.error_number == 105


def test_email_restriction_is_checked_against_the_orders_emails(coupon_shop):
    anna = coupon_shop.add_customer(email="Anna.Keller@example.com")
    coupon_shop.add_coupon("mine", amount="1", email_restrictions=["anna.keller@example.com"])
    coupon_shop.add_coupon("team", amount="1", email_restrictions=["*@example.org"])
    before = dict(coupon_shop.orders)
    with pytest.raises(CouponRejected) as refused:
        coupon_shop.add_order(coupon_code="mine", customer_id=0, billing={"email": "eve@example.com"})
    assert refused.value.error_number == 102 and coupon_shop.orders == before  # nothing stored
    assert coupon_shop.coupons[coupon_shop.coupon_by_code("mine")["id"]]["usage_count"] == 0
    # The billing email in any case, or the account's email, satisfies it.
    coupon_shop.add_order(coupon_code="mine", customer_id=0, billing={"email": "ANNA.KELLER@EXAMPLE.COM"})
    coupon_shop.add_order(coupon_code="mine", customer_id=anna["id"], billing={"email": "work@example.net"})
    coupon_shop.add_order(coupon_code="team", customer_id=0, billing={"email": "bob@example.org"})
    with pytest.raises(CouponRejected):
        coupon_shop.add_order(coupon_code="team", customer_id=0, billing={"email": "bob@example.org.evil"})


def test_usage_limits_in_total_and_per_customer_or_guest_email(coupon_shop):
    buyer = coupon_shop.add_customer()
    coupon_shop.add_coupon("once", amount="1", usage_limit=1)
    coupon_shop.add_order(coupon_code="once", customer_id=buyer["id"])
    with pytest.raises(CouponRejected) as refused:
        coupon_shop.add_order(coupon_code="ONCE", customer_id=0)
    assert refused.value.error_number == 106

    coupon_shop.add_coupon("each", amount="1", usage_limit_per_user=1)
    coupon_shop.add_order(coupon_code="each", customer_id=buyer["id"])
    with pytest.raises(CouponRejected):
        coupon_shop.add_order(coupon_code="each", customer_id=buyer["id"])
    coupon_shop.add_order(coupon_code="each", customer_id=0, billing={"email": "guest@example.com"})
    with pytest.raises(CouponRejected):  # a guest is counted by billing email, in any case
        coupon_shop.add_order(coupon_code="each", customer_id=0, billing={"email": "Guest@Example.com"})
    each = coupon_shop.coupon_by_code("each")
    assert each["usage_count"] == 2 and each["used_by"] == [str(buyer["id"]), "guest@example.com"]
    with pytest.raises(CouponRejected):  # the buyer as a guest, under their account's email
        coupon_shop.add_order(coupon_code="each", customer_id=0, billing={"email": buyer["email"].upper()})


def test_expiry_and_minimum_spend(coupon_shop):
    coupon_shop.add_coupon("soon", amount="1", date_expires_gmt="2026-01-02T00:00:00")
    coupon_shop.add_order(coupon_code="soon", customer_id=0)
    coupon_shop.clock.advance(86400)  # exactly at the expiry it still works
    coupon_shop.add_order(coupon_code="soon", customer_id=0)
    coupon_shop.clock.advance(1)
    with pytest.raises(CouponRejected) as refused:
        coupon_shop.add_order(coupon_code="soon", customer_id=0)
    assert (refused.value.error_number, refused.value.message) == (107, "This coupon has expired.")

    coupon_shop.add_coupon("big-spender", amount="1", minimum_amount="100000.00")
    with pytest.raises(CouponRejected) as refused:
        coupon_shop.add_order(coupon_code="big-spender", customer_id=0)
    assert refused.value.error_number == 108


@pytest.mark.parametrize("status", ["cancelled", "failed", "trash"])
def test_cancelled_failed_or_trashed_orders_give_the_use_back(coupon_shop, session, status):
    coupon = coupon_shop.add_coupon("single", amount="1", usage_limit=1, usage_limit_per_user=1)
    order = coupon_shop.add_order(coupon_code="single", customer_id=0, billing={"email": "g@example.com"})
    assert coupon_shop.coupons[coupon["id"]]["usage_count"] == 1
    if status == "trash":
        assert session.delete(coupon_shop.api_url + f"orders/{order['id']}").status_code == 200
    else:
        assert session.put(coupon_shop.api_url + f"orders/{order['id']}", json={"status": status}).status_code == 200
    assert (coupon_shop.coupons[coupon["id"]]["usage_count"], coupon_shop.coupons[coupon["id"]]["used_by"]) == (0, [])
    coupon_shop.update_order(order["id"], status="cancelled")  # given back once only
    assert coupon_shop.coupons[coupon["id"]]["usage_count"] == 0
    assert coupon_shop.orders[order["id"]]["coupon_lines"][0]["code"] == "single"  # the order still names it
    coupon_shop.add_order(coupon_code="single", customer_id=0, billing={"email": "g@example.com"})  # usable again


def test_usage_is_counted_once_and_again_when_a_cancelled_order_comes_back(coupon_shop):
    coupon = coupon_shop.add_coupon("back", amount="1")
    order = coupon_shop.add_order(coupon_code="back", customer_id=0, status="pending")
    for status in ("on-hold", "processing", "completed", "refunded"):  # refunds keep the use
        coupon_shop.update_order(order["id"], status=status)
        assert coupon_shop.coupons[coupon["id"]]["usage_count"] == 1
    coupon_shop.update_order(order["id"], status="cancelled")
    coupon_shop.update_order(order["id"], status="processing")
    assert coupon_shop.coupons[coupon["id"]]["usage_count"] == 1
    draft = coupon_shop.add_order(coupon_code="back", customer_id=0, status="checkout-draft")
    assert draft["coupon_lines"] and coupon_shop.coupons[coupon["id"]]["usage_count"] == 1


def test_a_deleted_coupon_is_not_counted(coupon_shop, session):
    coupon = coupon_shop.add_coupon("temp", amount="1")
    order = coupon_shop.add_order(coupon_code="temp", customer_id=0)
    session.delete(coupon_shop.api_url + f"coupons/{coupon['id']}", params={"force": "true"})
    coupon_shop.update_order(order["id"], status="cancelled")  # nothing to give back to: no error
    assert coupon_shop.coupon_by_code("temp") is None


def test_coupon_fault_switches_hit_coupons_only_until_reset(coupon_shop, session):
    coupon_shop.add_coupon("kept", amount="1")
    coupon_shop.coupons_down(503, retry_after="7")
    r = session.get(coupon_shop.api_url + "coupons", params={"code": "kept"})
    assert (r.status_code, r.headers["Retry-After"]) == (503, "7")
    assert session.post(coupon_shop.api_url + "coupons", json={"code": "new"}).status_code == 503
    assert session.get(coupon_shop.api_url + "orders").status_code == 200
    assert coupon_shop.coupon_by_code("new") is None

    coupon_shop.coupons_unreachable()
    with pytest.raises(requests.ConnectionError):
        session.get(coupon_shop.api_url + "coupons")

    coupon_shop.refuse_coupon_writes()
    r = session.post(coupon_shop.api_url + "coupons", json={"code": "new"})
    assert (r.status_code, r.json()["code"]) == (400, "woocommerce_rest_shop_coupon_not_created")
    assert session.get(coupon_shop.api_url + "coupons", params={"code": "kept"}).status_code == 200
    assert coupon_shop.coupon_by_code("new") is None

    coupon_shop.reset_faults()
    assert session.post(coupon_shop.api_url + "coupons", json={"code": "new"}).status_code == 201


def test_coupon_webhook_body_is_the_coupon(coupon_shop):
    coupon = coupon_shop.add_coupon("hooked", amount="1")
    assert json.loads(coupon_shop.webhook_body("coupon.created", coupon["id"])) == coupon
    assert json.loads(coupon_shop.webhook_body("coupon.deleted", coupon["id"])) == {"id": coupon["id"]}


def test_traffic_spends_a_code_then_cancels_the_order_and_the_oracle_follows():
    shop = FakeWooShop(seed=4)
    traffic = WooTraffic(shop, seed=4, customers=0, orders=0)
    buyer = shop.add_customer(email="buyer@example.com")
    coupon = shop.add_coupon("reward-1", amount="3.00", usage_limit=1,
                             email_restrictions=["buyer@example.com"])
    placed = traffic.place_now(buyer["id"], coupon_code="reward-1")
    body = json.loads(placed.body)
    assert [line["code"] for line in body["coupon_lines"]] == ["reward-1"]
    assert shop.coupons[coupon["id"]]["usage_count"] == 1

    cancelled = traffic.change_status_now(body["id"], "cancelled")
    assert (cancelled.topic, json.loads(cancelled.body)["status"]) == ("order.updated", "cancelled")
    assert shop.coupons[coupon["id"]]["usage_count"] == 0
    person = traffic.expected()["customers"][f"woo:{buyer['id']}"]
    assert (person["orders"], person["orders_count"]) == (1, 0)
    with pytest.raises(CouponRejected):
        traffic.place_now(buyer["id"], coupon_code="reward-2")


def _post_in_background(session, url: str, body: dict) -> tuple[threading.Thread, dict]:
    answer: dict = {}

    def post() -> None:
        answer["response"] = session.post(url, json=body, timeout=30)

    thread = threading.Thread(target=post, daemon=True)
    thread.start()
    return thread, answer


def test_held_coupon_creation_waits_unanswered_and_stores_nothing_until_released(coupon_shop, session):
    coupon_shop.add_coupon("before", amount="1")
    coupon_shop.hold_coupon_creation()
    thread, answer = _post_in_background(session, coupon_shop.api_url + "coupons", _reward())
    assert coupon_shop.wait_for_held_creation(1, timeout=10)
    assert coupon_shop.coupon_by_code("wc-7k3m9q2xpl") is None and "response" not in answer
    with requests.Session() as other:  # the rest of the shop answers meanwhile
        other.auth = session.auth
        assert [c["code"] for c in other.get(coupon_shop.api_url + "coupons").json()] == ["before"]
        assert other.get(coupon_shop.api_url + "orders").status_code == 200
    coupon_shop.release_coupon_creation()
    thread.join(10)
    assert answer["response"].status_code == 201
    assert coupon_shop.coupon_by_code("WC-7K3M9Q2XPL")["id"] == answer["response"].json()["id"]
    # Released: later creations are not held.
    assert session.post(coupon_shop.api_url + "coupons", json={"code": "after"}, timeout=10).status_code == 201
    assert coupon_shop.coupon_posts_held == 1


def test_reset_faults_and_stop_let_held_creations_go(coupon_shop, session):
    coupon_shop.hold_coupon_creation()
    thread, answer = _post_in_background(session, coupon_shop.api_url + "coupons", {"code": "held"})
    assert coupon_shop.wait_for_held_creation(1, timeout=10)
    coupon_shop.reset_faults()
    thread.join(10)
    assert answer["response"].status_code == 201 and coupon_shop.coupon_by_code("held")

    coupon_shop.hold_coupon_creation()
    thread, answer = _post_in_background(session, coupon_shop.api_url + "coupons", {"code": "late"})
    assert coupon_shop.wait_for_held_creation(2, timeout=10)
    assert not coupon_shop.wait_for_held_creation(3, timeout=0.01)  # only two ever waited
    coupon_shop.stop()
    thread.join(10)
    assert not thread.is_alive()  # answered or cut off, never left waiting


# ------------------------------------------------------------------ traffic spends rewards

_ACTIVE = ("pending", "processing", "on-hold", "completed", "refunded")


def _rewarded_traffic(seed: int) -> tuple[FakeWooShop, WooTraffic, list]:
    """Six customers with three single-use coupons each, then orders that spend them."""
    shop = FakeWooShop(seed=seed)
    traffic = WooTraffic(shop, seed=seed, customers=6, orders=0, coupon_use_share=0.6,
                         coupon_cancel_share=0.4).build()
    for woo_id, customer in sorted(shop.customers.items()):
        for k in range(3):
            shop.add_coupon(f"reward-{woo_id}-{k}", amount="2.00", usage_limit=1,
                            usage_limit_per_user=1, email_restrictions=[customer["email"]],
                            date_expires_gmt="2027-01-01T00:00:00")
    return shop, traffic, traffic.extend(80, span_days=2)


def test_traffic_spends_customers_own_coupons_once_and_cancels_some_deterministically():
    shop, traffic, deliveries = _rewarded_traffic(seed=8)
    assert [d.body for d in deliveries] == [d.body for d in _rewarded_traffic(seed=8)[2]]
    assert deliveries == traffic.order_deliveries and len(traffic.coupon_orders) >= 10

    final = {oid: shop.orders[oid]["status"] for oid in traffic.coupon_orders}
    cancelled = [oid for oid, status in final.items() if status == "cancelled"]
    assert cancelled and len(cancelled) < len(final)
    for order_id, code in traffic.coupon_orders.items():
        order = shop.orders[order_id]
        owner = shop.customers[order["customer_id"]]
        coupon = shop.coupon_by_code(code)
        assert owner["email"].lower() in coupon["email_restrictions"]  # only their own coupons
        assert [line["code"] for line in order["coupon_lines"]] == [code]
        created = next(d for d in deliveries if d.resource_id == order_id and d.topic == "order.created")
        assert [line["code"] for line in json.loads(created.body)["coupon_lines"]] == [code]
    for coupon in shop.coupons.values():  # the shop's count follows the orders, never past one
        active = [o for o in shop.orders.values() if o["status"] in _ACTIVE
                  and [line["code"] for line in o["coupon_lines"]] == [coupon["code"]]]
        assert coupon["usage_count"] == len(active) <= 1, coupon["code"]
    # A cancelled order gave its use back: its coupon is unused again, or spent by a later order.
    for order_id in cancelled:
        code = traffic.coupon_orders[order_id]
        later = [oid for oid, c in traffic.coupon_orders.items() if c == code and oid > order_id]
        assert shop.coupon_by_code(code)["usage_count"] == (1 if later and final[later[-1]] != "cancelled" else 0)


def test_traffic_never_applies_expired_used_or_others_coupons_and_places_no_refused_order():
    shop = FakeWooShop(seed=5)
    traffic = WooTraffic(shop, seed=5, customers=1, orders=0, coupon_use_share=1.0,
                         coupon_cancel_share=0.0).build()
    (woo_id, customer), = shop.customers.items()
    email = customer["email"].lower()
    now = shop.clock.now()
    shop.add_coupon("expired", amount="1", email_restrictions=[email],
                    date_expires_gmt=(now - timedelta(seconds=1)).isoformat())
    shop.add_coupon("someone-elses", amount="1", email_restrictions=["other@example.com"])
    shop.add_coupon("nobodys", amount="1", usage_limit=1)
    shop.add_coupon("spent", amount="1", usage_limit=1, email_restrictions=[email])
    shop.add_order(coupon_code="spent", customer_id=woo_id)
    shop.add_coupon("good", amount="1", usage_limit=1, email_restrictions=[email],
                    date_expires_gmt=(now + timedelta(days=30)).isoformat())
    traffic.extend(12, span_days=1)
    assert set(traffic.coupon_orders.values()) == {"good"} and not traffic.coupon_refusals
    assert {code: shop.coupon_by_code(code)["usage_count"] for code in
            ("expired", "someone-elses", "nobodys", "spent", "good")} == {
        "expired": 0, "someone-elses": 0, "nobodys": 0, "spent": 1, "good": 1}

    # A code the checkout refuses (the minimum spend is out of reach): no order is placed.
    shop.add_coupon("big-spender", amount="1", usage_limit=1, minimum_amount="100000.00",
                    email_restrictions=[email])
    placed_before = len(traffic.orders)
    traffic.extend(12, span_days=1)
    refused = [r for r in traffic.coupon_refusals if r[1] == "big-spender"]
    assert refused and {r[2] for r in refused} == {108}
    assert len(traffic.orders) == placed_before + 12 - len(traffic.coupon_refusals)
    assert not any(line["code"] == "big-spender" for o in shop.orders.values() for line in o["coupon_lines"])


def test_rest_orders_apply_a_code_or_refuse_it_with_woocommerces_error_and_store_nothing(coupon_shop, session):
    buyer = coupon_shop.add_customer(email="Buyer@Example.com")
    coupon_shop.add_coupon("rest-once", amount="2.00", usage_limit=1, email_restrictions=["buyer@example.com"],
                           date_expires_gmt="2026-02-01T00:00:00")
    url = coupon_shop.api_url + "orders"
    stranger = session.post(url, json={"customer_id": 0, "billing": {"email": "eve@example.com"},
                                       "coupon_lines": [{"code": "rest-once"}]})
    assert (stranger.status_code, stranger.json()["code"]) == (400, "woocommerce_rest_invalid_coupon")
    assert stranger.json()["message"] == 'Please enter a valid email to use coupon code "rest-once".'
    orders_before = dict(coupon_shop.orders)
    placed = session.post(url, json={"customer_id": buyer["id"], "status": "processing",
                                     "coupon_lines": [{"code": "REST-ONCE"}]})
    assert placed.status_code == 201
    order = placed.json()
    assert (order["customer_id"], order["status"], order["created_via"]) == (buyer["id"], "processing", "rest-api")
    assert [line["code"] for line in order["coupon_lines"]] == ["rest-once"]
    assert set(coupon_shop.orders) - set(orders_before) == {order["id"]}
    assert coupon_shop.coupon_by_code("rest-once")["usage_count"] == 1

    cases = [  # (body, code, message): each refused with nothing stored and no use counted
        ({"customer_id": buyer["id"], "coupon_lines": [{"code": "rest-once"}]},
         "woocommerce_rest_invalid_coupon", "Coupon usage limit has been reached."),
        ({"coupon_lines": [{"code": "no-such"}]},
         "woocommerce_rest_invalid_coupon", 'Coupon "no-such" does not exist!'),
        ({"customer_id": 987654}, "woocommerce_rest_invalid_customer_id", "Customer ID is invalid."),
        ({"status": "shipped"}, "rest_invalid_param", "Invalid parameter(s): status"),
        ({"coupon_lines": "rest-once"}, "rest_invalid_param", "Invalid parameter(s): coupon_lines"),
    ]
    stored = dict(coupon_shop.orders)
    for body, code, message in cases:
        r = session.post(url, json=body)
        assert (r.status_code, r.json()["code"], r.json()["message"]) == (400, code, message), body
    assert coupon_shop.orders == stored
    assert coupon_shop.coupon_by_code("rest-once")["usage_count"] == 1

    session.put(url + f"/{order['id']}", json={"status": "cancelled"})  # the use comes back...
    coupon_shop.clock.set(datetime(2026, 2, 1, 0, 0, 1))  # ...but a second past the expiry
    expired = session.post(url, json={"customer_id": buyer["id"], "coupon_lines": [{"code": "rest-once"}]})
    assert (expired.status_code, expired.json()["message"]) == (400, "This coupon has expired.")
