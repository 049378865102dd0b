"""CLI tests: register() on a parser built here, and `python -m autoperf.analysis.cli` in a subprocess."""
import argparse
import datetime as dt
import json
import os
import random
import re
import subprocess
import sys

import orjson
import pytest

from autoperf.analysis import cli, synth

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DAY = dt.datetime(2025, 1, 20)


def write_log(path, recs, tail=b""):
    with open(path, "wb") as f:
        for r in recs:
            f.write(orjson.dumps(r) + b"\n")
        f.write(tail)


def make_day(day, n, scale=1.0, seed=1, extra=()):
    rng = random.Random(seed)
    recs = []
    for i in range(n):
        t = day + dt.timedelta(minutes=i * 5)
        ch = [("db.fetch", "db", rng.uniform(5, 15), synth.db_attrs("SELECT * FROM players WHERE id = $1", "fp1"))]
        recs += synth.flow("queue_command", t, rng.uniform(80, 120) * scale, ch, sla_ms=300,
                           metadata={"command": "queue", "first_response_ms": rng.uniform(50, 90)})
    recs += list(extra)
    recs.append(synth.resource(day + dt.timedelta(minutes=1), pool_pct=30.0))
    return recs


@pytest.fixture
def logs(tmp_path):
    d = tmp_path / "logs"
    d.mkdir()
    for k in range(7):
        day = DAY - dt.timedelta(days=7 - k)
        write_log(d / f"performance_{day:%Y-%m-%d}.log", make_day(day, 60, seed=k))
    write_log(d / f"performance_{DAY:%Y-%m-%d}.log", make_day(DAY, 60, seed=99), tail=b'{"type":"span","trunc')
    return d


def run(argv, capsys):
    parser = argparse.ArgumentParser(prog="autoperf")
    sub = parser.add_subparsers(dest="command", required=True)
    cli.register(sub)
    args = parser.parse_args(argv)
    code = args.handler(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_register_adds_all_commands():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    cli.register(sub)
    for name in ("report", "check", "regress", "compare", "suggest"):
        args = parser.parse_args([name])
        assert callable(args.handler)


def test_report_terminal_json_markdown(logs, capsys):
    code, out, err = run(["report", "--log-dir", str(logs)], capsys)
    assert code == 0
    assert "Total flows" in out and "480" in out and "queue_command" in out
    assert "Skipped lines (corrupt/truncated)  1" in out or "Skipped lines (corrupt/truncated)" in out
    assert "\x1b[" not in out                          # not a TTY: no colour
    row = next(line for line in out.splitlines() if line.startswith("queue_command "))
    assert re.search(r" 300 +ok ", row) and "300.0" not in row   # an SLA as configured, not "300.0"
    code, out, _ = run(["report", "--log-dir", str(logs), "--format", "json", "--day", "2025-01-20"], capsys)
    r = json.loads(out)
    assert r["totals"]["commands"] == 60 and r["source"]["skipped_lines"] == 1
    assert r["source"]["files"] == 1                   # other days' files not even opened
    assert r["commands"][0]["sla_ms"] == 300 and r["deadline"]["pct"] == 100.0
    code, out, _ = run(["report", str(logs / "performance_2025-01-19.log"), "--format", "markdown"], capsys)
    assert out.startswith("# autoperf report") and "| queue_command | 60 |" in out


def test_report_html_to_file(logs, tmp_path, capsys):
    out_file = tmp_path / "r" / "report.html"
    code, out, err = run(["report", "--log-dir", str(logs), "--format", "html", "-o", str(out_file)], capsys)
    assert code == 0 and out == "" and "wrote" in err
    html = out_file.read_text()
    assert html.startswith("<!DOCTYPE html>") and 'id="autoperf-data"' in html
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "").replace(
        '"http://www.w3.org/2000/svg"', "")


def test_check_exit_codes_and_json(logs, tmp_path, capsys):
    code, out, _ = run(["check", "--log-dir", str(logs), "--json"], capsys)
    res = json.loads(out)
    assert code == 0 and res["ok"] is True, res["violations"]
    cfg = tmp_path / "autoperf.yaml"
    cfg.write_text("slo:\n  flows:\n    queue_command: {p95_ms: 50}\n  db_avg_ms: 5\n")
    code, out, _ = run(["check", "--log-dir", str(logs), "--json", "--config", str(cfg)], capsys)
    res = json.loads(out)
    assert code == 1 and not res["ok"]
    assert {(v["name"], v["scope"]) for v in res["violations"]} == {("flow_p95", "queue_command"), ("db_avg", None)}
    code, out, _ = run(["check", "--log-dir", str(logs), "--config", str(cfg)], capsys)
    assert code == 1 and "FAIL" in out and "Violations:" in out
    cfg.write_text("slo:\n  nonsense_key: 1\n")
    code, out, err = run(["check", "--log-dir", str(logs), "--config", str(cfg)], capsys)
    assert code == 2 and "nonsense_key" in err


def test_missing_inputs_exit_2(tmp_path, capsys):
    code, out, err = run(["report", "--log-dir", str(tmp_path / "nope")], capsys)
    assert code == 2 and "no log files" in err


def test_regress_planted_regression_exit_1(logs, capsys):
    write_log(logs / "performance_2025-01-20.log", make_day(DAY, 60, scale=1.6, seed=5))
    code, out, _ = run(["regress", "--log-dir", str(logs), "--now", "2025-01-20T23:00:00Z", "--format", "json"], capsys)
    res = json.loads(out)
    assert code == 1
    assert [(r["scope"], r["name"]) for r in res["regressions"]] == [("flow", "queue_command")]
    assert len(res["trend"]["queue_command"]) == 8
    # the same data without a slowdown: nothing flagged
    write_log(logs / "performance_2025-01-20.log", make_day(DAY, 60, seed=6))
    code, out, _ = run(["regress", "--log-dir", str(logs), "--now", "2025-01-20T23:00:00Z"], capsys)
    assert code == 0 and "Regressions (0)" in out and "Daily trend" in out


def test_compare_files_and_tags(tmp_path, capsys):
    a, b = tmp_path / "a.log", tmp_path / "b.log"
    write_log(a, make_day(DAY, 80, seed=1))
    write_log(b, make_day(DAY, 80, scale=1.5, seed=2))
    code, out, _ = run(["compare", str(a), str(b), "--format", "json"], capsys)
    res = json.loads(out)
    assert code == 1 and [r["name"] for r in res["regressions"]] == ["queue_command"]
    recs = []
    for r in make_day(DAY, 80, seed=3):
        recs.append(dict(r, tags={"variant": "A"}))
    for r in make_day(DAY, 80, seed=4):
        recs.append(dict(r, tags={"variant": "B"}))
    both = tmp_path / "ab.log"
    write_log(both, recs)
    code, out, _ = run(["compare", str(both), "--tag", "variant=A", "--tag", "variant=B", "--format", "json"], capsys)
    res = json.loads(out)
    assert code == 0 and res["regressions"] == [] and res["baseline"]["commands"] == 80


def test_suggest_cli(tmp_path, capsys):
    recs = []
    for i in range(5):
        ch = [("db.fetch", "db", 3.0, synth.db_attrs("SELECT * FROM players WHERE id = $1", "fpn1"))] * 10
        recs += synth.flow("leaderboard_command", DAY + dt.timedelta(seconds=i), 40.0, ch)
    p = tmp_path / "x.log"
    write_log(p, recs)
    code, out, _ = run(["suggest", str(p)], capsys)
    assert code == 0 and "N+1 query in leaderboard_command" in out
    code, out, _ = run(["suggest", str(p), "--format", "json"], capsys)
    assert json.loads(out)[0]["kind"] == "n_plus_one"


def test_module_entry_point_subprocess(logs):
    env = dict(os.environ, PYTHONPATH=ROOT)
    p = subprocess.run([sys.executable, "-m", "autoperf.analysis.cli", "check", "--json", "--log-dir", str(logs)],
                       capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["ok"] is True
    p = subprocess.run([sys.executable, "-c", "import sys, autoperf.analysis.cli; "
                        "print(sorted(m for m in sys.modules if m.startswith(('orjson', 'asyncpg', 'yaml'))))"],
                       capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    assert p.stdout.strip() == "[]"                     # light module import
