"""Tail-based retention (`retain: {all: false}`): each rule keeps what it says and nothing else;
`flow_complete` for every flow; the sample agrees across processes; pending memory is bounded.

Real runs of ``python -m autoperf run`` (tests/runs.py).
"""
from __future__ import annotations

import collections
import os

import orjson
import pytest

from autoperf.metrics.retention import sampled
from tests.runs import Run, clean_env

RULES = """
    import asyncio, time
    def child():
        time.sleep(0.001)
    def slow_child():
        time.sleep(0.03)
    def plain():
        child()
    def fails():
        child()
        raise ValueError("x")
    def over_sla():
        child(); time.sleep(0.03)
    def missed():
        child()
        return True
    def with_slow_child():
        child(); slow_child()
    def always():
        child()
    def never_fails():
        child()
        raise ValueError("y")
    async def blocked():
        child()
        time.sleep(0.3)                  # holds the event loop
    for f in (plain, fails, over_sla, missed, with_slow_child, always, never_fails, plain, plain):
        try:
            f()
        except ValueError:
            pass
    async def main():
        await asyncio.sleep(0.05)
        await blocked()
        await asyncio.sleep(0.2)
    asyncio.run(main())
"""
RULES_CONFIG = """
    targets:
      - {target: "__main__:child"}
      - {target: "__main__:slow_child", threshold_ms: 10}
      - {target: "__main__:plain", kind: flow}
      - {target: "__main__:fails", kind: flow}
      - {target: "__main__:over_sla", kind: flow, sla_ms: 20}
      - {target: "__main__:missed", kind: flow, capture: {deadline_missed: return}}
      - {target: "__main__:with_slow_child", kind: flow}
      - {target: "__main__:always", kind: flow, retain: always}
      - {target: "__main__:never_fails", kind: flow, retain: never}
      - {target: "__main__:blocked", kind: flow}
    retain: {all: false, sample_rate: 0}
"""
EXPECTED = {"__main__.fails": "error", "__main__.over_sla": "sla", "__main__.missed": "deadline",
            "__main__.with_slow_child": "slow_child", "__main__.always": "target",
            "__main__.blocked": "loop_blocked"}


class TestRules:
    def test_each_rule_retains_what_it_says_and_nothing_else(self, tmp_path):
        """Every flow has its flow_complete; only the flows a rule names have span records (theirs and
        their children's), each saying the rule; the metrics count them per rule."""
        run = Run(tmp_path, RULES, RULES_CONFIG)
        run.start()
        flows = run.records("flow_complete")
        assert collections.Counter(f["flow_name"] for f in flows)["__main__.plain"] == 3
        assert len(flows) == 10
        kept = {f["flow_name"]: f["retained"] for f in flows if f["retained"]}
        assert kept == EXPECTED
        assert all(f["retained"] is None for f in flows if f["flow_name"] not in EXPECTED)
        spans = run.records("span")
        by_flow = collections.defaultdict(list)
        for s in spans:
            by_flow[s["flow_id"]].append(s)
        flow_of = {f["flow_id"]: f for f in flows}
        assert set(by_flow) == {f["flow_id"] for f in flows if f["retained"]}
        for flow_id, group in by_flow.items():
            rule = flow_of[flow_id]["retained"]
            assert {s["retained"] for s in group} == {rule}
            assert "__main__.child" in {s["name"] for s in group}       # the children came with the root
        metrics = [orjson.loads(line) for p in run.log_dir.glob("metrics_*.log") for line in p.read_bytes().splitlines()]
        by = collections.Counter()
        for m in metrics:
            for rule, n in (m.get("retained_by") or {}).items():
                by[rule] += n
        assert by == collections.Counter(EXPECTED.values())
        assert sum(m["count"] for m in metrics if m["name"] == "__main__.child") == 10
        perf = [orjson.loads(line) for p in run.log_dir.glob("performance_*.log") for line in p.read_bytes().splitlines()]
        unkept = [orjson.loads(line) for p in run.log_dir.glob("flows_*.log") for line in p.read_bytes().splitlines()]
        assert {r["flow_name"] for r in perf if r["type"] == "flow_complete"} == set(EXPECTED)
        assert len(unkept) == 4 and all(r["type"] == "flow_complete" and r["retained"] is None for r in unkept)

    def test_rules_can_be_turned_off(self, tmp_path):
        """With every rule off and no sample, only `retain: always` keeps a flow."""
        run = Run(tmp_path, RULES, RULES_CONFIG.replace(
            "sample_rate: 0}", "sample_rate: 0, rules: {error: false, sla: false, deadline: false, "
                               "loop_blocked: false, slow_child: false}}"))
        run.start()
        assert {f["flow_name"] for f in run.records("flow_complete") if f["retained"]} == {"__main__.always"}
        assert {s["name"] for s in run.records("span")} == {"__main__.always", "__main__.child"}


SAMPLED = """
    import multiprocessing, sys
    from concurrent.futures import ProcessPoolExecutor
    import work
    def handle(pool, i):
        return pool.submit(work.job, i).result()
    if __name__ == "__main__":
        with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context(sys.argv[1])) as pool:
            for i in range(60):
                handle(pool, i)
"""


class TestSample:
    @pytest.mark.parametrize("method", ["fork", "spawn"])
    def test_the_sample_is_the_same_in_the_parent_and_its_workers(self, tmp_path, method):
        """At rate 0.5 about half the flows are kept, exactly those the flow id picks; a worker writes
        its spans for exactly the flows its parent kept."""
        (tmp_path / "work.py").write_text("def inner(i):\n    return i\ndef job(i):\n    return inner(i)\n")
        run = Run(tmp_path, SAMPLED, """
            targets:
              - {target: "__main__:handle", kind: flow}
              - {target: "work:job"}
              - {target: "work:inner"}
            retain: {all: false, sample_rate: 0.5}
        """)
        run.start(method, env={"PYTHONPATH": f"{tmp_path}{os.pathsep}{clean_env()['PYTHONPATH']}"})
        flows = run.records("flow_complete")
        assert len(flows) == 60
        kept = {f["flow_id"] for f in flows if sampled(f["flow_id"], 0.5)}
        assert 15 <= len(kept) <= 45
        assert {f["flow_id"] for f in flows if f["retained"] == "sample"} <= kept
        # the first flow may wait for the workers to start (seconds under spawn): kept by `sla` first
        assert all(f["retained"] for f in flows if f["flow_id"] in kept)
        assert all(f["retained"] in (None, "sla") for f in flows if f["flow_id"] not in kept)
        spans = run.records("span")
        parent_pid = {f["pid"] for f in flows}
        worker = [s for s in spans if s["pid"] not in parent_pid]
        assert {s["name"] for s in worker} == {"work.job", "work.inner"}
        assert {s["flow_id"] for s in worker} == kept
        assert all(s["retained"] == "sample" for s in worker)


LEAK = """
    import os, sys, time
    from autoperf import pipeline, spans
    def child():
        pass
    def handle(n):
        for _ in range(10):
            child()
    def rss_kb():
        with open("/proc/self/status") as f:
            return int(next(l for l in f if l.startswith("VmRSS")).split()[1])
    leaked = spans.start("leaked", "flow")        # a root that never ends
    child()
    spans.deactivate(leaked._token)
    rss = []
    for i in range(60_000):
        handle(i)
        if i % 1000 == 999:
            pipeline.flush(end_interval=False)       # no buffer overflow on a loaded machine
        if i % 20_000 == 19_999:
            time.sleep(0.5)                          # let the writer catch up
            rss.append(rss_kb())
    time.sleep(1.5)                                  # past pending_timeout_s: evicted at an interval end
    print(rss)
"""


class TestBounded:
    def test_memory_stays_flat_and_a_root_that_never_ends_is_evicted(self, tmp_path):
        """60,000 unretained flows of 10 children: RSS does not grow after the first 20,000; the root
        that never ended is evicted after pending_timeout_s and counted; the children over
        max_pending are counted."""
        run = Run(tmp_path, LEAK, """
            targets:
              - {target: "__main__:handle", kind: flow}
              - {target: "__main__:child"}
            retain: {all: false, sample_rate: 0, max_pending: 5, pending_timeout_s: 1}
            metrics: {interval_s: 0.5}
        """)
        proc = run.start(timeout=300)
        rss = orjson.loads(proc.stdout.strip().splitlines()[-1])
        assert rss[-1] - rss[0] < 8_000, rss            # kB
        assert len(run.records("flow_complete")) == 60_000
        assert not run.records("span")
        warnings = [w for w in run.records("warning") if w.get("code") == "retention_overflow"]
        assert sum(w["roots_evicted"] for w in warnings) == 1
        assert sum(w["children_evicted"] for w in warnings) == 1
        assert sum(w["children_dropped"] for w in warnings) == 60_000 * 5
        metrics = [orjson.loads(line) for p in run.log_dir.glob("metrics_*.log") for line in p.read_bytes().splitlines()]
        assert sum(m["count"] for m in metrics if m["name"] == "__main__.child") == 600_001
