"""The HTML report: self-contained, escaped, and drawn in a real headless Chromium."""
import datetime as dt
import os
import re
import shutil
import subprocess
import tempfile

import pytest

from autoperf.analysis import synth
from autoperf.analysis.aggregate import aggregate
from autoperf.analysis.render import json_for_script, render_html

CHROMIUM = "/usr/bin/chromium"
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


def _chromium(path, tmp):
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
           f"--user-data-dir={tmp}", "--enable-logging=stderr", "--v=0", "--dump-dom", f"file://{path}"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


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
