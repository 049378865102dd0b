"""Schema migrations, record -> row conversion, batch insert and rollup (asyncpg, any event loop).

Everything here is a plain coroutine over an ``asyncpg.Connection``; the sink runs them on its own
thread's loop, the CLI with ``asyncio.run``.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import re
import sys
from importlib import resources

import orjson

UTC = _dt.timezone.utc

COLUMNS = (
    "id", "timestamp", "type", "level", "flow_name", "operation_name", "kind", "duration_ms",
    "user_id", "status", "flow_id", "parent_id", "pid", "metadata", "record",
)
_COLS = ", ".join(COLUMNS)
STAGING = "autoperf_staging"
MIGRATION_LOCK = 0x6175746F70657266  # 'autoperf' as a bigint advisory lock key
_INT64 = (-(2 ** 63), 2 ** 63 - 1)
_INT32 = (-(2 ** 31), 2 ** 31 - 1)
_NUL_ESC = re.compile(rb"(?<!\\)((?:\\\\)*)\\u0000")
_DUMP_OPTS = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS


# ---------------------------------------------------------------- diagnostics

def report_warning(code: str, message: str, **fields) -> None:
    """Report once through autoperf.diagnostics (or the pipeline); never raises. No DSNs in `message`."""
    try:
        from autoperf import diagnostics

        diagnostics.warn_once(code, message, **fields)
        return
    except Exception:  # noqa: BLE001 - diagnostics missing or broken: fall back
        pass
    try:
        from autoperf import pipeline

        pipeline.emit({"type": "warning", "level": "WARNING", "code": code, "message": message, **fields})
    except Exception:  # noqa: BLE001
        try:
            sys.stderr.write(f"autoperf: {code}: {message}\n")
        except Exception:  # noqa: BLE001
            pass


from autoperf.redact import describe_dsn  # noqa: E402,F401 - ``host:port/db``, safe to print


# ---------------------------------------------------------------- migrations

def migrations() -> list[tuple[int, str, str]]:
    """All bundled migrations as (version, name, sql), in order."""
    out = []
    for entry in resources.files("autoperf.store").joinpath("migrations").iterdir():
        m = re.match(r"^(\d{4})_(.+)\.sql$", entry.name)
        if m:
            out.append((int(m.group(1)), m.group(2), entry.read_text(encoding="utf-8")))
    return sorted(out)


async def applied_versions(conn) -> list[int]:
    exists = await conn.fetchval("SELECT to_regclass('schema_version') IS NOT NULL")
    if not exists:
        return []
    return [r[0] for r in await conn.fetch("SELECT version FROM schema_version ORDER BY version")]


REWRITES_MARK = "-- autoperf: rewrites performance_metrics"


async def migrate(conn, rewrite_ok: bool = True) -> list[int]:
    """Apply the missing migrations (each in its own transaction, serialized by an advisory lock).

    Returns the versions applied now (empty when the schema was already current). With
    ``rewrite_ok=False`` (the sink) a migration marked :data:`REWRITES_MARK` is applied only while
    ``performance_metrics`` is empty; otherwise migrating stops there with a warning (the sink writes
    to either layout) and ``autoperf db init`` does the rewrite.
    """
    done = []
    latest = migrations()[-1][0]
    current = await applied_versions(conn)
    if current and current[-1] >= latest:
        return done
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
    for version, name, sql in migrations():
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            if await conn.fetchval("SELECT 1 FROM schema_version WHERE version = $1", version):
                continue
            if not rewrite_ok and REWRITES_MARK in sql and await conn.fetchval(
                    "SELECT EXISTS (SELECT 1 FROM performance_metrics)"):
                report_warning("store_upgrade_needed",
                               f"PostgreSQL store schema {version} ({name}) rewrites performance_metrics: run "
                               "`autoperf db init` to apply it; until then the sink writes the older layout")
                break
            await conn.execute(sql)
            await conn.execute("INSERT INTO schema_version (version, name) VALUES ($1, $2)", version, name)
            done.append(version)
    return done


# ---------------------------------------------------------------- records -> rows

def canonical(record: dict) -> bytes:
    """The canonical serialization the record id is hashed from (sorted keys, orjson)."""
    return orjson.dumps(record, option=_DUMP_OPTS, default=str)


def record_id(record: dict) -> str:
    """Stable id: `span_id` of a span, else the record's `id`, else blake2b-128 hex of :func:`canonical`."""
    if record.get("type") == "span" and record.get("span_id"):
        return str(record["span_id"])
    rid = record.get("id")
    if rid is not None and rid != "":
        return str(rid)
    return hashlib.blake2b(canonical(record), digest_size=16).hexdigest()


def _text(v):
    if v is None:
        return None
    s = v if isinstance(v, str) else str(v)
    return s.replace("\x00", "\ufffd") if "\x00" in s else s


def _number(v, kind):
    """``kind(v)`` (int or float), or None for a bool, None or what does not convert."""
    if isinstance(v, bool) or v is None:
        return None
    try:
        return kind(v)
    except (TypeError, ValueError):
        return None


def _int(v, bounds):
    i = _number(v, int)
    return i if i is not None and bounds[0] <= i <= bounds[1] else None


def _float(v):
    f = _number(v, float)
    return f if f is not None and f == f and f not in (float("inf"), float("-inf")) else None


def _json(v) -> str:
    try:
        b = orjson.dumps(v, default=str)
    except TypeError:  # non-str dict keys: the slower option (rare)
        b = orjson.dumps(v, option=orjson.OPT_NON_STR_KEYS, default=str)
    # memchr for a backslash first: a 6-byte `in` costs ~1 us on a 500-byte record, this ~50 ns
    if b.find(b"\\") >= 0 and b"\\u0000" in b:  # NUL characters: jsonb (and `record::jsonb`) refuse them
        b = _NUL_ESC.sub(rb"\1\\ufffd", b)
    return b.decode()


def parse_ts(value) -> _dt.datetime | None:
    if isinstance(value, _dt.datetime):
        ts = value
    elif isinstance(value, str) and value:
        try:
            ts = _fromiso(value)
        except ValueError:
            return None
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        ts = _dt.datetime.fromtimestamp(value, UTC)
    else:
        return None
    if ts.tzinfo is None:
        return ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC)


def record_to_row(rec: dict) -> tuple:
    """One `performance_metrics` row (in :data:`COLUMNS` order) for a record dict.

    `metadata` is the record's `metadata` object (flow_complete records), else None.

    A record without a usable timestamp gets the current time, written back into the record so a
    spilled-and-replayed copy maps to the same (id, timestamp) key.
    """
    get = rec.get
    ts = get("timestamp")
    if type(ts) is str and ts.endswith("Z"):  # the pipeline's format: fast path
        try:
            ts = _fromiso(ts)
        except ValueError:
            ts = None
    else:
        ts = parse_ts(ts)
    if ts is None:
        ts = _now_ms()
        rec["timestamp"] = ts.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    rtype = get("type")
    name = get("name") or get("operation_name")
    if not name and rtype == "flow_complete":
        name = get("flow_name")
    if rtype == "span" and get("span_id"):
        rid = get("span_id")
    else:
        rid = record_id(rec)
    dur = get("duration_ms")
    pid = get("pid")
    uid = get("user_id")
    meta = get("metadata")
    texts = (rid, rtype, get("level"), get("flow_name"), name, get("kind"),
             get("status"), get("flow_id"), get("parent_id"))
    record = _json(rec)
    # No backslash in the record's JSON: every string in it is free of NUL (orjson escapes it), so the
    # text columns need no cleaning unless one is not a str (checked in one pass over the 9 values).
    if record.find("\\") >= 0 or not _all_str_or_none(texts):
        texts = tuple(map(_t, texts))
    rid, rtype, level, flow, name, kind, status, flow_id, parent_id = texts
    return (
        rid, ts, rtype, level, flow, name, kind,
        dur if type(dur) is float and dur == dur and dur not in _INF else _float(dur),
        None if uid is None else _int(uid, _INT64),
        status, flow_id, parent_id,
        pid if type(pid) is int and _INT32[0] <= pid <= _INT32[1] else _int(pid, _INT32),
        _json(meta) if type(meta) is dict else None,
        record,
    )


def _now_ms() -> _dt.datetime:
    """Now (UTC) to the millisecond: exactly what the timestamp written back into a record says, so a
    replayed copy of the record maps to the same key."""
    now = _dt.datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def _all_str_or_none(values) -> bool:
    for v in values:
        if type(v) is not str and v is not None:
            return False
    return True


def _t(v):
    if v is None or (type(v) is str and "\x00" not in v):
        return v
    return _text(v)


_INF = (float("inf"), float("-inf"))
if sys.version_info >= (3, 11):
    _fromiso = _dt.datetime.fromisoformat   # 'Z' suffix -> UTC
else:  # pragma: no cover - Python 3.10 does not read 'Z'
    def _fromiso(s):
        return _dt.datetime.fromisoformat(s[:-1] + "+00:00" if s.endswith("Z") else s)


# ---------------------------------------------------------------- writing

async def prepare_connection(conn) -> None:
    """Per-connection setup for :func:`insert_rows`: the temp staging table."""
    await conn.execute(
        f"CREATE TEMP TABLE IF NOT EXISTS {STAGING} (LIKE performance_metrics) ON COMMIT DELETE ROWS"
    )


async def ensure_partitions(conn, days, known: set) -> None:
    for day in sorted(set(days) - known):
        await conn.execute("SELECT autoperf_ensure_partition($1::date)", day)
        known.add(day)


_INSERT_SQL = (f"INSERT INTO performance_metrics ({_COLS}) SELECT {_COLS} FROM {STAGING} "
               "ON CONFLICT DO NOTHING")


async def insert_rows(conn, rows: list[tuple], known_days: set, dedupe: bool = False, counts=None) -> int:
    """Write ``rows``; returns how many were inserted (rows already present are skipped: idempotent).

    Fast path: one binary COPY per UTC day straight into that day's partition, one transaction; the
    primary key (timestamp, id) refuses a record that is already stored, and only then (or right away
    when the caller says duplicates are likely: ``dedupe``) the batch goes the checked way: COPY into
    the temp staging table and ``INSERT … ON CONFLICT DO NOTHING``. Creates missing day partitions first.
    ``counts`` (a Counter, optional) gets ``checked_batches`` += 1 when the checked way was taken.
    """
    if not rows:
        return 0
    by_day: dict = {}
    for r in rows:
        day = r[1].date()
        part = by_day.get(day)
        if part is None:
            by_day[day] = [r]
        else:
            part.append(r)
    await ensure_partitions(conn, by_day, known_days)
    if not dedupe:
        try:
            return await _with_partition_retry(conn, by_day, known_days, _copy_direct)
        except Exception as exc:
            if getattr(exc, "sqlstate", None) != "23505":   # unique_violation: some rows are stored already
                raise
    if counts is not None:
        counts["checked_batches"] += 1
    return await _with_partition_retry(conn, by_day, known_days, _copy_checked)


async def _copy_direct(conn, by_day, routed: bool) -> int:
    async with conn.transaction():
        if routed:  # through the parent (PostgreSQL finds the partitions)
            await conn.copy_records_to_table("performance_metrics", records=_all(by_day), columns=COLUMNS)
        else:
            for day, part in by_day.items():
                await conn.copy_records_to_table(partition_name(day), records=part, columns=COLUMNS)
    return sum(map(len, by_day.values()))


def _all(by_day) -> list:
    return [r for part in by_day.values() for r in part]


async def _copy_checked(conn, by_day, routed: bool) -> int:
    sql = _INSERT_SQL
    if len(by_day) == 1 and not routed:  # skip tuple routing: straight into that day's partition
        sql = _INSERT_SQL.replace("INTO performance_metrics ", f"INTO {partition_name(next(iter(by_day)))} ", 1)
    async with conn.transaction():
        await conn.copy_records_to_table(STAGING, records=_all(by_day), columns=COLUMNS)
        status = await conn.execute(sql)
    return int(status.rsplit(" ", 1)[-1])


async def _with_partition_retry(conn, by_day, known_days, write) -> int:
    """``write`` into the day partitions by name; if one was dropped or renamed behind our back, (re)create
    the missing ones and write through the parent instead."""
    for attempt in (0, 1, 2):
        try:
            return await write(conn, by_day, attempt > 0)
        except Exception as exc:
            if attempt < 2 and getattr(exc, "sqlstate", None) in ("23514", "42P01"):  # partition dropped behind our back
                known_days.clear()
                await ensure_partitions(conn, by_day, known_days)
                continue
            raise
    return 0  # pragma: no cover


def partition_name(day: _dt.date) -> str:
    return f"performance_metrics_p{day:%Y%m%d}"


# ---------------------------------------------------------------- rollup

ROLLUP_SQL = """
INSERT INTO performance_stats AS s (date, flow_name, operation_name, count, avg_duration_ms,
    min_duration_ms, max_duration_ms, p50_duration_ms, p95_duration_ms, p99_duration_ms, computed_at)
SELECT $1::date, coalesce(flow_name, ''), coalesce(operation_name, ''), count(*), avg(duration_ms),
    min(duration_ms), max(duration_ms),
    percentile_cont(0.50) WITHIN GROUP (ORDER BY duration_ms),
    percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ms),
    percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_ms),
    now()
FROM performance_metrics
WHERE timestamp >= $2 AND timestamp < $3 AND type = 'span' AND duration_ms IS NOT NULL
GROUP BY 2, 3
ON CONFLICT (date, flow_name, operation_name) DO UPDATE SET
    count = EXCLUDED.count, avg_duration_ms = EXCLUDED.avg_duration_ms,
    min_duration_ms = EXCLUDED.min_duration_ms, max_duration_ms = EXCLUDED.max_duration_ms,
    p50_duration_ms = EXCLUDED.p50_duration_ms, p95_duration_ms = EXCLUDED.p95_duration_ms,
    p99_duration_ms = EXCLUDED.p99_duration_ms, computed_at = EXCLUDED.computed_at
"""


UPSERT_STATS_SQL = """
INSERT INTO performance_stats AS s (date, flow_name, operation_name, count, avg_duration_ms,
    min_duration_ms, max_duration_ms, p50_duration_ms, p95_duration_ms, p99_duration_ms, computed_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, now())
ON CONFLICT (date, flow_name, operation_name) DO UPDATE SET
    count = EXCLUDED.count, avg_duration_ms = EXCLUDED.avg_duration_ms,
    min_duration_ms = EXCLUDED.min_duration_ms, max_duration_ms = EXCLUDED.max_duration_ms,
    p50_duration_ms = EXCLUDED.p50_duration_ms, p95_duration_ms = EXCLUDED.p95_duration_ms,
    p99_duration_ms = EXCLUDED.p99_duration_ms, computed_at = EXCLUDED.computed_at
"""


def _stats_key(rec: dict):
    """(flow_name, operation_name) of a `metrics` record as the span rows would give it, or None."""
    if rec.get("measure", "duration") != "duration":
        return None
    name = rec.get("name") or ""
    if rec.get("root") is True:
        return (name if rec.get("kind") in ("flow", "cycle") else "", name)
    return (rec.get("flow_name") or "", name)


async def _metrics_rollup(conn, day, start, end) -> int | None:
    """`performance_stats` of a day from its `metrics` rows (the interval histograms merged per key:
    exact counts, min, max and average, percentiles within 1 %); None when the day has none."""
    from autoperf.analysis.dist import HistSum   # the readers' histogram sum (a pure function module)
    sums: dict = {}
    cur = await conn.cursor("SELECT record::text FROM performance_metrics WHERE timestamp >= $1 AND timestamp < $2 "
                            "AND type = 'metrics'", start, end)
    while True:
        rows = await cur.fetch(2000)
        if not rows:
            break
        for (text,) in rows:
            try:
                rec = orjson.loads(text)
            except orjson.JSONDecodeError:
                continue
            key = _stats_key(rec) if type(rec) is dict else None
            if key is None or type(rec.get("count")) is not int or type(rec.get("hist")) is not dict:
                continue
            hs = sums.get(key)
            if hs is None:
                hs = sums[key] = HistSum()
            hs.add(rec["hist"], rec["count"], float(rec.get("sum_ms") or 0.0), rec.get("min_ms"), rec.get("max_ms"))
    if not sums:
        return None
    rows = []
    for (flow, op), hs in sums.items():
        h = hs.hist()
        p50, p95, p99 = (v * 1000.0 for v in h.percentiles((50, 95, 99)))
        rows.append((day, flow, op, hs.count, hs.sum_ms / hs.count, hs.min_ms, hs.max_ms, p50, p95, p99))
    await conn.executemany(UPSERT_STATS_SQL, rows)
    return len(rows)


async def rollup(conn, day: _dt.date) -> int:
    """(Re)compute `performance_stats` for one UTC day: from its `metrics` records (every call, written by
    runs since issue 14) when it has any, else from its `span` records; returns the row count."""
    start = _dt.datetime.combine(day, _dt.time(0), UTC)
    end = start + _dt.timedelta(days=1)
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK + 1)
        n = await _metrics_rollup(conn, day, start, end)
        if n is not None:
            return n
        status = await conn.execute(ROLLUP_SQL, day, start, end)
    return int(status.rsplit(" ", 1)[-1])


# ---------------------------------------------------------------- status

async def status(conn) -> dict:
    """Schema version, partitions, approximate row count, newest record, stats coverage."""
    out: dict = {"schema_version": None, "latest_version": migrations()[-1][0]}
    versions = await applied_versions(conn)
    out["schema_version"] = versions[-1] if versions else None
    if not versions:
        return out
    parts = await conn.fetch(
        "SELECT c.relname, c.reltuples FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'performance_metrics'::regclass ORDER BY c.relname"
    )
    out["partitions"] = len(parts)
    out["first_partition"] = parts[0]["relname"] if parts else None
    out["last_partition"] = parts[-1]["relname"] if parts else None
    out["approx_rows"] = int(sum(max(p["reltuples"], 0) for p in parts))
    try:  # exact when it is cheap enough
        async with conn.transaction():
            await conn.execute("SET LOCAL statement_timeout = '3s'")
            out["rows"] = await conn.fetchval("SELECT count(*) FROM performance_metrics")
    except Exception:  # noqa: BLE001 - too big: the estimate will do
        out["rows"] = None
    newest = await conn.fetchval("SELECT max(timestamp) FROM performance_metrics")
    out["newest_record"] = newest.isoformat() if newest else None
    row = await conn.fetchrow("SELECT count(*) AS n, min(date) AS lo, max(date) AS hi FROM performance_stats")
    out["stats_rows"] = row["n"]
    out["stats_dates"] = [str(row["lo"]), str(row["hi"])] if row["n"] else []
    return out
