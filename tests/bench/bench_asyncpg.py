"""What instrumenting asyncpg adds per query: bare vs autoperf vs OpenTelemetry vs ddtrace.

``await conn.fetchval("SELECT $1::int", i)`` on one connection to the local PostgreSQL, in four
worker processes (one per variant, so nothing is patched twice): bare asyncpg; autoperf's
asyncpg integration (pipeline with a sink that discards); ``opentelemetry-instrumentation-asyncpg``
with an SDK TracerProvider + BatchSpanProcessor + an exporter that discards; ``ddtrace.patch(asyncpg=True)``
(agent URL pointing at a closed port: traces are built, queued, then dropped).

The parent takes the workers in turns (shuffled each round) so machine noise hits all variants
alike, and reports medians over rounds: wall time per query (what the caller waits) and client
CPU per query (the whole process, background threads and the final flush included).

Run: ``python tests/bench/bench_asyncpg.py [--rounds 30] [--batch 2000]`` (also ``make bench``).
Goal: autoperf adds <= 3 us per query and <= 1/15 of what OpenTelemetry adds.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VARIANTS = ("autoperf", "otel", "ddtrace")
QUERY = "SELECT $1::int"
GOAL_US = 3.0
GOAL_RATIO = 1 / 15


# -- worker ------------------------------------------------------------------------------------
def _toggles(variant):
    """``(on, off, drain)`` for ``variant``: patch, unpatch, and drain its background work."""
    import asyncpg

    if variant == "autoperf":
        from autoperf import integrations, pipeline

        class Discard:
            def write(self, records):
                pass

            def flush(self):
                pass

            def close(self):
                pass

        pipeline.add_sink(Discard())
        pipeline.use_asyncio()
        pipeline.ensure_started()
        return (lambda: integrations.patch("asyncpg", asyncpg, {}),
                lambda: integrations.unpatch("asyncpg"), pipeline.flush)
    if variant == "otel":
        from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

        class Discard(SpanExporter):
            def export(self, batch):
                return SpanExportResult.SUCCESS

        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(Discard()))
        inst = AsyncPGInstrumentor()
        return (lambda: inst.instrument(tracer_provider=provider), inst.uninstrument, provider.force_flush)
    if variant == "ddtrace":
        import ddtrace
        from ddtrace.contrib.internal.asyncpg import patch as ddpatch
        from ddtrace.trace import tracer
        ddtrace.patch(asyncpg=True)
        ddpatch.unpatch()
        return ddpatch.patch, ddpatch.unpatch, tracer.flush
    raise SystemExit(f"unknown variant {variant}")


async def _batch(conn, n, drain):
    cpu0 = time.process_time_ns()
    loop0 = time.thread_time_ns()
    t0 = time.perf_counter_ns()
    for i in range(n):
        await conn.fetchval(QUERY, i)      # looked up per call: OTel wraps the public method
    wall = time.perf_counter_ns() - t0
    loop_cpu = time.thread_time_ns() - loop0
    drain()
    cpu = time.process_time_ns() - cpu0
    return {"wall": wall / n / 1000, "loop": loop_cpu / n / 1000, "cpu": cpu / n / 1000}


async def _worker(variant, dsn):
    on, off, drain = _toggles(variant)
    import asyncpg

    on()
    conn = await asyncpg.connect(dsn)
    for i in range(2000):   # warm up: statement cache, code paths, both states
        await conn.fetchval(QUERY, i)
    off()
    for i in range(2000):
        await conn.fetchval(QUERY, i)
    drain()
    print(json.dumps({"ready": variant}), flush=True)
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line.strip():
            break
        n = int(line)
        result = {}
        for state in random.sample(["off", "on"], 2):
            (on if state == "on" else off)()
            result[state] = await _batch(conn, n, drain)
        off()
        print(json.dumps(result), flush=True)
    await conn.close()


# -- parent ------------------------------------------------------------------------------------
def _dsn():
    sys.path.insert(0, ROOT)
    from tests import pgserver
    try:
        return pgserver.pg_dsn()
    except BaseException as exc:  # pytest.skip outside pytest is a BaseException
        print(f"no PostgreSQL: {exc}")
        sys.exit(0)


def _spawn(variant, dsn):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               DD_TRACE_AGENT_URL="http://127.0.0.1:9", DD_INSTRUMENTATION_TELEMETRY_ENABLED="false",
               DD_REMOTE_CONFIGURATION_ENABLED="false", DD_TRACE_STARTUP_LOGS="false",
               DD_TRACE_WRITER_INTERVAL_SECONDS="1", OTEL_SDK_DISABLED="false")
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", variant, "--dsn", dsn],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, env=env, cwd=ROOT)
    return proc


def _read(proc):
    while True:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError("worker died")
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)


def _available(variant):
    mod = {"otel": "opentelemetry.instrumentation.asyncpg", "ddtrace": "ddtrace"}.get(variant)
    if mod is None:
        return True
    import importlib.util
    return importlib.util.find_spec(mod.split(".")[0]) is not None and (
        variant != "otel" or importlib.util.find_spec(mod) is not None)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--worker")
    ap.add_argument("--dsn")
    args = ap.parse_args()
    if args.worker:
        asyncio.run(_worker(args.worker, args.dsn))
        return 0

    dsn = _dsn()
    variants = [v for v in VARIANTS if _available(v)]
    procs = {v: _spawn(v, dsn) for v in variants}
    keys = ("wall", "loop", "cpu")
    on = {v: {k: [] for k in keys} for v in variants}
    off = {v: {k: [] for k in keys} for v in variants}
    try:
        for p in procs.values():
            _read(p)
        order = list(variants)
        started = time.time()
        for _ in range(args.rounds):
            random.shuffle(order)
            for v in order:
                procs[v].stdin.write(f"{args.batch}\n")
                procs[v].stdin.flush()
                res = _read(procs[v])
                for k in keys:
                    on[v][k].append(res["on"][k])
                    off[v][k].append(res["off"][k])
        elapsed = time.time() - started
    finally:
        for p in procs.values():
            try:
                p.stdin.write("\n")
                p.stdin.flush()
            except Exception:
                pass
        for p in procs.values():
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()

    bare = {k: statistics.median(x for v in variants for x in off[v][k]) for k in keys}
    # Added cost: median over pairs of (patched - unpatched), each pair measured back to back in
    # the same process on the same connection, so the machine's noise is mostly common to both.
    added = {v: {k: statistics.median(a - b for a, b in zip(on[v][k], off[v][k])) for k in keys}
             for v in variants}
    print(f"asyncpg {QUERY!r} on one connection: {args.rounds} interleaved rounds x {args.batch} queries, "
          f"patched and unpatched back to back in each variant's own process ({elapsed:.0f}s)")
    print("medians, microseconds per query. wall: what the caller waits; loop: CPU of the event-loop")
    print("thread (the hot path); proc: CPU of the whole process incl. background threads and a flush")
    print(f"{'variant':<10} {'wall':>8} {'+wall':>8} {'loop':>8} {'+loop':>8} {'proc':>8} {'+proc':>8}")
    print(f"{'bare':<10} {bare['wall']:>8.2f} {0:>8.2f} {bare['loop']:>8.2f} {0:>8.2f} {bare['cpu']:>8.2f} {0:>8.2f}")
    for v in variants:
        m = {k: statistics.median(on[v][k]) for k in keys}
        a = added[v]
        print(f"{v:<10} {m['wall']:>8.2f} {a['wall']:>8.2f} {m['loop']:>8.2f} {a['loop']:>8.2f} "
              f"{m['cpu']:>8.2f} {a['cpu']:>8.2f}")
    ours = added.get("autoperf")
    if ours is not None:
        for other in ("otel", "ddtrace"):
            if other in added:
                parts = []
                for k in keys:
                    theirs = added[other][k]
                    parts.append(f"{k} {ours[k] / theirs:.3f}" if theirs > 0 else f"{k} n/a")
                print(f"autoperf added / {other} added: {', '.join(parts)} (goal <= {GOAL_RATIO:.3f})")
        ok = ours["loop"] <= GOAL_US and ours["wall"] <= GOAL_US
        print(f"autoperf adds {ours['wall']:.2f} us wall, {ours['loop']:.2f} us loop CPU per query "
              f"(goal <= {GOAL_US} us): {'OK' if ok else 'OVER'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
