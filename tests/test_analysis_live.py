"""autoperf.analysis.live: in-memory run-time stats fed by a pipeline processor."""
import threading
import time

import pytest

from autoperf.analysis import live
from autoperf.analysis.live import LiveStats


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def mr(name, durations_ms, status="success", kind="flow", root=True):
    """A ``metrics`` record of one interval, made by the writer's own code (metrics.aggregates)."""
    from autoperf.metrics.aggregates import Agg, metrics_record, record_value
    agg = Agg(None)
    for i, d in enumerate(durations_ms):
        record_value(agg, int(round(d * 1e6)), 5, i + 1, i + 1, 0)
    key = (name, kind, status, None if root else "some_flow", root, "duration", None)
    return metrics_record(key, agg, "2026-01-01T00:00:00.000Z", "2026-01-01T00:00:10.000Z", 10.0, lambda ns: "")


def fc(name, command):
    return {"type": "flow_complete", "flow_name": name, "duration_ms": 1.0, "status": "success",
            "metadata": {"command": command}}


def test_window_percentiles_aliases_and_errors():
    """Intervals older than the window are left out; counts, average, max and error rate are exact,
    percentiles within 0.55 %; aliases come from flow_complete; spans of other kinds are operations."""
    clock = Clock()
    s = LiveStats(clock=clock)
    assert s.process(mr("queue_command", [1000.0 + d for d in range(1, 11)])) is not None   # 11 min ago
    s.process(fc("queue_command", "queue"))
    clock.t += 11 * 60
    s.process(mr("queue_command", [float(d) for d in range(1, 6)], "error"))
    s.process(mr("queue_command", [float(d) for d in range(6, 101)]))
    st = s.command("queue", minutes=10)
    assert st["count"] == 100 and st["p50_ms"] == pytest.approx(50.5, rel=0.0055)
    assert st["p95_ms"] == pytest.approx(95.05, rel=0.0055)
    assert st["avg_ms"] == 50.5 and st["max_ms"] == 100.0 and st["error_rate_pct"] == 5.0
    assert s.command("/queue", 10) == st == s.flow("queue_command", 10)
    assert s.command("queue", minutes=30)["count"] == 110
    assert s.command("nope")["count"] == 0 and s.command("nope")["p95_ms"] is None
    s.process(mr("db.fetch", [4.0], kind="db", root=False))
    s.process(mr("queue_command", [4.0], root=False))          # a flow target as a step: no operation
    assert s.operation("db.fetch")["count"] == 1 and s.operation("queue_command")["count"] == 0
    assert set(s.commands()) == {"queue_command"}


def test_bounded_memory_and_bad_records():
    """At most maxlen intervals per name and max_names names; bad records pass through untouched."""
    s = LiveStats(maxlen=50, max_names=3)
    for i in range(1000):
        s.process(mr("a", [float(i)]))
    assert s.flow("a")["count"] == 50 and s.flow("a")["p50_ms"] == pytest.approx(974.5, rel=0.0055)
    for n in ("b", "c", "d", "e"):
        s.process(mr(n, [1.0]))
    assert len(s.names()["flows"]) == 3 and s.overflow == 2
    for bad in ({"type": "metrics"}, {"type": "metrics", "count": "x", "name": "a"}, {}, None,
                {"type": "metrics", "name": "a", "count": 1, "hist": {}}):
        assert s.process(bad) is bad             # never raises, always passes the record on


def test_thread_safe_reads_during_writes():
    s = LiveStats(maxlen=50)
    stop = threading.Event()
    errors = []

    def writer():
        i = 0
        while not stop.is_set():
            s.process(mr("q", [float(i % 100), 1.0]))
            i += 1

    def reader():
        try:
            for _ in range(100):
                st = s.command("q", minutes=1)
                assert st["count"] == 0 or st["p95_ms"] is not None
        except Exception as e:      # pragma: no cover - the failure we are testing for
            errors.append(e)

    w = threading.Thread(target=writer)
    w.start()
    rs = [threading.Thread(target=reader) for _ in range(3)]
    for r in rs:
        r.start()
    for r in rs:
        r.join()
    stop.set()
    w.join()
    assert errors == []


def test_install_registers_with_the_real_pipeline():
    pipeline = pytest.importorskip("autoperf.pipeline")
    spans = pytest.importorskip("autoperf.spans")
    stats = live.install(LiveStats())
    try:
        assert live.install() is stats                    # idempotent
        for _ in range(3):
            with spans.span("setup_command", "flow", {"command": "setup"}):
                pass
        with spans.span("profile_command", "flow"):
            with spans.span("db.fetch", "db", {"statement": "SELECT 1"}):
                time.sleep(0.002)
        pipeline.flush()
        st = live.command("setup", minutes=5)
        assert st["count"] == 3 and st["p50_ms"] <= st["max_ms"]
        prof = live.flow("profile_command")
        assert prof["count"] == 1 and prof["max_ms"] >= 2.0
        assert live.operation("db.fetch")["count"] == 1
    finally:
        live.uninstall()
    with spans.span("setup_command", "flow"):
        pass
    pipeline.flush()
    assert live.command("setup_command")["count"] == 3     # no longer fed


def test_full_rings_stay_small():
    """A long-running program fills every ring: 20 names x 360 intervals stay a few MB."""
    import tracemalloc
    s = LiveStats()
    recs = [mr(f"db.q{n}", [i * 0.5 for i in range(0, 2000, 7)], kind="db", root=False) for n in range(20)]
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for _ in range(400):
            for rec in recs:
                s.process(dict(rec))
        used = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert used < 6_000_000, used
    st = s.operation("db.q3", minutes=1e6)
    assert st["count"] == 360 * len(range(0, 2000, 7))       # the newest 360 intervals kept
