"""The console's saved-segment pages, against the gateway's real pipeline and the real saved
segment rules (over mongomock), so that what the page sends is what segmentation checks."""
from __future__ import annotations

import re

from devdoubles import mongomock_adapter
from services.gateway.backends import Backends
from services.gateway.console import forms
from services.gateway.console.segment_views import format_conditions, parse_conditions
from services.segmentation.repository import SegmentationStorage
from services.segmentation.saved_segments import SavedSegments
from tests.unit.test_console import (EVIL, CustomerSync, Gdpr, Loyalty, Notifications, Proxy,
                                     Segmentation, World)


class SavedSegmentation(Segmentation):
    def __init__(self) -> None:
        storage = SegmentationStorage(mongomock_adapter.client()["segmentation"])
        self.segments = SavedSegments(storage.saved_segments, new_id=lambda: "seg1")

    def list_segments(self, store):
        return [{**s, "customers": 7} for s in self.segments.list(store)]

    def get_segment(self, store, segment_id):
        return self.segments.get(store, segment_id)

    def save_segment(self, store, segment):
        return self.segments.create(store, segment)

    def update_segment(self, store, segment_id, segment):
        return self.segments.update(store, segment_id, segment)

    def delete_segment(self, store, segment_id):
        return self.segments.delete(store, segment_id)


class SegmentWorld(World):
    def __init__(self) -> None:
        super().__init__()
        self.segmentation = SavedSegmentation()
        services = [CustomerSync(), self.segmentation, Loyalty(), Notifications(), Gdpr()]
        self.backends = Backends({s.name: Proxy(s, self.calls) for s in services}, 5)


def test_conditions_are_written_one_a_line_and_read_back_the_same():
    text = "total_spent gt 10000\nlast_order_month in 11, 12\n\ntags contains gift"
    conditions, wrong = parse_conditions(text)
    assert wrong is None and conditions == [
        {"field": "total_spent", "op": "gt", "value": 10000},
        {"field": "last_order_month", "op": "in", "value": [11, 12]},
        {"field": "tags", "op": "contains", "value": "gift"}]
    assert parse_conditions(format_conditions(conditions)) == (conditions, None)
    assert "line 2" in parse_conditions("orders_count gte 1\norders_count")[1]
    assert parse_conditions("  \n")[1] == "write at least one condition"


def test_a_segment_is_created_edited_and_deleted_from_the_console():
    world = SegmentWorld()
    world.login("wcc_write")
    token = world.csrf("/console/segments")
    answer = world.client.post("/console/segments/save", data={
        "csrf_token": token, "is_new": "1", "name": f"{EVIL} buyers", "match": "all",
        "conditions": "total_spent gt 10000"})
    assert answer.status_code == 303 and answer.headers["Location"].endswith("/console/segments")
    html = world.client.get("/console/segments").get_data(as_text=True)
    assert "<script>alert" not in html and "total_spent gt 10000" in html
    assert "<td>7</td>" in html  # its members now, as segmentation counts them
    assert 'href="/console/segments/seg1"' in html

    edit = world.client.get("/console/segments/seg1").get_data(as_text=True)
    assert re.search(r'<textarea id="s-conditions"[^>]*>total_spent gt 10000</textarea>', edit)
    answer = world.client.post("/console/segments/save", data={
        "csrf_token": token, "is_new": "0", "segment_id": "seg1", "name": "Gift buyers",
        "match": "any", "conditions": "tags contains gift\nlast_order_month in 11,12"})
    assert answer.status_code == 303
    assert world.segmentation.segments.get(_store(world), "seg1")["conditions"][1] == {
        "field": "last_order_month", "op": "in", "value": [11, 12]}

    answer = world.client.post("/console/segments/seg1/delete", data={"csrf_token": token})
    assert answer.status_code == 303
    assert "No saved segments." in world.client.get("/console/segments").get_data(as_text=True)


def test_a_refused_edit_names_the_condition_and_changes_nothing():
    world = SegmentWorld()
    world.login("wcc_write")
    token = world.csrf("/console/segments")
    world.client.post("/console/segments/save", data={
        "csrf_token": token, "is_new": "1", "name": "Big", "conditions": "total_spent gt 10000"})
    answer = world.client.post("/console/segments/save", data={
        "csrf_token": token, "is_new": "0", "segment_id": "seg1", "name": "Big",
        "conditions": "total_spent contains 5"})
    html = answer.get_data(as_text=True)
    assert answer.status_code == 400 and "Nothing was saved" in html
    assert "conditions.0.op" in html and 'aria-invalid="true"' in html
    unparsed = world.client.post("/console/segments/save", data={
        "csrf_token": token, "is_new": "0", "segment_id": "seg1", "name": "Big",
        "conditions": "total_spent"})
    assert unparsed.status_code == 400 and "line 1" in unparsed.get_data(as_text=True)
    assert "total_spent gt 10000" in world.client.get("/console/segments").get_data(as_text=True)


def test_a_read_key_sees_segments_without_forms_and_cannot_delete_by_posting():
    world = SegmentWorld()
    world.login("wcc_write")
    token = world.csrf("/console/segments")
    world.client.post("/console/segments/save", data={
        "csrf_token": token, "is_new": "1", "name": "Big", "conditions": "total_spent gt 10000"})
    reader = SegmentWorld()
    reader.segmentation = world.segmentation
    reader.backends = world.backends
    reader.login("wcc_read")
    html = reader.client.get("/console/segments").get_data(as_text=True)
    assert "Big" in html and "/delete" not in html and "new-segment" not in html
    nav = html.split("</nav>")[0]
    assert 'href="/console/segments"' in nav and 'aria-current="page"' in nav
    token = reader.csrf("/console/segments")
    reader.client.post("/console/segments/seg1/delete", data={"csrf_token": token})
    assert [s["name"] for s in world.segmentation.list_segments(_store(world))] == ["Big"]


def _store(world: SegmentWorld) -> str:
    """The signed-in key's store, as the console passed it to segmentation."""
    [(_, _, args)] = world.called("save_segment")
    return args[0]


def test_a_workflow_is_triggered_by_entering_or_leaving_a_saved_segment_chosen_by_name():
    world = World()
    world.login("wcc_admin")
    page = world.client.get("/console/workflows/new").get_data(as_text=True)
    assert re.search(r'<select id="w-entered_segment" name="entered_segment"[^>]*>'
                     r'<option value="gifts">&lt;script&gt;', page)
    token = world.csrf("/console/workflows/new")
    world.client.post("/console/workflows/save", data={
        "csrf_token": token, "name": "Gift hello", "trigger": "event:customer.saved_segment_left",
        "left_segment": "gifts", "entered_segment": "", "delay": "0", "delay_unit": "minutes",
        "channel": "email", "template": "welcome", "purpose": "transactional", "enabled": "on"})
    [(_, _, args)] = world.called("save_workflow")
    assert args[1]["trigger"] == {"event": "customer.saved_segment_left", "segment_id": "gifts"}
    shown = forms.workflow_form({"trigger": args[1]["trigger"]})
    assert shown["left_segment"] == "gifts" and shown["entered_segment"] == ""
    assert forms.trigger_summary(args[1]["trigger"]) == \
        "A customer leaves a saved segment: segment_id gifts"


def test_custom_fields_are_offered_with_their_operators_and_read_in_their_type():
    conditions, wrong = parse_conditions(
        "custom.tier eq 123\ncustom.vip eq true\ncustom.visits in 1, 2\n"
        "custom.first_visit before 2026-01-31\ncustom.account_no is_set",
        {"tier": "text", "vip": "boolean", "visits": "number", "first_visit": "date"})
    assert wrong is None and conditions == [
        {"field": "custom.tier", "op": "eq", "value": "123"},  # text stays text
        {"field": "custom.vip", "op": "eq", "value": True},
        {"field": "custom.visits", "op": "in", "value": [1, 2]},
        {"field": "custom.first_visit", "op": "before", "value": "2026-01-31"},
        {"field": "custom.account_no", "op": "is_set"}]
    saved = [{**c, "value": c.get("value")} for c in conditions]  # as segmentation answers
    assert parse_conditions(format_conditions(saved), {"tier": "text", "vip": "boolean"}) == (
        conditions, None)

    world = SegmentWorld()
    world.login("wcc_write")
    page = world.client.get("/console/segments/new").get_data(as_text=True)
    table = page.split('id="custom-fields"')[1].split("</table>")[0]
    assert "<code>custom.vip</code>" in table and "eq, ne, is_set, is_not_set" in table
    assert "<code>custom.tier</code>" in table and "contains" in table
    token = world.csrf("/console/segments")
    answer = world.client.post("/console/segments/save", data={
        "csrf_token": token, "is_new": "1", "name": "VIPs",
        "conditions": "custom.vip eq true\ncustom.tier in Gold, 7"})
    assert answer.status_code == 303
    assert world.segmentation.segments.get(_store(world), "seg1")["conditions"] == [
        {"field": "custom.vip", "op": "eq", "value": True},
        {"field": "custom.tier", "op": "in", "value": ["Gold", "7"]}]
    edit = world.client.get("/console/segments/seg1").get_data(as_text=True)
    assert "custom.vip eq true\ncustom.tier in Gold, 7</textarea>" in edit
    refused = world.client.post("/console/segments/save", data={
        "csrf_token": token, "is_new": "0", "segment_id": "seg1", "name": "VIPs",
        "conditions": "custom.vip eq true\ncustom.unset before soon"})
    assert refused.status_code == 400 and "conditions.1.value" in refused.get_data(as_text=True)
    assert "custom.unset before soon" in refused.get_data(as_text=True)  # kept to correct
    undefined = world.client.post("/console/segments/save", data={
        "csrf_token": token, "is_new": "0", "segment_id": "seg1", "name": "VIPs",
        "conditions": "custom.first_visit before 2026-01-01"})
    assert undefined.status_code == 400
    assert "no such custom field in this store" in undefined.get_data(as_text=True)
