"""Consent captured where it is given, on the real broker with every service: a checkout
webhook and a backfill of orders carrying a store's mapped opt-in meta data end as consent
with source checkout and the order id; an older checkout never overrides a newer change; the
API's bulk change answers per customer and refuses more than its bound."""
from __future__ import annotations

import json

from nameko.standalone.rpc import ClusterRpcProxy

from services.customer_sync.service import CustomerSyncService
from ops.cli import EXIT_OK, EXIT_USAGE, main
from tests.gateway_system import STORE, shop, system  # noqa: F401 - fixtures
from tests.support import wait_until

RULES = {"rules": [
    {"scope": "order", "key": "_newsletter_optin", "yes_values": ["yes"],
     "purpose": "email_marketing"},
    {"scope": "order", "key": "_sms_optin", "yes_values": ["1"], "purpose": "sms_marketing"}]}


def _customer_here(system, email: str):
    try:
        return system.rpc.customer_sync.find_customer(STORE, email)["customer_id"]
    except Exception:
        return None


def _checkout_entry(system, customer_id: str, purpose: str):
    """The checkout capture in the customer's consent history, once gdpr has recorded it."""
    try:
        history = system.rpc.gdpr.get_consent(STORE, customer_id)["history"]
    except Exception:
        return None
    return next((e for e in history if e["purpose"] == purpose and e["source"] == "checkout"),
                None)


def _opted_in_order(shop, woo_customer: dict, **meta) -> dict:
    return shop.add_order(customer_id=woo_customer["id"], meta_data=[
        {"id": 9000 + i, "key": key, "value": value} for i, (key, value) in enumerate(meta.items())])


def test_a_checkout_webhook_and_a_backfill_carry_opt_ins_to_consent(system):
    gdpr = system.client("gdpr")
    answer = gdpr.put("/consent/capture", json=RULES)
    assert answer.status_code == 200, answer.text
    assert [r["key"] for r in gdpr.get("/consent/capture").json()["rules"]] == [
        "_newsletter_optin", "_sms_optin"]
    shop = system.shop

    # A live checkout with the newsletter box ticked, by webhook.
    ada = shop.add_customer()
    system.webhook("customer.created", shop.webhook_body("customer.created", ada["id"]))
    order = _opted_in_order(shop, ada, _newsletter_optin="yes")
    system.webhook("order.created", shop.webhook_body("order.created", order["id"]))
    ada_id = wait_until(lambda: _customer_here(system, ada["email"]), timeout=20)
    entry = wait_until(lambda: _checkout_entry(system, ada_id, "email_marketing"), timeout=20,
                       message="the checkout's consent recorded by gdpr")
    assert entry["order_id"] == str(order["id"]) and entry["granted"] is True
    purposes = system.rpc.gdpr.get_consent(STORE, ada_id)["purposes"]
    assert purposes["email_marketing"]["source"] == "checkout"
    assert "sms_marketing" not in purposes  # no SMS box: no signal, not a "no"
    # notifications heard it, so marketing may reach her.
    wait_until(lambda: system.rpc.notifications.export_customer(STORE, ada_id)["contact"]
               .get("consent", {}).get("email_marketing", {}).get("granted") is True,
               timeout=20, message="notifications' consent projection")

    # Orders the webhooks missed, found by a backfill: one SMS opt-in, one unticked box, and
    # one older checkout of a customer who has since said no here.
    bea, cy, dee = shop.add_customer(), shop.add_customer(), shop.add_customer()
    bea_order = _opted_in_order(shop, bea, _sms_optin="1")
    _opted_in_order(shop, cy, _newsletter_optin="")
    dee_order = _opted_in_order(shop, dee, _newsletter_optin="yes")
    system.webhook("customer.created", shop.webhook_body("customer.created", dee["id"]))
    dee_id = wait_until(lambda: _customer_here(system, dee["email"]), timeout=20)
    refused = gdpr.put(f"/customers/{dee_id}/consent",
                       json={"purpose": "email_marketing", "granted": False,
                             "note": "asked by phone"})
    assert refused.status_code == 200, refused.text

    run = system.rpc.customer_sync.backfill(STORE)
    wait_until(lambda: system.rpc.customer_sync.backfill_status(STORE, run["run_id"])["status"]
               == "completed", timeout=60, message="the backfill")
    bea_id = wait_until(lambda: _customer_here(system, bea["email"]), timeout=20)
    entry = wait_until(lambda: _checkout_entry(system, bea_id, "sms_marketing"), timeout=20,
                       message="the backfilled order's consent")
    assert entry["order_id"] == str(bea_order["id"])
    entry = wait_until(lambda: _checkout_entry(system, dee_id, "email_marketing"), timeout=20)
    assert entry["order_id"] == str(dee_order["id"])
    # The older checkout is in the history; the newer "no" stands.
    assert system.rpc.gdpr.get_consent(STORE, dee_id)["purposes"]["email_marketing"][
        "granted"] is False
    cy_id = _customer_here(system, cy["email"])
    assert cy_id and system.rpc.gdpr.get_consent(STORE, cy_id)["history"] == []
    # Ada's order again (a second backfill reads it too): nothing recorded twice.
    assert [e["source"] for e in system.rpc.gdpr.get_consent(STORE, ada_id)["history"]] == [
        "checkout"]


def test_a_bulk_consent_change_answers_per_customer_and_keeps_its_bound(system):
    gdpr = system.client("gdpr")
    _, first = system.shop_customer(orders=0)
    _, second = system.shop_customer(orders=0)
    answer = gdpr.post("/consent/bulk", json={
        "customer_ids": [first, second, "not-a-customer"], "purpose": "sms_marketing",
        "granted": True, "reason": "signed the paper list at the fair"})
    assert answer.status_code == 200, answer.text
    assert {r["customer_id"]: r["outcome"] for r in answer.json()["results"]} == {
        first: "changed", second: "changed", "not-a-customer": "not_found"}
    [entry] = system.rpc.gdpr.get_consent(STORE, first)["history"]
    assert entry["note"] == "signed the paper list at the fair"
    again = gdpr.post("/consent/bulk", json={
        "customer_ids": [first], "purpose": "sms_marketing", "granted": True, "reason": "again"})
    assert again.json()["results"] == [{"customer_id": first, "outcome": "unchanged"}]

    too_many = gdpr.post("/consent/bulk", json={
        "customer_ids": [first] * 501, "purpose": "sms_marketing", "granted": False,
        "reason": "x"})
    assert too_many.status_code == 400 and "customer_ids" in too_many.json()["errors"]
    no_reason = gdpr.post("/consent/bulk", json={
        "customer_ids": [first], "purpose": "sms_marketing", "granted": False})
    assert no_reason.status_code == 400 and "reason" in str(no_reason.json()["errors"])
    assert system.rpc.gdpr.get_consent(STORE, first)["purposes"]["sms_marketing"]["granted"]


def test_the_cli_shows_and_replaces_a_stores_rules_and_refuses_a_hostile_file(
        services, capsys, tmp_path):
    services.start(CustomerSyncService, RECONCILE_POLL_SECONDS="3600")
    with ClusterRpcProxy({"AMQP_URI": services.amqp_uri}, timeout=30) as rpc:
        rpc.customer_sync.register_store({
            "store_id": "cli", "shop_url": "https://shop.example", "webhook_secret": "whsec-cli-1",
            "consumer_key": "ck", "consumer_secret": "cs"})

    def run(*argv):
        capsys.readouterr()
        code = main(["--amqp-uri", services.amqp_uri, *argv])
        return (code, *capsys.readouterr())

    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps(RULES["rules"]))
    code, out, err = run("consent-capture", "set", "--store", "cli", "--rules", str(rules),
                         "--actor", "alice")
    assert code == EXIT_OK, err
    assert "_newsletter_optin" in out and "alice" in out
    code, out, _ = run("--json", "consent-capture", "show", "--store", "cli")
    assert code == EXIT_OK and json.loads(out)["rules"][1]["purpose"] == "sms_marketing"

    rules.write_text(json.dumps({"rules": [{"scope": "order", "key": "_optin",
                                            "yes_values": ["no"], "purpose": "email_marketing"}]}))
    code, _, err = run("consent-capture", "set", "--store", "cli", "--rules", str(rules))
    assert code == EXIT_USAGE and err.startswith("error: rules.0.yes_values: ")
    rules.write_text("{not json")
    code, _, err = run("consent-capture", "set", "--store", "cli", "--rules", str(rules))
    assert code == EXIT_USAGE and "JSON" in err
    code, out, _ = run("--json", "consent-capture", "show", "--store", "cli")
    assert [r["key"] for r in json.loads(out)["rules"]] == ["_newsletter_optin", "_sms_optin"]
