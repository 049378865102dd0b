"""``export: prometheus:`` — /metrics from the log directory, scraped by a real Prometheus server.

One ``autoperf run`` program serves the endpoint; three shard processes (``autoperf run``) and the
example ladder bot (``--simulate``) write their records to the same log directory; Prometheus
(Debian's package, on a loopback port) scrapes every second. Tests of the endpoint's own behaviour
append ``metrics`` records as the metrics contract shapes them.
"""
from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
import time
import urllib.request

import orjson
import pytest

from autoperf.analysis.stats import percentile
from autoperf.export.prometheus.fold import DEFAULT_BUCKETS_MS
from autoperf.metrics.exphist import ExpHistogram
from tests import promserver
from tests.runs import ROOT, clean_env

BINARY, WHY = promserver.find()
needs_prometheus = pytest.mark.skipif(BINARY is None, reason=WHY or "")

SERVER = """
import os, time
while not os.path.exists("stop"):
    time.sleep(0.05)
"""


def _config(port, extra=""):
    return f"export:\n  prometheus: {{port: {port}}}\n{extra}"


def metrics_record(name, values_ms, shard, pid, status="success", root=True, kind="flow", flow_name=None,
                   fingerprint=None, sla_ms=None, deadline_missed=None, measure="duration"):
    """A ``metrics`` record as the writer makes it (METRICS_CONTRACT): exact count/sum/min/max, hist in seconds."""
    hist = ExpHistogram()
    for v in values_ms:
        hist.record(v / 1000.0)
    rec = {"timestamp": "2026-12-07T00:00:10.000Z", "level": "INFO", "type": "metrics", "pid": pid,
           "host": "test-host", "instance_id": f"{pid:032x}", "shard_ids": [shard],
           "interval_start": "2026-12-07T00:00:00.000Z", "interval_s": 10.0,
           "name": name, "kind": kind, "status": status, "flow_name": flow_name, "root": root, "measure": measure,
           "count": len(values_ms), "sum_ms": sum(values_ms), "min_ms": min(values_ms), "max_ms": max(values_ms),
           "hist": hist.to_dict()}
    slowest = max(values_ms)
    rec["exemplars"] = [{"duration_ms": slowest, "flow_id": f"{pid:08x}{len(values_ms):08x}",
                         "span_id": f"{pid:016x}", "timestamp": _now_iso()}]
    if fingerprint:
        rec["fingerprint"] = fingerprint
    if sla_ms is not None:
        rec["sla_ms"] = sla_ms
        rec["over_sla"] = sum(v > sla_ms for v in values_ms)
    if deadline_missed is not None:
        rec["deadline_missed"] = deadline_missed
    return rec


def _now_iso():
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


def append(log_dir, *records):
    """What a process's file sink does: whole lines appended to the day's metrics file."""
    with open(os.path.join(log_dir, "metrics_2026-12-07.log"), "ab") as fh:
        fh.write(b"".join(orjson.dumps(r) + b"\n" for r in records))


class Served:
    """``autoperf run`` of an idle program with ``export: prometheus:``; it ends when the file ``stop``
    appears in its directory. ``wait``: until /metrics answers."""

    def __init__(self, tmp_path, name="served", port=None, log_dir=None, program=SERVER, config_extra="",
                 wait=True):
        self.dir = tmp_path / name
        self.dir.mkdir()
        self.log_dir = log_dir or self.dir / "logs"
        self.log_dir.mkdir(exist_ok=True)
        self.port = port or promserver.free_port()
        (self.dir / "prog.py").write_text(program)
        (self.dir / "autoperf.yaml").write_text(_config(self.port, config_extra))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "autoperf", "run", "--config", "autoperf.yaml", "--log-dir", str(self.log_dir),
             "--no-console", "prog.py"], cwd=self.dir, env=clean_env(), stdout=subprocess.DEVNULL,
            stderr=open(self.dir / "stderr", "wb"))   # a file: a forked child may keep it open
        if wait:
            self.wait_answering()

    def wait_answering(self, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                return self.scrape()
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise AssertionError(f"the endpoint did not answer within {timeout} s")

    @property
    def target(self):
        return f"127.0.0.1:{self.port}"

    def scrape(self, accept=None):
        req = urllib.request.Request(f"http://{self.target}/metrics", headers={"Accept": accept} if accept else {})
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.headers.get("Content-Type"), resp.read().decode()

    def stop(self):
        (self.dir / "stop").write_text("")
        assert self.proc.wait(timeout=30) == 0, (self.dir / "stderr").read_text()


def _samples(prom, expr, at):
    """{series labels (frozen): [(ts, value), ...]} of a range selector at ``at``."""
    out = {}
    for series in prom.query(expr, at=at):
        out[frozenset(series["metric"].items())] = [(float(t), float(v)) for t, v in series["values"]]
    return out


FLOW = 'autoperf_flow_duration_seconds_count{flow="cmd",measure="duration",status="success"}'
WARM, CALLS = 2, 90

#: A shard process: a `cmd` flow WARM times, then (on `go`) CALLS times with varied durations; exits on `stop`.
SHARD = """
import asyncio, os, random, sys
from autoperf import identity

identity.add_shard(int(sys.argv[1]))     # what the discord integration does at a gateway IDENTIFY

async def cmd(ms):
    await asyncio.sleep(ms / 1000)

async def main():
    rng = random.Random(int(sys.argv[1]))
    for _ in range(%d):
        await cmd(2)
    while not os.path.exists("../go"):
        await asyncio.sleep(0.02)
    for _ in range(%d):
        await cmd(rng.choice((3, 8, 15, 30, 60, 120)))
    while not os.path.exists("../stop"):
        await asyncio.sleep(0.02)

asyncio.run(main())
""" % (WARM, CALLS)
SHARD_CONFIG = """
metrics: {interval_s: 0.5}
sampler: {interval_s: 1}
targets:
  - {target: "prog:cmd", kind: flow, name: cmd, sla_ms: 50}
"""


def _ladder_config(path, log_dir):
    """The repository's autoperf.yaml with short metrics and sampler intervals."""
    import yaml
    data = yaml.safe_load((ROOT / "autoperf.yaml").read_text())
    data["metrics"] = {"interval_s": 0.5}
    data["sampler"] = {"enabled": True, "interval_s": 1}
    data["log"]["console"] = False
    path.write_text(yaml.safe_dump(data))
    return path


def _start_shards(tmp_path, log_dir, port):
    procs = []
    for shard in range(3):
        d = tmp_path / f"shard{shard}"
        d.mkdir()
        (d / "prog.py").write_text(SHARD)
        (d / "autoperf.yaml").write_text(_config(port, SHARD_CONFIG))
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "autoperf", "run", "--config", "autoperf.yaml", "--log-dir", str(log_dir),
             "--no-console", "prog.py", str(shard)], cwd=d, env=clean_env(), stdout=subprocess.DEVNULL,
            stderr=open(d / "stderr", "wb")))
    return procs


def _flow_durations(log_dir, name, after_iso):
    out = []
    for path in [*log_dir.glob("performance_*.log"), *log_dir.glob("flows_*.log")]:   # unretained flows: flows_
        for line in path.read_bytes().splitlines():
            rec = orjson.loads(line)
            if rec.get("type") == "flow_complete" and rec["flow_name"] == name and rec["timestamp"] > after_iso:
                out.append(rec["duration_ms"])
    return out


@pytest.fixture(scope="module")
def scraped(tmp_path_factory):
    """Three real shard processes (``autoperf run``, one log directory), the example ladder bot under
    ``--simulate`` beside them (Discord interactions, asyncpg, a process pool), one endpoint, and
    Prometheus scraping every second.

    Yields (prom, t1, t2, durations): t1 is the last scrape before the shards' counted calls (every
    series at its warm-up value), t2 the last scrape; ``durations`` those calls' flow durations (ms).
    """
    if BINARY is None:
        pytest.skip(WHY)
    tmp_path = tmp_path_factory.mktemp("prometheus")
    served = Served(tmp_path)
    log_dir = served.log_dir
    shards = []
    ladder = None
    try:
        with promserver.PrometheusServer(tmp_path / "prom", [served.target]) as prom:
            prom.wait_for(prom.targets_up, what="target up")
            env = clean_env(LADDER_MATCHMAKING_INTERVAL_S="0.5", AUTOPERF_CONSOLE="0")
            ladder = subprocess.Popen(
                [sys.executable, "-m", "autoperf", "run", "--config", str(_ladder_config(tmp_path / "ladder.yaml", log_dir)),
                 "--log-dir", str(log_dir), "--simulate", "examples/ladder_bot/scenario_small.yaml",
                 "examples/ladder_bot/bot.py"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                stderr=open(tmp_path / "ladder.stderr", "wb"))
            shards = _start_shards(tmp_path, log_dir, served.port)
            # phase 1: each shard's series exists (a counter must be seen before it grows to be counted)
            prom.wait_for(lambda: prom.scalar(f"count({FLOW})") == 3, timeout=60, what="three shards' series")
            time.sleep(2.5)
            go_iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + ".000Z"
            (tmp_path / "go").write_text("")
            total = 3 * (WARM + CALLS)
            prom.wait_for(lambda: prom.scalar(f"sum({FLOW})") == total, timeout=60, what="all calls scraped")
            assert ladder.wait(timeout=120) == 0, (tmp_path / "ladder.stderr").read_text()[-3000:]
            time.sleep(2.5)
            raw = _samples(prom, f"{FLOW}[3m]", time.time())
            assert len(raw) == 3 and {dict(k)["shard"] for k in raw} == {"0", "1", "2"}
            stamps = sorted({t for values in raw.values() for t, _ in values})

            def total_at(t):
                return sum(v for values in raw.values() for ts, v in values if ts == t)
            t1 = max(t for t in stamps if total_at(t) == 3 * WARM)
            durations = _flow_durations(log_dir, "cmd", go_iso)
            assert len(durations) == 3 * CALLS
            yield prom, t1, stamps[-1], durations
    finally:
        (tmp_path / "stop").write_text("")
        for proc in shards:
            proc.wait(timeout=30)
        if ladder is not None and ladder.poll() is None:
            ladder.kill()
        served.stop()


@needs_prometheus
def test_three_shards_scraped_counts_exact_and_p95_within_a_bucket(scraped):
    """Three shards' calls: increase/rate over the scraped window equal the calls made exactly; the p95 of
    histogram_quantile lies in the classic bucket holding the exact p95."""
    prom, t1, t2, durations = scraped
    window_ms = round((t2 - t1) * 1000)
    window = f"{window_ms}ms"
    increase = prom.scalar(f"sum(increase({FLOW}[{window}]))", at=t2)
    rate = prom.scalar(f"sum(rate({FLOW}[{window}]))", at=t2)
    assert increase == pytest.approx(3 * CALLS, abs=1e-6)
    assert rate * window_ms / 1000 == pytest.approx(3 * CALLS, abs=1e-6)
    per_shard = prom.query(f"sum by (shard) (increase({FLOW}[{window}]))", at=t2)
    assert sorted(float(r["value"][1]) for r in per_shard) == pytest.approx([CALLS] * 3, abs=1e-6)
    # p95: Prometheus interpolates inside the bucket that holds the exact p95
    p95 = prom.scalar("histogram_quantile(0.95, sum by (le) (increase("
                      f"autoperf_flow_duration_seconds_bucket{{flow=\"cmd\",measure=\"duration\",status=\"success\"}}[{window}])))",
                      at=t2)
    exact = percentile(sorted(durations), 95) / 1000.0
    bounds = [0.0] + [b / 1000.0 for b in DEFAULT_BUCKETS_MS]
    hi = next(b for b in bounds if b >= exact)
    lo = bounds[bounds.index(hi) - 1]
    assert lo <= p95 <= hi, (p95, exact, lo, hi)


@needs_prometheus
def test_every_dashboard_panel_returns_data(scraped):
    """Each PromQL of examples/grafana/autoperf.json returns numbers over the run (as Grafana would draw
    it: a range query, `$__rate_interval` 10 s, every shard)."""
    prom, t1, t2, _ = scraped
    dashboard = json.loads((ROOT / "examples" / "grafana" / "autoperf.json").read_text())
    exprs = [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p["targets"]]
    assert len(exprs) >= 8
    empty = []
    for title, expr in exprs:
        result = prom.query_range(expr.replace("$__rate_interval", "10s").replace("$shard", ".*"), t1 - 60, t2)
        values = [float(v) for series in result for _, v in series["values"]]
        if not any(math.isfinite(v) for v in values):
            empty.append((title, expr))
    assert not empty, empty


@needs_prometheus
def test_exemplars_link_buckets_to_flow_traces(scraped):
    """Prometheus (exemplar storage on) keeps the buckets' exemplars: each names a trace id derived from
    a flow id as OTLP export does, and a value inside its bucket."""
    from autoperf.tracecontext import trace_hex
    prom, t1, t2, _ = scraped
    found = prom.exemplars('autoperf_flow_duration_seconds_bucket{flow="cmd"}', t1 - 60, t2 + 5)
    pairs = [(float(series["seriesLabels"]["le"]), ex) for series in found for ex in series["exemplars"]]
    assert pairs
    for le, ex in pairs:
        assert float(ex["value"]) <= le
        flow_hex = ex["labels"]["trace_id"][16:]            # the last 16 hex digits are the flow id
        assert ex["labels"]["trace_id"] == trace_hex(int(flow_hex, 16))


def _parsed(text, openmetrics):
    """{(sample name, frozenset(labels)): value} as prometheus_client's own parser reads the body."""
    if openmetrics:
        from prometheus_client.openmetrics.parser import text_string_to_metric_families
    else:
        from prometheus_client.parser import text_string_to_metric_families
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_endpoint_speaks_text_and_openmetrics_and_counts_never_go_back(tmp_path):
    """The text format by default, OpenMetrics when asked (both read back by prometheus_client's parsers,
    with the same samples); a shard that exited keeps its share of the totals."""
    served = Served(tmp_path)
    quoted = 'SELECT "a\\b" FROM t WHERE x = $1'
    try:
        append(served.log_dir, metrics_record("cmd", [10.0, 20.0], 0, 11, sla_ms=15.0),
               metrics_record("cmd", [30.0], 1, 12, status="error"),
               metrics_record("db.fetch", [1.0, 2.0], 1, 12, root=False, kind="db", flow_name="cmd", fingerprint=quoted))
        with open(served.log_dir / "performance_2026-12-07.log", "ab") as fh:
            fh.write(orjson.dumps({"type": "resource", "pid": 12, "shard_ids": [1], "rss_mb": 2.0,
                                   "workers": [{"pid": 13, "rss_mb": 1.0}]}) + b"\n")
        ctype, text = served.scrape()
        assert ctype.startswith("text/plain; version=0.0.4")
        ctype, om = served.scrape("application/openmetrics-text; version=1.0.0,text/plain;version=0.0.4;q=0.5")
        assert ctype.startswith("application/openmetrics-text; version=1.0.0") and om.endswith("# EOF\n")
        samples = _parsed(text, False)
        assert samples == _parsed(om, True)
        # OpenMetrics carries each bucket's latest exemplar: the slowest span, with its flow's trace id
        from prometheus_client.openmetrics.parser import text_string_to_metric_families
        from autoperf.tracecontext import trace_hex
        exemplars = [(s.labels.get("shard"), s.labels["le"], s.exemplar) for f in text_string_to_metric_families(om)
                     for s in f.samples if s.exemplar is not None and s.labels.get("flow") == "cmd"]
        assert [(shard, le, ex.labels["trace_id"], ex.value) for shard, le, ex in exemplars
                if ex.labels["span_id"] == f"{11:016x}"] == [("0", "0.025", trace_hex(int(f"{11:08x}{2:08x}", 16)), 0.02)]
        shard0 = frozenset({"flow": "cmd", "kind": "flow", "measure": "duration", "shard": "0", "status": "success"}.items())
        assert samples[("autoperf_flow_duration_seconds_count", shard0)] == 2
        assert samples[("autoperf_flow_duration_seconds_sum", shard0)] == pytest.approx(0.030)
        assert samples[("autoperf_flow_duration_seconds_bucket", shard0 | {("le", "0.01")})] == 1
        assert samples[("autoperf_flow_over_sla_total", frozenset(
            {"flow": "cmd", "kind": "flow", "measure": "duration", "shard": "0"}.items()))] == 1
        assert samples[("autoperf_flow_errors_total", frozenset(
            {"flow": "cmd", "kind": "flow", "measure": "duration", "shard": "1", "status": "error"}.items()))] == 1
        db = [labels for name, labels in samples if name == "autoperf_span_duration_seconds_count"]
        assert [dict(labels)["fingerprint"] for labels in db] == [quoted]
        assert samples[("autoperf_worker_rss_bytes", frozenset(
            {"pid": "13", "parent_pid": "12", "pool_worker": "false", "shard": "1"}.items()))] == 1024 * 1024
        # shard 1 is gone (no more records); shard 0 goes on: both totals only grow
        append(served.log_dir, metrics_record("cmd", [40.0], 0, 11))
        samples = _parsed(served.scrape()[1], False)
        assert samples[("autoperf_flow_duration_seconds_count", shard0)] == 3
        assert samples[("autoperf_flow_errors_total", frozenset(
            {"flow": "cmd", "kind": "flow", "measure": "duration", "shard": "1", "status": "error"}.items()))] == 1
    finally:
        served.stop()


def test_classic_buckets_agree_with_the_raw_values():
    """Classic bucket counts from the exponential histogram equal the raw values' counts, but for values
    within one exponential bucket (1.09 %) of a bound; count and sum are exact."""
    from autoperf.export.prometheus.fold import Fold

    rng = random.Random(3)
    values = [round(rng.lognormvariate(3.0, 1.2), 3) for _ in range(5000)] + [10.0, 25.0, 0.0]
    fold = Fold(buckets_ms=DEFAULT_BUCKETS_MS)
    for chunk in range(0, len(values), 700):
        part = values[chunk:chunk + 700]
        fold.add(metrics_record("cmd", part, 0, 1))
    (totals,) = fold.flows.values()
    assert totals.count == len(values) and totals.sum_s == pytest.approx(sum(values) / 1000)
    running = 0
    for bound, n in zip(DEFAULT_BUCKETS_MS, totals.buckets):
        running += n
        exact = sum(v <= bound for v in values)
        near = sum(abs(v - bound) <= bound * 0.011 for v in values)
        assert abs(running - exact) <= near, (bound, running, exact, near)
    assert running + totals.buckets[-1] == len(values)


def _counts(text):
    """{shard: count} of the flow `cmd` in a text-format body."""
    return {dict(labels)["shard"]: value for (name, labels), value in _parsed(text, False).items()
            if name == "autoperf_flow_duration_seconds_count" and dict(labels)["flow"] == "cmd"}


FORKS_A_CHILD = """
import os, time
pid = os.fork()
if pid == 0:                       # a worker that outlives the serving process
    while not os.path.exists("stop_child"):
        time.sleep(0.05)
    os._exit(0)
while not os.path.exists("stop"):
    time.sleep(0.05)
"""


def test_second_process_falls_back_then_takes_over(tmp_path):
    """Two program processes on one port and log directory: the first serves, the second waits; when the
    first ends (its forked child still running) the second takes over and serves the same directory."""
    logs = tmp_path / "logs"
    first = Served(tmp_path, "first", log_dir=logs, program=FORKS_A_CHILD)
    second = Served(tmp_path, "second", port=first.port, log_dir=logs, wait=False)
    try:
        append(logs, metrics_record("cmd", [10.0], 0, 11))
        assert _counts(first.scrape()[1]) == {"0": 1}
        first.stop()                                  # its forked child still runs, holding no socket
        second.wait_answering(timeout=30)             # retry_s is 10 s by default
        append(logs, metrics_record("cmd", [20.0, 30.0], 1, 12))
        # the new server's counters start at 0 (files read from their end): only what came after
        assert _counts(second.scrape()[1]) == {"1": 2}
    finally:
        (first.dir / "stop_child").write_text("")
        second.stop()


def test_keys_beyond_max_keys_are_counted_under_other():
    """Distinct names without end (say, SQL that escapes normalisation) stop at max_keys series per table;
    the rest are counted, exactly, under the name `_other`, and the overflow is itself counted."""
    from autoperf.export.prometheus import render
    from autoperf.export.prometheus.fold import Fold

    fold = Fold(max_keys=10)
    for i in range(15):
        fold.add(metrics_record("db.fetch", [1.0, 2.0], 0, 1, root=False, kind="db", flow_name="cmd",
                                fingerprint=f"SELECT {i}"))
    assert len(fold.spans) == 11 and fold.overflowed == 5
    other = fold.spans[("_other", "db", "success", "cmd", "", "0")]
    assert other.count == 10 and sum(t.count for t in fold.spans.values()) == 30
    samples = _parsed(render.render(fold).decode(), False)
    assert samples[("autoperf_exporter_overflow_records_total", frozenset())] == 5


def test_serve_metrics_sidecar_serves_a_log_directory_until_sigterm(tmp_path):
    """`autoperf serve-metrics` serves the directory's records from a process of its own and ends on SIGTERM."""
    import signal

    logs = tmp_path / "logs"
    logs.mkdir()
    port = promserver.free_port()
    proc = subprocess.Popen([sys.executable, "-m", "autoperf", "serve-metrics", "--log-dir", str(logs), "--port",
                             str(port)], cwd=tmp_path, env=clean_env(), stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(url, timeout=2).read()
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read() if proc.poll() else ""
                time.sleep(0.1)
        append(logs, metrics_record("cmd", [10.0, 20.0, 30.0], 2, 21))
        assert _counts(urllib.request.urlopen(url, timeout=5).read().decode()) == {"2": 3}
        # a second one finds the port taken and says so
        taken = subprocess.run([sys.executable, "-m", "autoperf", "serve-metrics", "--log-dir", str(logs), "--port",
                                str(port)], cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=30)
        assert taken.returncode == 1 and "taken" in taken.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
