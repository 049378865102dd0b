"""The Aggregator's output: the plain-dict report that render / slo / regress / suggest read."""
from __future__ import annotations

from .dist import Dist, merge_res
from .state import DEADLINE_MS, HIST_EDGES, LEVEL_NAMES, RESOURCE_METRICS, sla_holds
from .stats import Reservoir

__all__ = ["result", "all_commands", "command_rows", "histogram"]


def _budget(state) -> dict:
    """A span's configured threshold_ms and the share of its calls within it."""
    if not state.th_known:
        return {"threshold_ms": None, "within_threshold_pct": None}
    return {"threshold_ms": state.threshold_ms,
            "within_threshold_pct": 100.0 * (state.th_known - state.th_over) / state.th_known}


def _slowest(heap, top) -> list[dict]:
    """The slowest flows (exemplars of the metrics records and retained flows), each flow once; ``retained``
    names the rule when its records were read (else the flow is known from an exemplar only)."""
    rows, seen = [], {}
    for d, fid, _seq, (name, ts, rule) in sorted(heap, reverse=True):
        if fid and fid in seen:
            if rule is not None and seen[fid]["retained"] is None:
                seen[fid]["retained"] = rule
            continue
        row = {"name": name, "duration_ms": d, "flow_id": fid or None, "timestamp": ts, "retained": rule}
        rows.append(row)
        if fid:
            seen[fid] = row
    return rows[:top]


def _breakdown(table) -> list[dict]:
    """Root flows per host or per shard group."""
    rows = []
    for label, (dist, errors) in table.items():
        s = dist.summary()
        rows.append({"label": label, "count": s["count"], "errors": errors, "p50_ms": s["p50_ms"],
                     "p95_ms": s["p95_ms"], "p99_ms": s["p99_ms"], "max_ms": s["max_ms"]})
    rows.sort(key=lambda r: r["label"])
    return rows


def all_commands(agg) -> Reservoir:
    """All commands together: the per-command reservoirs merged (exact while they are; otherwise a
    count-weighted uniform sample). Count, total, min and max are exact."""
    n = sum(f.res.count for f in agg.flows.values())
    if agg._all_cache is not None and agg._all_cache[0] == n:
        return agg._all_cache[1]
    r = Reservoir(agg.cap)
    for name in sorted(agg.flows):
        r = merge_res(r, agg.flows[name].res)
    agg._all_cache = (n, r)
    return r

def command_rows(agg) -> list[dict]:
    rows = []
    for name, f in agg.flows.items():
        s = f.res.summary()
        n = s["count"]
        row = {"name": name, "command": f.command, "type": f.itype, "count": n, "errors": f.errors,
               "error_rate_pct": 100.0 * f.errors / n if n else None,
               "avg_ms": s["avg_ms"], "p50_ms": s["p50_ms"], "p95_ms": s["p95_ms"], "p99_ms": s["p99_ms"],
               "min_ms": s["min_ms"], "max_ms": s["max_ms"], "exact": f.res.exact,
               "sla_ms": f.sla_ms,
               "sla_met_pct": (100.0 * (f.sla_known - f.sla_missed) / f.sla_known) if f.sla_known else None,
               "over_sla": f.sla_missed if f.sla_known else None,
               "sla_status": (None if not f.sla_known else ("ok" if sla_holds(f.sla_known, f.sla_missed)
                                                             else "over")),
               "over_ms": {f"{t:g}": c for t, c in zip(agg.thresholds, f.over)},
               "first_response": ({"measured": f.fr_n, "within_deadline": f.fr_ok,
                                   "pct": 100.0 * f.fr_ok / f.fr_n,
                                   "p95_ms": f.fr_res.percentile(95) if f.fr_res else None}
                                  if f.fr_n else None),
               "statuses": {str(k): v for k, v in f.statuses.items()}}
        rows.append(row)
    rows.sort(key=lambda r: (-r["count"], r["name"]))
    return rows

def histogram(res: Reservoir) -> dict:
    import bisect
    counts = [0] * len(HIST_EDGES)
    for v in res.values:
        counts[max(0, bisect.bisect_right(HIST_EDGES, v) - 1)] += 1
    scale = res.count / len(res.values) if len(res.values) else 1.0
    if scale != 1.0:
        counts = [round(c * scale) for c in counts]
    return {"edges": list(HIST_EDGES), "counts": counts}

def result(agg, top: int = 10, suggestions: list | None = None) -> dict:
    """The report dict; ``suggestions`` (suggest.suggestions_from) are added when given."""
    cmds = command_rows(agg)
    all_cmds = all_commands(agg)
    total_cmds = all_cmds.count
    total_err = sum(f.errors for f in agg.flows.values())
    fr_n = sum(f.fr_n for f in agg.flows.values())
    fr_ok = sum(f.fr_ok for f in agg.flows.values())
    allc = all_cmds.summary()
    allc["over_ms"] = {f"{t:g}": c for t, c in zip(agg.thresholds, agg.all_over)}
    allc["under_pct"] = {f"{t:g}": (100.0 * (total_cmds - c) / total_cmds if total_cmds else None)
                         for t, c in zip(agg.thresholds, agg.all_over)}
    allc["exact"] = all_cmds.exact

    ops = []
    for (name, kind), op in agg.ops.items():
        s = op.res.summary()
        ops.append({"name": name, "kind": kind, "count": s["count"], "avg_ms": s["avg_ms"],
                    "p50_ms": s["p50_ms"], "p95_ms": s["p95_ms"], "p99_ms": s["p99_ms"],
                    "max_ms": s["max_ms"], "total_ms": op.res.total, "errors": op.errors,
                    "sla_ms": op.sla_ms,
                    "sla_met_pct": (100.0 * (op.sla_known - op.sla_missed) / op.sla_known
                                    if op.sla_known else None), **_budget(op)})
    ops.sort(key=lambda r: (-(r["p95_ms"] or 0), r["name"]))

    queries = []
    for fp, db in agg.db.items():
        s = db.res.summary()
        queries.append({"fingerprint": fp, "statement": db.statement, "operation": db.operation,
                        "system": db.system, "count": s["count"], "avg_ms": s["avg_ms"],
                        "p50_ms": s["p50_ms"], "p95_ms": s["p95_ms"], "max_ms": s["max_ms"],
                        "total_ms": db.res.total, "errors": db.errors,
                        "rows": None if db.res.__class__ is Dist else db.rows,   # spans of retained flows only
                        "flows": db.flows, **_budget(db)})
    queries.sort(key=lambda r: (-r["total_ms"], r["fingerprint"]))

    jobs = []
    for name, j in agg.jobs.items():
        def sm(r):
            s = r.summary()
            return {"count": s["count"], "avg_ms": s["avg_ms"], "p50_ms": s["p50_ms"],
                    "p95_ms": s["p95_ms"], "max_ms": s["max_ms"]}
        jobs.append({"name": name, "count": j[0].count, "total": sm(j[0]), "queue_wait": sm(j[1]),
                     "run": sm(j[2]), "transfer": sm(j[3]), "executors": dict(j[4])})
    jobs.sort(key=lambda r: -r["count"])

    cycles = []
    for name, c in agg.cycles.items():
        s = c[0].summary()
        cycles.append({"name": name, "count": s["count"], "avg_ms": s["avg_ms"], "p50_ms": s["p50_ms"],
                       "p95_ms": s["p95_ms"], "max_ms": s["max_ms"], "errors": c[2],
                       "sums": dict(sorted(c[1].items())), "sums_retained_only": c[3]})
    cycles.sort(key=lambda r: -r["count"])

    resources = None
    if agg.res_n:
        metrics = {}
        for k, (n, sm_, mx) in agg.res_metrics.items():
            if n:
                metrics[k] = {"peak": mx, "avg": sm_ / n, "samples": n}
        keys, labels = agg.res_series.series()
        series = {}
        for k in RESOURCE_METRICS:
            vals = []
            any_v = False
            for b in keys:
                bucket = agg.res_series.data.get(("r", b))
                x = bucket.get(k) if bucket else None
                if x is None:
                    vals.append(None)
                else:
                    any_v = True
                    vals.append(x[2] if k not in ("rss_mb", "uss_mb", "cpu_percent") else x[1] / x[0])
            if any_v:
                series[k] = vals
        resources = {"samples": agg.res_n, "metrics": metrics,
                     "series": {"labels": labels, "bucket": LEVEL_NAMES[agg.res_series.level],
                                "values": series}}

    lb = agg.loop_blocks
    blocked = {"count": lb.count,
               "worst_ms": lb.worst[0] if lb.worst else None,
               "worst_location": lb.worst[1] if lb.worst else None,
               "by_location": lb.rows()}

    keys, labels = agg.flow_series.series()
    fseries = {"labels": labels, "bucket": LEVEL_NAMES[agg.flow_series.level], "p95_ms": {}, "count": {}}
    for name in agg.flows:
        p95s, counts = [], []
        for b in keys:
            r = agg.flow_series.data.get((name, b))
            p95s.append(r.percentile(95) if r is not None and r.count else None)
            counts.append(r.count if r is not None else 0)
        fseries["p95_ms"][name] = p95s
        fseries["count"][name] = counts

    daily = {}
    for (name, day), r in sorted(agg.daily.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        daily.setdefault(name, []).append({"day": day, "count": r.count, "avg_ms": r.avg,
                                           "p50_ms": r.percentile(50), "p95_ms": r.percentile(95)})

    out = {
        "range": {"first": agg.first_ts, "last": agg.last_ts},
        "totals": {"records": agg.records, "commands": total_cmds, "errors": total_err,
                   "error_rate_pct": 100.0 * total_err / total_cmds if total_cmds else None,
                   "by_type": {str(k): v for k, v in agg.types.most_common()},
                   "by_level": {str(k): v for k, v in agg.levels.most_common()}},
        "all_commands": allc,
        "commands": cmds,
        "deadline": ({"deadline_ms": DEADLINE_MS, "measured": fr_n, "within": fr_ok,
                      "pct": 100.0 * fr_ok / fr_n} if fr_n else None),
        "slowest_operations": ops[:top],
        "operations_total": len(ops),
        "operation_slas": sorted((o for o in ops if o["sla_ms"] is not None), key=lambda o: (o["name"], o["kind"])),
        "db": {"count": agg.db_count, "total_ms": agg.db_total,
               "avg_ms": agg.db_total / agg.db_count if agg.db_count else None,
               "fingerprints": len(queries)},
        "slow_queries": sorted(queries, key=lambda r: (-(r["p95_ms"] or 0), r["fingerprint"]))[:max(top, 20)],
        "jobs": jobs,
        "cycles": cycles,
        "resources": resources,
        "loop_blocked": blocked,
        "series": fseries,
        "histograms": {name: histogram(f.res) for name, f in agg.flows.items()},
        "daily": daily,
        "warnings": dict(agg.warnings),
        "dropped": agg.dropped,
        "retention": agg.retention.to_dict(),
        "metrics_records": agg.metrics_records,
        "slowest_flows": _slowest(agg.slowest, top),
        "hosts": _breakdown(agg.hosts),
        "shards": _breakdown(agg.shards),
        "suggestions_flows": agg.retained_seen,
    }
    if suggestions is not None:
        out["suggestions"] = suggestions
    return out

