"""Notes, reminders and the activity timeline: customer_sync keeps them (docs/architecture.md)."""
from __future__ import annotations

from services.gateway import schemas as s
from services.gateway.handlers.customers import PAGE_PARAMS
from services.gateway.routing import Context, Param, Reply, Route


def list_notes(ctx: Context) -> Reply:
    return Reply(ctx.call("customer_sync", "list_notes", ctx.store_id, ctx.path["customer_id"],
                          ctx.query["category"]))


def add_note(ctx: Context) -> Reply:
    note = ctx.call("customer_sync", "add_note", ctx.store_id, ctx.path["customer_id"], ctx.body,
                    ctx.actor)
    return Reply(note, 201)


def update_note(ctx: Context) -> Reply:
    return Reply(ctx.call("customer_sync", "update_note", ctx.store_id, ctx.path["note_id"],
                          ctx.body, ctx.actor))


def delete_note(ctx: Context) -> Reply:
    return Reply(ctx.call("customer_sync", "delete_note", ctx.store_id, ctx.path["note_id"],
                          ctx.actor))


def list_customer_reminders(ctx: Context) -> Reply:
    return Reply(ctx.call("customer_sync", "list_reminders", ctx.store_id,
                          ctx.path["customer_id"], ctx.query["status"], ctx.query["due_before"]))


def list_reminders(ctx: Context) -> Reply:
    return Reply(ctx.call("customer_sync", "list_reminders", ctx.store_id, None,
                          ctx.query["status"], ctx.query["due_before"]))


def add_reminder(ctx: Context) -> Reply:
    return Reply(ctx.call("customer_sync", "add_reminder", ctx.store_id, ctx.path["customer_id"],
                          ctx.body, ctx.actor), 201)


def complete_reminder(ctx: Context) -> Reply:
    return Reply(ctx.call("customer_sync", "complete_reminder", ctx.store_id,
                          ctx.path["reminder_id"], ctx.actor))


def delete_reminder(ctx: Context) -> Reply:
    return Reply(ctx.call("customer_sync", "delete_reminder", ctx.store_id,
                          ctx.path["reminder_id"], ctx.actor))


def timeline(ctx: Context) -> Reply:
    return Reply(ctx.call("customer_sync", "timeline", ctx.store_id, ctx.path["customer_id"],
                          {"size": ctx.query["limit"], "cursor": ctx.query["cursor"]}))


_CID = "/customers/<customer_id>"
_REMINDER_FILTERS = [
    Param("status", "open or done; all when absent", enum=("open", "done")),
    Param("due_before", "only reminders due before this time", "date-time"),
]

ROUTES = [
    Route("GET", _CID + "/notes", list_notes, "A customer's notes, newest first", "notes",
          query=[Param("category", "only this category", enum=tuple(s.NOTE_CATEGORIES))],
          responses={200: {"type": "array", "items": s.NOTE}}),
    Route("POST", _CID + "/notes", add_note, "Add a note", "notes", scope="write",
          body=s.NEW_NOTE, responses={201: s.NOTE}),
    Route("PATCH", "/notes/<note_id>", update_note, "Edit a note", "notes", scope="write",
          body=s.NOTE_CHANGES, responses={200: s.NOTE}),
    Route("DELETE", "/notes/<note_id>", delete_note, "Delete a note", "notes", scope="write",
          responses={200: s.DELETED_NOTE}),
    Route("GET", _CID + "/reminders", list_customer_reminders, "A customer's reminders",
          "reminders", query=_REMINDER_FILTERS,
          responses={200: {"type": "array", "items": s.REMINDER}}),
    Route("POST", _CID + "/reminders", add_reminder, "Set a reminder", "reminders",
          scope="write", body=s.NEW_REMINDER, responses={201: s.REMINDER}),
    Route("GET", "/reminders", list_reminders, "The store's reminders, soonest due first",
          "reminders", query=_REMINDER_FILTERS,
          responses={200: {"type": "array", "items": s.REMINDER}}),
    Route("POST", "/reminders/<reminder_id>/complete", complete_reminder, "Mark a reminder done",
          "reminders", scope="write", responses={200: s.REMINDER}),
    Route("DELETE", "/reminders/<reminder_id>", delete_reminder, "Delete a reminder",
          "reminders", scope="write", responses={200: s.DELETED_REMINDER}),
    Route("GET", _CID + "/timeline", timeline, "A customer's activity timeline, newest first",
          "customers", query=PAGE_PARAMS, responses={200: s.page_of(s.TIMELINE_ENTRY)}),
]
