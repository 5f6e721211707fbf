"""The console's tag catalogue: every tag of the store with its description and how many
customers carry it; staff with the write scope create, rename, describe and delete tags.
Through the gateway's API as the signed-in key, like every other page."""
from __future__ import annotations

from werkzeug.wrappers import Response

from services.gateway.console.api import ApiError, path

PREFIX = "/console"


def tag_list(page) -> Response:
    tags, problem = [], ""
    try:
        tags = page.api.get("/tags")
    except ApiError as exc:
        problem = exc.message()
    return page.render("tags.html", title="Tags", tags=tags, problem=problem)


def tag_create(page) -> Response:
    form = page.request.form
    tag = (form.get("tag") or "").strip().lower()
    body = {"tag": tag}
    if (form.get("description") or "").strip():
        body["description"] = form["description"].strip()
    try:
        page.api.post("/tags", body)
    except ApiError as exc:
        page.flash("error", f"No tag was created: {exc.message()}")
    else:
        page.flash("success", f"Created the tag {tag}.")
    return page.redirect(PREFIX + "/tags")


def tag_edit(page, tag: str) -> Response:
    form = page.request.form
    new_tag = (form.get("new_tag") or "").strip().lower()
    changes = {"description": (form.get("description") or "").strip()}
    if new_tag and new_tag != tag:
        changes["new_tag"] = new_tag
    try:
        answer = page.api.patch(path("tags", tag), changes)
    except ApiError as exc:
        page.flash("error", f"The tag {tag} was not changed: {exc.message()}")
    else:
        if "new_tag" in changes:
            page.flash("success", f"Renamed {tag} to {answer['tag']}: "
                                  f"{answer['renamed']} customers follow.")
        else:
            page.flash("success", f"Saved the description of {tag}.")
    return page.redirect(PREFIX + "/tags")


def tag_delete(page, tag: str) -> Response:
    try:
        answer = page.api.delete(path("tags", tag))
    except ApiError as exc:
        page.flash("error", f"The tag {tag} was not deleted: {exc.message()}")
    else:
        page.flash("success", f"Deleted the tag {tag}: taken off {answer['customers']} "
                              "customers.")
    return page.redirect(PREFIX + "/tags")
