"""Background work a flow leaves running is not the flow's (issue 16, item 1): a span that starts after
its flow ended is a root of its own, linked to that flow (``attrs.link_flow_id``); a ``cycle`` is
always a root; no flow statistic or suggestion counts what came after the flow. Real runs, real PostgreSQL."""
from __future__ import annotations

import datetime as dt

import pytest

from tests.runs import Run

try:
    from tests import pgserver as pgs
except ImportError:  # pragma: no cover - tests/ on sys.path
    import pgserver as pgs

pytestmark = pytest.mark.postgres

PROGRAM = """
    import asyncio, sys, asyncpg
    async def tick(conn):                       # kind: cycle
        await conn.fetchval("SELECT 2")
    async def loop(conn, turns):
        for _ in range(turns):
            await tick(conn)
            for i in range(4):                  # outside the cycle, long after on_ready ended
                await conn.fetchval("SELECT $1::int", i)
            await asyncio.sleep(0.1)
    async def on_ready(conn):                   # kind: flow, an event handler that starts a loop
        await conn.fetchval("SELECT 0")
        return asyncio.get_running_loop().create_task(loop(conn, int(sys.argv[2])))
    async def main():
        conn = await asyncpg.connect(sys.argv[1])
        await (await on_ready(conn))
        await conn.close()
    asyncio.run(main())
"""

CONFIG = """
    targets:
      - target: __main__:on_ready
        kind: flow
      - target: __main__:tick
        kind: cycle
    sampler: {enabled: false}
    retain: {all: true}                         # every span record, to check each one
"""


def _ts(rec):
    return dt.datetime.fromisoformat(rec["timestamp"].replace("Z", "+00:00"))


def test_work_a_flow_leaves_running_is_not_the_flows(tmp_path):
    """An event handler starts a loop that runs a ``cycle`` target and queries every turn: the
    handler's flow keeps only its own query; each cycle is a root flow with its own record and its
    query, linked to the handler's flow; the loop's other queries are roots linked the same way;
    ``suggest`` finds no N+1 in the handler."""
    run = Run(tmp_path, PROGRAM, CONFIG)
    run.start(pgs.pg_dsn(), "6")
    flows = {r["flow_name"]: r for r in run.records("flow_complete") if r["flow_kind"] == "flow"}
    ready = flows["__main__.on_ready"]
    spans = run.records("span")
    own = [r for r in spans if r["flow_id"] == ready["flow_id"] and r["span_id"] != ready["flow_id"]]
    assert [r["attrs"]["statement"] for r in own] == ["SELECT ?"], own
    assert [c["name"] for c in ready["checkpoints"]] == ["db.select"]

    cycles = [r for r in run.records("flow_complete") if r["flow_kind"] == "cycle"]
    assert len(cycles) == 6
    for cycle in cycles:
        assert cycle["metadata"]["link_flow_id"] == ready["flow_id"]
        assert [c["name"] for c in cycle["checkpoints"]] == ["db.select"]
    cycle_spans = [r for r in spans if r["kind"] == "cycle"]
    assert len(cycle_spans) == 6 and all(r["parent_id"] is None for r in cycle_spans)

    loose = [r for r in spans if r["kind"] == "db" and r["attrs"]["statement"] == "SELECT $1::int"]
    assert len(loose) == 24
    for rec in loose:
        assert rec["parent_id"] is None and rec["flow_id"] == rec["span_id"]
        assert rec["attrs"]["link_flow_id"] == ready["flow_id"]
    end = _ts(ready) + dt.timedelta(milliseconds=ready["duration_ms"])
    assert all(_ts(r) <= end for r in own)

    about_queries = [f for f in run.suggest() if f["kind"] in ("n_plus_one", "cache", "concurrency", "index")]
    assert "on_ready" not in repr(about_queries), about_queries
