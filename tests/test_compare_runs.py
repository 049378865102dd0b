"""`autoperf compare` over two real runs (real PostgreSQL): database time is compared per query, so fixing an
N+1 is an improvement of the flow, not a regression of "db.select"."""
from __future__ import annotations

import json

import pytest

from tests.pgserver import create_fresh_db, pg_dsn
from tests.runs import Run

pytestmark = pytest.mark.postgres

PROGRAM = """
    import asyncio, os, sys

    import asyncpg

    VARIANT = sys.argv[1]         # loop: an N+1 of indexed lookups; batch: the fix; noindex: the lookups, slower


    async def leaderboard(conn, ids):
        if VARIANT == "batch":    # one query for all the rows
            return await conn.fetch("SELECT id, name FROM players WHERE id = ANY($1::int[])", ids)
        return [await conn.fetchrow("SELECT id, name FROM players WHERE id = $1", i) for i in ids]


    async def main():
        conn = await asyncpg.connect(os.environ["APP_DSN"])
        key = "" if VARIANT == "noindex" else " PRIMARY KEY"
        await conn.execute(f"CREATE TABLE players (id int{key}, name text)")
        await conn.execute("INSERT INTO players SELECT g, 'p' || g FROM generate_series(1, 20000) g")
        await conn.execute("ANALYZE players")
        per_flow = 5 if VARIANT == "noindex" else 150
        for k in range(40):
            await leaderboard(conn, list(range(1 + k * 300, 1 + k * 300 + 2 * per_flow, 2)))
        await conn.close()


    asyncio.run(main())
"""
CONFIG = """
    targets:
      - {target: "__main__:leaderboard", kind: flow, name: leaderboard}
    sampler: {enabled: false}
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = {}
    for variant in ("loop", "batch", "noindex"):
        dsn, drop = create_fresh_db(pg_dsn())
        try:
            out[variant] = Run(tmp_path_factory.mktemp(variant), PROGRAM, CONFIG)
            out[variant].start(variant, env={"APP_DSN": dsn})
        finally:
            drop()
    return out


def compare(a, b):
    code, out = a.cli("compare", str(a.log_dir), str(b.log_dir), "--format", "json", engine=None)
    return code, json.loads(out)


def test_removing_an_n_plus_one_is_no_db_regression(runs):
    """150 lookups per flow become one `= ANY($1)` query: no regression (exit 0), the flow improved; nothing is
    compared by SQL verb, each query exists on one side only, and the lookup is listed as gone."""
    code, res = compare(runs["loop"], runs["batch"])
    assert code == 0 and res["regressions"] == [], res["regressions"]
    flow = next(f for f in res["flows"] if f["name"] == "leaderboard")
    assert flow["verdict"] == "improvement" and flow["p50_change_pct"] < -50
    assert not [o for o in res["operations"] if o["kind"] == "db"]
    assert not [q for q in res["queries"] if "FROM players WHERE id" in q["name"]]     # on one side each
    assert [q["statement"] for q in res["gone_queries"]] == ["SELECT id, name FROM players WHERE id = $1"]


def test_the_same_query_slower_is_a_regression_of_that_query(runs):
    """The lookup without its index: flagged as a regression of that statement (scope "query")."""
    code, res = compare(runs["loop"], runs["noindex"])
    assert code == 1
    (query,) = [r for r in res["regressions"] if r["scope"] == "query"]
    assert query["name"] == "SELECT id, name FROM players WHERE id = $1" and query["regressed_p50"]
    assert query["base_n"] == 6000 and query["cur_n"] == 200
