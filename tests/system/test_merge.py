"""Merging two records of one person and undoing it, through every service (docs/merging.md).

Every service is its own OS process (the fault tests' stack) and a store gets a seeded shop
whose small history is delivered first (StoreScenario). Then, live, three customers register
through the shop's webhooks: two are one person (the same name, phone and postcode, two
emails), the third is someone else. Each of the two gets orders, a note and a reminder (the
gateway's API), a consent (email marketing granted on one, withdrawn on the other, the
gateway's consent API) and delayed workflow sends that wait as scheduled.

Every service is checked against the oracle before the merge (scenario.check_consistency and
the explicit checks here), after a merge through the gateway, after a new order on the merged
record's own shop account (it goes to the primary), and after the unmerge by the rules of
docs/merging.md. The oracle is the traffic driver's `expected()` (orders, totals, earning
bases from the shop itself) with the loyalty programme's rule applied here (`points`), never
the services' own figures.

Deterministic: seeded shop, every wait on a condition (harness.wait_quiet), order totals
chosen so the tier that each earn sees is fixed, workflow delays of a week so no scheduled
send falls due during the run. Sizes: MERGE_CUSTOMERS and MERGE_ORDERS (default 8 and 30) for
the history, MERGE_SEED.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import requests

from demo.traffic import EARNING, WooTraffic
from tests.system.fault_stack import FaultStack, StoreScenario, size
from tests.system.scenario import pages, tier_rate

STORE = "mergeshop"
CUSTOMERS, ORDERS = size("MERGE_CUSTOMERS", 8), size("MERGE_ORDERS", 30)
SEED = size("MERGE_SEED", 57)
WEEK = 7 * 86400
# Workflows with a week's delay: their sends wait as scheduled for the whole run.
ON_ORDER, ON_COMPLETED = "thanks-later", "review-later"
MERGED_DUPLICATE = "merged duplicate"
OWN_TAG = "phoned-in"  # a manual tag on the merged record: it moves and comes back


class Gateway:
    """The HTTP API as an integration calls it, with a key of every scope the test needs."""

    def __init__(self, base_url: str, api_key: str) -> None:
        self.base = base_url + "/api/v1"
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {api_key}"

    def call(self, method: str, path: str, body: dict | None = None, expect: int = 200) -> dict:
        answer = self.session.request(method, self.base + path, json=body, timeout=60)
        assert answer.status_code == expect, (method, path, answer.status_code, answer.text)
        return answer.json()


def points(orders: list[dict], window: int = 0) -> tuple[int, int]:
    """The default programme's earn rule over orders in the order they earned: each order in
    an earning state earns basis x the rate of the tier that the points earned before it
    reach (scenario.TIER_RATES, per 100 minor units). Answers (points, the window after)."""
    total = 0
    for order in orders:
        if order["status"] in EARNING:
            earned = order["basis"] * tier_rate(window) // 100
            total, window = total + earned, window + earned
    return total, window


def person(expected: dict, woo_id: int) -> dict:
    """The oracle's view of one registered customer: order ids, counted orders, spend, and
    the loyalty orders in the order they were placed (each earns when placed here)."""
    exp = expected["customers"][f"woo:{woo_id}"]
    loyalty = [exp["loyalty_orders"][k] | {"order_id": k}
               for k in sorted(exp["loyalty_orders"], key=int)]
    return {"orders": {o["order_id"] for o in loyalty}, "orders_count": exp["orders_count"],
            "total_spent": exp["total_spent"], "loyalty": loyalty}


def order_ids(rpc, customer_id: str) -> set[str]:
    return {str(o["order_id"]) for o in pages(rpc.customer_sync.list_orders, STORE, customer_id)}


def stats(rpc, customer_id: str) -> tuple[int, int]:
    """Counted orders and spend (minor units) of an active profile."""
    found = rpc.segmentation.get_profile(STORE, customer_id)["stats"]
    return found["orders_count"], found["total_spent"] or 0


def tags(rpc, customer_id: str) -> set[str]:
    return {t["tag"] for t in rpc.segmentation.get_profile(STORE, customer_id)["tags"]}


def listed(rpc) -> set[str]:
    return {r["customer_id"] for r in pages(
        lambda store, page: rpc.segmentation.search_customers(store, None, None, page), STORE)}


def consent(rpc, customer_id: str) -> bool | None:
    state = rpc.gdpr.get_consent(STORE, customer_id)["purposes"].get("email_marketing") or {}
    return state.get("granted")


def timeline_ids(rpc, customer_id: str) -> set[str]:
    return {e["entry_id"] for e in pages(
        lambda store, page: rpc.customer_sync.timeline(store, customer_id, page), STORE)}


def sends_of(rpc, customer_id: str) -> dict[str, dict]:
    """The customer's sends of this test's delayed workflows, by send id."""
    return {s["_id"]: s for s in pages(lambda store, page: rpc.notifications.list_sends(
        store, {"customer_id": customer_id}, page), STORE, size=200)
        if s.get("workflow_id") in (ON_ORDER, ON_COMPLETED)}


def duplicate_groups(api: Gateway) -> list[dict]:
    """Every group the duplicate finder proposes (GET /duplicates, all pages)."""
    groups, cursor = [], None
    while True:
        page = api.call("GET", "/duplicates" + (f"?cursor={cursor}" if cursor else ""))
        groups += page["groups"]
        cursor = page.get("next_cursor")
        if not cursor:
            return groups


def add_workflows(api: Gateway) -> None:
    """Two transactional emails a week after an order and after a completed order: every
    customer's order leaves a scheduled send, and only the merged record has a completed one."""
    for slug, trigger in ((ON_ORDER, {"event": "order.placed"}),
                          (ON_COMPLETED, {"event": "order.updated", "to_status": "completed"})):
        api.call("PUT", f"/notifications/templates/{slug}", {
            "channel": "email", "subject": "A word from us, {{ customer.first_name }}",
            "text": "Thank you for your order.", "html": "<p>Thank you.</p>"})
        api.call("POST", "/notifications/workflows", {
            "workflow_id": slug, "name": slug, "enabled": True, "trigger": trigger,
            "delay_seconds": WEEK, "channel": "email", "template": slug,
            "purpose": "transactional"}, 201)


def test_merge_and_unmerge_move_every_services_data_and_give_it_back(stack: FaultStack):
    scenario = StoreScenario(stack, STORE, seed=SEED, customers=CUSTOMERS, orders=ORDERS,
                             span_days=30, start=datetime.now(timezone.utc).replace(
                                 tzinfo=None, microsecond=0) - timedelta(days=40))
    traffic, shop = scenario.traffic, scenario.shop
    try:
        _run(stack, scenario, traffic, shop)
    finally:
        scenario.close()


def _run(stack: FaultStack, scenario: StoreScenario, traffic: WooTraffic, shop) -> None:
    scenario.sign_up()
    scenario.deliver(traffic.order_deliveries)
    stack.quiet()
    scenario.lap("history delivered")
    with stack.rpc() as rpc:
        api = Gateway(stack.procs.web_url("gateway"), rpc.customer_sync.create_api_key(
            STORE, "merge test", ["read", "write", "gdpr"], "system-test")["api_key"])
    add_workflows(api)

    # -- live: one person with two accounts, and someone else --------------------------------
    shop.clock.catch_up(datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)
                        - timedelta(minutes=30))
    same = {"first_name": "Marta", "last_name": "Lindqvist"}
    address = {**same, "phone": "+49 170 1234567", "postcode": "10117", "city": "Berlin",
               "country": "DE", "address_1": "Friedrichstraße 12"}
    signed = [traffic.sign_up_now(**same, email="marta.lindqvist@example.se",
                                  billing={**address, "email": "marta.lindqvist@example.se"}),
              traffic.sign_up_now(**same, email="m.lindqvist@example.net",
                                  billing={**address, "email": "m.lindqvist@example.net"}),
              traffic.sign_up_now(first_name="Otto", last_name="Brenner",
                                  email="otto.brenner@example.de",
                                  billing={"first_name": "Otto", "last_name": "Brenner",
                                           "email": "otto.brenner@example.de",
                                           "phone": "+49 151 7654321", "postcode": "10115"})]
    assert [traffic.send_once(d) for d in signed] == [200] * 3
    woo_a, woo_b, woo_c = (d.resource_id for d in signed)
    stack.quiet()

    def order(woo_id: int, total: str, status: str = "processing"):
        # No shipping or tax: the earning basis is the total, so each earn's tier is known.
        return traffic.place_now(woo_id, status=status, total=total, shipping_total="0.00",
                                 total_tax="0.00")
    placed = [order(woo_a, "60.00"), order(woo_a, "30.00"), order(woo_b, "50.00"),
              order(woo_b, "25.00", "pending"), order(woo_c, "40.00")]
    assert [traffic.send_once(d) for d in placed] == [200] * len(placed)
    stack.quiet()
    b_completed, b_cancelled = placed[2].resource_id, placed[3].resource_id
    changed = [traffic.change_status_now(b_completed, "completed"),
               traffic.change_status_now(b_cancelled, "cancelled")]
    assert [traffic.send_once(d) for d in changed] == [200] * 2
    stack.quiet()

    with stack.rpc() as rpc:
        by_woo = {c["woo_customer_id"]: c["customer_id"] for c in pages(
            rpc.customer_sync.list_customers, STORE, None) if c.get("registered")}
    a, b, c = by_woo[woo_a], by_woo[woo_b], by_woo[woo_c]

    due = (datetime.now(timezone.utc) + timedelta(days=3)).replace(microsecond=0).isoformat()
    notes, reminders = {}, {}
    for cid, text in ((a, "Asked for a gift wrap"), (b, "Phoned about her second account")):
        notes[cid] = api.call("POST", f"/customers/{cid}/notes",
                              {"category": "phone-call", "text": text}, 201)["note_id"]
        reminders[cid] = api.call("POST", f"/customers/{cid}/reminders",
                                  {"due_at": due, "text": f"Call back: {text}"},
                                  201)["reminder_id"]
    api.call("PUT", f"/customers/{a}/consent", {"purpose": "email_marketing", "granted": True})
    api.call("PUT", f"/customers/{b}/consent", {"purpose": "email_marketing", "granted": False})
    api.call("POST", f"/customers/{b}/tags", {"tags": [OWN_TAG]}, 200)
    scenario.lap("live customers")

    # -- before the merge: every service as the oracle says -----------------------------------
    checked = scenario.settle_and_check()
    expected = checked["expected"]
    pa, pb = person(expected, woo_a), person(expected, woo_b)
    points_a, window_a = points(pa["loyalty"])
    points_b, window_b = points(pb["loyalty"])
    with stack.rpc() as rpc:
        for cid, p, pts in ((a, pa, points_a), (b, pb, points_b)):
            assert order_ids(rpc, cid) == p["orders"]
            assert stats(rpc, cid) == (p["orders_count"], p["total_spent"])
            assert rpc.loyalty.get_account(STORE, cid)["balance"] == pts
            assert [n["note_id"] for n in rpc.customer_sync.list_notes(STORE, cid)] == [notes[cid]]
            assert [r["reminder_id"] for r in rpc.customer_sync.list_reminders(STORE, cid)] == \
                [reminders[cid]]
        assert (consent(rpc, a), consent(rpc, b)) == (True, False)
        assert OWN_TAG in tags(rpc, b) and OWN_TAG not in tags(rpc, a)
        timeline_b = timeline_ids(rpc, b)
        assert timeline_b  # its sign-up, orders, note, tag and consent at least
        sends_b = sends_of(rpc, b)
        sends_a = sends_of(rpc, a)
    # Two orders of b are placed (one later cancelled) and one completed: three sends wait.
    assert sorted((s["workflow_id"], s["status"]) for s in sends_b.values()) == sorted([
        (ON_ORDER, "scheduled"), (ON_ORDER, "scheduled"), (ON_COMPLETED, "scheduled")]), sends_b
    assert {s["workflow_id"] for s in sends_a.values()} == {ON_ORDER}
    scenario.lap("checked before the merge")
    print("merge test, before:", {"a": (a, points_a, window_a), "b": (b, points_b, window_b)})

    # -- the merge: b into a, b's email chosen ------------------------------------------------
    # The duplicate finder proposes the two, by phone and by name and postcode, and not c.
    found = [g for g in duplicate_groups(api)
             if {a, b} & {r["customer_id"] for r in g["customers"]}]
    assert {frozenset(r["customer_id"] for r in g["customers"]) for g in found} == {
        frozenset({a, b})}, found
    assert {"phone", "name_postcode"} <= {kind for g in found for kind in g["matched"]}, found
    merge = api.call("POST", "/customers/merge", {
        "primary_id": a, "merged_ids": [b], "field_choices": {"email": b}}, 201)
    merge_id = merge["merge_id"]
    assert merge["state"] == "merged" and merge["changed_fields"] == ["email"], merge
    assert sorted(merge["moved"]["orders"]) == sorted(pb["orders"])
    assert sorted(s["woo_customer_id"] for s in merge["shop_accounts"]) == sorted([woo_a, woo_b])
    stack.quiet()
    scenario.lap("merged")
    merged_points = points_a + points_b  # lots move whole: nothing was spent
    with stack.rpc() as rpc:
        record_a, record_b = (rpc.customer_sync.get_customer(STORE, cid) for cid in (a, b))
        assert record_a["email"] == "m.lindqvist@example.net", record_a
        assert (record_b["status"], record_b.get("merged_into")) == ("merged", a), record_b
        # customer_sync: b's orders, note, reminder and timeline are a's now.
        assert order_ids(rpc, a) == pa["orders"] | pb["orders"]
        assert order_ids(rpc, b) == set()
        assert {n["note_id"] for n in rpc.customer_sync.list_notes(STORE, a)} == set(notes.values())
        assert {r["reminder_id"] for r in rpc.customer_sync.list_reminders(STORE, a)} == \
            set(reminders.values())
        assert timeline_b <= timeline_ids(rpc, a)
        # segmentation: a's stats are the sum; b is listed nowhere; b's manual tag moved.
        assert stats(rpc, a) == (pa["orders_count"] + pb["orders_count"],
                                 pa["total_spent"] + pb["total_spent"])
        assert b not in listed(rpc) and {a, c} <= listed(rpc)
        assert OWN_TAG in tags(rpc, a)
        # loyalty: b's points are a's; both ledgers still sum.
        account_a, account_b = (rpc.loyalty.get_account(STORE, cid) for cid in (a, b))
        assert (account_a["balance"], account_a["points_in_window"]) == \
            (merged_points, window_a + window_b), account_a
        assert (account_b["status"], account_b["balance"]) == ("merged", 0), account_b
        for cid in (a, b):
            assert rpc.loyalty.ledger_check(STORE, cid)["ok"], rpc.loyalty.ledger_check(STORE, cid)
        # gdpr: the most restrictive consent (b withdrew); b's own record unchanged.
        assert (consent(rpc, a), consent(rpc, b)) == (False, False)
        # notifications: b is in no audience; each of its waiting sends moved to a, or was
        # cancelled where a already waits for the same workflow.
        contact_b = rpc.notifications.export_customer(STORE, b)["contact"]
        assert contact_b["status"] == "merged", contact_b
        after_a = sends_of(rpc, a)
        after_b = sends_of(rpc, b)
    moved = {sid for sid in sends_b if sid in after_a}
    assert {after_a[sid]["workflow_id"] for sid in moved} == {ON_COMPLETED}, after_a
    assert all(after_a[sid]["status"] == "scheduled" for sid in moved)
    cancelled = set(sends_b) - moved
    assert {(after_b[sid]["status"], after_b[sid]["reason"]) for sid in cancelled} == {
        ("cancelled", MERGED_DUPLICATE)}, after_b
    assert {sends_b[sid]["workflow_id"] for sid in cancelled} == {ON_ORDER}
    # A message to a list naming all three reaches the two live records only.
    bulk = api.call("POST", "/notifications/bulk-sends", {
        "audience": {"customer_ids": [a, b, c]}, "template": ON_ORDER,
        "purpose": "transactional", "when": (datetime.now(timezone.utc) + timedelta(days=7))
        .replace(microsecond=0).isoformat(), "bulk_id": "merge-week-later"}, 202)
    assert bulk["total"] == 2, bulk
    with stack.rpc() as rpc:
        bulk_to = {s["customer_id"] for s in pages(lambda store, page: rpc.notifications
                   .list_sends(store, {"template": ON_ORDER}, page), STORE, size=200)
                   if s.get("bulk_id") == "merge-week-later"}
    assert bulk_to == {a, c}, bulk_to
    assert not [g for g in duplicate_groups(api)
                if b in {r["customer_id"] for r in g["customers"]}]  # nobody's duplicate now

    # -- a new order on b's own shop account goes to the primary ------------------------------
    new = order(woo_b, "40.00")
    assert traffic.send_once(new) == 200
    new_id = str(new.resource_id)
    waiting_a = {sid for sid, s in after_a.items() if s["status"] == "scheduled"}
    stack.quiet()
    scenario.lap("ordered after the merge")
    expected = traffic.expected()
    pb_now = person(expected, woo_b)
    [new_order] = [o for o in pb_now["loyalty"] if o["order_id"] == new_id]
    # Earned on a, at the tier both records' points reach together.
    new_points, _ = points([new_order], window_a + window_b)
    with stack.rpc() as rpc:
        assert order_ids(rpc, a) == pa["orders"] | pb_now["orders"]
        assert stats(rpc, a) == (pa["orders_count"] + pb_now["orders_count"],
                                 pa["total_spent"] + pb_now["total_spent"])
        assert rpc.loyalty.get_account(STORE, a)["balance"] == merged_points + new_points
        assert rpc.loyalty.get_account(STORE, b)["balance"] == 0
        # Its order.placed named the primary: the week-later thanks waits for a.
        now_a, now_b = sends_of(rpc, a), sends_of(rpc, b)
    [thanks] = set(now_a) - waiting_a
    assert (now_a[thanks]["workflow_id"], now_a[thanks]["status"]) == (ON_ORDER, "scheduled")
    assert set(now_b) == set(after_b)

    # -- the unmerge: by docs/merging.md's rules ----------------------------------------------
    undone = api.call("POST", f"/merges/{merge_id}/unmerge")
    [restored] = undone["restored"]
    assert restored["customer_id"] == b
    assert sorted(restored["orders_back"]) == sorted(pb["orders"])
    assert restored["orders_since"] == [new_id]
    assert (restored["notes_back"], restored["reminders_back"]) == (1, 1)
    assert undone["fields_back"] == ["email"] and undone["fields_kept"] == []
    assert undone["orders_stayed"] == [], undone["orders_stayed"]
    assert api.call("GET", f"/merges/{merge_id}")["state"] == "unmerged"
    api.call("POST", f"/merges/{merge_id}/unmerge", expect=409)
    stack.quiet()
    scenario.lap("unmerged")
    with stack.rpc() as rpc:
        record_a, record_b = (rpc.customer_sync.get_customer(STORE, cid) for cid in (a, b))
        assert record_a["email"] == "marta.lindqvist@example.se", record_a
        assert record_b["status"] == "active", record_b
        # customer_sync: b's orders back, with the one since for its own account.
        assert order_ids(rpc, a) == pa["orders"]
        assert order_ids(rpc, b) == pb_now["orders"]
        for cid in (a, b):
            assert [n["note_id"] for n in rpc.customer_sync.list_notes(STORE, cid)] == [notes[cid]]
            assert [r["reminder_id"] for r in rpc.customer_sync.list_reminders(STORE, cid)] == \
                [reminders[cid]]
        assert timeline_b <= timeline_ids(rpc, b)
        assert not timeline_b & timeline_ids(rpc, a)
        # segmentation: split again, the order since with b; b's tag back to b alone.
        assert stats(rpc, a) == (pa["orders_count"], pa["total_spent"])
        assert stats(rpc, b) == (pb_now["orders_count"], pb_now["total_spent"])
        assert {a, b, c} <= listed(rpc)
        assert OWN_TAG in tags(rpc, b) and OWN_TAG not in tags(rpc, a)
        # loyalty: b's lots come back whole (nothing was spent), and the order since the
        # merge goes back to b with the points it earned (at the tier the merged records had).
        account_a, account_b = (rpc.loyalty.get_account(STORE, cid) for cid in (a, b))
        assert (account_a["balance"], account_b["balance"]) == \
            (points_a, points_b + new_points), (account_a, account_b)
        assert account_b["status"] == "active", account_b
        for cid in (a, b):
            assert rpc.loyalty.ledger_check(STORE, cid)["ok"], rpc.loyalty.ledger_check(STORE, cid)
        # gdpr: a's grant back (the merge's withdrawal is still its state); b's own withdrawal.
        assert (consent(rpc, a), consent(rpc, b)) == (True, False)
        # notifications: b is a contact again; its moved send is back, the cancelled stay so.
        assert rpc.notifications.export_customer(STORE, b)["contact"]["status"] == "active"
        final_b = sends_of(rpc, b)
        final_a = set(sends_of(rpc, a))
    assert {sid for sid, s in final_b.items() if s["status"] == "scheduled"} == moved
    assert not moved & final_a
    assert {final_b[sid]["status"] for sid in cancelled} == {"cancelled"}
    # The third customer was never touched.
    with stack.rpc() as rpc:
        pc = person(expected, woo_c)
        assert order_ids(rpc, c) == pc["orders"]
        assert stats(rpc, c) == (pc["orders_count"], pc["total_spent"])
        assert rpc.loyalty.get_account(STORE, c)["balance"] == points(pc["loyalty"])[0]
    scenario.lap("checked after the unmerge")
    print(f"{STORE}: points a {points_a} b {points_b}, the order since the merge "
          f"{new_points} (earned on a); timings: {scenario.timings}")
