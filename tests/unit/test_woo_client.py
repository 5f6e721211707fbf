"""WooClient against the fake shop over real HTTP: paging, retries, auth fallback, redaction."""
from __future__ import annotations

import logging
from collections import Counter
from email.utils import formatdate
import time

import pytest

from services.customer_sync.shop.woo_client import Page, WooApiError, WooClient, WooUnavailable
from demo.shop import FakeWooShop

SECRET = "cs_very_secret_value_1234"


class RecordingSleep:
    """Stands in for time.sleep: records the waits instead of waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture(scope="module")
def big_shop():
    with FakeWooShop(customers=2550, orders=2550, seed=42) as shop:
        yield shop


@pytest.fixture()
def shop():
    with FakeWooShop(customers=30, orders=40, seed=3, consumer_secret=SECRET) as running:
        yield running


def client_for(shop: FakeWooShop, **kwargs) -> tuple[WooClient, RecordingSleep]:
    sleep = RecordingSleep()
    kwargs.setdefault("sleep", sleep)
    return WooClient(shop.base_url, shop.consumer_key, shop.consumer_secret, **kwargs), sleep


# ------------------------------------------------------------------ paging


@pytest.mark.parametrize("resource", ["customers", "orders"])
def test_iter_pages_collects_every_id_exactly_once(big_shop, resource):
    client, _ = client_for(big_shop)
    pages = list(client.iter_pages(resource))
    assert [p.page for p in pages] == list(range(1, 27))  # 2,550 rows, 100 a page
    assert pages[0].total == 2550 and pages[0].total_pages == 26
    ids = Counter(item["id"] for p in pages for item in p.items)
    expected = big_shop.customers if resource == "customers" else big_shop.orders
    assert set(ids) == set(expected) and set(ids.values()) == {1}
    assert len(pages[-1].items) == 50 and pages[-1].is_last


def test_iter_pages_resumes_from_start_page(big_shop):
    client, _ = client_for(big_shop)
    pages = list(client.iter_pages("customers", start_page=25))
    assert [p.page for p in pages] == [25, 26]
    assert [c["id"] for c in pages[0].items] == sorted(big_shop.customers)[2400:2500]


def test_iter_pages_rereads_total_pages_as_the_shop_grows():
    with FakeWooShop(customers=250, seed=8) as s:
        client, _ = client_for(s)
        seen = []
        for page in client.iter_pages("customers"):
            seen.extend(c["id"] for c in page.items)
            if page.page == 1:
                for _ in range(60):
                    s.add_customer()  # 310 now: a fourth page appears
        assert len(seen) == 310 and len(set(seen)) == 310


def test_empty_list_yields_no_page():
    with FakeWooShop() as s:
        client, _ = client_for(s)
        assert list(client.iter_pages("orders")) == []
        assert client.get_page("orders", 1) == Page(items=[], page=1, total_pages=0, total=0)


def test_pages_without_paging_headers():
    with FakeWooShop(customers=250, paging_headers=False) as s:
        client, _ = client_for(s)
        assert client.get_page("customers", 1).total_pages == 2  # full: maybe more
        last = client.get_page("customers", 3)
        assert (len(last.items), last.total_pages, last.total) == (50, 3, None)  # short: the last
        assert client.get_page("customers", 4).total_pages == 3  # empty: nothing here or beyond
        assert sum(len(p.items) for p in client.iter_pages("customers")) == 250


def test_per_page_over_100_is_refused_without_retry(shop):
    client, sleep = client_for(shop)
    with pytest.raises(WooApiError) as caught:
        client.get_page("orders", 1, per_page=101)
    assert caught.value.status == 400 and caught.value.code == "rest_invalid_param"
    assert not isinstance(caught.value, WooUnavailable)
    assert shop.count_requests("orders") == 1 and sleep.waits == []


def test_modified_after_filters_orders(big_shop):
    client, _ = client_for(big_shop)
    cut = sorted(o["date_modified_gmt"] for o in big_shop.orders.values())[-130]
    expected = {o["id"] for o in big_shop.orders.values()
                if o["date_modified_gmt"] > cut and o["status"] not in ("trash", "checkout-draft")}
    pages = list(client.iter_pages("orders", {"modified_after": cut, "dates_are_gmt": True}))
    got = [o["id"] for p in pages for o in p.items]
    assert len(pages) == 2 and len(got) == len(expected) == 129
    assert set(got) == expected


def test_get_put_post_and_list_webhooks(shop):
    client, _ = client_for(shop)
    cid = min(shop.customers)
    assert client.get(f"customers/{cid}")["email"] == shop.customers[cid]["email"]
    updated = client.put(f"customers/{cid}", {"last_name": "Rectified"})
    assert updated["last_name"] == "Rectified" == shop.customers[cid]["last_name"]
    for i in range(103):
        shop.add_webhook("order.updated", f"https://companion.example/hooks/{i}")
    created = client.post("webhooks", {"name": "sync", "topic": "customer.updated",
                                       "delivery_url": "https://companion.example/hook", "secret": "x"})
    assert created["status"] == "active" and created["topic"] == "customer.updated"
    hooks = client.list_webhooks()
    assert len(hooks) == 104 and hooks[-1]["id"] == created["id"]
    assert shop.count_requests("webhooks", status=200) == 2  # two pages


def test_shop_url_without_trailing_slash(shop):
    client = WooClient(shop.base_url.rstrip("/"), "ck_test", SECRET)
    assert client.api_url == shop.base_url + "wp-json/wc/v3/"
    assert client.get_page("customers", 1).total == 30


def test_not_found_is_not_retried(shop):
    client, sleep = client_for(shop)
    with pytest.raises(WooApiError) as caught:
        client.get("orders/1")
    assert (caught.value.status, caught.value.code) == (404, "woocommerce_rest_shop_order_invalid_id")
    assert sleep.waits == [] and shop.count_requests() == 1


# ------------------------------------------------------------------ retries


def test_429_retry_after_seconds_is_honoured(shop):
    client, sleep = client_for(shop)
    shop.fail_next(2, 429, retry_after="7")
    page = client.get_page("customers", 1)
    assert page.total == 30
    assert sleep.waits == [7.0, 7.0]
    assert shop.count_requests("customers", status=429) == 2


def test_429_retry_after_http_date_is_honoured_and_capped(shop):
    client, sleep = client_for(shop, backoff_max=60)
    shop.fail_next(1, 429, retry_after=formatdate(time.time() + 3600, usegmt=True))
    shop.fail_next(1, 503, retry_after=formatdate(time.time() + 20.5, usegmt=True))
    client.get("customers")
    assert sleep.waits[0] == 60.0  # an hour away: capped at backoff_max
    assert 18 <= sleep.waits[1] <= 20.5


def test_500s_are_retried_with_exponential_backoff_then_succeed(shop, caplog):
    client, sleep = client_for(shop, backoff_base=0.5)
    shop.fail_next(3, 500)
    with caplog.at_level(logging.WARNING, logger="services.customer_sync.shop.woo_client"):
        assert client.get_page("orders", 1).total == 40
    assert len(sleep.waits) == 3
    for i, wait in enumerate(sleep.waits):  # jitter: between half and all of 0.5 * 2**i
        assert 0.5 * 2 ** i / 2 <= wait <= 0.5 * 2 ** i
    retries = [r for r in caplog.records if r.name == "services.customer_sync.shop.woo_client"]
    assert len(retries) == 3 and all(r.levelno == logging.WARNING for r in retries)
    assert [r.status for r in retries] == [500, 500, 500]
    assert [r.wait_seconds for r in retries] == sleep.waits
    assert "HTTP 500" in retries[0].getMessage() and "retry 1/6" in retries[0].getMessage()


def test_persistent_500_raises_woo_unavailable_after_max_retries(shop):
    client, sleep = client_for(shop, max_retries=3, backoff_base=1, backoff_max=3)
    shop.fail_next(10, 500)
    with pytest.raises(WooUnavailable) as caught:
        client.get_page("customers", 1)
    assert caught.value.status == 500 and caught.value.code == "internal_server_error"
    assert shop.count_requests("customers") == 4  # the first try and 3 retries
    assert len(sleep.waits) == 3 and max(sleep.waits) <= 3


def test_dropped_connections_and_timeouts_are_retried(shop):
    client, sleep = client_for(shop, timeout=0.3)
    shop.drop_next(1)
    shop.delay_next(1, 1.0)
    assert client.get_page("customers", 1).total == 30
    assert len(sleep.waits) == 2


def test_unreachable_shop_raises_woo_unavailable_without_secret():
    with FakeWooShop(consumer_secret=SECRET) as s:
        url = s.base_url
    client = WooClient(url, "ck_test", SECRET, max_retries=2, sleep=RecordingSleep(), auth_in_query=True)
    with pytest.raises(WooUnavailable) as caught:
        client.get_page("customers", 1)
    assert caught.value.status == 0 and caught.value.code == "connection_error"
    assert SECRET not in str(caught.value) and SECRET not in repr(caught.value)
    # nothing chained either: requests' own exception would print the URL with its query
    assert caught.value.__cause__ is None and caught.value.__context__ is None


def test_post_is_not_retried_after_a_500_but_is_after_a_429(shop):
    client, sleep = client_for(shop)
    body = {"topic": "order.updated", "delivery_url": "https://companion.example/hook"}
    shop.fail_next(1, 500)
    with pytest.raises(WooUnavailable):
        client.post("webhooks", body)
    assert shop.webhooks == {} and sleep.waits == []
    shop.drop_next(1)  # the connection breaks after the request was sent: outcome unknown
    with pytest.raises(WooUnavailable) as caught:
        client.post("webhooks", body)
    assert caught.value.code == "outcome_unknown" and caught.value.__context__ is None
    assert shop.count_requests("webhooks") == 2 and sleep.waits == []
    shop.fail_next(1, 429, retry_after="2")
    assert client.post("webhooks", body)["id"] == 1
    assert sleep.waits == [2.0]


def test_post_to_an_unreachable_shop_is_retried_because_nothing_was_sent():
    with FakeWooShop() as s:
        url = s.base_url
    sleep = RecordingSleep()
    client = WooClient(url, "ck_test", "cs_test", max_retries=2, sleep=sleep)
    with pytest.raises(WooUnavailable) as caught:
        client.post("webhooks", {"topic": "order.updated", "delivery_url": "https://x.example/"})
    assert caught.value.code == "connection_error" and len(sleep.waits) == 2


# ------------------------------------------------------------------ auth


def test_wrong_secret_raises_401_without_leaking_the_secret(caplog):
    with FakeWooShop(customers=2, consumer_secret="cs_right") as s:
        client = WooClient(s.base_url, "ck_test", SECRET, sleep=RecordingSleep())
        with caplog.at_level(logging.DEBUG):
            with pytest.raises(WooApiError) as caught:
                client.get_page("customers", 1)
        assert caught.value.status == 401
        assert caught.value.code == "woocommerce_rest_authentication_error"
        assert SECRET not in str(caught.value) and SECRET not in repr(caught.value)
        assert SECRET not in caplog.text
        # header auth, then the query-parameter fallback, then give up
        assert s.count_requests("customers", status=401) == 2
        assert client.auth_in_query is False


def test_dropped_authorization_header_falls_back_to_query_auth_and_stays_there():
    with FakeWooShop(customers=120, drop_authorization_header=True) as s:
        client, sleep = client_for(s)
        ids = [c["id"] for p in client.iter_pages("customers") for c in p.items]
        assert len(ids) == 120
        assert client.auth_in_query is True
        assert s.count_requests(status=401) == 1  # only the very first request
        assert [r.status for r in s.requests_log] == [401, 200, 200]
        assert all(r.query.get("consumer_key") == "ck_test" for r in s.requests_log[1:])
        assert sleep.waits == []


def test_auth_in_query_from_the_start():
    with FakeWooShop(customers=5, drop_authorization_header=True) as s:
        client, _ = client_for(s, auth_in_query=True)
        assert client.get_page("customers", 1).total == 5
        assert s.count_requests(status=401) == 0
