"""The PostgreSQL store behind a proxy that refuses or black-holes (a silent partition): every
record produced is stored exactly once (issue 19, item 5).

Timings are shortened by configuration: ``command_timeout_s: 2`` (default 30) so an 8-second black
hole spans several timeouts as a 90-second one does with the defaults, and ``max_buffer_records:
20000`` (default 200,000) so the sink's queue overflows within the outage as it does at high rates
in a long one; ``AUTOPERF_FAULT_OUTAGE_S`` and ``AUTOPERF_FAULT_DEFAULT_TIMEOUTS=1`` run the long
version.
"""
from __future__ import annotations

import asyncio
import os
import subprocess
import time

import asyncpg
import pytest

from tests.faults import Program, clean_env
from tests.pgserver import TcpProxy, fresh_db_fixture

pytestmark = [pytest.mark.postgres, pytest.mark.slow]
pg_db = fresh_db_fixture()

# 4 s: twice the shortened command timeout (a black hole is found within it); the environment
# variable runs longer outages (with AUTOPERF_FAULT_DEFAULT_TIMEOUTS=1, the defaults' 30 s and more).
OUTAGE_S = float(os.environ.get("AUTOPERF_FAULT_OUTAGE_S", "4"))
SHORT = os.environ.get("AUTOPERF_FAULT_DEFAULT_TIMEOUTS") != "1"
PRODUCER = """
    import sys, time
    def work(i):
        return i
    n, end = 0, time.monotonic() + float(sys.argv[1])
    while time.monotonic() < end:
        for _ in range(500):
            work(n)
            n += 1
        time.sleep(0.1)
    print(n, flush=True)
"""


def stored(dsn):
    async def count():
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetchrow("SELECT count(*) AS n, count(DISTINCT id) AS ids FROM performance_metrics "
                                       "WHERE type = 'span' AND operation_name = '__main__.work'")
        finally:
            await conn.close()
    return asyncio.run(count())


@pytest.mark.parametrize("fault", ["blackhole", "refuse"])
def test_outage_loses_and_duplicates_nothing(tmp_path, pg_db, fault):
    """Spans produced at ~5k/s through an outage: all stored once the store is back, none twice;
    a black hole is found by the command timeout and spilled like a refused connection."""
    proxy = TcpProxy(pg_db)
    timeouts = ("command_timeout_s: 2, connect_timeout_s: 1, retry_max_s: 1, keepalive_s: 2, "
                "max_buffer_records: 20000, " if SHORT else "")
    prog = Program(tmp_path, PRODUCER, "targets:\n  - target: '__main__:work'\nsampler: {enabled: false}\n"
                                       f"store: {{{timeouts}dsn: '{proxy.dsn()}'}}\nretain: {{all: true}}\n")
    before, after = 2.0, 6.0
    try:
        proc = subprocess.Popen(prog.autoperf_cmd(str(before + OUTAGE_S + after)), cwd=tmp_path, env=clean_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(before)
        getattr(proxy, fault)()
        time.sleep(OUTAGE_S)
        proxy.restore()
        out, err = proc.communicate(timeout=before + OUTAGE_S + after + 120)
    finally:
        proxy.close()
    assert proc.returncode == 0, err
    produced = int(out)
    during = stored(pg_db)
    leftovers = [n for n in os.listdir(prog.log_dir) if n.startswith("pg_spill_")]
    if leftovers:    # what the run could not replay before it ended: the next start replays it
        from autoperf.store.sink import PostgresSink
        sink = PostgresSink(pg_db, log_dir=prog.log_dir, flush_interval_ms=50)
        deadline = time.monotonic() + 300
        while any(n.startswith("pg_spill_") for n in os.listdir(prog.log_dir)) and time.monotonic() < deadline:
            time.sleep(0.2)
        sink.close()
    row = stored(pg_db)
    records = prog.records()
    lost = sum(r.get("count", 0) for r in records if r.get("code") == "store_records_lost")
    print(f"{fault} {OUTAGE_S:g}s: produced {produced}, stored by the run {during['n']}, spill files left "
          f"{len(leftovers)}, stored after the next start {row['n']} (distinct ids {row['ids']}), lost {lost}")
    assert len([r for r in records if r.get("name") == "__main__.work"]) == produced   # the log file has them all
    assert row["n"] == row["ids"] == produced, (row, produced, leftovers)
    if SHORT:        # the run itself had time to replay everything
        assert during["n"] == produced and not leftovers
    if fault == "blackhole":
        assert any(r.get("code") == "store_stalled" for r in records)
