"""The plain parts behind `companion webhooks register` and `companion health`."""
from __future__ import annotations

import pytest

from services.customer_sync.shop.webhook_setup import REQUIRED_TOPICS, delivery_url_for
from services.customer_sync.door.webhooks import SUPPORTED_TOPICS
from ops.cli import build_parser
from ops.settings import every_setting
from shared.config import Config
from shared.errors import ValidationError
from ops.system_health import Management, vhost_of


def test_every_supported_topic_is_registered_customers_first():
    assert set(REQUIRED_TOPICS) == SUPPORTED_TOPICS and len(REQUIRED_TOPICS) == 7
    assert REQUIRED_TOPICS[0].startswith("customer.") and REQUIRED_TOPICS[-1].startswith("order.")


@pytest.mark.parametrize("given, expected", [
    ("https://companion.example", "https://companion.example/webhooks/woocommerce/shop1"),
    ("https://companion.example/", "https://companion.example/webhooks/woocommerce/shop1"),
    ("https://c.example/webhooks/woocommerce/shop1/", "https://c.example/webhooks/woocommerce/shop1"),
    ("https://c.example/api/webhooks/woocommerce/shop1", "https://c.example/api/webhooks/woocommerce/shop1"),
    ("http://127.0.0.1:8000", "http://127.0.0.1:8000/webhooks/woocommerce/shop1"),
])
def test_delivery_url_is_the_store_door(given, expected):
    assert delivery_url_for("shop1", given) == expected


@pytest.mark.parametrize("given, why", [
    ("http://companion.example", "https"),
    ("https://c.example/webhooks/woocommerce/shop2", "must end with"),
    ("https://c.example/hooks", "must end with"),
    ("https://c.example/?x=1", "query"),
    ("ftp://c.example", "http(s)"),
    ("", "required"),
])
def test_delivery_url_refusals_say_why(given, why):
    with pytest.raises(ValidationError) as caught:
        delivery_url_for("shop1", given)
    assert why in caught.value.message


def test_management_credentials_come_from_settings_then_url_then_amqp_uri():
    amqp = "amqp://app:s3cret@rabbit.internal:5672/prod"
    plain = Management.from_config(Config({}, every_setting()), amqp)
    assert (plain.url, plain.user, plain.password) == ("http://127.0.0.1:15672", "app", "s3cret")
    in_url = Management.from_config(
        Config({"RABBITMQ_MANAGEMENT_URL": "https://ops:pw@mq.example:443/rabbit/"},
               every_setting()), amqp)
    assert (in_url.url, in_url.user, in_url.password) == (
        "https://mq.example:443/rabbit", "ops", "pw")
    explicit = Management.from_config(Config({
        "RABBITMQ_MANAGEMENT_URL": "https://ops:pw@mq.example", "RABBITMQ_MANAGEMENT_USER": "admin",
        "RABBITMQ_MANAGEMENT_PASSWORD": "adminpw"}, every_setting()), amqp)
    assert (explicit.url, explicit.user, explicit.password) == ("https://mq.example", "admin", "adminpw")
    assert "s3cret" not in repr(plain)


def test_vhost_of_an_amqp_uri():
    assert vhost_of("amqp://guest:guest@127.0.0.1:5672/") == "/"
    assert vhost_of("amqp://guest:guest@127.0.0.1:5672") == "/"
    assert vhost_of("amqp://guest:guest@127.0.0.1:5672/test-1") == "test-1"
    assert vhost_of("amqp://h/%2Fshop") == "/shop"


def test_json_is_accepted_before_or_after_the_command():
    parser = build_parser()
    assert parser.parse_args(["--json", "health"]).json is True
    assert parser.parse_args(["health", "--json"]).json is True
    assert parser.parse_args(["gdpr", "status", "--id", "r", "--json"]).json is True
    assert parser.parse_args(["dlq", "list", "--service", "x"]).json is False
    args = parser.parse_args(["gdpr", "submit", "--store", "s", "--type", "export", "--email", "a@b.c"])
    assert args.type == "export"
    with pytest.raises(SystemExit):  # --email and --name exclude each other
        parser.parse_args(["customers", "find", "--store", "s", "--email", "a@b.c", "--name", "A"])


def test_gdpr_status_names_an_ambiguous_erasure_for_review():
    from ops.cli import _gdpr_human

    request = {"request_id": "r1", "type": "erasure", "email": "ada@x.io", "store_id": "s",
               "state": "completed", "received_at": "t0", "due_at": "t1", "completed_at": "t2",
               "needs_review": True, "result": {"verification": "ambiguous", "ambiguous": {
                   "notifications": [{"collection": "bulk_jobs", "count": 2}]}}}
    assert "NEEDS REVIEW" in _gdpr_human(request)
    assert "notifications: bulk_jobs (2)" in _gdpr_human(request)
    assert "NEEDS REVIEW" not in _gdpr_human({**request, "needs_review": False})
