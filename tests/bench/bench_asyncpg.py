"""What instrumenting asyncpg adds per query: bare vs autoperf vs OpenTelemetry vs ddtrace.

``await conn.fetchval("SELECT $1::int", i)`` on one connection to the local PostgreSQL, in four
worker processes (one per variant, so nothing is patched twice): bare asyncpg; autoperf's
asyncpg integration (pipeline with a sink that discards); ``opentelemetry-instrumentation-asyncpg``
with an SDK TracerProvider + BatchSpanProcessor + an exporter that discards; ``ddtrace.patch(asyncpg=True)``
(agent URL pointing at a closed port: traces are built, queued, then dropped).

Each worker runs blocks of ``--block`` queries, each block patched or unpatched at random (its own
``patch``/``unpatch``), so both states share the same process, connection and machine noise; the
parent takes the workers in shuffled turns. Reported: medians per query of wall time (what the
caller waits) and of the event-loop thread's CPU time (the hot path), their difference patched -
unpatched, and the CPU of every other thread in the round (writer, batch processor) plus the drain after it,
per patched query (background work).

Run: ``python tests/bench/bench_asyncpg.py [--rounds 12] [--blocks 60] [--block 20]`` (``make bench``).
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
        from autoperf import integrations, pipeline, spans

        class Discard:
            def write(self, records):
                pass

            def flush(self):
                pass

            def close(self):
                pass

        pipeline.add_sink(Discard())
        spans.use_asyncio()
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
        blocks, size = (int(x) for x in line.split())
        result = {"on": {"wall": [], "loop": []}, "off": {"wall": [], "loop": []}}
        on_queries = 0
        round_cpu0, round_loop0 = time.process_time_ns(), time.thread_time_ns()
        for _ in range(blocks):
            state = random.choice(("on", "off"))
            (on if state == "on" else off)()
            loop0 = time.thread_time_ns()
            t0 = time.perf_counter_ns()
            for i in range(size):
                await conn.fetchval(QUERY, i)      # looked up per call: OTel wraps the public method
            wall = time.perf_counter_ns() - t0
            result[state]["loop"].append((time.thread_time_ns() - loop0) / size / 1000)
            result[state]["wall"].append(wall / size / 1000)
            on_queries += size if state == "on" else 0
        off()
        # Background: CPU of every other thread during the round (our writer, OTel's batch
        # processor, ddtrace's writer) plus the drain of what they still had buffered after it.
        others = (time.process_time_ns() - round_cpu0) - (time.thread_time_ns() - round_loop0)
        cpu0 = time.process_time_ns()
        drain()
        others += time.process_time_ns() - cpu0
        result["drain"] = others / max(on_queries, 1) / 1000
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


def _warm_hot_path(n=50_000, repeats=9):
    """Our ``Connection._execute`` wrapper around a coroutine that returns at once (no I/O, warm
    caches): the instrumentation's own cost without the machine's per-query cache misses."""
    from autoperf import pipeline, spans
    from autoperf.integrations import asyncpg as apg

    async def original(self, query, args, limit, timeout, *, return_status=False,
                       ignore_custom_codec=False, record_class=None):
        return [None]   # asyncpg's signature: the lean wrapper, as on the real path

    wrapped = apg._execute_factory(original)
    spans.use_asyncio()

    async def timed(fn):
        t0 = time.thread_time_ns()
        for i in range(n):
            await fn(None, QUERY, (i,), 1, None)
            if not i % 1000:
                pipeline.BUFFER.clear()
        return (time.thread_time_ns() - t0) / n / 1000

    async def run():
        bare, ours = [], []
        for _ in range(repeats):
            bare.append(await timed(original))
            ours.append(await timed(wrapped))
        pipeline.BUFFER.clear()
        return statistics.median(ours) - statistics.median(bare)

    return asyncio.run(run())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--blocks", type=int, default=60, help="blocks per round, each patched or not at random")
    ap.add_argument("--block", type=int, default=20, help="queries per block")
    ap.add_argument("--worker")
    ap.add_argument("--dsn")
    args = ap.parse_args()
    if args.worker:
        asyncio.run(_worker(args.worker, args.dsn))
        return 0

    dsn = _dsn()
    variants = [v for v in VARIANTS if _available(v)]
    procs = {v: _spawn(v, dsn) for v in variants}
    keys = ("wall", "loop")
    on = {v: {k: [] for k in keys} for v in variants}
    off = {v: {k: [] for k in keys} for v in variants}
    drain = {v: [] for v in variants}
    try:
        for p in procs.values():
            _read(p)
        order = list(variants)
        started = time.time()
        for _ in range(args.rounds):
            random.shuffle(order)
            for v in order:
                procs[v].stdin.write(f"{args.blocks} {args.block}\n")
                procs[v].stdin.flush()
                res = _read(procs[v])
                for k in keys:
                    on[v][k].extend(res["on"][k])
                    off[v][k].extend(res["off"][k])
                drain[v].append(res["drain"])
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

    med = statistics.median
    bare = {k: med(x for v in variants for x in off[v][k]) for k in keys}
    # Added cost per variant: median of its patched blocks - median of its unpatched blocks, both
    # drawn at random within the same process and connection (noise lands on both alike).
    added = {v: {k: med(on[v][k]) - med(off[v][k]) for k in keys} for v in variants}
    total = args.rounds * args.blocks * args.block
    print(f"asyncpg {QUERY!r} on one connection; per variant {total} queries in blocks of {args.block}, "
          f"each block patched or not at random, variants in shuffled turns ({elapsed:.0f}s)")
    print("medians, microseconds per query. wall: what the caller waits; loop: CPU of the event-loop thread")
    print("(the hot path); background: CPU of the other threads (writer / batch processor) during a round")
    print("plus the drain after it, per patched query")
    print(f"{'variant':<10} {'wall':>8} {'+wall':>8} {'loop':>8} {'+loop':>8} {'background':>11}")
    print(f"{'bare':<10} {bare['wall']:>8.2f} {0:>8.2f} {bare['loop']:>8.2f} {0:>8.2f} {0:>11.2f}")
    for v in variants:
        a = added[v]
        print(f"{v:<10} {med(on[v]['wall']):>8.2f} {a['wall']:>8.2f} {med(on[v]['loop']):>8.2f} "
              f"{a['loop']:>8.2f} {med(drain[v]):>11.2f}")
    ours = added.get("autoperf")
    if ours is not None:
        for other in ("otel", "ddtrace"):
            if other in added:
                parts = []
                for k in keys:
                    theirs = added[other][k]
                    parts.append(f"{k} {ours[k] / theirs:.3f}" if theirs > 0 else f"{k} n/a")
                print(f"autoperf added / {other} added: {', '.join(parts)} (goal <= {GOAL_RATIO:.3f})")
        print(f"autoperf hot path alone (wrapper + span start/finish, warm caches, no I/O): "
              f"{_warm_hot_path():.2f} us per query")
        ok = ours["loop"] <= GOAL_US
        print(f"autoperf adds {ours['loop']:.2f} us of loop CPU, {ours['wall']:.2f} us wall per query "
              f"(goal <= {GOAL_US} us): {'OK' if ok else 'OVER'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
