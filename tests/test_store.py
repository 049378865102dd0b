"""PostgreSQL store: migrations, sink, idempotent replay, outage + spill, rollup, CLI (real PostgreSQL)."""
from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import glob
import math
import os
import random
import time

import asyncpg
import orjson
import pytest

try:
    from tests import pgserver as pgs
except ImportError:  # tests/ on sys.path (rootdir-less invocation)
    import pgserver as pgs

from autoperf.store import db, spill, start_from_config
from autoperf.store.sink import PostgresSink

pytestmark = pytest.mark.postgres
pg_db = pgs.fresh_db_fixture()


def q(dsn, sql, *args):
    """Run one query on a short-lived connection and return all rows."""
    async def run():
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetch(sql, *args)
        finally:
            await conn.close()
    return asyncio.run(run())


def span(i, day="2025-01-20", flow="queue_command", name="db.fetch", dur=None, **extra):
    """A span record like the pipeline writes."""
    rec = {
        "timestamp": f"{day}T15:30:{i % 60:02d}.{i % 1000:03d}Z", "level": "INFO", "type": "span", "pid": 4242,
        "name": name, "kind": "db", "span_id": f"{i:016x}", "parent_id": "00000000000000ff",
        "flow_id": "00000000000000ff", "flow_name": flow, "duration_ms": float(i % 97) + 0.5 if dur is None else dur,
        "status": "success", "error": None, "attrs": {"statement": "SELECT 1", "rows": i},
    }
    rec.update(extra)
    return rec


def wait_rows(dsn, n, timeout=30.0):
    """Poll until performance_metrics holds n rows; return the last count."""
    deadline = time.monotonic() + timeout
    count = -1
    while time.monotonic() < deadline:
        try:
            count = q(dsn, "SELECT count(*) FROM performance_metrics")[0][0]
        except asyncpg.UndefinedTableError:  # the sink has not connected (and migrated) yet
            count = 0
        if count >= n:
            return count
        time.sleep(0.1)
    return count


def test_migrations_idempotent(pg_db):
    """Applying the migrations twice creates the schema once and records each version once."""
    async def run():
        conn = await asyncpg.connect(pg_db)
        try:
            first = await db.migrate(conn)
            second = await db.migrate(conn)
            versions = await db.applied_versions(conn)
            relkind = await conn.fetchval("SELECT relkind::text FROM pg_class WHERE relname = 'performance_metrics'")
            idx = {r[0] for r in await conn.fetch(
                "SELECT indexname FROM pg_indexes WHERE tablename = 'performance_metrics'")}
            pk = await conn.fetchval(
                "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'performance_metrics'::regclass "
                "AND contype = 'p'")
            types = dict(await conn.fetch(
                "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
                "WHERE attrelid = 'performance_metrics'::regclass AND attname IN ('record', 'metadata')"))
            return first, second, versions, relkind, idx, pk, types
        finally:
            await conn.close()

    first, second, versions, relkind, idx, pk, types = asyncio.run(run())
    assert first == [1, 2] and second == [] and versions == [1, 2]
    assert relkind == "p"  # declaratively partitioned
    assert idx == {"performance_metrics_pkey"}   # one btree: uniqueness and time order
    assert pk == 'PRIMARY KEY ("timestamp", id)'
    assert types == {"record": "text", "metadata": "jsonb"}


def test_record_id_rules():
    """Spans use span_id, records with an id use it, others a blake2b-128 hash independent of key order."""
    assert db.record_id({"type": "span", "span_id": "abcd"}) == "abcd"
    assert db.record_id({"type": "resource", "id": 7}) == "7"
    a = {"type": "resource", "timestamp": "2025-01-20T00:00:00.000Z", "rss_mb": 12.5, "pid": 1}
    b = dict(reversed(list(a.items())))
    assert db.record_id(a) == db.record_id(b)
    assert len(db.record_id(a)) == 32 and int(db.record_id(a), 16) >= 0
    assert db.record_id(a) != db.record_id(dict(a, rss_mb=12.6))


def test_record_to_row_mapping():
    """Timestamps are normalised to UTC, bad numbers become NULL, NUL characters never reach PostgreSQL."""
    row = dict(zip(db.COLUMNS, db.record_to_row({
        "type": "span", "span_id": "ab", "timestamp": "2025-01-20T23:30:00.000-02:00", "name": "x\x00y",
        "duration_ms": "slow", "pid": 2 ** 40, "user_id": "123", "attrs": {"k": "v\x00"}})))
    assert row["timestamp"] == dt.datetime(2025, 1, 21, 1, 30, tzinfo=dt.timezone.utc)
    assert row["operation_name"] == "x\ufffdy" and row["duration_ms"] is None and row["pid"] is None
    assert row["user_id"] == 123 and "\\u0000" not in row["record"] and "\\ufffd" in row["record"]
    rec = {"type": "resource"}
    row = dict(zip(db.COLUMNS, db.record_to_row(rec)))
    assert rec["timestamp"].endswith("Z") and row["id"] == db.record_id(rec)   # stamped, then hashed stably


def test_big_batches_split_across_connections(pg_db, tmp_path):
    """With 3 connections, 5000-record batches are inserted in parallel parts: every record lands once."""
    recs = [span(i) for i in range(20000)]
    sink = PostgresSink(pg_db, log_dir=tmp_path, batch_records=5000, flush_interval_ms=50, connections=3)
    try:
        sink.write(recs)
        sink.write(recs[:5000])                       # a whole batch of duplicates
        assert sink.sync(60)
        assert len(sink._extra) == 2
        backends = q(pg_db, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'autoperf-sink' "
                            "AND datname = current_database()")[0][0]
    finally:
        sink.close()
    assert backends == 3
    assert q(pg_db, "SELECT count(*), count(DISTINCT id) FROM performance_metrics")[0][:] == (20000, 20000)
    assert sink.counters["inserted"] == 20000 and sink.counters["duplicates"] == 5000
    assert sink.counters["checked_batches"] == 3      # only the duplicate batch's parts took the ON CONFLICT way


def test_sink_writes_n_records_into_day_partitions(pg_db, tmp_path):
    """N records over three days become N rows, one partition per day, columns mapped from the record."""
    recs = [span(i, day=("2025-01-20", "2025-01-21", "2025-01-22")[i % 3]) for i in range(12000)]
    recs.append({"timestamp": "2025-01-21T10:00:00.000Z", "type": "flow_complete", "level": "INFO", "pid": 1,
                 "flow_name": "queue_command", "flow_id": "00000000000000ff", "user_id": 123456789012345678,
                 "duration_ms": 245.67, "status": "success", "metadata": {"command": "queue", "guild_id": None},
                 "checkpoints": []})
    sink = PostgresSink(pg_db, log_dir=tmp_path, batch_records=1000, flush_interval_ms=50)
    try:
        for i in range(0, len(recs), 700):
            sink.write(recs[i:i + 700])
        assert sink.sync(30)
    finally:
        sink.close()
    assert q(pg_db, "SELECT count(*) FROM performance_metrics")[0][0] == len(recs)
    parts = [r[0] for r in q(pg_db, "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                                    "WHERE i.inhparent = 'performance_metrics'::regclass ORDER BY 1")]
    assert parts == ["performance_metrics_p20250120", "performance_metrics_p20250121", "performance_metrics_p20250122"]
    row = q(pg_db, "SELECT * FROM performance_metrics WHERE type = 'flow_complete'")[0]
    assert row["user_id"] == 123456789012345678 and row["operation_name"] == "queue_command"
    assert orjson.loads(row["metadata"]) == {"command": "queue", "guild_id": None}
    assert row["timestamp"] == dt.datetime(2025, 1, 21, 10, tzinfo=dt.timezone.utc)
    s = q(pg_db, "SELECT * FROM performance_metrics WHERE id = $1", f"{5:016x}")[0]
    assert (s["flow_name"], s["operation_name"], s["kind"], s["duration_ms"], s["pid"]) == \
        ("queue_command", "db.fetch", "db", 5.5, 4242)
    assert s["metadata"] is None                      # spans keep their attrs in `record` only
    assert orjson.loads(s["record"]) == recs[5]
    assert not glob.glob(str(tmp_path / "pg_spill_*"))
    assert sink.counters["checked_batches"] == 0      # new records: plain COPY, no per-row conflict check


def test_same_records_twice_no_duplicates(pg_db, tmp_path):
    """Writing the same records twice (even from two sinks) leaves each record exactly once."""
    recs = [span(i) for i in range(3000)] + [
        {"timestamp": "2025-01-20T10:00:00.000Z", "type": "resource", "pid": 1, "rss_mb": float(i)} for i in range(500)]
    for _ in range(2):
        sink = PostgresSink(pg_db, log_dir=tmp_path, batch_records=800, flush_interval_ms=50)
        try:
            sink.write(recs)
            sink.write(recs[:100])            # duplicates inside one run too
            assert sink.sync(30)
        finally:
            sink.close()
    assert q(pg_db, "SELECT count(*), count(DISTINCT id) FROM performance_metrics")[0][:] == (3500, 3500)
    assert sink.counters["duplicates"] == 3600 and sink.counters["inserted"] == 0


@pytest.mark.parametrize("batch,connections", [(500, 1), (2500, 3)])
def test_outage_spills_and_replays_without_loss_or_duplicates(pg_db, tmp_path, batch, connections):
    """The server refuses connections mid-run (real TCP proxy), records spill to disk, then all land exactly once."""
    proxy = pgs.TcpProxy(pg_db)
    sink = PostgresSink(proxy.dsn(), log_dir=tmp_path, batch_records=batch, flush_interval_ms=50, retry_max_s=0.3,
                        connections=connections)
    recs = [span(i) for i in range(6000)]
    try:
        sink.write(recs[:2000])
        assert sink.sync(30)
        assert q(pg_db, "SELECT count(*) FROM performance_metrics")[0][0] == 2000

        proxy.refuse()                          # outage: connections reset, new ones refused
        for i in range(2000, 4500, 250):
            sink.write(recs[i:i + 250])
            time.sleep(0.02)
        assert sink.sync(30)
        spills = glob.glob(str(tmp_path / "pg_spill_*.log"))
        assert spills, "records must be spilled while the database is away"
        spilled = sum(1 for p in spills for _ in open(p, "rb"))
        assert spilled >= 2500 - batch         # at most one batch could have landed before the cut
        assert q(pg_db, "SELECT count(*) FROM performance_metrics")[0][0] < 4500

        proxy.restore()                         # back: the spill is replayed
        sink.write(recs[4000:6000])             # 500 of these were spilled already: overlap on purpose
        assert wait_rows(pg_db, 6000) == 6000
        assert sink.sync(30)
    finally:
        sink.close()
        proxy.close()
    ids = [r[0] for r in q(pg_db, "SELECT id FROM performance_metrics")]
    assert len(ids) == len(set(ids)) == 6000
    assert set(ids) == {r["span_id"] for r in recs}
    assert not glob.glob(str(tmp_path / "pg_spill_*.log")), "replayed spill files are deleted"
    assert sink.counters["reconnects"] >= 1 and sink.counters["replayed"] >= 2500 - batch


def test_database_down_at_start_then_up(pg_db, tmp_path):
    """A sink started while the database refuses connections spills, then replays once it answers."""
    proxy = pgs.TcpProxy(pg_db)
    proxy.refuse()
    sink = PostgresSink(proxy.dsn(), log_dir=tmp_path, batch_records=200, flush_interval_ms=30, retry_max_s=0.2)
    try:
        sink.write([span(i) for i in range(1000)])
        assert sink.sync(20)
        assert glob.glob(str(tmp_path / "pg_spill_*.log"))
        proxy.restore()
        assert wait_rows(pg_db, 1000) == 1000
    finally:
        sink.close()
        proxy.close()


def test_spill_of_dead_process_is_replayed(pg_db, tmp_path):
    """A spill file left by a process that no longer exists is replayed and removed by the next sink."""
    dead = 2 ** 22 + 12345                       # above pid_max defaults: never alive
    path = tmp_path / f"pg_spill_{dead}_20250120T000000000000.log"
    recs = [span(i) for i in range(700)]
    header = spill._header(spill._spill_key(str(tmp_path)), str(path))   # as the dead sink wrote it
    path.write_bytes(header + b"".join(orjson.dumps(r) + b"\n" for r in recs) + b'{"torn":')
    sink = PostgresSink(pg_db, log_dir=tmp_path, batch_records=300, flush_interval_ms=30)
    try:
        assert wait_rows(pg_db, 700) == 700
        assert sink.sync(20)
    finally:
        sink.close()
    assert not path.exists()
    assert sink.counters["spill_bad_lines"] == 1


def test_forged_spill_file_is_not_inserted(pg_db, tmp_path, records):
    """A ``pg_spill_<deadpid>_*.log`` the store did not write (no header, or a header made with
    another key) is never inserted; it stays where it is and a warning says so."""
    dead = 2 ** 22 + 12346
    forged = [tmp_path / f"pg_spill_{dead}_20250120T000000000000.log",
              tmp_path / f"pg_spill_{dead}_20250121T000000000000.log"]
    forged[0].write_bytes(b"".join(orjson.dumps(span(i)) + b"\n" for i in range(50)))
    forged[1].write_bytes(spill._header(b"k" * 32, str(forged[1])) + orjson.dumps(span(99)) + b"\n")
    sink = PostgresSink(pg_db, log_dir=tmp_path, batch_records=300, flush_interval_ms=30)
    try:
        sink.write([span(1000)])
        assert sink.sync(20)
        assert wait_rows(pg_db, 1) == 1
    finally:
        sink.close()
    assert all(p.exists() for p in forged)
    assert len(records.warnings("store_spill_foreign")) == 2


def _pct(sorted_vals, p):
    """percentile_cont exactly as PostgreSQL computes it (linear interpolation)."""
    pos = p * (len(sorted_vals) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (pos - lo)


def test_rollup_matches_python(pg_db, tmp_path):
    """`performance_stats` count/avg/min/max/p50/p95/p99 per (date, flow, operation) equal values computed in Python."""
    rnd = random.Random(7)
    groups = {("queue_command", "db.fetch"): 1000, ("queue_command", "http.post"): 37, (None, "cycle"): 5}
    recs, expect, i = [], {}, 0
    for (flow, name), n in groups.items():
        vals = [rnd.randrange(0, 40000) / 8 for _ in range(n)]    # multiples of 1/8: sums are exact
        expect[(flow or "", name)] = vals
        for v in vals:
            recs.append(span(i, flow=flow, name=name, dur=v))
            i += 1
    recs.append(span(i, day="2025-01-21", dur=99999.0))          # another day: not counted
    recs.append({"timestamp": "2025-01-20T01:00:00.000Z", "type": "flow_complete", "flow_name": "queue_command",
                 "duration_ms": 88888.0})                         # not a span: not counted
    sink = PostgresSink(pg_db, log_dir=tmp_path, flush_interval_ms=30)
    try:
        sink.write(recs)
        assert sink.sync(30)
    finally:
        sink.close()

    async def run():
        conn = await asyncpg.connect(pg_db)
        try:
            n1 = await db.rollup(conn, dt.date(2025, 1, 20))
            n2 = await db.rollup(conn, dt.date(2025, 1, 20))        # idempotent upsert
            return n1, n2, await conn.fetch("SELECT * FROM performance_stats WHERE date = '2025-01-20'")
        finally:
            await conn.close()

    n1, n2, rows = asyncio.run(run())
    assert n1 == n2 == 3 and len(rows) == 3
    for r in rows:
        vals = sorted(expect[(r["flow_name"], r["operation_name"])])
        assert r["count"] == len(vals)
        assert r["avg_duration_ms"] == sum(vals) / len(vals)
        assert (r["min_duration_ms"], r["max_duration_ms"]) == (vals[0], vals[-1])
        assert r["p50_duration_ms"] == _pct(vals, 0.50)
        assert r["p95_duration_ms"] == _pct(vals, 0.95)
        assert r["p99_duration_ms"] == _pct(vals, 0.99)


def test_rollup_reads_metrics_records_when_the_day_has_them(pg_db, tmp_path):
    """A day written with metrics records (only retained spans stored) rolls up from their histograms:
    counts, min and max exact, average and percentiles within 1 % of the every-span values."""
    from autoperf.analysis import synth
    from autoperf.analysis.stats import percentile

    rnd = random.Random(5)
    recs = []
    for i in range(3000):
        d = rnd.lognormvariate(3, 0.7)
        recs += synth.flow("queue_command", dt.datetime(2025, 1, 20, 10) + dt.timedelta(milliseconds=40 * i), d,
                           [("db.fetch", "db", d / 3, synth.db_attrs("SELECT 1", "a1b2c3d4e5f60718"))], sla_ms=100)
    spans = [r for r in recs if r["type"] == "span"]
    metrics, kept = synth.metrics_and_retained(recs)
    sink = PostgresSink(pg_db, log_dir=tmp_path, flush_interval_ms=30)
    try:
        sink.write(metrics + kept)
        assert sink.sync(30)
    finally:
        sink.close()

    async def run():
        conn = await asyncpg.connect(pg_db)
        try:
            n = await db.rollup(conn, dt.date(2025, 1, 20))
            return n, await conn.fetch("SELECT * FROM performance_stats WHERE date = '2025-01-20'")
        finally:
            await conn.close()

    n, rows = asyncio.run(run())
    assert n == len(rows) == 2
    for r in rows:
        vals = sorted(x["duration_ms"] for x in spans if x["name"] == r["operation_name"])
        assert r["flow_name"] == "queue_command" and r["count"] == len(vals) == 3000
        assert r["min_duration_ms"] == pytest.approx(vals[0]) and r["max_duration_ms"] == pytest.approx(vals[-1])
        assert r["avg_duration_ms"] == pytest.approx(sum(vals) / len(vals), rel=1e-9)
        for q, col in ((50, "p50_duration_ms"), (95, "p95_duration_ms"), (99, "p99_duration_ms")):
            assert abs(r[col] / percentile(vals, q) - 1) < 0.01, (r["operation_name"], q)


def _cli(argv):
    """Parse argv with a parser carrying only the `db` command and run its handler."""
    from autoperf.store import cli

    parser = argparse.ArgumentParser(prog="autoperf")
    cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.handler(args)


def test_cli_init_rollup_status_never_print_dsn(pg_db, capsys, monkeypatch):
    """`db init` twice, `db rollup`, `db status` succeed and print host/db but never the user or password."""
    p = pgs.dsn_parts(pg_db)
    secret_dsn = pgs.make_dsn("postgres", "Sup3rSecretPw", p["host"], p["port"], p["database"], p["query"])
    monkeypatch.setenv("AUTOPERF_PG_DSN", secret_dsn)
    assert _cli(["db", "init"]) == 0
    assert _cli(["db", "init"]) == 0
    assert _cli(["db", "rollup", "--date", "2025-01-20"]) == 0
    assert _cli(["db", "status"]) == 0
    assert _cli(["db", "rollup", "--date", "nope"]) == 2
    out = capsys.readouterr()
    text = out.out + out.err
    assert "applied migrations 1, 2" in text and "schema up to date (version 2)" in text
    assert p["database"] in text
    assert "Sup3rSecretPw" not in text and "postgres@" not in text and "postgresql://" not in text


def test_cli_unreachable_exit_code_without_dsn(capsys):
    """An unreachable server gives exit code 1 and an error naming host/port only."""
    code = _cli(["db", "status", "--dsn", "postgresql://bob:HiddenPw@127.0.0.1:1/nodb", "--timeout", "2"])
    out = capsys.readouterr()
    assert code == 1
    assert "127.0.0.1:1/nodb" in out.err and "HiddenPw" not in out.err + out.out


def test_start_from_config(pg_db, tmp_path, monkeypatch):
    """start_from_config returns None without a DSN and a working sink with one (from the environment)."""
    monkeypatch.delenv("AUTOPERF_PG_DSN", raising=False)
    assert start_from_config({"store": {"dsn": ""}}, tmp_path) is None
    monkeypatch.setenv("AUTOPERF_PG_DSN", pg_db)
    from autoperf import pipeline

    sink = start_from_config({"store": {"batch_records": 100, "flush_interval_ms": 20}}, tmp_path)
    try:
        assert isinstance(sink, PostgresSink) and sink.batch_records == 100
        assert sink in pipeline.sinks()                     # registered with the pipeline
        pipeline.remove_sink(sink)
        sink.write([span(i) for i in range(250)])
        assert sink.sync(20)
    finally:
        pipeline.remove_sink(sink)
        sink.close()
    assert q(pg_db, "SELECT count(*) FROM performance_metrics")[0][0] == 250


def test_records_flow_from_pipeline_emit_to_postgres(pg_db, tmp_path, monkeypatch):
    """End to end: records given to pipeline.emit() reach performance_metrics through the registered sink."""
    from autoperf import pipeline

    monkeypatch.setenv("AUTOPERF_PG_DSN", pg_db)
    sink = start_from_config({"store": {"flush_interval_ms": 20}}, tmp_path)
    try:
        for i in range(300):
            pipeline.emit({"type": "resource", "rss_mb": float(i), "id": f"res-{i}"})
        pipeline.flush()
        assert wait_rows(pg_db, 300) >= 300
    finally:
        pipeline.remove_sink(sink)
        sink.close()
    rows = q(pg_db, "SELECT id, type, pid FROM performance_metrics WHERE id LIKE 'res-%'")
    assert len(rows) == 300 and {r["type"] for r in rows} == {"resource"} and rows[0]["pid"] == os.getpid()


def test_buffer_overflow_is_counted(tmp_path):
    """write() beyond max_buffer_records drops and counts instead of growing or blocking."""
    sink = PostgresSink("postgresql://x@127.0.0.1:1/none", log_dir=tmp_path, max_buffer_records=100, start=False)
    sink.write([{"type": "resource"}] * 80)
    sink.write([{"type": "resource"}] * 80)
    assert sink.stats()["queued"] == 100 and sink.counters["dropped"] == 60


def test_daily_rollup_runs_inside_the_sink(pg_db, tmp_path):
    """A running sink rolls up the previous UTC day by itself (performance_stats appears without the CLI)."""
    now = dt.datetime.now(dt.timezone.utc)
    if now.time() < dt.time(0, 6):
        pytest.skip("the automatic rollup waits until 00:05 UTC")
    yesterday = (now - dt.timedelta(days=1)).date().isoformat()
    sink = PostgresSink(pg_db, log_dir=tmp_path, batch_records=1000, flush_interval_ms=20, rollup=True)
    try:
        sink.write([span(i, day=yesterday, dur=float(i)) for i in range(101)])
        assert sink.sync(20)
        deadline = time.monotonic() + 10
        rows = []
        while time.monotonic() < deadline and not rows:
            rows = q(pg_db, "SELECT * FROM performance_stats WHERE date = $1", dt.date.fromisoformat(yesterday))
            time.sleep(0.05)
    finally:
        sink.close()
    assert len(rows) == 1 and rows[0]["count"] == 101 and rows[0]["p50_duration_ms"] == 50.0
    assert sink.counters["rollups"] == 1


def test_store_section_validates_with_config_loader(tmp_path, monkeypatch):
    """The `store:` CONFIG_SCHEMA accepts a DSN from the environment and rejects a bad batch size with a location."""
    config = pytest.importorskip("autoperf.config")
    monkeypatch.setenv("AP_TEST_STORE_DSN", "postgresql://u:pw@db.example:5432/perf")
    good = tmp_path / "autoperf.yaml"
    good.write_text("store:\n  dsn: ${AP_TEST_STORE_DSN:-}\n  batch_records: 100\n")
    data = config.load_config(str(good)).data["store"]
    assert data["dsn"].endswith("/perf") and data["batch_records"] == 100 and data["max_buffer_records"] == 200000
    bad = tmp_path / "bad.yaml"
    bad.write_text("store:\n  batch_records: 0\n")
    with pytest.raises(config.ConfigError) as err:
        config.load_config(str(bad))
    assert "store.batch_records" in str(err.value)


def _write_all(pg_db, tmp_path, recs, batch_records=1000):
    """One sink writes ``recs`` (in one batch by default), synced and closed; returns it (counters)."""
    sink = PostgresSink(pg_db, log_dir=tmp_path, batch_records=batch_records, flush_interval_ms=20)
    try:
        sink.write(recs)
        assert sink.sync(30)
    finally:
        sink.close()
    return sink


def test_record_refused_by_the_server_is_isolated(pg_db, tmp_path):
    """A record PostgreSQL refuses (a real CHECK constraint) is isolated into pg_rejected_*.log; the rest land."""
    async def prepare():
        conn = await asyncpg.connect(pg_db)
        try:
            await db.migrate(conn)
            await conn.execute("ALTER TABLE performance_metrics ADD CONSTRAINT test_no_boom CHECK (level <> 'BOOM')")
        finally:
            await conn.close()
    asyncio.run(prepare())
    recs = [span(i) for i in range(1000)]
    recs[617]["level"] = "BOOM"
    sink = _write_all(pg_db, tmp_path, recs)
    assert q(pg_db, "SELECT count(*) FROM performance_metrics")[0][0] == 999
    rejected = glob.glob(str(tmp_path / "pg_rejected_*.log"))
    assert len(rejected) == 1
    lines = open(rejected[0], "rb").read().splitlines()
    assert [orjson.loads(x)["span_id"] for x in lines] == [recs[617]["span_id"]]
    assert sink.counters["rejected"] == 1 and not glob.glob(str(tmp_path / "pg_spill_*"))


def test_cli_reads_dsn_from_config_file(pg_db, tmp_path, monkeypatch, capsys):
    """Without --dsn or AUTOPERF_PG_DSN, `db init --config` uses store.dsn of that autoperf.yaml."""
    monkeypatch.delenv("AUTOPERF_PG_DSN", raising=False)
    monkeypatch.setenv("AP_TEST_CFG_DSN", pg_db)
    cfg = tmp_path / "autoperf.yaml"
    cfg.write_text("store:\n  dsn: ${AP_TEST_CFG_DSN}\n")
    assert _cli(["db", "init", "--config", str(cfg)]) == 0
    assert "applied migrations 1, 2" in capsys.readouterr().out
    monkeypatch.chdir(tmp_path)                       # ./autoperf.yaml is found by itself
    assert _cli(["db", "status"]) == 0


def test_version_1_store_with_rows_keeps_working_then_upgrades(pg_db, tmp_path, capsys):
    """On a schema-1 store holding rows the sink writes without rewriting it; `db init` upgrades it, rows intact."""
    from autoperf.analysis.reader import iter_records_from_pg

    old = {"timestamp": "2025-01-20T09:00:00.000Z", "type": "flow_complete", "flow_name": "queue_command",
           "duration_ms": 12.5, "metadata": {"command": "queue"}, "id": "old-1"}

    async def make_v1():
        conn = await asyncpg.connect(pg_db)
        try:
            version, name, sql = db.migrations()[0]
            await conn.execute(sql)
            await conn.execute("CREATE TABLE schema_version (version integer PRIMARY KEY, name text NOT NULL,"
                               " applied_at timestamptz NOT NULL DEFAULT now())")
            await conn.execute("INSERT INTO schema_version (version, name) VALUES ($1, $2)", version, name)
            await conn.execute("SELECT autoperf_ensure_partition('2025-01-20')")
            await conn.execute("INSERT INTO performance_metrics (id, timestamp, type, record) VALUES "
                               "('old-1', '2025-01-20T09:00:00Z', 'flow_complete', $1::jsonb)", orjson.dumps(old).decode())
        finally:
            await conn.close()

    def layout():
        return (tuple(r[0] for r in q(pg_db, "SELECT version FROM schema_version ORDER BY 1")),
                q(pg_db, "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                         "WHERE attrelid = 'performance_metrics'::regclass AND attname = 'record'")[0][0])

    asyncio.run(make_v1())
    recs = [span(i) for i in range(1500)]
    sink = PostgresSink(pg_db, log_dir=tmp_path, batch_records=500, flush_interval_ms=20)
    try:
        sink.write(recs[:1000])
        sink.write(recs[:10])                                  # duplicates on the old layout too
        assert sink.sync(30)
    finally:
        sink.close()
    assert layout() == ((1,), "jsonb")                         # not rewritten behind the user's back
    assert sink.counters["inserted"] == 1000 and sink.counters["duplicates"] == 10

    assert _cli(["db", "init", "--dsn", pg_db]) == 0
    assert "applied migrations 2" in capsys.readouterr().out
    assert layout() == ((1, 2), "text")
    sink = PostgresSink(pg_db, log_dir=tmp_path, batch_records=500, flush_interval_ms=20)
    try:
        sink.write(recs[900:])                                 # 100 already stored before the upgrade
        assert sink.sync(30)
    finally:
        sink.close()
    assert sink.counters["inserted"] == 500 and sink.counters["duplicates"] == 100
    got = list(iter_records_from_pg(pg_db))
    assert len(got) == 1501 and got[0] == old                  # ordered by time: the old row first
    assert sorted(r["span_id"] for r in got[1:]) == sorted(r["span_id"] for r in recs)


def test_partition_dropped_behind_the_sinks_back(pg_db, tmp_path):
    """A day partition dropped while the sink runs (retention job) is recreated; later records of that day land."""
    sink = PostgresSink(pg_db, log_dir=tmp_path, batch_records=500, flush_interval_ms=20)
    try:
        sink.write([span(i) for i in range(500)])
        assert sink.sync(30)
        q(pg_db, "DROP TABLE performance_metrics_p20250120")
        sink.write([span(i) for i in range(500, 1500)])
        assert sink.sync(30)
    finally:
        sink.close()
    assert q(pg_db, "SELECT count(*), min(id) FROM performance_metrics")[0][:] == (1000, f"{500:016x}")
    assert sink.counters["inserted"] == 1500 and not sink.counters["rejected"]


def test_unconvertible_record_is_counted_and_skipped(pg_db, tmp_path):
    """A value that is no record dict is counted as rejected; the rest of its batch lands."""
    sink = PostgresSink(pg_db, log_dir=tmp_path, batch_records=100, flush_interval_ms=20)
    try:
        sink.write([span(0), "not a record", span(1)])
        assert sink.sync(30)
    finally:
        sink.close()
    assert q(pg_db, "SELECT count(*) FROM performance_metrics")[0][0] == 2
    assert sink.counters["rejected"] == 1 and sink.counters["inserted"] == 2


NASTY = ["back\\slash", "tab\there", "new\nline", "cr\rhere", 'quote"s', "nul\x00char", "ünïcødé ✓ 😀", "\\N", "",
         "\\.", "x" * 1500, "ends with backslash\\"]


def nasty_records():
    """Records whose values stress the row encoding: escapes, NUL, non-ASCII, long strings, non-str values,
    missing / offset / numeric timestamps, odd numbers, every record type."""
    recs = []
    for i, s in enumerate(NASTY):
        recs.append(span(i, name=s, flow=s, attrs={"s": s}, status=s, parent_id=s or None))
        recs.append(span(100 + i, level=s, kind=s, flow_id=s))
    recs += [
        span(200, span_id="a" * 1100),                                        # an id longer than 1 KB
        span(201, span_id="\x00nul-id\\"),
        span(202, level=7, kind=["db"], status={"code": 1}, flow_id=12.5),    # non-str values in text columns
        span(203, level=True, kind=1, status=1.0),                            # equal hashes, different texts
        span(204, dur=float("nan"), pid=True, user_id="77"),
        span(205, dur=float("inf"), pid=2 ** 40, user_id=2 ** 63),                  # beyond int64: NULL
        span(206, dur=3, pid=-5, user_id=-(2 ** 63)),
        span(207, timestamp="2025-01-20T23:30:00.123456-02:00"),              # offset: next UTC day
        span(208, timestamp=1737400000.25),                                   # epoch seconds
        span(209, timestamp="2025-02-30T10:00:00.000Z"),                      # not a date: stamped now
        span(210, timestamp="2025-01-20T10:00:00.000"),                       # no zone: UTC
        span(211, timestamp=None),
        span(212, name=None, operation_name="op-fallback"),
        span(213, span_id=""),                                                # no span id: hashed
        {"type": "resource", "pid": 1, "rss_mb": 12.5},                       # no timestamp at all
        {"timestamp": "2025-01-20T10:00:00.000Z", "type": "flow_complete", "flow_name": "f\\\t", "id": 5,
         "metadata": {"k": "v\x00\\", "n": [1, 2.5, None]}, "user_id": 123, "duration_ms": 1.5},
        {"timestamp": "2025-01-20T10:00:00.000Z", "type": "alert", "id": "a1", 3: "int key"},
    ]
    return recs


def test_hard_values_round_trip_exactly(pg_db, tmp_path):
    """Every column read back from PostgreSQL equals record_to_row's mapping of the record, whatever its strings."""
    recs = nasty_records()
    sink = _write_all(pg_db, tmp_path, recs)
    assert sink.counters["inserted"] == len(recs) and not sink.counters["rejected"]
    got = {(r["timestamp"], r["id"]): dict(r) for r in q(pg_db, "SELECT * FROM performance_metrics")}
    assert len(got) == len(recs)
    for rec in recs:
        want = dict(zip(db.COLUMNS, db.record_to_row(rec)))   # the timestamps the sink stamped are in `rec` now
        row = dict(got[(want["timestamp"], want["id"])])
        meta, want_meta = row.pop("metadata"), want.pop("metadata")
        assert (meta and orjson.loads(meta)) == (want_meta and orjson.loads(want_meta))
        assert row == want, rec
        assert "\x00" not in row["record"] and orjson.loads(row["record"]) == orjson.loads(
            orjson.dumps(rec, option=orjson.OPT_NON_STR_KEYS, default=str).replace(b"\\u0000", b"\\ufffd"))
    flow = got[(dt.datetime(2025, 1, 20, 10, tzinfo=dt.timezone.utc), "5")]
    assert flow["flow_name"] == "f\\\t" and orjson.loads(flow["metadata"]) == {"k": "v\ufffd\\", "n": [1, 2.5, None]}
    assert got[(dt.datetime(2025, 1, 20, 15, 30, 0, tzinfo=dt.timezone.utc), f"{0:016x}")]["operation_name"] == "back\\slash"


def test_column_type_changed_by_hand_still_written(pg_db, tmp_path):
    """A store whose column types differ from schema 2 (a DBA's ALTER) is written with typed values, not refused."""
    async def prepare():
        conn = await asyncpg.connect(pg_db)
        try:
            await db.migrate(conn)
            await conn.execute("ALTER TABLE performance_metrics ALTER COLUMN duration_ms TYPE numeric, "
                               "ALTER COLUMN pid TYPE bigint")
        finally:
            await conn.close()
    asyncio.run(prepare())
    recs = [span(i) for i in range(300)]
    sink = _write_all(pg_db, tmp_path, recs, batch_records=100)
    assert sink.counters["inserted"] == 300 and not sink.counters["rejected"]
    assert q(pg_db, "SELECT sum(duration_ms)::float8, min(pid) FROM performance_metrics")[0][:] == (
        sum(r["duration_ms"] for r in recs), 4242)


def test_record_the_sink_cannot_convert_is_kept_in_the_rejected_log(pg_db, tmp_path):
    """A record that cannot become a row (an integer over 64 bits: orjson refuses it) is counted and
    written to pg_rejected_*.log, not lost; the rest of its batch lands."""
    import json
    recs = [span(i) for i in range(50)]
    recs[7]["attrs"] = {"huge": 2 ** 70}
    sink = _write_all(pg_db, tmp_path, recs)
    assert q(pg_db, "SELECT count(*) FROM performance_metrics")[0][0] == 49
    (rejected,) = glob.glob(str(tmp_path / "pg_rejected_*.log"))
    lines = [json.loads(x) for x in open(rejected, "rb").read().splitlines()]
    assert [(r["span_id"], r["attrs"]["huge"]) for r in lines] == [(recs[7]["span_id"], 2 ** 70)]
    assert sink.counters["rejected"] == 1
