"""The /metrics body: Prometheus text format 0.0.4, or OpenMetrics 1.0 when the scraper asks.

Written here rather than by prometheus_client: its exposition formats every sample afresh (label
names validated and escaped each time, ~29 µs a sample: 150 ms of CPU for a 300-key scrape), while a
key's label text is the same at every scrape; kept per key, a sample is one string join. The tests
parse both formats with prometheus_client's own parsers. docs/prometheus.md lists the families.
"""
from __future__ import annotations

import math

_MB = 1024 * 1024
FLOW_LABELS = ("flow", "kind", "status", "measure", "shard")
SPAN_LABELS = ("name", "kind", "status", "flow", "fingerprint", "shard")
TEXT = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"

#: resource record field ("outer.inner" for nested) -> (metric, help, factor)
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


def wants_openmetrics(accept: str | None) -> bool:
    """Prometheus asks for OpenMetrics first; anything else gets the text format."""
    return bool(accept) and "application/openmetrics-text" in accept


def _escape(value) -> str:
    text = str(value)
    if "\\" in text or '"' in text or "\n" in text:
        text = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return text


def labels_text(names, values) -> str:
    """``a="x",b="y"`` (empty values kept: the same label set for every sample of a family)."""
    return ",".join(f'{n}="{_escape(v)}"' for n, v in zip(names, values))


def _num(value) -> str:
    if type(value) is int:
        return str(value)
    if value != value:
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


class _Out:
    """Lines of one body; ``family`` writes the HELP/TYPE header in the chosen format."""

    def __init__(self, openmetrics):
        self.om = openmetrics
        self.lines = []

    def family(self, name, kind, doc):
        # counters: the text format names the family with its _total, OpenMetrics without
        shown = name + "_total" if kind == "counter" and not self.om else name
        self.lines.append(f"# HELP {shown} {doc}")
        self.lines.append(f"# TYPE {shown} {kind}")

    def sample(self, name, labels, value):
        self.lines.append(f"{name}{{{labels}}} {_num(value)}" if labels else f"{name} {_num(value)}")

    def body(self) -> bytes:
        if self.om:
            self.lines.append("# EOF")
        return ("\n".join(self.lines) + "\n").encode()


def render(fold, openmetrics=False) -> bytes:
    out = _Out(openmetrics)
    les = [f'le="{_num(b)}"' for b in fold.bounds_s] + ['le="+Inf"']
    _histograms(out, fold.flows, FLOW_LABELS, "autoperf_flow_duration_seconds",
                "Duration of root flows (commands, events, cycles), by flow and status.", les)
    _histograms(out, fold.spans, SPAN_LABELS, "autoperf_span_duration_seconds",
                "Duration of spans inside flows (db, http, jobs, ...), by name and flow.", les)
    _flow_counters(out, fold.flows)
    _span_errors(out, fold.spans)
    _resources(out, fold.live_resources())
    out.family("autoperf_exporter_records", "counter", "Records read from the log directory.")
    out.sample("autoperf_exporter_records_total", "", fold.records)
    out.family("autoperf_exporter_unreadable_lines", "counter", "Log lines that were not JSON.")
    out.sample("autoperf_exporter_unreadable_lines_total", "", fold.unreadable)
    out.family("autoperf_exporter_overflow_records", "counter",
               "metrics records counted under the name _other: their key came after max_keys.")
    out.sample("autoperf_exporter_overflow_records_total", "", fold.overflowed)
    return out.body()


def _key_labels(t, names, key):
    text = t.labels
    if text is None:
        text = t.labels = labels_text(names, key)
    return text


def _histograms(out, table, names, name, doc, les):
    out.family(name, "histogram", doc)
    lines = out.lines
    bucket, count, total = name + "_bucket{", name + "_count{", name + "_sum{"
    exemplars = out.om          # OpenMetrics only: the text format has no exemplars
    for key, t in table.items():
        labels = _key_labels(t, names, key)
        running = 0
        kept = t.exemplars if exemplars else None
        for j, (le, n) in enumerate(zip(les, t.buckets)):
            running += n
            ex = kept.get(j) if kept else None
            if ex is None:
                lines.append(f"{bucket}{labels},{le}}} {running}")
            else:
                value, trace, span, at = ex
                stamp = "" if at is None else f" {at:.3f}"
                lines.append(f'{bucket}{labels},{le}}} {running} # {{trace_id="{trace}",span_id="{span}"}} '
                             f"{_num(value)}{stamp}")
        lines.append(f"{count}{labels}}} {t.count}")
        lines.append(f"{total}{labels}}} {_num(t.sum_s)}")


def _flow_counters(out, flows):
    sums: dict = {}
    slas: dict = {}
    errors, retained = [], []
    for key, t in flows.items():
        flow, kind, status, measure, shard = key
        acc = sums.setdefault((flow, kind, measure, shard), [0, 0])
        acc[0] += t.over_sla
        acc[1] += t.deadline_missed
        if status != "success":
            errors.append((_key_labels(t, FLOW_LABELS, key), t.count))
        for rule, n in t.retained.items():
            retained.append((labels_text(("flow", "kind", "rule", "shard"), (flow, kind, rule, shard)), n))
        if t.sla_s is not None:
            slas[(flow, kind, measure)] = t.sla_s
    per_flow = [(labels_text(("flow", "kind", "measure", "shard"), k), v) for k, v in sums.items()]
    out.family("autoperf_flow_over_sla", "counter", "Flows slower than their sla_ms.")
    for labels, (n, _) in per_flow:
        out.sample("autoperf_flow_over_sla_total", labels, n)
    out.family("autoperf_flow_deadline_missed", "counter", "Interactions answered after Discord's 3 s deadline.")
    for labels, (_, n) in per_flow:
        out.sample("autoperf_flow_deadline_missed_total", labels, n)
    out.family("autoperf_flow_errors", "counter", "Flows that did not succeed, by status.")
    for labels, n in errors:
        out.sample("autoperf_flow_errors_total", labels, n)
    out.family("autoperf_flow_retained", "counter", "Flows retained (written in full), by rule.")
    for labels, n in retained:
        out.sample("autoperf_flow_retained_total", labels, n)
    out.family("autoperf_flow_sla_seconds", "gauge", "The flow's sla_ms.")
    for key, value in slas.items():
        out.sample("autoperf_flow_sla_seconds", labels_text(("flow", "kind", "measure"), key), value)


def _span_errors(out, spans):
    out.family("autoperf_span_errors", "counter", "Spans that did not succeed, by status.")
    for key, t in spans.items():
        if key[2] != "success":
            out.sample("autoperf_span_errors_total", _key_labels(t, SPAN_LABELS, key), t.count)


def _get(rec, path):
    value = rec
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _resources(out, latest):
    procs = []
    for rec in latest:
        shard = ",".join(str(i) for i in rec.get("shard_ids") or ())
        procs.append((rec, str(rec.get("pid")), shard, labels_text(("pid", "shard"), (rec.get("pid"), shard))))
    for path, metric, doc, factor in GAUGES:
        out.family(metric, "gauge", doc)
        for rec, _, _, labels in procs:
            value = _get(rec, path)
            if value is not None:
                out.sample(metric, labels, value * factor)
    out.family("autoperf_worker_rss_bytes", "gauge", "Resident memory of each child process (workers).")
    for rec, pid, shard, _ in procs:
        for worker in rec.get("workers") or ():
            rss = _get(worker, "rss_mb")
            if rss is not None:
                labels = labels_text(("pid", "parent_pid", "pool_worker", "shard"),
                                     (worker.get("pid"), pid, "true" if worker.get("pool_worker") else "false", shard))
                out.sample("autoperf_worker_rss_bytes", labels, rss * _MB)
