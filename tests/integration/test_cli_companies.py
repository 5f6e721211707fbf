"""`companion companies` against the real customer_sync and segmentation services on the real
broker: --custom values are typed by the store's company fields, so a number or a yes/no field
can be set, and an update changes only the keys it names."""
from __future__ import annotations

import json

import pytest
from nameko.standalone.rpc import ClusterRpcProxy

from demo.shop import FakeWooShop
from ops.cli import EXIT_OK, EXIT_USAGE, main
from services.customer_sync.service import CustomerSyncService
from services.segmentation.service import SegmentationService

SECRET = "whsec-cli-companies-1"
STORE_ID = "cli-companies"


@pytest.fixture
def rpc(services):
    services.start(CustomerSyncService, WOO_MAX_RETRIES=1)
    services.start(SegmentationService)
    with FakeWooShop(seed=13) as shop, ClusterRpcProxy({"AMQP_URI": services.amqp_uri},
                                                       timeout=30) as proxy:
        proxy.customer_sync.register_store({
            "store_id": STORE_ID, "shop_url": shop.base_url, "webhook_secret": SECRET,
            "consumer_key": shop.consumer_key, "consumer_secret": shop.consumer_secret})
        for key, kind in (("seats", "number"), ("vip", "boolean"), ("tier", "text")):
            proxy.customer_sync.create_custom_field(STORE_ID, {
                "key": key, "label": key.title(), "type": kind, "applies_to": "company"}, "ops")
        yield proxy


def run(capsys, amqp_uri: str, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["--amqp-uri", amqp_uri, *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_number_and_yes_no_fields_are_set_and_an_update_keeps_the_other_values(
        services, rpc, capsys):
    code, out, err = run(capsys, services.amqp_uri, "companies", "create", "--store", STORE_ID,
                         "--name", "Acme GmbH", "--custom", "seats=5", "--custom", "vip=yes",
                         "--custom", "tier=gold", "--json")
    assert code == EXIT_OK, err
    company_id = json.loads(out)["company_id"]
    assert rpc.customer_sync.get_company(STORE_ID, company_id)["custom_fields"] == {
        "seats": 5, "vip": True, "tier": "gold"}

    code, _, err = run(capsys, services.amqp_uri, "companies", "update", "--store", STORE_ID,
                       company_id, "--custom", "seats=7.5", "--custom", "vip=0")
    assert code == EXIT_OK, err
    assert rpc.customer_sync.get_company(STORE_ID, company_id)["custom_fields"] == {
        "seats": 7.5, "vip": False, "tier": "gold"}

    code, _, err = run(capsys, services.amqp_uri, "companies", "update", "--store", STORE_ID,
                       company_id, "--custom", "seats=many")
    assert code == EXIT_USAGE and "custom_fields.seats: a number field" in err
    assert rpc.customer_sync.get_company(STORE_ID, company_id)["custom_fields"]["seats"] == 7.5
