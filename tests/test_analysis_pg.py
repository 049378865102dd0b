"""iter_records_from_pg against the real PostgreSQL at 127.0.0.1:5432 (fresh schema per test)."""
import argparse
import asyncio
import datetime as dt
import json
import uuid

import orjson
import pytest

from autoperf.analysis import cli, synth
from autoperf.analysis.aggregate import aggregate
from autoperf.analysis.reader import iter_records_from_pg

BASE_DSN = "postgresql://postgres@127.0.0.1:5432/test"
pytestmark = pytest.mark.postgres


def _run(coro):
    return asyncio.run(coro)


@pytest.fixture
def schema():
    asyncpg = pytest.importorskip("asyncpg")
    name = "ap_analysis_" + uuid.uuid4().hex[:10]

    async def setup():
        conn = await asyncpg.connect(BASE_DSN, timeout=3)
        try:
            await conn.execute(f"CREATE SCHEMA {name}")
            await conn.execute(f"CREATE TABLE {name}.performance_metrics (id bigserial, "
                               f"timestamp timestamptz NOT NULL, record jsonb NOT NULL)")
        finally:
            await conn.close()

    try:
        _run(setup())
    except (OSError, asyncio.TimeoutError, asyncpg.PostgresError) as e:
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 not usable: {type(e).__name__}: {e}")
    yield name

    async def teardown():
        conn = await asyncpg.connect(BASE_DSN)
        try:
            await conn.execute(f"DROP SCHEMA {name} CASCADE")
        finally:
            await conn.close()
    _run(teardown())


def insert(schema, recs):
    import asyncpg

    async def go():
        conn = await asyncpg.connect(BASE_DSN)
        try:
            rows = [(dt.datetime.fromisoformat(r["timestamp"].replace("Z", "+00:00")), orjson.dumps(r).decode())
                    for r in recs]
            await conn.executemany(f"INSERT INTO {schema}.performance_metrics (timestamp, record) "
                                   f"VALUES ($1, $2::jsonb)", rows)
        finally:
            await conn.close()
    _run(go())


def day_records(day, n, dur):
    recs = []
    for i in range(n):
        recs += synth.flow("queue_command", day + dt.timedelta(minutes=i), dur + i,
                           [("db.fetch", "db", 5.0, synth.db_attrs("SELECT 1", "fp"))])
    return recs


def test_pg_reader_streams_and_filters(schema):
    d1, d2 = dt.datetime(2025, 1, 19), dt.datetime(2025, 1, 20)
    recs = day_records(d1, 50, 100.0) + day_records(d2, 30, 200.0)
    insert(schema, recs)
    src = iter_records_from_pg(BASE_DSN, table=f"{schema}.performance_metrics", batch_size=7)
    got = list(src)
    assert len(got) == len(recs) and src.records == len(recs)
    assert got == sorted(got, key=lambda r: r["timestamp"]) and isinstance(got[0]["attrs"], dict)
    src = iter_records_from_pg(BASE_DSN, since=d2, until=d2 + dt.timedelta(days=1),
                               table=f"{schema}.performance_metrics")
    r = aggregate(src)
    assert r["totals"]["commands"] == 30
    assert r["commands"][0]["min_ms"] == 200.0 and r["commands"][0]["max_ms"] == 229.0
    # same answer as from the records directly: the analysis does not care about the source
    assert r["commands"] == aggregate([x for x in recs if x["timestamp"] >= "2025-01-20"])["commands"]
    # search_path through server settings works too (the default table name)
    src = iter_records_from_pg(BASE_DSN, since="2025-01-19T00:10:00Z", until="2025-01-19T00:20:00Z",
                               server_settings={"search_path": schema})
    assert sum(1 for x in src if x["type"] == "flow_complete") == 10


def test_pg_reader_early_close_and_bad_table(schema):
    insert(schema, day_records(dt.datetime(2025, 1, 20), 20, 10.0))
    it = iter(iter_records_from_pg(BASE_DSN, table=f"{schema}.performance_metrics", batch_size=3))
    assert next(it)["type"] == "span"
    it.close()                                  # cursor, transaction and connection released
    with pytest.raises(ValueError):
        iter_records_from_pg(BASE_DSN, table="x; DROP TABLE y")


def test_pg_unreachable_message_hides_dsn():
    src = iter_records_from_pg("postgresql://secretuser:hunter2@127.0.0.1:1/nodb")
    with pytest.raises(ConnectionError) as e:
        list(src)
    assert "hunter2" not in str(e.value) and "secretuser" not in str(e.value)


def test_cli_report_from_dsn(schema, capsys):
    insert(schema, day_records(dt.datetime(2025, 1, 20), 40, 50.0))
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command"))
    dsn = f"{BASE_DSN}?search_path={schema}"
    args = parser.parse_args(["report", "--dsn", dsn, "--format", "json", "--day", "2025-01-20"])
    assert args.handler(args) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["totals"]["commands"] == 40 and r["source"]["source"] == "postgresql"
    args = parser.parse_args(["check", "--dsn", dsn, "--json"])
    assert args.handler(args) == 0
    out = capsys.readouterr().out
    assert json.loads(out)["ok"] is True and "postgres@" not in out


def test_pg_reader_over_the_store_schema(schema):
    """Records written by the store helper (its migrations, partitions, COPY path) read back unchanged."""
    db = pytest.importorskip("autoperf.store.db")
    import asyncpg
    recs = day_records(dt.datetime(2025, 1, 19, 23, 50), 30, 10.0)   # crosses midnight: two partitions

    async def load():
        conn = await asyncpg.connect(BASE_DSN, server_settings={"search_path": schema})
        try:
            await conn.execute(f"DROP TABLE {schema}.performance_metrics")
            await db.migrate(conn)
            await db.prepare_connection(conn)
            return await db.insert_rows(conn, [db.record_to_row(r) for r in recs], set())
        finally:
            await conn.close()
    assert _run(load()) == len(recs)
    src = iter_records_from_pg(BASE_DSN, server_settings={"search_path": schema})
    got = list(src)
    assert len(got) == len(recs)
    assert aggregate(got)["commands"] == aggregate(recs)["commands"]
    src = iter_records_from_pg(BASE_DSN, since="2025-01-20", server_settings={"search_path": schema})
    assert sum(1 for r in src if r["type"] == "flow_complete") == 20
