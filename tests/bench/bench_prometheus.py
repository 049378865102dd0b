"""What the /metrics endpoint costs its serving process (the program's other threads pay nothing).

Three measures, each the median of ``--rounds`` (thread CPU time): folding ``metrics`` records into
the totals (µs per record); searching ``performance_`` log data for ``resource`` records (ms per MB
of a realistic log: span records with one resource record per 2,000 lines); one scrape rendered by
``render`` (OpenMetrics, as Prometheus asks) for ``--keys`` flow keys and 4x as many span keys (ms per scrape, text format).

Run: ``python tests/bench/bench_prometheus.py [--rounds 5] [--keys 50]`` (``make bench``).
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time

import orjson

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from autoperf.export.prometheus import render  # noqa: E402
from autoperf.export.prometheus.fold import Fold  # noqa: E402
from autoperf.export.prometheus.tail import LogTail  # noqa: E402
from autoperf.metrics.exphist import ExpHistogram  # noqa: E402


def metrics_record(name, root, rng, shard):
    hist = ExpHistogram()
    values = [rng.lognormvariate(-4, 1) for _ in range(50)]
    for v in values:
        hist.record(v)
    return {"type": "metrics", "name": name, "kind": "flow" if root else "db", "status": "success",
            "flow_name": None if root else "cmd0", "root": root, "measure": "duration", "count": 50,
            "sum_ms": sum(values) * 1000, "min_ms": min(values) * 1000, "max_ms": max(values) * 1000,
            "hist": hist.to_dict(), "shard_ids": [shard], "sla_ms": 100.0, "over_sla": 1}


def cpu():
    return time.thread_time()


def fold_cost(records):
    fold = Fold()
    t = cpu()
    for rec in records:
        fold.add(rec)
    return (cpu() - t) / len(records) * 1e6, fold


def scan_cost(directory, megabytes):
    span = orjson.dumps({"timestamp": "2026-12-07T00:00:00.000Z", "level": "TRACE", "type": "span", "name": "db.fetch",
                         "kind": "db", "span_id": "0123456789abcdef", "parent_id": "0123456789abcdee",
                         "flow_id": "0123456789abcded", "flow_name": "queue", "duration_ms": 1.234,
                         "status": "success", "error": None, "pid": 1, "host": "h", "instance_id": "0" * 32,
                         "thread": "MainThread", "task": "Task-1", "attrs": {"statement": "SELECT 1"}}) + b"\n"
    resource = orjson.dumps({"type": "resource", "pid": 1, "rss_mb": 80.0, "loop_lag_ms": {"p95": 1.0}}) + b"\n"
    block = span * 1999 + resource
    path = os.path.join(directory, "performance_2026-12-07.log")
    with open(path, "wb") as fh:
        while fh.tell() < megabytes * 1e6:
            fh.write(block)
    size = os.path.getsize(path)
    seen = []
    tail = LogTail(directory, seen.append)
    tail._started = True           # read the file from its start, as one created after serving began
    t = cpu()
    tail.poll()
    return (cpu() - t) * 1e3 / (size / 1e6), len(seen)


def scrape_cost(fold):
    t = cpu()
    body = render.render(fold, openmetrics=True)
    return (cpu() - t) * 1e3, len(body)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--keys", type=int, default=50)
    parser.add_argument("--mb", type=float, default=50)
    args = parser.parse_args()
    rng = random.Random(1)
    records = [metrics_record(f"cmd{i % args.keys}", True, rng, i % 3) for i in range(3000)]
    records += [metrics_record(f"db{i % (4 * args.keys)}", False, rng, i % 3) for i in range(3000)]
    folds, scans, scrapes = [], [], []
    with tempfile.TemporaryDirectory() as directory:
        for _ in range(args.rounds):
            per_record, fold = fold_cost(records)
            folds.append(per_record)
            ms_per_mb, found = scan_cost(directory, args.mb)
            scans.append(ms_per_mb)
            scrapes.append(scrape_cost(fold))
    series = len(fold.flows) + len(fold.spans)
    print(f"fold: {statistics.median(folds):.1f} us CPU per metrics record ({len(records)} records, {series} keys)")
    print(f"resource search: {statistics.median(scans):.2f} ms CPU per MB of performance log ({found} resource records found)")
    print(f"scrape: {statistics.median(s[0] for s in scrapes):.1f} ms CPU, {scrapes[0][1] / 1024:.0f} KiB of text "
          f"for {series} keys x {len(fold.bounds_s) + 1} buckets")


if __name__ == "__main__":
    main()
