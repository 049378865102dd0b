"""Render a report dict (``Aggregator.result()`` + ``source``) as terminal text, Markdown, JSON or HTML.

The tables come from render_sections, the HTML page from render_html; the verdicts' renderers
(check, compare, suggestions) are in render_verdicts.
"""
from __future__ import annotations

import os

from .render_fmt import _md_cell, _table, render_json
from .render_html import render_html
from .render_sections import sections, summary_lines
from .render_verdicts import render_suggestions

__all__ = ["render", "render_terminal", "render_markdown"]


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
