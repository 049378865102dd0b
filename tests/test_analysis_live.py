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


def fc(name, d, status="success", command=None):
    rec = {"type": "flow_complete", "flow_name": name, "duration_ms": d, "status": status}
    if command:
        rec["metadata"] = {"command": command}
    return rec


def test_window_percentiles_aliases_and_errors():
    clock = Clock()
    s = LiveStats(clock=clock)
    for d in range(1, 11):                       # 11 minutes ago: outside a 10-minute window
        assert s.process(fc("queue_command", 1000.0 + d, command="queue")) is not None
    clock.t += 11 * 60
    for d in range(1, 101):
        s.process(fc("queue_command", float(d), "error" if d <= 5 else "success", command="queue"))
    st = s.command("queue", minutes=10)
    assert st["count"] == 100 and st["p50_ms"] == 50.5 and st["p95_ms"] == pytest.approx(95.05)
    assert st["avg_ms"] == 50.5 and st["max_ms"] == 100.0 and st["error_rate_pct"] == 5.0
    assert s.command("/queue", 10) == st == s.flow("queue_command", 10)
    assert s.command("queue", minutes=30)["count"] == 110
    assert s.command("nope")["count"] == 0 and s.command("nope")["p95_ms"] is None
    s.process({"type": "span", "kind": "db", "name": "db.fetch", "duration_ms": 4.0, "status": "success"})
    s.process({"type": "span", "kind": "flow", "name": "queue_command", "duration_ms": 4.0})
    assert s.operation("db.fetch")["count"] == 1 and s.operation("queue_command")["count"] == 0
    assert set(s.commands()) == {"queue_command"}


def test_bounded_memory_and_bad_records():
    s = LiveStats(maxlen=50, max_names=3)
    for i in range(1000):
        s.process(fc("a", float(i)))
    assert s.flow("a")["count"] == 50 and s.flow("a")["p50_ms"] == pytest.approx(974.5)
    for n in ("b", "c", "d", "e"):
        s.process(fc(n, 1.0))
    assert len(s.names()["flows"]) == 3 and s.overflow == 2
    for bad in ({"type": "flow_complete"}, {"type": "flow_complete", "duration_ms": "x", "flow_name": "a"}, {}, None):
        assert s.process(bad) is bad             # never raises, always passes the record on


def test_thread_safe_reads_during_writes():
    s = LiveStats(maxlen=2000)
    stop = threading.Event()
    errors = []

    def writer():
        i = 0
        while not stop.is_set():
            s.process(fc("q", float(i % 100)))
            i += 1

    def reader():
        try:
            for _ in range(300):
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
        for d in (10.0, 20.0, 30.0):
            pipeline.emit({"type": "flow_complete", "flow_name": "setup_command", "duration_ms": d,
                           "status": "success", "metadata": {"command": "setup"}})
        with spans.span("profile_command", "flow"):
            with spans.span("db.fetch", "db", {"statement": "SELECT 1"}):
                time.sleep(0.002)
        pipeline.flush()
        st = live.command("setup", minutes=5)
        assert st["count"] == 3 and st["p50_ms"] == 20.0
        prof = live.flow("profile_command")
        assert prof["count"] == 1 and prof["max_ms"] >= 2.0
        assert live.operation("db.fetch")["count"] == 1
    finally:
        live.uninstall()
    pipeline.emit({"type": "flow_complete", "flow_name": "setup_command", "duration_ms": 1.0, "status": "success"})
    pipeline.flush()
    assert live.command("setup_command")["count"] == 3     # no longer fed


def test_full_rings_stay_small():
    """A long-running program fills every ring: 20 names x 10 000 entries must not cost tens of MB
    (tuples of floats did: ~22 MB here; flat arrays ~3.5 MB)."""
    import tracemalloc
    s = LiveStats()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for i in range(12_000):
            for n in range(20):
                s.process({"type": "span", "kind": "db", "name": f"db.q{n}", "duration_ms": i * 0.5,
                           "status": "success" if i % 7 else "error"})
        used = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert used < 6_000_000, used
    st = s.operation("db.q3")
    assert st["count"] == 10_000 and st["max_ms"] == 11_999 * 0.5       # the newest 10 000 kept
    assert st["error_rate_pct"] == pytest.approx(100 * sum(1 for i in range(2000, 12_000) if i % 7 == 0) / 10_000)
