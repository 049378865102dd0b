"""The metric families of /metrics, built by prometheus_client from a ``Fold`` at each scrape.

prometheus_client does the exposition (text format, OpenMetrics when the scraper asks for it,
gzip); this module only names the families and their labels (docs/prometheus.md lists them).
"""
from __future__ import annotations

import math
import threading

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

_MB = 1024 * 1024
FLOW_LABELS = ["flow", "kind", "status", "measure", "shard"]
SPAN_LABELS = ["name", "kind", "status", "flow", "fingerprint", "shard"]
PROC_LABELS = ["pid", "shard"]

#: resource record field -> (metric, help, factor); nested fields as "outer.inner"
GAUGES = [
    ("rss_mb", "autoperf_process_rss_bytes", "Resident memory of a process that runs the sampler.", _MB),
    ("cpu_percent", "autoperf_process_cpu_percent", "CPU of the process, percent of one core.", 1),
    ("active_flows", "autoperf_active_flows", "Flows in progress.", 1),
    ("loop_lag_ms.p95", "autoperf_loop_lag_p95_seconds", "Event-loop lag p95 over the last sample interval.", 1e-3),
    ("loop_lag_ms.max", "autoperf_loop_lag_max_seconds", "Event-loop lag max over the last sample interval.", 1e-3),
    ("db_pool.in_use", "autoperf_db_pool_in_use", "DB pool connections in use.", 1),
    ("db_pool.size", "autoperf_db_pool_size", "DB pool connections open.", 1),
    ("db_pool.waiters", "autoperf_db_pool_waiters", "Tasks waiting for a DB pool connection.", 1),
    ("db_pool.utilisation_pct", "autoperf_db_pool_utilisation_ratio", "DB pool connections in use / max size.", 1e-2),
    ("process_pool.busy", "autoperf_process_pool_busy", "Process-pool workers running a job.", 1),
    ("process_pool.pending", "autoperf_process_pool_pending", "Process-pool jobs waiting for a worker.", 1),
    ("process_pool.workers", "autoperf_process_pool_workers", "Process-pool workers.", 1),
    ("gateway_latency_ms", "autoperf_gateway_latency_seconds", "Discord gateway heartbeat send -> ACK.", 1e-3),
    ("system_memory_percent", "autoperf_system_memory_percent", "Memory in use on the host, percent.", 1),
]


def _get(rec, path):
    value = rec
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _le(bound):
    return "+Inf" if math.isinf(bound) else repr(bound)


class FoldCollector:
    """A prometheus_client collector over a Fold; ``refresh()`` runs first (reads the new log lines)."""

    def __init__(self, fold, refresh=lambda: None, lock=None):
        self.fold = fold
        self.refresh = refresh
        self.lock = lock or threading.Lock()

    def describe(self):
        return []          # no collect() at registration: the families are known only from the data

    def collect(self):
        with self.lock:    # scrapes may overlap: one reads the logs and builds at a time
            self.refresh()
            return list(self._families())

    def _families(self):
        fold = self.fold
        les = [_le(b) for b in fold.bounds_s] + ["+Inf"]
        yield from self._histograms(fold.flows, "autoperf_flow_duration_seconds",
                                    "Duration of root flows (commands, events, cycles), by flow and status.",
                                    FLOW_LABELS, les)
        yield from self._histograms(fold.spans, "autoperf_span_duration_seconds",
                                    "Duration of spans inside flows (db, http, jobs, ...), by name and flow.",
                                    SPAN_LABELS, les)
        yield from self._flow_counters(fold.flows)
        yield from self._span_errors(fold.spans)
        yield from self._resources(fold.live_resources())
        records = CounterMetricFamily("autoperf_exporter_records", "Records read from the log directory.")
        records.add_metric([], fold.records)
        bad = CounterMetricFamily("autoperf_exporter_unreadable_lines", "Log lines that were not JSON.")
        bad.add_metric([], fold.unreadable)
        yield records
        yield bad

    @staticmethod
    def _histograms(table, name, doc, labels, les):
        family = HistogramMetricFamily(name, doc, labels=labels)
        for key, t in table.items():
            running, buckets = 0, []
            for le, n in zip(les, t.buckets):
                running += n
                buckets.append((le, running))
            family.add_metric(list(key), buckets, t.sum_s)
        yield family

    @staticmethod
    def _flow_counters(flows):
        labels = ["flow", "kind", "measure", "shard"]
        over_sla = CounterMetricFamily("autoperf_flow_over_sla", "Flows slower than their sla_ms.", labels=labels)
        deadline = CounterMetricFamily("autoperf_flow_deadline_missed",
                                       "Interactions answered after Discord's 3 s deadline.", labels=labels)
        errors = CounterMetricFamily("autoperf_flow_errors", "Flows that did not succeed, by status.",
                                     labels=FLOW_LABELS)
        retained = CounterMetricFamily("autoperf_flow_retained", "Flows retained (written in full), by rule.",
                                       labels=["flow", "kind", "rule", "shard"])
        sla = GaugeMetricFamily("autoperf_flow_sla_seconds", "The flow's sla_ms.", labels=["flow", "kind", "measure"])
        sums: dict = {}
        slas: dict = {}
        for (flow, kind, status, measure, shard), t in flows.items():
            key = (flow, kind, measure, shard)
            acc = sums.setdefault(key, [0, 0])
            acc[0] += t.over_sla
            acc[1] += t.deadline_missed
            if status != "success":
                errors.add_metric([flow, kind, status, measure, shard], t.count)
            for rule, n in t.retained.items():
                retained.add_metric([flow, kind, rule, shard], n)
            if t.sla_s is not None:
                slas[(flow, kind, measure)] = t.sla_s
        for key, (n_sla, n_deadline) in sums.items():
            over_sla.add_metric(list(key), n_sla)
            deadline.add_metric(list(key), n_deadline)
        for key, value in slas.items():
            sla.add_metric(list(key), value)
        yield from (over_sla, deadline, errors, retained, sla)

    @staticmethod
    def _span_errors(spans):
        errors = CounterMetricFamily("autoperf_span_errors", "Spans that did not succeed, by status.",
                                     labels=SPAN_LABELS)
        for key, t in spans.items():
            if key[2] != "success":
                errors.add_metric(list(key), t.count)
        yield errors

    @staticmethod
    def _resources(latest):
        families = {metric: GaugeMetricFamily(metric, doc, labels=PROC_LABELS) for _, metric, doc, _ in GAUGES}
        workers = GaugeMetricFamily("autoperf_worker_rss_bytes", "Resident memory of each child process (workers).",
                                    labels=["pid", "parent_pid", "pool_worker", "shard"])
        for rec in latest:
            pid = str(rec.get("pid"))
            shard = ",".join(str(i) for i in rec.get("shard_ids") or ())
            for path, metric, _, factor in GAUGES:
                value = _get(rec, path)
                if value is not None:
                    families[metric].add_metric([pid, shard], value * factor)
            for worker in rec.get("workers") or ():
                rss = _get(worker, "rss_mb")
                if rss is not None:
                    workers.add_metric([str(worker.get("pid")), pid, "true" if worker.get("pool_worker") else "false",
                                        shard], rss * _MB)
        yield from families.values()
        yield workers
