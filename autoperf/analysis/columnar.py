"""Columnar reader of `autoperf report` (``--engine columnar``): DuckDB parses the logs, SQL group-bys feed
the Aggregator.

The pure-Python path decodes every line with orjson and walks it in ``Aggregator.add`` (about 10 us a
record here). This path reads the JSON-line files in chunks of whole lines (``CHUNK_BYTES``), lets
DuckDB's multi-threaded NDJSON reader turn each chunk into columns under an explicit schema (the fields
the report reads, docs/records.md), and folds each chunk into the *same* :class:`Aggregator` state with
a handful of vectorised queries (the fold: columnar_fold.py):

* counts, errors, thresholds, SLA, first responses, statuses: ``GROUP BY`` per command / operation /
  fingerprint, folded in order of first appearance (so dicts keep the Python path's order);
* durations: per key, the chunk's values in file order go to ``Reservoir.add_many`` — the same kept
  sample, the same random stream, so percentiles are *identical* to the Python path (not merely close);
* per-flow suggestion state: ``columnar_flows`` (flows still open at a chunk's end carry over);
* rare records (resource, loop_blocked, warning, dropped, explain, job and cycle spans, unknown types)
  go through the Python code, decoded from their lines.

Memory is bounded by one chunk (DuckDB's table of it) plus the Aggregator's own bounds. A chunk DuckDB
cannot read goes through the Python path whole; a line that is not a JSON object is counted as
skipped, as on the Python path. Differences: float sums other than reservoir totals (db total, N+1 and
gather savings) may differ in the last bits (summation order); a value of a JSON type the schema does
not expect (e.g. a quoted number as ``duration_ms``) is cast by DuckDB where the Python path ignores it.
"""
from __future__ import annotations

import os
import shutil
import tempfile

import orjson

from autoperf import pids

from .blocks import whole_line_blocks
from .columnar_fold import ChunkFolding

__all__ = ["available", "aggregate_files_columnar", "ColumnarReader", "CHUNK_BYTES"]

CHUNK_BYTES = 32 << 20

# The fields the report reads (read_json `columns`). VARCHAR for sla_ms / rows keeps the JSON text: an int
# stays an int. A malformed line, a line that is not an object, and an object without "type" read as a row
# whose type is NULL: those lines go through the Python code.
_COLUMNS = ("{timestamp: 'VARCHAR', level: 'VARCHAR', type: 'VARCHAR', name: 'VARCHAR', kind: 'VARCHAR', "
            "span_id: 'VARCHAR', parent_id: 'VARCHAR', flow_id: 'VARCHAR', flow_name: 'VARCHAR', "
            "flow_kind: 'VARCHAR', duration_ms: 'DOUBLE', status: 'VARCHAR', sla_ms: 'VARCHAR', threshold_ms: 'VARCHAR', "
            "attrs: 'STRUCT(fingerprint VARCHAR, statement VARCHAR, operation VARCHAR, system VARCHAR, "
            "\"rows\" VARCHAR, explain JSON)', "
            "metadata: 'STRUCT(command VARCHAR, interaction_type VARCHAR, first_response_ms DOUBLE, "
            "deadline_missed BOOLEAN)'}")

# rows the Python code handles (by their line): everything but plain spans and flow_complete
_RARE = ("type NOT IN ('span', 'flow_complete') "
         "OR (type = 'span' AND kind IN ('job', 'cycle') AND d IS NOT NULL)")


def available() -> bool:
    import importlib.util
    return importlib.util.find_spec("duckdb") is not None


_TMP_PREFIX = "autoperf-report-"


def chunk_dir_base(chunk_bytes: int = CHUNK_BYTES) -> str:
    """Where chunk directories go: /dev/shm (memory) when it has room, else the temp directory."""
    try:    # a container's /dev/shm may be tiny
        if os.access("/dev/shm", os.W_OK) and shutil.disk_usage("/dev/shm").free > 4 * chunk_bytes:
            return "/dev/shm"
    except OSError:
        pass
    return tempfile.gettempdir()


def _remove_stale_chunk_dirs(base: str) -> None:
    """Delete chunk directories left by reports that were killed (their pid is gone).

    A report stopped by SIGKILL or a crash cannot clean up after itself, and on /dev/shm its chunk
    (up to ``CHUNK_BYTES``) holds memory until reboot. The directory name carries the pid.
    """
    try:
        names = os.listdir(base)
    except OSError:
        return
    for name in names:
        if not name.startswith(_TMP_PREFIX):
            continue
        pid = name[len(_TMP_PREFIX):].partition("-")[0]
        if not pid.isdigit() or int(pid) == os.getpid() or pids.alive(int(pid)):
            continue
        shutil.rmtree(os.path.join(base, name), ignore_errors=True)


def _q(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


class ColumnarReader(ChunkFolding):
    """Feeds one :class:`Aggregator` from JSON-line files, chunk by chunk (see module doc)."""

    def __init__(self, agg, since=None, until=None, threads: int | None = None, chunk_bytes: int = CHUNK_BYTES,
                 progress=None, tmpdir: str | None = None):
        import duckdb

        from .reader import to_ts
        self.agg = agg
        self.since, self.until = to_ts(since), to_ts(until)
        self.chunk_bytes = chunk_bytes
        self.progress = progress
        # No progress bar: DuckDB prints it on stdout (also to a pipe) once a query runs > 2 s, which
        # would land in the middle of `autoperf report --format json > out.json`.
        self.con = duckdb.connect(config={"threads": max(1, threads or os.cpu_count() or 1),
                                          "preserve_insertion_order": True, "memory_limit": "2GB"})
        self.con.execute("SET enable_progress_bar = false")
        self.con.execute("SET enable_progress_bar_print = false")
        base = tmpdir or chunk_dir_base(chunk_bytes)
        _remove_stale_chunk_dirs(base)
        self.tmp = tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{os.getpid()}-", dir=base)
        self.chunk_path = os.path.join(self.tmp, "chunk.ndjson")
        self.seq = 0                    # global row number of the next chunk's first row
        self.files_read: list[str] = []
        self.files_missing: list[str] = []
        self.lines = self.records = self.skipped = self.filtered = self.bytes_read = 0
        self.chunks = self.fallback_chunks = 0
        self.lines_bytes = 0            # bytes of the whole lines read (exact, also for byte ranges)
        from .columnar_flows import FlowChunks
        self.flows = FlowChunks(self)
        sla = [(k, float(v)) for k, v in agg.sla.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
        self.con.execute("CREATE TEMP TABLE cfg_sla (name VARCHAR, sla DOUBLE)")
        if sla:
            self.con.executemany("INSERT INTO cfg_sla VALUES (?, ?)", sla)

    def close(self):
        try:
            self.con.close()
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def stats(self) -> dict:
        return {"files": len(self.files_read), "missing_files": list(self.files_missing), "lines": self.lines,
                "records": self.records, "skipped_lines": self.skipped, "filtered": self.filtered,
                "bytes": self.bytes_read}

    # ------------------------------------------------------------------ input
    def _blocks(self, path, start=0, end=None):
        """Chunks of whole lines of one file (of the lines starting in ``[start, end)``), about
        ``chunk_bytes`` each."""
        out, size = [], 0
        for b, end in whole_line_blocks(path, self, start=start, end=end):
            out.append(b if end == len(b) else b[:end])
            size += end
            if size >= self.chunk_bytes:
                buf = b"".join(out)
                start = 0
                while len(buf) - start >= self.chunk_bytes:   # whole lines, about chunk_bytes each
                    end = buf.find(b"\n", start + self.chunk_bytes - 1) + 1
                    if end == 0:
                        break
                    yield buf[start:end]
                    start = end
                buf = buf[start:]
                out, size = ([buf], len(buf)) if buf else ([], 0)
        if out:
            yield b"".join(out)

    def run(self, paths):
        """Read ``paths``: file names, or ``(path, start, end)`` byte ranges (a parallel worker's span)."""
        from .reader import _file_may_overlap
        todo, total = [], 0
        for item in paths:
            p, start, end = (item, 0, None) if isinstance(item, str) else item
            if not _file_may_overlap(p, self.since, self.until):
                continue
            try:
                total += (end if end is not None else os.path.getsize(p)) - start
                todo.append((p, start, end))
            except OSError:
                self.files_missing.append(p)
        for p, start, end in todo:
            if p not in self.files_read:
                self.files_read.append(p)
            for block in self._blocks(p, start, end):
                self.lines_bytes += len(block)
                if self.agg.deferring:
                    block = self._python_head(block)
                    if not block:
                        continue
                self.chunk(block)
                if self.progress is not None:
                    try:
                        self.progress(min(self.bytes_read, total), total)
                    except Exception:
                        pass
        if self.progress is not None:
            try:
                self.progress(total, total)
            except Exception:
                pass
        return self

    # ------------------------------------------------------------------ one chunk
    def chunk(self, data: bytes) -> None:
        self.chunks += 1
        with open(self.chunk_path, "wb") as f:
            f.write(data)
        try:
            n = self._load(data)
        except Exception:                   # DuckDB could not read it: the Python path, whole chunk
            if os.environ.get("AUTOPERF_COLUMNAR_STRICT"):
                raise
            self.fallback_chunks += 1
            self._python_chunk(data)
            return
        if n:
            self._fold()
        self.seq += n

    def _load(self, data: bytes) -> int:
        keep = "TRUE"
        if self.since is not None or self.until is not None:
            keep = ["ts IS NOT NULL"]
            if self.since is not None:
                keep.append(f"ts >= {_q(self.since)}")
            if self.until is not None:
                keep.append(f"ts < {_q(self.until)}")
            keep = f"coalesce({' AND '.join(keep)}, FALSE)"
        con = self.con
        # ids are only compared: 64-bit hashes group faster than strings (flow_id is kept for open flows).
        # DuckDB's default maximum_object_size (16 MiB) is blocks.MAX_LINE, the longest line any reader keeps;
        # raising it to the chunk size made each chunk ~1.6x slower to load (measured: 0.137 vs 0.085 s / 32 MB).
        con.execute(f"""
            CREATE OR REPLACE TEMP TABLE raw AS
            SELECT type, level, timestamp AS ts, coalesce(nullif(name, ''), '?') AS name, kind,
                   hash(parent_id) AS parent, flow_id IS NOT NULL AS has_fid, hash(flow_id) AS fh,
                   span_id IS NOT DISTINCT FROM flow_id AS is_root, flow_name, flow_kind, duration_ms AS d,
                   status, status IS NOT NULL AND status <> 'success' AS err, sla_ms AS sla_txt,
                   threshold_ms AS th_txt, TRY_CAST(threshold_ms AS DOUBLE) AS th,
                   CASE WHEN kind = 'db' THEN coalesce(nullif(attrs.fingerprint, ''), nullif(attrs.statement, ''),
                                                       nullif(name, ''), '?') END AS fp,
                   attrs.rows AS a_rows, attrs.explain AS a_explain,
                   metadata.command AS command, metadata.interaction_type AS itype,
                   metadata.first_response_ms AS fr, metadata.deadline_missed AS dm
            FROM read_json({_q(self.chunk_path)}, format = 'newline_delimited', columns = {_COLUMNS},
                           ignore_errors = true)""")
        n, untyped, filtered = con.execute(
            f"SELECT count(*), count(*) FILTER (type IS NULL), count(*) FILTER (type IS NOT NULL AND NOT {keep}) "
            f"FROM raw").fetchone()
        self._data, self._lines, self._n = data, None, n
        self.lines += n
        self.filtered += filtered
        self.records += n - untyped - filtered
        # rowid of `raw` is the line's place in the chunk; `c` keeps it as `rn` for ordering
        con.execute(f"CREATE OR REPLACE TEMP VIEW c AS SELECT rowid AS rn, *, ({_RARE}) AS rare FROM raw "
                    f"WHERE type IS NOT NULL AND {keep}")
        self._typeless = []
        if untyped:
            self._untyped([rn for (rn,) in con.execute("SELECT rowid FROM raw WHERE type IS NULL "
                                                        "ORDER BY rowid").fetchall()])
        return n

    def line(self, rn: int) -> bytes:
        """The chunk's ``rn``-th non-blank line (DuckDB's row ``rn``)."""
        if self._lines is None:
            lines = self._data.split(b"\n")
            lines.pop()                       # the chunk ends with a newline
            if len(lines) != self._n:         # blank lines: DuckDB skips them
                lines = [x for x in lines if x and not x.isspace()]
            if len(lines) != self._n:
                raise ValueError("DuckDB rows do not match the chunk's lines")
            self._lines = lines
        return self._lines[rn]

    def _untyped(self, rns) -> None:
        """Lines DuckDB read as rows without a type: corrupt lines, non-objects (skipped, as on the Python
        path) and objects without "type" (counted in _fold: nothing else reads them)."""
        lines = [self.line(rn) for rn in rns]
        for rn, line in zip(rns, lines):
            rec = self._decode(line)
            if rec is not None:
                self._typeless.append((rn, rec))

    def _decode(self, line):
        """The record on ``line``, counted; None (counted as skipped or filtered) when there is none."""
        try:
            rec = orjson.loads(line)
        except orjson.JSONDecodeError:
            self.skipped += 1
            return None
        if type(rec) is not dict:
            self.skipped += 1
            return None
        since, until = self.since, self.until
        if since is not None or until is not None:
            ts = rec.get("timestamp")
            if type(ts) is not str or (since is not None and ts < since) or (until is not None and ts >= until):
                self.filtered += 1
                return None
        self.records += 1
        return rec

    def _python_chunk(self, data: bytes) -> None:
        """The Python path for one chunk (RecordReader's rules: blank lines ignored, non-objects skipped)."""
        self._python_lines(data, head_only=False)

    def _python_head(self, data: bytes) -> bytes:
        """The lines of ``data`` that end the Aggregator's deferred head flows (``defer_head``: a parallel
        worker's first flows may have spans in the previous span, merge() judges them whole) go through
        the Python path, which defers them; what follows is returned for the columnar path."""
        return self._python_lines(data, head_only=True)

    def _python_lines(self, data: bytes, head_only: bool) -> bytes:
        """Lines of ``data`` through ``Aggregator.add`` — all of them, or (``head_only``) until the
        Aggregator defers no more flows; returns the rest."""
        agg = self.agg
        add, decode = agg.add, self._decode
        pos, n = 0, len(data)
        while pos < n and (not head_only or agg.deferring):
            nl = data.find(b"\n", pos)
            if nl < 0:
                nl = n
            line = data[pos:nl]
            pos = nl + 1
            if not line or line.isspace():
                continue
            self.lines += 1
            self.seq += 1
            rec = decode(line)
            if rec is not None:
                add(rec)
        return data[pos:]


def aggregate_files_columnar(paths, since=None, until=None, agg_kwargs: dict | None = None, progress=None,
                             threads: int | None = None, chunk_bytes: int = CHUNK_BYTES):
    """``(Aggregator, stats)`` over ``paths`` like a single Python pass, or None when DuckDB is missing."""
    if not available():
        return None
    from .aggregate import Aggregator
    agg = Aggregator(**dict(agg_kwargs or {}))
    rd = ColumnarReader(agg, since, until, threads=threads, chunk_bytes=chunk_bytes, progress=progress)
    try:
        rd.run(paths)
    finally:
        rd.close()
    agg.flush_open()
    return agg, rd.stats()
