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

SCRIPT = r"""
import json, time
from autoperf import pipeline, spans

class Sink:
    def __init__(self):
        self.got = []                    # (monotonic time written, record)
    def write(self, records):
        now = time.monotonic()
        self.got += [(now, r) for r in records]
    def flush(self):
        pass
    def close(self):
        pass

def written(pred, timeout=3.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        for t, r in sink.got:
            if pred(r):
                return t
        time.sleep(0.005)
    return None

sink = Sink()
pipeline.add_sink(sink)
pipeline.ensure_started()
time.sleep(2.5)                          # nothing to write: 0.25, 0.5, 1 s ... waits
w0 = pipeline.writer_wakeups()
time.sleep(3.0)
idle_wakes = pipeline.writer_wakeups() - w0

t = time.monotonic()                     # emit() rings a backing-off writer
pipeline.emit({"type": "probe", "level": "INFO", "n": 1})
emit_delay = written(lambda r: r.get("n") == 1) - t

time.sleep(2.5)                          # idle again; a span is not rung for (hot path)
t = time.monotonic()
with spans.span("after_idle", "span"):
    pass
span_delay = written(lambda r: r.get("name") == "after_idle") - t

w0 = pipeline.writer_wakeups()           # a trickle (50 spans/s): about one wake-up a second
t = time.monotonic()
ended = []
while time.monotonic() - t < 3.0:
    with spans.span("trickle", "span") as s:
        s.set("i", len(ended))
    ended.append(time.monotonic())
    time.sleep(0.02)
trickle_wakes = pipeline.writer_wakeups() - w0
time.sleep(1.2)
at = {r["attrs"]["i"]: wt for wt, r in sink.got if r.get("name") == "trickle" and r["type"] == "span"}
trickle_delay = max(at[i] - e for i, e in enumerate(ended))

w0 = pipeline.writer_wakeups()           # records in numbers (~1,000/s): back to the flush interval
t = time.monotonic()                     # (after the trickle's wait of up to 1 s)
while time.monotonic() - t < 3.0:
    for _ in range(10):
        with spans.span("busy", "span"):
            pass
    time.sleep(0.01)
busy_wakes = pipeline.writer_wakeups() - w0
print(json.dumps({"idle_wakes": idle_wakes, "emit_delay": emit_delay, "span_delay": span_delay,
                  "trickle_wakes": trickle_wakes, "trickle_delay": trickle_delay, "trickle_n": len(at),
                  "busy_wakes": busy_wakes}))
"""


def test_idle_writer_backs_off_and_wakes_for_emit_and_for_records():
    p = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, cwd=ROOT, timeout=60,
                       env=dict(os.environ, PYTHONPATH=ROOT))
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout.strip().splitlines()[-1])
    assert r["idle_wakes"] <= 5, r            # ~3 at 1 s; 12 at the 250 ms flush interval
    assert r["emit_delay"] < 0.2, r           # rung: written at once, not after the back-off
    assert r["span_delay"] < 1.5, r           # within IDLE_WAIT_S (1 s)
    assert r["trickle_wakes"] <= 6, r         # ~4 in 3 s (0.5 s, then 1 s); 12 at the 250 ms flush interval
    assert r["trickle_n"] >= 100 and r["trickle_delay"] < 1.5, r   # every span written, within ~1 s
    assert r["busy_wakes"] >= 7, r            # <= 1 s, then ~8 in 2 s at 250 ms; ~3 if it stayed at 1 s
