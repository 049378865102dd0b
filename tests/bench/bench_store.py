"""Sustained PostgresSink throughput into a local PostgreSQL (goal: >= 100k records/s).

Run: .venv/bin/python tests/bench/bench_store.py [--records 2000000] [--batch 10000] [--connections 2]

Uses the same server resolution as the tests (tests/pgserver.py) and a fresh database, dropped after.
Records are generated while the sink runs (memory stays flat); the producer's own CPU is measured and
shown apart. Printed: the overall rate, the slowest 5-second window (checkpoints, WAL and autovacuum
show up there), CPU per record of the sink threads and of every PostgreSQL process (by role), and the
WAL volume and checkpoints during the run. The CPU figures matter on a shared machine: records/s
depend on what else runs, CPU per record does not.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import os
import resource
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

import asyncpg  # noqa: E402

from autoperf.store.sink import PostgresSink  # noqa: E402
from tests import pgserver  # noqa: E402

NAMES = ("db.fetch", "db.execute", "POST /channels/{channel_id}/messages", "queue_command")
KINDS = ("db", "db", "http", "span")


_HMS = [f"{h:02d}:{m:02d}:{sec:02d}" for h in range(24) for m in range(60) for sec in range(60)]
_ATTRS = [{"statement": "SELECT id, mmr FROM players WHERE discord_id = $1", "fingerprint": "a1b2c3d4e5f60718",
           "operation": "SELECT", "rows": r, "system": "postgresql"} for r in range(7)]
_TEMPLATES = [{
    "timestamp": None, "level": "DEBUG", "type": "span", "pid": 4242, "service": "ladder-bot",
    "name": NAMES[k], "kind": KINDS[k], "span_id": None, "parent_id": "0000000000000001",
    "flow_id": "0000000000000001", "flow_name": "queue_command", "duration_ms": None,
    "status": "success", "error": None, "thread": "MainThread", "task": "Task-12", "attrs": None,
} for k in range(4)]


def make_records(n, day="2025-01-20", start=0):
    """Span records shaped like the pipeline's output (~500 bytes of JSON each), ids start+1 …, 1000 per
    second of record time. Cheap to make (~1 us each), so the producer barely competes with the sink."""
    out = []
    for i in range(start, start + n):
        rec = _TEMPLATES[i % 4].copy()
        rec["timestamp"] = f"{day}T{_HMS[(i // 1000) % 86400]}.{i % 1000:03d}Z"
        rec["span_id"] = f"{i + 1:016x}"
        rec["duration_ms"] = (i % 1000) * 0.731
        rec["attrs"] = _ATTRS[i % 7]
        out.append(rec)
    return out


def _role(proc, backends) -> str:
    """A PostgreSQL process's role from its title: 'sink backend', 'checkpointer', 'walwriter', …"""
    if proc.pid in backends:
        return "sink backends"
    try:
        title = " ".join(proc.cmdline())
    except Exception:  # noqa: BLE001
        return "other"
    if ":" not in title:
        return "postmaster"
    role = title.split(":", 2)[-1].strip()
    if role.startswith("autovacuum worker"):
        return "autovacuum worker"
    return role.split(" ")[0] if role.split(" ")[0] in ("checkpointer", "walwriter", "background") else (
        role if len(role) < 30 else "other backends")


class PgCpu:
    """CPU seconds of every process of a local PostgreSQL server, grouped by role (None when not local)."""

    def __init__(self, backend_pids):
        import psutil

        self.backends = set(backend_pids)
        self.root = psutil.Process(next(iter(self.backends))).parent()   # the postmaster
        self.start = self._sample()

    def _sample(self):
        out = {}
        for p in [self.root, *self.root.children()]:
            try:
                t = p.cpu_times()
                out[p.pid] = (p, t.user + t.system)
            except Exception:  # noqa: BLE001 - exited meanwhile
                pass
        return out

    def delta(self) -> dict:
        end = self._sample()
        by = collections.Counter()
        for pid, (p, cpu) in end.items():
            by[_role(p, self.backends)] += cpu - self.start.get(pid, (None, 0.0))[1]
        return by


class GcTime:
    """CPU seconds spent in CPython's cyclic garbage collector, per thread name (a gc callback)."""

    def __init__(self):
        self.by = collections.Counter()
        self._start: dict = {}

    def __call__(self, phase, info):
        tid = threading.get_ident()
        if phase == "start":
            self._start[tid] = time.thread_time()
        else:
            t0 = self._start.pop(tid, None)
            if t0 is not None:
                self.by[threading.current_thread().name] += time.thread_time() - t0


def thread_cpu(native_ids) -> dict:
    """CPU seconds per thread id, for the given native thread ids."""
    import psutil

    return {t.id: t.user_time + t.system_time for t in psutil.Process().threads() if t.id in native_ids}


async def _vacuum_cpu(dsn) -> float | None:
    """CPU seconds of one VACUUM (ANALYZE) of the table: the work autovacuum would do for these rows."""
    c = await asyncpg.connect(dsn)
    try:
        import psutil

        be = psutil.Process(c.get_server_pid())
        t0 = sum(be.cpu_times()[:2])
        await c.execute("VACUUM (ANALYZE) performance_metrics")
        return sum(be.cpu_times()[:2]) - t0
    except Exception:  # noqa: BLE001 - remote server or no permission
        return None
    finally:
        await c.close()


async def _server_counters(dsn):
    c = await asyncpg.connect(dsn)
    try:
        lsn = await c.fetchval("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")
        ckpt = await c.fetchval("SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter")
        return float(lsn), ckpt
    finally:
        await c.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=2_000_000)
    ap.add_argument("--batch", type=int, default=10000)
    ap.add_argument("--chunk", type=int, default=1000, help="records per write() call (pipeline batch)")
    ap.add_argument("--connections", type=int, default=2)
    ap.add_argument("--backlog", type=int, default=None,
                    help="records kept queued ahead of the sink (default 4 batches: enough to keep it busy; a "
                         "deep queue of record dicts mostly measures the cyclic GC walking it)")
    a = ap.parse_args()
    if a.backlog is None:
        a.backlog = 4 * a.batch

    dsn, drop = pgserver.create_fresh_db(pgserver.pg_dsn())
    try:
        with tempfile.TemporaryDirectory() as log_dir:
            sink = PostgresSink(dsn, log_dir=log_dir, batch_records=a.batch, flush_interval_ms=100,
                                max_buffer_records=200000, rollup=False, connections=a.connections)
            sink.write(make_records(10, day="2025-01-19"))   # connect + migrate outside the timing
            assert sink.sync(30)
            convert_tid, io_tid = sink._thread.native_id, sink._io.native_id
            sink_threads = {convert_tid, io_tid}
            try:
                pg = PgCpu(c.get_server_pid() for c in [sink._conn, *sink._extra])
            except Exception:  # noqa: BLE001 - remote server or no permission: skip the breakdown
                pg = None
            wal0, ckpt0 = asyncio.run(_server_counters(dsn))
            sink0 = thread_cpu(sink_threads)
            faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            prod_cpu = 0.0
            gct = GcTime()
            gc.callbacks.append(gct)
            windows, last_t, last_n = [], None, 0
            t0 = last_t = time.perf_counter()
            for i in range(0, a.records, a.chunk):
                p0 = time.thread_time()
                recs = make_records(min(a.chunk, a.records - i), start=i)
                prod_cpu += time.thread_time() - p0
                while sink.stats()["queued"] > a.backlog:    # a real producer would wait or drop here
                    time.sleep(0.002)
                sink.write(recs)
                now = time.perf_counter()
                if now - last_t >= 5.0:
                    done = sink.counters["inserted"]
                    windows.append((done - last_n) / (now - last_t))
                    last_t, last_n = now, done
            ok = sink.sync(600)
            elapsed = time.perf_counter() - t0
            gc.callbacks.remove(gct)
            sink1 = thread_cpu(sink_threads)
            convert_cpu = sink1.get(convert_tid, 0.0) - sink0.get(convert_tid, 0.0)
            io_cpu = sink1.get(io_tid, 0.0) - sink0.get(io_tid, 0.0)
            sink_cpu = convert_cpu + io_cpu
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0
            pg_cpu = pg.delta() if pg is not None else None
            wal1, ckpt1 = asyncio.run(_server_counters(dsn))
            st = sink.stats()
            sink.close()

        rows = pgserver.fetchval(dsn, "SELECT count(*) FROM performance_metrics")
        vacuum = asyncio.run(_vacuum_cpu(dsn))
    finally:
        drop()
    rate = a.records / elapsed
    print(f"bench_store: {a.records} records in {elapsed:.1f} s -> {rate:,.0f} records/s "
          f"(batch {a.batch}, {a.connections} connections, backlog {a.backlog}, synced={ok}, rows={rows}, "
          f"dropped={st.get('dropped', 0)}, spilled={st.get('spilled', 0)}, duplicates={st.get('duplicates', 0)})")
    if windows:
        print(f"  5-s windows: slowest {min(windows):,.0f}, median {sorted(windows)[len(windows) // 2]:,.0f} records/s "
              f"({len(windows)} windows)")
    per = 1e6 / a.records
    total = sink_cpu + (sum(pg_cpu.values()) if pg_cpu else 0.0)
    line = (f"  cpu per record: sink threads {sink_cpu * per:.1f} us (convert {convert_cpu * per:.1f}, "
            f"asyncpg/io {io_cpu * per:.1f}; producer {prod_cpu * per:.1f} us, not counted; "
            f"{faults / a.records:.2f} page faults/record in this process)")
    if pg_cpu:
        parts = ", ".join(f"{k} {v * per:.1f}" for k, v in pg_cpu.most_common() if v * per >= 0.05)
        line += f"; postgres {sum(pg_cpu.values()) * per:.1f} us ({parts})"
        line += f"; total {total * per:.1f} us -> {1e6 / (total * per) * (os.cpu_count() or 1):,.0f} records/s " \
                f"if {os.cpu_count()} cpus were ours"
    print(line)
    gc_sink = sum(v for k, v in gct.by.items() if k.startswith("autoperf-pg"))
    gil = (sink_cpu + prod_cpu) * per
    print(f"  one GIL: sink threads + producer {gil:.1f} us/record of Python -> at most {1e6 / gil:,.0f} records/s "
          f"however many cpus; CPython's cyclic GC {gc_sink * per:.1f} us of the sink threads' and "
          f"{(sum(gct.by.values()) - gc_sink) * per:.1f} us of the producer thread's per record")
    print(f"  WAL {(wal1 - wal0) / a.records:.0f} B/record ({(wal1 - wal0) / elapsed / 2**20:.0f} MB/s), "
          f"checkpoints during the run: {ckpt1 - ckpt0}; "
          + (f"VACUUM (ANALYZE) afterwards {vacuum * per:.1f} us/record; " if vacuum is not None else "")
          + f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cpus")
    return 0 if ok and rows == a.records + 10 else 1


if __name__ == "__main__":
    sys.exit(main())
