"""What a manual merge gives the primary record, and what its undoing gives back.

Pure rules over stored customer documents, so the choices (whose email wins, which fields go
back when a merge is undone, which orders since the merge belong to the restored record) are
tested without a database. docs/merging.md states them for operators.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.customer_sync.core.normalise import email_key
from services.customer_sync.crm.field_rules import VALUES_FIELD
from shared.customers import CONTACT_FIELDS

# How field_choices names a custom field: `custom_fields.<key>`.
VALUE_CHOICE = VALUES_FIELD + "."

# Stored with the merge so an unmerge can compare and restore; personal data, so an erasure
# of any of its records blanks the snapshot (repository.MergeRepository.forget).
SNAPSHOT_FIELDS = (*CONTACT_FIELDS, "status", "registered", "woo_customer_id", "email_key",
                   "guest_email_key", "account_status", "date_created", "version", "company_id",
                   VALUES_FIELD)
# Fields a merge gives the primary beyond the contact fields (never chosen by a person): the
# primary keeps its own, or takes the first merged record's where it has none.
KEPT_UNLESS_EMPTY = ("company_id",)
# What a merge may change on the primary, and so what an unmerge may give back.
MERGED_FIELDS = (*CONTACT_FIELDS, *KEPT_UNLESS_EMPTY, VALUES_FIELD)


def snapshot(doc: dict) -> dict:
    """The part of a customer record a merge records as it was before."""
    return {name: doc.get(name) for name in SNAPSHOT_FIELDS}


def _empty(value: Any) -> bool:
    if isinstance(value, dict):
        return not any(v not in (None, "") for v in value.values())
    return value in (None, "", [], {})


@dataclass(frozen=True)
class FieldPlan:
    """The primary's contact fields after the merge: `values` to write, `sources` naming the
    record each winning value came from, `changes` the fields whose value the merge changed
    ({field: {"before", "after"}}, what an unmerge may put back)."""

    values: dict
    sources: dict
    changes: dict


def plan_fields(primary: dict, merged: list[dict], choices: dict[str, str]) -> FieldPlan:
    """Each contact field takes the chosen record's value; unchosen fields keep the primary's,
    or, where the primary's is empty, the first merged record's that is not."""
    by_id = {doc["_id"]: doc for doc in [primary, *merged]}
    values, sources, changed = {}, {}, {}
    for name in CONTACT_FIELDS:
        if name in choices:
            source = by_id[choices[name]]
        else:
            source = primary
            if _empty(primary.get(name)):
                source = next((doc for doc in merged if not _empty(doc.get(name))), primary)
        values[name] = source.get(name)
        sources[name] = source["_id"]
        if values[name] != primary.get(name):
            changed[name] = {"before": primary.get(name), "after": values[name]}
    values.update(taken_company(primary, merged))
    changed.update(company_changes(primary, merged))
    custom = merged_values(primary, merged, choices)
    sources.update({name: chosen for name, chosen in choices.items()
                    if name.startswith(VALUE_CHOICE)})
    if custom != (primary.get(VALUES_FIELD) or {}):
        values[VALUES_FIELD] = custom
        changed[VALUES_FIELD] = {"before": primary.get(VALUES_FIELD) or {}, "after": custom}
    if "email" in changed:
        values["email_key"] = email_key(values["email"])
    return FieldPlan(values, sources, changed)


def taken_company(primary: dict, merged: list[dict]) -> dict:
    """What the primary takes of the merged records beyond the contact fields: nothing when it
    has a company, else the first merged record's company ({} when none has one)."""
    taken = {}
    for name in KEPT_UNLESS_EMPTY:
        if _empty(primary.get(name)):
            source = next((doc for doc in merged if not _empty(doc.get(name))), None)
            if source is not None:
                taken[name] = source[name]
    return taken


def company_changes(primary: dict, merged: list[dict]) -> dict:
    """`taken_company` as a merge records it ({field: {"before", "after"}}), for the unmerge."""
    return {name: {"before": primary.get(name), "after": value}
            for name, value in taken_company(primary, merged).items()}


def merged_values(primary: dict, merged: list[dict], choices: dict[str, str] | None = None
                  ) -> dict:
    """The primary's custom field values after the merge: for a key the operator chose
    (`custom_fields.<key>` in `choices`), the chosen record's value, or none where it has
    none; for the rest, the primary's own, and for each key it has no value of, the first
    merged record's that has one."""
    values = dict(primary.get(VALUES_FIELD) or {})
    for doc in merged:
        for key, value in (doc.get(VALUES_FIELD) or {}).items():
            values.setdefault(key, value)
    by_id = {doc["_id"]: doc for doc in [primary, *merged]}
    for name, chosen in (choices or {}).items():
        if not name.startswith(VALUE_CHOICE):
            continue
        key = name[len(VALUE_CHOICE):]
        source = by_id[chosen].get(VALUES_FIELD) or {}
        if key in source:
            values[key] = source[key]
        else:
            values.pop(key, None)
    return values


def fields_to_restore(changes: dict, current: dict) -> tuple[dict, list[str]]:
    """At an unmerge: the pre-merge values of the fields that still hold what the merge gave
    them, and the names of those edited since (an edit since the merge wins)."""
    restore, kept = {}, []
    for name, change in changes.items():
        if name == VALUES_FIELD:
            values, edited = values_to_restore(change, current.get(VALUES_FIELD) or {})
            if values is not None:
                restore[name] = values
            if edited:
                kept.append(name)
        elif current.get(name) == change["after"]:
            restore[name] = change["before"]
        else:
            kept.append(name)
    if "email" in restore:
        restore["email_key"] = email_key(restore["email"])
    return restore, kept


def values_to_restore(change: dict, current: dict) -> tuple[dict | None, bool]:
    """At an unmerge: the primary's custom field values with each key the merge changed put
    back as it was before, where it still holds what the merge made it (None: none to put
    back), and whether any was edited since (an edit since the merge wins, key by key)."""
    before, after = change["before"], change["after"]
    absent = object()
    restored, back, edited = dict(current), False, False
    for key in sorted({*before, *after}):
        if before.get(key, absent) == after.get(key, absent):
            continue
        if current.get(key, absent) != after.get(key, absent):
            edited = True
            continue
        back = True
        if key in before:
            restored[key] = before[key]
        else:
            restored.pop(key, None)
    return (restored if back else None), edited


def belongs_to_restored(order: dict, restored: dict) -> bool:
    """Whether an order that reached the primary since the merge is the restored record's own:
    placed by its shop account, or, for a guest, as a guest with its email."""
    woo_id = restored.get("woo_customer_id")
    if restored.get("registered") and isinstance(woo_id, int):
        return order.get("woo_customer_id") == woo_id
    key = restored.get("email_key")
    return (key is not None and order.get("woo_customer_id") is None
            and email_key((order.get("billing") or {}).get("email")) == key)
