"""Bulk actions on a selection of customers, each answering every customer's own outcome: one
customer failing does not stop the others, and the caller sees exactly which did what."""
from __future__ import annotations

from services.gateway import schemas as s
from services.gateway.problems import Problem
from services.gateway.routing import Context, Reply, Route

ACTIONS = ("set_status", "add_tags", "add_to_groups", "export", "delete")
MAX_SELECTION = 1000
_EXPORT_CHUNK = 50


def _outcome(value: str) -> dict:
    if value.startswith("refused"):
        return {"outcome": "refused", "error": value.partition(": ")[2] or value}
    return {"outcome": value.replace(" ", "_")}


def bulk(ctx: Context) -> Reply:
    body = ctx.body
    action, ids = body["action"], list(dict.fromkeys(body["customer_ids"]))
    needs = {"set_status": "status", "add_tags": "tags", "add_to_groups": "groups"}
    if action in needs and needs[action] not in body:
        raise Problem(400, f"{action} needs {needs[action]}", kind="invalid-body",
                      errors={needs[action]: ["required for this action"]})
    if action == "set_status":
        answer = ctx.call("customer_sync", "set_account_status", ctx.store_id, ids,
                          body["status"], ctx.actor)
        results = answer["results"]
    elif action == "add_tags":
        known, unknown = _known(ctx, ids)
        answer = (ctx.call("segmentation", "bulk_tag", ctx.store_id, known, body["tags"],
                           ctx.actor) if known else {"results": {}})
        outcomes = {**answer["results"], **{c: "not found" for c in unknown}}
        results = [{"customer_id": c, **_outcome(outcomes[c])} for c in ids]
    elif action == "add_to_groups":
        known, unknown = _known(ctx, ids)
        by_customer: dict[str, dict] = {c: {"customer_id": c, "groups": {}} for c in ids}
        for group in body["groups"]:
            answer = (ctx.call("segmentation", "add_to_group", ctx.store_id, known, group,
                               ctx.actor) if known else {"results": {}})
            for customer_id, outcome in {**answer["results"],
                                         **{c: "not found" for c in unknown}}.items():
                by_customer[customer_id]["groups"][group] = outcome
        results = []
        for row in by_customer.values():
            outcomes = set(row["groups"].values())
            row["outcome"] = ("changed" if "changed" in outcomes else
                              "not_found" if outcomes == {"not found"} else
                              "refused" if any(o.startswith("refused") for o in outcomes) else
                              "unchanged")
            results.append(row)
    elif action == "delete":
        answer = ctx.call("customer_sync", "delete_customers", ctx.store_id, ids,
                          body.get("orders", "anonymise"), ctx.actor)
        results = answer["results"]
    else:
        results, rows = _export(ctx, ids)
        return Reply({"action": action, "results": results, "customers": rows,
                      "summary": _summary(results)})
    return Reply({"action": action, "results": results, "summary": _summary(results)})


def _customers(ctx: Context, ids: list[str]) -> list[tuple[str, object]]:
    """Each id with customer_sync's answer (the customer, or its Problem), asked in chunks."""
    found = []
    for start in range(0, len(ids), _EXPORT_CHUNK):
        chunk = ids[start:start + _EXPORT_CHUNK]
        answers = ctx.backends.gather([("customer_sync", "get_customer", (ctx.store_id, c), {})
                                       for c in chunk])
        found.extend(zip(chunk, answers))
    return found


def _known(ctx: Context, ids: list[str]) -> tuple[list[str], list[str]]:
    """The ids customer_sync knows, and the rest. segmentation makes a profile for any id it
    is asked to tag (events may name a customer before it is synced), so the gateway asks
    first: tagging an id nobody has would otherwise list a customer who does not exist."""
    known, unknown = [], []
    for customer_id, answer in _customers(ctx, ids):
        if isinstance(answer, Problem):
            if answer.status != 404:
                raise answer
            unknown.append(customer_id)
        else:
            known.append(customer_id)
    return known, unknown


def _export(ctx: Context, ids: list[str]) -> tuple[list, list]:
    results, rows = [], []
    for customer_id, answer in _customers(ctx, ids):
        if isinstance(answer, Problem):
            results.append({"customer_id": customer_id,
                            "outcome": "not_found" if answer.status == 404 else "failed",
                            **({} if answer.status == 404 else {"error": answer.detail})})
        else:
            results.append({"customer_id": customer_id, "outcome": "exported"})
            rows.append(answer)
    return results, rows


def _summary(results: list[dict]) -> dict:
    summary: dict[str, int] = {}
    for row in results:
        summary[row["outcome"]] = summary.get(row["outcome"], 0) + 1
    return summary


BULK_BODY = s.obj(
    {"action": {"enum": list(ACTIONS)},
     "customer_ids": {"type": "array", "minItems": 1, "maxItems": MAX_SELECTION,
                      "items": {"type": "string", "minLength": 1, "maxLength": 64}}},
    {"status": {"enum": ["active", "inactive"]},
     "tags": {"type": "array", "minItems": 1, "maxItems": 50, "items": s.SLUG},
     "groups": {"type": "array", "minItems": 1, "maxItems": 50, "items": s.SLUG},
     "orders": {"enum": ["anonymise", "delete"],
                "description": "for delete: keep the orders anonymised, or delete them"}},
    additionalProperties=False)
BULK_RESULT = s.obj({"customer_id": s.STRING, "outcome": s.STRING}, {"error": s.STRING})
BULK_ANSWER = s.obj({"action": s.STRING, "results": {"type": "array", "items": BULK_RESULT},
                     "summary": {"type": "object", "additionalProperties": s.INTEGER}},
                    {"customers": {"type": "array", "items": s.CUSTOMER}})

ROUTES = [
    Route("POST", "/customers/bulk", bulk, "Act on a selection: set status, add tags, add to "
          "groups, export, or delete (keeping orders anonymised or deleting them)", "customers",
          scope="write", body=BULK_BODY, responses={200: BULK_ANSWER}),
]
