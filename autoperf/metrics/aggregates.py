"""One interval's aggregates of finished spans, and the ``metrics`` records they become.

The key is (name, kind, status, flow_name, root, measure, fingerprint), as the ``metrics`` record
names it (docs/records.md). ``Interval.add`` is called by the writer for every finished span with
plain fields (no record dict is made for it); ``Interval.records`` turns the interval into one
``metrics`` record per key and starts the next one empty. A key's ``labels`` (``key_labels``: a
statement's text, a job's executor, a command's interaction type) are read once, when the key first
appears in an interval: readers need them for keys none of whose spans was retained.
"""
from __future__ import annotations

import collections
import heapq
import math

from autoperf.metrics.exphist import DEFAULT_SCALE, ExpHistogram
from autoperf.records import hex16

_log = math.log
_ceil = math.ceil
_LN2 = math.log(2.0)
_K6 = (1 << DEFAULT_SCALE) / _LN2


FOLD_AT = 4096        # durations buffered per key before they are folded into the histogram
_HUGE = 1 << 63
_OFFSET6 = math.log(1e9) * _K6      # ns -> seconds, in bucket units: log(d * 1e-9) = log(d) - log(1e9)


class Agg:
    """count / sum / min / max in ns, a histogram over seconds, exemplars, exact counters.

    The writer only appends each duration to ``durs`` (one list append per span); ``fold`` turns
    them into count, sum, min, max (C-level ``sum``/``min``/``max``) and bucket counts (a list
    comprehension and a C-level ``Counter``) every ``FOLD_AT`` values and at the interval's end.
    """

    __slots__ = ("count", "sum_ns", "min_ns", "max_ns", "hist", "durs", "ex", "ex_floor", "sla_ms", "threshold_ms",
                 "over_sla", "over_threshold", "deadline_missed", "interactions", "retained", "retained_by", "kind",
                 "labels")

    def __init__(self, site, exemplars=5):
        self.count = 0
        self.sum_ns = 0
        self.min_ns = _HUGE
        self.max_ns = 0
        self.hist = ExpHistogram()
        self.durs = []
        self.ex = []                 # min-heap of (duration_ns, span_id, flow_id, start_ns)
        self.ex_floor = -1 if exemplars > 0 else _HUGE   # a span must be slower to be an exemplar
        self.sla_ms = self.threshold_ms = None
        if site is not None:
            self.sla_ms, self.threshold_ms = site.sla_ms, site.threshold_ms
        self.over_sla = self.over_threshold = 0
        self.deadline_missed = 0
        self.interactions = 0        # flows answering an interaction (deadline_missed is known)
        self.retained = 0
        self.retained_by = None
        self.kind = None             # the key's kind (the writer's cache checks it)
        self.labels = None           # key_labels of the key's first span (a dict), or None

    def fold(self) -> None:
        durs = self.durs
        if not durs:
            return
        self.durs = []
        self.count += len(durs)
        self.sum_ns += sum(durs)
        low, high = min(durs), max(durs)
        if low < self.min_ns:
            self.min_ns = low
        if high > self.max_ns:
            self.max_ns = high
        hist = self.hist
        if low <= 0:
            positive = [d for d in durs if d > 0]
            hist.zero_count += len(durs) - len(positive)
            durs = positive
        indices = collections.Counter([_ceil(_log(d) * _K6 - _OFFSET6) - 1 for d in durs])
        shift = DEFAULT_SCALE - hist.scale          # > 0 only after a downscale (never for durations)
        counts = hist.counts
        for index, n in indices.items():
            if shift:
                index >>= shift
            k = index - hist.offset
            if 0 <= k < len(counts):
                counts[k] += n
            else:
                hist._grow(index, n)                # noqa: SLF001 - widens (or downscales) itself
                counts = hist.counts
                shift = DEFAULT_SCALE - hist.scale


#: the span attributes a ``metrics`` record repeats, by kind of key: what names or classifies the key
#: for a reader (the statement of a fingerprint, a pool job's executor, a command's interaction type)
_DB_LABELS, _JOB_LABELS, _ROOT_LABELS = ("statement",), ("executor",), ("interaction_type", "command")


def key_labels(kind, root: bool, attrs, more):
    """The labels of a new key, from its first span's attributes (``more``: a compact span's extra attrs)."""
    names = _DB_LABELS if kind == "db" else _JOB_LABELS if kind == "job" else _ROOT_LABELS if root else None
    if names is None:
        return None
    out = None
    for name in names:
        value = (more and more.get(name)) or (attrs and attrs.get(name))
        if type(value) is str:
            if out is None:
                out = {}
            out[name] = value
    return out


def exemplar(agg: Agg, limit: int, dur, span_id, flow_id, start_ns) -> None:
    """Keep the span among the ``limit`` slowest of the interval (called when ``dur > ex_floor``)."""
    ex = agg.ex
    if len(ex) < limit:
        heapq.heappush(ex, (dur, span_id, flow_id, start_ns))
        if len(ex) == limit:
            agg.ex_floor = ex[0][0]
    else:
        heapq.heapreplace(ex, (dur, span_id, flow_id, start_ns))
        agg.ex_floor = ex[0][0]


def record_value(agg: Agg, dur: int, exemplars: int, span_id, flow_id, start_ns) -> None:
    """Count one observation of ``dur`` ns (the writer inlines the same steps for spans)."""
    durs = agg.durs
    durs.append(dur)
    if len(durs) >= FOLD_AT:
        agg.fold()
    if dur > agg.ex_floor:
        exemplar(agg, exemplars, dur, span_id, flow_id, start_ns)


def metrics_record(key, agg: Agg, start_iso: str, end_iso: str, interval_s: float, iso_of) -> dict:
    """The ``metrics`` record of one key over one interval (``iso_of``: perf ns -> ISO text)."""
    name, kind, status, flow_name, root, measure, fingerprint = key
    agg.fold()
    hist = agg.hist
    rec = {
        "timestamp": end_iso, "level": "INFO", "type": "metrics",
        "interval_start": start_iso, "interval_s": interval_s,
        "name": name, "kind": kind, "status": status, "flow_name": flow_name, "root": root,
        "measure": measure,
        "count": agg.count, "sum_ms": agg.sum_ns / 1e6,
        "min_ms": (agg.min_ns if agg.count else 0) / 1e6, "max_ms": agg.max_ns / 1e6,
        "hist": hist.to_dict(),
    }
    if fingerprint is not None:
        rec["fingerprint"] = fingerprint
    if agg.labels:
        rec.update(agg.labels)
    if agg.sla_ms is not None:
        rec["sla_ms"] = agg.sla_ms
        rec["over_sla"] = agg.over_sla
    if agg.threshold_ms is not None:
        rec["threshold_ms"] = agg.threshold_ms
        rec["over_threshold"] = agg.over_threshold
    if agg.interactions:
        rec["deadline_missed"] = agg.deadline_missed
    rec["exemplars"] = [
        {"duration_ms": dur // 1000 / 1000, "flow_id": hex16(flow_id), "span_id": hex16(span_id),
         "timestamp": iso_of(start_ns)}
        for dur, span_id, flow_id, start_ns in sorted(agg.ex, reverse=True)]
    if root and measure == "duration":
        rec["retained"] = agg.retained
        rec["retained_by"] = dict(agg.retained_by or {})
    return rec
