"""The verdicts as text, Markdown or JSON: `autoperf check`, `regress` / `compare` and `suggest`."""
from __future__ import annotations

from .render_fmt import _md_cell, _ms, _num, _short, _table, render_json

__all__ = ["render_check", "render_compare", "render_suggestions"]


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
