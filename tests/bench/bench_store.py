"""Sustained PostgresSink throughput into a local PostgreSQL (goal: >= 100k records/s).

Run: .venv/bin/python tests/bench/bench_store.py [--records 300000] [--batch 5000]
Uses the same server resolution as the tests (tests/pgserver.py) and a fresh database, dropped after.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

import asyncpg  # noqa: E402

from autoperf.store.sink import PostgresSink  # noqa: E402
from tests import pgserver  # noqa: E402


def make_records(n, day="2025-01-20"):
    """Span records shaped like the pipeline's output (~500 bytes of JSON each)."""
    out = []
    for i in range(n):
        out.append({
            "timestamp": f"{day}T{(i // 3600000) % 24:02d}:{(i // 60000) % 60:02d}:{(i // 1000) % 60:02d}.{i % 1000:03d}Z",
            "level": "DEBUG", "type": "span", "pid": 4242, "service": "ladder-bot",
            "name": ("db.fetch", "db.execute", "POST /channels/{channel_id}/messages", "queue_command")[i % 4],
            "kind": ("db", "db", "http", "span")[i % 4], "span_id": f"{i + 1:016x}", "parent_id": "0000000000000001",
            "flow_id": "0000000000000001", "flow_name": "queue_command", "duration_ms": (i % 1000) * 0.731,
            "status": "success", "error": None, "thread": "MainThread", "task": "Task-12",
            "attrs": {"statement": "SELECT id, mmr FROM players WHERE discord_id = $1", "fingerprint": "a1b2c3d4e5f60718",
                      "operation": "SELECT", "rows": i % 7, "system": "postgresql"},
        })
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=300000)
    ap.add_argument("--batch", type=int, default=5000)
    ap.add_argument("--chunk", type=int, default=1000, help="records per write() call (pipeline batch)")
    ap.add_argument("--connections", type=int, default=2)
    a = ap.parse_args()

    dsn, drop = pgserver.create_fresh_db(pgserver.pg_dsn())
    recs = make_records(a.records)
    try:
        with tempfile.TemporaryDirectory() as log_dir:
            sink = PostgresSink(dsn, log_dir=log_dir, batch_records=a.batch, flush_interval_ms=100,
                                max_buffer_records=200000, rollup=False,
                                connections=a.connections)
            sink.write(make_records(10, day="2025-01-19"))   # connect + migrate outside the timing
            assert sink.sync(30)
            backend = None
            try:
                import psutil

                backend = [psutil.Process(c.get_server_pid()) for c in [sink._conn, *sink._extra]]  # local backends
                be0 = sum(sum(b.cpu_times()[:2]) for b in backend)
            except Exception:  # noqa: BLE001 - remote server or no permission: skip the breakdown
                backend = None
            me0 = sum(os.times()[:2])
            t0 = time.perf_counter()
            for i in range(0, len(recs), a.chunk):
                while sink.stats()["queued"] > 150000:       # the pipeline would drop here; we wait
                    time.sleep(0.002)
                sink.write(recs[i:i + a.chunk])
            ok = sink.sync(300)
            elapsed = time.perf_counter() - t0
            me_cpu = sum(os.times()[:2]) - me0
            be_cpu = sum(sum(b.cpu_times()[:2]) for b in backend) - be0 if backend is not None else None
            st = sink.stats()
            sink.close()

        async def count():
            c = await asyncpg.connect(dsn)
            try:
                return await c.fetchval("SELECT count(*) FROM performance_metrics")
            finally:
                await c.close()
        rows = asyncio.run(count())
    finally:
        drop()
    rate = a.records / elapsed
    print(f"bench_store: {a.records} records in {elapsed:.2f} s -> {rate:,.0f} records/s "
          f"(batch {a.batch}, {a.connections} connections, synced={ok}, rows={rows}, dropped={st.get('dropped', 0)}, spilled={st.get('spilled', 0)})")
    per = 1e6 / a.records
    line = f"  cpu per record: python (sink + producer) {me_cpu * per:.1f} us"
    if be_cpu is not None:
        line += f", postgres backends {be_cpu * per:.1f} us"
    try:
        line += f"; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cpus"
    except OSError:
        pass
    print(line)
    return 0 if ok and rows == a.records + 10 else 1


if __name__ == "__main__":
    sys.exit(main())
