"""Render a report dict (``Aggregator.result()`` + ``source``) as terminal text, Markdown, JSON or HTML."""
from __future__ import annotations

import html as _html
import os

from .state import WITHIN_SHARE

__all__ = ["render", "render_terminal", "render_markdown", "render_json", "render_html", "sections",
           "json_for_script"]


def _ms(v):
    if v is None:
        return "n/a"
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.1f}"


def _limit(v):
    """A configured limit (an SLA): as written when whole ("300", "1,500"), else like a measurement."""
    if v is not None and float(v).is_integer():
        return f"{v:,.0f}"
    return _ms(v)


def _pct(v, digits=1):
    return "n/a" if v is None else f"{v:.{digits}f}%"


def _num(v):
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.1f}"
    return f"{v:,}"


def _short(s, n=70):
    if s is None:
        return ""
    s = " ".join(str(s).split())
    return s if len(s) <= n else s[: n - 1] + "…"


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


# ---------------------------------------------------------------- text
def _table(headers, rows, colour=False, flags=None, maxw=60):
    rows = [[_short(c, maxw) if isinstance(c, str) else str(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in rows:
        for i, c in enumerate(row):
            widths[i] = max(widths[i], len(c))

    def numeric(s):
        return s[:1].isdigit() or s[:1] in "-+" or s == "n/a"

    def fmt_row(row):
        return "  ".join((c.rjust(widths[i]) if numeric(c) and i > 0 else c.ljust(widths[i]))
                         for i, c in enumerate(row)).rstrip()

    lines = [fmt_row(headers), "  ".join("-" * w for w in widths)]
    for i, row in enumerate(rows):
        line = fmt_row(row)
        if colour and flags and i < len(flags) and flags[i]:
            line = f"\x1b[31m{line}\x1b[0m"
        lines.append(line)
    if colour:
        lines[0] = f"\x1b[1m{lines[0]}\x1b[0m"
    return lines


def render_terminal(r: dict, colour: bool | None = None, width_hint: int = 60) -> str:
    if colour is None:
        import sys
        colour = sys.stdout.isatty() and os.environ.get("NO_COLOR") is None
    out = []
    title = "autoperf report"
    out.append(f"\x1b[1m{title}\x1b[0m" if colour else title)
    out.append("=" * len(title))
    kw = max(len(k) for k, _ in summary_lines(r))
    for k, v in summary_lines(r):
        out.append(f"{k.ljust(kw)}  {v}")
    for s in sections(r):
        out.append("")
        out.append(f"\x1b[1m{s['title']}\x1b[0m" if colour else s["title"])
        if s["id"] == "suggestions" and r.get("suggestions"):
            out.extend(render_suggestions(r["suggestions"], "terminal", colour).splitlines()[2:])
            continue
        if s["rows"]:
            out.extend(_table(s["headers"], s["rows"], colour, s["flags"], width_hint))
        if s["note"]:
            out.append(s["note"])
    return "\n".join(out) + "\n"


def _md_cell(c):
    return str(c).replace("|", "\\|").replace("\n", " ")


def render_markdown(r: dict) -> str:
    out = ["# autoperf report", ""]
    for k, v in summary_lines(r):
        out.append(f"- **{k}:** {_md_cell(v)}")
    for s in sections(r):
        out += ["", f"## {s['title']}", ""]
        if s["id"] == "suggestions" and r.get("suggestions"):
            out.extend(render_suggestions(r["suggestions"], "markdown").splitlines()[2:])
            continue
        if s["rows"]:
            out.append("| " + " | ".join(s["headers"]) + " |")
            out.append("|" + "|".join("---" for _ in s["headers"]) + "|")
            for row in s["rows"]:
                out.append("| " + " | ".join(_md_cell(c) for c in row) + " |")
        if s["note"]:
            out += ["", f"_{_md_cell(s['note'])}_"]
    return "\n".join(out) + "\n"


def render_json(r: dict) -> str:
    import orjson
    return orjson.dumps(r, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode() + "\n"


# ---------------------------------------------------------------- html
def json_for_script(data) -> str:
    """JSON safe to embed in <script>: '<', '>', '&' (and U+2028/9) escaped as \\uXXXX."""
    import orjson
    s = orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS).decode()
    return (s.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


_CSS = """
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#111827;background:#f9fafb}
main{max-width:1200px;margin:0 auto;padding:16px}
h1{font-size:22px;margin:0 0 12px}h2{font-size:17px;margin:28px 0 8px}h3{font-size:14px;margin:18px 0 6px}
.table-wrap{overflow-x:auto;background:#fff}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{border-bottom:1px solid #e5e7eb;padding:5px 8px;text-align:left;vertical-align:top}
th{background:#f3f4f6;font-weight:600;white-space:nowrap}th.n{text-align:right}
td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.bad td{background:#fef2f2;color:#991b1b}
td details summary{cursor:pointer}td details .full{white-space:pre-wrap;overflow-wrap:anywhere;font-family:ui-monospace,monospace;font-size:12px;margin-top:4px}
dl.summary{display:grid;grid-template-columns:minmax(0,max-content) minmax(0,1fr);gap:4px 16px;background:#fff;padding:12px;border:1px solid #e5e7eb}
dl.summary dt{color:#6b7280}dl.summary dd{margin:0;font-weight:600;overflow-wrap:break-word;min-width:0}
@media (max-width:640px){dl.summary{grid-template-columns:minmax(0,1fr)}dl.summary dd{margin-bottom:6px}}
.note{color:#6b7280;font-size:12px;margin:4px 0}
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,360px),1fr));gap:12px}
.chart{background:#fff;border:1px solid #e5e7eb;padding:8px;min-height:60px;min-width:0}
.chart h4{font-size:13px;margin:0 0 4px;font-weight:600;overflow-wrap:anywhere}
.chart-svg{display:block;max-width:100%;height:auto}.chart-svg .tick{font-size:10px;fill:#6b7280}
ul.legend{list-style:none;margin:6px 0 0;padding:0;display:flex;flex-wrap:wrap;gap:2px 14px;font-size:12px}
ul.legend li{display:flex;align-items:baseline;gap:5px;min-width:0;max-width:100%}
ul.legend .swatch{flex:none;width:10px;height:10px;border-radius:2px}ul.legend .name{overflow-wrap:anywhere}
code{font-size:12px}
"""

#: table cells longer than this show their start and open to the full text (SQL, evidence)
CELL_CHARS = 160


def _load_js() -> str:
    here = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "report", "charts.js")
    with open(here, encoding="utf-8") as f:
        return f.read()


def _html_cell(c: str, numeric: bool) -> str:
    esc = _html.escape
    if numeric:
        return f"<td class=\"n\">{esc(c)}</td>"
    if len(c) > CELL_CHARS:
        return (f"<td><details><summary>{esc(_short(c, 70))}</summary>"
                f"<div class=\"full\">{esc(c)}</div></details></td>")
    return f"<td>{esc(c)}</td>"


def _html_table(s: dict) -> list[str]:
    esc = _html.escape
    parts = [f"<section><h2 id=\"{esc(s['id'])}\">{esc(s['title'])}</h2>"]
    if s["rows"]:
        def numeric(j, c):
            return j > 0 and (c[:1].isdigit() or c in ("n/a", "—"))
        right = [all(numeric(j, str(row[j])) for row in s["rows"]) for j in range(len(s["headers"]))]
        parts.append("<div class=\"table-wrap\"><table><thead><tr>"
                     + "".join(f"<th class=\"n\">{esc(h)}</th>" if right[j] else f"<th>{esc(h)}</th>"
                               for j, h in enumerate(s["headers"])) + "</tr></thead><tbody>")
        for i, row in enumerate(s["rows"]):
            bad = s["flags"] and i < len(s["flags"]) and s["flags"][i]
            cells = [_html_cell(str(c), right[j] or numeric(j, str(c))) for j, c in enumerate(row)]
            parts.append(('<tr class="bad">' if bad else "<tr>") + "".join(cells) + "</tr>")
        parts.append("</tbody></table></div>")
    if s["note"]:
        parts.append(f"<p class=\"note\">{esc(s['note'])}</p>")
    parts.append("</section>")
    return parts


def _html_charts(r: dict) -> list[str]:
    """After the tables: p95 over time, resources over time, the latency histograms."""
    esc = _html.escape
    parts = ["<h2 id=\"charts\">Charts</h2>"]
    if r.get("series", {}).get("labels"):
        parts.append(f"<h3>p95 over time per command (per {esc(r['series']['bucket'])})</h3>"
                     "<div class=\"chart\" data-chart=\"p95\" data-key=\"\"></div>")
    res = r.get("resources")
    if res and res["series"]["labels"]:
        parts.append(f"<h3>Resources over time (per {esc(res['series']['bucket'])})</h3><div class=\"charts\">")
        for k in res["series"]["values"]:
            parts.append(f"<div class=\"chart\" data-chart=\"resource\" data-key=\"{esc(k, quote=True)}\">"
                         f"<h4>{esc(k)}</h4></div>")
        parts.append("</div>")
    if r.get("histograms"):
        parts.append("<h3>Latency distribution per command</h3><div class=\"charts\">")
        for name in r["histograms"]:
            parts.append(f"<div class=\"chart\" data-chart=\"hist\" data-key=\"{esc(name, quote=True)}\">"
                         f"<h4>{esc(name)}</h4></div>")
        parts.append("</div>")
    return parts


def render_html(r: dict, title: str = "autoperf report") -> str:
    """Summary, then every table (long cells open on a click), then the charts; one file, no external asset."""
    esc = _html.escape
    parts = ["<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
             "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">",
             f"<title>{esc(title)}</title><style>{_CSS}</style></head><body><main>",
             f"<h1>{esc(title)}</h1><dl class=\"summary\">"]
    for k, v in summary_lines(r):
        parts.append(f"<dt>{esc(k)}</dt><dd>{esc(str(v))}</dd>")
    parts.append("</dl>")
    for s in sections(r):
        parts.extend(_html_table(s))
    parts.extend(_html_charts(r))
    res = r.get("resources")
    data = {"histograms": r.get("histograms", {}), "series": r.get("series", {}),
            "resources": res or {"series": {"labels": [], "values": {}}}}
    parts.append(f"<script type=\"application/json\" id=\"autoperf-data\">{json_for_script(data)}</script>")
    js = _load_js().replace("</", "<\\/")
    parts.append(f"<script>{js}</script>")
    parts.append("</main></body></html>\n")
    return "".join(parts)


def render(r: dict, fmt: str = "terminal", **kw) -> str:
    if fmt == "terminal":
        return render_terminal(r, **kw)
    if fmt in ("markdown", "md"):
        return render_markdown(r)
    if fmt == "json":
        return render_json(r)
    if fmt == "html":
        return render_html(r, **kw)
    raise ValueError(f"unknown format {fmt!r}")


# ---------------------------------------------------------------- check / regress / compare / suggest
def _pct_change(v):
    return "n/a" if v is None else f"{v:+.1f}%"


def render_check(res: dict, fmt: str = "terminal", colour: bool = False) -> str:
    if fmt == "json":
        return render_json(res)
    rows, flags = [], []
    for c in res["checks"]:
        status = "n/a" if c["ok"] is None else ("PASS" if c["ok"] else "FAIL")
        actual = c["actual"]
        rows.append([status, c["name"] + (f" [{c['scope']}]" if c.get("scope") else ""), str(c["target"]),
                     "n/a" if actual is None else (f"{actual:.2f}" if isinstance(actual, float) else str(actual)),
                     c["detail"], c.get("source") or ""])
        flags.append(c["ok"] is False)
    evaluated = sum(1 for c in res["checks"] if c["ok"] is not None)
    head = (f"SLO check: {evaluated} objectives evaluated, "
            + ("all met" if res["ok"] else f"{len(res['violations'])} violated"))
    headers = ["status", "check", "target", "actual", "detail", "limit from"]
    if fmt == "markdown":
        out = [f"# {head}", "", "| " + " | ".join(headers) + " |", "|---|---|---|---|---|---|"]
        out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
        return "\n".join(out) + "\n"
    out = [head, ""] + _table(headers, rows, colour, flags, 100)
    if res["violations"]:
        out += ["", "Violations:"] + [f"  - {v['name']}{' [' + v['scope'] + ']' if v.get('scope') else ''}: "
                                      f"{v['detail']} (target {v['target']})" for v in res["violations"]]
    return "\n".join(out) + "\n"


def render_compare(res: dict, fmt: str = "terminal", colour: bool = False, title: str = "Regression check") -> str:
    if fmt == "json":
        return render_json(res)
    out = []
    md = fmt == "markdown"

    def heading(t):
        out.extend(["", f"## {t}", ""] if md else ["", t])

    def table(headers, rows, flags=None):
        if not rows:
            out.append("_none_" if md else "(none)")
            return
        if md:
            out.append("| " + " | ".join(headers) + " |")
            out.append("|" + "|".join("---" for _ in headers) + "|")
            out.extend("| " + " | ".join(_md_cell(c) for c in r) + " |" for r in rows)
        else:
            out.extend(_table(headers, rows, colour, flags, 70))

    out.append(f"# {title}" if md else title)
    b, c = res["baseline"], res["current"]
    out.append(f"baseline: {b['commands']} commands ({b['first'] or 'n/a'} → {b['last'] or 'n/a'}); "
               f"current: {c['commands']} commands ({c['first'] or 'n/a'} → {c['last'] or 'n/a'})")
    out.append(f"threshold {res['threshold_pct']:g}% slower, ≥{res['min_samples']} samples per side, "
               f"alpha {res['alpha']:g} ({res['method']})")
    heading(f"Regressions ({len(res['regressions'])})")
    rows = [[r["scope"], r["name"] + (f" ({r['kind']})" if r.get("kind") else ""), _ms(r["base_p50_ms"]),
             _ms(r["cur_p50_ms"]), _pct_change(r["p50_change_pct"]), _ms(r["base_p95_ms"]), _ms(r["cur_p95_ms"]),
             _pct_change(r["p95_change_pct"]),
             "/".join(k for k in ("p50", "p95") if r.get(f"regressed_{k}")), f"{r['base_n']}/{r['cur_n']}"]
            for r in res["regressions"]]
    table(["scope", "name", "base p50", "cur p50", "Δp50", "base p95", "cur p95", "Δp95", "flagged", "n base/cur"],
          rows, [True] * len(rows))
    heading("Flows")
    rows = [[r["name"], r.get("verdict", ""), _ms(r.get("base_p50_ms")), _ms(r.get("cur_p50_ms")),
             _pct_change(r.get("p50_change_pct")), _ms(r.get("base_p95_ms")), _ms(r.get("cur_p95_ms")),
             _pct_change(r.get("p95_change_pct")), f"{r['base_n']}/{r['cur_n']}"] for r in res["flows"]]
    table(["flow", "verdict", "base p50", "cur p50", "Δp50", "base p95", "cur p95", "Δp95", "n base/cur"], rows,
          [r.get("verdict") == "regression" for r in res["flows"]])
    if res["improvements"]:
        heading(f"Improvements ({len(res['improvements'])})")
        table(["scope", "name", "Δp50", "Δp95"], [[r["scope"], r["name"], _pct_change(r["p50_change_pct"]),
                                                   _pct_change(r["p95_change_pct"])] for r in res["improvements"]])
    gone = res.get("gone_queries") or []
    if gone:
        heading(f"Queries only in the baseline ({len(gone)})")
        table(["fingerprint", "count", "total ms", "statement"],
              [[q["fingerprint"], _num(q["count"]), _ms(q["total_ms"]), _short(q["statement"])] for q in gone[:20]])
    heading(f"New slow queries ({len(res['new_slow_queries'])} of {res['new_fingerprints']} new fingerprints)")
    table(["fingerprint", "count", "p95 ms", "max ms", "statement"],
          [[q["fingerprint"], _num(q["count"]), _ms(q["p95_ms"]), _ms(q["max_ms"]), _short(q["statement"])]
           for q in res["new_slow_queries"]])
    if res.get("trend"):
        heading("Daily trend (p95 ms / count)")
        days = sorted({d["day"] for v in res["trend"].values() for d in v})
        rows = []
        for name, vals in sorted(res["trend"].items()):
            by = {d["day"]: d for d in vals}
            rows.append([name] + [(f"{_ms(by[d]['p95_ms'])} / {by[d]['count']}" if d in by else "—") for d in days])
        table(["flow"] + [d[5:] for d in days], rows)
    return "\n".join(out) + "\n"


def render_suggestions(items: list, fmt: str = "terminal", colour: bool = False, scope: str | None = None) -> str:
    """``scope``: which flows the rules saw ("Over the 546 flows recorded whole (of 20,000).")."""
    if fmt == "json":
        return render_json(items)
    if not items:
        return "Nothing to suggest." + (f" {scope}" if scope else "") + "\n"
    out = ["# Suggestions", ""] if fmt == "markdown" else ["Suggestions", ""]
    if scope:
        out += [scope, ""]
    for i, s in enumerate(items, 1):
        head = f"{i}. [{s['severity']}] {s['title']}"
        if fmt == "markdown":
            out += [f"{i}. **[{s['severity']}] {_md_cell(s['title'])}**",
                    f"   - flow: {_md_cell(s['flow'] or '—')}", f"   - evidence: {_md_cell(s['evidence'])}",
                    f"   - expected saving: {_md_cell(s['saving'])}"]
        else:
            if colour and s["severity"] == "high":
                head = f"\x1b[31m{head}\x1b[0m"
            out += [head, f"   flow:     {s['flow'] or '—'}", f"   evidence: {s['evidence']}",
                    f"   saving:   {s['saving']}", ""]
    return "\n".join(out) + "\n"
