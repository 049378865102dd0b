"""One interval's aggregates of finished spans, and the ``metrics`` records they become.

The key is (name, kind, status, flow_name, root, measure, fingerprint), as the ``metrics`` record
names it (docs/records.md). ``Interval.add`` is called by the writer for every finished span with
plain fields (no record dict is made for it); ``Interval.records`` turns the interval into one
``metrics`` record per key and starts the next one empty.
"""
from __future__ import annotations

import heapq
import math

from autoperf.metrics.exphist import DEFAULT_SCALE, ExpHistogram

_log = math.log
_ceil = math.ceil
_LN2 = math.log(2.0)
_K6 = (1 << DEFAULT_SCALE) / _LN2


class Agg:
    """count / sum / min / max in ns, a histogram over seconds, exemplars, exact counters."""

    __slots__ = ("count", "sum_ns", "min_ns", "max_ns", "hist", "ex", "sla_ms", "threshold_ms",
                 "over_sla", "over_threshold", "deadline_missed", "interactions", "retained", "retained_by")

    def __init__(self, site):
        self.count = 0
        self.sum_ns = 0
        self.min_ns = None
        self.max_ns = 0
        self.hist = ExpHistogram()
        self.ex = []                 # min-heap of (duration_ns, span_id, flow_id, start_ns)
        self.sla_ms = self.threshold_ms = None
        if site is not None:
            self.sla_ms, self.threshold_ms = site.sla_ms, site.threshold_ms
        self.over_sla = self.over_threshold = 0
        self.deadline_missed = 0
        self.interactions = 0        # flows answering an interaction (deadline_missed is known)
        self.retained = 0
        self.retained_by = None


def record_value(agg: Agg, dur: int, exemplars: int, span_id, flow_id, start_ns) -> None:
    """Count one observation of ``dur`` ns (the writer inlines the same steps for spans)."""
    agg.count += 1
    agg.sum_ns += dur
    if agg.min_ns is None or dur < agg.min_ns:
        agg.min_ns = dur
    if dur > agg.max_ns:
        agg.max_ns = dur
    hist = agg.hist
    if dur > 0:
        index = _ceil(_log(dur * 1e-9) * _K6) - 1 if hist.scale == DEFAULT_SCALE else \
            _ceil(_log(dur * 1e-9) * (1 << hist.scale) / _LN2) - 1
        k = index - hist.offset
        counts = hist.counts
        if 0 <= k < len(counts):
            counts[k] += 1
        else:
            hist._grow(index, 1)      # noqa: SLF001 - the histogram widens (or downscales) itself
    else:
        hist.zero_count += 1
    ex = agg.ex
    if len(ex) < exemplars:
        heapq.heappush(ex, (dur, span_id, flow_id, start_ns))
    elif exemplars and dur > ex[0][0]:
        heapq.heapreplace(ex, (dur, span_id, flow_id, start_ns))


def _hex(value) -> str:
    try:
        return value.to_bytes(8, "big").hex()
    except (OverflowError, AttributeError, TypeError):
        return f"{value:016x}" if isinstance(value, int) else str(value)


def metrics_record(key, agg: Agg, start_iso: str, end_iso: str, interval_s: float, iso_of) -> dict:
    """The ``metrics`` record of one key over one interval (``iso_of``: perf ns -> ISO text)."""
    name, kind, status, flow_name, root, measure, fingerprint = key
    hist = agg.hist
    rec = {
        "timestamp": end_iso, "level": "INFO", "type": "metrics",
        "interval_start": start_iso, "interval_s": interval_s,
        "name": name, "kind": kind, "status": status, "flow_name": flow_name, "root": root,
        "measure": measure,
        "count": agg.count, "sum_ms": agg.sum_ns / 1e6,
        "min_ms": (agg.min_ns or 0) / 1e6, "max_ms": agg.max_ns / 1e6,
        "hist": hist.to_dict(),
    }
    if fingerprint is not None:
        rec["fingerprint"] = fingerprint
    if agg.sla_ms is not None:
        rec["sla_ms"] = agg.sla_ms
        rec["over_sla"] = agg.over_sla
    if agg.threshold_ms is not None:
        rec["threshold_ms"] = agg.threshold_ms
        rec["over_threshold"] = agg.over_threshold
    if agg.interactions:
        rec["deadline_missed"] = agg.deadline_missed
    rec["exemplars"] = [
        {"duration_ms": dur // 1000 / 1000, "flow_id": _hex(flow_id), "span_id": _hex(span_id),
         "timestamp": iso_of(start_ns)}
        for dur, span_id, flow_id, start_ns in sorted(agg.ex, reverse=True)]
    if root and measure == "duration":
        rec["retained"] = agg.retained
        rec["retained_by"] = dict(agg.retained_by or {})
    return rec
