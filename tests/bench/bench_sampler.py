"""CPU cost of the runtime monitors (goal: lag monitor + sampler at defaults <= 0.5 % of one core).

Run: .venv/bin/python tests/bench/bench_sampler.py [--seconds 20] [--repeat 3] [--root DIR]

Idle: each variant runs in a fresh interpreter that sits in ``asyncio.sleep``; after a settling
phase (``--settle``, 7 s: past the sampler's psutil import and the writer's first record) the CPU
time of every thread over ``--seconds`` is read (``pthread_getcpuclockid``: ns resolution), and the process total is compared
with a baseline run without autoperf. Variants: the pipeline alone (writer thread), + lag monitor
and blocking watchdog (``asyncio`` integration, defaults 100 ms / 100 ms), + resource sampler
(default 5 s). Variants run interleaved, ``--repeat`` times; medians are printed. The settling
phase's extra CPU (psutil import, first batch) is shown as a one-off.

Busy: one interpreter runs no-op loop callbacks (``call_soon`` chains) and task steps
(``await asyncio.sleep(0)``) with the ``asyncio`` integration unpatched and patched, interleaved;
thread CPU per callback, best of ``--repeat`` x 5. Also: ``Handle._run`` called directly (plain vs
wrapped) and one ``Sampler.sample()``.

``--root`` runs the same measurement against another checkout (e.g. ``git archive`` of an older
commit) for before/after tables.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

IDLE = r"""
import asyncio, json, os, sys, threading, time
sys.path.insert(0, {root!r})
variant, seconds, settle = {variant!r}, {seconds!r}, {settle!r}
start_cpu = time.process_time()
if variant != "baseline":
    from autoperf import bootstrap
    bootstrap.ensure_pipeline(log_dir={log_dir!r}, console=False)
    from autoperf import integrations
    if variant in ("loop", "loop+sampler"):
        integrations.patch("asyncio", asyncio, {{}})
    if variant == "loop+sampler":
        import autoperf
        integrations.patch("resources", autoperf, {{}})

def thread_cpu():
    out = {{}}
    for t in threading.enumerate():
        try:
            out[t.name] = time.clock_gettime(time.pthread_getcpuclockid(t.ident))
        except (OSError, AttributeError):
            pass
    return out

async def main():
    await asyncio.sleep(settle)  # threads start, psutil loads, the first batch is written
    t0, c0, th0 = time.perf_counter(), time.process_time(), thread_cpu()
    await asyncio.sleep(seconds)
    th1 = thread_cpu()
    return (time.perf_counter() - t0, time.process_time() - c0, c0 - start_cpu,
            {{k: v - th0.get(k, 0.0) for k, v in th1.items()}})

wall, cpu, settle_cpu, threads = asyncio.run(main())
print(json.dumps({{"wall": wall, "cpu": cpu, "settle_cpu": settle_cpu, "threads": threads}}))
"""

BUSY = r"""
import asyncio, contextvars, json, sys, time, timeit
sys.path.insert(0, {root!r})
from asyncio import events
from autoperf import bootstrap, integrations
from autoperf.integrations import base
bootstrap.ensure_pipeline(log_dir={log_dir!r}, console=False)
N, CHAINS = {n!r}, 10

async def callbacks():
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    left = [N]
    def step():
        left[0] -= 1
        if left[0] > 0:
            loop.call_soon(step)
        elif not done.done():
            done.set_result(None)
    for _ in range(CHAINS):
        loop.call_soon(step)
    t0 = time.thread_time()
    await done
    return (time.thread_time() - t0) / N * 1e9

async def task_steps():
    async def worker(k):
        for _ in range(k):
            await asyncio.sleep(0)
    t0 = time.thread_time()
    await asyncio.gather(*(worker(N // CHAINS) for _ in range(CHAINS)))
    return (time.thread_time() - t0) / N * 1e9

def direct(patched):
    # Handle._run called directly on a running loop's handle (the loop's state set as it runs)
    async def inner():
        loop = asyncio.get_running_loop()
        handle = events.Handle(lambda: None, (), loop, contextvars.Context())
        fn = events.Handle._run
        return timeit.timeit("fn(handle)", globals={{"fn": fn, "handle": handle}}, number=N) / N * 1e9
    return asyncio.run(inner())

best = {{}}
def keep(key, value):
    best[key] = min(best.get(key, 1e12), value)

for _ in range({repeat!r} * 5):
    for patched in (False, True):
        if patched:
            integrations.patch("asyncio", asyncio, {{}})
        tag = "patched" if patched else "plain"
        keep("callback_" + tag, asyncio.run(callbacks()))
        keep("task_step_" + tag, asyncio.run(task_steps()))
        keep("direct_" + tag, direct(patched))
        if patched:
            integrations.unpatch("asyncio")
print(json.dumps(best))
"""

SAMPLE = r"""
import json, sys, time, concurrent.futures
sys.path.insert(0, {root!r})
from autoperf import sampler as resources
sampler = resources.Sampler(interval_s=60)
def cost():
    best = float("inf")
    for _ in range(20):
        t0 = time.perf_counter()
        sampler.sample()
        best = min(best, time.perf_counter() - t0)
    return best * 1e3
out = {{"no_children": cost()}}
with concurrent.futures.ProcessPoolExecutor(4) as ex:
    list(ex.map(abs, range(8)))
    out["4_workers"] = cost()
print(json.dumps(out))
"""

VARIANTS = ("baseline", "pipeline", "loop", "loop+sampler")
LABELS = {"baseline": "no autoperf", "pipeline": "pipeline (writer thread)",
          "loop": "+ lag monitor + watchdog", "loop+sampler": "+ resource sampler"}
THREADS = (("MainThread", "loop thread"), ("autoperf-loop-watchdog", "watchdog"),
           ("autoperf-writer", "writer"), ("autoperf-sampler", "sampler"))


def run(code, root):
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=900)
    if out.returncode:
        raise SystemExit(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def idle(args, log_dir):
    runs = {v: [] for v in VARIANTS}
    for _ in range(args.repeat):
        for variant in VARIANTS:  # interleaved: a busy moment on the host hits every variant alike
            runs[variant].append(run(IDLE.format(root=args.root, variant=variant, seconds=args.seconds,
                                                 settle=args.settle, log_dir=log_dir), args.root))
    print(f"idle asyncio program: {args.seconds:.0f} s after {args.settle:.0f} s settling, median of "
          f"{args.repeat} (CPU time of all threads)")
    print(f"{'variant':<28}{'% of core':>10}{'overhead %':>12}{'min..max %':>16}{'one-off ms':>12}")
    base_pct = statistics.median(100 * r["cpu"] / r["wall"] for r in runs["baseline"])
    base_settle = statistics.median(r["settle_cpu"] for r in runs["baseline"])
    for variant in VARIANTS:
        pcts = [100 * r["cpu"] / r["wall"] for r in runs[variant]]
        settle = statistics.median(r["settle_cpu"] for r in runs[variant]) - base_settle
        print(f"{LABELS[variant]:<28}{statistics.median(pcts):>10.3f}{statistics.median(pcts) - base_pct:>12.3f}"
              f"{min(pcts) - base_pct:>8.3f}..{max(pcts) - base_pct:<6.3f}{settle * 1e3:>12.1f}")
    print("\nper thread, % of one core (median), variant '+ resource sampler'")
    full = runs["loop+sampler"]
    for name, label in THREADS:
        values = [100 * r["threads"].get(name, 0.0) / r["wall"] for r in full]
        print(f"  {label:<26}{statistics.median(values):>10.3f}")


def busy(args, log_dir):
    res = run(BUSY.format(root=args.root, n=args.callbacks, repeat=args.repeat, log_dir=log_dir), args.root)
    print(f"\nbusy loop: CPU per callback, best of {args.repeat * 5} x {args.callbacks} (ns)")
    print(f"{'':<34}{'plain':>8}{'monitored':>11}{'added':>8}")
    for key, label in (("callback", "call_soon chain (no-op callback)"), ("task_step", "task step (await sleep(0))"),
                       ("direct", "Handle._run called directly")):
        plain, patched = res[key + "_plain"], res[key + "_patched"]
        print(f"{label:<34}{plain:>8.0f}{patched:>11.0f}{patched - plain:>8.0f}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--settle", type=float, default=7.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--callbacks", type=int, default=100_000)
    parser.add_argument("--root", default=ROOT, help="checkout to measure (default: this one)")
    parser.add_argument("--only", choices=("idle", "busy", "sample"), default=None)
    args = parser.parse_args()
    args.root = os.path.abspath(args.root)
    log_dir = tempfile.mkdtemp(prefix="autoperf-bench-")
    if args.only in (None, "idle"):
        idle(args, log_dir)
    if args.only in (None, "busy"):
        busy(args, log_dir)
    if args.only in (None, "sample"):
        sample = run(SAMPLE.format(root=args.root), args.root)
        print("\none Sampler.sample() (best of 20)")
        print(f"{'no children':<28}{sample['no_children']:>10.2f} ms")
        print(f"{'4 pool workers':<28}{sample['4_workers']:>10.2f} ms")
    print(f"\nlogs: {log_dir}")


if __name__ == "__main__":
    main()
