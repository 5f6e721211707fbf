"""The console's "Possible duplicates" page, against the gateway's real pipeline with the
stand-in services of test_console."""
from __future__ import annotations

from services.gateway.console.duplicate_views import shared_heading
from tests.unit.test_console import EVIL, CustomerSync, World


def _record(customer_id, **fields):
    return {"customer_id": customer_id, "kind": "guest", "first_name": "", "last_name": "",
            "email": "", "phone": "", "postcode": "", "country": "", "orders_count": 0,
            "date_created": "2026-01-02T03:04:05+00:00", **fields}


GROUPS = [
    {"group_id": "email-1", "match": "email", "matched": ["email", "phone"], "score": 105,
     "size": 2, "customers": [
         _record("c/1", kind="registered", first_name=EVIL, email="kim@example.com",
                 orders_count=3),
         _record("c2", email=EVIL + "@x.io", phone="+49301234567")]},
    {"group_id": "phone-2", "match": "phone", "matched": ["phone"], "score": 80, "size": 30,
     "customers": [_record("c3"), _record("c4")]},
]


def test_groups_are_listed_escaped_with_links_to_each_customer_and_paged(monkeypatch):
    asked = []

    def find_duplicates(self, store, cursor=None, limit=50, match=None):
        asked.append((store, cursor, limit, match))
        return {"store_id": store, "groups": GROUPS, "next_cursor": "bmV4dA"}

    monkeypatch.setattr(CustomerSync, "find_duplicates", find_duplicates, raising=False)
    world = World()
    world.login("wcc_read")
    customers = world.client.get("/console/customers").get_data(as_text=True)
    assert 'href="/console/duplicates" id="duplicates-link"' in customers

    html = world.client.get("/console/duplicates?match=phone").get_data(as_text=True)
    assert "<script>alert" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert 'href="/console/customers/c/1"' in html or 'href="/console/customers/c%2F1"' in html
    assert 'href="/console/customers/c2"' in html
    assert "Same email and phone" in html and "score 105" in html and "Registered" in html
    assert "30 records share this; the first 2 are shown." in html
    assert 'href="/console/duplicates?match=phone&amp;cursor=bmV4dA' in html
    assert asked[-1][1:] == (None, 50, "phone")

    world.client.get("/console/duplicates?match=bogus&cursor=bmV4dA")
    assert asked[-1][1:] == ("bmV4dA", 50, None)  # an unknown filter is dropped, not sent


def test_an_empty_store_says_so(monkeypatch):
    monkeypatch.setattr(CustomerSync, "find_duplicates",
                        lambda self, store, cursor=None, limit=50, match=None:
                        {"store_id": store, "groups": [], "next_cursor": None}, raising=False)
    world = World()
    world.login("wcc_read")
    html = world.client.get("/console/duplicates").get_data(as_text=True)
    assert 'id="no-duplicates"' in html and 'rel="next"' not in html


def test_a_group_heading_says_same_once():
    assert shared_heading(["email"]) == "Same email"
    assert shared_heading(["email", "phone"]) == "Same email and phone"
    assert shared_heading(["phone", "name_postcode"]) == "Same phone, name and postcode"
    assert shared_heading(["email", "phone", "name_postcode"]) == \
        "Same email, phone, name and postcode"
