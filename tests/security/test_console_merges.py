"""The console's merge and undo forms attacked, in front of customer_sync's real merges and
storage (mongomock): a post without the session's CSRF token, one from a read key, too many
or foreign records, a field choice naming a record outside the merge. Each is refused (the
field named where there is one) and nothing is merged, claimed or undone."""
from __future__ import annotations

import re

import pytest

from tests.security.test_console_sessions import STORE, Deployment, csrf_of, sign_in

FORM = "/console/merges/new?customer_id=guest&customer_id=member"


@pytest.fixture
def deployment():
    deployment = Deployment()
    customers = deployment.customer_sync.storage.customers
    for customer_id, store_id, registered in (("guest", STORE, False), ("member", STORE, True),
                                              ("foreign", "other-shop", True)):
        customers.insert({"_id": customer_id, "store_id": store_id, "status": "active",
                          "registered": registered, "email": f"{customer_id}@example.com",
                          "first_name": "Kim", "last_name": "Weber"}, [])
    return deployment


def _merges(deployment) -> list:
    return list(deployment.customer_sync.storage.merges.collection.find({}))


def _untouched(deployment) -> bool:
    customers = deployment.customer_sync.storage.customers.collection
    return not _merges(deployment) and all(
        doc["status"] == "active" and "merge_claim" not in doc for doc in customers.find({}))


def _browser(deployment, *scopes):
    browser = deployment.a.browser()
    sign_in(browser, deployment.key(*scopes)["api_key"])
    return browser


def _merge(browser, token, **extra):
    return browser.post("/console/merges/new", data={
        "csrf_token": token, "customer_id": ["guest", "member"], "primary_id": "member",
        "understood": "yes", **extra})


def test_a_merge_without_the_sessions_token_or_from_a_read_key_changes_nothing(deployment):
    writer = _browser(deployment, "read", "write")
    assert _merge(writer, "").status_code == 403
    assert _merge(writer, "x" * 43).status_code == 403
    reader = _browser(deployment, "read")
    refused = _merge(reader, csrf_of(reader, FORM))
    assert refused.status_code == 403 and "write" in refused.get_data(as_text=True)
    assert _untouched(deployment)


@pytest.mark.parametrize("ids, status, field", [
    ([f"c{n}" for n in range(12)], 400, "customer_id"),
    (["guest"], 400, "customer_id"),
    (["guest", "foreign"], 404, "foreign"),
    (["guest", "x" * 65], 400, "customer_id"),
])
def test_too_many_or_foreign_records_are_refused_naming_them(deployment, ids, status, field):
    writer = _browser(deployment, "read", "write")
    token = csrf_of(writer, FORM)
    answer = writer.post("/console/merges/new", data={
        "csrf_token": token, "customer_id": ids, "primary_id": ids[0], "understood": "yes"})
    assert answer.status_code == status and field in answer.get_data(as_text=True)
    assert writer.get("/console/merges/new?" + "&".join(
        f"customer_id={i}" for i in ids)).status_code == status
    assert _untouched(deployment)


def test_a_field_choice_outside_the_merge_is_refused_naming_the_field(deployment):
    writer = _browser(deployment, "read", "write")
    token = csrf_of(writer, FORM)
    for outside in ("foreign", "x" * 65, '{"$ne": null}'):
        answer = _merge(writer, token, take_email=outside)
        html = answer.get_data(as_text=True)
        assert answer.status_code == 400 and "field_choices" in html, outside
    assert _untouched(deployment)


def test_an_undo_without_the_token_or_from_a_read_key_changes_nothing(deployment):
    writer = _browser(deployment, "read", "write")
    done = _merge(writer, csrf_of(writer, FORM))
    assert done.status_code == 303
    merge_id = re.search(r"/console/merges/([\w-]+)$", done.headers["Location"]).group(1)
    undo = f"/console/merges/{merge_id}/unmerge"
    assert writer.post(undo, data={"understood": "yes"}).status_code == 403
    reader = _browser(deployment, "read")
    reader.post(undo, data={"csrf_token": csrf_of(reader, "/console/merges"),
                            "understood": "yes"})
    [record] = _merges(deployment)
    assert record["state"] == "done" and "unmerged_at" not in record
    assert deployment.customer_sync.storage.customers.get(STORE, "guest")["status"] == "merged"
    assert deployment.called("unmerge_customers") == []
