"""`metrics` records: every finished span is aggregated; every stop path writes the last interval.

Real runs of ``python -m autoperf run`` (tests/runs.py); the exact values come from the span records
of a ``retain: {all: true}`` run, the same program's aggregates from its metrics_ file.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import orjson
import pytest

from autoperf.analysis.stats import percentile
from autoperf.metrics.exphist import ExpHistogram
from tests.runs import Run, clean_env

KNOWN = """
    import time
    def busy(us):                     # a busy-wait of a set length
        end = time.perf_counter_ns() + us * 1000
        while time.perf_counter_ns() < end:
            pass
    def step(us):
        busy(us)
    def handle(i):
        for k in range(3):
            step(200 + (i * 37 + k * 101) % 2000)     # 0.2 .. 2.2 ms, a known spread
    for i in range(600):
        handle(i)
"""
KNOWN_CONFIG = """
    targets:
      - {target: "__main__:handle", kind: flow}
      - {target: "__main__:step"}
    metrics: {interval_s: 0.2}
    retain: {all: %s}
"""


def metrics_records(run):
    out = []
    for path in sorted(run.log_dir.glob("metrics_*.log")):
        out.extend(orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip())
    return out


def merged(recs, **key):
    """The histogram of every interval of one key, merged (exact count, sum, min, max)."""
    total = ExpHistogram()
    for r in recs:
        if all(r.get(k) == v for k, v in key.items()):
            total.merge(ExpHistogram.from_dict(r["hist"], count=r["count"], sum=r["sum_ms"] / 1000,
                                               min=r["min_ms"] / 1000, max=r["max_ms"] / 1000))
    return total


@pytest.fixture(scope="module")
def known_retain_all(tmp_path_factory):
    """The KNOWN program run once under retain all (read by both ground-truth tests)."""
    run = Run(tmp_path_factory.mktemp("known_all"), KNOWN, KNOWN_CONFIG % "true")
    run.start()
    return run


class TestGroundTruth:
    def test_percentiles_from_metrics_match_the_exact_records(self, tmp_path, known_retain_all):
        """Under retain all, counts equal the span records and p50/p90/p95/p99/max are within 1 % of the
        exact values; the default run (retention on) counts exactly the same calls."""
        full = known_retain_all
        spans = [r for r in full.records("span") if r["name"] == "__main__.step"]
        assert len(spans) == 1800 and all(r["retained"] == "all" for r in spans)
        exact = sorted(r["duration_ms"] for r in spans)
        recs = metrics_records(full)
        assert len({r["interval_start"] for r in recs}) > 1, "several intervals are merged"
        hist = merged(recs, name="__main__.step", measure="duration")
        assert hist.count == 1800
        for q in (50, 90, 95, 99, 100):
            want = percentile(exact, q)
            got = hist.percentile(q) * 1000
            assert abs(got - want) <= want * 0.01 + 0.001, (q, got, want)
        flows = merged(recs, name="__main__.handle")
        assert flows.count == 600 == len(full.records("flow_complete"))
        assert sum(r["retained"] for r in recs if r["root"] and r["name"] == "__main__.handle") == 600

        default = Run(tmp_path / "default", KNOWN, KNOWN_CONFIG % "false")
        default.start()
        recs2 = metrics_records(default)
        assert merged(recs2, name="__main__.step").count == 1800
        assert merged(recs2, name="__main__.handle").count == 600
        assert len(default.records("flow_complete")) == 600

    def test_exemplars_name_flows_that_exist_in_the_log(self, known_retain_all):
        """Each metrics record names at most 5 of its slowest spans, slowest first, and their flows and
        spans exist in the log (retain all)."""
        run = known_retain_all
        flow_ids = {r["flow_id"] for r in run.records("flow_complete")}
        span_ids = {r["span_id"]: r for r in run.records("span")}
        for rec in metrics_records(run):
            ex = rec["exemplars"]
            assert 1 <= len(ex) <= 5
            assert [e["duration_ms"] for e in ex] == sorted((e["duration_ms"] for e in ex), reverse=True)
            for e in ex:
                assert e["flow_id"] in flow_ids and span_ids[e["span_id"]]["duration_ms"] == e["duration_ms"]
            assert ex[0]["duration_ms"] == pytest.approx(rec["max_ms"], abs=0.001)


class TestRecordFormat:
    def test_keys_counters_and_file(self, tmp_path):
        """Keys split by status and flow; over_sla / over_threshold are exact; metrics live only in the
        metrics_ file (not in performance_)."""
        run = Run(tmp_path, """
            def step(ms):
                import time; time.sleep(ms / 1000)
            def handle(i):
                step(1 if i % 4 else 80)
                if i % 5 == 0:
                    raise ValueError(i)
            for i in range(20):
                try:
                    handle(i)
                except ValueError:
                    pass
            step(1)                       # outside any flow: a root of its own
        """, """
            service: svc
            targets:
              - {target: "__main__:handle", kind: flow, sla_ms: 40}
              - {target: "__main__:step", threshold_ms: 40}
            metrics: {interval_s: 3600}
        """)
        run.start()
        assert not run.records("metrics")
        recs = metrics_records(run)
        by = {(r["name"], r["status"], r["flow_name"], r["root"]): r for r in recs}
        assert set(by) == {("__main__.handle", "success", None, True), ("__main__.handle", "error", None, True),
                           ("__main__.step", "success", "__main__.handle", False),
                           ("__main__.step", "success", None, True)}
        ok, failed = by["__main__.handle", "success", None, True], by["__main__.handle", "error", None, True]
        assert (ok["count"], failed["count"]) == (16, 4)
        assert ok["over_sla"] + failed["over_sla"] == 5 and ok["sla_ms"] == 40
        assert failed["retained_by"] == {"error": 4} and ok["retained_by"]["sla"] == 4    # the default's rules
        steps = by["__main__.step", "success", "__main__.handle", False]
        assert steps["count"] == 20 and steps["over_threshold"] == 5 and steps["threshold_ms"] == 40
        assert "retained" not in steps
        for r in recs:
            assert r["service"] == "svc" and r["level"] == "INFO" and r["measure"] == "duration"
            assert r["interval_start"] <= r["timestamp"] and r["hist"]["scale"] == 6
            assert r["count"] == r["hist"]["zero_count"] + sum(r["hist"]["counts"])


STOP = """
    import os, signal, sys, time
    def step(i):
        return i
    def main(how):
        for i in range(50):
            step(i)
        if how == "exception":
            raise RuntimeError("boom")
        if how == "sigint":
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
        if how == "sigterm":
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        if how in ("fork", "spawn"):
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor
            import work
            with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context(how)) as pool:
                assert sum(pool.map(work.job, range(40))) == sum(range(40))
    if __name__ == "__main__":
        main(sys.argv[1])
"""


class TestStopPaths:
    @pytest.mark.parametrize("how,code", [("exit", 0), ("exception", 1), ("sigint", -signal.SIGINT),
                                          ("sigterm", -signal.SIGTERM), ("fork", 0), ("spawn", 0)])
    def test_every_stop_path_writes_the_last_interval(self, tmp_path, how, code):
        """With an interval longer than the run, the only metrics are the stop's: every call is counted
        (pool workers' jobs too, in their own processes)."""
        (tmp_path / "work.py").write_text("def job(i):\n    return i\n")
        run = Run(tmp_path, STOP, """
            targets:
              - {target: "__main__:step"}
              - {target: "work:job"}
            metrics: {interval_s: 3600}
        """)
        proc = run.start(how, check=False, env={"PYTHONPATH": f"{tmp_path}:{os.environ.get('PYTHONPATH', '')}"
                                                 f"{os.pathsep}{clean_env()['PYTHONPATH']}"})
        assert proc.returncode == code, proc.stderr
        recs = metrics_records(run)
        assert sum(r["count"] for r in recs if r["name"] == "__main__.step") == 50
        if how in ("fork", "spawn"):
            jobs = [r for r in recs if r["name"] == "work.job" and r["kind"] == "span"]   # the workers'
            assert sum(r["count"] for r in jobs) == 40
            assert len(jobs) <= 4, "one interval per worker, not one per job"
            parent = [r for r in recs if r["kind"] == "job"]                             # the parent's
            for measure in ("duration", "queue_wait", "run", "transfer"):           # a job's parts: every job's
                assert sum(r["count"] for r in parent if r["measure"] == measure) == 40, measure
            assert {r["pid"] for r in jobs} - {r["pid"] for r in recs if r["name"] == "__main__.step"}


def test_console_ignores_metrics_records():
    """The console shows no line for a metrics record."""
    from autoperf.sinks import Console
    assert Console(colour=False).format({"type": "metrics", "level": "INFO", "timestamp": "x" * 24}) is None
