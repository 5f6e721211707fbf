"""The gateway over HTTP with every service running on the real broker: keys and scopes, rate
limits, problem details, request ids, and every answer checked against the OpenAPI document."""
from __future__ import annotations

import csv
import io
import json
import re
from datetime import datetime, timedelta, timezone

import requests

from tests import payloads
from tests.gateway_client import GatewayClient
from tests.gateway_system import SECRET, STORE, shop, system  # noqa: F401 - fixtures
from tests.support import wait_until


def _recent(days_ago: int) -> str:
    return (datetime.now(timezone.utc) - timedelta(days=days_ago)).strftime("%Y-%m-%dT%H:%M:%S")


def a_customer(system, woo_id: int = 42, email: str = "ada@acme.example") -> str:
    system.webhook("customer.created", payloads.customer(woo_id=woo_id, email=email))
    system.webhook("order.created", payloads.order(900 + woo_id, customer_id=woo_id,
                                                   date_created_gmt=_recent(3),
                                                   modified=_recent(2)))

    def held():
        try:
            customer_id = system.rpc.customer_sync.find_customer(STORE, email)["customer_id"]
            profile = system.rpc.segmentation.get_profile(STORE, customer_id)
            system.rpc.loyalty.get_account(STORE, customer_id)
            return customer_id if (profile["stats"] or {}).get("orders_count") == 1 else None
        except Exception:
            return None

    return wait_until(held, timeout=20, message="the customer in every service")


def test_no_key_or_a_bad_one_is_refused_with_problem_details(system):
    for client in (system.anonymous(), system.anonymous().with_key("wcc_nope"),
                   system.anonymous().with_key("wcc_0123456789abcdef_" + "x" * 43)):
        r = client.get("/customers/1")
        assert r.status_code == 401
        assert r.headers["Content-Type"].startswith("application/problem+json")
        problem = r.json()
        assert problem["status"] == 401 and problem["instance"] == "/api/v1/customers/1"
        assert problem["request_id"] == r.headers["X-Request-Id"]
        assert "WWW-Authenticate" in r.headers


def test_a_request_id_given_is_echoed_and_one_is_made_otherwise(system):
    client = system.client("read")
    given = client.get("/customers/nobody", headers={"X-Request-Id": "trace-abc.123"})
    assert given.headers["X-Request-Id"] == "trace-abc.123"
    assert given.status_code == 404 and given.json()["request_id"] == "trace-abc.123"
    made = client.get("/customers/nobody", headers={"X-Request-Id": "bad id with spaces"})
    assert made.headers["X-Request-Id"] != "bad id with spaces"
    assert len(made.headers["X-Request-Id"]) == 32


def test_a_customer_page_composes_every_service(system):
    customer_id = a_customer(system)
    r = system.client("read").get(f"/customers/{customer_id}")
    assert r.status_code == 200, r.text
    page = r.json()
    assert page["customer"]["email"] == "ada@acme.example"
    assert page["stats"]["orders_count"] == 1
    assert page["loyalty"]["balance"] > 0
    assert [o["order_id"] for o in page["recent_orders"]] == ["942"]
    assert page["unavailable"] == [] or set(page["unavailable"]) <= {"notes", "reminders",
                                                                      "timeline"}


def test_scopes_are_enforced(system):
    customer_id = a_customer(system)
    reader = system.client("read")
    refused = reader.patch(f"/customers/{customer_id}", json={"account_status": "inactive"})
    assert refused.status_code == 403
    assert refused.json()["required_scope"] == "write"
    assert reader.get("/keys").status_code == 403
    writer = system.client("write")
    assert writer.get(f"/customers/{customer_id}").status_code == 200  # write includes read
    assert writer.get("/keys").status_code == 403
    # GDPR data is for gdpr keys only: neither reading nor writing keys see or touch it
    for client in (reader, writer):
        assert client.get("/gdpr/requests").status_code == 403
        assert client.get(f"/customers/{customer_id}/consent").status_code == 403
        assert client.post("/gdpr/requests", json={"type": "access",
                                                   "email": "ada@acme.example"}
                           ).status_code == 403
    officer = system.client("gdpr")
    submitted = officer.post("/gdpr/requests", json={"type": "access", "email": "ada@acme.example"})
    assert submitted.status_code == 201, submitted.text
    assert officer.get(f"/gdpr/requests/{submitted.json()['request_id']}").status_code == 200
    assert officer.get(f"/customers/{customer_id}").status_code == 403  # gdpr alone is not read
    assert reader.get(f"/gdpr/requests/{submitted.json()['request_id']}").status_code == 403


def test_keys_are_created_listed_and_revoked_by_an_admin(system):
    admin = system.client("admin")
    made = admin.post("/keys", json={"name": "crm sync", "scopes": ["read"]})
    assert made.status_code == 201, made.text
    new_key = made.json()
    assert new_key["api_key"].startswith("wcc_") and new_key["scopes"] == ["read"]
    listed = admin.get("/keys").json()
    assert new_key["key_id"] in [k["key_id"] for k in listed]
    assert all("api_key" not in k and "secret_sha256" not in k for k in listed)
    fresh = GatewayClient(system.gateway_url, new_key["api_key"], system.checker)
    assert fresh.get("/customers/nobody").status_code == 404  # authenticated, then not found
    assert admin.delete(f"/keys/{new_key['key_id']}").status_code == 200
    assert fresh.get("/customers/nobody").status_code == 401  # cache is 0 s in this test
    bad = admin.post("/keys", json={"name": "x", "scopes": ["root"]})
    assert bad.status_code == 400 and "scopes/0" in bad.json()["errors"]


def test_a_key_over_its_rate_limit_is_told_when_to_come_back(system):
    client = system.client("read", rate_limit_per_minute=3)
    answers = [client.get("/customers/nobody") for _ in range(4)]
    assert [a.status_code for a in answers] == [404, 404, 404, 429]
    assert answers[0].headers["RateLimit-Limit"] == "3"
    assert int(answers[3].headers["Retry-After"]) >= 1
    assert answers[3].json()["status"] == 429
    other = system.client("read")  # another key has its own allowance
    assert other.get("/customers/nobody").status_code == 404


def test_bad_input_is_a_400_naming_the_field(system):
    client = system.client("write")
    r = client.get("/customers?limit=0")
    assert r.status_code == 400 and "limit" in r.json()["errors"]
    r = client.get("/customers?registered_after=yesterday")
    assert r.status_code == 400 and "registered_after" in r.json()["errors"]
    r = client.patch("/customers/1", data="{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    r = client.patch("/customers/1", json={"favourite_colour": "blue"})
    assert r.status_code == 400
    r = client.patch("/customers/1", data="first_name=x",
                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415
    assert client.get("/no/such/thing").status_code == 404
    r = client.request("PUT", "/customers/1")
    assert r.status_code == 405 and "GET" in r.headers["Allow"]


def test_a_service_that_is_not_running_is_a_503_not_a_hang(system, services):
    customer_id = a_customer(system)
    loyalty = next(c for c in services.containers if c.service_name == "loyalty")
    services.kill(loyalty)
    client = system.client("read")
    page = client.get(f"/customers/{customer_id}")
    assert page.status_code == 200  # the page is composed without the loyalty card
    assert page.json()["loyalty"] is None
    assert "loyalty" in page.json()["unavailable"]


def test_the_openapi_document_is_served_without_a_key(system):
    r = system.anonymous().get("/openapi.json")
    assert r.status_code == 200
    document = r.json()
    assert document["openapi"].startswith("3.")
    assert "/api/v1/customers/{customer_id}" in document["paths"]
    assert document["paths"]["/api/v1/keys"]["post"]["x-required-scope"] == "admin"


def test_an_operator_makes_the_first_admin_key_with_the_cli(system, capsys):
    from ops.cli import main

    amqp = ["--amqp-uri", system.services.amqp_uri, "--json"]
    capsys.readouterr()
    assert main(amqp + ["keys", "create", "--store", STORE, "--name", "ops",
                        "--scopes", "admin"]) == 0
    key = json.loads(capsys.readouterr().out)
    admin = GatewayClient(system.gateway_url, key["api_key"], system.checker)
    assert admin.get("/keys").status_code == 200
    assert main(amqp + ["keys", "list", "--store", STORE]) == 0
    assert key["key_id"] in [k["key_id"] for k in json.loads(capsys.readouterr().out)]
    assert main(amqp + ["keys", "revoke", "--store", STORE, "--id", key["key_id"]]) == 0
    assert admin.get("/keys").status_code == 401
    assert main(amqp + ["keys", "create", "--store", STORE, "--name", "x",
                        "--scopes", "root"]) == 2  # a refused field: a usage error
    assert capsys.readouterr().err == ("error: scopes: unknown scope(s): root (choose from "
                                       "read, write, gdpr, admin)\n")


# -- the list, its filters and sorts, and export, against a seeded store --------------------
PEOPLE = [  # woo id, first, last, city, country, registered (days ago), order totals
    (101, "Ada", "Lovelace", "London", "GB", 400, ["120.00", "80.00"]),
    (102, "Grace", "Hopper", "New York", "US", 300, ["15.50"]),
    (103, "Alan", "Turing", "Manchester", "GB", 200, []),
    (104, "Edsger", "Dijkstra", "Austin", "US", 100, ["999.99", "10.00", "5.00"]),
    (105, "Barbara", "Liskov", "Boston", "US", 50, ["42.00"]),
]


def _days_ago(days: int) -> str:
    return (datetime.now(timezone.utc) - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%S")


def seeded_store(system) -> dict[str, str]:
    """Five customers through signed webhooks, in every service; their ids by last name."""
    for woo_id, first, last, city, country, registered, totals in PEOPLE:
        email = f"{first.lower()}@example.org"
        billing = payloads.address(email, first_name=first, last_name=last, city=city,
                                   country=country)
        system.webhook("customer.created", payloads.customer(
            woo_id=woo_id, email=email, first_name=first, last_name=last,
            date_created=_days_ago(registered), date_created_gmt=_days_ago(registered),
            modified=_days_ago(registered), billing=billing))
        for n, total in enumerate(totals):
            system.webhook("order.created", payloads.order(
                woo_id * 10 + n, customer_id=woo_id, email=email, total=total, billing=billing,
                date_created_gmt=_days_ago(registered - 10 - n), modified=_days_ago(5)))
    ids: dict[str, str] = {}

    def listed():
        answer = system.rpc.segmentation.search_customers(STORE, {}, None, {"size": 50})
        rows = answer["items"]
        orders = {r["last_name"]: (r["stats"] or {}).get("orders_count", 0) for r in rows}
        expected = {p[2]: len(p[6]) for p in PEOPLE}
        if orders == expected:
            ids.update({r["last_name"]: r["customer_id"] for r in rows})
            return True
        return False

    wait_until(listed, timeout=30, message="all five customers listed with their orders")
    return ids


def _names(response) -> list[str]:
    assert response.status_code == 200, response.text
    return [row["last_name"] for row in response.json()["items"]]


def test_the_list_filters_and_sorts_a_seeded_store(system):
    ids = seeded_store(system)
    client = system.client("read")
    assert _names(client.get("/customers?sort=name")) == [
        "Dijkstra", "Hopper", "Liskov", "Lovelace", "Turing"]
    assert _names(client.get("/customers?sort=-total_spent")) == [
        "Dijkstra", "Lovelace", "Liskov", "Hopper", "Turing"]
    assert _names(client.get("/customers?sort=-registered")) == [
        "Liskov", "Dijkstra", "Turing", "Hopper", "Lovelace"]
    assert _names(client.get("/customers?sort=-orders"))[:2] == ["Dijkstra", "Lovelace"]
    assert _names(client.get("/customers?q=GRACE")) == ["Hopper"]
    assert _names(client.get("/customers?q=example.org&country=GB&sort=name")) == [
        "Lovelace", "Turing"]
    assert _names(client.get("/customers?city=boston")) == ["Liskov"]
    assert _names(client.get("/customers?total_spent_min=10000&sort=name")) == [
        "Dijkstra", "Lovelace"]
    assert _names(client.get("/customers?total_spent_max=5000&orders_min=1&sort=name")) == [
        "Hopper", "Liskov"]
    assert _names(client.get("/customers?orders_min=3")) == ["Dijkstra"]
    after = (datetime.now(timezone.utc) - timedelta(days=250)).isoformat()
    assert _names(client.get("/customers", params={"registered_after": after,
                                                     "sort": "registered"})) == [
        "Turing", "Dijkstra", "Liskov"]
    # paging: two at a time, every customer once, with a Link to the next page
    seen, path = [], "/customers?sort=name&limit=2"
    while True:
        page = client.get(path)
        seen += _names(page)
        if not page.json()["next_cursor"]:
            break
        assert page.json()["total"] == 5 and 'rel="next"' in page.headers["Link"]
        path = "/customers?sort=name&limit=2&cursor=" + page.json()["next_cursor"]
    assert seen == ["Dijkstra", "Hopper", "Liskov", "Lovelace", "Turing"]
    # a cursor made for one sort is refused for another
    cursor = client.get("/customers?sort=name&limit=2").json()["next_cursor"]
    refused = client.get(f"/customers?sort=-total_spent&limit=2&cursor={cursor}")
    assert refused.status_code == 400
    # tags and status filters, set through the API
    writer = system.client("write")
    assert writer.post(f"/customers/{ids['Hopper']}/tags", json={"tags": ["wholesale"]}
                       ).status_code == 200
    assert writer.post(f"/customers/{ids['Turing']}/tags", json={"tags": ["wholesale", "vip-x"]}
                       ).status_code == 200
    wait_until(lambda: len(client.get("/customers?tag=wholesale").json()["items"]) == 2,
               message="the tags in the list")
    assert _names(client.get("/customers?tag=wholesale&tag=vip-x")) == ["Turing"]
    tags = {t["tag"]: t["customers"] for t in client.get("/tags").json()}
    assert tags["wholesale"] == 2 and tags["vip-x"] == 1


def test_export_streams_csv_and_json_that_match_the_list(system, monkeypatch):
    import csv
    import io

    from services.gateway.handlers import transfer

    # Two rows a page, so the later pages are read while the answer streams, after the
    # request's worker has returned.
    monkeypatch.setattr(transfer, "_EXPORT_PAGE", 2)
    seeded_store(system)
    client = system.client("read")
    listed = client.get("/customers?sort=name&country=US").json()["items"]
    as_json = client.get("/exports/customers?format=json&sort=name&country=US")
    assert as_json.status_code == 200 and as_json.headers["Content-Type"].startswith(
        "application/json")
    assert as_json.json() == listed
    as_csv = client.get("/exports/customers?sort=name&country=US")
    assert as_csv.headers["Content-Type"].startswith("text/csv")
    assert "attachment" in as_csv.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert [r["last_name"] for r in rows] == ["Dijkstra", "Hopper", "Liskov"]
    dijkstra = rows[0]
    assert dijkstra["total_spent"] == "101499" and dijkstra["currency"] == "EUR"
    assert dijkstra["orders_count"] == "3" and dijkstra["email"] == "edsger@example.org"
    bad = client.get("/exports/customers?format=xml")
    assert bad.status_code == 400


# -- notes, reminders, timeline, edits, bulk actions and import ------------------------------
def test_notes_reminders_timeline_and_an_edit_written_back_to_the_shop(system):
    woo, customer_id = system.shop_customer()
    writer, reader = system.client("write"), system.client("read")
    note = writer.post(f"/customers/{customer_id}/notes",
                       json={"category": "phone-call", "text": "Asked about wholesale prices"})
    assert note.status_code == 201, note.text
    assert writer.post(f"/customers/{customer_id}/notes",
                       json={"category": "gossip", "text": "x"}).status_code == 400
    note_id = note.json()["note_id"]
    assert writer.patch(f"/notes/{note_id}", json={"category": "follow-up"}).json()[
        "category"] == "follow-up"
    assert [n["note_id"] for n in reader.get(
        f"/customers/{customer_id}/notes?category=follow-up").json()] == [note_id]
    assert reader.post(f"/customers/{customer_id}/notes",
                       json={"category": "general", "text": "x"}).status_code == 403
    due = (datetime.now(timezone.utc) + timedelta(days=2)).isoformat()
    reminder = writer.post(f"/customers/{customer_id}/reminders",
                           json={"due_at": due, "text": "Call back with prices"})
    assert reminder.status_code == 201, reminder.text
    assert [r["reminder_id"] for r in reader.get("/reminders?status=open").json()] == [
        reminder.json()["reminder_id"]]
    done = writer.post(f"/reminders/{reminder.json()['reminder_id']}/complete")
    assert done.status_code == 200 and done.json()["status"] == "done"
    assert reader.get("/reminders?status=open").json() == []

    edited = writer.patch(f"/customers/{customer_id}",
                          json={"first_name": "Augusta", "account_status": "inactive"})
    assert edited.status_code == 200, edited.text
    assert edited.json()["first_name"] == "Augusta"
    assert system.shop.customers[woo["id"]]["first_name"] == "Augusta"  # written back
    wait_until(lambda: [r["customer_id"] for r in reader.get(
        "/customers?status=inactive").json()["items"]] == [customer_id],
        message="the inactive customer in the list")
    page = reader.get(f"/customers/{customer_id}").json()
    assert page["unavailable"] == []
    assert [n["note_id"] for n in page["notes"]] == [note_id]
    kinds = {e["kind"] for e in reader.get(f"/customers/{customer_id}/timeline").json()["items"]}
    assert kinds, "the timeline records what happened"
    assert writer.delete(f"/notes/{note_id}").status_code == 200


def test_a_customers_status_shows_in_the_api_the_console_and_the_export(system):
    (_, kept), (_, benched) = system.shop_customer(), system.shop_customer()
    writer, reader = system.client("write"), system.client("read")
    answer = writer.post("/customers/bulk", json={"action": "set_status", "status": "inactive",
                                                  "customer_ids": [benched]})
    assert answer.status_code == 200, answer.text
    customer = reader.get(f"/customers/{benched}").json()["customer"]
    assert (customer["account_status"], customer["inactive_reason"]) == ("inactive", "staff")
    assert reader.get(f"/customers/{kept}").json()["customer"]["account_status"] == "active"

    def exported() -> dict:
        rows = csv.DictReader(io.StringIO(reader.get("/exports/customers").text))
        return {r["customer_id"]: r["account_status"] for r in rows}

    wait_until(lambda: exported() == {kept: "active", benched: "inactive"},
               message="the status in the export")
    console = requests.Session()
    login = console.get(system.gateway_url + "/console/login", timeout=10)
    token = re.search(r'name="csrf_token" value="([^"]+)"', login.text).group(1)
    console.post(system.gateway_url + "/console/login", timeout=10,
                 data={"api_key": reader.key, "csrf_token": token})
    page = console.get(f"{system.gateway_url}/console/customers/{benched}", timeout=10)
    assert re.search(r'id="account-status">inactive<', page.text), page.text[:2000]


def test_bulk_actions_report_each_customers_outcome(system):
    (_, first), (_, second) = system.shop_customer(), system.shop_customer()
    writer = system.client("write")
    ids = [first, second, "no-such-customer"]
    status = writer.post("/customers/bulk", json={"action": "set_status", "customer_ids": ids,
                                                  "status": "inactive"})
    assert status.status_code == 200, status.text
    outcomes = {r["customer_id"]: r["outcome"] for r in status.json()["results"]}
    assert outcomes == {first: "changed", second: "changed", "no-such-customer": "not_found"}
    tagged = writer.post("/customers/bulk", json={"action": "add_tags",
                                                  "customer_ids": [first, second],
                                                  "tags": ["autumn-promo"]}).json()
    assert {r["outcome"] for r in tagged["results"]} == {"tagged"}
    assert writer.put("/groups/trade", json={"name": "Trade"}).status_code == 200
    grouped = writer.post("/customers/bulk", json={"action": "add_to_groups",
                                                   "customer_ids": [first],
                                                   "groups": ["trade"]}).json()
    assert grouped["results"][0]["outcome"] == "changed"
    exported = writer.post("/customers/bulk", json={"action": "export",
                                                    "customer_ids": [first, "nobody"]}).json()
    assert exported["summary"] == {"exported": 1, "not_found": 1}
    assert exported["customers"][0]["customer_id"] == first
    missing = writer.post("/customers/bulk", json={"action": "add_tags", "customer_ids": [first]})
    assert missing.status_code == 400 and "tags" in missing.json()["errors"]
    deleted = writer.post("/customers/bulk", json={"action": "delete", "customer_ids": [second],
                                                   "orders": "anonymise"})
    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["results"][0]["outcome"] == "deleted"
    reader = system.client("read")
    wait_until(lambda: [r["customer_id"] for r in reader.get("/customers").json()["items"]]
               == [first], message="the deleted customer gone from the list")


def test_csv_import_previews_reports_bad_rows_then_applies_once(system):
    _, existing = system.shop_customer(orders=0)
    known_email = system.rpc.customer_sync.get_customer(STORE, existing)["email"]
    csv_text = ("Email,First Name,Last Name,Billing Country,Loyalty Level\r\n"
                "new.one@example.org,New,One,DE,gold\r\n"
                "not-an-email,Bad,Row,DE,\r\n"
                "new.one@example.org,Twice,Inside,DE,\r\n"
                f"{known_email},Already,Here,GB,\r\n"
                "new.two@example.org,New,Two,ZZZ,\r\n"
                "new.three@example.org,New,Three,FR,\r\n")
    writer = system.client("write")
    headers = {"Content-Type": "text/csv"}
    preview = writer.post("/imports/customers", data=csv_text.encode(), headers=headers)
    assert preview.status_code == 200, preview.text
    body = preview.json()
    assert body["applied"] is False and body["ignored_columns"] == ["loyalty_level"]
    by_line = {r["line"]: r["outcome"] for r in body["rows"]}
    assert by_line == {2: "create", 3: "invalid", 4: "duplicate_in_file", 5: "exists",
                       6: "invalid", 7: "create"}
    assert system.rpc.customer_sync.list_customers(STORE, {"name": "new."})["items"] == []
    applied = writer.post("/imports/customers?apply=true", data=csv_text.encode(),
                          headers=headers)
    assert applied.status_code == 200 and applied.json()["applied"] is True
    again = writer.post("/imports/customers?apply=true", data=csv_text.encode(), headers=headers)
    assert "create" not in {r["outcome"] for r in again.json()["rows"]}
    reader = system.client("read")
    wait_until(lambda: sorted(r["email"] for r in reader.get("/customers?q=new.").json()["items"])
               == ["new.one@example.org", "new.three@example.org"],
               message="the imported contacts listed")
    assert writer.post("/imports/customers", data=b"name\r\nx\r\n",
                       headers=headers).status_code == 400
    assert writer.post("/imports/customers", data=b"\xff\xfe", headers=headers).status_code == 400
    assert system.client("read").post("/imports/customers", data=csv_text.encode(),
                                      headers=headers).status_code == 403


def test_an_import_over_http_keeps_the_shipping_address(system):
    csv_text = ("email,first_name,billing_city,shipping_address_1,shipping_city,"
                "shipping_postcode,shipping_country\r\n"
                "shipper@example.org,Grace,Arlington,1 Dock Road,Norfolk,23510,us\r\n")
    answer = system.client("write").post("/imports/customers?apply=true", data=csv_text.encode(),
                                         headers={"Content-Type": "text/csv"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["ignored_columns"] == []
    customer_id = system.rpc.customer_sync.find_customer(STORE, "shipper@example.org")[
        "customer_id"]
    customer = system.client("read").get(f"/customers/{customer_id}").json()["customer"]
    assert customer["billing"]["city"] == "Arlington"
    assert {k: customer["shipping"][k] for k in ("address_1", "city", "postcode", "country")} == {
        "address_1": "1 Dock Road", "city": "Norfolk", "postcode": "23510", "country": "US"}


def test_an_update_import_changes_held_customers_at_the_shop_and_in_the_list(system):
    woo, customer_id = system.shop_customer(orders=0)
    csv_text = ("email,last_name,shipping_city\r\n"
                f"{woo['email'].upper()},Updated,Leith\r\n"
                "nobody.here@example.org,Never,\r\n")
    writer, headers = system.client("write"), {"Content-Type": "text/csv"}
    preview = writer.post("/imports/customers?mode=update", data=csv_text.encode(),
                          headers=headers)
    assert preview.status_code == 200, preview.text
    assert [r["outcome"] for r in preview.json()["rows"]] == ["update", "invalid"]
    assert "email" in preview.json()["rows"][1]["errors"]
    applied = writer.post("/imports/customers?mode=update&apply=true", data=csv_text.encode(),
                          headers=headers).json()
    assert applied["summary"]["updated"] == 1 and applied["summary"]["created"] == 0
    assert system.shop.customers[woo["id"]]["last_name"] == "Updated"
    customer = system.client("read").get(f"/customers/{customer_id}").json()["customer"]
    assert customer["last_name"] == "Updated" and customer["shipping"]["city"] == "Leith"
    wait_until(lambda: [r["last_name"] for r in system.client("read").get(
        f"/customers?q={woo['email']}").json()["items"]] == ["Updated"],
        message="the list follows the update")
    again = writer.post("/imports/customers?mode=update&apply=true", data=csv_text.encode(),
                        headers=headers).json()
    assert again["rows"][0]["outcome"] == "unchanged"
    assert writer.post("/imports/customers?mode=merge", data=csv_text.encode(),
                       headers=headers).status_code == 400


def test_an_import_tags_and_groups_the_customers_through_segmentation(system, events):
    events.listen("segmentation")
    writer, reader = system.client("write"), system.client("read")
    assert writer.put("/groups/trade", json={"name": "Trade"}).status_code == 200
    woo, held = system.shop_customer(orders=0)
    csv_text = ("email,first_name,tags,groups\r\n"
                "tagged.new@example.org,Tess,\"VIP, gift\",trade\r\n"
                f"{woo['email']},,wholesale,\r\n"
                "no.group@example.org,Nora,gift,no-such-group\r\n"
                "bad.tag@example.org,Bad,Not A Slug,\r\n")
    headers = {"Content-Type": "text/csv"}
    preview = writer.post("/imports/customers?mode=upsert", data=csv_text.encode(),
                          headers=headers).json()
    assert [r["outcome"] for r in preview["rows"]] == ["create", "unchanged", "invalid",
                                                      "invalid"]
    assert "groups" in preview["rows"][2]["errors"] and "tags" in preview["rows"][3]["errors"]
    answer = writer.post("/imports/customers?mode=upsert&apply=true", data=csv_text.encode(),
                         headers=headers)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["summary"]["created"] == 1 and body["summary"]["labelled"] == 2
    created = body["rows"][0]["customer_id"]
    page = reader.get(f"/customers/{created}").json()
    assert sorted(t["tag"] for t in page["tags"]) == ["gift", "vip"]
    assert [g["group"] for g in page["groups"]] == ["trade"]
    assert [t["tag"] for t in reader.get(f"/customers/{held}").json()["tags"]] == ["wholesale"]
    for email in ("no.group@example.org", "bad.tag@example.org"):  # refused: nothing made
        assert reader.get(f"/customers?q={email}").json()["items"] == []
    got = events.wait_for(lambda seen: {(e["data"]["customer_id"], e["data"].get("tag"))
                                        for e in seen if e["event_type"] == "customer.tagged"}
                          >= {(created, "vip"), (created, "gift"), (held, "wholesale")},
                          timeout=20)
    assert any(e["event_type"] == "customer.group_joined" and e["data"]["customer_id"] == created
               for e in got)


def test_an_exported_file_imports_into_another_store_as_it_was(system):
    """The export round trip: CSV out of one store, into a new one, the same people listed."""
    seeded_store(system)
    source = system.client("read")
    exported = source.get("/exports/customers?sort=name")
    assert exported.status_code == 200
    system.rpc.customer_sync.register_store({
        "store_id": "gw-copy", "shop_url": system.shop.base_url, "webhook_secret": SECRET,
        "consumer_key": system.shop.consumer_key, "consumer_secret": system.shop.consumer_secret})
    key = system.rpc.customer_sync.create_api_key("gw-copy", "copy", ["write"], "test")
    target = GatewayClient(system.gateway_url, key["api_key"], system.checker)
    answer = target.post("/imports/customers?apply=true", data=exported.content,
                         headers={"Content-Type": "text/csv"})
    assert answer.status_code == 200, answer.text
    assert {r["outcome"] for r in answer.json()["rows"]} == {"create"}
    assert "customer_id" in answer.json()["ignored_columns"]

    def people(client):
        rows = client.get("/customers?sort=name").json()["items"]
        return [(r["first_name"], r["last_name"], r["email"], r["city"], r["country"])
                for r in rows]

    wait_until(lambda: len(people(target)) == len(PEOPLE), message="the copies listed")
    assert people(target) == people(source)
    assert source.get("/customers").json()["total"] == len(PEOPLE)  # the source is untouched
