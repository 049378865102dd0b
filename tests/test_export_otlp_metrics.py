"""OTLP metrics: `metrics` records (METRICS_CONTRACT) and `resource` records sent to a receiver on 127.0.0.1.

The records are made here with autoperf.metrics.exphist as the writer makes them, and go through the
exporter's public sink interface (write, sync, close).
"""
from __future__ import annotations

import random
import time

import pytest

pytest.importorskip("opentelemetry.proto")

from autoperf import tracecontext  # noqa: E402
from autoperf.export import otlp_config, otlp_encode  # noqa: E402
from autoperf.export.otlp_sink import OtlpSink  # noqa: E402
from autoperf.metrics.exphist import ExpHistogram  # noqa: E402
from tests.otlp_receiver import Receiver, attributes  # noqa: E402


def metrics_record(values_ms, start, end, name="queue", kind="flow", status="success", **extra):
    hist = ExpHistogram()
    for v in values_ms:
        hist.record(v / 1000.0)
    rec = {"timestamp": end, "level": "INFO", "type": "metrics", "pid": 4242, "service": "bot",
           "interval_start": start, "interval_s": 10.0, "name": name, "kind": kind, "status": status,
           "flow_name": None, "root": True, "measure": "duration", "count": len(values_ms),
           "sum_ms": sum(values_ms), "min_ms": min(values_ms), "max_ms": max(values_ms), "hist": hist.to_dict()}
    rec.update(extra)
    return rec


def _sink(rx, tmp_path, **section):
    """A sink sending a point per record (metrics_interval_s: 0) unless ``section`` says otherwise."""
    section = {"endpoint": rx.endpoint, "flush_interval_ms": 50, "metrics_interval_s": 0, **section}
    settings = otlp_config.resolve(section, {}, environ={})
    return OtlpSink(settings, tmp_path)


def _points(rx, name):
    return [(p, res) for m, res in rx.metrics() if m.name == name
            for p in (m.exponential_histogram.data_points if m.HasField("exponential_histogram")
                      else m.sum.data_points if m.HasField("sum") else m.gauge.data_points)]


def _metric(rx, name):
    return next(m for m, _ in rx.metrics() if m.name == name)


def _p95_of(point):
    h = ExpHistogram.from_dict({"scale": point.scale, "zero_count": point.zero_count, "offset": point.positive.offset,
                                "counts": list(point.positive.bucket_counts)},
                               count=point.count, sum=point.sum, min=point.min, max=point.max)
    return h.percentile(95)


class TestExportInterval:
    def test_a_key_is_sent_once_per_export_with_its_total(self, tmp_path):
        """With metrics_interval_s: 60, three intervals written and a stop give one cumulative point per key: their total, from the first interval's start, with the intervals' exemplars."""
        ex = [{"duration_ms": 3.0, "flow_id": f"{k:016x}", "span_id": f"{k + 9:016x}", "timestamp": "2026-01-01T00:00:01.000Z"}
              for k in (1, 2, 3)]
        with Receiver() as rx:
            sink = _sink(rx, tmp_path, metrics_interval_s=60)
            for k in range(3):
                sink.write([metrics_record([5.0] * (k + 1), f"2026-01-01T00:00:{k}0.000Z", f"2026-01-01T00:00:{k + 1}0.000Z",
                                           exemplars=[ex[k]])])
                time.sleep(0.15)            # three batches: the exporter folds each, sends none
            assert not rx.metrics() and sink.counters["sent_metrics"] == 0
            sink.close()
            assert sink.counters["sent_metrics"] == 3        # the records the one point carries
            (point, _), = _points(rx, "autoperf.flow.duration")
            assert point.count == 6 and point.start_time_unix_nano == otlp_encode.iso_to_ns("2026-01-01T00:00:00.000Z")
            assert point.time_unix_nano == otlp_encode.iso_to_ns("2026-01-01T00:00:30.000Z")
            assert [e.span_id.hex() for e in point.exemplars] == [e["span_id"] for e in ex]

    def test_delta_merges_the_intervals_of_one_export(self, tmp_path):
        """temporality: delta with an export interval sends the intervals since the last export merged, then starts again."""
        with Receiver() as rx:
            sink = _sink(rx, tmp_path, temporality="delta", metrics_interval_s=60)
            sink.write([metrics_record([5.0, 6.0], "2026-01-01T00:00:00.000Z", "2026-01-01T00:00:10.000Z"),
                        metrics_record([7.0], "2026-01-01T00:00:10.000Z", "2026-01-01T00:00:20.000Z")])
            assert sink.sync(10)            # a sync sends what waits, as a stop does
            sink.write([metrics_record([8.0], "2026-01-01T00:00:20.000Z", "2026-01-01T00:00:30.000Z")])
            sink.close()
            points = [p for p, _ in _points(rx, "autoperf.flow.duration")]
            assert [p.count for p in points] == [3, 1] and points[0].sum == pytest.approx(0.018)
            assert points[1].start_time_unix_nano == otlp_encode.iso_to_ns("2026-01-01T00:00:20.000Z")

    def test_points_go_when_due_without_new_records(self, tmp_path):
        """A pending point is sent once the export interval has passed, even when no record comes after it."""
        with Receiver() as rx:
            sink = _sink(rx, tmp_path, metrics_interval_s=0.5)
            sink.write([metrics_record([5.0], "2026-01-01T00:00:00.000Z", "2026-01-01T00:00:10.000Z")])
            deadline = time.monotonic() + 10
            while not rx.metrics() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert [p.count for p, _ in _points(rx, "autoperf.flow.duration")] == [1]
            sink.write([metrics_record([6.0], "2026-01-01T00:00:10.000Z", "2026-01-01T00:00:20.000Z")])
            sink.close()
            assert [p.count for p, _ in _points(rx, "autoperf.flow.duration")] == [1, 2]

    def test_interval_from_the_file_the_environment_or_the_default(self):
        """metrics_interval_s wins; else OTEL_METRIC_EXPORT_INTERVAL (ms); else 60 s."""
        base = {"endpoint": "http://127.0.0.1:9"}
        assert otlp_config.resolve(base, {}, environ={})["metrics_interval_s"] == 60.0
        assert otlp_config.resolve(base, {}, environ={"OTEL_METRIC_EXPORT_INTERVAL": "5000"})["metrics_interval_s"] == 5.0
        assert otlp_config.resolve({**base, "metrics_interval_s": 0}, {},
                                   environ={"OTEL_METRIC_EXPORT_INTERVAL": "5000"})["metrics_interval_s"] == 0.0
        assert otlp_config.resolve(base, {}, environ={"OTEL_METRIC_EXPORT_INTERVAL": "soon"})["metrics_interval_s"] == 60.0

    def test_flush_interval_from_the_file_the_environment_or_the_default(self):
        """flush_interval_ms wins; else OTEL_BSP_SCHEDULE_DELAY (ms, as the SDKs' batch span processor); else 5 s."""
        base = {"endpoint": "http://127.0.0.1:9"}
        assert otlp_config.resolve(base, {}, environ={})["flush_interval_s"] == 5.0
        assert otlp_config.resolve(base, {}, environ={"OTEL_BSP_SCHEDULE_DELAY": "2000"})["flush_interval_s"] == 2.0
        assert otlp_config.resolve({**base, "flush_interval_ms": 100}, {},
                                   environ={"OTEL_BSP_SCHEDULE_DELAY": "2000"})["flush_interval_s"] == 0.1
        assert otlp_config.resolve(base, {}, environ={"OTEL_BSP_SCHEDULE_DELAY": "soon"})["flush_interval_s"] == 5.0
        assert otlp_config.resolve(base, {}, environ={"OTEL_BSP_SCHEDULE_DELAY": "0"})["flush_interval_s"] == 0.01


class TestHistograms:
    def test_cumulative_histograms_merge_intervals_and_keep_exact_counts(self, tmp_path):
        """Two intervals of one key arrive as cumulative ExponentialHistogram points: counts equal the records', p95 within 1 % of the exact one."""
        rnd = random.Random(7)
        first = [rnd.lognormvariate(3, 0.8) for _ in range(500)]
        second = [rnd.lognormvariate(3.5, 0.5) for _ in range(300)]
        with Receiver() as rx:
            sink = _sink(rx, tmp_path)
            sink.write([metrics_record(first, "2026-01-01T00:00:00.000Z", "2026-01-01T00:00:10.000Z")])
            assert sink.sync(10)
            sink.write([metrics_record(second, "2026-01-01T00:00:10.000Z", "2026-01-01T00:00:20.000Z")])
            sink.close()
            points = _points(rx, "autoperf.flow.duration")
            assert [p.count for p, _ in points] == [500, 800]
            assert _metric(rx, "autoperf.flow.duration").exponential_histogram.aggregation_temporality == 2
            last = points[-1][0]
            assert last.start_time_unix_nano == points[0][0].start_time_unix_nano
            assert last.sum == pytest.approx(sum(first + second) / 1000)
            assert last.min == pytest.approx(min(first + second) / 1000) and last.max == pytest.approx(max(first + second) / 1000)
            assert sum(last.positive.bucket_counts) + last.zero_count == 800
            ordered = sorted(first + second)
            rank = 0.95 * (len(ordered) - 1)        # linear between closest ranks, as the report computes it
            lo = int(rank)
            exact = (ordered[lo] + (ordered[lo + 1] - ordered[lo]) * (rank - lo)) / 1000
            assert _p95_of(last) == pytest.approx(exact, rel=0.01)
            attrs = attributes(last)
            assert attrs["autoperf.name"] == "queue" and attrs["autoperf.status"] == "success"
            assert points[-1][1]["service.name"] == "bot" and points[-1][1]["process.pid"] == 4242

    def test_delta_temporality_sends_each_interval(self, tmp_path):
        """temporality: delta sends every interval's own counts."""
        with Receiver() as rx:
            sink = _sink(rx, tmp_path, temporality="delta")
            sink.write([metrics_record([5.0, 6.0], "2026-01-01T00:00:00.000Z", "2026-01-01T00:00:10.000Z"),
                        metrics_record([7.0], "2026-01-01T00:00:10.000Z", "2026-01-01T00:00:20.000Z")])
            sink.close()
            assert [p.count for p, _ in _points(rx, "autoperf.flow.duration")] == [2, 1]
            assert _metric(rx, "autoperf.flow.duration").exponential_histogram.aggregation_temporality == 1

    def test_db_and_http_keys_use_semconv_names_errors_and_misses_are_counters(self, tmp_path):
        """db and http keys become db.client.operation.duration / http.client.request.duration; errors, SLA and deadline misses monotonic sums; exemplars link to the flow's trace."""
        flow = "00000000000abcde"
        with Receiver() as rx:
            sink = _sink(rx, tmp_path)
            sink.write([
                metrics_record([2.0, 3.0], "2026-01-01T00:00:00.000Z", "2026-01-01T00:00:10.000Z", name="db.select",
                               kind="db", root=False, flow_name="queue", fingerprint="SELECT * FROM players WHERE id = $1",
                               exemplars=[{"duration_ms": 3.0, "flow_id": flow, "span_id": "00000000000abcdf",
                                           "timestamp": "2026-01-01T00:00:05.000Z"}]),
                metrics_record([40.0], "2026-01-01T00:00:00.000Z", "2026-01-01T00:00:10.000Z", name="GET /users/{id}",
                               kind="http", status="error", root=False),
                metrics_record([900.0, 100.0], "2026-01-01T00:00:00.000Z", "2026-01-01T00:00:10.000Z",
                               sla_ms=500.0, over_sla=1, deadline_missed=0),
            ])
            sink.close()
            (db, _), = _points(rx, "db.client.operation.duration")
            a = attributes(db)
            assert a["db.query.text"] == "SELECT * FROM players WHERE id = $1" and a["db.operation.name"] == "SELECT"
            assert a["autoperf.flow.name"] == "queue"
            (ex,) = db.exemplars
            assert ex.trace_id == tracecontext.trace_id_of(int(flow, 16)) and ex.span_id.hex() == "00000000000abcdf"
            (http, _), = _points(rx, "http.client.request.duration")
            assert attributes(http)["http.request.method"] == "GET" and attributes(http)["url.template"] == "/users/{id}"
            (errors, _), = _points(rx, "autoperf.errors")
            assert errors.as_int == 1 and _metric(rx, "autoperf.errors").sum.is_monotonic
            (sla, _), = _points(rx, "autoperf.sla.exceeded")
            assert sla.as_int == 1
            (missed, _), = _points(rx, "autoperf.deadline.missed")
            assert missed.as_int == 0


class TestGauges:
    def test_resource_records_become_gauges(self, tmp_path):
        """A resource record gives memory, CPU, loop lag, DB pool and process-pool gauges."""
        with Receiver() as rx:
            sink = _sink(rx, tmp_path)
            sink.write([{"type": "resource", "timestamp": "2026-01-01T00:00:05.000Z", "pid": 7, "rss_mb": 100.0,
                         "cpu_percent": 50.0, "active_flows": 3, "loop_lag_ms": {"p50": 1.0, "p95": 4.0, "max": 9.0},
                         "db_pool": {"size": 10, "in_use": 4, "idle": 6, "waiters": 2, "utilisation_pct": 40.0},
                         "process_pool": {"pending": 1, "busy": 2, "workers": 4}, "gateway_latency_ms": 42.0}])
            sink.close()
            value = {m.name: m.gauge.data_points for m, _ in rx.metrics()}
            assert value["process.memory.usage"][0].as_double == 100.0 * 1024 * 1024
            assert value["process.cpu.utilization"][0].as_double == pytest.approx(0.5)
            assert value["autoperf.flows.active"][0].as_int == 3
            lag = {attributes(p)["autoperf.stat"]: p.as_double for p in value["autoperf.event_loop.lag"]}
            assert lag == pytest.approx({"p50": 0.001, "p95": 0.004, "max": 0.009})
            used = {attributes(p)["db.client.connection.state"]: p.as_int for p in value["db.client.connection.count"]}
            assert used == {"used": 4, "idle": 6}
            assert value["autoperf.process_pool.busy"][0].as_int == 2
            assert value["autoperf.discord.gateway.latency"][0].as_double == pytest.approx(0.042)


class TestRealRun:
    def test_a_programs_metrics_records_arrive_as_histograms(self, tmp_path):
        """Under autoperf run (metrics every 0.3 s, retention on) the last cumulative point of each key counts every record's calls, and its p95 is the flows' exact p95 within 1 %."""
        import orjson

        from tests.runs import Run
        program = """
            import asyncio, random

            async def handle(i):
                await asyncio.sleep(random.Random(i).uniform(0.001, 0.02))

            async def main():
                for i in range(150):
                    await handle(i)

            asyncio.run(main())
        """
        with Receiver() as rx:
            config = f"""
targets:
  - {{target: "__main__:handle", kind: flow, name: handle}}
metrics: {{interval_s: 0.3}}
retain: {{all: false, sample_rate: 0.1}}
export:
  otlp: {{endpoint: "{rx.endpoint}", flush_interval_ms: 100, metrics_interval_s: 0}}
"""
            run = Run(tmp_path, program, config)
            run.start()
            records = [orjson.loads(line) for path in sorted(run.log_dir.glob("metrics_*.log"))
                       for line in path.read_bytes().splitlines() if line.strip()]
            mine = [r for r in records if r["name"] == "handle" and r.get("measure", "duration") == "duration"]
            assert len(mine) >= 2 and sum(r["count"] for r in mine) == 150
            points = [p for p, _ in _points(rx, "autoperf.flow.duration") if attributes(p)["autoperf.name"] == "handle"]
            assert [p.count for p in points] == [sum(r["count"] for r in mine[:k + 1]) for k in range(len(mine))]
            last = points[-1]
            flows = sorted(r["duration_ms"] for r in run.records("flow_complete") if r["flow_name"] == "handle")
            rank = 0.95 * (len(flows) - 1)
            lo = int(rank)
            exact = (flows[lo] + (flows[lo + 1] - flows[lo]) * (rank - lo)) / 1000
            assert len(flows) == 150 and _p95_of(last) == pytest.approx(exact, rel=0.01)
            spans = {s.span_id.hex() for s, _ in rx.spans()}
            written = {r["span_id"] for r in run.records("span")}
            assert spans == written and 0 < len(written) < 150     # only the retained flows' spans


class TestFold:
    def test_cumulative_buckets_equal_the_merged_histograms_and_records_are_untouched(self):
        """Intervals folded into a key's total (sparse and dense, shifting offsets, both temporalities)
        give exactly ExpHistogram.merge's buckets; the records' own bucket lists are never changed."""
        from autoperf.export.otlp_metrics import MetricsEncoder

        rng = random.Random(7)
        samples = [[rng.uniform(0.5, 2.0) for _ in range(3)],                  # few, narrow: sparse
                   [rng.uniform(0.1, 900.0) for _ in range(2000)],              # dense, wider on both sides
                   [rng.uniform(5.0, 6.0) for _ in range(40)],                  # inside
                   [rng.uniform(0.05, 3000.0) for _ in range(25)]]              # sparse, widest
        records = [metrics_record(vals, f"2026-01-01T00:00:{10 * i:02d}.000Z", f"2026-01-01T00:00:{10 * i + 10:02d}.000Z")
                   for i, vals in enumerate(samples)]
        before = [list(r["hist"]["counts"]) for r in records]
        for temporality in ("cumulative", "delta"):
            enc = MetricsEncoder(temporality, {}, interval_s=3600, clock=lambda: 0.0)
            for rec in records:
                assert enc.request([rec]) is None          # folded, not yet due
            request = enc.request([], final=True)
            (point,) = [p for rm in request.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
                        if m.name == "autoperf.flow.duration" for p in m.exponential_histogram.data_points]
            expected = ExpHistogram()
            for vals in samples:
                for v in vals:
                    expected.record(v / 1000.0)
            want = expected.to_dict()
            got = ExpHistogram.from_dict({"scale": point.scale, "offset": point.positive.offset,
                                          "counts": list(point.positive.bucket_counts)}).to_dict()
            assert point.count == sum(map(len, samples))
            assert (got["scale"], got["offset"], got["counts"]) == (want["scale"], want["offset"], want["counts"])
            assert [r["hist"]["counts"] for r in records] == before
