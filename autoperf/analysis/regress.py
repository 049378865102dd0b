"""Regression detection and A/B comparison: ``regress`` (a window against a baseline) and ``compare``.

A p50 or p95 of a flow, an operation or a query fingerprint is flagged only when it is both large
(``current / baseline - 1 > threshold``, 20 %) and credible (``min_samples`` on each side; p50: a
one-sided Mann–Whitney U test, p95: a one-sided binomial exceedance test, both in
:mod:`autoperf.analysis.stats`, on the reservoirs subsampled to ``max_test_samples``). The method and
its defaults: docs/analysis.md, "Regressions and comparisons".
"""
from __future__ import annotations

import random
from typing import Iterable

from .aggregate import Aggregator
from .dist import merge_res
from .stats import Reservoir, exceedance_test, mann_whitney_u

__all__ = ["compare_samples", "compare_aggregators", "regress", "compare", "split_by_tag", "DEFAULTS"]

DEFAULTS = {"threshold": 0.20, "min_samples": 30, "alpha": 0.01, "slow_query_ms": 100.0,
            "max_test_samples": 20_000}


def _sample(res: Reservoir, k: int) -> list[float]:
    vals = res.values
    if len(vals) <= k:
        return list(vals)
    return random.Random(1234).sample(list(vals), k)


def compare_samples(base: Reservoir, cur: Reservoir, threshold: float = 0.20, min_samples: int = 30,
                    alpha: float = 0.01, max_test_samples: int = 20_000) -> dict:
    """Compare two duration reservoirs (baseline, current). See the module doc for the rules."""
    out = {"base_n": base.count, "cur_n": cur.count,
           "base_p50_ms": base.percentile(50), "cur_p50_ms": cur.percentile(50),
           "base_p95_ms": base.percentile(95), "cur_p95_ms": cur.percentile(95),
           "p50_change_pct": None, "p95_change_pct": None, "mw_p": None, "tail_p": None,
           "regressed_p50": False, "regressed_p95": False, "improved_p50": False, "improved_p95": False,
           "enough_samples": base.count >= min_samples and cur.count >= min_samples}
    if out["base_p50_ms"] and out["cur_p50_ms"] is not None:
        out["p50_change_pct"] = 100.0 * (out["cur_p50_ms"] / out["base_p50_ms"] - 1.0)
    if out["base_p95_ms"] and out["cur_p95_ms"] is not None:
        out["p95_change_pct"] = 100.0 * (out["cur_p95_ms"] / out["base_p95_ms"] - 1.0)
    if not out["enough_samples"]:
        out["verdict"] = "insufficient data"
        return out
    a = _sample(base, max_test_samples)
    b = _sample(cur, max_test_samples)
    thr = 100.0 * threshold
    c50, c95 = out["p50_change_pct"], out["p95_change_pct"]
    if c50 is not None and abs(c50) > thr:
        mw = mann_whitney_u(a, b, alternative="greater" if c50 > 0 else "less")
        out["mw_p"] = mw["p"]
        out["effect"] = mw["effect"]
        if mw["p"] < alpha:
            out["regressed_p50" if c50 > 0 else "improved_p50"] = True
    if c95 is not None and abs(c95) > thr:
        if c95 > 0:
            t = exceedance_test(sorted(b), out["base_p95_ms"], 0.05)
        else:   # improvement: fewer than 5 % of the baseline samples would sit above the current p95
            t = exceedance_test(sorted(a), out["cur_p95_ms"], 0.05)
        out["tail_p"] = t["p"]
        out["tail_frac"] = t["frac"]
        if t["p"] < alpha:
            out["regressed_p95" if c95 > 0 else "improved_p95"] = True
    out["verdict"] = ("regression" if out["regressed_p50"] or out["regressed_p95"]
                      else "improvement" if out["improved_p50"] or out["improved_p95"] else "no credible change")
    return out


def compare_aggregators(base: Aggregator, cur: Aggregator, threshold: float = 0.20, min_samples: int = 30,
                        alpha: float = 0.01, slow_query_ms: float = 100.0, max_test_samples: int = 20_000) -> dict:
    """Flows, operations (db spans: per query fingerprint) present on both sides, compared; new slow queries
    and the queries that are gone listed."""
    kw = dict(threshold=threshold, min_samples=min_samples, alpha=alpha, max_test_samples=max_test_samples)
    flows = []
    for name in sorted(set(base.flows) | set(cur.flows)):
        b, c = base.flows.get(name), cur.flows.get(name)
        if b is None or c is None:
            flows.append({"name": name, "verdict": "only in baseline" if c is None else "new",
                          "base_n": b.res.count if b else 0, "cur_n": c.res.count if c else 0,
                          "base_p50_ms": b.res.percentile(50) if b else None,
                          "base_p95_ms": b.res.percentile(95) if b else None,
                          "cur_p50_ms": c.res.percentile(50) if c else None,
                          "cur_p95_ms": c.res.percentile(95) if c else None,
                          "p50_change_pct": None, "p95_change_pct": None})
            continue
        r = compare_samples(b.res, c.res, **kw)
        r["name"] = name
        flows.append(r)
    ops = []
    # database time by query (fingerprint), not by SQL verb: "db.select" mixes every SELECT, so replacing
    # an N+1 of fast lookups with one batch query looked like a regression of "db.select"
    for key in sorted((k for k in set(base.ops) & set(cur.ops) if k[1] != "db"), key=lambda k: (str(k[0]), str(k[1]))):
        r = compare_samples(base.ops[key].res, cur.ops[key].res, **kw)
        r["name"], r["kind"] = key
        ops.append(r)
    queries = []
    for fp in sorted(set(base.db) & set(cur.db)):
        r = compare_samples(base.db[fp].res, cur.db[fp].res, **kw)
        r["name"], r["kind"], r["fingerprint"] = cur.db[fp].statement or fp, "query", fp
        queries.append(r)
    new_slow, new_fps = [], 0
    for fp, db in cur.db.items():
        if fp in base.db:
            continue
        new_fps += 1
        p95 = db.res.percentile(95)
        if p95 is not None and p95 >= slow_query_ms:
            new_slow.append({"fingerprint": fp, "statement": db.statement, "count": db.res.count,
                             "p95_ms": p95, "max_ms": db.res.max, "total_ms": db.res.total})
    new_slow.sort(key=lambda r: -r["total_ms"])
    gone = [{"fingerprint": fp, "statement": db.statement, "count": db.res.count, "total_ms": db.res.total}
            for fp, db in base.db.items() if fp not in cur.db]
    gone.sort(key=lambda r: -r["total_ms"])
    scopes = (("flow", flows), ("operation", ops), ("query", queries))
    regs = [dict(r, scope=scope) for scope, rows in scopes for r in rows if r.get("verdict") == "regression"]
    imps = [dict(r, scope=scope) for scope, rows in scopes for r in rows if r.get("verdict") == "improvement"]
    return {"threshold_pct": 100.0 * threshold, "min_samples": min_samples, "alpha": alpha,
            "method": "p50: one-sided Mann-Whitney U (normal approx., tie-corrected); "
                      "p95: one-sided binomial exceedance test of the baseline p95",
            "flows": flows, "operations": ops, "queries": queries, "regressions": regs, "improvements": imps,
            "new_slow_queries": new_slow, "new_fingerprints": new_fps, "gone_queries": gone,
            "baseline": {"records": base.records, "commands": base.all_cmds.count,
                         "first": base.first_ts, "last": base.last_ts},
            "current": {"records": cur.records, "commands": cur.all_cmds.count,
                        "first": cur.first_ts, "last": cur.last_ts}}


def trend(*aggs: Aggregator) -> dict:
    """Daily p50/p95/count per flow over the given aggregators."""
    days: dict = {}
    for agg in aggs:
        for (name, day), r in agg.daily.items():
            k = (name, day)
            if k in days:
                m = merge_res(Reservoir(max(r.cap, 5000)), days[k])
                days[k] = merge_res(m, r)
            else:
                days[k] = r
    out: dict = {}
    for (name, day), r in sorted(days.items()):
        out.setdefault(name, []).append({"day": day, "count": r.count, "p50_ms": r.percentile(50),
                                         "p95_ms": r.percentile(95)})
    return out


def regress(records: Iterable[dict], window_start: str, window_end: str | None = None,
            baseline_start: str | None = None, **kw) -> dict:
    """Pure: records with ``baseline_start <= ts < window_start`` are the baseline, those with
    ``window_start <= ts < window_end`` the current window (timestamps as record-format strings)."""
    from .reader import to_ts
    ws, we, bs = to_ts(window_start), to_ts(window_end), to_ts(baseline_start)
    base, cur = Aggregator(), Aggregator()
    badd, cadd = base.add, cur.add
    for r in records:
        ts = r.get("timestamp")
        if type(ts) is not str:
            continue
        if ts >= ws:
            if we is None or ts < we:
                cadd(r)
        elif bs is None or ts >= bs:
            badd(r)
    opts = {k: kw[k] for k in DEFAULTS if k in kw}
    out = compare_aggregators(base, cur, **opts)
    out["trend"] = trend(base, cur)
    out["window"] = {"start": ws, "end": we}
    out["baseline_window"] = {"start": bs, "end": ws}
    return out


def record_tag(rec: dict, key: str):
    tags = rec.get("tags")
    if type(tags) is dict and key in tags:
        return tags[key]
    return rec.get(key)


def split_by_tag(records: Iterable[dict], key: str, a_value: str, b_value: str) -> tuple[Aggregator, Aggregator]:
    """One pass: records tagged key=a_value into A, key=b_value into B (tags in ``tags`` or top level)."""
    a, b = Aggregator(), Aggregator()
    for r in records:
        v = record_tag(r, key)
        if v is None:
            continue
        v = str(v)
        if v == a_value:
            a.add(r)
        elif v == b_value:
            b.add(r)
    return a, b


def compare(a_records: Iterable[dict], b_records: Iterable[dict], **kw) -> dict:
    """Pure: A is the baseline, B the candidate."""
    a, b = Aggregator(), Aggregator()
    a.add_all(a_records)
    b.add_all(b_records)
    opts = {k: kw[k] for k in DEFAULTS if k in kw}
    return compare_aggregators(a, b, **opts)
