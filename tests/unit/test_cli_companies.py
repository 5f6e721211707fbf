"""`companion companies` and `companion customers company`: a store's companies from the command
line, against stand-in customer_sync and segmentation services in place of the RPC proxy."""
from __future__ import annotations

import io
import json

import pytest

from ops import cli
from ops.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, main
from shared.errors import Conflict, NotFound
from tests.unit.test_console import COMPANY_ID, company_record

STATS = {"members": 2, "orders_count": 3, "total_spent": {"amount": 45000, "currency": "EUR"},
         "last_order_at": "2026-02-01T10:00:00+00:00"}
GROUP = {"slug": "wholesale", "name": "Wholesale", "discount_percent": "12.5",
         "free_shipping_threshold": 50000, "payment_terms_days": 30}


class Recorder:
    """Answers each RPC from its `_<name>` method and records the call."""

    def __init__(self, calls: list) -> None:
        self.calls = calls

    def __getattr__(self, name):
        def call(*args):
            self.calls.append((name, *args))
            return getattr(self, "_" + name)(*args)
        return call


FIELDS = [{"key": "tier", "label": "Tier", "type": "text", "applies_to": "company"},
          {"key": "seats", "label": "Seats", "type": "number", "applies_to": "company"},
          {"key": "vip", "label": "VIP", "type": "boolean", "applies_to": "company"},
          {"key": "since", "label": "Since", "type": "date", "applies_to": "company"},
          {"key": "tea", "label": "Tea", "type": "text", "applies_to": "customer"}]


class CustomerSync(Recorder):
    stored_custom: dict = {}

    def _list_custom_fields(self, store):
        return FIELDS

    def _list_companies(self, store, filters, page):
        return {"items": [company_record(COMPANY_ID, store, domain="acme.example",
                                         group="wholesale")], "next_cursor": None}

    def _get_company(self, store, company_id):
        if company_id != COMPANY_ID:
            raise NotFound(f"no company {company_id}")
        return company_record(COMPANY_ID, store, group="wholesale",
                              address={"city": "Berlin", "country": "DE"},
                              custom_fields=dict(self.stored_custom))

    def _create_company(self, store, data, actor):
        if data.get("domain") == "taken.example":
            raise Conflict("the domain taken.example is another company's",
                           {"fields": {"domain": ["taken"]}})
        return company_record(COMPANY_ID, store, **data)

    def _update_company(self, store, company_id, changes, actor):
        return company_record(company_id, store, **changes)

    def _delete_company(self, store, company_id, actor):
        return {"company_id": company_id, "deleted": True, "members_released": 2}

    def _set_customer_company(self, store, customer_id, company_id, actor):
        if customer_id != "c1":
            raise NotFound(f"no customer {customer_id}", {"fields": {"customer_id": ["x"]}})
        return {"customer_id": customer_id, "company_id": company_id, "changed": True}


class Segmentation(Recorder):
    def _company_stats(self, store, ids):
        return {i: STATS for i in ids}

    def _list_groups(self, store):
        return [GROUP]


class Rpc:
    def __init__(self, calls: list) -> None:
        self.customer_sync, self.segmentation = CustomerSync(calls), Segmentation(calls)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.fixture
def calls(monkeypatch) -> list:
    recorded: list = []
    monkeypatch.setattr(cli, "_rpc", lambda args: Rpc(recorded))
    monkeypatch.setenv("COMPANION_ACTOR", "ops-ann")
    return recorded


def run(capsys, *argv: str):
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_the_list_shows_each_company_with_its_members_stats(calls, capsys):
    code, out, _ = run(capsys, "companies", "list", "--store", "shop", "--q", "acme")
    assert code == EXIT_OK
    header, row = out.splitlines()
    assert header.split() == ["COMPANY_ID", "NAME", "DOMAIN", "MEMBERS", "ORDERS", "SPENT",
                              "LAST_ORDER"]
    assert COMPANY_ID in row and "acme.example" in row and "450.00 EUR" in row
    assert "2026-02-01" in row
    assert calls == [("list_companies", "shop", {"q": "acme"}, {"size": 50}),
                     ("company_stats", "shop", [COMPANY_ID])]
    code, out, _ = run(capsys, "companies", "list", "--store", "shop", "--json")
    assert json.loads(out)[0]["stats"]["members"] == 2
    code, _, err = run(capsys, "companies", "list", "--store", "shop", "--limit", "500")
    assert code == EXIT_USAGE and "limit" in err


def test_show_prints_the_company_its_stats_and_its_groups_terms(calls, capsys):
    code, out, _ = run(capsys, "companies", "show", "--store", "shop", COMPANY_ID)
    assert code == EXIT_OK
    assert "Berlin, DE" in out and "members 2, orders 3, spent 450.00 EUR" in out
    assert "B2B terms of Wholesale: discount 12.5 %" in out and "30 days" in out
    code, _, err = run(capsys, "companies", "show", "--store", "shop", "co_" + "f" * 24)
    assert code == EXIT_FAILED and "no company" in err


def test_create_passes_the_flags_and_refuses_an_unknown_group_first(calls, capsys):
    code, out, _ = run(capsys, "companies", "create", "--store", "shop", "--name", "Beta",
                       "--domain", "beta.example", "--vat-id", "DE999", "--group",
                       "wholesale", "--city", "Köln", "--country", "DE", "--custom", "tier=gold")
    assert code == EXIT_OK and "company co_" in out
    create = [c for c in calls if c[0] == "create_company"][0]
    assert create == ("create_company", "shop", {
        "name": "Beta", "domain": "beta.example", "vat_id": "DE999", "group": "wholesale",
        "address": {"city": "Köln", "country": "DE"}, "custom_fields": {"tier": "gold"}},
        "cli:ops-ann")
    calls.clear()
    code, _, err = run(capsys, "companies", "create", "--store", "shop", "--name", "X",
                       "--group", "nope")
    assert code == EXIT_USAGE and "group: no group nope in store shop" in err
    assert [c[0] for c in calls] == ["list_groups"]
    code, _, err = run(capsys, "companies", "create", "--store", "shop", "--name", "X",
                       "--domain", "taken.example")
    assert code == EXIT_FAILED and "another company's" in err
    code, _, err = run(capsys, "companies", "create", "--store", "shop", "--name", "X",
                       "--custom", "novalue")
    assert code == EXIT_USAGE and "custom: --custom 'novalue' is not KEY=VALUE" in err


def test_update_sends_only_what_is_given_and_clears_on_request(calls, capsys):
    code, _, _ = run(capsys, "companies", "update", "--store", "shop", COMPANY_ID,
                     "--name", "Acme AG", "--clear", "domain", "--clear", "group")
    assert code == EXIT_OK
    update = [c for c in calls if c[0] == "update_company"][0]
    assert update[3] == {"name": "Acme AG", "domain": None, "group": None}
    calls.clear()
    code, _, _ = run(capsys, "companies", "update", "--store", "shop", COMPANY_ID,
                     "--postcode", "10117", "--custom", "tier=gold")
    update = [c for c in calls if c[0] == "update_company"][0]
    assert update[3]["address"] == {"city": "Berlin", "country": "DE", "postcode": "10117"}
    assert update[3]["custom_fields"] == {"tier": "gold"}
    code, _, err = run(capsys, "companies", "update", "--store", "shop", COMPANY_ID)
    assert code == EXIT_USAGE and "at least one" in err
    code, _, err = run(capsys, "companies", "update", "--store", "shop", COMPANY_ID,
                       "--domain", "x.example", "--clear", "domain")
    assert code == EXIT_USAGE and "domain" in err
    code, _, err = run(capsys, "companies", "update", "--store", "shop", "acme", "--name", "x")
    assert code == EXIT_USAGE and "company_id" in err


def test_delete_asks_unless_told_not_to(calls, capsys, monkeypatch):
    stdin = io.StringIO("")
    stdin.isatty = lambda: False
    monkeypatch.setattr("sys.stdin", stdin)
    code, _, err = run(capsys, "companies", "delete", "--store", "shop", COMPANY_ID)
    assert code == EXIT_FAILED and "nothing deleted" in err
    assert not [c for c in calls if c[0] == "delete_company"]
    code, out, _ = run(capsys, "companies", "delete", "--store", "shop", COMPANY_ID, "--yes")
    assert code == EXIT_OK and "2 members belong to none" in out


def test_a_customer_joins_a_company_or_none(calls, capsys):
    code, out, _ = run(capsys, "customers", "company", "--store", "shop", "c1", COMPANY_ID)
    assert code == EXIT_OK and f"belongs to {COMPANY_ID}" in out
    assert calls[-1] == ("set_customer_company", "shop", "c1", COMPANY_ID, "cli:ops-ann")
    code, out, _ = run(capsys, "customers", "company", "--store", "shop", "c1", "none")
    assert code == EXIT_OK and calls[-1][3] is None and "no company" in out
    code, _, err = run(capsys, "customers", "company", "--store", "shop", "c1", "acme")
    assert code == EXIT_USAGE and "company_id" in err
    code, _, err = run(capsys, "customers", "company", "--store", "shop", "c9", COMPANY_ID)
    assert code == EXIT_FAILED and "no customer c9" in err


def test_a_deletion_that_stopped_early_says_the_rest_happens_in_the_background(calls, capsys,
                                                                               monkeypatch):
    monkeypatch.setattr(CustomerSync, "_delete_company", lambda self, store, company_id, actor: {
        "company_id": company_id, "deleted": False, "finishing": True, "members_released": 40})
    code, out, _ = run(capsys, "companies", "delete", "--store", "shop", COMPANY_ID, "--yes")
    assert code == EXIT_OK
    assert f"company {COMPANY_ID} is being deleted; 40 members released so far" in out
    assert "the rest of its members are released in the background" in out
    assert "deleted company" not in out


def _sent(calls: list, name: str) -> dict:
    return [c for c in calls if c[0] == name][-1][-2]


def test_custom_values_are_typed_by_the_stores_company_fields(calls, capsys):
    code, _, err = run(capsys, "companies", "create", "--store", "shop", "--name", "Beta",
                       "--custom", "seats=5", "--custom", "vip=yes", "--custom", "tier=007",
                       "--custom", "since=2026-01-31")
    assert code == EXIT_OK, err
    assert _sent(calls, "create_company")["custom_fields"] == {
        "seats": 5, "vip": True, "tier": "007", "since": "2026-01-31"}
    for given, typed in (("seats=2.5", 2.5), ("seats=-3", -3), ("vip=0", False),
                         ("vip=FALSE", False), ("vip=1", True), ("vip=no", False)):
        code, _, err = run(capsys, "companies", "create", "--store", "shop", "--name", "B",
                           "--custom", given)
        assert code == EXIT_OK, err
        assert _sent(calls, "create_company")["custom_fields"] == {given.split("=")[0]: typed}


@pytest.mark.parametrize("given, named", [
    ("seats=five", "custom_fields.seats: a number field"),
    ("seats=" + "9" * 5000, "custom_fields.seats: a number field"),
    ("vip=maybe", "custom_fields.vip: a yes/no field"),
    ("tea=green", "custom_fields.tea: the store has no company custom field"),
    ("nope=1", "custom_fields.nope: the store has no company custom field")])
def test_a_value_that_is_not_of_its_fields_type_or_no_company_field_is_refused(
        calls, capsys, given, named):
    for action in (("create", "--name", "B"), ("update", COMPANY_ID)):
        calls.clear()
        code, _, err = run(capsys, "companies", action[0], "--store", "shop", *action[1:],
                           "--custom", given)
        assert code == EXIT_USAGE and named in err
        assert not [c for c in calls if c[0] in ("create_company", "update_company")]


def test_update_changes_only_the_flags_keys_on_top_of_the_current_values(calls, capsys,
                                                                        monkeypatch):
    monkeypatch.setattr(CustomerSync, "stored_custom", {"tier": "gold", "vip": True})
    code, _, err = run(capsys, "companies", "update", "--store", "shop", COMPANY_ID,
                       "--custom", "seats=12", "--custom", "vip=no")
    assert code == EXIT_OK, err
    assert _sent(calls, "update_company")["custom_fields"] == {
        "tier": "gold", "vip": False, "seats": 12}
    code, _, err = run(capsys, "companies", "update", "--store", "shop", COMPANY_ID,
                       "--custom", "tier=")
    assert code == EXIT_OK, err
    assert _sent(calls, "update_company")["custom_fields"] == {"vip": True}
    calls.clear()
    code, _, _ = run(capsys, "companies", "update", "--store", "shop", COMPANY_ID,
                     "--name", "Acme AG")
    assert code == EXIT_OK and "custom_fields" not in _sent(calls, "update_company")
    assert not [c for c in calls if c[0] == "list_custom_fields"]


def test_a_stored_value_that_no_longer_fits_is_named_and_nothing_is_sent(calls, capsys,
                                                                        monkeypatch):
    monkeypatch.setattr(CustomerSync, "stored_custom", {"seats": "lots", "gone": "x",
                                                        "tier": "gold"})
    code, _, err = run(capsys, "companies", "update", "--store", "shop", COMPANY_ID,
                       "--custom", "tier=silver")
    assert code == EXIT_USAGE
    assert "custom_fields.seats: the stored value 'lots' no longer fits" in err
    assert "now of type number" in err and "--custom seats=VALUE" in err
    assert not [c for c in calls if c[0] == "update_company"]
    code, _, err = run(capsys, "companies", "update", "--store", "shop", COMPANY_ID,
                       "--custom", "seats=4", "--custom", "tier=silver")
    assert code == EXIT_USAGE and "custom_fields.gone" in err and "no longer a company" in err
    code, _, err = run(capsys, "companies", "update", "--store", "shop", COMPANY_ID,
                       "--custom", "seats=4", "--custom", "gone=", "--custom", "tier=silver")
    assert code == EXIT_OK, err
    assert _sent(calls, "update_company")["custom_fields"] == {"seats": 4, "tier": "silver"}
