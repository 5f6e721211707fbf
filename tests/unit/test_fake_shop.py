"""The fake WooCommerce shop behaves like the shop described in /work/shared/woocommerce.md."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from collections import Counter
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
import requests

from tests.fakes.woo_shop import (
    FakeWooShop,
    delivery_id,
    ping_body,
    sign,
    webhook_headers,
)

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
