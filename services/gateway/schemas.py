"""JSON Schemas of the API's bodies, for the OpenAPI document and request validation.

Objects allow extra properties: services add fields over time (never remove them), and a
client must ignore what it does not know. What is listed as required is promised."""
from __future__ import annotations

from services.gateway.auth import SCOPES
from services.gateway.routing import COMPANY_ID_PATTERN, SLUG_PATTERN

STRING = {"type": "string"}
NULLABLE_STRING = {"type": ["string", "null"]}
TIME = {"type": "string", "format": "date-time"}
NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}
INTEGER = {"type": "integer"}
BOOLEAN = {"type": "boolean"}
ANY_OBJECT = {"type": "object"}
CURSOR = {"type": ["string", "null"], "description": "pass as `cursor` for the next page"}
SLUG = {"type": "string", "pattern": SLUG_PATTERN,
        "description": "lower-case letters, digits, _ and -, starting with a letter or digit"}


def obj(required: dict, optional: dict | None = None, **extra) -> dict:
    return {"type": "object", "required": list(required),
            "properties": {**required, **(optional or {})}, **extra}


def nullable(schema: dict) -> dict:
    return {"anyOf": [schema, {"type": "null"}]}


def page_of(item: dict, with_total: bool = False) -> dict:
    required = {"items": {"type": "array", "items": item}, "next_cursor": CURSOR}
    if with_total:
        required["total"] = INTEGER
    return obj(required)


MONEY = obj({"amount": INTEGER, "currency": STRING},
            description="integer minor units (cents) and an ISO-4217 code")
NULLABLE_MONEY = nullable(MONEY)

PROBLEM = obj({"type": STRING, "title": STRING, "status": INTEGER, "detail": STRING,
               "instance": STRING, "request_id": STRING},
              {"errors": {"type": "object", "description": "the failing fields: field name to "
                          "its messages (nested objects for nested fields)",
                          "additionalProperties": {"type": ["array", "object"]}}},
              description="RFC 7807 problem details")

ADDRESS = {"type": "object", "additionalProperties": {"type": ["string", "null"]}}

# A customer without orders has no currency yet: {"amount": 0, "currency": null}.
STATS_MONEY = nullable(obj({"amount": INTEGER, "currency": NULLABLE_STRING}))
STATS = obj({"orders_count": INTEGER},
            {"total_spent": STATS_MONEY, "average_order_value": STATS_MONEY,
             "last_order_at": NULLABLE_TIME})

CUSTOMER_ROW = obj(
    {"customer_id": STRING, "name": STRING, "email": NULLABLE_STRING, "account_status": STRING,
     "segment": NULLABLE_STRING, "tags": {"type": "array", "items": STRING},
     "groups": {"type": "array", "items": STRING}, "stats": nullable(STATS)},
    {"first_name": STRING, "last_name": STRING, "company": STRING, "city": STRING,
     "state": STRING, "country": STRING, "registered": BOOLEAN, "registered_at": NULLABLE_TIME,
     "custom_fields": ANY_OBJECT, "company_id": NULLABLE_STRING,
     "company_name": {**NULLABLE_STRING, "description": "the company's name (null: none, or "
                                                        "no longer there)"}})

CUSTOMER = obj(
    # A customer deleted by staff or erased keeps no name (found by fuzzing: null names).
    {"customer_id": STRING, "store_id": STRING, "email": NULLABLE_STRING,
     "first_name": NULLABLE_STRING, "last_name": NULLABLE_STRING, "registered": BOOLEAN},
    {"phone": NULLABLE_STRING, "company": NULLABLE_STRING, "billing": nullable(ADDRESS),
     "shipping": nullable(ADDRESS), "status": STRING, "account_status": NULLABLE_STRING,
     "inactive_reason": NULLABLE_STRING, "date_created": NULLABLE_TIME, "date_modified": NULLABLE_TIME,
     "custom_fields": {"type": "object", "description": "the store's custom fields: key to value"},
     "company_id": {**NULLABLE_STRING, "description": "the company the customer belongs to"}})

ORDER = obj({"order_id": STRING, "number": STRING, "status": STRING, "total": MONEY},
            {"date_created": NULLABLE_TIME, "refunds": {"type": "array"}})

TAG_ON_CUSTOMER = obj({"tag": STRING, "source": NULLABLE_STRING},
                      {"rule_id": NULLABLE_STRING, "added_at": NULLABLE_TIME})
GROUP_ON_CUSTOMER = obj({"group": STRING, "source": NULLABLE_STRING},
                        {"rule_id": NULLABLE_STRING})

# segmentation's stats of one customer: money as integer minor units in `currency` (null
# before the first order).
PROFILE_STATS = obj({"orders_count": INTEGER, "total_spent": INTEGER,
                     "average_order_value": INTEGER, "currency": NULLABLE_STRING},
                    {"first_order_at": NULLABLE_TIME, "last_order_at": NULLABLE_TIME,
                     "avg_days_between_orders": {"type": ["number", "null"]},
                     "largest_order": {"type": ["integer", "null"]}})

PROFILE = obj({"customer_id": STRING, "status": STRING, "segment": NULLABLE_STRING,
               "stats": nullable(PROFILE_STATS),
               "tags": {"type": "array", "items": TAG_ON_CUSTOMER},
               "groups": {"type": "array", "items": GROUP_ON_CUSTOMER}},
              {"store_id": STRING, "country": STRING, "email_domain": STRING})

# The store's currency is unknown until its first order: {"amount": 0, "currency": null}.
CREDIT = obj({"amount": INTEGER, "currency": NULLABLE_STRING})
LOYALTY_ACCOUNT = obj(
    {"customer_id": STRING, "status": STRING, "balance": INTEGER, "negative_balance": BOOLEAN,
     "debt": INTEGER, "cash_value": NULLABLE_MONEY, "tier": STRING,
     "points_in_window": INTEGER, "member_since": NULLABLE_TIME,
     "next_expiry": nullable(obj({"at": TIME, "points": INTEGER})),
     "store_credit": {**CREDIT, "description": "the sum of the customer's unused store-credit "
                                               "coupons"}},
    {"store_id": STRING,
     "rewards_pending": {"type": "integer", "minimum": 0,
                         "description": "rewards whose coupon is not at the shop yet"},
     "legacy_credit": {**CREDIT, "description": "store credit held from before credit became "
                                                "coupons, not yet turned into one"}})

NOTE_CATEGORIES = ["general", "follow-up", "complaint", "feedback", "meeting", "phone-call",
                   "internal"]
NOTE = obj({"note_id": STRING, "customer_id": STRING, "category": {"enum": NOTE_CATEGORIES},
            "text": STRING, "created_at": TIME},
           {"author": NULLABLE_STRING, "updated_at": NULLABLE_TIME})
NEW_NOTE = obj({"category": {"enum": NOTE_CATEGORIES},
                "text": {"type": "string", "minLength": 1, "maxLength": 10000}},
               additionalProperties=False)
NOTE_CHANGES = {"type": "object", "minProperties": 1, "additionalProperties": False,
                "properties": NEW_NOTE["properties"]}

REMINDER = obj({"reminder_id": STRING, "customer_id": STRING, "due_at": TIME, "text": STRING,
                "status": {"enum": ["open", "done"]}},
               {"assignee": NULLABLE_STRING, "created_by": NULLABLE_STRING,
                "created_at": NULLABLE_TIME, "completed_at": NULLABLE_TIME,
                "completed_by": NULLABLE_STRING})
NEW_REMINDER = obj({"due_at": TIME, "text": {"type": "string", "minLength": 1, "maxLength": 2000}},
                   {"assignee": {"type": "string", "maxLength": 200}}, additionalProperties=False)

DELETED_NOTE = obj({"note_id": STRING, "customer_id": STRING, "deleted": BOOLEAN})
DELETED_REMINDER = obj({"reminder_id": STRING, "customer_id": STRING, "deleted": BOOLEAN})

TIMELINE_ENTRY = obj({"entry_id": STRING, "at": TIME, "kind": STRING, "summary": STRING},
                     {"actor": NULLABLE_STRING, "details": nullable(ANY_OBJECT)})

CUSTOMER_DETAIL = obj(
    {"customer": CUSTOMER, "segment": NULLABLE_STRING,
     "tags": {"type": "array", "items": TAG_ON_CUSTOMER},
     "groups": {"type": "array", "items": GROUP_ON_CUSTOMER},
     "stats": nullable(PROFILE_STATS), "loyalty": nullable(LOYALTY_ACCOUNT),
     "recent_orders": {"type": "array", "items": ORDER},
     "notes": {"type": "array", "items": NOTE},
     "reminders": {"type": "array", "items": REMINDER},
     "timeline": {"type": "array", "items": TIMELINE_ENTRY},
     "unavailable": {"type": "array", "items": STRING,
                     "description": "parts left out because their service did not answer"},
     "company": nullable(obj({"company_id": STRING, "name": NULLABLE_STRING}))})

CUSTOMER_EDIT = {
    "type": "object", "minProperties": 1, "additionalProperties": False,
    "properties": {
        "first_name": {"type": "string", "maxLength": 200},
        "last_name": {"type": "string", "maxLength": 200},
        "email": {"type": "string", "format": "email", "maxLength": 320},
        "phone": {"type": "string", "maxLength": 50},
        "company": {"type": "string", "maxLength": 200},
        "billing": ADDRESS, "shipping": ADDRESS,
        "account_status": {"enum": ["active", "inactive"]},
    },
}

API_KEY = obj({"key_id": STRING, "store_id": STRING, "name": STRING,
               "scopes": {"type": "array", "items": {"enum": list(SCOPES)}},
               "created_at": TIME},
              {"rate_limit_per_minute": {"type": ["integer", "null"]},
               "created_by": NULLABLE_STRING, "last_used_at": NULLABLE_TIME,
               "revoked_at": NULLABLE_TIME, "revoked_by": NULLABLE_STRING})
NEW_API_KEY_ANSWER = {**API_KEY, "required": API_KEY["required"] + ["api_key"],
                      "properties": {**API_KEY["properties"], "api_key": {
                          "type": "string", "description": "shown this once; store it safely"}}}
NEW_API_KEY = obj({"name": {"type": "string", "minLength": 1, "maxLength": 100},
                   "scopes": {"type": "array", "minItems": 1,
                              "items": {"enum": list(SCOPES)}}},
                  {"rate_limit_per_minute": {"type": "integer", "minimum": 1, "maximum": 100000}},
                  additionalProperties=False)

DELETED = obj({"deleted": STRING}, description="the id of what was deleted")

# -- webhook deliveries in quarantine (customer_sync) -------------------------------------------
QUARANTINED_DELIVERY = obj(
    {"quarantine_id": STRING, "store_id": STRING, "topic": STRING,
     "resource_id": {"type": ["integer", "null"]}, "error": NULLABLE_STRING,
     "attempts": {"type": ["integer", "null"]}, "replays": INTEGER, "received_at": NULLABLE_TIME,
     "quarantined_at": NULLABLE_TIME},
    description="a webhook delivery answered 200 that could not be applied: kept until replayed")
QUARANTINED_DELIVERY_BODY = {
    **QUARANTINED_DELIVERY, "required": QUARANTINED_DELIVERY["required"] + ["payload"],
    "properties": {**QUARANTINED_DELIVERY["properties"],
                   "payload": {"type": ["object", "null"],
                               "description": "the JSON the shop sent (null: not JSON, see body)"},
                   "body": {"type": "string"}}}
QUARANTINE_REPLAY = obj(
    {}, {"quarantine_ids": {"type": "array", "minItems": 1, "maxItems": 1000, "uniqueItems": True,
                            "items": {"type": "string", "minLength": 1, "maxLength": 64}},
         "all": {"type": "boolean", "description": "replay every quarantined delivery (up to "
                                                   "1000 a call)"}},
    additionalProperties=False, minProperties=1)
QUARANTINE_REPLAYED = obj({"store_id": STRING, "replayed": {"type": "array", "items": STRING},
                           "not_found": {"type": "array", "items": STRING},
                           "remaining": INTEGER})

# Custom fields (customer_sync's crm/field_rules.py holds the rules; these bound the input).
CUSTOM_FIELD_TYPES = ["text", "number", "date", "choice", "boolean"]
# Whose values a field holds: a customer's (as every field before companies) or a company's.
CUSTOM_FIELD_OWNERS = ("customer", "company")


def fields_of(definitions: list[dict], owner: str) -> list[dict]:
    """The store's custom field definitions that apply to `owner` (customer or company)."""
    return [d for d in definitions if (d.get("applies_to") or "customer") == owner]
CUSTOM_FIELD_KEY = {"type": "string", "pattern": r"^[a-z][a-z0-9_]{0,39}$",
                    "description": "1-40 lower-case letters, digits or _, starting with a letter"}
_NULLABLE_NUMBER = {"type": ["number", "null"]}
_FIELD_LIMITS = {
    "label": {"type": "string", "minLength": 1, "maxLength": 100},
    "type": {"enum": CUSTOM_FIELD_TYPES},
    "options": {"type": "array", "minItems": 1, "maxItems": 100,
                "items": {"type": "string", "minLength": 1, "maxLength": 100},
                "description": "a choice field's options"},
    "required": BOOLEAN,
    "min": {**_NULLABLE_NUMBER, "description": "a number field's least value"},
    "max": {**_NULLABLE_NUMBER, "description": "a number field's greatest value"},
    "max_length": {"type": ["integer", "null"], "minimum": 1, "maximum": 2000,
                   "description": "a text field's longest value (500 when absent)"},
}
CUSTOM_FIELD = obj(
    {"key": STRING, "label": STRING, "type": {"enum": CUSTOM_FIELD_TYPES}, "required": BOOLEAN},
    {"options": {"type": ["array", "null"], "items": STRING}, "min": _NULLABLE_NUMBER,
     "max": _NULLABLE_NUMBER, "max_length": {"type": ["integer", "null"]},
     "applies_to": {"enum": list(CUSTOM_FIELD_OWNERS)},
     "created_at": NULLABLE_TIME, "updated_at": NULLABLE_TIME})
NEW_CUSTOM_FIELD = obj({"key": CUSTOM_FIELD_KEY, "label": _FIELD_LIMITS["label"],
                        "type": _FIELD_LIMITS["type"]},
                       {**{k: v for k, v in _FIELD_LIMITS.items() if k not in ("label", "type")},
                        "applies_to": {"enum": list(CUSTOM_FIELD_OWNERS),
                                       "description": "whose field it is (customer when "
                                                      "absent)"}},
                       additionalProperties=False)
CUSTOM_FIELD_CHANGES = {"type": "object", "minProperties": 1, "additionalProperties": False,
                        "properties": _FIELD_LIMITS}
DELETED_CUSTOM_FIELD = obj(
    {"key": STRING, "deleted": BOOLEAN, "values_removed": INTEGER},
    {"finishing": {"type": "boolean", "description": "the call stopped short (`deleted` "
                   "false): the field stays hidden and the background sweep finishes it"}})
# Values are judged by customer_sync against the store's definitions, so that every refusal
# names its field as `custom_fields.<key>`; here only the count is bounded.
CUSTOM_VALUES = {"type": "object", "maxProperties": 50,
                 "description": "the customer's values, key to value (text, number, "
                                "YYYY-MM-DD date, one of a choice's options, or boolean); keys "
                                "left out or null have no value"}
CUSTOM_VALUES_SET = obj({"customer_id": STRING, "custom_fields": ANY_OBJECT, "changed": BOOLEAN})

# -- companies (customer_sync owns them; segmentation rolls up their members' stats) ----------
# The length too: a body's pattern is searched, and `$` matches before a trailing newline.
COMPANY_ID = {"type": "string", "pattern": COMPANY_ID_PATTERN, "minLength": 27, "maxLength": 27,
              "description": "co_ and 24 lower-case hex characters"}
COMPANY_ADDRESS_PARTS = ("address_1", "address_2", "city", "state", "postcode", "country")
COMPANY_ADDRESS = obj({part: STRING for part in COMPANY_ADDRESS_PARTS},
                      description="empty strings where not set; country is ISO 3166-1 alpha-2")
COMPANY = obj(
    {"company_id": STRING, "store_id": STRING, "name": STRING, "domain": NULLABLE_STRING,
     "vat_id": NULLABLE_STRING, "address": COMPANY_ADDRESS, "custom_fields": ANY_OBJECT,
     "group": {**NULLABLE_STRING, "description": "the group whose B2B terms members get"},
     "member_count": INTEGER, "created_at": TIME, "updated_at": TIME},
    {"created_by": NULLABLE_STRING, "updated_by": NULLABLE_STRING})
COMPANY_STATS = obj({"members": INTEGER, "orders_count": INTEGER,
                     "total_spent": obj({"amount": INTEGER, "currency": NULLABLE_STRING}),
                     "last_order_at": NULLABLE_TIME},
                    description="rolled up from the company's active members")
LISTED_COMPANY = {**COMPANY, "required": COMPANY["required"] + ["stats"],
                  "properties": {**COMPANY["properties"], "stats": nullable(COMPANY_STATS)}}
GROUP_TERMS = nullable(obj({"name": STRING, "discount_percent": NULLABLE_STRING,
                            "free_shipping_threshold": {"type": ["integer", "null"]},
                            "payment_terms_days": {"type": ["integer", "null"]}}))
COMPANY_DETAIL = {**COMPANY, "required": COMPANY["required"] + ["stats", "group_terms"],
                  "properties": {**COMPANY["properties"], "stats": COMPANY_STATS,
                                 "group_terms": GROUP_TERMS}}
COMPANY_DELETION = obj(
    {"company_id": STRING, "deleted": BOOLEAN, "members_released": INTEGER},
    {"finishing": {**BOOLEAN, "description": "true (with `deleted` false) when the request "
                   "stopped before the end: the company is gone from every list and the "
                   "background sweep releases the rest of its members"}})
_COMPANY_TEXT = {"type": ["string", "null"], "maxLength": 200}
_COMPANY_FIELDS = {
    "name": {"type": "string", "minLength": 1, "maxLength": 200},
    "domain": {"type": ["string", "null"], "maxLength": 253,
               "description": "a lower-case hostname, unique in the store; free-mail domains "
                              "are refused"},
    "vat_id": {"type": ["string", "null"], "maxLength": 30,
               "description": "2-letter country prefix and 2-13 letters or digits"},
    "address": {"type": ["object", "null"], "additionalProperties": False,
                "properties": {part: _COMPANY_TEXT for part in COMPANY_ADDRESS_PARTS}},
    "custom_fields": {**CUSTOM_VALUES, "type": ["object", "null"],
                      "description": "values of the custom fields that apply to companies"},
    "group": {"anyOf": [SLUG, {"type": "null"}],
              "description": "a group of the store (GET /groups), or null"},
}
NEW_COMPANY = obj({"name": _COMPANY_FIELDS["name"]},
                  {k: v for k, v in _COMPANY_FIELDS.items() if k != "name"},
                  additionalProperties=False)
COMPANY_CHANGES = {"type": "object", "minProperties": 1, "additionalProperties": False,
                   "properties": _COMPANY_FIELDS,
                   "description": "the fields to change; null clears an optional one"}
CUSTOMER_COMPANY = obj({"customer_id": STRING, "company_id": NULLABLE_STRING,
                        "changed": BOOLEAN})
COMPANY_MATCHING = obj({"match_email_domain": BOOLEAN},
                       description="join a customer without a company to the company whose "
                                   "domain is their email's")
