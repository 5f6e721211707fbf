"""Hostile input to consent capture: a mapping that would grant consent nobody gave (a "no"
read as yes, an empty box), oversized or odd rules, CSV consent columns claiming consent
without proof or with a formula, and a bulk consent change past its bound. Each is refused
with a 400 naming the field, and nothing is stored: not the mapping, not the contact, not a
consent record."""
from __future__ import annotations

import pytest

from shared.errors import ValidationError
from tests.gateway_system import STORE, shop, system  # noqa: F401 - fixtures
from tests.security.test_phantom_customers import traces
from tests.support import wait_until

GOOD_RULE = {"scope": "order", "key": "_newsletter_optin", "yes_values": ["yes"],
             "purpose": "email_marketing"}
HOSTILE_RULES = {
    "a no read as yes": ({"rules": [{**GOOD_RULE, "yes_values": ["No"]}]}, "yes_values"),
    "an empty box read as yes": ({"rules": [{**GOOD_RULE, "yes_values": [" "]}]}, "yes_values"),
    "a false read as yes": ({"rules": [{**GOOD_RULE, "yes_values": ["false"]}]}, "yes_values"),
    "a purpose no box can give": ({"rules": [{**GOOD_RULE, "purpose": "data_processing"}]},
                                  "purpose"),
    "an unknown scope": ({"rules": [{**GOOD_RULE, "scope": "cart"}]}, "scope"),
    "a control character in the key": ({"rules": [{**GOOD_RULE, "key": "_opt\x00in"}]}, "key"),
    "a huge key": ({"rules": [{**GOOD_RULE, "key": "k" * 10_000}]}, "key"),
    "too many values": ({"rules": [{**GOOD_RULE, "yes_values": [f"y{i}" for i in range(11)]}]},
                        "yes_values"),
    "too many rules": ({"rules": [{**GOOD_RULE, "key": f"k{i}"} for i in range(21)]}, "rules"),
    "an operator smuggled in": ({"rules": [{**GOOD_RULE, "$where": "sleep(1000)"}]}, "$where"),
    "values not text": ({"rules": [{**GOOD_RULE, "yes_values": [{"$ne": None}]}]},
                        "yes_values"),
    "rules not a list": ({"rules": {"scope": "order"}}, "rules"),
}


def test_a_hostile_mapping_is_refused_naming_the_field_and_the_old_one_stays(system):
    client = system.client("gdpr")
    assert client.put("/consent/capture", json={"rules": [GOOD_RULE]}).status_code == 200
    before = client.get("/consent/capture").json()
    refused = {}
    for name, (body, field) in HOSTILE_RULES.items():
        answer = client.put("/consent/capture", json=body)
        if answer.status_code != 400 or field not in str(answer.json().get("errors")):
            refused[name] = (answer.status_code, answer.text[:200])
        # The service checks too, for callers that do not come through the gateway.
        with pytest.raises(ValidationError) as caught:
            system.rpc.customer_sync.set_consent_capture(STORE, body, "mallory")
        if field not in str(caught.value.details) and field not in str(caught.value):
            refused[name + " (rpc)"] = str(caught.value)[:200]
    assert refused == {}
    assert client.get("/consent/capture").json() == before


CSV = (
    "email,email_marketing,email_marketing_source,sms_marketing,sms_marketing_source\n"
    "no-proof@example.com,yes,,,\n"
    "blank-proof@example.com,yes,   ,,\n"
    "formula@example.com,=HYPERLINK(\"http://evil.example\"),form,,\n"
    "sms-no-proof@example.com,,,TRUE,\n"
    f"long-proof@example.com,yes,{'p' * 600},,\n"
    "good@example.com,yes,newsletter form 2026-05-01,no,\n"
)


def test_csv_consent_columns_claiming_consent_without_proof_are_refused_row_and_field(system):
    client = system.client("write", "gdpr")
    answer = client.post("/imports/customers?apply=true", data=CSV,
                         headers={"Content-Type": "text/csv"})
    assert answer.status_code == 200, answer.text
    rows = {r["line"]: r for r in answer.json()["rows"]}
    expected = {2: "email_marketing_source", 3: "email_marketing_source", 4: "email_marketing",
                5: "sms_marketing_source", 6: "email_marketing_source"}
    for line, field in expected.items():
        assert rows[line]["outcome"] == "invalid", rows[line]
        assert field in rows[line]["errors"], rows[line]
    assert rows[7]["outcome"] == "create"
    for email in ("no-proof@", "blank-proof@", "formula@", "sms-no-proof@", "long-proof@"):
        assert traces(system.services, email) == [], email
    # The one good row: a contact whose consent gdpr records with its proof.
    customer_id = rows[7]["customer_id"]
    history = wait_until(lambda: system.rpc.gdpr.get_consent(STORE, customer_id)["history"],
                         timeout=20, message="the imported consent recorded")
    assert [(e["purpose"], e["source"], e["note"]) for e in history] == [
        ("email_marketing", "import", "newsletter form 2026-05-01")]


def test_a_bulk_consent_change_past_its_bound_or_with_odd_ids_changes_nothing(system):
    client = system.client("gdpr")
    _, customer_id = system.shop_customer(orders=0)
    bodies = {
        "over the bound": {"customer_ids": [customer_id] + [f"c-{i}" for i in range(500)]},
        "an id not text": {"customer_ids": [customer_id, {"$gt": ""}]},
        "an id too long": {"customer_ids": [customer_id, "x" * 5_000]},
        "no ids": {"customer_ids": []},
    }
    for name, ids in bodies.items():
        answer = client.post("/consent/bulk", json={**ids, "purpose": "email_marketing",
                                                    "granted": True, "reason": "mallory"})
        assert answer.status_code == 400, (name, answer.text)
        assert "customer_ids" in str(answer.json().get("errors")), name
    # Past the gateway, the service keeps the same bound before asking anyone anything.
    with pytest.raises(ValidationError):
        system.rpc.gdpr.set_consent_bulk(STORE, [f"c-{i}" for i in range(10_000)],
                                         "email_marketing", True, "mallory", "mallory")
    assert system.rpc.gdpr.get_consent(STORE, customer_id)["history"] == []
