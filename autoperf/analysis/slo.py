"""SLO / performance-budget gate (seed plan 12.1, 12.2, 14 "performance budgets").

``CONFIG_SCHEMA`` is the ``slo:`` section of autoperf.yaml. :func:`evaluate` is pure: it takes an
:class:`~autoperf.analysis.aggregate.Aggregator` (already fed) and the slo settings and returns
``{"ok": bool, "checks": [...], "violations": [...]}``. Each objective is a function of the aggregate
and the settings; every one evaluated is listed (``ok`` None: no data, never a failure), with where its
limit comes from. Configured SLAs (``sla_ms``) and span budgets (``threshold_ms``) are enforced like
the seed's goals: at least 95 % of runs within (state.WITHIN_SHARE, as the report's SLA column).
"""
from __future__ import annotations

from collections.abc import Iterable

from autoperf.config.schema import Field, Float, Int, Map, Obj, Str

from .state import DEADLINE_MS, WITHIN_SHARE, sla_holds

__all__ = ["CONFIG_SCHEMA", "DEFAULTS", "evaluate", "check_records", "slo_settings", "sla_from_config",
           "OBJECTIVES", "is_command"]

_pos = dict(min=0)

FLOW_SCHEMA = Obj({
    "p50_ms": Field(Float(**_pos), default=None, doc="p50 of this flow must be under this."),
    "p95_ms": Field(Float(**_pos), default=None, doc="p95 of this flow must be under this."),
    "p99_ms": Field(Float(**_pos), default=None, doc="p99 of this flow must be under this."),
    "max_ms": Field(Float(**_pos), default=None, doc="No run of this flow may take longer."),
    "avg_ms": Field(Float(**_pos), default=None, doc="Average duration must be under this."),
    "error_rate_pct": Field(Float(min=0, max=100), default=None, doc="Error rate (%) must be at most this."),
    "sla_ms": Field(Float(**_pos), default=None,
                    doc="SLA when the records carry none: at least 95 % of runs within it."),
    "first_response_p95_ms": Field(Float(**_pos), default=None,
                                   doc="The seed's \"initial\" SLA (4.1): p95 of the interaction's first "
                                       "response must be under this."),
}, doc="Budgets for one flow (by flow name).")

CONFIG_SCHEMA = Obj({
    "commands_p95_ms": Field(Float(**_pos), default=500, doc="95 % of commands complete under this (seed 12.1)."),
    "commands_p99_ms": Field(Float(**_pos), default=2000, doc="99 % of commands complete under this."),
    "deadline_ms": Field(Float(**_pos), default=3000,
                         doc="Interaction deadline: a first response later than this is a timeout."),
    "max_over_deadline_pct": Field(Float(min=0, max=100), default=0,
                                   doc="% of interactions allowed to time out (seed: 0)."),
    "error_rate_pct": Field(Float(min=0, max=100), default=1,
                            doc="Per command: % of runs that may end in an error (an exception)."),
    "db_avg_ms": Field(Float(**_pos), default=50, doc="Average database query time must be under this."),
    "db_pool_utilisation_pct": Field(Float(min=0, max=100), default=80, doc="Peak connection-pool utilisation must stay under this."),
    "process_pool_pending": Field(Float(**_pos), default=5, doc="Peak process-pool queue depth must stay under this."),
    "worker_rss_mb": Field(Float(**_pos), default=500,
                           doc="Peak memory (RSS, MB) of the program's process and of each worker must stay under this."),
    "regression_pct": Field(Float(**_pos), default=10, doc="No flow's p50/p95 may be credibly slower than the baseline by more than this (%)."),
    "regression_days": Field(Int(min=1), default=7, doc="Baseline: this many days before the most recent day in the data."),
    "min_samples": Field(Int(min=1), default=30, doc="Samples needed on each side before a regression counts."),
    "alpha": Field(Float(min=0, max=1), default=0.01, doc="Significance level of the regression tests."),
    "slow_query_ms": Field(Float(**_pos), default=100, doc="Query p95 above this counts as slow (reports, new slow queries, index advice)."),
    "flows": Field(Map(FLOW_SCHEMA, keys=Str()), default={}, doc="Per-flow budgets: `flows: {queue_command: {p95_ms: 300}}`."),
}, doc="Service-level objectives checked by `autoperf check` (exit 1 on any violation).")

DEFAULTS = CONFIG_SCHEMA.empty()
_FLOW_KEYS = tuple(FLOW_SCHEMA.fields)
#: flows that are not commands a user runs: gateway events (on_message, on_ready …)
NOT_COMMANDS = frozenset(("event",))
_WITHIN = f"≥{100 * WITHIN_SHARE:g}%"


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


def _check(name, target, actual, ok, detail, scope=None, source=None):
    return {"name": name, "scope": scope, "target": target, "actual": actual,
            "ok": bool(ok) if ok is not None else None, "detail": detail, "source": source}


def _slo(key, s):
    """Where a limit comes from: a key of the ``slo:`` section (its default is the seed's goal)."""
    return f"slo.{key}"


def _short(text, n=60):
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[:n - 1] + "…"


def is_command(flow) -> bool:
    """A flow a user runs (a command, button, modal, request …), not a gateway event handler."""
    return flow.itype not in NOT_COMMANDS


# ---------------------------------------------------------------- objectives
def command_latency(agg, s) -> list[dict]:
    """Seed 12.1: 95 % of commands under 500 ms, 99 % under 2000 ms (exact counts; events are no commands)."""
    cmds = [f for f in agg.flows.values() if is_command(f)]
    n = sum(f.res.count for f in cmds)
    if not n:
        return [_check("commands", "commands present", None, None, "n/a: no command flows (flow_complete records)")]
    out = []
    for key, share in (("commands_p95_ms", 0.95), ("commands_p99_ms", 0.99)):
        limit = float(s[key])
        over = _over(agg, cmds, limit)
        pct_under = 100.0 * (n - over) / n
        out.append(_check(key[:-3], f"≥{100 * share:g}% < {limit:g} ms", pct_under, over <= (1 - share) * n + 1e-9,
                          f"{n - over} of {n} commands under {limit:g} ms", source=_slo(key, s)))
    return out


def _over(agg, flows, limit) -> int:
    """Runs of ``flows`` longer than ``limit``: exact when the aggregator counted that threshold."""
    for i, t in enumerate(agg.thresholds):
        if t == limit:
            return sum(f.over[i] for f in flows)
    return round(sum(f.res.count * f.res.fraction_above(limit) for f in flows))


def interaction_deadline(agg, s) -> list[dict]:
    """Seed 12.1 "0 % interaction timeouts": first responses after the deadline, over the interactions only
    (prefix commands and events have no interaction to answer)."""
    dl, lim = float(s["deadline_ms"]), float(s["max_over_deadline_pct"])
    flows = [f for f in agg.flows.values() if f.fr_n]
    n = sum(f.fr_n for f in flows)
    if not n:
        return [_check("interaction_deadline", f"≤{lim:g}% > {dl:g} ms", None, None,
                       "n/a: no interaction responses recorded (no first_response_ms)", source=_slo("deadline_ms", s))]
    if dl == DEADLINE_MS:
        late = n - sum(f.fr_ok for f in flows)
    else:       # never answered (no first_response_ms) + answered after dl (from the first-response sample)
        late = sum((f.fr_n - (f.fr_res.count if f.fr_res else 0))
                   + (round(f.fr_res.count * f.fr_res.fraction_above(dl)) if f.fr_res else 0) for f in flows)
    pct = 100.0 * late / n
    return [_check("interaction_deadline", f"≤{lim:g}% > {dl:g} ms", pct, pct <= lim,
                   f"{late} of {n} interactions answered after {dl:g} ms or never", source=_slo("deadline_ms", s))]


def error_rates(agg, s) -> list[dict]:
    """Per command: the share of runs that ended in an error (an exception)."""
    lim = float(s["error_rate_pct"])
    out = []
    for name, f in sorted(agg.flows.items()):
        if not is_command(f) or not f.res.count:
            continue
        errors = f.statuses.get("error", 0)
        rate = 100.0 * errors / f.res.count
        out.append(_check("error_rate", f"≤{lim:g}%", rate, rate <= lim, f"{errors} of {f.res.count} runs failed",
                          scope=name, source=_slo("error_rate_pct", s)))
    return out


def _within(name, limit, known, over, what, scope, source):
    """At least 95 % of ``known`` runs (calls) within ``limit`` ms, ``over`` of them above it."""
    return _check(name, f"{_WITHIN} ≤ {limit:g} ms", 100.0 * (known - over) / known, sla_holds(known, over),
                  f"{known - over} of {known} {what} within {limit:g} ms", scope=scope, source=source)


def slas(agg, s) -> list[dict]:
    """Every flow with an SLA (the records' sla_ms, else the config's), and every span that carries one (a
    step: a target's sla_ms inside a flow): at least 95 % of runs within it."""
    out = [_within("sla", f.sla_ms, f.sla_known, f.sla_missed, "runs", name, "sla_ms")
           for name, f in sorted(agg.flows.items()) if f.sla_known]
    out += [_within("sla", op.sla_ms, op.sla_known, op.sla_missed, "runs", f"{name} ({kind})", "sla_ms")
            for (name, kind), op in sorted(agg.ops.items(), key=lambda x: (str(x[0][0]), str(x[0][1])))
            if op.sla_known]
    return out


def budgets(agg, s) -> list[dict]:
    """Every span with a configured threshold_ms (a target's budget, seed 4.2; the db integration's
    slow-query threshold, per query fingerprint): at least 95 % of calls within it."""
    items = [(f"{name} ({kind})", op) for (name, kind), op in agg.ops.items() if kind != "db"]
    items += [(f"{_short(db.statement)} [{fp}]" if db.statement else fp, db) for fp, db in agg.db.items()]
    return [_within("budget", b.threshold_ms, b.th_known, b.th_over, "calls", label, "threshold_ms")
            for label, b in sorted(items, key=lambda x: x[0]) if b.th_known]


def first_responses(agg, s) -> list[dict]:
    """``slo.flows.<name>.first_response_p95_ms``: the seed's "initial" SLAs, on the first response."""
    out = []
    for name, lim in sorted((s.get("flows") or {}).items()):
        limit = lim.get("first_response_p95_ms") if isinstance(lim, dict) else None
        if limit is None:
            continue
        f = agg.flows.get(name)
        res = f.fr_res if f is not None else None
        src = f"slo.flows.{name}.first_response_p95_ms"
        if res is None or not res.count:
            out.append(_check("first_response_p95", f"< {limit:g} ms", None, None,
                              f"n/a: no first responses of {name}", scope=name, source=src))
            continue
        v = res.percentile(95)
        out.append(_check("first_response_p95", f"< {limit:g} ms", v, v < limit,
                          f"{name} first response p95 {v:.1f} ms over {res.count} interactions", scope=name, source=src))
    return out


def database(agg, s) -> list[dict]:
    """Seed 12.1: database queries average under 50 ms."""
    if not agg.db_count:
        return [_check("db_avg", f"< {s['db_avg_ms']:g} ms", None, None, "n/a: no db spans", source=_slo("db_avg_ms", s))]
    avg = agg.db_total / agg.db_count
    return [_check("db_avg", f"< {s['db_avg_ms']:g} ms", avg, avg < s["db_avg_ms"],
                   f"average of {agg.db_count} queries {avg:.2f} ms", source=_slo("db_avg_ms", s))]


def resources(agg, s) -> list[dict]:
    """Seed 12.2: pool utilisation, process-pool queue depth, memory of the program and of each worker."""
    m = agg.res_metrics
    out = []
    for key, metric, label in (("db_pool_utilisation_pct", "db_pool_utilisation_pct", "connection pool utilisation %"),
                               ("process_pool_pending", "process_pool_pending", "process pool queue depth"),
                               ("worker_rss_mb", "rss_mb", "RSS MB of the program's process"),
                               ("worker_rss_mb", "max_worker_rss_mb", "RSS MB of a worker process")):
        n, _total, peak = m[metric]
        name = "process_rss_mb" if metric == "rss_mb" else key
        if not n:
            out.append(_check(name, f"< {s[key]:g}", None, None, f"n/a: no {label} samples", source=_slo(key, s)))
            continue
        out.append(_check(name, f"< {s[key]:g}", peak, peak < s[key], f"peak {label} {peak:g} over {n} samples",
                          source=_slo(key, s)))
    return out


def flow_budgets(agg, s) -> list[dict]:
    """``slo.flows.<name>``: p50/p95/p99/max/avg/error rate of one flow."""
    out = []
    for name, lim in sorted((s.get("flows") or {}).items()):
        if not isinstance(lim, dict):
            continue
        keys = [k for k in _FLOW_KEYS if lim.get(k) is not None and k not in ("sla_ms", "first_response_p95_ms")]
        if not keys:
            continue
        f = agg.flows.get(name)
        src = f"slo.flows.{name}"
        if f is None or f.res.count == 0:
            out.append(_check("flow", "data", None, None, f"n/a: no runs of {name}", scope=name, source=src))
            continue
        for key, q in (("p50_ms", 50), ("p95_ms", 95), ("p99_ms", 99)):
            if lim.get(key) is not None:
                v = f.res.percentile(q)
                out.append(_check(f"flow_{key[:-3]}", f"< {lim[key]:g} ms", v, v < lim[key],
                                  f"{name} {key[:-3]} {v:.1f} ms over {f.res.count} runs", scope=name, source=src))
        if lim.get("max_ms") is not None:
            out.append(_check("flow_max", f"≤ {lim['max_ms']:g} ms", f.res.max, f.res.max <= lim["max_ms"],
                              f"{name} max {f.res.max:.1f} ms", scope=name, source=src))
        if lim.get("avg_ms") is not None:
            v = f.res.avg
            out.append(_check("flow_avg", f"< {lim['avg_ms']:g} ms", v, v < lim["avg_ms"], f"{name} avg {v:.1f} ms",
                              scope=name, source=src))
        if lim.get("error_rate_pct") is not None:
            v = 100.0 * f.errors / f.res.count
            out.append(_check("flow_error_rate", f"≤ {lim['error_rate_pct']:g}%", v, v <= lim["error_rate_pct"],
                              f"{name}: {f.errors} of {f.res.count} failed", scope=name, source=src))
    return out


def regressions(agg, s) -> list[dict]:
    """Seed 12.2: no flow credibly slower than the regression_days before the most recent day."""
    days = sorted({d for (_n, d) in agg.daily})
    if len(days) < 2:
        return [_check("regression", f"≤ {s['regression_pct']:g}% slower", None, None,
                       "n/a: one day of data or less", source=_slo("regression_pct", s))]
    import datetime as _dt

    from .dist import merge_res
    from .regress import compare_samples
    from .stats import Reservoir
    last = days[-1]
    first_base = (_dt.date.fromisoformat(last) - _dt.timedelta(days=int(s["regression_days"]))).isoformat()
    out = []
    for name in sorted(agg.flows):
        cur = agg.daily.get((name, last))
        base = Reservoir(agg.daily_cap * int(s["regression_days"]))
        for (nm, d), r in agg.daily.items():
            if nm == name and first_base <= d < last:
                base = merge_res(base, r)
        if cur is None or base.count == 0:
            continue
        r = compare_samples(base, cur, threshold=s["regression_pct"] / 100.0, min_samples=int(s["min_samples"]),
                            alpha=float(s["alpha"]))
        if not r["enough_samples"]:
            continue
        bad = r["regressed_p50"] or r["regressed_p95"]
        which = [k for k in ("p50", "p95") if r[f"regressed_{k}"]]
        out.append(_check("regression", f"≤ {s['regression_pct']:g}% slower than the previous "
                          f"{s['regression_days']} days", max(r["p50_change_pct"] or 0, r["p95_change_pct"] or 0),
                          not bad, f"{name} on {last}: p50 {r['p50_change_pct']:+.1f}%, p95 {r['p95_change_pct']:+.1f}% "
                          f"(n={r['cur_n']} vs {r['base_n']})" + (f"; credible regression of {'/'.join(which)}" if bad else ""),
                          scope=name, source=_slo("regression_pct", s)))
    return out


OBJECTIVES = (command_latency, interaction_deadline, error_rates, slas, first_responses, budgets, database,
              resources, flow_budgets, regressions)


def evaluate(agg, slo: dict | None = None) -> dict:
    """Check the aggregated data against every objective (see the module doc)."""
    s = CONFIG_SCHEMA.empty()
    s.update({k: v for k, v in (slo or {}).items() if v is not None})
    checks = [c for objective in OBJECTIVES for c in objective(agg, s)]
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
    return evaluate(agg, slo)
