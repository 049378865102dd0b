"""Benchmark: `autoperf report` aggregation over N generated records (default 10 M).

    .venv/bin/python tests/bench/bench_report.py [--records 10000000] [--dir DIR] [--keep] [--jobs N]
                                                 [--phases decode,single,parallel]

Generates a JSON-lines log once (records in the documented schema: per command flow two db spans,
one http span, the root span and flow_complete; plus resource, cycle and job records), then measures,
each phase in a fresh subprocess so peak RSS is its own:

  decode    orjson.loads of every line (the ceiling for any pure-Python pipeline)
  single    read_records + Aggregator (+ result + suggestions) in one process
  parallel  aggregate_files with --jobs processes (byte ranges, merged), + render terminal and html —
            what `autoperf report` runs from 256 MB of input
and prints records/s, records per CPU-second (meaningful on a busy machine) and peak RSS (MB) for each.
Run on an idle machine; the numbers are CPU-bound.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SPAN = ('{"timestamp":"%s","level":"%s","type":"span","pid":%d,"name":"%s","kind":"%s","span_id":"%016x",'
        '"parent_id":%s,"flow_id":"%016x","flow_name":"%s","duration_ms":%.3f,"status":"%s","error":%s,'
        '"thread":"MainThread","task":"Task-%d","attrs":%s}\n')
FC = ('{"timestamp":"%s","level":"INFO","type":"flow_complete","pid":%d,"flow_name":"%s","flow_id":"%016x",'
      '"user_id":%d,"duration_ms":%.3f,"checkpoints":[],"status":"%s","error":%s,"sla_ms":%d,"sla_met":%s,'
      '"metadata":{"command":"%s","guild_id":null,"channel_id":987654321,"first_response_ms":%.3f}}\n')
RES = ('{"timestamp":"%s","level":"INFO","type":"resource","pid":1,"rss_mb":%.1f,"uss_mb":%.1f,"cpu_percent":%.1f,'
       '"threads":8,"open_fds":40,"system_memory_percent":40.0,"workers":[{"pid":2,"rss_mb":%.1f}],'
       '"max_worker_rss_mb":%.1f,"active_flows":%d,"loop_lag_ms":{"avg":%.2f,"p50":%.2f,"p95":%.2f,"max":%.2f},'
       '"db_pool":{"size":10,"in_use":%d,"idle":%d,"waiters":0,"utilisation_pct":%.1f},'
       '"process_pool":{"pending":%d,"busy":1,"workers":2}}\n')
CMDS = [("queue_command", "queue", 300), ("setup_command", "setup", 500), ("profile_command", "profile", 200),
        ("leaderboard_command", "leaderboard", 500), ("activate_command", "activate", 200)]
QUERIES = [("SELECT * FROM players WHERE discord_uid = $1", "a1b2c3d4e5f60718"),
           ("SELECT * FROM preferences_1v1 WHERE discord_uid = $1", "0f1e2d3c4b5a6978"),
           ("SELECT * FROM leaderboard ORDER BY mmr DESC LIMIT $1", "77aa88bb99cc0011")]


def generate(path: str, n_records: int, seed: int = 1) -> int:
    rng = random.Random(seed)
    t0 = dt.datetime(2025, 1, 20)
    sid = 1
    written = 0
    flow_i = 0
    buf = []
    with open(path, "w", encoding="utf-8", buffering=1 << 22) as f:
        while written < n_records:
            t = t0 + dt.timedelta(milliseconds=flow_i * 8)
            ts = t.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (t.microsecond // 1000)
            name, cmd, sla = CMDS[flow_i % len(CMDS)]
            fid = sid
            sid += 1
            d1, d2, h = rng.lognormvariate(2.0, 0.5), rng.lognormvariate(2.5, 0.5), rng.lognormvariate(4.5, 0.4)
            q1, q2 = QUERIES[0], QUERIES[1 if flow_i % 3 else 2]
            for (q, fp), d in ((q1, d1), (q2, d2)):
                attrs = '{"statement":"%s","fingerprint":"%s","operation":"SELECT","rows":1,"system":"postgresql"}' % (q, fp)
                buf.append(SPAN % (ts, "DEBUG", 1, "db.fetch", "db", sid, '"%016x"' % fid, fid, name, d, "success",
                                   "null", flow_i, attrs))
                sid += 1
            buf.append(SPAN % (ts, "DEBUG", 1, "POST /interactions/{interaction_id}/{token}/callback", "http", sid,
                               '"%016x"' % fid, fid, name, h, "success", "null", flow_i,
                               '{"method":"POST","host":"discord.com","route":"/interactions/{interaction_id}/{token}/callback","status":204}'))
            sid += 1
            total = d1 + d2 + h + rng.random() * 5
            err = rng.random() < 0.01
            buf.append(SPAN % (ts, "INFO", 1, name, "flow", fid, "null", fid, name, total,
                               "error" if err else "success", '"ValueError"' if err else "null", flow_i,
                               '{"command":"%s"}' % cmd))
            buf.append(FC % (ts, 1, name, fid, 100000 + flow_i % 5000, total, "error" if err else "success",
                             '"ValueError"' if err else "null", sla, "true" if total <= sla else "false", cmd,
                             h + d1 + d2))
            written += 5
            if flow_i % 25 == 0:
                pool = rng.random() * 70
                lag = rng.random() * 5
                buf.append(RES % (ts, 180.0, 150.0, 12.0, 90.0, 90.0, rng.randint(0, 5), lag / 2, lag / 2, lag, lag * 3,
                                  int(pool / 10), 10 - int(pool / 10), pool, rng.randint(0, 3)))
                written += 1
            if flow_i % 50 == 0:
                cid = sid
                sid += 1
                buf.append(SPAN % (ts, "INFO", 1, "matchmaker.cycle", "cycle", cid, "null", cid, "matchmaker.cycle",
                                   rng.lognormvariate(3, 0.3), "success", "null", 0,
                                   '{"matches_made":%d,"queue_size":%d}' % (rng.randint(0, 4), rng.randint(0, 40))))
                buf.append(SPAN % (ts, "DEBUG", 2, "parse_replay", "job", sid, '"%016x"' % cid, cid, "matchmaker.cycle",
                                   120.0, "success", "null", 0,
                                   '{"queue_wait_ms":%.2f,"run_ms":100.0,"transfer_ms":15.0,"worker_pid":2,"executor":"process"}'
                                   % (rng.random() * 10)))
                sid += 1
                written += 2
            flow_i += 1
            if len(buf) >= 20000:
                f.write("".join(buf))
                buf.clear()
        f.write("".join(buf))
    return written


PHASE = r'''
import json, os, resource, sys, time
sys.path.insert(0, {root!r})
path, mode, jobs = {path!r}, {mode!r}, {jobs!r}
t0 = time.perf_counter(); c0 = time.process_time()
out = {{}}
if mode == "decode":
    import orjson
    from autoperf.analysis.reader import read_records
    rd = read_records([path]); n = 0
    loads = orjson.loads
    for line in rd.iter_lines():
        if line:
            loads(line); n += 1
    out["records"] = n
elif mode == "single":
    from autoperf.analysis.aggregate import Aggregator
    from autoperf.analysis.reader import read_records
    rd = read_records([path]); agg = Aggregator(); agg.add_all(rd); agg.flush_open()
    t_agg = time.perf_counter() - t0
    r = agg.result()
    out["records"] = rd.records; out["skipped"] = rd.skipped; out["aggregate_s"] = t_agg
    out["commands"] = r["totals"]["commands"]; out["suggestions"] = len(r["suggestions"])
else:
    from autoperf.analysis.parallel import aggregate_files
    from autoperf.analysis.render import render
    agg, st = aggregate_files([path], jobs=jobs)
    t_agg = time.perf_counter() - t0
    r = agg.result(); r["source"] = st
    t1 = time.perf_counter()
    txt = render(r, "terminal", colour=False); html = render(r, "html")
    out["render_s"] = time.perf_counter() - t1
    out["records"] = st["records"]; out["aggregate_s"] = t_agg; out["jobs"] = st["jobs"]
    out["commands"] = r["totals"]["commands"]; out["html_kb"] = len(html) // 1024
out["wall_s"] = time.perf_counter() - t0
out["cpu_s_main"] = time.process_time() - c0
ch = resource.getrusage(resource.RUSAGE_CHILDREN)
out["cpu_s"] = out["cpu_s_main"] + ch.ru_utime + ch.ru_stime
out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
out["peak_rss_children_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(json.dumps(out))
'''


def run_phase(path, mode, jobs):
    code = PHASE.format(root=ROOT, path=path, mode=mode, jobs=jobs)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(p.stderr)
    return json.loads(p.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=10_000_000)
    ap.add_argument("--dir", default=None, help="where to put (and reuse) the generated log")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--phases", default="decode,single,parallel")
    a = ap.parse_args()
    d = a.dir or tempfile.mkdtemp(prefix="autoperf-bench-")
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, f"performance_2025-01-20.bench{a.records}.log")
    if not os.path.exists(path):
        t = time.perf_counter()
        n = generate(path + ".tmp", a.records)
        os.replace(path + ".tmp", path)
        print(f"generated {n:,} records, {os.path.getsize(path) / 1e9:.2f} GB in {time.perf_counter() - t:.0f} s "
              f"-> {path}", flush=True)
    size = os.path.getsize(path)
    print(f"input: {path} ({size / 1e9:.2f} GB), cpus: {os.cpu_count()}, load avg: {os.getloadavg()}", flush=True)
    print("rate = records / wall s; per CPU-s = records / (CPU s of the process, its threads and children)", flush=True)
    try:
        for mode in a.phases.split(","):
            r = run_phase(path, mode, a.jobs)
            rate = r["records"] / r["wall_s"]
            extra = ""
            if mode == "parallel":
                extra = (f", jobs {r['jobs']}, render {r['render_s']:.2f} s (html {r['html_kb']} KB), "
                         f"peak RSS per worker {r['peak_rss_children_mb']:.0f} MB")
            print(f"{mode:11s}: {r['records']:,} records in {r['wall_s']:.1f} s = {rate:,.0f} records/s "
                  f"({size / r['wall_s'] / 1e6:.0f} MB/s), CPU {r['cpu_s']:.0f} s = "
                  f"{r['records'] / r['cpu_s']:,.0f} records per CPU-second, peak RSS {r['peak_rss_mb']:.0f} MB{extra}",
                  flush=True)
    finally:
        if not a.keep and not a.dir:
            shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
