"""The writer thread's cadence: every flush interval while records come in numbers, backing off when
idle or when only a trickle comes.

Run in a fresh interpreter (the writer is per process and other tests start it with their own sinks).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The writer's sleep is a timed acquire of ``pipeline._bell``; this stand-in is its clock: each sleep
# records how long the writer asked for and lasts until the test ends it (``tick``), and a ring
# (``emit`` releasing the bell) is recorded. No time passes: the back-off is exact and instant.
FAKE_CLOCK = r"""
import json, threading
from autoperf import pipeline, spans

class Bell:
    def __init__(self):
        self.waits, self.rings = [], 0
        self.asked, self.go = threading.Semaphore(0), threading.Semaphore(0)
    def acquire(self, blocking=True, timeout=-1):     # the writer's sleep
        self.waits.append(timeout)
        self.asked.release()
        self.go.acquire()
        return False
    def release(self):                                # emit() rings
        self.rings += 1

class Sink:
    def write(self, records): pass
    def flush(self): pass
    def close(self): pass

bell = pipeline._bell = Bell()
pipeline.add_sink(Sink())
pipeline.ensure_started()
bell.asked.acquire()                     # asleep for the first time

def tick(records=0, spans_=0):
    # records (emit) and spans (the hot path) into the buffer, end the writer's sleep: its next sleep, rung?
    rings = bell.rings
    for i in range(records):
        pipeline.emit({"type": "probe", "level": "INFO", "n": i})
    for _ in range(spans_):
        with spans.span("s", "span"):
            pass
    rung = bell.rings > rings
    bell.go.release()
    bell.asked.acquire()
    return bell.waits[-1], rung

out = {"first": bell.waits[0], "flush_interval": pipeline._flush_interval, "idle_max": pipeline.IDLE_WAIT_S,
       "trickle": pipeline.TRICKLE_RECORDS}
out["idle"] = [tick() for _ in range(5)]                  # nothing comes
out["span_after_idle"] = tick(spans_=1)                   # a span does not ring (hot path)
out["idle_again"] = [tick() for _ in range(3)]
out["emit_after_idle"] = tick(records=1)                  # emit rings a backing-off writer
out["emit_not_idle"] = tick(records=1)                    # ... and not one that is not
out["busy"] = [tick(spans_=pipeline.TRICKLE_RECORDS) for _ in range(2)]   # records in numbers
out["trickle"] = [tick(spans_=3) for _ in range(4)]       # then a trickle: fewer than TRICKLE_RECORDS a wake
print(json.dumps(out))
"""


def test_writer_backs_off_when_idle_or_trickling_and_wakes_for_emit_and_for_numbers():
    """Idle, the writer's sleep doubles from the flush interval up to IDLE_WAIT_S (a span made then waits at
    most that long: it does not ring); emit() rings it only while it backs off; fewer than TRICKLE_RECORDS a
    wake-up doubles the sleep too; records in numbers bring it back to the flush interval (fake clock)."""
    p = subprocess.run([sys.executable, "-c", FAKE_CLOCK], capture_output=True, text=True, cwd=ROOT, timeout=60,
                       env=dict(os.environ, PYTHONPATH=ROOT))
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout.strip().splitlines()[-1])
    f, top = r["flush_interval"], r["idle_max"]
    assert (f, top) == (0.25, 1.0) and r["first"] == f, r
    assert r["idle"] == [[2 * f, False], [4 * f, False], [top, False], [top, False], [top, False]], r
    assert r["span_after_idle"] == [top, False], r        # written within IDLE_WAIT_S, not rung
    assert r["idle_again"] == [[top, False]] * 3, r
    assert r["emit_after_idle"][1] is True, r              # rung: written at once
    assert r["emit_not_idle"] == [top, False], r           # a trickle's writer is not rung
    assert [w for w, _ in r["busy"]] == [f, f], r
    assert [w for w, _ in r["trickle"]] == [2 * f, 4 * f, top, top], r


REAL = r"""
import json, time
from autoperf import pipeline, spans

got = []
class Sink:
    def write(self, records):
        now = time.monotonic()
        got.extend((now, r) for r in records)
    def flush(self): pass
    def close(self): pass

def written(pred, timeout=3.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        for t, r in list(got):
            if pred(r):
                return t
        time.sleep(0.005)
    return None

pipeline.add_sink(Sink())
pipeline.ensure_started()
time.sleep(2.0)                          # nothing to write: 0.25, 0.5, then 1 s waits
t = time.monotonic()
pipeline.emit({"type": "probe", "level": "INFO", "n": 1})
emit_delay = written(lambda r: r.get("n") == 1) - t
print(json.dumps({"emit_delay": emit_delay, "idle_wakes": pipeline.writer_wakeups()}))
"""


def test_emit_rings_the_real_writer_out_of_its_back_off():
    """With the real clock and thread: after 2 s idle (3 wake-ups, not 8 at the flush interval) an emitted
    record is written at once, not after the back-off."""
    p = subprocess.run([sys.executable, "-c", REAL], capture_output=True, text=True, cwd=ROOT, timeout=60,
                       env=dict(os.environ, PYTHONPATH=ROOT))
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout.strip().splitlines()[-1])
    assert r["idle_wakes"] <= 5, r
    assert r["emit_delay"] < 0.2, r
