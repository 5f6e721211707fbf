"""Webhook signatures and WooCommerce normalisation: money, times, emails, orders."""
from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import datetime, timezone

import pytest

from services.customer_sync.core.normalise import (
    NormalisationError,
    email_key,
    normalise_customer,
    normalise_order,
    parse_gmt,
    to_minor,
)
from services.customer_sync.door.signature import sign, verify
from tests import payloads


def test_signature_is_base64_hmac_sha256_of_the_raw_body():
    body = b'{"id": 1, "email": "a@b.example"}'
    expected = base64.b64encode(hmac.new(b"s3cret", body, hashlib.sha256).digest()).decode()
    assert sign(body, "s3cret") == expected
    assert verify(body, "s3cret", expected)


@pytest.mark.parametrize("signature", [None, "", "garbage", "c2lnbmF0dXJl", "é"])
def test_bad_or_missing_signatures_fail(signature):
    assert not verify(b"{}", "s3cret", signature)


def test_secret_with_html_entities_verifies_as_woocommerce_signs_it():
    body = b'{"id": 2}'
    signed_by_woocommerce = sign(body, "a&b<c")  # WooCommerce signs with the decoded secret
    assert verify(body, "a&amp;b&lt;c", signed_by_woocommerce)
    assert verify(body, "a&b<c", signed_by_woocommerce)


def test_signature_covers_every_byte_of_the_body():
    body = b'{"id": 1}'
    assert not verify(body + b" ", "s3cret", sign(body, "s3cret"))
    assert not verify(body, "other", sign(body, "s3cret"))


@pytest.mark.parametrize("value,currency,minor", [
    ("12.34", "EUR", 1234), ("0.005", "EUR", 1), ("0.004", "EUR", 0), ("-10.00", "EUR", -1000),
    ("1500", "JPY", 1500), ("1.2345", "KWD", 1235), ("", "EUR", 0), (None, "EUR", 0),
    ("19.99", "usd", 1999), ("0.1", "EUR", 10),
])
def test_money_to_minor_units_with_decimal(value, currency, minor):
    assert to_minor(value, currency) == minor


@pytest.mark.parametrize("value", ["abc", "NaN", "Infinity", "1,50"])
def test_money_that_is_not_a_decimal_is_refused_with_the_field(value):
    with pytest.raises(NormalisationError, match="total"):
        to_minor(value, "EUR", "total")


def test_gmt_fields_are_utc_without_offset():
    assert parse_gmt("2026-03-01T10:00:00") == datetime(2026, 3, 1, 10, tzinfo=timezone.utc)
    assert parse_gmt("2026-03-01T12:00:00+02:00") == datetime(2026, 3, 1, 10, tzinfo=timezone.utc)
    assert parse_gmt(None) is None and parse_gmt("") is None
    with pytest.raises(NormalisationError):
        parse_gmt("yesterday")


def test_email_keys_are_trimmed_and_lower_cased():
    assert email_key("  Ada@Example.COM ") == "ada@example.com"
    assert email_key("") is None and email_key(None) is None


def test_customer_normalisation_keeps_contact_fields_and_ignores_volatile_ones():
    a = normalise_customer(payloads.customer())
    b = normalise_customer({**payloads.customer(), "avatar_url": "https://other.invalid/x.png",
                            "_links": {}})
    assert a.content_hash == b.content_hash
    assert a.contact()["phone"] == "+4400000001"
    assert a.date_modified == datetime(2026, 3, 1, 10, tzinfo=timezone.utc)


def test_order_normalisation():
    snap = normalise_order(payloads.order(
        5, customer_id=0, total="59.90",
        refunds=[{"id": 1, "reason": "", "total": "-10.00"}, {"id": 2, "total": "-0.50"}],
        coupon_lines=[{"id": 1, "code": "SPRING", "discount": "5.00"}]))
    assert snap.order_id == "5" and snap.woo_customer_id is None
    assert snap.total == 5990 and snap.shipping_total == 490 and snap.subtotal == 4500
    assert snap.total_refunded == 1050
    assert snap.coupon_codes == ["SPRING"]
    assert snap.line_items[0]["quantity"] == 3 and snap.line_items[0]["total"] == 4500
    assert snap.billing_email_key == "ada@example.com"


def test_anonymised_orders_are_recognised():
    snap = normalise_order(payloads.order(meta_data=[{"id": 1, "key": "_anonymized", "value": "yes"}]))
    assert snap.anonymized


@pytest.mark.parametrize("override,field", [
    ({"currency": "euro"}, "currency"), ({"status": "shipped"}, "status"),
    ({"id": -1}, "id"), ({"customer_id": "abc"}, "customer_id"),
    ({"line_items": ["x"]}, "line_items"),
])
def test_unreadable_orders_name_the_field(override, field):
    with pytest.raises(NormalisationError, match=field):
        normalise_order(payloads.order(**override))


def test_a_birthday_from_a_plugins_meta_data_is_kept_and_a_bad_one_dropped():
    from services.customer_sync.core.normalise import birthday_from, normalise_customer

    assert birthday_from([{"key": "billing_birthday", "value": "1990-2-7"}]) == "1990-02-07"
    assert birthday_from([{"key": "birthday", "value": "12/10"}]) == "12-10"
    assert birthday_from([{"key": "birthday", "value": "02-29"}]) == "02-29"
    assert birthday_from([{"key": "birthday", "value": "1990-02-30"}]) is None
    assert birthday_from([{"key": "favourite_tea", "value": "01-01"}, "junk"]) is None
    assert birthday_from(None) is None
    payload = {**payloads.customer(woo_id=5, email="b@example.com"),
               "meta_data": [{"id": 1, "key": "date_of_birth", "value": "1985-06-15"}]}
    assert normalise_customer(payload).contact()["birthday"] == "1985-06-15"
    plain = normalise_customer(payloads.customer(woo_id=5, email="b@example.com"))
    assert plain.birthday is None


# Found by tests/integration/test_fuzz_webhooks.py: each payload raised something other than
# NormalisationError, so the inbox retried a delivery that could never apply, ten times.
@pytest.mark.parametrize("overrides", [
    {"total": "1e999999"},  # decimal.InvalidOperation when quantized
    {"total": str(10 ** 30)},  # more minor units than MongoDB's 8-byte integers
    {"line_items": 5}, {"refunds": {"a": 1}}, {"coupon_lines": 3},  # TypeError: not iterable
    {"customer_id": float("inf")},  # OverflowError from int()
    {"customer_id": 2 ** 64},
    {"date_created_gmt": "0001-01-01T00:00:00+05:00"},  # OverflowError from astimezone
], ids=["decimal-overflow", "amount-over-8-bytes", "line-items", "refunds", "coupons",
        "infinite-id", "id-over-8-bytes", "date-before-year-1"])
def test_nonsense_order_fields_are_normalisation_errors(overrides):
    with pytest.raises(NormalisationError):
        normalise_order(payloads.order(**overrides))


def test_meta_data_of_the_wrong_type_means_none():
    assert normalise_order(payloads.order(meta_data=3)).anonymized is False
