"""Aggregate big JSON-line logs on several cores.

Files are cut into byte ranges (``.gz`` files stay whole); each worker process aggregates its ranges
with its own :class:`Aggregator` and the results are merged (``Aggregator.merge``). A line belongs to
the range in which it starts, so no line is lost or counted twice. Results equal a single pass except
for sampled reservoirs (still uniform) and flows whose spans straddle a range boundary (their
N+1 / concurrency bookkeeping may be split — a handful of flows per 64 MiB range).

A worker reads its span line by line (orjson, ``Aggregator.add``). Used for big logs without metrics
records (old logs, every span); with metrics the CLI folds them in a worker beside its own read of the
span files (split.py).
"""
from __future__ import annotations

import os
import sys

__all__ = ["aggregate_files", "plan_ranges"]

RANGE_BYTES = None      # default: one contiguous span of bytes per worker


def plan_ranges(paths, range_bytes: int = 64 << 20):
    """(path, start, end) pieces of at most ``range_bytes`` (``.gz`` files whole; end None = EOF)."""
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


def plan_spans(paths, n_spans: int):
    """Cut the concatenation of ``paths`` (in order) into ``n_spans`` contiguous spans of about equal size.
    Each span is a list of (path, start, end) ranges; ``.gz`` files are never cut."""
    sizes = []
    for p in paths:
        try:
            sizes.append(os.path.getsize(p))
        except OSError:
            sizes.append(0)
    total = sum(sizes) or 1
    target = total / max(1, n_spans)
    spans, cur, filled = [], [], 0.0
    for p, size in zip(paths, sizes):
        start = 0
        while True:
            room = target - filled
            rest = size - start
            if p.endswith(".gz") or rest <= room or len(spans) == n_spans - 1:
                cur.append((p, start, None))
                filled += rest
                break
            cut = start + max(1, int(room))
            cur.append((p, start, cut))
            spans.append(cur)
            cur, filled, start = [], 0.0, cut
        if filled >= target and len(spans) < n_spans - 1:
            spans.append(cur)
            cur, filled = [], 0.0
    if cur:
        spans.append(cur)
    return spans


def _range_lines(path, start, end, chunk=1 << 20):
    """Lines that start in [start, end) (end None = to EOF). Memory stays bounded: a "line" longer than
    ``blocks.MAX_LINE`` is yielded as one undecodable marker (counted as skipped) and dropped."""
    from .blocks import MAX_LINE
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


_progress = None            # a worker's view of the shared per-span byte counts (set by _init)


def _init(shared):
    global _progress
    _progress = shared


def _report(slot, nbytes):
    if _progress is not None:
        _progress[slot] = nbytes


def _work(task):
    (ranges, since, until, agg_kwargs, first, slot) = task
    import itertools

    from . import metricsfold
    from .aggregate import Aggregator
    metricsfold._seq = itertools.count(slot << 40)     # slowest flows' tie-break: in input order, never equal
    kw = dict(agg_kwargs)
    if not first:            # flows may have begun in the previous span (or the previous day's file)
        kw.setdefault("defer_head", 5000)
    agg = Aggregator(**kw)
    import orjson

    from .reader import to_ts
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
            if not records & 8191:
                _report(slot, nbytes)
    _report(slot, nbytes)
    return agg, {"lines": lines, "records": records, "skipped_lines": skipped, "filtered": filtered, "bytes": nbytes}


def aggregate_files(paths, since=None, until=None, jobs: int | None = None, agg_kwargs: dict | None = None,
                    progress=None, range_bytes: int | None = RANGE_BYTES):
    """Aggregate ``paths`` with ``jobs`` processes. Returns ``(Aggregator, stats)``.

    The inputs (in order) are cut into ``jobs`` contiguous spans (or spans of ``range_bytes``), each
    aggregated by one worker with orjson line by line; the partial aggregates are merged in input
    order as they arrive, so at most a few are held at once. Workers share their byte counts, so
    ``progress`` moves while they read.
    """
    from .aggregate import Aggregator
    from .reader import _file_may_overlap, to_ts
    agg_kwargs = dict(agg_kwargs or {})
    s, u = to_ts(since), to_ts(until)
    paths = [p for p in paths if _file_may_overlap(p, s, u)]
    jobs = max(1, jobs or os.cpu_count() or 1)
    total = sum(os.path.getsize(p) for p in paths if os.path.exists(p))
    n_spans = jobs if not range_bytes else max(jobs, -(-total // range_bytes))
    spans = plan_spans(paths, n_spans) if paths else []
    jobs = max(1, min(jobs, len(spans)))
    tasks = [(sp, s, u, agg_kwargs, i == 0, i) for i, sp in enumerate(spans)]
    merged = Aggregator(**agg_kwargs)
    stats = {"files": len(paths), "lines": 0, "records": 0, "skipped_lines": 0, "filtered": 0, "bytes": 0,
             "jobs": jobs, "spans": len(spans)}

    shown = [0]

    def show(done):
        if progress is not None and done >= shown[0]:      # never backwards
            shown[0] = done
            try:
                progress(min(done, total), total)
            except Exception:
                pass

    def fold(res):
        agg, st = res
        merged.merge(agg)
        for k in ("lines", "records", "skipped_lines", "filtered", "bytes"):
            stats[k] += st[k]
        show(stats["bytes"])

    if jobs == 1:
        for t in tasks:
            fold(_work(t))
    else:
        import concurrent.futures as cf
        import multiprocessing as mp
        import threading
        ctx = mp.get_context("fork" if sys.platform.startswith("linux") and threading.active_count() == 1
                             else "spawn")
        shared = ctx.Array("q", len(tasks), lock=False)    # bytes read per span, written by its worker
        waiting: dict = {}
        nxt = 0
        with cf.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_init,
                                    initargs=(shared,)) as ex:
            futs = {ex.submit(_work, t): i for i, t in enumerate(tasks)}
            pending = set(futs)
            while pending:
                done, pending = cf.wait(pending, timeout=0.5, return_when=cf.FIRST_COMPLETED)
                for fut in done:
                    waiting[futs[fut]] = fut.result()
                while nxt in waiting:          # merge in input order: boundary flows re-join correctly
                    fold(waiting.pop(nxt))
                    nxt += 1
                if pending:
                    show(sum(shared))
    merged.flush_open()
    return merged, stats
