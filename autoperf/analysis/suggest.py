"""Optimisation suggestions (seed plan 11.3) derived from an :class:`Aggregator`'s state.

Every suggestion is a plain dict:
``{kind, severity, flow, title, evidence, saving_ms, saving, details}`` where ``saving_ms`` is the
estimated saving *per affected flow* (None when it cannot be estimated) and ``saving`` explains it.
Each rule is a function of the aggregate and the options; a query fingerprint gets one finding at most
(an index first, then N+1, then a cache: the first fix changes what the others would measure).
"""
from __future__ import annotations

import re

from .dist import Dist

__all__ = ["suggestions_from", "RULES", "DEFAULTS", "cacheable"]

DEFAULTS = {
    "cache_min_flows": 10,         # a read fingerprint seen in at least this many flows …
    "cache_min_calls": 20,         # … and at least this many calls is a cache candidate
    "concurrency_min_flows": 3,    # sequential sibling I/O seen in at least this many flows
    "concurrency_min_saving_ms": 5.0,
    "slow_query_ms": 100.0,        # p95 above which a query counts as slow (reports)
    "index_min_ms": 20.0,          # a selective Seq Scan in its EXPLAIN and p95 >= this: index advice
    "db_pool_pct": 80.0,
    "process_pool_pending": 5,
    "worker_rss_mb": 500.0,
    "loop_lag_ms": 100.0,
    "limit_per_kind": 5,
}

# A result that changes from call to call (time, randomness, sequences, sleeps, locks) or a statement
# that writes or locks rows: caching it would return wrong answers.
_NOT_CACHEABLE = re.compile(
    r"\b(now|random|setseed|clock_timestamp|statement_timestamp|transaction_timestamp|timeofday|pg_sleep\w*|"
    r"gen_random_uuid|uuid_generate_\w+|nextval|setval|currval|lastval|txid_current\w*|pg_current_xact_id\w*|"
    r"pg_\w*advisory\w*|pg_notify|set_config|pg_backend_pid)\s*\("
    r"|\b(current_timestamp|current_time|current_date|localtime|localtimestamp)\b"
    r"|\bfor\s+(update|share|no\s+key\s+update|key\s+share)\b"
    r"|\b(insert|update|delete|merge)\b", re.I)


def cacheable(statement) -> bool:
    """A read whose result does not depend on when it runs and that changes nothing."""
    return bool(statement) and _NOT_CACHEABLE.search(str(statement)) is None


def _fmt(ms):
    if ms is None:
        return "n/a"
    return f"{ms:.0f} ms" if ms >= 10 else f"{ms:.1f} ms"


def _total(ms):
    """A total time: in ms below a second (a cache saving of "0.0 s" says nothing), else in s."""
    return _fmt(ms) if ms < 1000 else f"{ms / 1000:.1f} s"


def _short(stmt, n=90):
    if not stmt:
        return "?"
    stmt = " ".join(str(stmt).split())
    return stmt if len(stmt) <= n else stmt[: n - 1] + "…"


def _top_flow(db):
    """The flow that runs the statement most: by every call (metrics), else by the flows read whole."""
    top = (db.calls_by_flow or db.flow_names).most_common(1)
    return top[0][0] if top else None


def _ranked(items, limit):
    items.sort(key=lambda s: -s["_rank"])
    return items[:limit]


# ---------------------------------------------------------------- queries
def index_candidates(agg, o) -> list[dict]:
    """Slow reads whose captured plan has a selective sequential scan (state.seq_scans_from_explain)."""
    items = []
    for fp, db in agg.db.items():
        if not db.seq_scans or not db.res.count:
            continue
        p95 = db.res.percentile(95)
        if p95 is None or p95 < min(o["index_min_ms"], o["slow_query_ms"]):
            continue
        rel, read, returned, flt = max(db.seq_scans, key=lambda s: s[1])
        avg = db.res.total / db.res.count
        items.append({
            "kind": "index", "severity": "high", "flow": _top_flow(db),
            "title": f"Index candidate on {rel}: a selective lookup reads ~{read:,.0f} rows to return ~{returned:,.0f}",
            "evidence": (f"{_short(db.statement)} — p95 {_fmt(p95)}, {db.res.count} calls; EXPLAIN: Seq Scan on {rel} "
                         f"(~{read:,.0f} rows read, ~{returned:,.0f} returned)" + (f", Filter: {flt}" if flt else "")),
            "saving_ms": max(0.0, avg - 1.0),
            "saving": (f"most of the {_fmt(avg)} average ({_total(db.res.total)} in total) if an index on the "
                       f"filtered column(s) of {rel} turns the scan into an index lookup"),
            "details": {"fingerprint": fp, "statement": db.statement, "relation": rel, "rows_read": read,
                        "rows_returned": returned, "filter": flt, "p95_ms": p95},
            "_rank": db.res.total})
    return items


def n_plus_one(agg, o) -> list[dict]:
    """The same fingerprint at least ``n_plus_one_min`` times inside one flow."""
    items = []
    for (flow, fp), (hit, sum_rep, max_rep, sum_ms) in agg.n_plus_one.items():
        db = agg.db.get(fp)
        avg_rep = sum_rep / hit
        per_flow_ms = sum_ms / hit
        saving = per_flow_ms * (1 - 1 / avg_rep)      # batch N calls into one of ~ one call's cost
        total_flows = agg.flow_counts.get(flow) or hit
        read = db is None or str(db.operation or "").upper() in ("SELECT", "WITH", "FETCH")
        how = ("fetching all rows in one query (WHERE … = ANY($1) / JOIN)" if read else
               "doing the writes in one statement (UPDATE … FROM unnest($1, $2) / INSERT … SELECT)")
        items.append({
            "kind": "n_plus_one", "severity": "high" if saving >= 50 else "medium", "flow": flow,
            "title": f"N+1 query in {flow}: the same query runs {avg_rep:.0f}× per flow (max {max_rep})",
            "evidence": (f"{hit} of {total_flows} {flow} flows ran fingerprint {fp} ≥ {agg.n_plus_one_min} times "
                         f"({_fmt(per_flow_ms)} per flow): {_short(db.statement if db else None)}"),
            "saving_ms": saving,
            "saving": f"≈{_fmt(saving)} per affected flow by {how}",
            "details": {"fingerprint": fp, "statement": db.statement if db else None, "flows_affected": hit,
                        "avg_repeats": avg_rep, "max_repeats": max_rep, "ms_per_flow": per_flow_ms},
            "_rank": saving * hit})
    return items


def cache_candidates(agg, o) -> list[dict]:
    """A cacheable read fingerprint repeated across many flows."""
    items = []
    for fp, db in agg.db.items():
        op = (db.operation or (str(db.statement or "").split(None, 1) or [""])[0]).upper()
        if op not in ("SELECT", "WITH", "FETCH") or not cacheable(db.statement):
            continue
        if db.flows < o["cache_min_flows"] or db.res.count < o["cache_min_calls"]:
            continue
        avg = db.res.total / db.res.count
        top_flows = ", ".join(f"{n} ({c})" for n, c in db.flow_names.most_common(3))
        per_flow = db.flow_ms / db.flows        # over the flows seen whole (all of them under retain: all)
        # counts from metrics are every call's; the flows are those retained (a sample of them)
        across = f"across {db.flows} flows" if db.res.__class__ is not Dist else f"(seen in {db.flows} flows read whole)"
        items.append({
            "kind": "cache", "severity": "medium" if db.res.total >= 1000 else "low", "flow": _top_flow(db),
            "title": f"Cache candidate: read query run {db.res.count}× {across}",
            "evidence": f"{_short(db.statement)} — avg {_fmt(avg)}, {_total(db.res.total)} total; flows: {top_flows}",
            "saving_ms": per_flow,
            "saving": (f"up to {_fmt(per_flow)} per flow and {_total(db.res.total)} in total with a cache "
                       f"(minus misses and invalidation)"),
            "details": {"fingerprint": fp, "statement": db.statement, "calls": db.res.count, "flows": db.flows,
                        "avg_ms": avg, "total_ms": db.res.total},
            "_rank": db.res.total})
    return items


def one_per_fingerprint(*kinds: list[dict]) -> list[list[dict]]:
    """Each fingerprint keeps its finding of the first kind that has one (in the order given)."""
    taken, out = set(), []
    for items in kinds:
        kept = []
        for s in items:
            fp = s["details"].get("fingerprint")
            if fp in taken:
                continue
            kept.append(s)
        taken.update(s["details"].get("fingerprint") for s in kept)
        out.append(kept)
    return out


def concurrency(agg, o) -> list[dict]:
    """Sibling db/http spans of one parent that never overlapped (transactions excluded: flowtrack)."""
    items = []
    for (flow, names, n_items), (n, sum_saving, sum_total, max_saving) in agg.seq_io.items():
        if n < o["concurrency_min_flows"]:
            continue
        avg_saving = sum_saving / n
        if avg_saving < o["concurrency_min_saving_ms"]:
            continue
        seq = " → ".join(names) + (" → …" if n_items > 8 else "")
        items.append({
            "kind": "concurrency", "severity": "medium" if avg_saving >= 50 else "low", "flow": flow,
            "title": f"{flow}: {n_items if n_items <= 8 else '9+'} I/O calls are awaited one after another",
            "evidence": (f"in {n} flows these sibling calls never overlapped: {seq} "
                         f"(avg {_fmt(sum_total / n)} sequential)"),
            "saving_ms": avg_saving,
            "saving": (f"≈{_fmt(avg_saving)} per flow (sum − max of the calls; max {_fmt(max_saving)}) "
                       f"with asyncio.gather / TaskGroup, if the calls are independent"),
            "details": {"calls": list(names), "flows": n, "avg_sequential_ms": sum_total / n},
            "_rank": sum_saving})
    return items


# ---------------------------------------------------------------- the event loop
def loop_blocking(agg, o) -> list[dict]:
    """Blocking code by location; blocks before any flow started are start-up, not a users' problem."""
    items = []
    for row in agg.loop_blocks.rows():
        loc, n, total, mx, flows = row["location"], row["count"], row["total_ms"], row["max_ms"], row["flows"]
        fl = ", ".join(f"{k} ({v})" for k, v in flows.items()) or "outside any flow"
        details = {"location": loc, "count": n, "max_ms": mx, "total_ms": total, "startup": row["startup"]}
        if row["startup"]:
            items.append({
                "kind": "startup_blocking", "severity": "low", "flow": None,
                "title": f"Blocking call at start-up at {loc}",
                "evidence": (f"held the event loop {n}× before the first flow started (worst {_fmt(mx)}, "
                             f"{_total(total)} total)"),
                "saving_ms": None,
                "saving": (f"up to {_total(total)} of start-up time; no user was waiting "
                           f"(asyncio.to_thread / run_in_executor if start-up time matters)"),
                "details": details, "_rank": 0.0})
            continue
        items.append({
            "kind": "loop_blocking", "severity": "high" if mx >= 1000 else "medium",
            "flow": next(iter(flows), None),
            "title": f"Blocking call at {loc}",
            "evidence": f"held the event loop {n}× (worst {_fmt(mx)}, {_total(total)} total); flows: {fl}",
            "saving_ms": total / n,
            "saving": (f"≈{_fmt(total / n)} of loop stall per occurrence for every concurrent user "
                       f"(move it to asyncio.to_thread / run_in_executor or use an async API)"),
            "details": details, "_rank": total})
    return items


# ---------------------------------------------------------------- resources
def resources(agg, o) -> list[dict]:
    """Pools, memory and loop lag that need scaling (peaks of the resource samples)."""
    out = []
    m = {k: v for k, v in agg.res_metrics.items() if v[0]}

    def peak(k):
        return m[k][2] if k in m else None

    def avg(k):
        return m[k][1] / m[k][0] if k in m else None

    p = peak("db_pool_utilisation_pct")
    w = peak("db_pool_waiters")
    longest = peak("db_pool_acquire_wait_max_ms")
    if (p is not None and p >= o["db_pool_pct"]) or (w is not None and w > 0):
        out.append({
            "kind": "scale_db_pool", "severity": "high" if (p or 0) >= 90 else "medium", "flow": None,
            "title": "Database connection pool is saturating",
            "evidence": (f"utilisation peak {p if p is not None else 'n/a'}% (avg {avg('db_pool_utilisation_pct') or 0:.0f}%)"
                         f", peak waiters {w if w is not None else 'n/a'}"
                         + (f", longest acquire {_fmt(longest)}" if longest is not None else "")
                         + f" over {agg.res_n} samples"),
            "saving_ms": None,
            "saving": "removes pool-acquire waits (the `db.pool.acquire` wait spans) — raise max_size or "
                      "shorten transactions",
            "details": {"peak_pct": p, "peak_waiters": w, "longest_acquire_ms": longest}})
    p = peak("process_pool_pending")
    if p is not None and p >= o["process_pool_pending"]:
        waits = [(name, j[1].percentile(95)) for name, j in agg.jobs.items() if j[1].count]
        wtxt = "; ".join(f"{n}: queue wait p95 {_fmt(v)}" for n, v in waits[:3])
        out.append({
            "kind": "scale_process_pool", "severity": "medium", "flow": None,
            "title": "Process pool queue is backing up",
            "evidence": f"pending jobs peak {p} (avg {avg('process_pool_pending'):.1f})" + (f"; {wtxt}" if wtxt else ""),
            "saving_ms": max((v for _n, v in waits), default=None),
            "saving": "the queue wait of each job — add workers (max_workers) or make jobs cheaper",
            "details": {"peak_pending": p}})
    else:
        for name, j in agg.jobs.items():
            qw, run = j[1].percentile(95), j[2].percentile(95)
            if qw is not None and run is not None and j[1].count >= 10 and qw > run and qw >= 50:
                out.append({
                    "kind": "scale_process_pool", "severity": "medium", "flow": None,
                    "title": f"Jobs {name} wait longer in the queue than they run",
                    "evidence": f"queue wait p95 {_fmt(qw)} vs run p95 {_fmt(run)} over {j[1].count} jobs",
                    "saving_ms": qw, "saving": f"up to {_fmt(qw)} per job with more workers",
                    "details": {"job": name, "queue_wait_p95_ms": qw, "run_p95_ms": run}})
    for key, who in (("rss_mb", "The program's process"), ("max_worker_rss_mb", "A worker process")):
        p = peak(key)
        if p is not None and p >= o["worker_rss_mb"]:
            out.append({
                "kind": "worker_memory", "severity": "medium", "flow": None,
                "title": f"{who} uses too much memory",
                "evidence": f"RSS peak {p:.0f} MB (limit {o['worker_rss_mb']:.0f} MB)",
                "saving_ms": None, "saving": "avoids swapping / OOM kills — find what grows (caches, queues) "
                                             "or recycle workers (max_tasks_per_child)",
                "details": {"metric": key, "peak_mb": p}})
    p = peak("loop_lag_p95_ms")
    if p is not None and p >= o["loop_lag_ms"]:
        out.append({
            "kind": "loop_lag", "severity": "medium", "flow": None,
            "title": "Event-loop lag is high",
            "evidence": f"loop lag p95 peak {_fmt(p)} (avg {_fmt(avg('loop_lag_p95_ms'))})",
            "saving_ms": p, "saving": "every await is delayed by the lag — look at the blocking calls above or scale out",
            "details": {"peak_p95_ms": p}})
    return out


#: the rules, one function per kind of finding ``rule(agg, options) -> [finding]``, in the order their
#: findings are listed (each kind ranked and cut to ``limit_per_kind``; the resource findings are few)
RULES = (n_plus_one, cache_candidates, concurrency, index_candidates, loop_blocking, resources)
#: a query fingerprint keeps one finding, of the first of these rules that has one
FINGERPRINT_ORDER = (index_candidates, n_plus_one, cache_candidates)
UNRANKED = (resources,)


def suggestions_from(agg, **options) -> list[dict]:
    """Every rule over the aggregate's state (what the retained flows showed, for the per-flow rules)."""
    o = dict(DEFAULTS)
    o.update({k: v for k, v in options.items() if v is not None})
    lim = int(o["limit_per_kind"])
    found = {rule: rule(agg, o) for rule in RULES}
    for rule, kept in zip(FINGERPRINT_ORDER, one_per_fingerprint(*(found[r] for r in FINGERPRINT_ORDER))):
        found[rule] = kept
    out: list[dict] = []
    for rule in RULES:
        out.extend(found[rule] if rule in UNRANKED else _ranked(found[rule], lim))
    for s in out:
        s.pop("_rank", None)
    return out
