"""``metrics`` and ``resource`` records -> an OTLP ExportMetricsServiceRequest.

Each ``metrics`` record (METRICS_CONTRACT: one key's interval aggregate, histogram over seconds)
becomes an ExponentialHistogram data point; its errors, SLA misses and deadline misses feed
monotonic sums. Temporality ``delta`` sends each interval as it is; ``cumulative`` (the default)
merges every interval of a key since this process began (``ExpHistogram.merge``). With an export
interval, a key's point goes once per export instead of once per record. ``resource`` records
become gauges. Names and attributes: docs/export.md.
"""
from __future__ import annotations

import time

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.metrics.v1 import metrics_pb2 as pb
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from autoperf import tracecontext
from autoperf.export.otlp_encode import SCOPE, iso_to_ns, key_values, resource_attributes, resource_key
from itertools import compress
from operator import add as _add

from autoperf.metrics.exphist import DEFAULT_SCALE, MAX_BUCKETS, ExpHistogram

DELTA = pb.AGGREGATION_TEMPORALITY_DELTA
CUMULATIVE = pb.AGGREGATION_TEMPORALITY_CUMULATIVE

#: (kind, measure) -> histogram metric name; anything else: autoperf.span.duration
_HIST_NAMES = {("db", "duration"): "db.client.operation.duration",
               ("http", "duration"): "http.client.request.duration",
               ("flow", "duration"): "autoperf.flow.duration",
               ("cycle", "duration"): "autoperf.flow.duration",
               ("flow", "first_response"): "autoperf.flow.first_response.duration",
               ("job", "queue_wait"): "autoperf.job.queue_wait.duration",
               ("job", "run"): "autoperf.job.run.duration",
               ("job", "transfer"): "autoperf.job.transfer.duration"}
_KEY_FIELDS = ("name", "kind", "status", "flow_name", "root", "measure", "fingerprint")

#: resource record field -> (metric name, unit, scale to the unit)
_GAUGES = {"rss_mb": ("process.memory.usage", "By", 1024 * 1024),
           "uss_mb": ("autoperf.process.memory.uss", "By", 1024 * 1024),
           "cpu_percent": ("process.cpu.utilization", "1", 0.01),
           "threads": ("process.thread.count", "{thread}", 1),
           "open_fds": ("process.open_file_descriptor.count", "{file_descriptor}", 1),
           "active_flows": ("autoperf.flows.active", "{flow}", 1),
           "system_memory_percent": ("system.memory.utilization", "1", 0.01),
           "max_worker_rss_mb": ("autoperf.workers.memory.max", "By", 1024 * 1024),
           "gateway_latency_ms": ("autoperf.discord.gateway.latency", "s", 0.001)}


def key_attributes(rec: dict) -> dict:
    attrs = {"autoperf.name": rec.get("name"), "autoperf.kind": rec.get("kind"),
             "autoperf.status": rec.get("status"), "autoperf.root": bool(rec.get("root"))}
    if rec.get("flow_name"):
        attrs["autoperf.flow.name"] = rec["flow_name"]
    if rec.get("measure") and rec["measure"] != "duration":
        attrs["autoperf.measure"] = rec["measure"]
    kind, name = rec.get("kind"), rec.get("name") or ""
    if kind == "db":
        if rec.get("fingerprint"):
            attrs["db.query.text"] = rec["fingerprint"]
        if name.startswith("db."):
            attrs["db.operation.name"] = name[3:].upper()
    elif kind == "http":
        method, _, template = name.partition(" ")
        if template:
            attrs["http.request.method"], attrs["url.template"] = method, template
    if rec.get("status") not in (None, "success"):
        attrs["error.type"] = rec["status"]
    return {k: v for k, v in attrs.items() if v is not None}


class _Series:
    """One key's histogram in OTLP's layout (scale, zero_count, offset, counts) with exact count, sum, min, max."""

    __slots__ = ("start_ns", "scale", "zero_count", "offset", "counts", "owned", "count", "sum", "min", "max",
                 "errors", "over_sla", "deadline_missed")

    def __init__(self, start_ns, rec):
        hist = rec.get("hist") or {}
        self.start_ns = start_ns
        self.scale = int(hist.get("scale", DEFAULT_SCALE))
        self.zero_count = int(hist.get("zero_count") or 0)
        self.offset = int(hist.get("offset") or 0)
        self.counts = hist.get("counts") or []     # the record's list, copied only if this one is added to
        self.owned = False
        self.count = int(rec.get("count") or 0)
        self.sum = float(rec.get("sum_ms") or 0.0) / 1000.0
        self.min, self.max = _div(rec.get("min_ms")), _div(rec.get("max_ms"))
        # one count per span: a flow's first response and a job's parts are other measures of the same calls
        counted = (rec.get("measure") or "duration") == "duration"
        self.errors = self.count if counted and rec.get("status") not in (None, "success") else 0
        self.over_sla = int(rec.get("over_sla") or 0)
        self.deadline_missed = int(rec.get("deadline_missed") or 0)

    def add(self, other: "_Series"):
        """Fold a later interval in (buckets added at the common scale)."""
        if other.counts:
            if not self.counts:
                self.scale, self.offset, self.counts = other.scale, other.offset, list(other.counts)
                self.owned = True
            elif other.scale == self.scale:
                _add_buckets(self, other.offset, other.counts)
            else:                     # a histogram that was downscaled: the general merge
                mine, theirs = self.histogram(), other.histogram()
                mine.merge(theirs)
                self.scale, self.offset, self.counts, self.owned = mine.scale, mine.offset, mine.counts, True
        self.zero_count += other.zero_count
        self.count += other.count
        self.sum += other.sum
        self.min = other.min if self.min is None else (self.min if other.min is None else min(self.min, other.min))
        self.max = other.max if self.max is None else (self.max if other.max is None else max(self.max, other.max))
        self.errors += other.errors
        self.over_sla += other.over_sla
        self.deadline_missed += other.deadline_missed

    def histogram(self) -> ExpHistogram:
        return ExpHistogram.from_dict({"scale": self.scale, "zero_count": self.zero_count, "offset": self.offset,
                                       "counts": self.counts}, count=self.count, sum=self.sum, min=self.min,
                                      max=self.max)


def _add_buckets(series, offset, counts):
    """``series.counts += counts`` placed at ``offset`` (same scale), widening as needed. An interval's
    buckets are mostly zeros (a few dozen observations over ~150 buckets): then only the non-zero ones
    are added (found by ``compress``, a C loop), else one ``map(add)`` over the range."""
    if not series.owned:
        series.counts, series.owned = list(series.counts), True
    mine = series.counts
    lo = min(series.offset, offset)
    hi = max(series.offset + len(mine), offset + len(counts))
    if hi - lo > MAX_BUCKETS:     # would exceed the bound: the general merge downscales
        h = series.histogram()
        h.merge(ExpHistogram.from_dict({"scale": series.scale, "offset": offset, "counts": counts}))
        series.scale, series.offset, series.counts = h.scale, h.offset, h.counts
        return
    if lo < series.offset:
        mine[:0] = [0] * (series.offset - lo)
        series.offset = lo
    if hi > series.offset + len(mine):
        mine.extend([0] * (hi - series.offset - len(mine)))
    k = offset - series.offset
    n = len(counts)
    if (n - counts.count(0)) * 3 < n:
        for i in compress(range(n), counts):
            mine[k + i] += counts[i]
    else:
        mine[k:k + n] = map(_add, mine[k:k + n], counts)


class MetricsEncoder:
    """Keeps the cumulative state of every key (bounded by the keys the program has).

    ``interval_s`` > 0: a key's point is sent once per export (at most every ``interval_s``, and
    whenever ``final``), for everything its records brought since the last one: cumulative sends the
    total, delta the intervals merged. 0: a point per record.
    """

    MAX_SERIES = 20_000
    MAX_EXEMPLARS = 10      # per key and export

    def __init__(self, temporality: str = "cumulative", resource_extra: dict | None = None,
                 interval_s: float = 0.0, clock=time.monotonic):
        self.cumulative = temporality != "delta"
        self.resource_extra = resource_extra or {}
        self.interval_s = interval_s
        self._clock = clock
        self._series: dict = {}
        self._attrs: dict = {}          # key -> its points' KeyValue list (made once per key, not per point)
        self._pending: dict = {}        # key -> [latest record, data, exemplars] not yet sent
        self._held = 0                  # records folded into the pending points
        self.covered = 0                # records the last request carries (sent, spilled or lost with it)
        self._last_emit = clock()

    def _key(self, rec):
        return (resource_key(rec),) + tuple(rec.get(f) for f in _KEY_FIELDS)

    def _fold(self, rec, key):
        """The data to send for ``rec``: the interval itself (delta) or the running total."""
        interval = _Series(iso_to_ns(rec.get("interval_start") or rec.get("timestamp")), rec)
        if not self.cumulative:
            return interval
        series = self._series.get(key)
        if series is None:
            if len(self._series) >= self.MAX_SERIES:
                self._series.clear()    # restart the totals (a reset the backend sees by start time)
            self._series[key] = interval
            return interval
        series.add(interval)
        return series

    def pending(self) -> bool:
        return bool(self._pending)

    def due_in(self):
        """Seconds until the pending points are due (0: now), or None when none wait."""
        if not self._pending:
            return None
        return max(0.0, self._last_emit + self.interval_s - self._clock())

    def request(self, records, final: bool = False) -> ExportMetricsServiceRequest | None:
        """The request for ``records`` (their gauges; their histogram points now or, with an export
        interval, once due) — None when nothing is to be sent."""
        groups: dict = {}
        covered = 0
        for rec in records:
            kind = rec.get("type")
            if kind not in ("metrics", "resource"):
                continue
            try:
                if kind == "resource":
                    self._add_gauges(self._group(groups, rec), rec)
                    covered += 1
                    continue
                key = self._key(rec)
                data = self._fold(rec, key)
                if self.interval_s <= 0:
                    self._add_histogram(self._group(groups, rec), rec, data, rec.get("exemplars"), key)
                    covered += 1
                    continue
                self._held += 1
                waiting = self._pending.get(key)
                if waiting is None:
                    self._pending[key] = [rec, data, list(rec.get("exemplars") or ())[:self.MAX_EXEMPLARS]]
                else:
                    if not self.cumulative and waiting[1] is not data:
                        waiting[1].add(data)        # delta: the intervals since the last export, merged
                    else:
                        waiting[1] = data
                    waiting[0] = rec
                    room = self.MAX_EXEMPLARS - len(waiting[2])
                    if room > 0:
                        waiting[2].extend(list(rec.get("exemplars") or ())[:room])
            except (KeyError, ValueError, TypeError):
                continue     # a malformed record: the others still go
        if self._pending and (final or self._clock() - self._last_emit >= self.interval_s):
            for key, (rec, data, exemplars) in self._pending.items():
                try:
                    self._add_histogram(self._group(groups, rec), rec, data, exemplars, key)
                except (KeyError, ValueError, TypeError):
                    continue
            self._pending.clear()
            covered += self._held
            self._held = 0
            self._last_emit = self._clock()
        self.covered = covered
        if not groups:
            return None
        request = ExportMetricsServiceRequest()
        for first, metrics in groups.values():
            if not metrics:
                continue
            rm = request.resource_metrics.add()
            rm.resource.CopyFrom(Resource(attributes=key_values(resource_attributes(first, self.resource_extra))))
            sm = rm.scope_metrics.add()
            sm.scope.CopyFrom(SCOPE)
            sm.metrics.extend(metrics.values())
        return request if request.resource_metrics else None

    @staticmethod
    def _group(groups, rec) -> dict:
        key = resource_key(rec)
        group = groups.get(key)
        if group is None:
            group = groups[key] = (rec, {})
        return group[1]

    def _metric(self, metrics, name, unit, description, shape):
        metric = metrics.get(name)
        if metric is None:
            metric = metrics[name] = pb.Metric(name=name, unit=unit, description=description)
            if shape == "exp":
                metric.exponential_histogram.aggregation_temporality = CUMULATIVE if self.cumulative else DELTA
            elif shape == "sum":
                metric.sum.aggregation_temporality = CUMULATIVE if self.cumulative else DELTA
                metric.sum.is_monotonic = True
            else:
                metric.gauge.SetInParent()
        return metric

    def _attributes(self, key, rec) -> list:
        attrs = self._attrs.get(key)
        if attrs is None:
            if len(self._attrs) >= self.MAX_SERIES:
                self._attrs.clear()
            attrs = self._attrs[key] = key_values(key_attributes(rec))
        return attrs

    def _add_histogram(self, metrics, rec, data, exemplars, key):
        end = iso_to_ns(rec.get("timestamp"))
        attrs = self._attributes(key, rec)
        name = _HIST_NAMES.get((rec.get("kind"), rec.get("measure") or "duration"), "autoperf.span.duration")
        metric = self._metric(metrics, name, "s", "Duration of autoperf spans (exact count, sum, min, max)", "exp")
        point = metric.exponential_histogram.data_points.add(
            attributes=attrs, start_time_unix_nano=data.start_ns, time_unix_nano=end, count=data.count,
            sum=data.sum, scale=data.scale, zero_count=data.zero_count)
        if data.min is not None:
            point.min = data.min
        if data.max is not None:
            point.max = data.max
        point.positive.offset = data.offset
        point.positive.bucket_counts.extend(data.counts)
        for ex in exemplars or ():
            try:
                flow = int(ex["flow_id"], 16)
                point.exemplars.add(time_unix_nano=iso_to_ns(ex.get("timestamp")),
                                    as_double=float(ex["duration_ms"]) / 1000.0,
                                    span_id=bytes.fromhex(ex.get("span_id") or ex["flow_id"]),
                                    trace_id=tracecontext.trace_id_of(flow))
            except (KeyError, ValueError, TypeError):
                continue
        for field, metric_name, description in (
                ("errors", "autoperf.errors", "Spans that ended in an error or were cancelled"),
                ("over_sla", "autoperf.sla.exceeded", "Spans over their sla_ms"),
                ("deadline_missed", "autoperf.deadline.missed", "Interactions that missed Discord's 3-s deadline")):
            value = getattr(data, field)
            if not value and not (field == "over_sla" and "over_sla" in rec) and not (
                    field == "deadline_missed" and "deadline_missed" in rec):
                continue
            counter = self._metric(metrics, metric_name, "{span}", description, "sum")
            counter.sum.data_points.add(attributes=attrs, start_time_unix_nano=data.start_ns,
                                        time_unix_nano=end, as_int=int(value))

    def _add_gauges(self, metrics, rec):
        end = iso_to_ns(rec.get("timestamp"))
        for field, (name, unit, scale) in _GAUGES.items():
            value = rec.get(field)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self._gauge(metrics, name, unit, end, value * scale, {})
        lag = rec.get("loop_lag_ms")
        if isinstance(lag, dict):
            for stat in ("p50", "p95", "max"):
                if isinstance(lag.get(stat), (int, float)):
                    self._gauge(metrics, "autoperf.event_loop.lag", "s", end, lag[stat] / 1000.0,
                                {"autoperf.stat": stat})
        pool = rec.get("db_pool")
        if isinstance(pool, dict):
            for field, state in (("in_use", "used"), ("idle", "idle")):
                if isinstance(pool.get(field), int):
                    self._gauge(metrics, "db.client.connection.count", "{connection}", end, pool[field],
                                {"db.client.connection.state": state})
            if isinstance(pool.get("waiters"), int):
                self._gauge(metrics, "db.client.connection.pending_requests", "{request}", end, pool["waiters"], {})
            if isinstance(pool.get("utilisation_pct"), (int, float)):
                self._gauge(metrics, "autoperf.db.pool.utilization", "1", end, pool["utilisation_pct"] / 100.0, {})
        ppool = rec.get("process_pool")
        if isinstance(ppool, dict):
            for field in ("busy", "pending", "workers"):
                if isinstance(ppool.get(field), int):
                    self._gauge(metrics, f"autoperf.process_pool.{field}", "{job}" if field != "workers" else
                                "{process}", end, ppool[field], {})

    def _gauge(self, metrics, name, unit, time_ns, value, attrs):
        metric = self._metric(metrics, name, unit, "", "gauge")
        point = metric.gauge.data_points.add(time_unix_nano=time_ns, attributes=key_values(attrs))
        if isinstance(value, int):
            point.as_int = value
        else:
            point.as_double = float(value)


def _div(ms):
    return None if ms is None else float(ms) / 1000.0
