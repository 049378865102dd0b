"""asyncpg pool waits against a real PostgreSQL: ``db.pool.acquire`` and ``db.pool.reset`` are
``wait`` spans under the caller's span (every one with ``pool_wait_span_ms: 0``; by default only
those over 1 ms, and failures), each counted in ``wait_stats()`` and the resource record; the
reset query is not a query span; and neither wait makes a Span object."""
from __future__ import annotations

import asyncio
import threading

import pytest

asyncpg = pytest.importorskip("asyncpg")

from autoperf import spans, testing  # noqa: E402
from autoperf.integrations import asyncpg as apg  # noqa: E402
from conftest import db_spans  # noqa: E402  (the fixtures dsn and patch_pg are in conftest)

pytestmark = pytest.mark.usefixtures("autoperf_pipeline")

WAIT_ATTRS = {"system": "postgresql"}


def waits(records, name):
    return [r for r in records if r.get("type") == "span" and r["name"] == name]


def hex_id(span):
    return f"{span.span_id:016x}"


def terminate_backend_blocking(dsn, pid):
    """Terminate backend ``pid`` and wait until it is gone, from another thread, blocking this loop
    meanwhile: the connection's own protocol has not read the termination yet when we return."""
    async def kill():
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("SELECT pg_terminate_backend($1)", pid)
            for _ in range(500):
                if not await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid):
                    return
                await asyncio.sleep(0.01)
            raise AssertionError(f"backend {pid} still alive")
        finally:
            await conn.close()

    errors = []

    def run():
        try:
            asyncio.run(kill())
        except BaseException as exc:  # noqa: BLE001 - reported below, in the test's thread
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert not errors, errors


class TestWaitSpans:
    def test_acquire_and_reset_once_per_call_under_the_callers_flow(self, dsn, patch_pg):
        """Each acquire and release records one wait span under the caller's flow, in order; the reset query is none."""
        patch_pg(pool_wait_span_ms=0)

        async def main():
            pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
            try:
                with testing.capture_records() as records:
                    with spans.span("ladder_command", "flow") as flow:
                        async with pool.acquire() as conn:
                            await conn.fetchval("SELECT 1")
                        conn = await pool.acquire()
                        await conn.execute("LISTEN autoperf_pool_test")   # the reset query UNLISTENs it
                        await pool.release(conn)
                return records, hex_id(flow)
            finally:
                await pool.close()

        records, flow_id = asyncio.run(main())
        found = [r for r in records if r["type"] == "span" and r["kind"] != "flow"]
        assert [(s["name"], s["kind"]) for s in found] == [
            ("db.pool.acquire", "wait"), ("db.select", "db"), ("db.pool.reset", "wait"),
            ("db.pool.acquire", "wait"), ("db.listen", "db"), ("db.pool.reset", "wait")]
        for s in found:
            assert s["parent_id"] == flow_id and s["flow_id"] == flow_id and s["flow_name"] == "ladder_command"
        for s in waits(records, "db.pool.acquire") + waits(records, "db.pool.reset"):
            assert s["attrs"] == WAIT_ATTRS and s["status"] == "success" and s["error"] is None
            assert s["duration_ms"] > 0
        (complete,) = [r for r in records if r["type"] == "flow_complete"]
        assert [c["name"] for c in complete["checkpoints"]] == [s["name"] for s in found]

    def test_acquire_timeout_and_cancel_on_an_exhausted_pool(self, dsn, patch_pg):
        """An acquire that times out on an exhausted pool records an error, a cancelled one ``cancelled``."""
        patch_pg()

        async def main():
            pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
            try:
                held = await pool.acquire()
                with testing.capture_records() as records:
                    with spans.span("queue_command", "flow") as flow:
                        with pytest.raises(asyncio.TimeoutError):
                            await pool.acquire(timeout=0.1)
                        waiter = asyncio.ensure_future(pool.acquire())
                        await asyncio.sleep(0.05)
                        waiter.cancel()
                        with pytest.raises(asyncio.CancelledError):
                            await waiter
                await pool.release(held)
                assert await pool.fetchval("SELECT 3") == 3     # the pool still works
                return records, hex_id(flow)
            finally:
                await pool.close()

        records, flow_id = asyncio.run(main())
        timed_out, cancelled = waits(records, "db.pool.acquire")
        assert (timed_out["status"], timed_out["error"]) == ("error", "TimeoutError")
        assert timed_out["duration_ms"] >= 90 and timed_out["level"] in ("WARNING", "ERROR")
        assert (cancelled["status"], cancelled["error"]) == ("cancelled", "asyncio.exceptions.CancelledError")
        for s in (timed_out, cancelled):
            assert s["kind"] == "wait" and s["attrs"] == WAIT_ATTRS and s["parent_id"] == flow_id

    def test_a_failing_reset_records_its_error_and_asyncpg_behaves_as_without_us(self, dsn, patch_pg):
        """A reset that fails (backend terminated) records its error; release raises and recovers as in bare asyncpg."""
        async def scenario():
            pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
            try:
                conn = await pool.acquire()
                pid = conn.get_server_pid()
                with testing.capture_records() as records:
                    with spans.span("report_command", "flow") as flow:
                        terminate_backend_blocking(dsn, pid)
                        with pytest.raises(Exception) as raised:
                            await pool.release(conn)
                after = await pool.fetchval("SELECT pg_backend_pid()")
                return raised.type, after != pid, records, hex_id(flow)
            finally:
                await pool.close()

        bare_type, bare_reconnected, bare_records, _ = asyncio.run(scenario())
        assert not waits(bare_records, "db.pool.reset")
        patch_pg()
        raised_type, reconnected, records, flow_id = asyncio.run(scenario())
        assert raised_type is bare_type and issubclass(raised_type, asyncpg.PostgresConnectionError)
        assert reconnected and bare_reconnected
        (reset,) = waits(records, "db.pool.reset")
        assert reset["status"] == "error" and reset["error"] == f"{raised_type.__module__}.{raised_type.__qualname__}"
        assert reset["kind"] == "wait" and reset["attrs"] == WAIT_ATTRS and reset["parent_id"] == flow_id
        # the failed reset query is no query span either (the helper thread's queries are roots)
        assert not [s for s in db_spans(records) if s["flow_id"] == flow_id]

    def test_acquire_and_release_make_no_span_object(self, dsn, patch_pg, monkeypatch):
        """The acquire and reset waits are recorded without making a Span object (one tuple each)."""
        patch_pg(pool_wait_span_ms=0)
        made = []
        real_init = spans.Span.__init__

        def counting_init(self, name, *args, **kwargs):
            made.append(name)
            real_init(self, name, *args, **kwargs)

        async def main():
            pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
            try:
                with testing.capture_records() as records:
                    with spans.span("profile_command", "flow"):
                        monkeypatch.setattr(spans.Span, "__init__", counting_init)
                        conn = await pool.acquire()
                        acquired = [n for n in made if n.startswith("db.")]
                        await conn.fetchval("SELECT $1::int", 1)
                        await pool.release(conn)
                        monkeypatch.undo()
                released = [n for n in made if n.startswith("db.")]
                return records, acquired, released
            finally:
                await pool.close()

        records, acquired, released = asyncio.run(main())
        assert acquired == [] and released == []
        assert len(waits(records, "db.pool.acquire")) == 1 and len(waits(records, "db.pool.reset")) == 1

    def test_queries_the_pool_runs_inside_acquire_hang_under_the_callers_span(self, dsn, patch_pg):
        """A pool ``setup`` callback's query (run inside acquire) is a child of the caller's span, not of the acquire wait."""
        patch_pg(pool_wait_span_ms=0)

        async def setup(conn):
            await conn.fetchval("SELECT 'setup'")

        async def main():
            pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1, setup=setup)
            try:
                with testing.capture_records() as records:
                    with spans.span("queue_command", "flow") as flow:
                        async with pool.acquire():
                            pass
                return records, hex_id(flow)
            finally:
                await pool.close()

        records, flow_id = asyncio.run(main())
        (query,) = db_spans(records)
        (acquire,) = waits(records, "db.pool.acquire")
        assert query["attrs"]["statement"] == "SELECT ?"
        assert query["parent_id"] == flow_id and acquire["parent_id"] == flow_id


class TestWaitCounters:
    def test_by_default_only_waits_over_a_millisecond_are_spans_and_every_wait_is_counted(self, dsn, patch_pg):
        """Default ``pool_wait_span_ms`` (1): a free connection's acquire and a reset are counted, not recorded;
        an acquire that waits on an exhausted pool is a span; ``wait_stats()`` covers all, per interval."""
        patch_pg()
        apg.wait_stats()                          # start a fresh interval

        async def main():
            pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
            try:
                await pool.fetchval("SELECT 1")   # warm: the connection's first reset is not in the test
                apg.wait_stats()
                with testing.capture_records() as records:
                    with spans.span("queue_command", "flow") as flow:
                        for _ in range(20):
                            async with pool.acquire() as conn:
                                await conn.fetchval("SELECT 1")
                        held = await pool.acquire()
                        waiter = asyncio.ensure_future(pool.acquire())
                        await asyncio.sleep(0.05)
                        await pool.release(held)
                        await pool.release(await waiter)
                first, second = apg.wait_stats(), apg.wait_stats()
                return records, hex_id(flow), first, second
            finally:
                await pool.close()

        records, flow_id, stats, empty = asyncio.run(main())
        acquires, resets = waits(records, "db.pool.acquire"), waits(records, "db.pool.reset")
        slow = [s for s in acquires if s["duration_ms"] >= 45]
        assert len(slow) == 1 and slow[0]["parent_id"] == flow_id and slow[0]["kind"] == "wait"
        # the other 21 acquires and 22 resets took a few µs / one round trip: nearly none is a span
        assert len(acquires) + len(resets) < 10, [(s["name"], s["duration_ms"]) for s in acquires + resets]
        assert all(s["duration_ms"] >= 1.0 for s in acquires + resets)
        assert (stats["acquires"], stats["resets"]) == (22, 22)
        assert stats["wait_spans"] == len(acquires) + len(resets)
        assert stats["acquire_wait_max_ms"] >= 45 and stats["acquire_wait_ms"] >= stats["acquire_wait_max_ms"]
        assert 0 < stats["reset_max_ms"] <= stats["reset_ms"]
        assert empty == {"acquires": 0, "acquire_wait_ms": 0.0, "acquire_wait_max_ms": 0.0, "resets": 0,
                         "reset_ms": 0.0, "reset_max_ms": 0.0, "wait_spans": 0}

    def test_a_failed_wait_is_a_span_however_short(self, dsn, patch_pg):
        """A reset that fails is recorded even under the span threshold, and counted once."""
        patch_pg(pool_wait_span_ms=10_000)

        async def main():
            pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
            try:
                conn = await pool.acquire()
                terminate_backend_blocking(dsn, conn.get_server_pid())
                apg.wait_stats()
                with testing.capture_records() as records:
                    with pytest.raises(Exception):
                        await pool.release(conn)
                return records, apg.wait_stats()
            finally:
                await pool.close()

        records, stats = asyncio.run(main())
        (reset,) = waits(records, "db.pool.reset")
        assert reset["status"] == "error"
        assert (stats["resets"], stats["wait_spans"]) == (1, 1)
