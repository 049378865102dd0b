"""Cost of the OTLP exporter: per exported span, per metrics record (one key of one interval), per record
the writer thread hands it (``write``: the only part outside the exporter's own thread).

Run: .venv/bin/python tests/bench/bench_otlp.py [--spans 20000] [--keys 200] [--callgrind]

Records are shaped like the pipeline's (tests/bench/bench_store.py). Timed: CPU of this thread for
encode (protobuf) + gzip, and for the whole sink (thread, HTTP to a receiver on 127.0.0.1 in a child
process), per span. ``--callgrind``: instructions per span and per metrics record under valgrind
(difference of two sizes, so start-up and imports cancel out).
"""
from __future__ import annotations

import argparse
import gzip
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from tests.bench.bench_store import make_records  # noqa: E402


def metrics_records(keys, start="2025-01-20T00:00:00.000Z", end="2025-01-20T00:00:10.000Z"):
    from autoperf.metrics.exphist import ExpHistogram
    out = []
    for k in range(keys):
        h = ExpHistogram()
        for i in range(50):
            h.record((1 + (i * 7919 + k) % 500) / 1000.0)
        out.append({"timestamp": end, "level": "INFO", "type": "metrics", "pid": 4242, "service": "ladder-bot",
                    "interval_start": start, "interval_s": 10.0, "name": f"db.select.{k}", "kind": "db",
                    "status": "success", "flow_name": "queue_command", "root": False, "measure": "duration",
                    "fingerprint": f"SELECT * FROM t{k} WHERE id = $1", "count": h.count, "sum_ms": h.sum * 1000,
                    "min_ms": h.min * 1000, "max_ms": h.max * 1000, "hist": h.to_dict(),
                    "exemplars": [{"duration_ms": 3.1, "flow_id": f"{k + 1:016x}", "span_id": f"{k + 2:016x}",
                                   "timestamp": start}]})
    return out


def encode_spans(n, passes=1):
    from autoperf.export import otlp_encode
    recs = make_records(n)
    for _ in range(passes):
        for i in range(0, n, 2000):
            body = otlp_encode.traces_request(recs[i:i + 2000], {})
            gzip.compress(body, compresslevel=5)


_METRICS = {}


def encode_metrics(keys, intervals=3):
    """``intervals`` intervals of ``keys`` keys, cumulative (the 2nd and later merge into the totals)."""
    from autoperf.export.otlp_metrics import MetricsEncoder
    recs = _METRICS.get(keys) or _METRICS.setdefault(keys, metrics_records(keys))
    enc = MetricsEncoder()
    for _ in range(intervals):
        gzip.compress(enc.request(recs).SerializeToString(), compresslevel=5)


def _record_factory_design():
    """The earlier design, for comparison: a record factory over the current one (one more call per record)."""
    import logging
    from autoperf import spans, tracecontext
    previous = logging.getLogRecordFactory()

    def record_factory(*args, **kwargs):
        record = previous(*args, **kwargs)
        s = spans.get_current()
        if s is not None:
            record.trace_id = tracecontext.trace_hex(s.flow_id)
            record.span_id = f"{s.span_id:016x}"
            record.flow_name = s.flow_name
        return record
    logging.setLogRecordFactory(record_factory)


def hot_path(what, n):
    """What the program's own thread pays: a traceparent header value; a logging call (a handler writing
    a formatted line to /dev/null) plain, with the correlation out of and in a flow."""
    import logging

    from autoperf import spans
    from autoperf.integrations import log_context
    from autoperf.integrations.aiohttp import traceparent_for
    if what == "traceparent":
        s = spans.start("f", "flow")
        for _ in range(n):
            traceparent_for(s, "api.example.org")
        return
    if what == "log_factory_out":
        _record_factory_design()
    elif what != "log_plain":
        log_context.setup(None, {})
    log = logging.getLogger("bench")
    log.propagate = False
    log.setLevel(logging.INFO)
    handler = logging.StreamHandler(open(os.devnull, "w"))
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))   # no clock: deterministic
    log.addHandler(handler)
    s = spans.start("f", "flow") if what == "log_in" else None
    for i in range(n):
        log.info("interaction %s", i)
    if s is not None:
        assert log.makeRecord("bench", 20, "p", 1, "m", None, None).flow_name == "f"


HOT = ("traceparent", "log_plain", "log_factory_out", "log_out", "log_in")


def timed(fn, *args):
    fn(*args[:1] and (min(args[0], 200),) + args[1:])     # warm caches and imports
    t0 = time.thread_time()
    fn(*args)
    return time.thread_time() - t0


def sink_cpu_per_span(n):
    """Whole exporter (write, encode, gzip, HTTP) for n spans; CPU of this process (receiver elsewhere)."""
    code = ("import sys; sys.path.insert(0, %r)\n"
            "from tests.otlp_receiver import Receiver\nimport time\n"
            "rx = Receiver(); rx.start(); print(rx.port, flush=True)\ntime.sleep(3600)\n") % ROOT
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        port = int(child.stdout.readline())
        from autoperf.export import otlp_config
        from autoperf.export.otlp_sink import OtlpSink
        settings = otlp_config.resolve({"endpoint": f"http://127.0.0.1:{port}"}, {}, environ={})
        with tempfile.TemporaryDirectory() as tmp:
            sink = OtlpSink(settings, tmp)
            recs = make_records(n)
            t0 = os.times()
            for i in range(0, n, 512):
                sink.write(recs[i:i + 512])
            sink.sync(120)
            t1 = os.times()
            sink.close()
            sent = sink.counters["sent_traces"]
        return (t1.user + t1.system - t0.user - t0.system) / max(sent, 1), sent
    finally:
        child.kill()


def write_cost(n):
    """``write()`` in the writer thread: filter and queue (the exporter thread not started)."""
    from autoperf.export import otlp_config
    from autoperf.export.otlp_sink import OtlpSink
    settings = otlp_config.resolve({"endpoint": "http://127.0.0.1:9", "max_queue_records": 10 ** 7}, {}, environ={})
    with tempfile.TemporaryDirectory() as tmp:
        sink = OtlpSink(settings, tmp, start=False)
        recs = make_records(512)
        t0 = time.thread_time()
        for _ in range(n // 512):
            sink.write(recs)
        return (time.thread_time() - t0) / (n // 512 * 512)


def callgrind(what, size, passes=1):
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "cg.out")
        # a fixed hash seed: dict layouts (and so instruction counts) the same in both runs
        subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, __file__,
                        "--_inner", what, str(size), str(passes)], check=True, capture_output=True,
                       env={**os.environ, "PYTHONHASHSEED": "0"})
        for line in open(out):
            if line.startswith("summary:") or line.startswith("totals:"):
                return int(line.split()[1])
    raise RuntimeError("no callgrind summary")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--spans", type=int, default=20000)
    parser.add_argument("--keys", type=int, default=200)
    parser.add_argument("--callgrind", action="store_true")
    parser.add_argument("--hot-only", action="store_true", help="only the callgrind figures of the hot path")
    parser.add_argument("--_inner", nargs=3)
    args = parser.parse_args()
    if args._inner:
        what, size, passes = args._inner[0], int(args._inner[1]), int(args._inner[2])
        import autoperf.export.otlp_encode, autoperf.export.otlp_metrics  # noqa: F401,E401 - imports cancel out
        if what in HOT:
            hot_path(what, size)
        elif what == "spans":
            encode_spans(size, passes)
        else:
            _METRICS[size] = metrics_records(size)
            encode_metrics(size, intervals=passes)
        return
    if args.hot_only:
        for what in HOT:
            per = (callgrind(what, 6000) - callgrind(what, 2000)) / 4000
            print(f"| callgrind: instructions per call, {what} | {per:,.0f} |")
        return
    enc = timed(encode_spans, args.spans) / args.spans
    metrics_records(10)
    _METRICS[args.keys] = metrics_records(args.keys)
    met = timed(encode_metrics, args.keys) / (args.keys * 3)
    sink, sent = sink_cpu_per_span(args.spans)
    wr = write_cost(200_000)
    print(f"| encode + gzip, per span | {enc * 1e6:.1f} us |")
    print(f"| encode + gzip, per metrics record (one key, one interval; cumulative) | {met * 1e6:.1f} us |")
    print(f"| whole exporter (write + encode + gzip + HTTP), per span, {sent} spans | {sink * 1e6:.1f} us CPU |")
    print(f"| write() in the writer thread, per record | {wr * 1e9:.0f} ns |")
    if args.callgrind:
        # more passes over the same records: making them, start-up and imports cancel out
        per_span = (callgrind("spans", 2000, 3) - callgrind("spans", 2000, 1)) / (2000 * 2)
        per_key = (callgrind("metrics", 200, 5) - callgrind("metrics", 200, 2)) / (200 * 3)
        print(f"| callgrind: instructions per exported span | {per_span:,.0f} |")
        print(f"| callgrind: instructions per metrics record | {per_key:,.0f} |")
        for what in HOT:
            per = (callgrind(what, 6000) - callgrind(what, 2000)) / 4000
            print(f"| callgrind: instructions per call, {what} | {per:,.0f} |")


if __name__ == "__main__":
    main()
