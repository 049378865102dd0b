"""``metrics`` and ``resource`` records -> an OTLP ExportMetricsServiceRequest.

Each ``metrics`` record (METRICS_CONTRACT: one key's interval aggregate, histogram over seconds)
becomes an ExponentialHistogram data point; its errors, SLA misses and deadline misses feed
monotonic sums. Temporality ``delta`` sends each interval as it is; ``cumulative`` (the default)
merges every interval of a key since this process began (``ExpHistogram.merge``). ``resource``
records become gauges. Names and attributes: docs/export.md.
"""
from __future__ import annotations

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.metrics.v1 import metrics_pb2 as pb
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from autoperf import tracecontext
from autoperf.export.otlp_encode import SCOPE, iso_to_ns, key_values, resource_attributes, resource_key
from autoperf.metrics.exphist import ExpHistogram

DELTA = pb.AGGREGATION_TEMPORALITY_DELTA
CUMULATIVE = pb.AGGREGATION_TEMPORALITY_CUMULATIVE

#: (kind, measure) -> histogram metric name; anything else: autoperf.span.duration
_HIST_NAMES = {("db", "duration"): "db.client.operation.duration",
               ("http", "duration"): "http.client.request.duration",
               ("flow", "duration"): "autoperf.flow.duration",
               ("cycle", "duration"): "autoperf.flow.duration",
               ("flow", "first_response"): "autoperf.flow.first_response.duration"}
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
    __slots__ = ("start_ns", "hist", "count", "sum", "min", "max", "errors", "over_sla", "deadline_missed")

    def __init__(self, start_ns):
        self.start_ns = start_ns
        self.hist = None
        self.count, self.sum, self.min, self.max = 0, 0.0, None, None
        self.errors = self.over_sla = self.deadline_missed = 0


class MetricsEncoder:
    """Keeps the cumulative state of every key (bounded by the keys the program has)."""

    MAX_SERIES = 20_000

    def __init__(self, temporality: str = "cumulative", resource_extra: dict | None = None):
        self.cumulative = temporality != "delta"
        self.resource_extra = resource_extra or {}
        self._series: dict = {}

    def _fold(self, rec):
        """The data to send for ``rec``: the interval itself (delta) or the running total."""
        start = iso_to_ns(rec.get("interval_start") or rec.get("timestamp"))
        hist = ExpHistogram.from_dict(rec.get("hist") or {}, count=rec.get("count"),
                                      sum=(rec.get("sum_ms") or 0.0) / 1000.0,
                                      min=_div(rec.get("min_ms")), max=_div(rec.get("max_ms")))
        errors = int(rec.get("count") or 0) if rec.get("status") not in (None, "success") else 0
        interval = _Series(start)
        interval.hist, interval.count, interval.sum = hist, hist.count, hist.sum
        interval.min, interval.max = _div(rec.get("min_ms")), _div(rec.get("max_ms"))
        interval.errors, interval.over_sla = errors, int(rec.get("over_sla") or 0)
        interval.deadline_missed = int(rec.get("deadline_missed") or 0)
        if not self.cumulative:
            return interval
        key = (resource_key(rec),) + tuple(rec.get(f) for f in _KEY_FIELDS)
        series = self._series.get(key)
        if series is None:
            if len(self._series) >= self.MAX_SERIES:
                self._series.clear()    # restart the totals (a reset the backend sees by start time)
            series = self._series[key] = _Series(start)
            series.hist = ExpHistogram(hist.scale)
        series.hist.merge(hist)
        series.count += interval.count
        series.sum += interval.sum
        series.min = interval.min if series.min is None else min(series.min, interval.min or series.min)
        series.max = interval.max if series.max is None else max(series.max, interval.max or series.max)
        series.errors += interval.errors
        series.over_sla += interval.over_sla
        series.deadline_missed += interval.deadline_missed
        return series

    def request(self, records) -> ExportMetricsServiceRequest | None:
        groups: dict = {}
        for rec in records:
            kind = rec.get("type")
            if kind not in ("metrics", "resource"):
                continue
            key = resource_key(rec)
            group = groups.get(key)
            if group is None:
                group = groups[key] = (rec, {})
            try:
                if kind == "metrics":
                    self._add_histogram(group[1], rec)
                else:
                    self._add_gauges(group[1], rec)
            except (KeyError, ValueError, TypeError):
                continue     # a malformed record: the others still go
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

    def _add_histogram(self, metrics, rec):
        data = self._fold(rec)
        end = iso_to_ns(rec.get("timestamp"))
        attrs = key_values(key_attributes(rec))
        name = _HIST_NAMES.get((rec.get("kind"), rec.get("measure") or "duration"), "autoperf.span.duration")
        metric = self._metric(metrics, name, "s", "Duration of autoperf spans (exact count, sum, min, max)", "exp")
        h = data.hist
        point = metric.exponential_histogram.data_points.add(
            attributes=attrs, start_time_unix_nano=data.start_ns, time_unix_nano=end, count=data.count,
            sum=data.sum, scale=h.scale, zero_count=h.zero_count)
        if data.min is not None:
            point.min = data.min
        if data.max is not None:
            point.max = data.max
        counts = h.to_dict()
        point.positive.offset = counts["offset"]
        point.positive.bucket_counts.extend(counts["counts"])
        for ex in rec.get("exemplars") or ():
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
