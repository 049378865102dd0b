"""Aggregate big JSON-line logs on several cores.

Files are cut into byte ranges (``.gz`` files stay whole); each worker process aggregates its ranges
with its own :class:`Aggregator` and the results are merged (``Aggregator.merge``). A line belongs to
the range in which it starts, so no line is lost or counted twice. Results equal a single pass except
for sampled reservoirs (still uniform) and flows whose spans straddle a range boundary (their
N+1 / concurrency bookkeeping may be split — a handful of flows per 64 MiB range).
"""
from __future__ import annotations

import os
import sys

__all__ = ["aggregate_files", "plan_ranges"]

RANGE_BYTES = 64 << 20


def plan_ranges(paths, range_bytes: int = RANGE_BYTES):
    out = []
    for p in paths:
        try:
            size = os.path.getsize(p)
        except OSError:
            out.append((p, 0, None))
            continue
        if p.endswith(".gz") or size <= range_bytes:
            out.append((p, 0, None))
            continue
        start = 0
        while start < size:
            end = min(size, start + range_bytes)
            out.append((p, start, end if end < size else None))
            start = end
    return out


def _range_lines(path, start, end, chunk=1 << 20):
    """Lines that start in [start, end) (end None = to EOF). Memory stays bounded: a "line" longer than
    ``reader.MAX_LINE`` is yielded as one undecodable marker (counted as skipped) and dropped."""
    from .reader import MAX_LINE
    if path.endswith(".gz"):
        import gzip
        f = gzip.open(path, "rb")
    else:
        f = open(path, "rb")
    with f:
        buf_pos = start
        discarding = False
        if start > 0:                       # the line straddling `start` belongs to the previous range
            f.seek(start - 1)
            buf_pos = start - 1
            discarding = True
        buf = b""
        while True:
            b = f.read(chunk)
            if not b:
                if buf and not discarding and (end is None or buf_pos < end):
                    yield buf
                return
            if discarding:
                nl = b.find(b"\n")
                if nl < 0:
                    buf_pos += len(b)
                    continue
                buf_pos += nl + 1
                b = b[nl + 1:]
                discarding = False
                if end is not None and buf_pos >= end:
                    return
            data = buf + b if buf else b
            parts = data.split(b"\n")
            buf = parts.pop()
            off = buf_pos
            for line in parts:
                if end is not None and off >= end:
                    return
                yield line
                off += len(line) + 1
            buf_pos = off
            if end is not None and buf_pos >= end:
                return                      # the unfinished line starts in the next range
            if len(buf) > MAX_LINE:
                yield b"\x00"               # one bad line (fails to decode -> counted as skipped)
                buf_pos += len(buf)
                buf = b""
                discarding = True


def _work(task):
    (ranges, since, until, agg_kwargs) = task
    import orjson

    from .aggregate import Aggregator
    from .reader import to_ts
    kw = dict(agg_kwargs)
    if ranges and ranges[0][1] > 0:
        kw.setdefault("defer_head", 5000)
    agg = Aggregator(**kw)
    add = agg.add
    loads = orjson.loads
    JSONDecodeError = orjson.JSONDecodeError
    since, until = to_ts(since), to_ts(until)
    skipped = lines = filtered = records = nbytes = 0
    for (path, start, end) in ranges:
        for line in _range_lines(path, start, end):
            nbytes += len(line) + 1
            if not line or line.isspace():
                continue
            lines += 1
            try:
                rec = loads(line)
            except JSONDecodeError:
                skipped += 1
                continue
            if rec.__class__ is not dict:
                skipped += 1
                continue
            if since is not None or until is not None:
                ts = rec.get("timestamp")
                if ts.__class__ is not str or (since is not None and ts < since) or (until is not None and ts >= until):
                    filtered += 1
                    continue
            records += 1
            add(rec)
    return agg, {"lines": lines, "records": records, "skipped_lines": skipped, "filtered": filtered, "bytes": nbytes}


def aggregate_files(paths, since=None, until=None, jobs: int | None = None, agg_kwargs: dict | None = None,
                    progress=None, range_bytes: int = RANGE_BYTES):
    """Aggregate ``paths`` with ``jobs`` processes. Returns ``(Aggregator, stats)``."""
    from .reader import _file_may_overlap, to_ts
    agg_kwargs = dict(agg_kwargs or {})
    s, u = to_ts(since), to_ts(until)
    paths = [p for p in paths if _file_may_overlap(p, s, u)]
    ranges = plan_ranges(paths, range_bytes)
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(ranges) or 1))
    total = sum(os.path.getsize(p) for p in paths if os.path.exists(p))
    from .aggregate import Aggregator
    if jobs == 1:
        agg, st = _work((ranges, s, u, agg_kwargs))
        results = [(agg, st)]
    else:
        import concurrent.futures as cf
        import multiprocessing as mp
        import threading
        ctx = mp.get_context("fork" if sys.platform.startswith("linux") and threading.active_count() == 1
                             else "spawn")
        tasks = [([r], s, u, agg_kwargs) for r in ranges]
        results = [None] * len(tasks)
        done_bytes = 0
        with cf.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as ex:
            futs = {ex.submit(_work, t): i for i, t in enumerate(tasks)}
            for fut in cf.as_completed(futs):
                results[futs[fut]] = fut.result()
                done_bytes += results[futs[fut]][1]["bytes"]
                if progress is not None:
                    try:
                        progress(min(done_bytes, total), total)
                    except Exception:
                        pass
    merged = Aggregator(**agg_kwargs)
    stats = {"files": len(paths), "lines": 0, "records": 0, "skipped_lines": 0, "filtered": 0, "bytes": 0,
             "jobs": jobs, "ranges": len(ranges)}
    for agg, st in results:          # in file order, so flows keep their time order across ranges
        merged.merge(agg)
        for k in ("lines", "records", "skipped_lines", "filtered", "bytes"):
            stats[k] += st[k]
    merged.flush_open()
    return merged, stats
