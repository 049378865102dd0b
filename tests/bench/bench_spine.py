"""The spine's costs, measured side by side in one run (medians of interleaved repetitions).

1. Per call, inside a flow: a wrapped sync function and an awaited async function, against
   (a) the bare call, (b) a bare ``wrapt.FunctionWrapper`` pass-through, (c) the OpenTelemetry SDK's
   ``start_as_current_span`` with a BatchSpanProcessor and an exporter that discards.
   Each repetition times a burst of calls, then lets the background thread (our writer, OTel's
   batch processor) drain outside the timed region — the hot path is what the caller pays.
2. The writer: records per second of CPU, serialised and appended to a file; and the whole
   stage from buffered spans to lines (``pipeline.flush``).
3. Start-up of ``autoperf run`` against plain ``python`` on a program that imports asyncio
   (``--startup``: this table alone).

Run: ``python tests/bench/bench_spine.py`` (or ``make bench``).
"""
from __future__ import annotations

import asyncio
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

_LOG_DIR = tempfile.mkdtemp(prefix="autoperf-bench-")
os.environ.setdefault("AUTOPERF_LOG_DIR", _LOG_DIR)

import wrapt  # noqa: E402

from autoperf import bootstrap, pipeline, records, sinks, spans, wrappers  # noqa: E402

BURST = 20_000
REPEATS = 15


def plain(a, b=1):
    return a + b


async def plain_async(a, b=1):
    return a + b


def _passthrough(wrapped, instance, args, kwargs):
    return wrapped(*args, **kwargs)


def _otel():
    try:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
    except ImportError:
        return None, None

    class Discard(SpanExporter):
        def export(self, spans_):
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Discard(), max_queue_size=BURST * 2))
    tracer = provider.get_tracer("bench")

    def otel_sync(a, b=1):
        with tracer.start_as_current_span("plain"):
            return a + b

    async def otel_async(a, b=1):
        with tracer.start_as_current_span("plain"):
            return a + b

    return (otel_sync, otel_async), provider


def time_sync(fn):
    t0 = time.perf_counter_ns()
    for i in range(BURST):
        fn(i)
    return (time.perf_counter_ns() - t0) / BURST


def time_async(fn):
    async def burst():
        t0 = time.perf_counter_ns()
        for i in range(BURST):
            await fn(i)
        return (time.perf_counter_ns() - t0) / BURST
    return burst


def per_call_table():
    bootstrap.ensure_pipeline()
    pipeline.configure(pipeline.settings(), capacity=BURST * 4)
    site = wrappers.CallSite("plain", "span")
    ours_sync = wrappers.instrument(plain, site)
    ours_async = wrappers.instrument(plain_async, wrappers.CallSite("plain_async", "span"))
    wrapt_sync = wrapt.FunctionWrapper(plain, _passthrough)
    wrapt_async = wrapt.FunctionWrapper(plain_async, _passthrough)
    otel, provider = _otel()

    sync_variants = {"bare": plain, "wrapt pass-through": wrapt_sync, "autoperf": ours_sync}
    async_variants = {"bare": plain_async, "wrapt pass-through": wrapt_async, "autoperf": ours_async}
    if otel:
        sync_variants["OpenTelemetry SDK"] = otel[0]
        async_variants["OpenTelemetry SDK"] = otel[1]

    flow = spans.start("bench_flow", "flow")  # every call below happens inside a flow
    results = {("sync", k): [] for k in sync_variants} | {("async", k): [] for k in async_variants}
    loop = asyncio.new_event_loop()
    for _ in range(REPEATS):
        for name, fn in sync_variants.items():
            results[("sync", name)].append(time_sync(fn))
            _drain(provider)
        for name, fn in async_variants.items():
            results[("async", name)].append(loop.run_until_complete(time_async(fn)()))
            _drain(provider)
    loop.close()
    flow.finish()
    dropped = pipeline.dropped_count()
    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"\nPer call inside a flow (median of {REPEATS} interleaved bursts of {BURST:,}):")
    print(f"{'':8} {'variant':<22} {'ns/call':>9} {'added ns':>9}")
    for kind in ("sync", "async"):
        bare = med[(kind, "bare")]
        for name in (sync_variants if kind == "sync" else async_variants):
            value = med[(kind, name)]
            print(f"{kind:8} {name:<22} {value:>9.0f} {value - bare:>9.0f}")
        ours, wr = med[(kind, "autoperf")], med[(kind, "wrapt pass-through")]
        line = f"{kind:8} autoperf / wrapt pass-through = {ours / wr:.2f}x (goal <= 2)"
        if (kind, "OpenTelemetry SDK") in med:
            otel_cost = med[(kind, "OpenTelemetry SDK")]
            line += f";  autoperf / OTel = 1/{otel_cost / ours:.1f} (goal <= 1/15)"
        print(line)
    print(f"records dropped during the run: {dropped}")


def _drain(provider):
    pipeline.flush()
    if provider is not None:
        provider.force_flush()


def _finished_spans(n):
    """``n`` finished spans as an asyncpg-instrumented command makes them: db spans in a flow."""
    flow = spans.Span("bench_command", "flow", {"user_id": 42}, None)
    site = records.Site(threshold_ms=500.0)
    attrs = {"statement": "SELECT id, mmr FROM players WHERE id = $1", "fingerprint": "ec2824656e67c710",
             "operation": "SELECT", "system": "postgresql"}
    items = []
    for i in range(n):
        s = spans.Span("db.select", "db", dict(attrs, rows=i % 5), flow, site)
        s.duration_ns = 1_234_567 + i
        items.append(s)
    return items


def writer_table():
    """Records per second of CPU (the process's, all threads) through the writer's stages."""
    settings = records.Settings()
    sample = records.to_records(_finished_spans(1000), settings)
    batch = sample * 100  # 100k record dicts
    chunk = getattr(pipeline, "CHUNK", 512)
    with tempfile.TemporaryDirectory() as tmp:
        sink = sinks.JsonLinesFile(tmp)
        serialise = []
        for _ in range(5):
            t0 = time.process_time()
            for i in range(0, len(batch), chunk):
                sink.write(batch[i:i + chunk])
            serialise.append(len(batch) / (time.process_time() - t0))
        sink.close()
        # The whole writer stage as the pipeline runs it: buffered spans -> record dicts ->
        # processors -> JSON lines appended to the file, a chunk at a time.
        full_sink = sinks.JsonLinesFile(tmp, prefix="full_")
        others = pipeline.sinks()
        for other in others:
            pipeline.remove_sink(other)
        pipeline.add_sink(full_sink)
        pipeline.configure(pipeline.settings(), capacity=400_000)
        full = []
        try:
            for _ in range(5):
                items = _finished_spans(100_000)
                t0 = time.process_time()
                pipeline.BUFFER.extend(items)
                del items
                pipeline.flush()
                full.append(100_000 / (time.process_time() - t0))
        finally:
            pipeline.remove_sink(full_sink)
            for other in others:
                pipeline.add_sink(other)
        full_sink.close()
    print("\nWriter (records per second of process CPU, median of 5):")
    print(f"  serialise + write record dicts    : {statistics.median(serialise):>10,.0f} records/s (goal >= 1,000,000)")
    print(f"  span -> dict -> serialise -> write: {statistics.median(full):>10,.0f} records/s (pipeline.flush of 100k db spans)")


#: What every bot does at start: import asyncio and run a coroutine.
STARTUP_PROGRAM = "import asyncio\n\nasync def main():\n    await asyncio.sleep(0)\n\nasyncio.run(main())\n"


def startup_table(runs=15):
    """Wall time (median of ``runs`` interleaved runs) and the children's user+sys CPU (median)."""
    with tempfile.TemporaryDirectory() as tmp:
        script = os.path.join(tmp, "prog.py")
        with open(script, "w") as handle:
            handle.write(STARTUP_PROGRAM)
        # bytecode cached after the warm-up run, as an installed autoperf has it
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["AUTOPERF_LOG_DIR"] = tmp
        plain_cmd = [sys.executable, script]
        ours_cmd = [sys.executable, "-m", "autoperf", "run", "--no-console", "--config",
                    os.path.join(os.path.dirname(__file__), "..", "..", "examples", "quickstart", "autoperf.yaml"),
                    script]
        subprocess.run(ours_cmd, env=env, check=True)  # warm caches
        wall = {"python": [], "autoperf run": []}
        cpu = {"python": [], "autoperf run": []}
        for _ in range(runs):
            for name, cmd in (("python", plain_cmd), ("autoperf run", ours_cmd)):
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                t0 = time.perf_counter()
                subprocess.run(cmd, env=env, check=True)
                wall[name].append((time.perf_counter() - t0) * 1000)
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu[name].append((after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) * 1000)
    a, b = statistics.median(wall["python"]), statistics.median(wall["autoperf run"])
    ca, cb = statistics.median(cpu["python"]), statistics.median(cpu["autoperf run"])
    print(f"\nStart-up of a program that imports asyncio (median of {runs} interleaved runs):")
    print(f"  python prog.py           {a:7.1f} ms wall, {ca:6.1f} ms CPU")
    print(f"  autoperf run prog.py     {b:7.1f} ms wall, {cb:6.1f} ms CPU   (+{b - a:.1f} ms wall, goal <= +50 ms)")


if __name__ == "__main__":
    import shutil
    try:
        if sys.argv[1:] == ["--startup"]:
            startup_table()
            sys.exit(0)
        per_call_table()
        writer_table()
        startup_table()
    finally:
        pipeline.shutdown()
        shutil.rmtree(_LOG_DIR, ignore_errors=True)  # hundreds of MB of benchmark spans
