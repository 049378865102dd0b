"""How long a stop takes while a thread keeps producing spans (issue 19, item 1).

Run: .venv/bin/python tests/bench/bench_stop.py [--seconds 2] [--rates 10000,100000,1000000] [--root DIR]

For each rate, a program under ``autoperf run`` starts a daemon thread that calls a targeted
``work(i)`` at that rate (paced per millisecond; a rate the thread cannot reach runs as a tight loop
and the achieved rate is shown), lets it run ``--seconds``, then stops: by returning from the script
(normal exit) and, in a second run, by SIGTERM. Printed: the time from the stop to the process's end,
the spans logged and the ``dropped`` count. ``--root`` runs another checkout (``git archive`` of an
older commit) for a before/after table; a stop that has not finished after ``--timeout`` is killed.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time

import orjson

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PROGRAM = r"""
import sys, threading, time
rate, seconds, how = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
count = 0
def work(i):
    return i
def spin():
    global count
    per_ms = max(1, rate // 1000)
    i = 0
    next_ms = time.perf_counter()
    while True:
        for _ in range(per_ms):
            work(i)
            i += 1
        count = i
        next_ms += 0.001
        delay = next_ms - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
threading.Thread(target=spin, daemon=True).start()
t0 = time.perf_counter()
time.sleep(seconds)
produced, elapsed = count, time.perf_counter() - t0
print(f"{produced / elapsed:.0f} {produced}", flush=True)
if how == "sigterm":
    time.sleep(600)
print(f"stop {time.time():.6f}", flush=True)
"""


def run(root, rate, seconds, how, timeout):
    with tempfile.TemporaryDirectory(prefix="bench_stop_") as tmp:
        script = os.path.join(tmp, "prog.py")
        with open(script, "w") as handle:
            handle.write(PROGRAM)
        config = os.path.join(tmp, "autoperf.yaml")
        with open(config, "w") as handle:
            handle.write("targets:\n  - target: '__main__:work'\nsampler: {enabled: false}\n")
            if os.path.exists(os.path.join(root, "autoperf", "metrics", "retention.py")):
                handle.write("retain: {all: true}\n")      # every span a record: the writer's worst case
        env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOPERF_")}
        env["PYTHONPATH"] = root
        cmd = [sys.executable, "-m", "autoperf", "run", "--config", config, "--log-dir",
               os.path.join(tmp, "logs"), "--no-console", script, str(rate), str(seconds), how]
        proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                text=True)
        achieved, _ = proc.stdout.readline().split()
        if how == "sigterm":
            stopped = time.time()
            proc.send_signal(signal.SIGTERM)
        else:
            stopped = float(proc.stdout.readline().split()[1])
        try:
            proc.wait(timeout=timeout)
            took = f"{time.time() - stopped:.2f}"
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            took = f"> {timeout:.0f} (killed)"
        logged = dropped = 0
        logs = os.path.join(tmp, "logs")
        for name in os.listdir(logs) if os.path.isdir(logs) else ():
            with open(os.path.join(logs, name), "rb") as handle:
                for line in handle:
                    if b'"__main__.work"' in line:
                        logged += 1
                    elif b'"dropped"' in line:
                        dropped += orjson.loads(line).get("count", 0)
        return int(float(achieved)), took, logged, dropped


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rates", default="10000,100000,1000000")
    parser.add_argument("--root", default=ROOT)
    parser.add_argument("--timeout", type=float, default=60.0)
    opts = parser.parse_args()
    print("| spans/s asked | achieved | stop | stop -> exit (s) | spans logged | dropped |")
    print("|---|---|---|---|---|---|")
    for rate in (int(r) for r in opts.rates.split(",")):
        for how in ("exit", "sigterm"):
            achieved, took, logged, dropped = run(opts.root, rate, opts.seconds, how, opts.timeout)
            print(f"| {rate:,} | {achieved:,} | {how} | {took} | {logged:,} | {dropped:,} |", flush=True)


if __name__ == "__main__":
    main()
