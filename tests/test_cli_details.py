"""Small things a user meets first: help texts, pipes, the run summary, live numbers, the package."""
from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import textwrap

import pytest
from test_cli_run import ROOT, Program, clean_env

SUBCOMMANDS = ("validate", "schema", "report", "check", "regress", "compare", "suggest", "tail", "db")


def _autoperf(*args, cwd=None, **kwargs):
    kwargs.setdefault("capture_output", True)
    return subprocess.run([sys.executable, "-m", "autoperf", *args], cwd=cwd or ROOT, env=clean_env(),
                          text=True, timeout=60, **kwargs)


def test_help_texts_are_plain_text():
    """``--help`` of autoperf and of each command shows no reStructuredText markup (double backticks)."""
    for args in ((), *((c,) for c in SUBCOMMANDS), ("run",)):
        proc = _autoperf(*args, "--help")
        assert proc.returncode == 0, (args, proc.stderr)
        assert "``" not in proc.stdout, (args, proc.stdout)
        assert "usage:" in proc.stdout


def test_output_into_a_closed_pipe_is_not_a_traceback():
    """``autoperf schema | head`` — a reader that stops early — ends quietly, without a BrokenPipeError traceback."""
    proc = subprocess.Popen([sys.executable, "-m", "autoperf", "schema"], cwd=ROOT, env=clean_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()                 # like `head` that has read its lines and gone
    err = proc.stderr.read().decode()
    proc.wait(timeout=60)
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert proc.returncode == 1


def test_summary_shows_autoperf_warnings(tmp_path):
    """``--summary`` lists autoperf's own warnings: a mistyped target is named with the nearest names."""
    prog = Program(tmp_path, """
        import helpers
        helpers.fetch_profile()
    """, "targets:\n  - target: 'helpers:fetch_profil'\n")
    (tmp_path / "helpers.py").write_text("def fetch_profile():\n    return 1\n")
    proc = prog.run(options=("--summary",))
    assert proc.returncode == 0, proc.stderr
    summary = proc.stderr[proc.stderr.index("autoperf: log written to"):]
    assert "target_not_found" in summary
    assert "'helpers:fetch_profil'" in summary and "fetch_profile" in summary


def test_live_stats_are_rounded_to_microseconds(tmp_path):
    """``autoperf.stats.command`` answers in ms with at most 3 decimals (µs), percentages with 2, not 15-digit floats."""
    prog = Program(tmp_path, """
        import json, time
        import autoperf
        def command(i):
            time.sleep(0.001 * (1 + i % 3) / 7)
        for i in range(7):
            command(i)
        autoperf.flush()
        print(json.dumps(autoperf.stats.command("__main__.command")))
    """, "targets:\n  - target: '__main__:command'\n    kind: flow\n")
    proc = prog.run()
    assert proc.returncode == 0, proc.stderr
    stats = json.loads(proc.stdout)
    assert stats["count"] == 7
    for key in ("avg_ms", "p50_ms", "p95_ms", "max_ms"):
        assert round(stats[key], 3) == stats[key], (key, stats[key])
    assert stats["error_rate_pct"] == 0


def test_package_data_names_files_that_exist():
    """Every package-data pattern in pyproject.toml matches a file of the package."""
    tomllib = pytest.importorskip("tomllib")
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as fh:
        patterns = tomllib.load(fh)["tool"]["setuptools"]["package-data"]["autoperf"]
    for pattern in patterns:
        assert glob.glob(os.path.join(ROOT, "autoperf", pattern)), pattern


def test_help_lists_every_command():
    """``autoperf --help`` names each command a user can run."""
    text = _autoperf("--help").stdout
    for name in ("run", *SUBCOMMANDS):
        assert name in text, name
    assert textwrap.dedent(text).startswith("usage: autoperf")


def test_live_stats_say_when_a_name_matches_nothing(tmp_path):
    """``autoperf.stats.command`` with a name no flow carries and no target has says so, with the nearest
    names (and a warning record), instead of a plain ``count: 0``; a configured flow that has not run yet is
    just 0."""
    prog = Program(tmp_path, """
        import json
        import autoperf
        def queue_command():
            return 1
        def later():
            return 2
        queue_command()
        autoperf.flush()
        print(json.dumps([autoperf.stats.command(n) for n in ("queue_comand", "queue_command", "later")]))
    """, "targets:\n  - target: '__main__:queue_command'\n    kind: flow\n    name: queue_command\n"
         "  - target: '__main__:later'\n    kind: flow\n    name: later\n")
    proc = prog.run()
    assert proc.returncode == 0, proc.stderr
    typo, known, configured = json.loads(proc.stdout)
    assert typo["count"] == 0 and typo["unknown"] is True and typo["nearest"][0] == "queue_command"
    assert known["count"] == 1 and "unknown" not in known
    assert configured["count"] == 0 and "unknown" not in configured
    warning, = [r for r in prog.records() if r["type"] == "warning"]
    assert warning["code"] == "stats_unknown_name" and "'queue_comand'" in warning["message"]
    assert "nearest: queue_command" in warning["message"]
