"""The HTML report: the summary, every table (long cells open on a click), the charts; one self-contained file."""
from __future__ import annotations

import html as _html
import os

from .render_fmt import _short
from .render_sections import sections, summary_lines

__all__ = ["render_html", "json_for_script"]


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
