"""The report as tables: the summary lines and the sections ({id, title, headers, rows, note, flags})
that the terminal, Markdown and HTML renderers lay out."""
from __future__ import annotations

from .render_fmt import _limit, _ms, _num, _pct
from .state import WITHIN_SHARE

__all__ = ["summary_lines", "sections", "command_groups", "COMMAND_GROUPS"]


def _commands_line(commands, total) -> str:
    """"371 (slash commands 159, components 157, …)" when the flows are of several kinds."""
    groups = command_groups(commands)
    if len(groups) < 2:
        return _num(total)
    return _num(total) + " (" + ", ".join(f"{title.split(' (')[0].lower()} {_num(sum(c['count'] for c in rows))}"
                                          for _gid, title, rows in groups) + ")"


def _retention_line(rt) -> str:
    """"546 of 20,000 (error 40, sla 309, sample 197)": flows whose records were written whole, by rule."""
    if not rt or not rt.get("flows"):
        return "n/a"
    rules = ", ".join(f"{k} {_num(v)}" for k, v in rt["by_rule"].items())
    return f"{_num(rt['retained'])} of {_num(rt['flows'])}" + (f" ({rules})" if rules else "")


def summary_lines(r: dict) -> list[tuple[str, str]]:
    t = r["totals"]
    src = r.get("source") or {}
    rng = r.get("range") or {}
    d = r.get("deadline")
    out = [("Period", f"{rng.get('first') or 'n/a'} → {rng.get('last') or 'n/a'}"),
           ("Records", _num(t["records"])),
           ("Total flows", _commands_line(r["commands"], t["commands"])),
           ("Errors", f"{_num(t['errors'])} ({_pct(t['error_rate_pct'], 2)})"),
           ("Interaction deadline (<3 s first response)",
            f"{_pct(d['pct'], 2)} of {_num(d['measured'])}" if d else "n/a (no first_response_ms recorded)"),
           ("Flows recorded whole (retention)", _retention_line(r.get("retention"))),
           ("Skipped lines (corrupt/truncated)", _num(src.get("skipped_lines", 0))),
           ("Dropped records (writer overload)", _num(r.get("dropped", 0)))]
    if r.get("warnings"):
        out.append(("autoperf warnings", ", ".join(f"{k}: {v}" for k, v in sorted(r["warnings"].items()))))
    return out


#: the command tables: discord's metadata.interaction_type -> (section id, title); other flows: "flows"
COMMAND_GROUPS = (
    ("slash", "Slash commands", ("application_command",)),
    ("context_menu", "Context menus", ("user_command", "message_command")),
    ("component", "Components (buttons, selects)", ("component",)),
    ("modal", "Modals", ("modal_submit",)),
    ("autocomplete", "Autocomplete", ("autocomplete",)),
    ("prefix", "Prefix commands", ("prefix_command",)),
    ("event", "Events", ("event",)),
)
_GROUP_OF = {t: (gid, title) for gid, title, types in COMMAND_GROUPS for t in types}
_SLA_NOTE = ("SLA = met when at least 95 % of runs are within sla_ms (as `autoperf check` judges it); "
             "within SLA = share of runs ≤ sla_ms.")


def command_groups(commands: list[dict]) -> list[tuple[str, str, list[dict]]]:
    """The command rows split by kind (slash commands, components, modals, prefix commands, events …), in
    COMMAND_GROUPS order; flows without a discord type last ("Commands" when they are the only kind)."""
    groups: dict = {}
    for c in commands:
        gid, title = _GROUP_OF.get(c.get("type"), ("flows", None))
        groups.setdefault(gid, (title, []))[1].append(c)
    order = [g[0] for g in COMMAND_GROUPS] + ["flows"]
    out = []
    for gid in order:
        if gid in groups:
            title, rows = groups[gid]
            if gid == "flows":
                title = "Commands" if len(groups) == 1 else "Other flows"
            out.append((gid, title, rows))
    return out


def _command_table(gid, title, commands, first, error_limit_pct) -> dict:
    rows, flags = [], []
    for c in commands:
        over = c["sla_status"] == "over" or (c["error_rate_pct"] or 0) > error_limit_pct
        rows.append([c["name"], _num(c["count"]), _ms(c["avg_ms"]), _ms(c["p50_ms"]), _ms(c["p95_ms"]),
                     _ms(c["p99_ms"]), _ms(c["max_ms"]), _limit(c["sla_ms"]) if c["sla_ms"] is not None else "—",
                     ("OVER" if over else "ok") if c["sla_status"] else "—",
                     _pct(c["sla_met_pct"]) if c["sla_met_pct"] is not None else "—", _pct(c["error_rate_pct"], 2)])
        flags.append(over or (c["over_ms"].get("3000", 0) > 0 and gid != "event"))
    return {"id": f"commands-{gid}", "title": title, "flags": flags,
            "headers": ["name", "count", "avg ms", "p50", "p95", "p99", "max", "SLA ms", "SLA", "within SLA",
                        "errors"], "rows": rows,
            "note": ((_SLA_NOTE if first else "") + ("" if all(c["exact"] for c in commands) else
                     " Some percentiles are from a uniform sample (reservoir cap reached).")).strip() or None}


def _deadline_table(r) -> dict:
    initial = r.get("first_response_slas") or {}
    rows, flags, unanswered = [], [], []
    for c in r["commands"]:
        fr = c.get("first_response")
        if fr:
            row = [c["name"], _num(fr["measured"]), _pct(fr["pct"], 2), _ms(fr["p95_ms"])]
            over = False
            if initial:
                lim = initial.get(c["name"])
                over = lim is not None and fr["p95_ms"] is not None and fr["p95_ms"] >= lim
                row += [_limit(lim) if lim is not None else "—", ("OVER" if over else "ok") if lim is not None else "—"]
            rows.append(row)
            flags.append(fr["pct"] < 100.0 or over)
        else:
            unanswered.append(c["name"])   # prefix commands, events, tasks: no interaction to answer
    discord = any(c.get("type") for c in r["commands"])
    if not r.get("deadline"):
        note = ("n/a: no interactions (prefix commands and events answer none)." if discord else
                "n/a: flows carry no metadata.first_response_ms (enable the discord integration).")
    elif unanswered:
        note = "No interaction response recorded (prefix commands, events): " + ", ".join(unanswered) + "."
    else:
        note = None
    headers = ["name", "measured", "< 3 s", "p95 first response ms"]
    if initial:
        headers += ["initial SLA ms", "initial SLA"]
    return {"id": "deadline", "title": "Interaction deadline (first response < 3 s)", "flags": flags,
            "headers": headers, "rows": rows, "note": note}


def _jobs_table(jobs, executor) -> dict:
    """Process-pool jobs (or thread-pool jobs: run_in_executor, to_thread) with their queue wait."""
    mine = [j for j in jobs if (("thread" if set(j["executors"]) == {"thread"} else "process") == executor)]
    title = "Process-pool jobs" if executor == "process" else "Thread-pool jobs"
    note = None if mine else f"No {title.lower()}."
    if any(j["queue_wait"]["count"] < j["count"] for j in mine):      # the split is in the job's record
        note = ("Queue wait, run and transfer are from the jobs whose records carry them (in logs written before "
                "they were aggregated: the jobs of the flows kept whole); count and total are every job's.")
    return {"id": f"jobs-{executor}", "title": f"{title}: queue wait vs run time", "flags": None,
            "headers": ["job", "count", "queue wait p50", "queue wait p95", "run p50", "run p95", "transfer p95",
                        "total p95"],
            "rows": [[j["name"], _num(j["count"]), _ms(j["queue_wait"]["p50_ms"]), _ms(j["queue_wait"]["p95_ms"]),
                      _ms(j["run"]["p50_ms"]), _ms(j["run"]["p95_ms"]), _ms(j["transfer"]["p95_ms"]),
                      _ms(j["total"]["p95_ms"])] for j in mine],
            "note": note}


def sections(r: dict) -> list[dict]:
    """The report as a list of tables: {id, title, headers, rows, note, flags}. ``flags[i]`` marks row i bad."""
    error_limit = r.get("error_rate_limit_pct", 1.0)      # `autoperf check`'s per-command limit
    out = [_command_table(gid, title, rows, i == 0, error_limit)
           for i, (gid, title, rows) in enumerate(command_groups(r["commands"]))]
    if not out:
        out.append({"id": "commands-flows", "title": "Commands", "flags": [], "headers": [], "rows": [],
                    "note": "No flow_complete records."})
    out.append(_deadline_table(r))
    out.append({"id": "operations", "title": "Top 10 slowest operations (by p95)", "flags": None,
                "headers": ["operation", "kind", "count", "p95 ms", "max ms", "avg ms", "errors"],
                "rows": [[o["name"], o["kind"], _num(o["count"]), _ms(o["p95_ms"]), _ms(o["max_ms"]), _ms(o["avg_ms"]),
                          _num(o["errors"])] for o in r["slowest_operations"]], "note": None})
    slas = r.get("operation_slas") or []
    if slas:
        over = [o["sla_met_pct"] < 100.0 * WITHIN_SHARE for o in slas]     # the check's rule, as for commands
        out.append({"id": "operation_slas", "title": "Spans with an SLA (steps inside a flow)", "flags": over,
                    "headers": ["span", "kind", "count", "p95 ms", "SLA ms", "SLA", "within SLA"],
                    "rows": [[o["name"], o["kind"], _num(o["count"]), _ms(o["p95_ms"]), _limit(o["sla_ms"]),
                              "OVER" if bad else "ok", _pct(o["sla_met_pct"])] for o, bad in zip(slas, over)],
                    "note": "A target's sla_ms on a span, or on a kind: flow target that ran inside another flow "
                            "(docs/config.md): evaluated on each run of that span."})
    slow = r.get("slowest_flows") or []
    if slow:
        out.append({"id": "slowest_flows", "title": "Slowest flows", "flags": None,
                    "headers": ["flow", "ms", "flow_id", "started", "recorded"],
                    "rows": [[f["name"], _ms(f["duration_ms"]), f["flow_id"] or "—", f["timestamp"] or "—",
                              f["retained"] or "exemplar only"] for f in slow],
                    "note": "From the metrics records' exemplars and the flows recorded whole; \"recorded\" names the "
                            "retention rule that kept the flow's spans in the log."})
    for key, title, what in (("hosts", "Per host", "host"), ("shards", "Per shard", "shards")):
        rows = r.get(key) or []
        if len(rows) > 1:           # one host / one shard group: the totals say it all
            out.append({"id": key, "title": title, "flags": None,
                        "headers": [what, "flows", "errors", "p50", "p95", "p99", "max"],
                        "rows": [[h["label"], _num(h["count"]), _num(h["errors"]), _ms(h["p50_ms"]), _ms(h["p95_ms"]),
                                  _ms(h["p99_ms"]), _ms(h["max_ms"])] for h in rows], "note": None})
    db = r["db"]
    out.append({"id": "queries", "title": "Slow queries by fingerprint", "flags": None,
                "headers": ["fingerprint", "count", "avg ms", "p95 ms", "max ms", "total s", "statement"],
                "rows": [[q["fingerprint"], _num(q["count"]), _ms(q["avg_ms"]), _ms(q["p95_ms"]), _ms(q["max_ms"]),
                          f"{q['total_ms'] / 1000:.2f}", " ".join(str(q["statement"] or "").split())]
                         for q in r["slow_queries"]],
                "note": f"{_num(db['count'])} queries, avg {_ms(db['avg_ms'])} ms, {db['fingerprints']} fingerprints."
                if db["count"] else "No db spans."})
    out.append(_jobs_table(r["jobs"], "process"))
    if any(set(j["executors"]) == {"thread"} for j in r["jobs"]):
        out.append(_jobs_table(r["jobs"], "thread"))
    out.append({"id": "cycles", "title": "Cycles (matchmaker etc.)", "flags": None,
                "headers": ["cycle", "count", "p50 ms", "p95 ms", "max ms", "captured totals"],
                "rows": [[c["name"], _num(c["count"]), _ms(c["p50_ms"]), _ms(c["p95_ms"]), _ms(c["max_ms"]),
                          ", ".join(f"{k}={_num(v)}" for k, v in c["sums"].items())] for c in r["cycles"]],
                "note": ("No cycle spans." if not r["cycles"] else
                         "Captured totals are over the cycles recorded whole (retained), not every cycle."
                         if any(c.get("sums_retained_only") for c in r["cycles"]) else None)})
    res = r.get("resources")
    out.append({"id": "resources", "title": "Resource utilisation", "flags": None,
                "headers": ["metric", "peak", "avg", "samples"],
                "rows": [[k, _num(v["peak"]), _num(v["avg"]), _num(v["samples"])]
                         for k, v in (res["metrics"].items() if res else [])],
                "note": None if res else "No resource records."})
    lb = r["loop_blocked"]
    out.append({"id": "blocked", "title": "Event loop blocked", "flags": None,
                "headers": ["location", "count", "worst ms", "total ms", "flows"],
                "rows": [[b["location"] + (" (start-up)" if b.get("startup") else ""), _num(b["count"]),
                          _ms(b["max_ms"]), _ms(b["total_ms"]),
                          ", ".join(f"{k} ({v})" for k, v in b["flows"].items())] for b in lb["by_location"][:20]],
                "note": (f"{lb['count']} events, worst {_ms(lb['worst_ms'])} ms at {lb['worst_location']}"
                         if lb["count"] else "No loop_blocked events.")})
    sg = r.get("suggestions") or []
    out.append({"id": "suggestions", "title": "Suggestions", "flags": [s["severity"] == "high" for s in sg],
                "headers": ["severity", "kind", "flow", "suggestion", "evidence", "expected saving"],
                "rows": [[s["severity"], s["kind"], s["flow"] or "—", s["title"], s["evidence"], s["saving"]] for s in sg],
                "note": _suggest_note(r, sg)})
    return out


def _suggest_note(r, sg):
    rt = r.get("retention") or {}
    seen = r.get("suggestions_flows")
    scope = (f"Over the {_num(seen)} flows recorded whole (of {_num(rt['flows'])})."
             if seen is not None and rt.get("flows") and seen < rt["flows"] else None)
    if not sg:
        return "Nothing to suggest." + (" " + scope if scope else "")
    return scope
