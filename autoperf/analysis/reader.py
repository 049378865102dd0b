"""Record sources: JSON-lines files (plain or .gz) and the PostgreSQL store.

Both yield plain record dicts; everything downstream is pure functions over them.
"""
from __future__ import annotations

import datetime as _dt
import glob
import os
import re
from typing import Callable, Iterable, Iterator

import orjson

from .blocks import whole_line_blocks

__all__ = ["read_records", "RecordReader", "expand_inputs", "iter_records_from_pg", "to_ts", "parse_time"]

_DATE_IN_NAME = re.compile(r"(\d{4}-\d{2}-\d{2})")


def to_ts(value) -> str | None:
    """Normalise a datetime / date / ISO string to the record timestamp format
    (``YYYY-MM-DDTHH:MM:SS.mmmZ``, UTC) so that timestamps compare as strings."""
    if value is None:
        return None
    if isinstance(value, str):
        value = parse_time(value)
    if isinstance(value, _dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(_dt.timezone.utc).replace(tzinfo=None)
        return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    if isinstance(value, _dt.date):
        return value.strftime("%Y-%m-%dT00:00:00.000Z")
    raise TypeError(f"cannot use {type(value).__name__} as a time")


def parse_time(text: str, now: _dt.datetime | None = None) -> _dt.datetime:
    """ISO date/datetime (naive = UTC), ``now``, ``today``, ``yesterday`` or a relative
    age such as ``90m``, ``24h``, ``7d`` (meaning that long before now). Returns aware UTC."""
    now = now or _dt.datetime.now(_dt.timezone.utc)
    t = text.strip()
    low = t.lower()
    if low == "now":
        return now
    if low == "today":
        return now.replace(hour=0, minute=0, second=0, microsecond=0)
    if low == "yesterday":
        return now.replace(hour=0, minute=0, second=0, microsecond=0) - _dt.timedelta(days=1)
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(s|m|h|d|w)", low)
    if m:
        mult = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[m.group(2)]
        return now - _dt.timedelta(seconds=float(m.group(1)) * mult)
    if t.endswith("Z") or t.endswith("z"):
        t = t[:-1] + "+00:00"
    try:
        d = _dt.datetime.fromisoformat(t)
    except ValueError:
        raise ValueError(f"not a time: {text!r} (use ISO-8601, 'today', or an age like 24h / 7d)") from None
    if d.tzinfo is None:
        d = d.replace(tzinfo=_dt.timezone.utc)
    return d.astimezone(_dt.timezone.utc)


def expand_inputs(inputs: Iterable[str] | None, log_dir: str | None = "logs") -> list[str]:
    """Files as given; directories expand to ``performance_*.log`` / ``*.log.gz`` inside them.
    With no inputs, ``log_dir`` is used. The ``metrics_*.log`` files of the same directories and days
    come first (readers count from them and must know which processes they cover before the spans)."""
    out: list[str] = []
    items = list(inputs or [])
    if not items and log_dir:
        items = [log_dir]
    for item in items:
        if os.path.isdir(item):
            found = set(glob.glob(os.path.join(item, "performance_*.log")))
            found |= set(glob.glob(os.path.join(item, "performance_*.log.gz")))
            found |= set(glob.glob(os.path.join(item, "metrics_*.log")))
            found |= set(glob.glob(os.path.join(item, "metrics_*.log.gz")))
            out.extend(sorted(found))
        elif any(ch in item for ch in "*?["):
            out.extend(sorted(glob.glob(item)))
        else:
            out.append(item)
    seen = set(out)
    for p in list(out):
        sib = metrics_beside(p)
        if sib is not None and sib not in seen:
            seen.add(sib)
            out.append(sib)
    metrics = [p for p in out if is_metrics_file(p)]
    return metrics + [p for p in out if not is_metrics_file(p)]


def is_metrics_file(path: str) -> bool:
    return os.path.basename(path).startswith("metrics_")


def metrics_beside(path: str) -> str | None:
    """The ``metrics_DAY.log`` (or .gz) next to ``performance_DAY.log``, when it exists."""
    base = os.path.basename(path)
    if not base.startswith("performance_"):
        return None
    d = os.path.dirname(path)
    for name in ("metrics_" + base[len("performance_"):], "metrics_" + base[len("performance_"):].removesuffix(".gz")):
        p = os.path.join(d, name)
        if os.path.isfile(p):
            return p
    return None


#: a flow_complete a run with metrics wrote for a flow it did not retain: counted in the metrics records,
#: no span of it was written, so a report skips the line unread (the bulk of a day's log)
UNRETAINED = b'"retained":null'


def _file_may_overlap(path: str, since: str | None, until: str | None) -> bool:
    """Daily files are named by UTC date: skip those entirely outside [since, until)."""
    m = _DATE_IN_NAME.search(os.path.basename(path))
    if not m:
        return True
    day = m.group(1)
    if since is not None and day < since[:10]:
        return False
    if until is not None and day + "T00:00:00.000Z" >= until:
        return False
    return True


class RecordReader:
    """Iterable over the records of several JSON-lines files.

    Memory is bounded by the read chunk (1 MiB) whatever the file size.  A line that does not
    decode to a JSON object (a crash mid-write, a truncated tail, garbage) is skipped and counted
    in ``skipped``; blank lines are ignored.  ``since``/``until`` (inclusive/exclusive) filter on
    the record ``timestamp``.  ``progress(done_bytes, total_bytes)`` is called about every 8 MiB.
    ``types``: optional set of record types to keep (filtered with a fast byte check first).
    """

    def __init__(self, paths: Iterable[str], since=None, until=None,
                 progress: Callable[[int, int], None] | None = None, types: Iterable[str] | None = None):
        self.paths = list(paths)
        self.since = to_ts(since)
        self.until = to_ts(until)
        self.progress = progress
        self.types = set(types) if types else None
        self.skipped = 0            # corrupt / truncated lines
        self.lines = 0              # non-blank lines seen
        self.records = 0            # records yielded
        self.filtered = 0           # decoded but outside the time range / type filter
        self.files_read: list[str] = []
        self.files_missing: list[str] = []
        self.bytes_read = 0
        self.skim_unretained = True     # skip unretained flow_complete lines of files with metrics beside them
        self.alongside: set = set()     # metrics files another reader folds (split.py): they count as beside
        self.unretained = 0

    def stats(self) -> dict:
        return {"files": len(self.files_read), "missing_files": list(self.files_missing), "lines": self.lines,
                "records": self.records, "skipped_lines": self.skipped, "filtered": self.filtered,
                "bytes": self.bytes_read, "unretained_lines": self.unretained}

    def iter_lines(self) -> Iterator[bytes]:
        """Raw lines (bytes, blank ones too), for callers that decode themselves."""
        total = 0
        paths = []
        for p in self.paths:
            if not _file_may_overlap(p, self.since, self.until):
                continue
            try:
                total += os.path.getsize(p)
                paths.append(p)
            except OSError:
                self.files_missing.append(p)
        next_report = 8 << 20
        progress = self.progress
        included = set(paths) | self.alongside
        for p in paths:
            self.files_read.append(p)
            skim = self.skim_unretained and metrics_beside(p) in included
            for block, end in whole_line_blocks(p, self):
                lines = block.split(b"\n")
                lines.pop()                   # after the last newline (block[end:]): the next block has it
                if skim and UNRETAINED in block:
                    n = len(lines)
                    lines = [x for x in lines if UNRETAINED not in x]
                    self.unretained += n - len(lines)
                yield from lines
                if progress is not None and self.bytes_read >= next_report:
                    next_report = self.bytes_read + (8 << 20)
                    try:
                        progress(self.bytes_read, total)
                    except Exception:
                        pass
        if progress is not None:
            try:
                progress(self.bytes_read, total)
            except Exception:
                pass

    def __iter__(self) -> Iterator[dict]:
        loads = orjson.loads
        since, until = self.since, self.until
        types = self.types
        type_needles = [b'"type":"' + t.encode() + b'"' for t in types] if types else None
        skipped = lines = records = filtered = 0
        try:
            for line in self.iter_lines():
                if not line or line.isspace():
                    continue
                lines += 1
                if type_needles is not None and not any(n in line for n in type_needles):
                    # cheap pre-filter; a line that fails it may still be corrupt, but we don't care
                    filtered += 1
                    continue
                try:
                    rec = loads(line)
                except orjson.JSONDecodeError:
                    skipped += 1
                    continue
                if type(rec) is not dict:
                    skipped += 1
                    continue
                if since is not None or until is not None:
                    ts = rec.get("timestamp")
                    if type(ts) is not str:
                        filtered += 1
                        continue
                    if (since is not None and ts < since) or (until is not None and ts >= until):
                        filtered += 1
                        continue
                if types is not None and rec.get("type") not in types:
                    filtered += 1
                    continue
                records += 1
                yield rec
        finally:
            self.skipped += skipped
            self.lines += lines
            self.records += records
            self.filtered += filtered


def read_records(paths: Iterable[str] | str, since=None, until=None, progress=None, types=None) -> RecordReader:
    """Stream records from JSON-lines files (``.gz`` too). Returns a :class:`RecordReader`:
    iterate it for dicts; afterwards ``.skipped`` holds the number of corrupt lines."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [os.fspath(paths)]
    return RecordReader(paths, since=since, until=until, progress=progress, types=types)


_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")


class PgRecordSource:
    """Iterable over ``record`` values (JSON text; jsonb in schema 1) of ``performance_metrics`` between since/until.

    Uses asyncpg in a private event loop (driven step by step from this synchronous iterator)
    and a server-side cursor inside a read-only transaction, so memory is bounded by
    ``batch_size`` rows. Must not be iterated from a thread that is running an event loop.
    """

    def __init__(self, dsn: str, since=None, until=None, table: str = "performance_metrics",
                 batch_size: int = 5000, server_settings: dict | None = None):
        if not _IDENT.match(table):
            raise ValueError("table must be an identifier or schema.identifier")
        self.dsn = dsn
        self.since = since
        self.until = until
        self.table = table
        self.batch_size = batch_size
        self.server_settings = server_settings
        self.skipped = 0
        self.records = 0

    def stats(self) -> dict:
        return {"source": "postgresql", "records": self.records, "skipped_lines": self.skipped}

    @staticmethod
    def _as_dt(v):
        if v is None:
            return None
        if isinstance(v, str):
            return parse_time(v)
        if isinstance(v, _dt.datetime) and v.tzinfo is None:
            return v.replace(tzinfo=_dt.timezone.utc)
        if isinstance(v, _dt.date) and not isinstance(v, _dt.datetime):
            return _dt.datetime(v.year, v.month, v.day, tzinfo=_dt.timezone.utc)
        return v

    def __iter__(self) -> Iterator[dict]:
        import asyncio

        import asyncpg

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise RuntimeError("iter_records_from_pg is synchronous; call it outside a running event loop "
                               "(e.g. via loop.run_in_executor)")
        loop = asyncio.new_event_loop()
        conn = tr = None
        since, until = self._as_dt(self.since), self._as_dt(self.until)
        where, args = [], []
        if since is not None:
            args.append(since)
            where.append(f"timestamp >= ${len(args)}")
        if until is not None:
            args.append(until)
            where.append(f"timestamp < ${len(args)}")
        sql = f"SELECT record::text FROM {self.table}"
        if where:
            sql += " WHERE " + " AND ".join(where)
        loads = orjson.loads
        try:
            try:
                conn = loop.run_until_complete(asyncpg.connect(self.dsn, server_settings=self.server_settings))
            except Exception as e:   # never echo the DSN (it may hold a password)
                raise ConnectionError(f"cannot connect to the PostgreSQL store: {type(e).__name__}") from None
            tr = conn.transaction(readonly=True)
            loop.run_until_complete(tr.start())
            has_type = loop.run_until_complete(conn.fetchval(
                "SELECT count(*) FROM pg_attribute WHERE attrelid = to_regclass($1) AND attname = 'type' "
                "AND NOT attisdropped", self.table))
            # metrics records first: a reader must know which processes they cover before their spans
            sql += " ORDER BY type IS DISTINCT FROM 'metrics', timestamp" if has_type else " ORDER BY timestamp"
            cur = loop.run_until_complete(conn.cursor(sql, *args))
            while True:
                rows = loop.run_until_complete(cur.fetch(self.batch_size))
                if not rows:
                    break
                for (text,) in rows:
                    if text is None:
                        self.skipped += 1
                        continue
                    try:
                        rec = loads(text)
                    except orjson.JSONDecodeError:
                        self.skipped += 1
                        continue
                    if type(rec) is not dict:
                        self.skipped += 1
                        continue
                    self.records += 1
                    yield rec
        finally:
            try:
                if tr is not None:
                    loop.run_until_complete(tr.rollback())
            except Exception:
                pass
            try:
                if conn is not None:
                    loop.run_until_complete(conn.close())
            except Exception:
                pass
            loop.close()


def iter_records_from_pg(dsn: str, since=None, until=None, table: str = "performance_metrics",
                         batch_size: int = 5000, server_settings: dict | None = None) -> PgRecordSource:
    """Records from the PostgreSQL store (``record`` column, JSON text, filtered on ``timestamp``)."""
    return PgRecordSource(dsn, since, until, table=table, batch_size=batch_size, server_settings=server_settings)
