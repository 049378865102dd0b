"""Benchmark: `autoperf report` over a synthesised day of a bot at 100 interactions/s, default retention.

    .venv/bin/python tests/bench/bench_report_day.py [--rate 100] [--hours 24] [--dir DIR] [--keep] [--split]

Writes what a day under the default retention leaves (docs/records.md): ``metrics_DAY.log`` (one record
per key per 10 s interval: 5 commands' duration and first response, their db / http children, errors,
a cycle and a job; histograms drawn from log-normal durations), and ``performance_DAY.log`` with a
``flow_complete`` for every flow (``"retained": null`` unless a rule kept it) plus the four spans of
each retained flow (errors 0.5 %, SLA breaches, the 1 % sample) and a resource sample every 5 s
(``--split``: the unretained flow_complete records in ``flows_DAY.log`` instead, which readers skip).
Then, in one run, measures `autoperf report` (a subprocess, terminal output) and a bare
``orjson.loads`` of every line of the day's performance file, wall and CPU seconds each (goal
issue 14: the report <= 5 s and faster than the parse).
"""
from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

DAY = "2026-11-30"
CMDS = [("queue_command", 300, 4.0), ("setup_command", 500, 4.4), ("profile_command", 200, 3.6),
        ("leaderboard_command", 500, 4.2), ("activate_command", 200, 3.4)]
CHILDREN = [("db.fetch", "db", "SELECT * FROM players WHERE discord_uid = $1", 2.0),
            ("db.fetch", "db", "SELECT * FROM preferences_1v1 WHERE discord_uid = $1", 2.5),
            ("POST /interactions/{interaction_id}/{token}/callback", "http", None, 4.5)]
FC = ('{"timestamp":"%s","level":"INFO","type":"flow_complete","pid":4242,"flow_name":"%s","flow_kind":"flow",'
      '"flow_id":"%s","user_id":%d,"duration_ms":%.3f,"checkpoints":[{"name":"db.fetch","kind":"db",'
      '"duration_ms":%.3f,"offset_ms":0.1}],"status":"%s","error":%s,"metadata":{"command":"%s",'
      '"interaction_type":"application_command","guild_id":123456789012345678,"channel_id":987654321098765432,'
      '"first_response_ms":%.3f},"sla_ms":%d,"sla_met":%s,"retained":%s}\n')
SPAN = ('{"timestamp":"%s","level":"INFO","type":"span","pid":4242,"name":"%s","kind":"%s","span_id":"%s",'
        '"parent_id":%s,"flow_id":"%s","flow_name":"%s","duration_ms":%.3f,"status":"%s","error":null,'
        '"thread":"MainThread","task":"Task-1","attrs":%s%s}\n')
RES = ('{"timestamp":"%s","level":"INFO","type":"resource","pid":4242,"rss_mb":180.0,"uss_mb":150.0,'
       '"cpu_percent":%.1f,"threads":8,"open_fds":40,"active_flows":%d,"loop_lag_ms":{"avg":1.0,"p50":0.8,'
       '"p95":%.2f,"max":4.0},"db_pool":{"size":10,"in_use":3,"idle":7,"waiters":0,"utilisation_pct":%.1f}}\n')


def _ts(sec: int, ms: int) -> str:
    if sec >= 86400:        # the last interval ends at the next midnight
        return "2026-12-01T00:00:00.000Z"
    h, rem = divmod(sec, 3600)
    m, s = divmod(rem, 60)
    return f"{DAY}T{h:02d}:{m:02d}:{s:02d}.{ms:03d}Z"


def _hist(values_s):
    from autoperf.metrics.exphist import ExpHistogram
    h = ExpHistogram()
    for v in values_s:
        h.record(v)
    return h


def generate(d: str, rate: int, hours: float, seed: int = 1, split: bool = False) -> dict:
    """The day's files; returns what was written. ``split``: unretained flow_complete records in
    ``flows_DAY.log`` (the layout proposed in CONTRACT_CHANGES 2) instead of the performance file."""
    import orjson
    rng = random.Random(seed)
    seconds = int(hours * 3600)
    perf = open(os.path.join(d, f"performance_{DAY}.log"), "w", buffering=1 << 22)
    met = open(os.path.join(d, f"metrics_{DAY}.log"), "wb", buffering=1 << 22)
    flows = open(os.path.join(d, f"flows_{DAY}.log"), "w", buffering=1 << 22) if split else None
    fbuf = []
    # pools of log-normal durations (ms) per key, drawn from per interval
    pools = {name: [rng.lognormvariate(mu, 0.5) for _ in range(5000)] for name, _sla, mu in CMDS}
    cpools = {q: [rng.lognormvariate(mu, 0.5) for _ in range(5000)] for _n, _k, q, mu in CHILDREN}
    n_flows = retained = lines = 0
    fid = 0
    interval: dict = {}
    buf = []
    for sec in range(seconds):
        for i in range(rate):
            ms = i * 1000 // rate
            ts = _ts(sec, ms)
            name, sla, _mu = CMDS[(sec * rate + i) % len(CMDS)]
            fid += 1
            flow_id = f"{(fid * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF:016x}"
            d = rng.choice(pools[name])
            err = rng.random() < 0.005
            child = [rng.choice(cpools[c[2]]) * 0.1 for c in CHILDREN]
            fr = d * 0.7
            rule = ("error" if err else "sla" if d > sla else
                    "sample" if ((int(flow_id[-8:], 16) * 0x9E3779B1) & 0xFFFFFFFF) < 0.01 * 2 ** 32 else None)
            status = "error" if err else "success"
            key = (name, status)
            a = interval.get(key)
            if a is None:
                a = interval[key] = [[], [], [], 0, Counter(), [], [[], [], []]]
            a[0].append(d)
            a[1].append(fr)
            a[3] += d > sla
            if rule:
                a[4][rule] += 1
            a[5].append((d, flow_id, ts))
            for j, c in enumerate(child):
                a[6][j].append(c)
            if rule:
                retained += 1
                for j, (cn, kind, q, _mu) in enumerate(CHILDREN):
                    attrs = ('{"statement":"%s","fingerprint":"%016x","operation":"SELECT","rows":1,"system":"postgresql"}'
                             % (q, j) if kind == "db" else '{"method":"POST","status":204}')
                    buf.append(SPAN % (ts, cn, kind, f"{fid:08x}{j:08x}", f'"{flow_id}"', flow_id, name, child[j],
                                       "success", attrs, f',"retained":"{rule}"'))    # as the writer: every span
                buf.append(SPAN % (ts, name, "flow", flow_id, "null", flow_id, name, d, status, "{}",
                                   f',"retained":"{rule}"'))
            line = FC % (ts, name, flow_id, 100000 + fid % 5000, d, child[0], status, '"ValueError"' if err else "null",
                         name.split("_")[0], fr, sla, "true" if d <= sla else "false", f'"{rule}"' if rule else "null")
            (buf if rule or flows is None else fbuf).append(line)
            n_flows += 1
        if sec % 5 == 0:
            buf.append(RES % (_ts(sec, 0), rng.random() * 30, rng.randint(0, 20), rng.random() * 5, rng.random() * 60))
        if len(buf) + len(fbuf) > 20000:
            lines += len(buf)
            perf.write("".join(buf))
            buf.clear()
            if flows is not None:
                flows.write("".join(fbuf))
                fbuf.clear()
        if sec % 10 == 9:
            _write_interval(met, orjson, interval, sec, pools)
            interval = {}
    lines += len(buf)
    perf.write("".join(buf))
    perf.close()
    if flows is not None:
        flows.write("".join(fbuf))
        flows.close()
    met.close()
    return {"flows": n_flows, "retained": retained, "lines": lines}


def _write_interval(met, orjson, interval, sec, pools):
    end, start = _ts(sec + 1, 0), _ts(sec - 9, 0)
    out = []
    for (name, status), a in interval.items():
        for measure, values in (("duration", a[0]), ("first_response", a[1])):
            h = _hist(v / 1000.0 for v in values)
            rec = {"timestamp": end, "level": "INFO", "type": "metrics", "pid": 4242, "interval_start": start,
                   "interval_s": 10.0, "name": name, "kind": "flow", "status": status, "flow_name": None,
                   "root": True, "measure": measure, "count": h.count, "sum_ms": h.sum * 1000.0,
                   "min_ms": h.min * 1000.0, "max_ms": h.max * 1000.0, "hist": h.to_dict()}
            rec["deadline_missed"] = 0          # as the writer: flows answering an interaction
            if measure == "duration":
                sla = next(s for n, s, _m in CMDS if n == name)
                ex = sorted(a[5], reverse=True)[:5]
                rec.update({"sla_ms": float(sla), "over_sla": a[3], "deadline_missed": 0,
                            "exemplars": [{"duration_ms": x, "flow_id": f, "span_id": f, "timestamp": t} for x, f, t in ex],
                            "retained": sum(a[4].values()), "retained_by": dict(a[4])})
            out.append(rec)
        if status != "success":
            continue
        for j, (cn, kind, q, _mu) in enumerate(CHILDREN):
            h = _hist(v / 1000.0 for v in a[6][j])
            rec = {"timestamp": end, "level": "INFO", "type": "metrics", "pid": 4242, "interval_start": start,
                   "interval_s": 10.0, "name": cn, "kind": kind, "status": "success", "flow_name": name,
                   "root": False, "measure": "duration", "count": h.count, "sum_ms": h.sum * 1000.0,
                   "min_ms": h.min * 1000.0, "max_ms": h.max * 1000.0, "hist": h.to_dict()}
            if q:                       # as the writer: the fingerprint keys, the statement labels
                rec["fingerprint"], rec["statement"] = f"{j:016x}", q
            out.append(rec)
    met.write(b"".join(orjson.dumps(r) + b"\n" for r in out))


def bare_parse(path: str) -> tuple[int, float, float]:
    import orjson
    t0, c0 = time.perf_counter(), time.process_time()
    n = 0
    loads = orjson.loads
    with open(path, "rb") as f:
        rest = b""
        while True:
            block = f.read(1 << 24)
            if not block:
                break
            lines = (rest + block).split(b"\n")
            rest = lines.pop()
            for line in lines:
                loads(line)
                n += 1
    return n, time.perf_counter() - t0, time.process_time() - c0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=int, default=100)
    ap.add_argument("--hours", type=float, default=24)
    ap.add_argument("--dir", default=None)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--split", action="store_true", help="unretained flow_complete in flows_DAY.log")
    a = ap.parse_args()
    d = a.dir or tempfile.mkdtemp(prefix="autoperf_day_")
    os.makedirs(d, exist_ok=True)
    perf = os.path.join(d, f"performance_{DAY}.log")
    if not os.path.exists(perf):
        t = time.perf_counter()
        info = generate(d, a.rate, a.hours, split=a.split)
        print(f"generated {info['flows']:,} flows ({info['retained']:,} retained), {info['lines']:,} lines "
              f"in {time.perf_counter() - t:.0f} s")
    sizes = {f: os.path.getsize(os.path.join(d, f)) for f in sorted(os.listdir(d))}
    for f, s in sizes.items():
        print(f"  {f}: {s / 1e6:,.0f} MB")
    py = os.path.join(ROOT, ".venv", "bin", "python")
    py = py if os.path.exists(py) else sys.executable
    cmd = [py, "-m", "autoperf", "report", d]
    env = {k: v for k, v in os.environ.items() if k != "AUTOPERF_CONFIG"}
    subprocess.run(cmd, capture_output=True, cwd=d, env=env)           # warm the page cache and .pyc
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=d, env=env)
    wall = time.perf_counter() - t
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    if p.returncode != 0:
        print(p.stderr)
        sys.exit(1)
    every = [os.path.join(d, f) for f in (f"performance_{DAY}.log", f"flows_{DAY}.log") if os.path.exists(os.path.join(d, f))]
    n = pw = pc = 0
    for path in every:          # the day's record lines wherever they are
        n1, w1, c1 = bare_parse(path)
        n, pw, pc = n + n1, pw + w1, pc + c1
    print(f"\n| what | wall s | CPU s |\n|---|---|---|\n| autoperf report (terminal) | {wall:.2f} | {cpu:.2f} |\n"
          f"| orjson.loads of the day's {n:,} record lines | {pw:.2f} | {pc:.2f} |")
    print(f"\nreport / parse: {wall / pw:.2f} (wall), {cpu / pc:.2f} (CPU); goal <= 5 s and < 1")
    print("\n".join(p.stdout.splitlines()[:14]))
    if not a.keep and not a.dir:
        shutil.rmtree(d)


if __name__ == "__main__":
    main()
