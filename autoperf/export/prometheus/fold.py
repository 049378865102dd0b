"""Cumulative totals for Prometheus, folded from ``metrics`` and ``resource`` records.

Counters and classic histogram buckets only ever grow: every ``metrics`` record (one key, one
interval, one process) is added to its key's totals and nothing is ever taken away, so a process
that exits keeps its share and the sum over processes never goes backwards. Gauges keep the latest
``resource`` record of each process (host + pid) and drop it once it is ``stale_s`` old.
"""
from __future__ import annotations

import bisect
import time
from datetime import datetime

from autoperf.metrics.exphist import bucket_index, lower_bound
from autoperf.tracecontext import trace_hex

DEFAULT_BUCKETS_MS = (1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000)


class Totals:
    """The cumulative state of one key (labels): count, sum, buckets and the exact counters."""

    __slots__ = ("count", "sum_s", "buckets", "over_sla", "over_threshold", "deadline_missed", "sla_s",
                 "threshold_s", "retained", "labels", "exemplars")

    def __init__(self, n_buckets):
        self.count = 0
        self.sum_s = 0.0
        self.buckets = [0] * (n_buckets + 1)      # the last one is +Inf
        self.over_sla = self.over_threshold = self.deadline_missed = 0
        self.sla_s = self.threshold_s = None
        self.retained = {}
        self.labels = None          # the key's label text, made at the first scrape (render)
        self.exemplars = None       # classic bucket -> (seconds, trace id hex, span id hex, epoch s): the latest


def _epoch(iso) -> float | None:
    if not iso:
        return None
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _shard_label(rec) -> str:
    ids = rec.get("shard_ids")
    return ",".join(str(i) for i in ids) if ids else ""


def flow_key(rec):
    """(flow, kind, status, measure, shard) of a root's record."""
    return (rec.get("name") or "", rec.get("kind") or "", rec.get("status") or "",
            rec.get("measure") or "duration", _shard_label(rec))


def span_key(rec):
    """(name, kind, status, flow, fingerprint, shard) of a child span's record."""
    return (rec.get("name") or "", rec.get("kind") or "", rec.get("status") or "", rec.get("flow_name") or "",
            rec.get("fingerprint") or "", _shard_label(rec))


class Fold:
    """Everything the endpoint serves; ``add(rec)`` takes any record and keeps what it needs."""

    def __init__(self, buckets_ms=DEFAULT_BUCKETS_MS, stale_s=60.0, clock=time.time, max_keys=5000):
        self.bounds_s = sorted(float(b) / 1000.0 for b in buckets_ms)
        self.max_keys = max_keys        # per table; later keys are counted under name "_other"
        self.overflowed = 0
        self.flows: dict = {}
        self.spans: dict = {}
        self.resources: dict = {}       # (host, pid) -> (seen at, resource record)
        self._cuts_by_scale: dict = {}
        self.records = 0
        self.unreadable = 0
        self.stale_s = stale_s
        self.clock = clock

    def add(self, rec: dict) -> None:
        kind = rec.get("type")
        if kind == "metrics":
            self._add_metrics(rec)
        elif kind == "resource":
            self.resources[(rec.get("host"), rec.get("pid"))] = (self.clock(), rec)
        else:
            return
        self.records += 1

    def _add_metrics(self, rec):
        if rec.get("root"):
            table, key = self.flows, flow_key(rec)
        elif (rec.get("measure") or "duration") != "duration":
            return      # a pool job's queue wait / run / transfer: not calls of the span's series
        else:
            table, key = self.spans, span_key(rec)
        totals = table.get(key)
        if totals is None:
            if len(table) >= self.max_keys:
                # a bound on series (and memory): distinct SQL or names without end land in one key
                self.overflowed += 1
                key = ("_other", *key[1:-2], "", key[-1]) if table is self.spans else ("_other", *key[1:])
                totals = table.get(key)
            if totals is None:
                totals = table[key] = Totals(len(self.bounds_s))
        count = int(rec.get("count") or 0)
        totals.count += count
        totals.sum_s += float(rec.get("sum_ms") or 0.0) / 1000.0
        self._add_buckets(totals.buckets, rec, count)
        totals.over_sla += int(rec.get("over_sla") or 0)
        totals.over_threshold += int(rec.get("over_threshold") or 0)
        totals.deadline_missed += int(rec.get("deadline_missed") or 0)
        if rec.get("sla_ms") is not None:
            totals.sla_s = float(rec["sla_ms"]) / 1000.0
        if rec.get("threshold_ms") is not None:
            totals.threshold_s = float(rec["threshold_ms"]) / 1000.0
        for rule, n in (rec.get("retained_by") or {}).items():
            totals.retained[rule] = totals.retained.get(rule, 0) + int(n or 0)
        if rec.get("exemplars"):
            self._add_exemplars(totals, rec["exemplars"])

    def _add_exemplars(self, totals, exemplars):
        """The record's slowest spans, each kept as its classic bucket's exemplar (the trace id is the
        flow's, as OTLP export derives it: a bucket links to the trace in Tempo or Jaeger)."""
        kept = totals.exemplars
        if kept is None:
            kept = totals.exemplars = {}
        for ex in exemplars:
            try:
                value = float(ex["duration_ms"]) / 1000.0
                trace = trace_hex(int(ex["flow_id"], 16))
                at = _epoch(ex.get("timestamp"))
            except (KeyError, TypeError, ValueError):
                continue
            kept[bisect.bisect_left(self.bounds_s, value)] = (value, trace, ex.get("span_id") or "", at)

    def _cuts(self, scale):
        """Per classic bound, the first exponential bucket index (at ``scale``) counted above it: the
        bucket holding the bound goes below it when its harmonic mid-point does. Cached per scale."""
        cuts = self._cuts_by_scale.get(scale)
        if cuts is None:
            cuts = []
            for bound in self.bounds_s:
                i = bucket_index(bound, scale)
                a, b = lower_bound(i, scale), lower_bound(i + 1, scale)
                cuts.append(i + 1 if 2.0 * a * b / (a + b) <= bound else i)
            self._cuts_by_scale[scale] = cuts
        return cuts

    def _add_buckets(self, buckets, rec, count):
        """The exponential histogram's buckets into the classic ones: each bucket's count goes where
        its value estimate falls (the harmonic mid-point, kept within the classic buckets of the
        record's exact min and max), so a classic boundary is off by at most one exponential bucket
        (~1 % at scale 6). One slice sum per classic bucket (the cuts in the record's index space)."""
        bounds = self.bounds_s
        hist = rec.get("hist") or {}
        low = bisect.bisect_left(bounds, float(rec.get("min_ms") or 0.0) / 1000.0)
        high = bisect.bisect_left(bounds, float(rec.get("max_ms") or 0.0) / 1000.0)
        zero = int(hist.get("zero_count") or 0)
        placed = zero
        spread = [0] * len(buckets)
        spread[0] = zero
        counts = hist.get("counts") or ()
        if counts:
            offset = int(hist.get("offset") or 0)
            start = 0
            for j, cut in enumerate(self._cuts(int(hist.get("scale", 6)))):
                stop = min(max(cut - offset, 0), len(counts))
                if stop > start:
                    spread[j] += sum(counts[start:stop])
                    start = stop
            spread[-1] += sum(counts[start:])
            placed += sum(counts)
        if placed < count:          # a record without buckets: its max decides (exact count, coarse place)
            spread[high] += count - placed
        below, above = sum(spread[:low]), sum(spread[high + 1:])
        for j in range(low, high + 1):
            buckets[j] += spread[j]
        buckets[low] += below
        buckets[high] += above

    def live_resources(self) -> list:
        """The latest ``resource`` record of each process seen within ``stale_s``."""
        now = self.clock()
        for key in [k for k, (seen, _) in self.resources.items() if now - seen > self.stale_s]:
            del self.resources[key]
        return [rec for _, rec in self.resources.values()]
