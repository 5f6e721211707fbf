"""`python -m bench.segmentation`: segmentation's store-wide recompute over a large store.

    python -m bench.segmentation [--customers 100000] [--orders 400000] [--seed 1]
                                 [--json PATH] [--timeout 1800]
                                 [--profile auto|always|never] [--profile-customers 20000]

1. Seeds, deterministically for a seed, the in-memory database `mongomock://bench-seg`
   (database `companion_segmentation`, with the project's mongomock speed-ups) with one profile
   per customer, written directly with insert_many in chunks: the facts only (orders and
   contact), nothing derived yet, as after an import. Orders are skewed over customers (a few
   percent never ordered, about 45% of buyers ordered once, the rest share the remaining orders
   by a capped Pareto draw: a long tail of frequent buyers), dated over the past two years, with
   cancellations, failures, full and partial refunds, a few countries and email domains. Three
   store rules (built by `validate_rule`) make rule evaluation part of the work. Then
   `SegmentationStorage.ensure_indexes()`, as the service does when it starts. This set-up is
   timed, but apart from the recompute.
2. `Profiles(storage).recompute_store("bench")` (the real clock): wall and CPU time, profiles
   per second, and memory: the process's peak RSS (`getrusage(RUSAGE_SELF).ru_maxrss`, read
   before and after seeding and after each recompute, never tracemalloc) and its growth during
   the recompute.
3. The same recompute again, nothing having changed: it should write nothing and owe nothing.
4. When a target is missed (or with --profile always), the recompute under cProfile on a
   smaller store of the same shape (--profile-customers), and its hot spots.

Order times keep at least an hour clear of the seeding time's time of day, so the whole-day
counts segments and RFM scores use cannot tick over between the seeding and the second recompute
(within an hour): the second recompute sees exactly what the first one saw.

Targets: the recompute of 100,000 customers / 400,000 orders in under 60 s and
the process under 1 GiB. The figures are printed and written as JSON (default
bench/results/segmentation.json). Exit status: 0 when the run completed (targets met or not;
with --strict, 3 when a target is missed), 1 when it failed or timed out.
"""
from __future__ import annotations

import argparse
import cProfile
import gc
import math
import os
import pstats
import random
import resource
import signal
import sys
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
import warnings

# shared.events imports nameko, which imports eventlet, which announces its maintenance mode
# (docs/design.md records that choice). This process is never monkey-patched.
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

from bench.common import log, machine, source_state, write_results  # noqa: E402
from devdoubles.mongomock_adapter import forget  # noqa: E402
from services.segmentation.profiles import Profiles  # noqa: E402
from services.segmentation.repository import SegmentationStorage  # noqa: E402
from services.segmentation.rules import validate_rule  # noqa: E402
from shared.mongo import connect  # noqa: E402
from shared.outbox import OUTBOX_FIELD  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_JSON = ROOT / "bench" / "results" / "segmentation.json"
MOCK_URI = "mongomock://bench-seg"
PROFILE_URI = "mongomock://bench-seg-profile"
DB_NAME = "companion_segmentation"
STORE_ID = "bench"
CURRENCY = "EUR"

TARGET_SECONDS = 60.0
TARGET_RSS_MIB = 1024.0

SEED_CHUNK = 5_000  # profiles per insert_many
HISTORY_DAYS = 730  # two years of orders
DAY_S = 86_400
# An order's time of day lies 1 minute to 23 hours before the seeding's: see the docstring.
DAY_FRACTION_S = (60, 23 * 3600)
PROSPECT_SHARE = 0.03  # customers (registered) who never ordered
REPEAT_SHARE = 0.55  # of buyers: ordered at least twice (the rest ordered once)
PARETO_ALPHA = 1.2  # the repeat buyers' share of the remaining orders ...
PARETO_CAP = 300.0  # ... capped, so the biggest buyer has hundreds of orders, not 100,000
LOG_TOTAL_MEDIAN = math.log(5_500)  # order totals: log-normal, median 55.00 EUR
LOG_TOTAL_SIGMA = 0.8
PARTIAL_REFUND_SHARE = 0.03  # of completed orders

# (value, weight): a shop selling mostly to German-speaking Europe.
COUNTRIES = (("DE", 40), ("FR", 11), ("NL", 10), ("AT", 9), ("GB", 8), ("US", 8), ("CH", 7),
             ("IT", 4), ("", 3))  # "" no billing country given
EMAIL_DOMAINS = (("gmail.com", 28), ("gmx.de", 12), ("web.de", 9), ("outlook.com", 9),
                 ("hotmail.com", 6), ("yahoo.com", 6), ("icloud.com", 6), ("t-online.de", 5),
                 ("orange.fr", 4), ("mail.acme-industries.com", 3), ("uni-hamburg.de", 2),
                 ("", 10))  # "" no (valid) email: guests from a marketplace
STATUSES = (("completed", 83.0), ("processing", 4.0), ("on-hold", 1.0), ("cancelled", 5.0),
            ("failed", 2.5), ("refunded", 2.5), ("pending", 1.0), ("checkout-draft", 1.0))
OPEN_STATUSES = ("processing", "on-hold", "pending", "checkout-draft")  # only recent orders

RULES = (
    {"rule_id": "big-spenders", "name": "Big spenders join the VIP club", "position": 10,
     "match": "all",
     "conditions": [{"field": "total_spent", "op": "gte", "value": 100_000}],
     "actions": [{"type": "add_tag", "value": "big-spender"},
                 {"type": "join_group", "value": "vip-club"}]},
    {"rule_id": "win-back", "name": "Lapsed regulars get the win-back mailing", "position": 20,
     "match": "all",
     "conditions": [{"field": "orders_count", "op": "gte", "value": 3},
                    {"field": "days_since_last_order", "op": "gt", "value": 120}],
     "actions": [{"type": "add_tag", "value": "win-back"}]},
    {"rule_id": "dach-news", "name": "New and regular DACH customers get the newsletter",
     "position": 30, "match": "all",
     "conditions": [{"field": "country", "op": "in", "value": ["de", "at", "ch"]},
                    {"field": "segment", "op": "in", "value": ["new", "regular", "vip"]},
                    {"field": "tags", "op": "not_contains", "value": "win-back"}],
     "actions": [{"type": "join_group", "value": "dach-newsletter"}]},
)


class BenchTimeout(Exception):
    pass


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("mongomock", "pymongo", "marshmallow"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def peak_rss_mib() -> float:
    """The process's peak resident set so far (ru_maxrss is in KiB on Linux)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def current_rss_mib() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError):
        pass
    return None


def memory_point() -> dict:
    return {"peak_rss_mib": peak_rss_mib(), "rss_mib": current_rss_mib()}


# -- the store -------------------------------------------------------------------------------
def _picker(rng: random.Random, pairs: tuple) -> callable:
    values = [v for v, _ in pairs]
    cumulative, total = [], 0.0
    for _, weight in pairs:
        total += weight
        cumulative.append(total)

    def pick():
        return rng.choices(values, cum_weights=cumulative, k=1)[0]
    return pick


def order_counts(rng: random.Random, customers: int, orders: int) -> list[int]:
    """How many orders each customer placed: exactly `orders` in all, skewed (see the module
    docstring), in a shuffled order of customers."""
    prospects = min(customers, round(customers * PROSPECT_SHARE))
    buyers = customers - prospects
    if orders < buyers:
        buyers, prospects = orders, customers - orders
    counts = [1] * buyers
    extra = orders - buyers
    repeat = min(extra, round(buyers * REPEAT_SHARE))
    for i in range(repeat):
        counts[i] += 1
    extra -= repeat
    if extra and repeat:
        weights = [min(rng.paretovariate(PARETO_ALPHA), PARETO_CAP) for _ in range(repeat)]
        total = sum(weights)
        shares = [extra * w / total for w in weights]
        floors = [int(s) for s in shares]
        left = extra - sum(floors)  # largest remainders first, ties by position
        for i in sorted(range(repeat), key=lambda i: floors[i] - shares[i])[:left]:
            floors[i] += 1
        for i in range(repeat):
            counts[i] += floors[i]
    elif extra:  # too few buyers to share them (a tiny store): the first buyer has them
        counts[0] += extra
    counts += [0] * prospects
    rng.shuffle(counts)
    assert sum(counts) == orders and len(counts) == customers
    return counts


class StoreSeeder:
    """Profile documents as segmentation stores them, facts only, from one seeded generator."""

    def __init__(self, seed: int, anchor: datetime) -> None:
        self.rng = random.Random(seed)
        self.anchor = anchor
        self.country = _picker(self.rng, COUNTRIES)
        self.domain = _picker(self.rng, EMAIL_DOMAINS)
        self.status = _picker(self.rng, STATUSES)
        self.next_order = 10_000

    def _ago(self, days: int) -> datetime:
        return self.anchor - timedelta(seconds=days * DAY_S + self.rng.randrange(*DAY_FRACTION_S))

    def _order_days(self, n: int) -> list[int]:
        """Days ago of a customer's n orders: a first order some time in the history, the last
        one soon after (a lapsed customer) or recently (an active one)."""
        rng = self.rng
        first = rng.randrange(HISTORY_DAYS)
        if n == 1:
            return [first]
        if rng.random() < 0.6:
            last = int(first * rng.random() ** 3)  # still buying
        else:
            last = rng.randint(0, first)  # anywhere: many have lapsed
        return [first, last] + [rng.randint(last, first) for _ in range(n - 2)]

    def _order(self, days_ago: int) -> tuple[str, dict]:
        rng = self.rng
        order_id = str(self.next_order)
        self.next_order += 1
        created = self._ago(days_ago)
        status = self.status()
        if status in OPEN_STATUSES and days_ago > 14:
            status = "completed"
        total = max(199, int(rng.lognormvariate(LOG_TOTAL_MEDIAN, LOG_TOTAL_SIGMA)))
        refunded = 0
        if status == "refunded":
            refunded = total
        elif status == "completed" and rng.random() < PARTIAL_REFUND_SHARE:
            refunded = rng.randint(1, total - 1)
        as_of = min(self.anchor, created + timedelta(minutes=rng.randint(1, 7 * 24 * 60)))
        return order_id, {"status": status, "total": total, "refunded": refunded,
                          "currency": CURRENCY, "date_created": created, "as_of": as_of}

    def profile(self, index: int, n_orders: int) -> dict:
        customer_id = str(100_000 + index)
        orders = dict(self._order(d) for d in self._order_days(n_orders))
        since = (min(o["date_created"] for o in orders.values()) if orders
                 else self._ago(self.rng.randrange(HISTORY_DAYS)))
        contact = {"email_domain": self.domain(), "country": self.country(),
                   "registered": self.rng.random() < 0.7, "as_of": since}
        return {"_id": f"{STORE_ID}:{customer_id}", "store_id": STORE_ID,
                "customer_id": customer_id, "status": "active", "orders": orders,
                "contact": contact, "tags": {}, "groups": {}, "tag_list": [], "group_list": [],
                "segment": None, "stats": None, "version": 1, OUTBOX_FIELD: [],
                "created_at": since}


def build_rules() -> list[dict]:
    return [{**validate_rule(dict(rule)), "_id": f"{STORE_ID}:{rule['rule_id']}",
             "store_id": STORE_ID, "enabled": True} for rule in RULES]


def seed(storage: SegmentationStorage, customers: int, orders: int, seed_value: int,
         anchor: datetime) -> dict:
    """Writes the store; returns what was written and how long it took."""
    started = time.perf_counter()
    seeder = StoreSeeder(seed_value, anchor)
    counts = order_counts(seeder.rng, customers, orders)
    collection = storage.profiles.collection
    for start in range(0, customers, SEED_CHUNK):
        collection.insert_many([seeder.profile(i, counts[i])
                                for i in range(start, min(customers, start + SEED_CHUNK))])
        if (start // SEED_CHUNK) % 4 == 3:
            log(f"seeded {min(customers, start + SEED_CHUNK):,} of {customers:,} profiles")
    storage.rules.insert_many(build_rules())
    inserted_s = time.perf_counter() - started
    storage.ensure_indexes()  # as the service does at start-up, over the existing data
    seconds = time.perf_counter() - started
    ordered = sorted(counts)
    buyers = [c for c in ordered if c > 0]

    def quantile(q: float) -> int | None:
        return buyers[min(len(buyers) - 1, int(q * len(buyers)))] if buyers else None

    return {
        "seconds": round(seconds, 3),
        "insert_seconds": round(inserted_s, 3),
        "ensure_indexes_seconds": round(seconds - inserted_s, 3),
        "profiles": customers,
        "orders": sum(counts),
        "rules": len(RULES),
        "order_count_distribution": {
            "prospects_no_order": ordered.count(0),
            "one_order": ordered.count(1),
            "two_to_four": sum(1 for c in ordered if 2 <= c <= 4),
            "five_to_nineteen": sum(1 for c in ordered if 5 <= c <= 19),
            "twenty_or_more": sum(1 for c in ordered if c >= 20),
            "buyers_median": quantile(0.5),
            "buyers_p90": quantile(0.9),
            "buyers_p99": quantile(0.99),
            "max": ordered[-1] if ordered else 0,
        },
    }


# -- measuring -------------------------------------------------------------------------------
def _stored_profiles(storage: SegmentationStorage):
    """The stored profile documents themselves, read-only and without copies where mongomock
    allows it (its own store); else a small aggregation. Either way not timed: find() would
    copy every document into one list (and slice that list on each next()), which would make
    the benchmark's own look at the result the slowest, most memory-hungry step and raise the
    peak RSS the recompute is judged by."""
    store = getattr(storage.profiles.collection, "_store", None)
    documents = getattr(store, "_documents", None)
    if isinstance(documents, dict):
        return (doc for doc in list(documents.values()) if doc.get("store_id") == STORE_ID)
    return storage.profiles.collection.aggregate([
        {"$match": {"store_id": STORE_ID}},
        {"$project": {"_id": 0, "segment": 1, "tag_list": 1, "group_list": 1, "version": 1,
                      OUTBOX_FIELD: 1}}])


def outcome(storage: SegmentationStorage) -> dict:
    """What the profiles look like after a recompute, and the outbox entries they hold."""
    segments: Counter = Counter()
    tags: Counter = Counter()
    groups: Counter = Counter()
    versions_: Counter = Counter()
    owed = 0
    for doc in _stored_profiles(storage):
        segments[str(doc.get("segment"))] += 1
        tags.update(doc.get("tag_list") or ())
        groups.update(doc.get("group_list") or ())
        versions_[doc.get("version")] += 1
        owed += len(doc.get(OUTBOX_FIELD) or ())
    return {"outbox_entries": owed, "segments": dict(sorted(segments.items())),
            "tags": dict(sorted(tags.items())), "groups": dict(sorted(groups.items())),
            "versions": {str(k): v for k, v in sorted(versions_.items())}}


def recompute(storage: SegmentationStorage, label: str, expected: int) -> dict:
    profiles = Profiles(storage)
    marks: list[tuple[int, float]] = []
    started = time.perf_counter()
    last_log = [started]

    def progress(done: int) -> None:
        now = time.perf_counter()
        marks.append((done, now - started))
        if now - last_log[0] >= 10:
            last_log[0] = now
            log(f"{label}: {done:,} of {expected:,} profiles, {now - started:.1f} s")

    gc.collect()
    memory_before = memory_point()
    cpu0 = time.process_time()
    counts = profiles.recompute_store(STORE_ID, progress=progress)
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu0
    memory_after = memory_point()
    return {
        "wall_seconds": round(wall, 3),
        "cpu_seconds": round(cpu, 3),
        "reported_seconds": counts.get("seconds"),
        "profiles": counts["profiles"],
        "profiles_per_s": round(counts["profiles"] / wall, 1) if wall > 0 else None,
        "changed": counts["changed"],
        "events": counts["events"],
        "retried": counts["retried"],
        "vip_cutoff": counts.get("vip_cutoff"),
        # The first progress mark comes after pass 1 (stats of every profile, the store-wide
        # cut points) and the first batch of pass 2.
        "seconds_to_first_batch_of_pass_2": round(marks[0][1], 3) if marks else None,
        # 1-minute load average when it ended (this process counts for about 1): above
        # ~1.5 on a 2-CPU machine, something else competed for the CPUs.
        "loadavg_1min_at_end": round(os.getloadavg()[0], 2),
        "memory_before": memory_before,
        "memory_after": memory_after,
        "peak_rss_growth_mib": round(memory_after["peak_rss_mib"]
                                     - memory_before["peak_rss_mib"], 1),
    }


def profile_run(customers: int, orders: int, seed_value: int, limit: int = 25) -> dict:
    """The recompute under cProfile, on a smaller store of the same shape."""
    forget(PROFILE_URI)
    storage = SegmentationStorage(connect(PROFILE_URI)[DB_NAME])
    anchor = datetime.now(timezone.utc).replace(microsecond=0)
    log(f"profiling: seeding {customers:,} profiles / {orders:,} orders")
    seed(storage, customers, orders, seed_value, anchor)
    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    counts = Profiles(storage).recompute_store(STORE_ID)
    profiler.disable()
    wall = time.perf_counter() - started
    stats = pstats.Stats(profiler)
    total = stats.total_tt  # type: ignore[attr-defined]

    def rows(key: str) -> list[dict]:
        found = []
        entries = stats.stats  # type: ignore[attr-defined]
        ordered = sorted(entries.items(), key=lambda kv: kv[1][2 if key == "tottime" else 3],
                         reverse=True)
        for (filename, line, name), (cc, nc, tt, ct, _) in ordered[:limit]:
            short = filename
            for prefix in (str(ROOT) + "/", "/usr/lib/python3.11/"):
                short = short.replace(prefix, "")
            if "site-packages/" in short:
                short = short.split("site-packages/", 1)[1]
            found.append({"function": f"{short}:{line}({name})", "calls": nc,
                          "tottime_s": round(tt, 3), "cumtime_s": round(ct, 3),
                          "tottime_share": round(tt / total, 3) if total else None})
        return found

    client = connect(PROFILE_URI)
    client.drop_database(DB_NAME)
    forget(PROFILE_URI)
    return {"customers": customers, "orders": orders, "wall_seconds_under_cprofile": round(wall, 3),
            "profiled_seconds": round(total, 3), "changed": counts["changed"],
            "by_tottime": rows("tottime"), "by_cumtime": rows("cumtime")}


def verdicts(results: dict) -> list[dict]:
    first = results["recompute"]["first"]
    checks = [
        {"target": f"recompute < {TARGET_SECONDS:g} s", "value": first["wall_seconds"],
         "met": first["wall_seconds"] < TARGET_SECONDS},
        {"target": f"peak RSS < {TARGET_RSS_MIB:g} MiB", "value": results["memory"]["peak_rss_mib"],
         "met": results["memory"]["peak_rss_mib"] < TARGET_RSS_MIB},
    ]
    return checks


# -- the report ------------------------------------------------------------------------------
def fmt(value, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def render(results: dict) -> str:
    m = results["machine"]
    p = results["parameters"]
    s = results["seed"]
    first = results["recompute"]["first"]
    second = results["recompute"].get("second")
    d = s["order_count_distribution"]
    lines = [
        f"machine: {m['nproc']} CPU(s), {m['cpu_model']}, {m['memory_gib']} GiB, "
        f"Python {m['python']}, mongomock {results['versions']['mongomock']} (in process); "
        f"load average at start {m['loadavg_at_start'][0]:.2f}, at end "
        f"{m.get('loadavg_at_end', [float('nan')])[0]:.2f}",
        f"store: {p['customers']:,} customers, {p['orders']:,} orders, seed {p['seed']}, "
        f"{s['rules']} rules; orders dated up to {p['anchor']}",
        f"  orders per customer: none {d['prospects_no_order']:,}, one {d['one_order']:,}, "
        f"2-4 {d['two_to_four']:,}, 5-19 {d['five_to_nineteen']:,}, 20+ {d['twenty_or_more']:,}; "
        f"buyers' median {d['buyers_median']}, p90 {d['buyers_p90']}, p99 {d['buyers_p99']}, "
        f"max {d['max']}",
        "",
    ]
    rows = [
        ("seed (insert_many + ensure_indexes), s",
         f"{fmt(s['seconds'], 2)} ({fmt(s['insert_seconds'], 2)} + "
         f"{fmt(s['ensure_indexes_seconds'], 2)})", ""),
        ("", "first recompute", "second recompute"),
        ("wall time, s", fmt(first["wall_seconds"], 2), fmt(second and second["wall_seconds"], 2)),
        ("CPU time, s", fmt(first["cpu_seconds"], 2), fmt(second and second["cpu_seconds"], 2)),
        ("1-min load average at its end", fmt(first["loadavg_1min_at_end"], 2),
         fmt(second and second["loadavg_1min_at_end"], 2)),
        ("  of which pass 1 + first batch, s", fmt(first["seconds_to_first_batch_of_pass_2"], 2),
         fmt(second and second["seconds_to_first_batch_of_pass_2"], 2)),
        ("profiles", fmt(first["profiles"]), fmt(second and second["profiles"])),
        ("customers/s", fmt(first["profiles_per_s"]), fmt(second and second["profiles_per_s"])),
        ("changed profiles (written)", fmt(first["changed"]), fmt(second and second["changed"])),
        ("events owed by the recompute", fmt(first["events"]), fmt(second and second["events"])),
        ("outbox entries stored after it", fmt(first["outbox_entries_after"]),
         fmt(second and second["outbox_entries_after"])),
        ("retried (lost compare-and-set)", fmt(first["retried"]), fmt(second and second["retried"])),
        ("peak RSS growth during it, MiB", fmt(first["peak_rss_growth_mib"]),
         fmt(second and second["peak_rss_growth_mib"])),
        ("RSS after it, MiB", fmt(first["memory_after"]["rss_mib"]),
         fmt(second and second["memory_after"]["rss_mib"])),
    ]
    width = max(len(r[0]) for r in rows)
    c1 = max(len(r[1]) for r in rows)
    lines += [f"{a:<{width}}  {b:>{c1}}  {c:>16}".rstrip() for a, b, c in rows]
    mem = results["memory"]
    lines += [
        "",
        f"memory (peak RSS of the process, MiB): at start {fmt(mem['start']['peak_rss_mib'])}, "
        f"after seeding {fmt(mem['after_seed']['peak_rss_mib'])} (RSS "
        f"{fmt(mem['after_seed']['rss_mib'])}), after the recomputes {fmt(mem['peak_rss_mib'])}",
        "segments: " + ", ".join(f"{k} {v:,}" for k, v in first["outcome"]["segments"].items()),
        "tags: " + (", ".join(f"{k} {v:,}" for k, v in first["outcome"]["tags"].items()) or "none")
        + "; groups: "
        + (", ".join(f"{k} {v:,}" for k, v in first["outcome"]["groups"].items()) or "none"),
        f"vip cutoff (top 10% spend): {fmt(first['vip_cutoff'])} minor units",
        "",
    ]
    for check in results["verdict"]:
        lines.append(f"target {check['target']:<22} value {fmt(check['value'], 2)}: "
                     f"{'met' if check['met'] else 'NOT met'}")
    if second is not None and (second["changed"] or second["events"]):
        lines.append(f"WARNING: the second recompute wrote {second['changed']:,} profiles "
                     f"and owed {second['events']:,} events (expected none)")
    prof = results.get("profile")
    if prof:
        lines += ["", f"cProfile of a recompute of {prof['customers']:,} customers / "
                      f"{prof['orders']:,} orders ({prof['wall_seconds_under_cprofile']:.2f} s "
                      f"under the profiler), top functions by own time:"]
        for row in prof["by_tottime"][:15]:
            lines.append(f"  {row['tottime_s']:>8.3f} s {100 * (row['tottime_share'] or 0):5.1f}%"
                         f" {row['calls']:>10,}  {row['function']}")
        lines += ["  top by cumulative time:"]
        for row in prof["by_cumtime"][:15]:
            lines.append(f"  {row['cumtime_s']:>8.3f} s {row['calls']:>10,}  {row['function']}")
    return "\n".join(lines)


# -- main ------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.segmentation",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--orders", type=int, default=400_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write results")
    parser.add_argument("--timeout", type=float, default=1800.0,
                        help="give up (exit 1, partial results written) after this many seconds")
    parser.add_argument("--profile", choices=("auto", "always", "never"), default="auto",
                        help="cProfile a smaller recompute: when a target is missed (auto)")
    parser.add_argument("--profile-customers", type=int, default=20_000)
    parser.add_argument("--strict", action="store_true", help="exit 3 when a target is missed")
    args = parser.parse_args(argv)
    if args.customers < 1 or args.orders < 0 or args.timeout <= 0 or args.profile_customers < 1:
        parser.error("--customers and --profile-customers must be at least 1, --orders not "
                     "negative, --timeout positive")

    def on_alarm(signum, frame):  # noqa: ARG001
        raise BenchTimeout(f"gave up after --timeout {args.timeout:g} s")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, args.timeout)
    anchor = datetime.now(timezone.utc).replace(microsecond=0)
    results: dict = {
        "benchmark": "segmentation.recompute_store",
        "started_at": datetime.now(timezone.utc).isoformat(),
        "machine": machine(), "source": source_state(), "versions": versions(),
        "parameters": {"customers": args.customers, "orders": args.orders, "seed": args.seed,
                       "batch_size": 1000, "store_id": STORE_ID, "anchor": anchor.isoformat(),
                       "mongo": f"{MOCK_URI} database {DB_NAME} (mongomock in this process, "
                                "with devdoubles/mongomock_speedups)"},
        "targets": {"recompute_seconds": TARGET_SECONDS, "peak_rss_mib": TARGET_RSS_MIB},
        "notes": [
            "peak RSS is the whole process: the benchmark, the seeded store held by mongomock "
            "in this process, and the recompute; on a real MongoDB the data would live in the "
            "server, not here",
            "the first recompute derives everything for the first time (every profile "
            "changes); the second finds nothing changed",
            "the real clock is used; order times of day keep an hour clear of the seeding "
            "time's, so whole-day counts do not tick over between the runs",
        ],
        "memory": {"start": memory_point()},
        "recompute": {},
    }
    status = 0
    try:
        forget(MOCK_URI)
        client = connect(MOCK_URI)
        client.drop_database(DB_NAME)
        storage = SegmentationStorage(client[DB_NAME])
        log(f"seeding {args.customers:,} profiles / {args.orders:,} orders (seed {args.seed})")
        results["seed"] = seed(storage, args.customers, args.orders, args.seed, anchor)
        gc.collect()
        results["memory"]["after_seed"] = memory_point()
        log(f"seeded in {results['seed']['seconds']:.2f} s; peak RSS "
            f"{results['memory']['after_seed']['peak_rss_mib']:,.0f} MiB")
        for label in ("first", "second"):
            log(f"{label} recompute")
            run = recompute(storage, f"{label} recompute", args.customers)
            results["recompute"][label] = run
            run["outcome"] = outcome(storage)
            run["outbox_entries_after"] = run["outcome"].pop("outbox_entries")
            log(f"{label} recompute: {run['wall_seconds']:.2f} s, {run['changed']:,} changed, "
                f"{run['events']:,} events, peak RSS {run['memory_after']['peak_rss_mib']:,.0f} MiB")
        results["memory"]["peak_rss_mib"] = peak_rss_mib()
        results["verdict"] = verdicts(results)
        missed = not all(c["met"] for c in results["verdict"])
        # The store is no longer needed: free it before profiling (peak RSS is already read).
        client.drop_database(DB_NAME)
        forget(MOCK_URI)
        del storage, client
        gc.collect()
        if args.profile == "always" or (args.profile == "auto" and missed):
            small = min(args.customers, args.profile_customers)
            small_orders = round(args.orders * small / args.customers)
            results["profile"] = profile_run(small, small_orders, args.seed)
    except BenchTimeout as exc:
        log(str(exc))
        results["error"] = str(exc)
        status = 1
    except Exception as exc:
        log(f"benchmark failed: {type(exc).__name__}: {exc}")
        results["error"] = f"{type(exc).__name__}: {exc}"
        status = 1
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    write_results(results, args.json, status, render)
    if status == 0 and args.strict and not all(c["met"] for c in results["verdict"]):
        return 3
    return status


if __name__ == "__main__":
    sys.exit(main())
