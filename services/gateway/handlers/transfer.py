"""CSV import (checked, previewed, then applied) and streamed CSV or JSON export of customers."""
from __future__ import annotations

import csv
import io
import json
import logging
from typing import Iterable, Iterator

from werkzeug.wrappers import Response

from services.gateway import schemas as s
from services.gateway.handlers.customers import (CUSTOM_FILTER_TEXT, FILTER_PARAMS,
                                                 SORT_VALUES, directory_sort, list_filters,
                                                 with_company_names)
from services.gateway.problems import Problem
from services.gateway.routing import Context, Param, Reply, Route

log = logging.getLogger(__name__)

MAX_IMPORT_ROWS = 10_000
IMPORT_SECONDS_PER_ROW = 0.05
_ADDRESS_COLUMNS = tuple(f"{kind}_{part}" for kind in ("billing", "shipping")
                         for part in ("address_1", "address_2", "city", "state", "postcode",
                                      "country"))
# What customer_sync's import accepts (a unit test holds the two lists together).
IMPORT_COLUMNS = ("email", "first_name", "last_name", "phone", "company", *_ADDRESS_COLUMNS,
                  "email_marketing", "email_marketing_source", "sms_marketing",
                  "sms_marketing_source", "tags", "groups")
EXPORT_COLUMNS = ("customer_id", "first_name", "last_name", "email", "company", "company_id",
                  "company_name", "city", "state", "country", "account_status", "segment",
                  "tags", "groups", "orders_count", "total_spent", "currency", "last_order_at",
                  "registered_at")
# A column setting one of the store's custom fields (customer_sync checks the key and cell).
CUSTOM_PREFIX = "custom."
MAX_CUSTOM_COLUMNS = 50
_EXPORT_PAGE = 500
IMPORT_MODES = ("create", "update", "upsert")
_LABEL_BATCH = 500


# The export's own column names, so an exported file imports as it is (into another store, say).
_ALIASES = {"city": "billing_city", "state": "billing_state", "country": "billing_country",
            "postcode": "billing_postcode", "address_1": "billing_address_1",
            "address_2": "billing_address_2"}


def _header(name: str) -> str:
    column = name.strip().lower().replace(" ", "_").replace("-", "_")
    return _ALIASES.get(column, column)


def parse_import(raw: bytes) -> tuple[list[dict], list[str]]:
    """Rows as dicts with their line numbers, and the columns that were ignored."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise Problem(400, f"the file is not UTF-8 text (byte {exc.start})",
                      kind="invalid-csv") from None
    try:
        reader = csv.reader(io.StringIO(text, newline=""))
        header = next(reader, None)
        if not header:
            raise Problem(400, "the file is empty; the first line names the columns",
                          kind="invalid-csv")
        columns = [_header(h) for h in header]
        if "email" not in columns:
            raise Problem(400, "the file needs an 'email' column", kind="invalid-csv",
                          errors={"email": ["column missing"]})
        if len(set(columns)) != len(columns):
            raise Problem(400, "a column is named twice", kind="invalid-csv")
        taken = [c for c in columns if c in IMPORT_COLUMNS or c.startswith(CUSTOM_PREFIX)]
        if sum(1 for c in taken if c.startswith(CUSTOM_PREFIX)) > MAX_CUSTOM_COLUMNS:
            raise Problem(400, f"at most {MAX_CUSTOM_COLUMNS} custom.<key> columns",
                          kind="invalid-csv", errors={"custom": ["too many columns"]})
        ignored = [c for c in columns if c not in taken]
        rows = []
        for values in reader:
            if not any(v.strip() for v in values):
                continue
            if len(rows) >= MAX_IMPORT_ROWS:
                raise Problem(413, f"at most {MAX_IMPORT_ROWS} rows per import; split the file",
                              kind="too-many-rows")
            row = {"line": reader.line_num}
            for column, value in zip(columns, values):
                if column in taken:
                    row[column] = value.strip()
            if len(values) != len(columns):
                row["column_count"] = len(values)
            rows.append(row)
    except csv.Error as exc:
        raise Problem(400, f"the file is not valid CSV: {exc}", kind="invalid-csv") from None
    return rows, ignored


def _cell_slugs(value: str) -> list[str]:
    return [s.strip().lower() for s in (value or "").split(",") if s.strip()]


def _unknown_groups(ctx: Context, rows: list[dict]) -> list[dict]:
    """Rows naming a group the store has not saved, refused before anything is applied
    (segmentation only adds customers to saved groups)."""
    named = {g for row in rows for g in _cell_slugs(row.get("groups", ""))}
    if not named:
        return []
    saved = {g["slug"] for g in ctx.call("segmentation", "list_groups", ctx.store_id)}
    refused = []
    for row in rows:
        unknown = [g for g in _cell_slugs(row.get("groups", "")) if g not in saved]
        if unknown:
            refused.append({"line": row["line"], "email": row.get("email") or None,
                            "outcome": "invalid", "errors": {"groups": [
                                f"no such group: {', '.join(unknown[:5])[:200]}; create it "
                                "first"]}})
    return refused


def _apply_labels(ctx: Context, report: list[dict]) -> int:
    """Tag and group the customers the import created or holds, through segmentation's own
    tagging (it publishes customer.tagged and customer.group_joined). A row whose labels
    could not all be applied says so in its warnings; applying the file again in upsert
    mode finishes them. Answers how many rows had all their labels applied."""
    rows = [r for r in report if r.get("customer_id") and (r.get("tags") or r.get("groups"))
            and r["outcome"] in ("create", "update", "unchanged")]
    failed: dict[int, dict[str, list[str]]] = {}

    def note(row: dict, field: str, message: str) -> None:
        failed.setdefault(row["line"], {}).setdefault(field, []).append(message)

    def each_batch(value_of):
        batches: dict = {}
        for row in rows:
            for value in value_of(row):
                batches.setdefault(value, []).append(row)
        for value, members in batches.items():
            for start in range(0, len(members), _LABEL_BATCH):
                yield value, members[start:start + _LABEL_BATCH]

    for tags, members in each_batch(lambda r: [tuple(r["tags"])] if r.get("tags") else []):
        ids = [r["customer_id"] for r in members]
        try:
            results = ctx.call("segmentation", "bulk_tag", ctx.store_id, ids, list(tags),
                               ctx.actor)["results"]
        except Problem as problem:
            results = {i: problem.detail for i in ids}
        for row in members:
            if results.get(row["customer_id"]) not in ("tagged", "unchanged"):
                note(row, "tags", f"not tagged: {results.get(row['customer_id'])}")
    for group, members in each_batch(lambda r: r.get("groups") or []):
        ids = [r["customer_id"] for r in members]
        try:
            results = ctx.call("segmentation", "add_to_group", ctx.store_id, ids, group,
                               ctx.actor)["results"]
        except Problem as problem:
            results = {i: problem.detail for i in ids}
        for row in members:
            if results.get(row["customer_id"]) not in ("changed", "unchanged"):
                note(row, "groups", f"not added to {group}: {results.get(row['customer_id'])}")
    for row in rows:
        if row["line"] in failed:
            row["warnings"] = {**(row.get("warnings") or {}), **failed[row["line"]]}
    return len(rows) - len(failed)


def import_customers(ctx: Context) -> Reply:
    rows, ignored = parse_import(ctx.body)
    if not rows:
        raise Problem(400, "the file has no rows below its header", kind="invalid-csv")
    refused = _unknown_groups(ctx, rows)
    refused_lines = {r["line"] for r in refused}
    rows = [r for r in rows if r["line"] not in refused_lines]
    # A large file takes customer_sync a while (about 20 ms a row on mongomock): wait for it
    # rather than answer 504 for work that is going on. Applying again imports nothing twice.
    answer = ctx.call("customer_sync", "import_customers", ctx.store_id, rows,
                      ctx.query["apply"], ctx.actor, ctx.query["mode"],
                      timeout=max(ctx.backends.timeout, IMPORT_SECONDS_PER_ROW * len(rows)))
    summary = answer["summary"]
    if refused:
        answer["rows"] = sorted(answer["rows"] + refused, key=lambda r: r["line"])
        summary["rows"] += len(refused)
        summary["invalid"] += len(refused)
    summary["labelled"] = _apply_labels(ctx, answer["rows"]) if ctx.query["apply"] else 0
    return Reply({**answer, "applied": ctx.query["apply"], "ignored_columns": ignored})


def _safe_cell(value) -> str:
    """Spreadsheets run cells that start with = + - @ as formulas: defuse them."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def export_row(item: dict, custom_keys: Iterable[str] = ()) -> dict:
    """A CSV row; `custom_keys` add a `custom.<key>` column each (the import reads it back)."""
    stats = item.get("stats") or {}
    spent = stats.get("total_spent") or {}
    custom = item.get("custom_fields") or {}
    return {
        **{CUSTOM_PREFIX + key: _cell_text(custom.get(key)) for key in custom_keys},
        "customer_id": item["customer_id"], "first_name": item.get("first_name", ""),
        "last_name": item.get("last_name", ""), "email": item.get("email") or "",
        "company": item.get("company", ""), "company_id": item.get("company_id") or "",
        "company_name": item.get("company_name") or "", "city": item.get("city", ""),
        "state": item.get("state", ""), "country": item.get("country", ""),
        "account_status": item.get("account_status", ""), "segment": item.get("segment") or "",
        "tags": ";".join(item.get("tags") or []), "groups": ";".join(item.get("groups") or []),
        "orders_count": stats.get("orders_count", 0), "total_spent": spent.get("amount", 0),
        "currency": spent.get("currency", ""), "last_order_at": stats.get("last_order_at") or "",
        "registered_at": item.get("registered_at") or "",
    }


def _cell_text(value) -> str:
    """A custom field value as the import reads it back (booleans as true/false)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _pages(ctx: Context) -> Iterator[dict]:
    filters, sort = list_filters(ctx), directory_sort(ctx.query["sort"])
    cursor = None
    while True:
        answer = ctx.call("segmentation", "search_customers", ctx.store_id, filters, sort,
                          {"size": _EXPORT_PAGE, "cursor": cursor})
        # Names resolved a page at a time: bounded by the page, never the whole store.
        yield from with_company_names(ctx, answer["items"])
        cursor = answer.get("next_cursor")
        if not cursor:
            return


def export_customers(ctx: Context) -> Response:
    # The first page is read before answering, so a bad filter or a service that is down is
    # a proper problem response rather than a broken download.
    pages = _pages(ctx)
    first = next(pages, None)
    fmt = ctx.query["format"]

    def items() -> Iterator[dict]:
        if first is not None:
            yield first
            yield from pages

    # One column a custom field, in the store's order: read before answering, as the page is.
    custom_keys = ([f["key"] for f in s.fields_of(ctx.call(
        "customer_sync", "list_custom_fields", ctx.store_id), "customer")]
        if fmt == "csv" else [])

    def csv_body() -> Iterator[str]:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, lineterminator="\r\n", fieldnames=[
            *EXPORT_COLUMNS, *(CUSTOM_PREFIX + key for key in custom_keys)])
        writer.writeheader()
        for count, item in enumerate(_guarded(items(), ctx), 1):
            writer.writerow({k: _safe_cell(v)
                             for k, v in export_row(item, custom_keys).items()})
            if count % 100 == 0:
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
        yield buffer.getvalue()

    def json_body() -> Iterator[str]:
        yield "["
        for count, item in enumerate(_guarded(items(), ctx)):
            yield ("," if count else "") + json.dumps(item, default=str)
        yield "]"

    name = f"customers-{ctx.store_id}.{fmt}"
    return Response(csv_body() if fmt == "csv" else json_body(),
                    mimetype="text/csv" if fmt == "csv" else "application/json",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


def _guarded(items: Iterator[dict], ctx: Context) -> Iterator[dict]:
    """Once streaming has begun the status is sent, so a failure cannot become a problem
    response. It is logged with the request id and raised on: the server then drops the
    connection without the chunked body's last chunk, and the client sees a broken download
    rather than a file that merely looks complete."""
    try:
        yield from items
    except Problem as problem:
        log.error("export for request %s stopped: %s", ctx.request_id, problem.detail)
        raise


ROUTES = [
    Route("POST", "/imports/customers", import_customers, "Import customers from CSV: checked "
          "row by row, duplicates reported; a preview unless apply=true", "customers",
          scope="write", body={"type": "string", "description": "CSV with a header line; "
                               "columns: " + ", ".join(IMPORT_COLUMNS)
                               + ", and custom.<key> for each custom field"},
          body_media_type="text/csv",
          query=[Param("apply", "import the valid new rows (otherwise only a preview)",
                       "boolean", default=False),
                 Param("mode", "create: new emails only, held ones reported as exists; update: "
                       "change held customers (matched by email) to the row's non-empty cells, "
                       "create nobody; upsert: both", enum=IMPORT_MODES, default="create")],
          responses={200: s.obj({"rows": {"type": "array", "items": s.obj(
              {"line": s.INTEGER, "outcome": s.STRING}, {
                  "email": s.STRING, "errors": s.ANY_OBJECT,
                  "consent": {"type": "array", "items": s.STRING,
                              "description": "purposes whose consent the row's proof records"},
                  "warnings": {**s.ANY_OBJECT, "description": "per field: what the row asked "
                               "that was not done (consent of someone already held)"}})},
              "summary": s.obj({k: s.INTEGER for k in ("rows", "create", "duplicate_in_file",
                                                       "exists", "invalid", "created")},
                               {"applied": s.BOOLEAN, "ignored_columns": {"type": "array"},
                                "mode": {"enum": list(IMPORT_MODES)},
                                **{k: s.INTEGER for k in ("update", "unchanged", "refused",
                                                          "updated", "labelled")}},
                               description="how many rows had each outcome; `created` is how "
                                           "many were imported (0 in a preview)"),
              "applied": s.BOOLEAN,
              "ignored_columns": {"type": "array", "items": s.STRING}})}),
    Route("GET", "/exports/customers", export_customers, "Export customers (any filter of the "
          "list), streamed as CSV or JSON", "customers",
          query=FILTER_PARAMS + [
              Param("sort", "sort field; a leading - sorts descending", enum=SORT_VALUES,
                    default="-registered"),
              Param("format", "csv or json", enum=("csv", "json"), default="csv")],
          responses={200: {"type": "string", "description": "CSV with a header line: "
                           + ", ".join(EXPORT_COLUMNS)
                           + ", then custom.<key> for each custom field"}},
          response_media_type="text/csv",
          alternative_content={"application/json": {"type": "array", "items": s.CUSTOMER_ROW}},
          description="`format=json` answers application/json: an array of the list's rows. "
                      + CUSTOM_FILTER_TEXT),
]
