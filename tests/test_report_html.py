"""The HTML report: self-contained, escaped, and drawn in a real headless Chromium."""
import datetime as dt
import html as _html
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile

import orjson
import pytest

from autoperf.analysis import synth
from autoperf.analysis.aggregate import aggregate
from autoperf.analysis.render_html import json_for_script, render_html

CHROMIUM = "/usr/bin/chromium"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
XSS_SCRIPT = "<script>alert(1)</script>"
XSS_IMG = "<img src=x onerror=\"document.body.setAttribute('data-pwned','1')\">"
XSS_BREAKOUT = "</script><script>document.body.setAttribute('data-pwned2','1')</script>"
T0 = dt.datetime(2025, 1, 20, 10, 0)


def report():
    recs = []
    for i in range(600):
        t = T0 + dt.timedelta(seconds=i * 6)
        name = ["queue_command", "profile_command"][i % 2]
        ch = [("db.fetch", "db", 5.0 + i % 7, synth.db_attrs("SELECT * FROM players WHERE id = $1", "fp1"))]
        recs += synth.flow(name, t, 50.0 + (i % 50) * 10, ch, sla_ms=300)
        if i % 10 == 0:
            recs.append(synth.resource(t, rss=100 + i / 10, pool_pct=(i % 90), pending=i % 6))
    for j, evil in enumerate((XSS_SCRIPT, XSS_IMG, XSS_BREAKOUT)):
        recs += synth.flow(evil, T0 + dt.timedelta(minutes=j), 42.0)
        recs.append({"timestamp": "2025-01-20T10:00:00.000Z", "type": "loop_blocked", "duration_ms": 300.0,
                     "location": evil, "flow_name": evil})
    r = aggregate(recs)
    r["source"] = {"skipped_lines": 2}
    return r


def test_html_is_self_contained_and_escaped():
    html = render_html(report())
    assert html.startswith("<!DOCTYPE html>")
    # no external assets
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "<link" not in html and "@import" not in html
    # user strings are escaped text in the markup
    assert XSS_SCRIPT not in html.split('<script type="application/json"')[0]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<img src=x" not in html
    # the embedded JSON cannot close its <script>
    data = html.split('id="autoperf-data">', 1)[1].split("</script>", 1)[0]
    assert "<" not in data and ">" not in data and "&" not in data
    assert "\\u003cscript\\u003ealert(1)\\u003c/script\\u003e" in data
    assert json_for_script({"a": "</script>&"}) == '{"a":"\\u003c/script\\u003e\\u0026"}'


def _chromium_cmd(path, tmp, *options):
    return [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
            f"--user-data-dir={tmp}", "--enable-logging=stderr", "--v=0", *options, f"file://{path}"]


def _chromium(path, tmp, *options):
    """The page's DOM after its scripts ran (``--dump-dom``)."""
    return subprocess.run(_chromium_cmd(path, tmp, *options, "--dump-dom"), capture_output=True, text=True,
                          timeout=60)


def _console_messages(stderr):
    return [line for line in stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium at /usr/bin/chromium "
                                                          "(apt-get install -y chromium)")
def test_html_renders_in_headless_chromium(tmp_path):
    r = report()
    page = tmp_path / "report.html"
    page.write_text(render_html(r), encoding="utf-8")
    profile = tempfile.mkdtemp(prefix="chromium-")
    try:
        p = _chromium(page, profile)
        # the console detector works: a page that logs an error is caught
        bad = tmp_path / "bad.html"
        bad.write_text("<!DOCTYPE html><html><body><script>console.error('boom-detector')</script></body></html>")
        pb = _chromium(bad, profile)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert p.returncode == 0, p.stderr[-2000:]
    assert any("boom-detector" in m for m in _console_messages(pb.stderr)), "console detection is broken"
    assert _console_messages(p.stderr) == []
    dom = p.stdout
    n_hist = len(r["histograms"])
    n_res = len(r["resources"]["series"]["values"])
    expected = n_hist + 1 + n_res
    assert f'data-charts-drawn="{expected}"' in dom
    assert dom.count('data-drawn="1"') == expected and 'data-drawn="error"' not in dom
    # the charts really contain SVG shapes
    hist = re.search(r'data-chart="hist" data-key="queue_command"[^>]*>(.*?)</div>', dom, re.S).group(1)
    assert hist.count("<rect") >= 13 and "<svg" in hist
    p95 = re.search(r'data-chart="p95"[^>]*>(.*?)</div>', dom, re.S).group(1)
    assert p95.count("<path") >= 2 and p95.count("<circle") >= 10
    res = re.search(r'data-chart="resource" data-key="db_pool_utilisation_pct"[^>]*>(.*?)</div>', dom, re.S).group(1)
    assert "<path" in res
    # hostile names are inert text
    body = re.search(r"<body[^>]*>", dom).group(0)
    assert "data-pwned" not in body
    assert "<script>alert(1)</script>" not in dom
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom
    assert dom.count("<script") == 2            # only our own two script elements exist


# ---------------------------------------------------------------- layout at two widths (screenshots)
LONG_NAME = "shop.handlers.handle_checkout_with_coupon_and_gift_card"
LONG_SQL = ("SELECT o.id, o.total, c.code, g.balance FROM orders o JOIN coupons c ON c.id = o.coupon_id "
            "JOIN gift_cards g ON g.id = o.gift_card_id WHERE o.customer_id = $1 AND o.created_at > $2 "
            "AND o.status IN ('paid', 'shipped') ORDER BY o.created_at DESC LIMIT 50")
MEASURE = """<script>
document.addEventListener("DOMContentLoaded", function () {
  function top(e) { return e.getBoundingClientRect().top + window.scrollY; }
  function texts(root, sel) { return [].map.call(root.querySelectorAll(sel), function (t) { return t.textContent; }); }
  var charts = [].map.call(document.querySelectorAll("[data-chart]"), function (c) {
    return {kind: c.getAttribute("data-chart"), key: c.getAttribute("data-key"),
            y: texts(c, "text.tick[text-anchor='end']"), x: texts(c, "text.tick[text-anchor='middle']"),
            points: c.querySelectorAll("circle").length, right: c.getBoundingClientRect().right};
  });
  var legends = [].map.call(document.querySelectorAll(".legend, ul.legend .name"), function (n) {
    return {text: n.textContent, clipped: n.scrollWidth > n.clientWidth + 1, right: n.getBoundingClientRect().right};
  });
  var sql = [].map.call(document.querySelectorAll("td details .full"), function (n) { return n.textContent; });
  (window.parent || window).document.body.setAttribute("data-layout", JSON.stringify({
    commandsTop: top(document.querySelector("h2[id^='commands']")),
    firstChartTop: top(document.querySelector("[data-chart]")),
    pageWidth: document.documentElement.scrollWidth, viewport: document.documentElement.clientWidth,
    charts: charts, legends: legends, sql: sql}));
});
</script>"""


def _layout_log(path):
    """A 2-minute run: 22 commands (one with a long name), resource samples every 5 s, a long query."""
    recs = []
    t0 = dt.datetime(2025, 1, 20, 10, 0, 3)
    names = [LONG_NAME] + [f"command_{i:02d}" for i in range(21)]
    for i in range(240):
        t = t0 + dt.timedelta(seconds=i / 2)
        ch = [("db.fetch", "db", 0.9 + (i % 7) / 5, synth.db_attrs(LONG_SQL, "fplong"))]
        recs += synth.flow(names[i % len(names)], t, 1.1 + (i % 5) / 4, ch)
    for k in range(24):
        recs.append(synth.resource(t0 + dt.timedelta(seconds=5 * k), rss=60 + k, pool_pct=k % 9, pending=0))
    recs.sort(key=lambda r: r["timestamp"])
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in recs))


def _is_round(values):
    """Tick labels that are 0, s, 2s … with s = 1, 2 or 5 × 10^k."""
    nums = [float(v.replace(",", "").replace("k", "e3")) for v in values]
    if len(nums) < 2 or nums[0] != 0:
        return False
    step = nums[1] - nums[0]
    mant = step / 10 ** math.floor(math.log10(step))
    return (round(mant, 6) in (1.0, 2.0, 5.0)
            and all(abs(b - a - step) < 1e-9 * max(1, step) for a, b in zip(nums, nums[1:])))


def _round_times(labels):
    """HH:MM[:SS] ticks at whole multiples of one step of 1/2/5/10/15/30 s or min (or hours)."""
    if len(labels) < 2 or not all(re.fullmatch(r"\d\d:\d\d(:\d\d)?", t) for t in labels):
        return False
    secs = [sum(int(x) * m for x, m in zip(t.split(":"), (3600, 60, 1))) for t in labels]
    step = secs[1] - secs[0]
    return (step in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600)
            and all(b - a == step for a, b in zip(secs, secs[1:])) and all(s % step == 0 for s in secs))


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium at /usr/bin/chromium "
                                                          "(apt-get install -y chromium)")
@pytest.mark.parametrize("width", [1280, 390])
def test_layout_in_chromium_at_two_widths(tmp_path, width):
    """`autoperf report --format html` in Chromium, desktop and phone width (screenshots kept in tmp_path):
    the commands tables come before the first chart; the legend shows the full 55-character name, unclipped;
    every axis has round ticks (numbers 0, s, 2s …; times at whole minutes/seconds); the 2-minute run's
    resources are drawn at a resolution that shows each 5-s sample; the long SQL is there in full on demand;
    nothing is wider than the screen."""
    logs = tmp_path / "logs"
    logs.mkdir()
    _layout_log(logs / "performance_2025-01-20.log")
    page = tmp_path / "report.html"
    p = subprocess.run([sys.executable, "-m", "autoperf", "report", "--format", "html", "-o", str(page),
                        "--log-dir", str(logs)], capture_output=True, text=True, cwd=tmp_path, timeout=120,
                       env=dict(os.environ, PYTHONPATH=ROOT))
    assert p.returncode == 0, p.stderr
    html = page.read_text(encoding="utf-8")
    measured = tmp_path / "measured.html"
    measured.write_text(html.replace("</main></body>", MEASURE + "</main></body>"), encoding="utf-8")
    # headless Chromium's window is at least 500 px wide: the page is shown in a frame of the width wanted
    frames = {}
    for name, target in (("measure", measured), ("shot", page)):
        frames[name] = tmp_path / f"frame_{name}.html"
        frames[name].write_text(f'<!DOCTYPE html><html><body style="margin:0"><iframe src="{target.name}" '
                                f'style="width:{width}px;height:900px;border:0"></iframe></body></html>')
    profile = tempfile.mkdtemp(prefix="chromium-")
    try:
        size = f"--window-size={max(width, 500)},900"
        dom = _chromium(frames["measure"], profile, size, "--allow-file-access-from-files")
        shot = subprocess.run(_chromium_cmd(frames["shot"], profile, size, f"--screenshot={tmp_path / 'shot.png'}"),
                              capture_output=True, text=True, timeout=60)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert dom.returncode == 0 and shot.returncode == 0, dom.stderr[-2000:] + shot.stderr[-2000:]
    assert (tmp_path / "shot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    layout = json.loads(_html.unescape(re.search(r'data-layout="([^"]*)"', dom.stdout).group(1)))
    assert layout["viewport"] <= width
    assert layout["commandsTop"] < layout["firstChartTop"]
    assert layout["pageWidth"] <= layout["viewport"], layout["pageWidth"]
    legend = [entry for entry in layout["legends"] if entry["text"] == LONG_NAME]
    assert legend and not legend[0]["clipped"] and legend[0]["right"] <= layout["viewport"]
    charts = layout["charts"]
    for chart in charts:
        assert _is_round(chart["y"]), (chart["kind"], chart["key"], chart["y"])
    for chart in (c for c in charts if c["kind"] in ("p95", "resource")):
        assert _round_times(chart["x"]), chart["x"]
    rss = next(c for c in charts if c["kind"] == "resource" and c["key"] == "rss_mb")
    assert rss["points"] == 24
    assert LONG_SQL in layout["sql"]
