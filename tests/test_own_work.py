"""autoperf's own work is never the program's: its store writes, its threads and stop paths record
nothing, and a target on a function autoperf itself uses (``builtins:len``, ``os:getpid``) neither
breaks it nor feeds it its own spans (issue 16 item 8, issue 19 item 2). Real runs, real PostgreSQL."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.runs import Run, clean_env

try:
    from tests import pgserver as pgs
except ImportError:  # pragma: no cover - tests/ on sys.path
    import pgserver as pgs

pg_db = pgs.fresh_db_fixture()

QUERIES = """
    import asyncio, sys, asyncpg
    async def main():
        conn = await asyncpg.connect(sys.argv[1])
        for i in range(20):
            await conn.fetchval("SELECT $1::int + 1", i)
        await conn.close()
        await asyncio.sleep(float(sys.argv[2]))     # the store keeps writing meanwhile
    asyncio.run(main())
"""

IDLE = """
    import sys, time
    import asyncpg                                   # the asyncpg integration is patched
    time.sleep(float(sys.argv[2]))
"""


def _store_config(dsn):
    return f"""
        store: {{dsn: '{dsn}', flush_interval_ms: 100}}
        sampler: {{interval_s: 0.2}}
        retain: {{all: true}}
    """


def _stored(dsn):
    from tests import pgserver
    return pgserver.fetchval(dsn, "SELECT count(*) FROM performance_metrics")


@pytest.mark.postgres
def test_the_stores_writes_are_not_recorded_as_the_programs_queries(pg_db, tmp_path):
    """With the PostgreSQL store on, the db records of a run are the program's 20 queries, none of
    the store's own BEGIN / COPY / INSERT / COMMIT (they were half of a demo's query records)."""
    run = Run(tmp_path, QUERIES, _store_config(pg_db))
    run.start(pg_db, "2")
    db = [r for r in run.records("span") if r["kind"] == "db"]
    assert _stored(pg_db) > 0                      # the store did write, from its own thread
    assert sorted({r["attrs"]["statement"] for r in db}) == ["SELECT $1::int + ?"], db[:3]
    assert len(db) == 20


@pytest.mark.postgres
def test_an_idle_program_with_the_store_records_no_queries(pg_db, tmp_path):
    """An idle program with the store on writes no db records at all (it logged ~3.6 a second of the
    store's own, forever)."""
    run = Run(tmp_path, IDLE, _store_config(pg_db))
    run.start(pg_db, "2.5")
    assert _stored(pg_db) > 0
    assert [r for r in run.records("span") if r["kind"] == "db"] == []


REENTRY = """
    import asyncio, os, sys, threading, time
    print(len([1, 2, 3]), flush=True)
    for _ in range(3):
        os.getpid()
    async def main():
        await asyncio.sleep(0.05)
        return "done"
    print(asyncio.run(main()), flush=True)
    time.sleep(1.5)                                  # the writer, sampler and alerts threads run
"""


def test_targets_on_functions_autoperf_uses_neither_break_it_nor_feed_it(tmp_path):
    """``builtins:len``, ``os:getpid`` and ``time:time_ns`` as targets: the program runs and exits as
    under python (it was a RecursionError before the program started, or endless self-made spans),
    every getpid span is one of the program's three calls, and no span comes from autoperf's threads."""
    run = Run(tmp_path, REENTRY, """
        targets:
          - target: builtins:len
          - target: os:getpid
          - target: time:time_ns
        sampler: {interval_s: 0.2}
        retain: {all: true}
    """)
    proc = run.start(timeout=60)
    assert proc.stdout.split() == ["3", "done"]
    assert "RecursionError" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    spans = run.records("span")
    assert sum(r["name"] == "os.getpid" for r in spans) == 3
    assert {r["thread"] for r in spans} == {"MainThread"}, {r["thread"] for r in spans}
    assert not [r for r in run.records("warning") if r.get("code") == "internal_error"]


def test_validate_warns_about_targets_in_modules_autoperf_uses(tmp_path):
    """``autoperf validate`` says which targets are in modules autoperf itself calls into, and only those."""
    (tmp_path / "app.py").write_text("def handle():\n    return 1\n")
    (tmp_path / "autoperf.yaml").write_text("targets:\n  - target: builtins:len\n  - target: os:getpid\n"
                                            "  - target: app:handle\n")
    proc = subprocess.run([sys.executable, "-m", "autoperf", "validate", "--import", "--config",
                           str(tmp_path / "autoperf.yaml")], cwd=tmp_path, env=clean_env(),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    warned = [line.split()[1] for line in proc.stdout.splitlines() if line.strip().startswith("!")]
    assert warned == ["builtins:len", "os:getpid"], proc.stdout
    assert "autoperf itself calls into builtins" in proc.stdout
