"""`autoperf suggest` over real runs: each rule fires on a program built to trigger it and stays quiet on
the look-alike built not to (real PostgreSQL for the queries, EXPLAIN and transactions; both readers)."""
from __future__ import annotations

import pytest

from tests.pgserver import create_fresh_db, pg_dsn
from tests.runs import Run

pytestmark = pytest.mark.postgres

QUERIES = '''
import asyncio, os

import asyncpg

DSN = os.environ["APP_DSN"]


async def lookup_unindexed(pool, i):         # a selective lookup, no index: index advice
    await pool.fetchrow("SELECT id FROM members_plain WHERE email = $1", f"user{i * 7919 % 200000}@x")


async def lookup_indexed(pool, i):           # the same lookup with an index: nothing
    await pool.fetchrow("SELECT id FROM members_indexed WHERE email = $1", f"user{i * 7919 % 200000}@x")


async def count_all(pool, i):                # reads the whole table on purpose: no index helps
    await pool.fetchval("SELECT count(*) FROM members_plain")


async def mostly_active(pool, i):            # a filter that keeps 90 % of the rows: no index helps
    await pool.fetchval("SELECT max(id) FROM members_plain WHERE active")


async def settings_read(pool, i):            # the same read in every flow: a cache candidate
    await pool.fetchval("SELECT value FROM settings WHERE key = $1", "motd")
    await pool.fetchval("SELECT value FROM settings WHERE key = $1", "motd")


async def volatile_reads(pool, i):           # repeated, but each answer is new: never a cache
    async with pool.acquire() as conn, conn.transaction():   # one transaction: no gather advice, however slow
        for _ in range(2):
            await conn.fetchval("SELECT now()")
            await conn.fetchval("SELECT random()")
            await conn.fetchval("SELECT pg_sleep(0)")


async def n_plus_one(pool, i):               # 6 lookups per flow: N+1 (and only N+1, not also a cache)
    for k in range(6):
        await pool.fetchval("SELECT value FROM settings WHERE key = $1 AND value IS NOT NULL", f"k{k}")


async def independent(pool, i):              # two independent reads, one after the other: gather advice
    await pool.fetchval("SELECT pg_sleep(0.008), 1 AS first")
    await pool.fetchval("SELECT pg_sleep(0.008), 2 AS second")


async def transfer(pool, i):                 # one transaction on one connection: never gather advice
    async with pool.acquire() as conn:
        async with conn.transaction():
            await conn.fetchval("SELECT pg_sleep(0.008), 3 AS debit")
            await conn.execute("UPDATE settings SET value = value WHERE key = 'motd'")
            await conn.fetchval("SELECT pg_sleep(0.008), 4 AS credit")


async def main():
    pool = await asyncpg.create_pool(DSN, min_size=2, max_size=4)
    async with pool.acquire() as conn:
        for table in ("members_plain", "members_indexed"):
            await conn.execute(f"CREATE TABLE {table} (id int, email text, active bool)")
            await conn.execute(f"INSERT INTO {table} SELECT g, 'user' || g || '@x', g % 10 <> 0 "
                               f"FROM generate_series(1, 200000) g")
        await conn.execute("CREATE INDEX ON members_indexed (email)")
        await conn.execute("CREATE TABLE settings (key text primary key, value text)")
        await conn.execute("INSERT INTO settings SELECT 'k' || g, 'v' FROM generate_series(0, 9) g")
        await conn.execute("INSERT INTO settings VALUES ('motd', 'hello')")
        await conn.execute("ANALYZE")
    for i in range(12):
        for flow in (lookup_unindexed, lookup_indexed, count_all, mostly_active, settings_read, volatile_reads,
                     n_plus_one, independent, transfer):
            await flow(pool, i)
    while not explained():                     # the background EXPLAINs of the slow reads
        await asyncio.sleep(0.05)
    await pool.close()


def explained():
    from autoperf.integrations.asyncpg import explain_tasks
    return not explain_tasks()


asyncio.run(main())
'''

FLOWS = ("lookup_unindexed", "lookup_indexed", "count_all", "mostly_active", "settings_read", "volatile_reads",
         "n_plus_one", "independent", "transfer")
QUERIES_CONFIG = "\n".join(["targets:"] + [f'  - {{target: "__main__:{f}", kind: flow, name: {f}}}' for f in FLOWS]) + """
integrations:
  asyncpg:
    explain: true
    explain_threshold_ms: 2
sampler: {enabled: false}
slo: {slow_query_ms: 5}
retain: {all: true}     # N+1, cache and gather advice read whole flows: the 1 % sample keeps none of 12
"""


@pytest.fixture(scope="module")
def query_run(tmp_path_factory):
    dsn, drop = create_fresh_db(pg_dsn())
    run = Run(tmp_path_factory.mktemp("queries"), QUERIES, QUERIES_CONFIG)
    try:
        run.start(env={"APP_DSN": dsn}, timeout=240)
    finally:
        drop()
    return run


def by_kind(items, kind):
    return [s for s in items if s["kind"] == kind]


def test_query_advice_fires_on_the_planted_problems_only(query_run):
    """Index advice for the selective unindexed lookup only (not the indexed one, the full count, the 90 %
    filter); a cache for the repeated read only (not now()/random()/pg_sleep, not the N+1's query, which gets
    N+1 advice alone); gather advice for the two independent reads, never for one transaction's statements."""
    items = query_run.suggest()
    index = by_kind(items, "index")
    assert [s["details"]["relation"] for s in index] == ["members_plain"], index
    assert index[0]["flow"] == "lookup_unindexed" and index[0]["details"]["rows_read"] >= 150_000
    assert index[0]["details"]["rows_returned"] <= 10 and "email" in index[0]["details"]["filter"]
    cache = by_kind(items, "cache")
    assert [s["details"]["statement"] for s in cache] == ["SELECT value FROM settings WHERE key = $1"], cache
    assert cache[0]["flow"] == "settings_read"
    n1 = by_kind(items, "n_plus_one")
    assert [s["flow"] for s in n1] == ["n_plus_one"]
    fingerprints = [s["details"]["fingerprint"] for s in items if "fingerprint" in s["details"]]
    assert len(fingerprints) == len(set(fingerprints)), "one finding per fingerprint"
    gather = by_kind(items, "concurrency")
    assert [s["flow"] for s in gather] == ["independent"], gather


LOOP = '''
import asyncio, time


def warm_cache():
    time.sleep(0.25)                      # START-UP BLOCK


async def command(i):
    await asyncio.sleep(0.01)
    if i == 3:
        time.sleep(0.25)                  # COMMAND BLOCK
    if i == 5:
        asyncio.get_running_loop().call_soon(time.sleep, 0.25)
        await asyncio.sleep(0.3)
    if i == 7:
        time.sleep(1.6)                   # LONG BLOCK (reported while ongoing, then at its end)


async def main():
    warm_cache()
    for i in range(8):
        await command(i)


asyncio.run(main())                       # THE RUN LINE
'''
LOOP_CONFIG = """
targets:
  - {target: "__main__:command", kind: flow, name: command}
loop: {blocking_threshold_ms: 100}
sampler: {enabled: false}
"""


def line(source, marker):
    return next(i for i, text in enumerate(source.splitlines(), 1) if marker in text)


@pytest.fixture(scope="module")
def loop_run(tmp_path_factory):
    run = Run(tmp_path_factory.mktemp("loop"), LOOP, LOOP_CONFIG)
    run.start()
    return run


def test_loop_blocks_are_counted_once_and_placed_where_they_happen(loop_run):
    """Four blocks: the start-up one is start-up advice (no "every concurrent user"); the command's lines and
    the time.sleep callback are named — never the asyncio.run line; the 1.6 s block, reported while ongoing
    and again at its end, counts once with its full duration in report and suggest."""
    assert len([r for r in loop_run.records("loop_blocked") if r.get("ongoing")]) == 1
    code, out = loop_run.cli("report", "--format", "json")
    import json
    blocked = json.loads(out)["loop_blocked"]
    assert blocked["count"] == 4, blocked
    where = {b["location"]: b for b in blocked["by_location"]}
    long_block = where[f"prog.py:{line(LOOP, 'LONG BLOCK')} in command"]
    assert long_block["count"] == 1 and long_block["total_ms"] >= 1600
    items = loop_run.suggest()
    run_line = f"prog.py:{line(LOOP, 'THE RUN LINE')}"
    assert not [s for s in items if run_line in s["title"]], items
    startup = by_kind(items, "startup_blocking")
    assert [s["details"]["location"] for s in startup] == [f"prog.py:{line(LOOP, 'START-UP BLOCK')} in warm_cache"]
    assert "every concurrent user" not in startup[0]["saving"]
    runtime = {s["details"]["location"] for s in by_kind(items, "loop_blocking")}
    assert runtime == {f"prog.py:{line(LOOP, 'COMMAND BLOCK')} in command", "callback time.sleep",
                       f"prog.py:{line(LOOP, 'LONG BLOCK')} in command"}
