"""The console's custom fields (the store's page to define, change and delete them, and the
customer page's form for one customer's values) against the gateway's real pipeline with the
stand-in services of test_console."""
from __future__ import annotations

import re

import pytest

from services.gateway.console.field_views import definition_body, definition_form, value_of
from shared.errors import Conflict, NotFound, ValidationError
from tests.unit.test_console import EVIL, CustomerSync, World

DEFINITIONS = [
    {"key": "tier", "label": f"Tier {EVIL}", "type": "choice", "options": ["gold", EVIL],
     "required": True, "min": None, "max": None, "max_length": None},
    {"key": "visits", "label": "Visits", "type": "number", "options": None, "required": False,
     "min": 0, "max": 100, "max_length": None},
    {"key": "since", "label": "First visit", "type": "date", "options": None,
     "required": False, "min": None, "max": None, "max_length": None},
    {"key": "vip", "label": "VIP", "type": "boolean", "options": None, "required": False,
     "min": None, "max": None, "max_length": None},
    {"key": "notes", "label": "Notes", "type": "text", "options": None, "required": False,
     "min": None, "max": None, "max_length": 40},
]
VALUES = {"tier": EVIL, "visits": 3, "since": "2026-01-02", "vip": False, "notes": EVIL}


@pytest.fixture
def fields(monkeypatch):
    """The stand-in customer_sync's custom fields: what it was asked, and what it answers."""
    state = {"created": [], "updated": [], "deleted": [], "values": [], "refuse": None}

    def get_customer(self, store, customer_id):
        if customer_id != "c1":
            raise NotFound(f"no customer {customer_id}")
        return {"customer_id": "c1", "store_id": store, "email": "ada@example.com",
                "first_name": "Ada", "last_name": "Lovelace", "registered": True,
                "billing": {}, "custom_fields": dict(VALUES)}

    def list_custom_fields(self, store):
        return [dict(d) for d in DEFINITIONS]

    def create_custom_field(self, store, body, actor):
        if state["refuse"]:
            raise state["refuse"]
        state["created"].append(body)
        return {**body, "created_at": None, "updated_at": None}

    def update_custom_field(self, store, key, body, actor):
        if state["refuse"]:
            raise state["refuse"]
        state["updated"].append((key, body))
        return {**body, "key": key}

    def delete_custom_field(self, store, key, actor):
        if key not in {d["key"] for d in DEFINITIONS}:
            raise NotFound(f"no custom field {key}")
        state["deleted"].append(key)
        return {"key": key, "deleted": True, "values_removed": 7}

    def set_custom_values(self, store, customer_id, body, actor):
        if state["refuse"]:
            raise state["refuse"]
        state["values"].append((customer_id, body))
        return {"customer_id": customer_id, "custom_fields": body, "changed": True}

    for fn in (get_customer, list_custom_fields, create_custom_field, update_custom_field,
               delete_custom_field, set_custom_values):
        monkeypatch.setattr(CustomerSync, fn.__name__, fn, raising=False)
    return state


# -- the pure rules ----------------------------------------------------------------------------
def test_a_definition_form_sends_its_types_limits_only():
    typed = definition_form({"key": " tier ", "label": "Tier", "type": "choice",
                             "required": "yes", "options": "gold\n\n silver \n", "min": "1",
                             "max_length": "9"})
    assert definition_body(typed, new=True) == {"key": "tier", "label": "Tier",
                                                "type": "choice", "required": True,
                                                "applies_to": "customer",
                                                "options": ["gold", "silver"]}
    company = definition_form({"key": "trade_no", "label": "Trade no", "type": "text",
                               "applies_to": "company"})
    assert definition_body(company, new=True)["applies_to"] == "company"
    assert "applies_to" not in definition_body(company, new=False)  # fixed once made
    number = definition_form({"label": "Visits", "type": "number", "min": "", "max": "2.5"})
    assert definition_body(number, new=False) == {"label": "Visits", "type": "number",
                                                  "required": False, "min": None, "max": 2.5}
    assert definition_body(definition_form({"label": "N", "type": "number", "min": "lots"}),
                           new=True)["min"] == "lots"  # for the API to refuse by the field


@pytest.mark.parametrize("kind, raw, value", [
    ("number", "12", 12), ("number", "2.5", 2.5), ("number", "", None),
    ("number", "twelve", "twelve"), ("number", "inf", "inf"),
    ("boolean", "yes", True), ("boolean", "no", False), ("boolean", "", None),
    ("boolean", "maybe", "maybe"), ("text", " spaced ", " spaced "), ("text", "", None),
    ("date", "2026-01-02", "2026-01-02"), ("choice", "", None), (None, "", ""),
])
def test_a_posted_value_is_read_in_its_fields_type(kind, raw, value):
    assert value_of({"type": kind} if kind else None, raw) == value


# -- the store's page --------------------------------------------------------------------------
def test_a_reader_sees_the_fields_and_no_form(fields):
    world = World()
    world.login("wcc_read")
    nav = world.client.get("/console/customers").get_data(as_text=True).split("</nav>")[0]
    assert 'href="/console/custom-fields"' in nav
    html = world.client.get("/console/custom-fields").get_data(as_text=True)
    assert 'id="field-visits"' in html and "0 to 100" in html and "at most 40 characters" in html
    assert "field-create" not in html and 'id="fields-read-only"' in html
    assert "<script>alert" not in html
    page = world.client.get("/console/custom-fields/visits").get_data(as_text=True)
    assert "field-edit" not in page and "field-delete" not in page
    refused = world.client.post("/console/custom-fields/create", data={
        "csrf_token": world.csrf("/console/custom-fields"), "key": "x", "label": "X",
        "type": "text"})
    assert refused.status_code == 403 and fields["created"] == []


def test_a_field_is_defined_and_a_refusal_is_shown_by_the_field(fields):
    world = World()
    world.login("wcc_write")
    token = world.csrf("/console/custom-fields")
    made = world.client.post("/console/custom-fields/create", data={
        "csrf_token": token, "key": "size", "label": "Size", "type": "choice",
        "required": "yes", "options": "S\nM\nL", "min": "3", "max_length": "20",
        "applies_to": "company"})
    assert made.status_code == 303
    assert fields["created"] == [{"key": "size", "label": "Size", "type": "choice",
                                  "required": True, "options": ["S", "M", "L"],
                                  "applies_to": "company"}]
    assert "Defined the field Size (size)" in world.client.get(
        "/console/custom-fields").get_data(as_text=True)
    fields["refuse"] = ValidationError("invalid definition",
                                       {"fields": {"options": ["at most 100 options"]}})
    refused = world.client.post("/console/custom-fields/create", data={
        "csrf_token": token, "key": "size2", "label": EVIL, "type": "choice",
        "options": EVIL})
    html = refused.get_data(as_text=True)
    assert refused.status_code == 400 and len(fields["created"]) == 1
    assert 'id="e-options"' in html and "at most 100 options" in html
    assert 'aria-describedby="new-limits-help e-options"' in html
    assert "<script>alert" not in html and html.count("&lt;script&gt;alert(1)") >= 2
    fields["refuse"] = Conflict("the store has a custom field size already",
                                {"fields": {"key": ["taken"]}})
    taken = world.client.post("/console/custom-fields/create", data={
        "csrf_token": token, "key": "size", "label": "Size", "type": "text"})
    assert taken.status_code == 409 and 'id="e-key"' in taken.get_data(as_text=True)


def test_a_field_is_changed_with_its_limits_cleared_or_set(fields):
    world = World()
    world.login("wcc_write")
    page = world.client.get("/console/custom-fields/visits").get_data(as_text=True)
    assert 'name="min" value="0"' in page and 'name="max" value="100"' in page
    assert '<option value="number" selected>' in page
    token = world.csrf("/console/custom-fields/visits")
    saved = world.client.post("/console/custom-fields/visits/edit", data={
        "csrf_token": token, "label": "Visits a year", "type": "number", "min": "",
        "max": "365", "options": "ignored\n"})
    assert saved.status_code == 303
    assert fields["updated"] == [("visits", {"label": "Visits a year", "type": "number",
                                             "required": False, "min": None, "max": 365})]
    fields["refuse"] = Conflict("customers hold values of visits: its type cannot change",
                                {"fields": {"type": ["values exist"]}})
    refused = world.client.post("/console/custom-fields/visits/edit", data={
        "csrf_token": token, "label": "Visits", "type": "text"})
    html = refused.get_data(as_text=True)
    assert refused.status_code == 409 and 'id="e-type"' in html and "values exist" in html
    assert '<option value="text" selected>' in html  # the form as it was sent
    assert world.client.get("/console/custom-fields/nothing").status_code == 404


def test_a_field_is_deleted_once_the_box_is_ticked(fields):
    world = World()
    world.login("wcc_write")
    token = world.csrf("/console/custom-fields/vip")
    unticked = world.client.post("/console/custom-fields/vip/delete",
                                 data={"csrf_token": token})
    assert unticked.status_code == 303 and fields["deleted"] == []
    assert "tick the box" in world.client.get("/console/custom-fields/vip").get_data(
        as_text=True)
    deleted = world.client.post("/console/custom-fields/vip/delete",
                                data={"csrf_token": token, "understood": "yes"})
    assert deleted.headers["Location"].endswith("/console/custom-fields")
    assert fields["deleted"] == ["vip"]
    assert "taken off 7 records" in world.client.get("/console/custom-fields").get_data(
        as_text=True)
    refused = world.client.post("/console/custom-fields/vip/delete",
                                data={"understood": "yes"})
    assert refused.status_code == 403 and fields["deleted"] == ["vip"]


# -- the customer's values ---------------------------------------------------------------------
def test_the_customer_page_has_one_input_a_field_by_its_type_for_writers_only(fields):
    world = World()
    world.login("wcc_read")
    assert 'id="custom-fields-form"' not in world.client.get(
        "/console/customers/c1").get_data(as_text=True)
    world = World()
    world.login("wcc_write")
    html = world.client.get("/console/customers/c1").get_data(as_text=True)
    form = re.search(r'<form method="post" action="/console/customers/c1/custom-fields".*?'
                     r'</form>', html, re.S).group(0)
    assert 'name="csrf_token"' in form and "<script>alert" not in form
    assert re.search(r'<select id="cf-tier" name="custom.tier" required>', form)
    assert '<option value="&lt;script&gt;alert(1)&lt;/script&gt;" selected>' in form
    assert re.search(r'<input id="cf-visits" name="custom.visits" type="number" step="any" '
                     r'value="3" min="0" max="100">', form)
    assert 'type="date" value="2026-01-02"' in form
    assert '<option value="no" selected>No</option>' in form
    assert 'name="custom.notes" value="&lt;script&gt;alert(1)&lt;/script&gt;" maxlength="40"' \
        in form
    for field_id in re.findall(r'<(?:input|select)[^>]*id="(cf-[^"]+)"', form):
        assert f'<label for="{field_id}">' in form, field_id


def test_values_are_saved_in_their_types_and_refusals_shown_beside_each_field(fields):
    world = World()
    world.login("wcc_write")
    token = world.csrf("/console/customers/c1")
    data = {"csrf_token": token, "custom.tier": "gold", "custom.visits": "12",
            "custom.since": "", "custom.vip": "yes", "custom.notes": "calls on Fridays"}
    saved = world.client.post("/console/customers/c1/custom-fields", data=data)
    assert saved.status_code == 303 and saved.headers["Location"].endswith("#custom-fields")
    assert fields["values"] == [("c1", {"tier": "gold", "visits": 12, "since": None,
                                        "vip": True, "notes": "calls on Fridays"})]
    assert "Saved the custom fields." in world.client.get(
        "/console/customers/c1").get_data(as_text=True)
    fields["refuse"] = ValidationError("invalid custom fields", {"fields": {
        "custom_fields.visits": ["must be a number"],
        "custom_fields.ghost": ["no such custom field in this store"]}})
    refused = world.client.post("/console/customers/c1/custom-fields",
                                data={**data, "custom.visits": "lots", "custom.ghost": EVIL})
    html = refused.get_data(as_text=True)
    assert refused.status_code == 400 and len(fields["values"]) == 1
    assert fields["values"][0][1]["visits"] == 12
    assert '<details id="custom-fields-edit" open>' in html
    assert re.search(r'id="cf-visits"[^>]*value="lots"[^>]*aria-invalid="true" '
                     r'aria-describedby="e-custom_fields-visits"', html)
    assert '<p class="field-error" id="e-custom_fields-visits">must be a number</p>' in html
    assert "custom_fields.ghost: no such custom field in this store" in html
    assert "<script>alert" not in html


def test_a_deletion_that_stopped_short_says_the_rest_follows(fields, monkeypatch):
    monkeypatch.setattr(CustomerSync, "delete_custom_field",
                        lambda self, store, key, actor: {"key": key, "deleted": False,
                                                         "finishing": True, "values_removed": 3},
                        raising=False)
    world = World()
    world.login("wcc_write")
    token = world.csrf("/console/custom-fields/vip")
    world.client.post("/console/custom-fields/vip/delete",
                      data={"csrf_token": token, "understood": "yes"})
    shown = world.client.get("/console/custom-fields").get_data(as_text=True)
    assert "vip is being deleted" in shown and "the rest follows in the background" in shown
