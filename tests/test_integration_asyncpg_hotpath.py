"""asyncpg's hot path (``Connection._execute``: every fetch*/execute-with-args) against a real
PostgreSQL: the lean wrapper records what a full span would, failures and cancellations included."""
from __future__ import annotations

import asyncio
import inspect

import pytest

asyncpg = pytest.importorskip("asyncpg")

from autoperf import spans, testing  # noqa: E402
from autoperf.integrations import asyncpg as apg  # noqa: E402
from conftest import db_spans  # noqa: E402  (the fixtures dsn and patch_pg are in conftest)

pytestmark = pytest.mark.usefixtures("autoperf_pipeline")


def run(dsn, body):
    async def main():
        conn = await asyncpg.connect(dsn)
        try:
            with testing.capture_records() as records:
                await body(conn)
            return records
        finally:
            await conn.close()
    return asyncio.run(main())


def test_the_lean_wrapper_is_the_one_patched(patch_pg):
    """With asyncpg's own signature the hand-written wrapper is used (not the generic one)."""
    patch_pg()
    wrapper = asyncpg.connection.Connection._execute
    assert wrapper.__code__.co_name == "_execute"
    assert str(inspect.signature(wrapper)) == apg._EXECUTE_SIGNATURE


def test_failures_and_cancellation_on_the_fetch_path(dsn, patch_pg):
    """A failing fetch records error type and SQLSTATE; a cancelled one is ``cancelled``."""
    patch_pg()

    async def body(conn):
        with pytest.raises(asyncpg.UndefinedTableError):
            await conn.fetchval("SELECT id FROM no_such_table WHERE id = $1", 1)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(conn.fetchval("SELECT pg_sleep($1)", 5.0), 0.2)

    found = db_spans(run(dsn, body))
    assert [(s["status"], s["error"], s["attrs"].get("sqlstate")) for s in found] == [
        ("error", "asyncpg.exceptions.UndefinedTableError", "42P01"),
        ("cancelled", "asyncio.exceptions.CancelledError", None)]
    assert found[1]["duration_ms"] >= 150


def test_queries_are_the_flows_checkpoints(dsn, patch_pg):
    """Fetches in a flow are its children and its checkpoints, in order, with their durations."""
    patch_pg()

    async def body(conn):
        with spans.span("profile_command", "flow") as flow:
            await conn.fetchval("SELECT $1::int", 1)
            await conn.fetch("SELECT g FROM generate_series(1, $1) g", 3)
            await conn.fetchrow("SELECT $1::text", "x")
        body.flow_id = f"{flow.span_id:016x}"

    records = run(dsn, body)
    found = db_spans(records)
    assert [(s["name"], s["attrs"]["rows"]) for s in found] == [("db.select", 1), ("db.select", 3), ("db.select", 1)]
    assert all(s["parent_id"] == body.flow_id and s["flow_name"] == "profile_command" for s in found)
    (complete,) = [r for r in records if r["type"] == "flow_complete"]
    assert [(c["name"], c["kind"], c["status"]) for c in complete["checkpoints"]] == [("db.select", "db", "success")] * 3
    assert [c["duration_ms"] for c in complete["checkpoints"]] == [s["duration_ms"] for s in found]
    offsets = [c["offset_ms"] for c in complete["checkpoints"]]
    assert offsets == sorted(offsets)


def test_records_never_share_their_attrs(dsn, patch_pg):
    """Each record has its own attrs dict: editing one (a processor may) changes no other."""
    patch_pg()

    async def body(conn):
        await conn.fetchval("SELECT $1::int", 1)

    first = db_spans(run(dsn, body))[0]
    first["attrs"]["statement"] = "edited"
    first["attrs"]["rows"] = -1
    second = db_spans(run(dsn, body))[0]
    assert second["attrs"]["statement"] == "SELECT $1::int" and second["attrs"]["rows"] == 1


def test_another_signature_gets_the_generic_wrapper(dsn):
    """An ``_execute`` with other parameters is still recorded once, by the generic wrapper."""
    real = asyncpg.connection.Connection._execute

    async def other(self, query, args, limit, timeout, **kwargs):
        return await real(self, query, args, limit, timeout, **kwargs)

    wrapped = apg._execute_factory(other)
    assert wrapped.__code__.co_name == "wrapper"

    async def body(conn):
        assert await wrapped(conn, "SELECT $1::int + 1", (41,), 1, None) == [(42,)]

    (span,) = db_spans(run(dsn, body))
    assert span["attrs"]["statement"] == "SELECT $1::int + ?" and span["attrs"]["rows"] == 1
