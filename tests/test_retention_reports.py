"""Reports over real runs answer the same under retention (`retain: {all: false}`, "default" below: the rules'
defaults) as under `retain: {all: true}` (issue 14 tests).

A program whose calls have known durations (busy-waits of 0.5, 1 and 2.5 ms in shares of 55/35/10 %, every
500th call failing; the 10 % above the 2-ms SLA put the check's verdicts far from their limits, so load
cannot flip them) runs twice under ``python -m autoperf run``: with every span written and with the
retention rules. The report counts from the `metrics` records; the every-span run is the ground truth.
"""
from __future__ import annotations

import json

import orjson
import pytest

from autoperf.analysis.stats import percentile
from tests.runs import Run

N = 5_000
ERRORS = N // 500
PROGRAM = f"""
    import random, time


    def work(ms, fail):
        end = time.perf_counter() + ms / 1000
        while time.perf_counter() < end:
            pass
        if fail:
            raise ValueError("planned")


    rng = random.Random(1)
    for i in range({N}):
        r = rng.random()
        try:
            work(0.5 if r < 0.55 else 1.0 if r < 0.9 else 2.5, i % 500 == 499)
        except ValueError:
            pass
"""
CONFIG = """
    targets:
      - {target: "__main__:work", kind: flow, name: work, sla_ms: 2}
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = {}
    for mode, extra in (("all", "    retain: {all: true}\n"), ("default", "    retain: {all: false}\n")):
        run = Run(tmp_path_factory.mktemp(mode), PROGRAM, CONFIG + extra)
        proc = run.start(options=("--summary",), timeout=300)
        run.summary = proc.stderr
        code, text = run.cli("report", "--format", "json", engine=None)
        out[mode] = (run, json.loads(text))
    return out


def _row(report, name="work"):
    return next(c for c in report["commands"] if c["name"] == name)


def test_counts_identical_and_percentiles_within_one_percent_of_the_records(runs):
    """Both runs count every call; the every-span run's report is within 1 % of its records' exact percentiles."""
    run, rep = runs["all"]
    durations = sorted(r["duration_ms"] for r in run.records("flow_complete"))
    assert len(durations) == N
    row = _row(rep)
    assert row["count"] == N and row["errors"] == ERRORS
    assert row["over_sla"] == sum(d > 2 for d in durations)
    for q in (50, 95, 99):
        assert abs(row[f"p{q}_ms"] / percentile(durations, q) - 1) < 0.01, q
    assert row["max_ms"] == pytest.approx(durations[-1], abs=0.002)
    d_run, d_rep = runs["default"]
    d_row = _row(d_rep)
    assert (d_row["count"], d_row["errors"]) == (N, ERRORS)
    # the two runs' percentiles are not compared: on this shared 2-core machine two runs of the same
    # busy-waits differed by 8 % at p95 (preemption), far more than the histogram's 0.55 %


def test_default_keeps_the_flows_its_rules_name_and_says_so(runs):
    """Under the default only errors, SLA breaches and the 1 % sample are written whole; the report says how many."""
    run, rep = runs["default"]
    fcs = run.records("flow_complete")
    assert len(fcs) == N
    kept = [r for r in fcs if r.get("retained")]
    spans = [r for r in run.records("span") if r["name"] == "work"]
    assert len(spans) == len(kept)
    for r in fcs:               # each flow kept by the first rule it matches, the others not at all
        want = "error" if r["status"] != "success" else "sla" if r["duration_ms"] > 2 else r.get("retained")
        assert r.get("retained") == want and want in (None, "error", "sla", "sample"), r
    plain = [r for r in fcs if r["status"] == "success" and r["duration_ms"] <= 2]
    assert 0.002 < sum(r.get("retained") == "sample" for r in plain) / len(plain) < 0.03     # the 1 % sample
    rt = rep["retention"]
    assert (rt["flows"], rt["retained"]) == (N, len(kept))
    assert rt["by_rule"].get("error") == ERRORS
    unkept = sum(len(p.read_bytes().splitlines()) for p in run.log_dir.glob("flows_*.log"))
    assert unkept == N - len(kept) and rep["source"]["unretained_lines"] == 0     # flows_ files are never read
    ids = {r["flow_id"] for r in fcs}
    assert rep["slowest_flows"] and all(f["flow_id"] in ids for f in rep["slowest_flows"])
    assert rep["suggestions_flows"] == len(kept)


def test_check_and_summary_agree_under_both(runs):
    """`autoperf check` gives the same verdicts, and `run --summary` the same totals, under both."""
    verdicts, totals, lines = {}, {}, {}
    for mode, (run, rep) in runs.items():
        code, checks = run.check()
        verdicts[mode] = {k: c["ok"] for k, c in checks.items()}
        totals[mode] = (rep["totals"]["commands"], rep["totals"]["errors"])
        lines[mode] = [" ".join(ln.split()) for ln in run.summary.splitlines()
                       if ln.startswith(("Total flows", "Errors"))]
    assert verdicts["all"] == verdicts["default"] and len(verdicts["all"]) >= 3
    assert {True, False} <= set(verdicts["all"].values()), verdicts       # some pass, some fail
    assert totals["all"] == totals["default"] == (N, ERRORS)
    assert lines["all"] == lines["default"] == [f"Total flows {N:,}", f"Errors {ERRORS} ({100 * ERRORS / N:.2f}%)"]


JOBS = 30
POOL_PROGRAM = f"""
    import concurrent.futures, time


    def sleepy(i):
        time.sleep(0.02)
        return i


    if __name__ == "__main__":
        with concurrent.futures.ProcessPoolExecutor(max_workers=2) as pool:
            assert sum(pool.map(sleepy, range({JOBS}))) == {sum(range(JOBS))}
"""


def test_the_job_table_covers_every_job_under_the_default(tmp_path):
    """Under the default no flow holds the jobs, yet queue wait, run and transfer cover all 30 (their own
    measures in the metrics records); each job sleeps 20 ms, so its run time is at least that."""
    run = Run(tmp_path, POOL_PROGRAM, "sampler: {enabled: false}\nretain: {sample_rate: 0}\n")
    run.start()
    code, text = run.cli("report", "--format", "json", engine=None)
    job = next(j for j in json.loads(text)["jobs"] if j["name"].endswith("sleepy"))
    assert job["count"] == JOBS and not run.records("span")     # nothing written whole
    for part in ("queue_wait", "run", "transfer"):
        assert job[part]["count"] == JOBS, part
    assert 20 <= job["run"]["p50_ms"] < 1000
