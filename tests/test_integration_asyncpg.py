"""asyncpg integration against a real PostgreSQL: one db span per query on every path, never parameters."""
from __future__ import annotations

import asyncio
import io
import json
import uuid

import pytest

asyncpg = pytest.importorskip("asyncpg")

from autoperf import integrations, spans, testing  # noqa: E402
from autoperf.integrations import asyncpg as apg  # noqa: E402
from conftest import db_spans  # noqa: E402,F401  (the fixtures dsn and patch_pg are in conftest)

pytestmark = pytest.mark.usefixtures("autoperf_pipeline")

SECRET = "s3cr3t-" + uuid.uuid4().hex[:12]


def assert_no_secret(records):
    assert SECRET not in json.dumps(records, default=str)


async def one_span(call, statement, rows=None):
    """Run ``call()``; assert it produced exactly one db span with this statement (and rows)."""
    with testing.capture_records() as records:
        result = await call()
    found = db_spans(records)
    assert len(found) == 1, [(s["name"], s["attrs"].get("statement")) for s in found]
    attrs = found[0]["attrs"]
    assert attrs["statement"] == statement
    assert attrs["system"] == "postgresql" and len(attrs["fingerprint"]) == 16
    if rows is not None:
        assert attrs.get("rows") == rows, attrs
    assert_no_secret(records)
    return found[0], result


class TestQueryPaths:
    def test_connection_methods_record_once(self, dsn, patch_pg):
        """execute/executemany/fetch/fetchrow/fetchval/fetchmany each record exactly one span."""
        patch_pg()

        async def main():
            conn = await asyncpg.connect(dsn)
            try:
                await conn.execute("CREATE TEMP TABLE t (a int, b text)")
                span, status = await one_span(lambda: conn.execute("INSERT INTO t VALUES ($1, $2)", 1, SECRET),
                                              "INSERT INTO t VALUES ($1, $2)", rows=1)
                assert status == "INSERT 0 1" and span["name"] == "db.insert"
                assert span["attrs"]["operation"] == "INSERT"
                span, _ = await one_span(
                    lambda: conn.executemany("INSERT INTO t VALUES ($1, $2)", [(2, SECRET), (3, SECRET), (4, "x")]),
                    "INSERT INTO t VALUES ($1, $2)")
                assert span["attrs"]["batch"] == 3 and "rows" not in span["attrs"]
                span, rows = await one_span(lambda: conn.fetch("SELECT a FROM t WHERE b = $1 ORDER BY a", SECRET),
                                            "SELECT a FROM t WHERE b = $1 ORDER BY a", rows=3)
                assert [r["a"] for r in rows] == [1, 2, 3] and span["name"] == "db.select"
                _, row = await one_span(lambda: conn.fetchrow("SELECT a FROM t WHERE a = 4"),
                                        "SELECT a FROM t WHERE a = ?", rows=1)
                assert row["a"] == 4
                _, val = await one_span(lambda: conn.fetchval("SELECT count(*) FROM t WHERE b <> 'sekrit'"),
                                        "SELECT count(*) FROM t WHERE b <> ?", rows=1)
                assert val == 4
                if hasattr(conn, "fetchmany"):
                    _, got = await one_span(lambda: conn.fetchmany("SELECT $1::int + 1", [(1,), (2,)]),
                                            "SELECT $1::int + ?", rows=2)
                    assert [r[0] for r in got] == [2, 3]
                _, status = await one_span(lambda: conn.execute("UPDATE t SET b = 'y' WHERE a > 1"),
                                           "UPDATE t SET b = ? WHERE a > ?", rows=3)
                assert status == "UPDATE 3"
            finally:
                await conn.close()

        asyncio.run(main())

    def test_copy_paths_record_once(self, dsn, patch_pg):
        """copy_records_to_table, copy_to_table, copy_from_query and copy_from_table record one span each."""
        patch_pg()

        async def main():
            conn = await asyncpg.connect(dsn)
            try:
                await conn.execute("CREATE TEMP TABLE c (a int, b text)")
                _, status = await one_span(
                    lambda: conn.copy_records_to_table("c", records=[(1, SECRET), (2, SECRET), (3, "z")]),
                    'COPY "c" FROM STDIN (FORMAT binary)', rows=3)
                assert status == "COPY 3"
                data = io.BytesIO(f"4\t{SECRET}\n5\tq\n".encode())
                await one_span(lambda: conn.copy_to_table("c", source=data), 'COPY "c" FROM STDIN', rows=2)
                out = io.BytesIO()
                await one_span(lambda: conn.copy_from_query("SELECT * FROM c WHERE b = $1", SECRET, output=out),
                               "COPY (SELECT * FROM c WHERE b = $1) TO STDOUT", rows=3)
                assert out.getvalue().count(SECRET.encode()) == 3
                await one_span(lambda: conn.copy_from_table("c", output=io.BytesIO()), 'COPY "c" TO STDOUT', rows=5)
            finally:
                await conn.close()

        asyncio.run(main())

    def test_prepared_statements_record_once(self, dsn, patch_pg):
        """PreparedStatement fetch/fetchrow/fetchval/executemany record one span per call; prepare none."""
        patch_pg()

        async def main():
            conn = await asyncpg.connect(dsn)
            try:
                with testing.capture_records() as records:
                    ps = await conn.prepare("SELECT id FROM players WHERE mmr > $1 AND name <> $2 ORDER BY id")
                assert db_spans(records) == []
                stmt = "SELECT id FROM players WHERE mmr > $1 AND name <> $2 ORDER BY id"
                _, rows = await one_span(lambda: ps.fetch(15, SECRET), stmt, rows=5)
                assert len(rows) == 5
                await one_span(lambda: ps.fetchrow(15, SECRET), stmt, rows=1)
                _, val = await one_span(lambda: ps.fetchval(19, SECRET), stmt, rows=1)
                assert val == 20
                await conn.execute("CREATE TEMP TABLE pe (a text)")
                ins = await conn.prepare("INSERT INTO pe VALUES ($1)")
                span, _ = await one_span(lambda: ins.executemany([(SECRET,), ("b",)]), "INSERT INTO pe VALUES ($1)")
                assert span["attrs"]["batch"] == 2
                if hasattr(ins, "fetchmany"):
                    await one_span(lambda: ps.fetchmany([(19, SECRET), (18, SECRET)]), stmt, rows=3)
            finally:
                await conn.close()

        asyncio.run(main())

    def test_cursors_record_each_round_trip(self, dsn, patch_pg):
        """Cursor iteration and explicit cursors record one span per round-trip with the cursor's statement."""
        patch_pg()
        stmt = "SELECT id FROM players WHERE name <> $1 ORDER BY id"

        async def main():
            conn = await asyncpg.connect(dsn)
            try:
                with testing.capture_records() as records:
                    async with conn.transaction():
                        ids = [r["id"] async for r in conn.cursor(stmt, SECRET, prefetch=8)]
                assert ids == list(range(1, 21))
                found = db_spans(records)
                assert [s["attrs"]["statement"] for s in found] == ["BEGIN;"] + [stmt] * 3 + ["COMMIT;"]
                assert [s["attrs"]["rows"] for s in found[1:4]] == [8, 8, 4]
                assert_no_secret(records)

                with testing.capture_records() as records:
                    async with conn.transaction():
                        cur = await conn.cursor(stmt, SECRET)
                        assert [r["id"] for r in await cur.fetch(3)] == [1, 2, 3]
                        assert await cur.forward(2) == 2
                        assert (await cur.fetchrow())["id"] == 6
                found = [s for s in db_spans(records) if s["attrs"]["statement"] == stmt]
                assert len(found) == 4      # bind, fetch, forward, fetchrow
                assert [s["attrs"].get("rows") for s in found[1:]] == [3, 2, 1]
                assert_no_secret(records)
            finally:
                await conn.close()

        asyncio.run(main())

    def test_long_timers_made_by_queries_hold_no_flow(self, dsn, patch_pg):
        """asyncpg's statement-cache expiry and a pooled connection's idle timer (300 s by default) copy the
        context of the query that made them; they must not keep the flow and span current then alive."""
        patch_pg()

        async def main():
            pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
            try:
                with spans.span("leaderboard_command", "flow"):
                    async with pool.acquire() as conn:
                        await conn.fetchval("SELECT mmr FROM players WHERE name = $1", SECRET)
                        entries = list(conn._con._stmt_cache._entries.values())  # noqa: SLF001
                holder = pool._holders[0]  # noqa: SLF001
                timers = [e._cleanup_cb for e in entries] + [holder._inactive_callback]  # noqa: SLF001
                assert len(timers) == 2 and all(t is not None for t in timers)
                # what each timer's callback will run in: no autoperf span (nothing of ours at all)
                return [(t._context.run(spans.current), len(t._context)) for t in timers]  # noqa: SLF001
            finally:
                await pool.close()

        assert asyncio.run(main()) == [(None, 0), (None, 0)]

    def test_transactions_and_nesting_under_flow(self, dsn, patch_pg):
        """Queries inside a transaction and a flow are children of the current span, once each."""
        patch_pg()

        async def main():
            conn = await asyncpg.connect(dsn)
            try:
                with testing.capture_records() as records:
                    with spans.span("queue_command", "flow") as flow:
                        async with conn.transaction():
                            await conn.fetchval("SELECT mmr FROM players WHERE name = $1", SECRET)
                            await conn.execute("UPDATE players SET mmr = mmr WHERE name = $1", SECRET)
                found = db_spans(records)
                assert [s["name"] for s in found] == ["db.begin", "db.select", "db.update", "db.commit"]
                flow_id = f"{flow.span_id:016x}"
                assert all(s["parent_id"] == flow_id and s["flow_id"] == flow_id for s in found)
                assert all(s["flow_name"] == "queue_command" for s in found)
                assert_no_secret(records)
            finally:
                await conn.close()

        asyncio.run(main())


class TestErrors:
    def test_sqlstate_recorded_never_values(self, dsn, patch_pg):
        """A failing query records error type and SQLSTATE, never the values the server quotes back."""
        patch_pg()

        async def main():
            conn = await asyncpg.connect(dsn)
            try:
                with testing.capture_records() as records:
                    with pytest.raises(asyncpg.UndefinedTableError):
                        await conn.execute("SELECT * FROM no_such_table")
                    await conn.execute("INSERT INTO players (name, mmr) VALUES ($1, 1)", SECRET)
                    with pytest.raises(asyncpg.UniqueViolationError) as info:
                        await conn.execute("INSERT INTO players (name, mmr) VALUES ($1, 2)", SECRET)
                    assert SECRET in str(info.value.detail)   # the server does quote it back
                await conn.execute("DELETE FROM players WHERE name = $1", SECRET)
                return records
            finally:
                await conn.close()

        records = asyncio.run(main())
        bad = [s for s in db_spans(records) if s["status"] == "error"]
        assert [(s["error"], s["attrs"]["sqlstate"]) for s in bad] == [
            ("asyncpg.exceptions.UndefinedTableError", "42P01"),
            ("asyncpg.exceptions.UniqueViolationError", "23505")]
        assert all(s["level"] == "WARNING" for s in bad)
        assert_no_secret(records)


class TestThresholds:
    def test_slow_query_threshold_and_override(self, dsn, patch_pg):
        """A query slower than slow_query_ms is WARNING; a per-fingerprint override raises its bar."""
        from autoperf import sql

        slow = "SELECT pg_sleep(0.12)"
        patch_pg(slow_query_ms=50)

        async def run():
            conn = await asyncpg.connect(dsn)
            try:
                with testing.capture_records() as records:
                    await conn.execute(slow)
                    await conn.fetchval("SELECT 1")
                return db_spans(records)
            finally:
                await conn.close()

        slow_span, fast_span = asyncio.run(run())
        assert slow_span["level"] == "WARNING" and slow_span["threshold_ms"] == 50
        assert (fast_span["level"] == "WARNING") == (fast_span["duration_ms"] > 50)
        patch_pg(slow_query_ms=50, slow_query_overrides={sql.describe(slow)["fingerprint"]: 1000})
        slow_span, _ = asyncio.run(run())
        assert slow_span["threshold_ms"] == 1000
        assert slow_span["level"] == ("WARNING" if slow_span["duration_ms"] > 1000 else "DEBUG")


class TestPool:
    def test_pool_queries_acquire_wait_and_stats(self, dsn, patch_pg):
        """Pool queries record once; a caller waiting on an exhausted pool gets a wait span; pool_stats counts."""
        patch_pg()

        async def main():
            pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
            try:
                with testing.capture_records() as records:
                    assert await pool.fetchval("SELECT mmr FROM players WHERE name <> $1 ORDER BY id LIMIT 1",
                                               SECRET) == 1
                names = [s["name"] for s in records if s.get("type") == "span"]
                assert names.count("db.pool.acquire") <= 1      # a span only when it took > 1 ms
                selects = [s for s in db_spans(records)
                           if s["attrs"]["statement"].startswith("SELECT mmr")]
                assert len(selects) == 1 and selects[0]["attrs"]["rows"] == 1

                held = asyncio.Event()
                release = asyncio.Event()

                async def holder():
                    async with pool.acquire() as con:
                        await con.fetchval("SELECT 1")
                        held.set()
                        await release.wait()

                async def waiter():
                    with spans.span("waiting_flow", "flow"):
                        async with pool.acquire() as con:
                            return await con.fetchval("SELECT 2")

                with testing.capture_records() as records:
                    h = asyncio.create_task(holder())
                    await held.wait()
                    w = asyncio.create_task(waiter())
                    await asyncio.sleep(0.05)
                    stats = [p for p in apg.pool_stats() if p["max_size"] == 1]
                    assert stats and stats[0]["in_use"] == 1 and stats[0]["size"] == 1
                    assert stats[0]["waiters"] == 1 and stats[0]["idle"] == 0
                    assert stats[0]["utilisation_pct"] == 100.0
                    await asyncio.sleep(0.15)
                    release.set()
                    assert await w == 2
                    await h
                waits = [s for s in records if s.get("type") == "span" and s["name"] == "db.pool.acquire"]
                assert 1 <= len(waits) <= 2 and all(s["kind"] == "wait" for s in waits)
                waited = [s for s in waits if s["flow_name"] == "waiting_flow"]
                assert len(waited) == 1 and waited[0]["duration_ms"] >= 150
                after = [p for p in apg.pool_stats() if p["max_size"] == 1][0]
                assert after["in_use"] == 0 and after["waiters"] == 0 and after["idle"] == 1
                assert_no_secret(records)
            finally:
                await pool.close()
            assert not [p for p in apg.pool_stats() if p["pool"] == f"{id(pool):x}"]

        asyncio.run(main())


class TestPatchCycle:
    def test_patch_unpatch_patch_is_identical(self, dsn, patch_pg):
        """patch -> unpatch restores the exact originals; patching again records exactly once per call."""
        from asyncpg import connection, cursor, pool, prepared_stmt

        owners = {"asyncpg.connection": connection.Connection, "asyncpg.prepared_stmt": prepared_stmt.PreparedStatement,
                  "asyncpg.cursor": cursor, "asyncpg.pool": pool.Pool}

        def current():
            out = {}
            for mod, qualname, *_ in integrations.BY_NAME["asyncpg"].wraps:
                owner = __import__(mod, fromlist=["x"])
                for part in qualname.split(".")[:-1]:
                    owner = getattr(owner, part)
                out[(mod, qualname)] = vars(owner).get(qualname.split(".")[-1])
            return out

        assert owners
        originals = current()

        async def work():
            conn = await asyncpg.connect(dsn)
            try:
                with testing.capture_records() as records:
                    a = await conn.fetchval("SELECT mmr FROM players WHERE name = $1", "p7")
                    b = await conn.execute("SELECT 1")
                return (a, b), db_spans(records)
            finally:
                await conn.close()

        bare, recs = asyncio.run(work())
        assert bare == (7, "SELECT 1") and recs == []
        patch_pg()
        assert all(current()[k] is not originals[k] for k in originals if originals[k] is not None)
        first, recs = asyncio.run(work())
        assert first == bare and len(recs) == 2
        integrations.unpatch("asyncpg")
        assert current() == originals
        again, recs = asyncio.run(work())
        assert again == bare and recs == []
        patch_pg()
        third, recs = asyncio.run(work())
        assert third == bare and [s["attrs"]["statement"] for s in recs] == [
            "SELECT mmr FROM players WHERE name = $1", "SELECT ?"]
        assert not integrations.patch("asyncpg", asyncpg, {})   # refused twice


class TestExplain:
    def test_explain_once_per_fingerprint_on_another_connection(self, dsn, patch_pg):
        """A slow SELECT gets one EXPLAIN per fingerprint, run in the background on its own connection."""
        patch_pg(explain=True, explain_threshold_ms=0)
        stmt = "SELECT id, mmr FROM players WHERE name = $1 OR mmr > $2"

        async def main():
            conn = await asyncpg.connect(dsn)
            try:
                with testing.capture_records() as records:
                    await conn.fetch(stmt, SECRET, 18)
                    pending = apg.explain_tasks()
                    assert len(pending) == 1 and not any(t.done() for t in pending)  # caller not delayed
                    await conn.fetch(stmt, SECRET + "x", 3)
                    await conn.fetchrow(stmt, "p1", 1)
                    await conn.execute("UPDATE players SET mmr = mmr WHERE name = $1", SECRET)
                    await asyncio.gather(*apg.explain_tasks())
                    await conn.fetch(stmt, SECRET, 19)
                    assert not apg.explain_tasks()   # within the hour: not again
                return records, conn.get_server_pid()
            finally:
                await conn.close()

        records, caller_pid = asyncio.run(main())
        explains = [r for r in records if r.get("type") == "explain"]
        assert len(explains) == 1, explains
        ex = explains[0]
        assert ex["statement"] == stmt and len(ex["fingerprint"]) == 16
        assert ex["plan"][0]["Plan"]["Node Type"]
        assert ex["connection_pid"] != caller_pid
        assert len([s for s in db_spans(records) if s["attrs"]["statement"] == stmt]) == 4  # EXPLAIN is not a span
        assert not [r for r in records if r.get("type") == "warning" and r.get("code") == "explain_failed"]
        assert_no_secret(records)

    def test_explain_off_by_default_and_never_for_writes(self, dsn, patch_pg):
        """Without ``explain: true`` nothing is explained; writes are never explained."""
        async def main():
            conn = await asyncpg.connect(dsn)
            try:
                with testing.capture_records() as records:
                    await conn.fetch("SELECT pg_sleep(0.01), id FROM players WHERE id = $1", 1)
                    await conn.execute("UPDATE players SET mmr = mmr WHERE id = $1", 1)
                    await conn.fetch("WITH d AS (DELETE FROM players WHERE id = $1::int + 1000 RETURNING id) SELECT * FROM d", 1)
                    await asyncio.gather(*apg.explain_tasks())
                return records
            finally:
                await conn.close()

        patch_pg()
        assert not [r for r in asyncio.run(main()) if r.get("type") == "explain"]
        patch_pg(explain=True, explain_threshold_ms=0)
        explained = [r for r in asyncio.run(main()) if r.get("type") == "explain"]
        assert [r["statement"] for r in explained] == ["SELECT pg_sleep(?), id FROM players WHERE id = $1"]


def test_options_schema_through_config(tmp_path):
    """integrations.asyncpg options validate through autoperf.yaml with defaults applied."""
    from autoperf.config import ConfigError, load_config

    path = tmp_path / "autoperf.yaml"
    path.write_text("integrations:\n  asyncpg:\n    slow_query_ms: 120\n"
                    "    slow_query_overrides: {'0123456789abcdef': 5}\n    explain: true\n")
    opts = load_config(path).integration("asyncpg")
    assert opts["slow_query_ms"] == 120 and opts["slow_query_overrides"] == {"0123456789abcdef": 5.0}
    assert opts["explain"] is True and opts["statement_max_length"] == 200 and opts["enabled"] is True
    path.write_text("integrations:\n  asyncpg:\n    slow_query_ms: fast\n")
    with pytest.raises(ConfigError):
        load_config(path)
