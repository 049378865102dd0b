"""SLO / performance-budget gate (seed plan 12.1, 12.2, 14 "performance budgets").

``CONFIG_SCHEMA`` is the ``slo:`` section of autoperf.yaml. :func:`evaluate` is pure: it takes an
:class:`~autoperf.analysis.aggregate.Aggregator` (already fed) and the slo settings and returns
``{"ok": bool, "checks": [...], "violations": [...]}``.
"""
from __future__ import annotations

from collections.abc import Iterable

from autoperf.config.schema import Field, Float, Int, Map, Obj, Str

__all__ = ["CONFIG_SCHEMA", "DEFAULTS", "evaluate", "check_records", "slo_settings", "sla_from_config"]

_pos = dict(min=0)

FLOW_SCHEMA = Obj({
    "p50_ms": Field(Float(**_pos), default=None, doc="p50 of this flow must be under this."),
    "p95_ms": Field(Float(**_pos), default=None, doc="p95 of this flow must be under this."),
    "p99_ms": Field(Float(**_pos), default=None, doc="p99 of this flow must be under this."),
    "max_ms": Field(Float(**_pos), default=None, doc="No run of this flow may take longer."),
    "avg_ms": Field(Float(**_pos), default=None, doc="Average duration must be under this."),
    "error_rate_pct": Field(Float(min=0, max=100), default=None, doc="Error rate (%) must be at most this."),
    "sla_ms": Field(Float(**_pos), default=None, doc="SLA shown in reports when records carry none."),
}, doc="Budgets for one flow (by flow name).")

CONFIG_SCHEMA = Obj({
    "commands_p95_ms": Field(Float(**_pos), default=500, doc="95 % of commands complete under this (seed 12.1)."),
    "commands_p99_ms": Field(Float(**_pos), default=2000, doc="99 % of commands complete under this."),
    "deadline_ms": Field(Float(**_pos), default=3000, doc="Interaction deadline: commands over it are timeouts."),
    "max_over_deadline_pct": Field(Float(min=0, max=100), default=0, doc="% of commands allowed over `deadline_ms` (seed: 0)."),
    "error_rate_pct": Field(Float(min=0, max=100), default=None, doc="Overall command error rate (%) limit (off by default)."),
    "db_avg_ms": Field(Float(**_pos), default=50, doc="Average database query time must be under this."),
    "db_pool_utilisation_pct": Field(Float(min=0, max=100), default=80, doc="Peak connection-pool utilisation must stay under this."),
    "process_pool_pending": Field(Float(**_pos), default=5, doc="Peak process-pool queue depth must stay under this."),
    "worker_rss_mb": Field(Float(**_pos), default=500, doc="Peak memory per worker process (MB) must stay under this."),
    "regression_pct": Field(Float(**_pos), default=10, doc="No flow's p50/p95 may be credibly slower than the baseline by more than this (%)."),
    "regression_days": Field(Int(min=1), default=7, doc="Baseline: this many days before the most recent day in the data."),
    "min_samples": Field(Int(min=1), default=30, doc="Samples needed on each side before a regression counts."),
    "alpha": Field(Float(min=0, max=1), default=0.01, doc="Significance level of the regression tests."),
    "slow_query_ms": Field(Float(**_pos), default=100, doc="Query p95 above this counts as slow (reports, new slow queries, index advice)."),
    "flows": Field(Map(FLOW_SCHEMA, keys=Str()), default={}, doc="Per-flow budgets: `flows: {queue_command: {p95_ms: 300}}`."),
}, doc="Service-level objectives checked by `autoperf check` (exit 1 on any violation).")

DEFAULTS = CONFIG_SCHEMA.empty()
_FLOW_KEYS = tuple(FLOW_SCHEMA.fields)


def slo_settings(config_data: dict | None) -> dict:
    """The ``slo`` section with defaults (accepts a full config dict, a Config, or None)."""
    data = getattr(config_data, "data", config_data) or {}
    given = data.get("slo") if isinstance(data, dict) else None
    out = CONFIG_SCHEMA.empty()
    if isinstance(given, dict):
        for k, v in given.items():
            if k == "flows" and isinstance(v, dict):
                flows = {}
                for name, f in v.items():
                    ff = FLOW_SCHEMA.empty()
                    if isinstance(f, dict):
                        ff.update({kk: vv for kk, vv in f.items() if vv is not None})
                    flows[str(name)] = ff
                out["flows"] = flows
            elif v is not None:
                out[k] = v
    return out


def sla_from_config(config_data: dict | None) -> dict:
    """{flow_name: sla_ms} from ``targets`` (name or module.qualname) and ``slo.flows.*.sla_ms``."""
    data = getattr(config_data, "data", config_data) or {}
    out = {}
    for t in data.get("targets") or []:
        if isinstance(t, dict) and t.get("sla_ms") is not None:
            name = t.get("name") or str(t.get("target", "")).replace(":", ".")
            out[name] = float(t["sla_ms"])
    slo = data.get("slo") if isinstance(data.get("slo"), dict) else {}
    for name, f in (slo.get("flows") or {}).items():
        if isinstance(f, dict) and f.get("sla_ms") is not None:
            out[str(name)] = float(f["sla_ms"])
    return out


def _check(checks, name, target, actual, ok, detail, scope=None):
    checks.append({"name": name, "scope": scope, "target": target, "actual": actual,
                   "ok": bool(ok) if ok is not None else None, "detail": detail})


def evaluate(agg, slo: dict | None = None, *, deadline_over_exact: bool = True) -> dict:
    """Check the aggregated data against the SLOs. Checks without data are reported as ``n/a`` (pass)."""
    s = CONFIG_SCHEMA.empty()
    s.update({k: v for k, v in (slo or {}).items() if v is not None})
    checks: list[dict] = []
    allc = agg.all_cmds
    n = allc.count
    p95lim, p99lim, dl = float(s["commands_p95_ms"]), float(s["commands_p99_ms"]), float(s["deadline_ms"])

    def frac_over(limit):
        """Exact when the aggregator counted this threshold, else from the reservoir."""
        th = agg.thresholds
        for i, t in enumerate(th):
            if t == limit:
                return agg.all_over[i] / n, True
        return allc.fraction_above(limit), allc.exact

    if n:
        f, exact = frac_over(p95lim)
        _check(checks, "commands_p95", f"≥95% < {p95lim:g} ms", 100 * (1 - f), f <= 0.05,
               f"{100 * (1 - f):.2f}% of {n} commands under {p95lim:g} ms (p95 {allc.percentile(95):.1f} ms)")
        f, exact = frac_over(p99lim)
        _check(checks, "commands_p99", f"≥99% < {p99lim:g} ms", 100 * (1 - f), f <= 0.01,
               f"{100 * (1 - f):.2f}% of {n} commands under {p99lim:g} ms (p99 {allc.percentile(99):.1f} ms)")
        f, exact = frac_over(dl)
        lim = float(s["max_over_deadline_pct"])
        _check(checks, "deadline", f"≤{lim:g}% > {dl:g} ms", 100 * f, 100 * f <= lim,
               f"{round(f * n)} of {n} commands over {dl:g} ms (max {allc.max:.1f} ms)")
        if s.get("error_rate_pct") is not None:
            errs = sum(fl.errors for fl in agg.flows.values())
            rate = 100.0 * errs / n
            _check(checks, "error_rate", f"≤{s['error_rate_pct']:g}%", rate, rate <= s["error_rate_pct"],
                   f"{errs} of {n} commands failed")
    else:
        _check(checks, "commands", "commands present", 0, None, "n/a: no flow_complete records")

    if agg.db_count:
        avg = agg.db_total / agg.db_count
        _check(checks, "db_avg", f"< {s['db_avg_ms']:g} ms", avg, avg < s["db_avg_ms"],
               f"average of {agg.db_count} queries {avg:.2f} ms")
    m = agg.res_metrics

    def peak(k):
        return m[k][2] if m[k][0] else None

    for key, metric, label in (("db_pool_utilisation_pct", "db_pool_utilisation_pct", "connection pool utilisation %"),
                               ("process_pool_pending", "process_pool_pending", "process pool queue depth"),
                               ("worker_rss_mb", "max_worker_rss_mb", "worker RSS MB")):
        p = peak(metric)
        if p is not None:
            _check(checks, key, f"< {s[key]:g}", p, p < s[key], f"peak {label} {p:g} over {m[metric][0]} samples")

    for name, lim in sorted((s.get("flows") or {}).items()):
        f = agg.flows.get(name)
        if not isinstance(lim, dict):
            continue
        if f is None or f.res.count == 0:
            if any(lim.get(k) is not None for k in _FLOW_KEYS if k != "sla_ms"):
                _check(checks, "flow", "data", None, None, f"n/a: no runs of {name}", scope=name)
            continue
        for key, q in (("p50_ms", 50), ("p95_ms", 95), ("p99_ms", 99)):
            if lim.get(key) is not None:
                v = f.res.percentile(q)
                _check(checks, f"flow_{key[:-3]}", f"< {lim[key]:g} ms", v, v < lim[key],
                       f"{name} {key[:-3]} {v:.1f} ms over {f.res.count} runs", scope=name)
        if lim.get("max_ms") is not None:
            _check(checks, "flow_max", f"≤ {lim['max_ms']:g} ms", f.res.max, f.res.max <= lim["max_ms"],
                   f"{name} max {f.res.max:.1f} ms", scope=name)
        if lim.get("avg_ms") is not None:
            v = f.res.avg
            _check(checks, "flow_avg", f"< {lim['avg_ms']:g} ms", v, v < lim["avg_ms"], f"{name} avg {v:.1f} ms", scope=name)
        if lim.get("error_rate_pct") is not None:
            v = 100.0 * f.errors / f.res.count
            _check(checks, "flow_error_rate", f"≤ {lim['error_rate_pct']:g}%", v, v <= lim["error_rate_pct"],
                   f"{name}: {f.errors} of {f.res.count} failed", scope=name)

    # no regression > regression_pct: the most recent day vs the regression_days before it
    days = sorted({d for (_n, d) in agg.daily})
    if len(days) >= 2:
        import datetime as _dt
        from .regress import compare_samples
        from .stats import Reservoir
        last = days[-1]
        first_base = (_dt.date.fromisoformat(last) - _dt.timedelta(days=int(s["regression_days"]))).isoformat()
        for name in sorted(agg.flows):
            cur = agg.daily.get((name, last))
            base = Reservoir(agg.daily_cap * int(s["regression_days"]))
            for (nm, d), r in agg.daily.items():
                if nm == name and first_base <= d < last:
                    base.merge(r)
            if cur is None or base.count == 0:
                continue
            r = compare_samples(base, cur, threshold=s["regression_pct"] / 100.0, min_samples=int(s["min_samples"]),
                                alpha=float(s["alpha"]))
            if not r["enough_samples"]:
                continue
            bad = r["regressed_p50"] or r["regressed_p95"]
            which = [k for k in ("p50", "p95") if r[f"regressed_{k}"]]
            _check(checks, "regression", f"≤ {s['regression_pct']:g}% slower than the previous "
                   f"{s['regression_days']} days", max(r["p50_change_pct"] or 0, r["p95_change_pct"] or 0), not bad,
                   f"{name} on {last}: p50 {r['p50_change_pct']:+.1f}%, p95 {r['p95_change_pct']:+.1f}% "
                   f"(n={r['cur_n']} vs {r['base_n']})" + (f"; credible regression of {'/'.join(which)}" if bad else ""),
                   scope=name)

    violations = [c for c in checks if c["ok"] is False]
    return {"ok": not violations, "checks": checks, "violations": violations}


def check_records(records: Iterable[dict], slo: dict | None = None, sla: dict | None = None) -> dict:
    """Pure: aggregate ``records`` and evaluate the SLOs."""
    from .aggregate import Aggregator
    s = CONFIG_SCHEMA.empty()
    s.update({k: v for k, v in (slo or {}).items() if v is not None})
    agg = Aggregator(sla=sla, thresholds_ms=(float(s["commands_p95_ms"]), float(s["commands_p99_ms"]),
                                             float(s["deadline_ms"])))
    agg.add_all(records)
    return evaluate(agg, s)
