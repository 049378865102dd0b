"""Instructions per wrapped call on the calling thread (callgrind): the re-entrancy guard (issue 19.2)
and the ended-flow check (issue 16.1) on the hot path.

Run: .venv/bin/python tests/bench/bench_guard.py [--root DIR] [--calls 20000,60000]

One interpreter instruments ``work`` with ``wrappers.instrument`` and calls it N times, as a root span
and as a child of a running flow, with no writer thread (the buffer is cleared every 1,000 calls);
callgrind counts every instruction. Two call counts are differenced, so start-up cancels out: the
figure is the cost of one wrapped call on the program's thread. ``--root`` measures another checkout
(``git archive`` of an older commit) for a before/after table.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PROGRAM = r"""
import sys
sys.path.insert(0, {root!r})
from autoperf import pipeline, spans, wrappers
def work(i):
    return i
wrapped = wrappers.instrument(work, wrappers.CallSite("work", "span"))
if sys.argv[2] == "child":
    spans.start("flow", "flow", None, parent=None)   # running for the whole loop
clear = pipeline.BUFFER.clear
for i in range(int(sys.argv[1])):
    wrapped(i)
    if i % 1000 == 999:
        clear()
"""


def instructions(root, calls, variant):
    with tempfile.TemporaryDirectory(prefix="bench_guard_") as tmp:
        script = os.path.join(tmp, "prog.py")
        with open(script, "w") as handle:
            handle.write(PROGRAM.format(root=root))
        env = dict(os.environ, PYTHONHASHSEED="0")     # the same dict layouts in every run
        done = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
                               script, str(calls), variant], capture_output=True, text=True, cwd=tmp, env=env)
        found = re.search(r"Collected : (\d+)", done.stderr)
        if found is None:
            raise SystemExit(done.stderr[-2000:])
        return int(found.group(1))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=ROOT)
    parser.add_argument("--calls", default="20000,60000")
    opts = parser.parse_args()
    low, high = (int(n) for n in opts.calls.split(","))
    for variant in ("root", "child"):
        instructions(opts.root, 100, variant)           # .pyc files exist before measuring
        a, b = instructions(opts.root, low, variant), instructions(opts.root, high, variant)
        print(f"{variant}: {(b - a) / (high - low):,.0f} instructions per wrapped call ({opts.root})", flush=True)


if __name__ == "__main__":
    main()
