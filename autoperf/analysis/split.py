"""A log directory with metrics read on two cores: the metrics files in a worker, the span files here.

A serial pass folds the metrics first because a process that wrote them (its host, pid and UTC day:
``covered``) has its span records read for details only, never counted. Here the span files are
read while the worker folds the metrics, so whether a process is covered is *predicted* from its
first span or flow_complete record: a writer that aggregates writes ``"retained"`` on every one.
The prediction is checked against what the metrics covered; any difference (a process killed
before its first interval, a window that cut its metrics) and the inputs are read again serially.
A covered span names its statement in a ``DbState`` made on demand (the serial pass finds the one
its metrics made); a statement the metrics lack (or key otherwise, by its text) also sends
the inputs to the serial pass. Otherwise the merged state is the serial pass's.
"""
from __future__ import annotations

import sys

__all__ = ["aggregate_split"]


def _fold(paths, since, until, agg_kwargs):
    """The worker: the metrics files folded into an Aggregator (and the reader's stats)."""
    import itertools

    from . import metricsfold
    from .aggregate import Aggregator
    from .reader import read_records
    # the slowest flows' tie-break: the metrics' before the spans' (as read serially), never equal to one
    # of this process's parent (a fork continues its count)
    metricsfold._seq = itertools.count(-(1 << 40))
    src = read_records(paths, since=since, until=until)
    agg = Aggregator(**agg_kwargs)
    agg.add_all(src)
    return agg, src.stats()


def _read_spans(paths, metrics, since, until, agg_kwargs, progress):
    """This process: the span files, coverage predicted per (host, pid, UTC day)."""
    from .aggregate import Aggregator
    from .reader import read_records
    src = read_records(paths, since=since, until=until, progress=progress)
    src.alongside = set(metrics)            # unretained lines of covered files: skipped unread, as serially
    agg = Aggregator(**agg_kwargs)
    agg.db_on_demand = set()
    predicted: dict = {}
    cover = agg.coverage
    add = agg.add
    for rec in src:
        t = rec.get("type")
        if t == "span" or t == "flow_complete":
            ts = rec.get("timestamp")
            key = (rec.get("host"), rec.get("pid"), ts[:10] if ts.__class__ is str else None)
            c = predicted.get(key)
            if c is None:
                c = predicted[key] = "retained" in rec
                if c:
                    cover.add(key)
        add(rec)
    return agg, src.stats(), predicted


def _fit_to_metrics(spans, metrics) -> bool:
    """The span side's statements as the serial pass leaves them; False when it cannot know how (a
    statement the metrics lack, or key by its text: the serial pass's lookups then depend on order)."""
    if any(fp not in metrics.db for fp in spans.db_on_demand):
        return False
    spans.db_on_demand = None
    for fp, db in spans.db.items():     # what a span says replaces the metrics' (read after them serially)
        mine = metrics.db.get(fp)
        if mine is not None:
            mine.statement = db.statement or mine.statement
            mine.operation = db.operation or mine.operation
            mine.system = db.system or mine.system
    return True


def _stats(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = out.get(k, 0 if not isinstance(v, list) else []) + v
    return out


def aggregate_split(paths, since, until, agg_kwargs, progress=None):
    """``(Aggregator, stats)`` as the serial pass gives it, or None when the prediction failed."""
    import concurrent.futures as cf
    import multiprocessing as mp
    import threading

    from .reader import is_metrics_file
    metrics = [p for p in paths if is_metrics_file(p)]
    spans = [p for p in paths if not is_metrics_file(p)]
    ctx = mp.get_context("fork" if sys.platform.startswith("linux") and threading.active_count() == 1
                         else "spawn")
    with cf.ProcessPoolExecutor(max_workers=1, mp_context=ctx) as ex:
        fut = ex.submit(_fold, metrics, since, until, dict(agg_kwargs))
        side, side_stats, predicted = _read_spans(spans, metrics, since, until, agg_kwargs, progress)
        try:
            agg, stats = fut.result()
        except Exception:           # the worker died (killed, out of memory): the serial pass answers
            return None
    if any(c != (key in agg.coverage) for key, c in predicted.items()) or not _fit_to_metrics(side, agg):
        return None
    agg.merge(side)
    agg.flush_open()
    return agg, _stats(stats, side_stats)
