"""The console's merge pages (a duplicate group merged by hand, the merges, an undo) against
the gateway's real pipeline with the stand-in services of test_console."""
from __future__ import annotations

import re

import pytest

from services.gateway.console.merge_views import default_primary, field_choices, winner
from shared.errors import Conflict, NotFound, ValidationError
from tests.unit.test_console import EVIL, CustomerSync, Segmentation, World

RECORDS = {
    "g1": {"customer_id": "g1", "registered": False, "email": "kim@example.com",
           "first_name": EVIL, "last_name": "Weber", "phone": "+49301234567",
           "billing": {"city": "Berlin", "postcode": "10115", "country": "DE"}},
    "r2": {"customer_id": "r2", "registered": True, "woo_customer_id": 9001,
           "email": "kim.w@example.net", "first_name": "Kim", "last_name": "Weber",
           "phone": "", "billing": {"city": "", "postcode": "", "country": ""}},
}
ORDERS = {"g1": 4, "r2": 1}


def _merge_record(state="merged", unmerge=None):
    record = {
        "merge_id": "m-1", "store_id": "shop", "kind": "manual", "state": state,
        "primary_id": "r2", "merged_ids": ["g1"], "created_at": "2026-03-01T10:00:00+00:00",
        "created_by": f"key {EVIL}", "unmerged_at": None, "unmerged_by": None,
        "shop_accounts": [{"customer_id": "r2", "woo_customer_id": 9001}],
        "field_choices": {"phone": "g1"}, "changed_fields": ["phone"],
        "moved": {"orders": ["501", "502"], "notes": ["n1"], "reminders": [], "timeline": []},
        "snapshots": {cid: {**r, "status": "active"} for cid, r in RECORDS.items()},
        "personal_data_erased": False}
    if unmerge:
        record.update(state="unmerged", unmerged_at="2026-03-02T10:00:00+00:00",
                      unmerged_by="desk", unmerge=unmerge)
    return record


UNMERGE = {"merge_id": "m-1", "primary_id": "r2",
           "restored": [{"customer_id": "g1", "status": "active", "orders_back": ["501"],
                         "orders_since": ["510"], "notes_back": 1, "reminders_back": 0,
                         "timeline_back": 0}],
           "orders_stayed": [{"order_id": "502", "customer_id": "r2",
                              "reason": "moved at the merge, and no longer with the primary"}],
           "fields_back": ["phone"], "fields_kept": []}


@pytest.fixture
def merges(monkeypatch):
    """The stand-in customer_sync merges: what it was asked, and what it answers."""
    state = {"merges": [], "unmerged": [], "refuse": None, "record": _merge_record()}

    def get_customer(self, store, customer_id):
        if customer_id not in RECORDS:
            raise NotFound(f"no customer {customer_id}")
        return {**RECORDS[customer_id], "store_id": store}

    def get_profile(self, store, customer_id):
        return {"customer_id": customer_id, "status": "active", "tags": [], "groups": [],
                "stats": {"orders_count": ORDERS.get(customer_id, 0)}}

    def merge_customers(self, store, primary_id, merged_ids, choices, actor):
        if state["refuse"]:
            raise state["refuse"]
        state["merges"].append((store, primary_id, merged_ids, choices, actor))
        return state["record"]

    def list_merges(self, store, customer_id=None, page=None):
        return {"items": [state["record"]], "next_cursor": "bmV4dA"}

    def get_merge(self, store, merge_id):
        if merge_id != "m-1":
            raise NotFound(f"no merge {merge_id}")
        return state["record"]

    def unmerge_customers(self, store, merge_id, actor):
        if state["record"]["state"] == "unmerged":
            raise Conflict("the merge m-1 was undone already")
        state["unmerged"].append((store, merge_id, actor))
        state["record"] = _merge_record(unmerge=UNMERGE)
        return UNMERGE

    monkeypatch.setattr(CustomerSync, "get_customer", get_customer)
    monkeypatch.setattr(Segmentation, "get_profile", get_profile)
    for fn in (merge_customers, list_merges, get_merge, unmerge_customers):
        monkeypatch.setattr(CustomerSync, fn.__name__, fn, raising=False)
    return state


FORM_URL = "/console/merges/new?customer_id=g1&customer_id=r2"


def _checked(html, name):
    return re.findall(rf'name="{name}"[^>]*value="([^"]*)" checked', html)


def _form(world, **fields):
    return {"csrf_token": world.csrf(FORM_URL), "customer_id": ["g1", "r2"],
            "primary_id": "r2", **fields}


def test_a_duplicate_group_links_to_a_merge_form_with_the_records_side_by_side(merges,
                                                                               monkeypatch):
    groups = [{"group_id": "email-1", "match": "email", "matched": ["email"], "score": 100,
               "size": 2, "customers": [{"customer_id": "g1", "kind": "guest"},
                                        {"customer_id": "r2", "kind": "registered"}]}]
    monkeypatch.setattr(CustomerSync, "find_duplicates",
                        lambda self, store, cursor=None, limit=50, match=None:
                        {"store_id": store, "groups": groups, "next_cursor": None},
                        raising=False)
    world = World()
    world.login("wcc_write")
    listing = world.client.get("/console/duplicates").get_data(as_text=True)
    assert 'href="/console/merges/new?customer_id=g1&amp;customer_id=r2"' in listing

    answer = world.client.get(FORM_URL)
    html = answer.get_data(as_text=True)
    assert answer.status_code == 200
    assert "<script>alert" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "Registered" in html and "Guest" in html and "10115" in html
    # The registered record is the primary even with fewer orders; every field keeps the
    # primary's by default.
    assert _checked(html, "primary_id") == ["r2"]
    for field in ("email", "phone", "billing", "birthday"):
        assert _checked(html, f"take_{field}") == [""], field
    form = re.search(r'<form method="post" action="/console/merges/new".*?</form>', html, re.S)
    assert 'name="csrf_token"' in form.group(0) and 'name="understood"' in form.group(0)
    labelled = set(re.findall(r'<label for="([^"]+)"', html))
    for radio in re.findall(r'<input type="(?:radio|checkbox)"[^>]*id="([^"]+)"', html):
        assert radio in labelled, radio


def test_a_merge_asks_for_the_box_then_posts_the_choices_and_shows_the_merge(merges):
    world = World()
    world.login("wcc_write")
    unticked = world.client.post("/console/merges/new", data=_form(world, take_phone="g1"))
    html = unticked.get_data(as_text=True)
    assert unticked.status_code == 400 and merges["merges"] == []
    assert 'id="e-understood"' in html and "tick the box" in html
    assert _checked(html, "take_phone") == ["g1"]  # the choices survive the refusal

    done = world.client.post("/console/merges/new", data=_form(
        world, take_phone="g1", take_email="", understood="yes"))
    assert done.status_code == 303 and done.headers["Location"] == "/console/merges/m-1"
    [(store, primary, merged, choices, _)] = merges["merges"]
    assert (store, primary, merged, choices) == ("shop", "r2", ["g1"], {"phone": "g1"})

    page = world.client.get("/console/merges/m-1").get_data(as_text=True)
    assert "Merged 1 record into r2." in page
    assert "WooCommerce has no merge" in page and "WooCommerce customer #9001" in page
    assert "Orders: 2 (501, 502)" in page and "Notes: 1" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert" not in page
    assert 'action="/console/merges/m-1/unmerge"' in page


def test_the_apis_refusals_are_shown_on_the_form_naming_the_field(merges):
    world = World()
    world.login("wcc_write")
    merges["refuse"] = Conflict("the record g1 is not active (merged)")
    answer = world.client.post("/console/merges/new", data=_form(world, understood="yes"))
    html = answer.get_data(as_text=True)
    assert answer.status_code == 409 and "Nothing was merged" in html
    assert "g1 is not active" in html and 'id="merge-form"' in html

    merges["refuse"] = ValidationError(
        "field_choices phone must name the primary or a merged record",
        {"fields": {"field_choices": ["phone must name the primary or a merged record"]}})
    answer = world.client.post("/console/merges/new", data=_form(world, understood="yes"))
    html = answer.get_data(as_text=True)
    assert answer.status_code == 400 and 'id="e-field_choices"' in html
    assert "phone must name the primary or a merged record" in html

    # A choice naming a record outside the merge is refused by the API's own check.
    merges["refuse"] = None
    answer = world.client.post("/console/merges/new", data=_form(
        world, understood="yes", take_email="x" * 65))
    assert answer.status_code == 400 and "field_choices" in answer.get_data(as_text=True)
    assert merges["merges"] == []

    answer = world.client.post("/console/merges/new", data=_form(
        world, understood="yes", primary_id="elsewhere"))
    assert answer.status_code == 400 and 'id="e-primary_id"' in answer.get_data(as_text=True)
    assert merges["merges"] == []


def test_a_read_key_sees_the_pages_without_buttons_and_its_posts_change_nothing(merges):
    world = World()
    world.login("wcc_read")
    form = world.client.get(FORM_URL).get_data(as_text=True)
    assert 'id="merge-read-only"' in form and 'id="merge-form"' not in form
    detail = world.client.get("/console/merges/m-1").get_data(as_text=True)
    assert 'id="undo-read-only"' in detail and "/unmerge" not in detail
    token = world.csrf(FORM_URL)
    refused = world.client.post("/console/merges/new", data={
        "csrf_token": token, "customer_id": ["g1", "r2"], "primary_id": "r2",
        "understood": "yes"})
    assert refused.status_code == 403 and "write" in refused.get_data(as_text=True)
    world.client.post("/console/merges/m-1/unmerge", data={"csrf_token": token,
                                                           "understood": "yes"})
    assert merges["merges"] == [] and merges["unmerged"] == []
    assert "lacks the &#39;write&#39; scope" in world.client.get(
        "/console/merges/m-1").get_data(as_text=True)


def test_posts_without_the_csrf_token_change_nothing(merges):
    world = World()
    world.login("wcc_write")
    for url, data in (("/console/merges/new", {"customer_id": ["g1", "r2"],
                                               "primary_id": "r2", "understood": "yes"}),
                      ("/console/merges/m-1/unmerge", {"understood": "yes"})):
        assert world.client.post(url, data=data).status_code == 403, url
        assert world.client.post(url, data={**data, "csrf_token": "x" * 43}).status_code == 403
    assert merges["merges"] == [] and merges["unmerged"] == []


def test_the_merges_page_is_in_the_navigation_pages_and_links_each_merge(merges):
    world = World()
    world.login("wcc_read")
    html = world.client.get("/console/merges").get_data(as_text=True)
    nav = html.split("</nav>")[0]
    assert 'href="/console/merges" aria-current="page"' in nav
    assert 'href="/console/merges/m-1"' in html and "Merged" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>alert" not in html
    assert 'href="/console/merges?cursor=bmV4dA' in html
    assert world.client.get("/console/merges/nope").status_code == 404
    assert world.client.get("/console/merges/a%20b").status_code == 400


def test_undo_asks_for_the_box_then_shows_what_went_where_and_no_second_button(merges):
    world = World()
    world.login("wcc_write")
    token = world.csrf("/console/merges/m-1")
    unticked = world.client.post("/console/merges/m-1/unmerge", data={"csrf_token": token})
    assert unticked.status_code == 303 and merges["unmerged"] == []
    assert "tick the box" in world.client.get("/console/merges/m-1").get_data(as_text=True)

    done = world.client.post("/console/merges/m-1/unmerge",
                             data={"csrf_token": token, "understood": "yes"})
    assert done.status_code == 303 and done.headers["Location"].endswith("/merges/m-1#unmerge")
    assert merges["unmerged"][0][:2] == ("shop", "m-1")
    page = world.client.get("/console/merges/m-1").get_data(as_text=True)
    assert "The merge was undone" in page and 'id="already-undone"' in page
    assert "Orders back: 501" in page and "Its own orders since the merge: 510" in page
    assert "502 (with r2): moved at the merge, and no longer with the primary" in page
    assert "Primary fields back as they were: phone." in page
    assert 'action="/console/merges/m-1/unmerge"' not in page

    again = world.client.post("/console/merges/m-1/unmerge",
                              data={"csrf_token": token, "understood": "yes"})
    assert again.status_code == 303 and len(merges["unmerged"]) == 1
    assert "undone already" in world.client.get("/console/merges/m-1").get_data(as_text=True)


def test_the_merge_pages_pass_the_consoles_page_checks(merges):
    world = World()
    world.login("wcc_write")
    for url in (FORM_URL, "/console/merges", "/console/merges/m-1"):
        answer = world.client.get(url)
        html = answer.get_data(as_text=True)
        assert answer.status_code == 200, url
        assert "style=" not in html and "<script>alert" not in html, url
        assert answer.headers["X-Frame-Options"] == "DENY"
        for form in re.findall(r'<form method="post".*?</form>', html, re.S):
            assert 'name="csrf_token"' in form, (url, form[:120])


def test_the_defaults_are_the_registered_record_with_most_orders_and_the_primarys_values():
    records = [{"customer_id": "a", "registered": False, "orders_count": 9, "phone": ""},
               {"customer_id": "b", "registered": True, "orders_count": 1, "phone": ""},
               {"customer_id": "c", "registered": True, "orders_count": 3, "phone": "+49"}]
    assert default_primary(records) == "c"
    assert default_primary(records[:2]) == "b"
    assert default_primary([records[0], {**records[0], "customer_id": "z"}]) == "a"
    assert winner("phone", records, "c") == "c"
    assert winner("phone", records, "b") == "c"  # the primary's is empty: the first with one
    assert winner("phone", records, "b", chosen="a") == "a"
    assert winner("email", records, "b") == "b"  # nobody has one: the primary's (empty)
    assert winner("billing", [{"customer_id": "a", "billing": {"city": ""}},
                              {"customer_id": "b", "billing": {"city": "Berlin"}}], "a") == "b"
    assert field_choices({"take_phone": "a", "take_email": "", "take_bogus": "b"}) == \
        {"phone": "a"}


def test_custom_fields_either_record_holds_are_offered_and_the_choice_is_posted(merges,
                                                                               monkeypatch):
    monkeypatch.setitem(RECORDS, "g1", {**RECORDS["g1"],
                                        "custom_fields": {"tier": EVIL, "vip": True}})
    monkeypatch.setitem(RECORDS, "r2", {**RECORDS["r2"], "custom_fields": {"tier": "gold"}})
    world = World()
    world.login("wcc_write")
    html = world.client.get(FORM_URL).get_data(as_text=True)
    assert 'id="take-cf-tier"' in html and 'id="take-cf-vip"' in html
    assert 'id="take-cf-unset"' not in html  # nobody holds a value of it
    assert "<script>alert" not in html
    vip = html[html.index('id="take-cf-vip"'):]
    assert "The primary’s (it has none: yes)" in vip[:vip.index("</fieldset>")]
    assert _checked(html, "take_custom_fields.tier") == [""]
    world.client.post("/console/merges/new", data=_form(
        world, understood="yes", **{"take_custom_fields.tier": "g1",
                                    "take_custom_fields.vip": "",
                                    "take_custom_fields.bogus": "r2"}))
    [(_, _, _, choices, _)] = merges["merges"]
    assert choices == {"custom_fields.tier": "g1", "custom_fields.bogus": "r2"}
