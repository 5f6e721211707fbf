"""`companion loyalty` against the real loyalty and customer_sync services on the real broker,
with the WooCommerce stand-in as the shop: what the command says is what the shop holds."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from nameko.standalone.rpc import ClusterRpcProxy

from services.customer_sync.service import CustomerSyncService
from services.customer_sync.door.signature import sign
from services.loyalty.service import LoyaltyService
from ops.cli import EXIT_FAILED, EXIT_OK, main
from demo.shop import FakeWooShop
from tests.support import wait_until

REPO = Path(__file__).resolve().parents[2]
SECRET = "whsec-cli-rewards-1"
STORE_ID = "cli-rewards"


@pytest.fixture
def shop():
    with FakeWooShop(seed=12) as shop:
        yield shop


@pytest.fixture
def rpc(services, shop):
    services.start(CustomerSyncService, WOO_MAX_RETRIES=1)
    services.start(LoyaltyService, LOYALTY_REWARD_STEP_SECONDS=0.2)
    with ClusterRpcProxy({"AMQP_URI": services.amqp_uri}, timeout=30) as proxy:
        proxy.customer_sync.register_store({
            "store_id": STORE_ID, "shop_url": shop.base_url, "webhook_secret": SECRET,
            "consumer_key": shop.consumer_key, "consumer_secret": shop.consumer_secret})
        yield proxy


def deliver(services, shop, topic: str, resource_id: int) -> None:
    body = shop.webhook_body(topic, resource_id)
    answer = requests.post(
        f"{services.web_url}/webhooks/woocommerce/{STORE_ID}", data=body, timeout=10,
        headers={"Content-Type": "application/json", "X-WC-Webhook-Topic": topic,
                 "X-WC-Webhook-ID": "3", "X-WC-Webhook-Delivery-ID": f"{topic}-{resource_id}",
                 "X-WC-Webhook-Signature": sign(body, SECRET)})
    assert answer.ok, answer.text


def member(services, rpc, shop) -> str:
    """A shop customer whose first order made them a member here (and set the currency)."""
    woo = shop.add_customer()
    deliver(services, shop, "customer.created", woo["id"])
    deliver(services, shop, "order.created",
            shop.add_order(customer_id=woo["id"], status="processing")["id"])

    def account():
        try:
            found = rpc.customer_sync.find_customer(STORE_ID, woo["email"])["customer_id"]
            return found if rpc.loyalty.get_account(STORE_ID, found)["balance"] > 0 else None
        except Exception:  # noqa: BLE001 - not there yet
            return None
    return wait_until(account, timeout=20, message="the member's points")


def run_process(amqp_uri: str, *argv: str) -> subprocess.CompletedProcess:
    """The command as a process of its own, from this checkout (the installed `companion`
    script may be another checkout's)."""
    return subprocess.run([sys.executable, "-m", "ops.cli", "--amqp-uri", amqp_uri, *argv],
                          capture_output=True, text=True, timeout=120, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


def run(capsys, amqp_uri: str, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["--amqp-uri", amqp_uri, *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_rewards_redeemed_credited_and_cancelled_from_the_command_line(services, rpc, shop,
                                                                        capsys):
    customer_id = member(services, rpc, shop)
    rpc.loyalty.adjust(STORE_ID, customer_id, 500, "top up for the test", "ops")
    start = rpc.loyalty.get_account(STORE_ID, customer_id)["balance"]
    card = ("--store", STORE_ID, customer_id)

    code, out, err = run(capsys, services.amqp_uri, "loyalty", "redeem", *card, "200", "--yes")
    assert code == EXIT_OK, err
    [made] = rpc.loyalty.list_rewards(STORE_ID, customer_id)["items"]
    assert f"Coupon {made['code']} for 2.00 " in out and "is ready" in out
    assert shop.coupon_by_code(made["code"])["amount"] == "2.00"
    assert rpc.loyalty.get_account(STORE_ID, customer_id)["balance"] == start - 200

    code, out, err = run(capsys, services.amqp_uri, "loyalty", "redeem", *card, "99999",
                         "--yes")
    assert code == EXIT_FAILED and "cannot redeem 99999 points" in err
    assert len(rpc.loyalty.list_rewards(STORE_ID, customer_id)["items"]) == 1

    code, out, err = run(capsys, services.amqp_uri, "loyalty", "credit", *card, "7.50",
                         "--reason", "goodwill", "--note", "late parcel")
    assert code == EXIT_OK, err
    credit = rpc.loyalty.list_rewards(STORE_ID, customer_id)["items"][0]
    assert (credit["kind"], credit["amount"]["amount"], credit["note"]) == (
        "credit", 750, "late parcel")
    assert shop.coupon_by_code(credit["code"])["amount"] == "7.50"

    listed = run_process(services.amqp_uri, "loyalty", "rewards", *card, "--json")
    assert listed.returncode == 0, listed.stderr
    assert [r["reward_id"] for r in json.loads(listed.stdout)] == [credit["reward_id"],
                                                                  made["reward_id"]]

    code, out, err = run(capsys, services.amqp_uri, "loyalty", "cancel-reward", *card,
                         made["reward_id"])
    assert code == EXIT_OK, err
    assert f"Coupon {made['code']} is cancelled" in out and "200 points went back" in out
    assert shop.coupon_by_code(made["code"]) is None
    assert rpc.loyalty.get_account(STORE_ID, customer_id)["balance"] == start
    code, _, err = run(capsys, services.amqp_uri, "loyalty", "cancel-reward", *card,
                       made["reward_id"])
    assert code == EXIT_FAILED and err.startswith("error: ")
