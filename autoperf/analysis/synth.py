"""Synthetic records in the documented schema (docs/records.md) — for tests, benchmarks, demos."""
from __future__ import annotations

import datetime as _dt
import itertools
import random
from typing import Iterator

_ids = itertools.count(1)


def new_id() -> str:
    return f"{next(_ids):016x}"


def ts(dt: _dt.datetime) -> str:
    if dt.tzinfo is not None:
        dt = dt.astimezone(_dt.timezone.utc).replace(tzinfo=None)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def span(name, kind, start: _dt.datetime, duration_ms, flow_id, parent_id, flow_name=None, status="success",
         attrs=None, span_id=None) -> dict:
    sid = span_id or new_id()
    return {"timestamp": ts(start), "level": "INFO", "type": "span", "pid": 1, "name": name, "kind": kind,
            "span_id": sid, "parent_id": parent_id, "flow_id": flow_id or sid, "flow_name": flow_name,
            "duration_ms": float(duration_ms), "status": status, "error": None if status == "success" else "Error",
            "thread": "MainThread", "task": None, "attrs": attrs or {}}


def db_attrs(statement, fingerprint, operation="SELECT", explain=None):
    a = {"statement": statement, "fingerprint": fingerprint, "operation": operation, "rows": 1,
         "system": "postgresql"}
    if explain is not None:
        a["explain"] = explain
    return a


def flow(name, start: _dt.datetime, duration_ms, children=(), status="success", sla_ms=None, metadata=None,
         sequential=True) -> list[dict]:
    """A flow: child spans (name, kind, duration_ms, attrs) run back to back from the flow start
    (or all at the start when ``sequential`` is False), then the root span and its flow_complete."""
    fid = new_id()
    out = []
    offset = 0.0
    for (cname, kind, d, attrs) in children:
        st = start + _dt.timedelta(milliseconds=offset)
        out.append(span(cname, kind, st, d, fid, fid, flow_name=name, attrs=attrs))
        if sequential:
            offset += d
    root = span(name, "flow", start, duration_ms, fid, None, flow_name=name, status=status, span_id=fid)
    out.append(root)
    fc = {"timestamp": ts(start), "level": "INFO", "type": "flow_complete", "pid": 1, "flow_name": name,
          "flow_id": fid, "user_id": 1, "duration_ms": float(duration_ms), "checkpoints": [], "status": status,
          "error": None if status == "success" else "Error", "metadata": dict(metadata or {"command": name})}
    if sla_ms is not None:
        fc["sla_ms"] = float(sla_ms)
        fc["sla_met"] = duration_ms <= sla_ms
    out.append(fc)
    return out


def resource(start: _dt.datetime, rss=100.0, pool_pct=10.0, pending=0, worker_rss=80.0, lag_p95=1.0, lag_max=2.0,
             acquire_max=0.02):
    return {"timestamp": ts(start), "level": "INFO", "type": "resource", "pid": 1, "rss_mb": rss, "uss_mb": rss * 0.8,
            "cpu_percent": 5.0, "threads": 4, "open_fds": 10, "system_memory_percent": 30.0,
            "workers": [{"pid": 2, "rss_mb": worker_rss}], "max_worker_rss_mb": worker_rss, "active_flows": 1,
            "loop_lag_ms": {"avg": lag_p95 / 2, "p50": lag_p95 / 2, "p95": lag_p95, "max": lag_max},
            "db_pool": {"size": 10, "in_use": int(pool_pct / 10), "idle": 10 - int(pool_pct / 10), "waiters": 0,
                        "utilisation_pct": pool_pct, "acquires": 40, "acquire_wait_ms": acquire_max * 20,
                        "acquire_wait_max_ms": acquire_max, "resets": 40, "reset_ms": 8.0, "reset_max_ms": 0.4,
                        "wait_spans": int(acquire_max > 1.0)},
            "process_pool": {"pending": pending, "busy": 1, "workers": 2}}


def stream(n_flows: int, start: _dt.datetime | None = None, seed: int = 1, per_second: float = 50.0) -> Iterator[dict]:
    """A plausible mix for benchmarks: commands with db/http children, cycles, jobs, resources."""
    rng = random.Random(seed)
    start = start or _dt.datetime(2025, 1, 20, 0, 0, 0)
    cmds = [("queue_command", 300), ("setup_command", 500), ("profile_command", 200), ("leaderboard_command", 500)]
    q = [("SELECT * FROM players WHERE discord_uid = $1", "a1b2c3d4e5f60718"),
         ("SELECT * FROM preferences_1v1 WHERE discord_uid = $1", "0f1e2d3c4b5a6978"),
         ("UPDATE players SET mmr = $1 WHERE id = $2", "1234567890abcdef")]
    for i in range(n_flows):
        t = start + _dt.timedelta(seconds=i / per_second)
        name, sla = cmds[i % len(cmds)]
        d1 = rng.lognormvariate(2.0, 0.5)
        d2 = rng.lognormvariate(2.5, 0.5)
        h = rng.lognormvariate(4.5, 0.4)
        ch = [("db.fetch", "db", d1, db_attrs(*q[0])), ("db.fetch", "db", d2, db_attrs(*q[1])),
              ("POST /interactions/{id}/callback", "http", h, {"method": "POST", "status": 204})]
        yield from flow(name, t, d1 + d2 + h + rng.random() * 5, ch, sla_ms=sla,
                        metadata={"command": name.split("_")[0], "first_response_ms": h + d1 + d2})
        if i % 25 == 0:
            yield resource(t, pool_pct=rng.random() * 60, pending=rng.randint(0, 3))
        if i % 50 == 0:
            cid = new_id()
            yield span("matchmaker.cycle", "cycle", t, rng.lognormvariate(3, 0.3), cid, None, "matchmaker.cycle",
                       attrs={"matches_made": rng.randint(0, 4)}, span_id=cid)
            yield span("parse_replay", "job", t, 120.0, cid, cid, "matchmaker.cycle",
                       attrs={"queue_wait_ms": 5.0, "run_ms": 100.0, "transfer_ms": 15.0, "executor": "process"})


# ---------------------------------------------------------------- metrics records and retention
# A reference of docs/records.md "metrics" and tail-based retention, for the readers' tests and benchmarks:
# it turns every-span records into what a run under the default retention writes.
def _parse(ts_text: str) -> _dt.datetime:
    return _dt.datetime.strptime(ts_text, "%Y-%m-%dT%H:%M:%S.%fZ")


def sampled(flow_id: str, rate: float) -> bool:
    """The deterministic sample of the retention contract (the same in every process; a multiplicative
    hash of the id's low 32 bits, so consecutive ids spread evenly)."""
    return ((int(flow_id[-8:], 16) * 0x9E3779B1) & 0xFFFFFFFF) < rate * 2 ** 32


def retain_rule(root: dict, fc: dict | None, children: list, rate: float) -> str | None:
    """The first retention rule a root matches (error, sla, deadline, slow_child, sample) or None."""
    if root.get("status") not in ("success", None):
        return "error"
    d = root["duration_ms"]
    limit = (fc or {}).get("sla_ms", root.get("sla_ms"))
    th = root.get("threshold_ms")
    if (limit is not None and d > limit) or (th is not None and d > th):
        return "sla"
    md = (fc or {}).get("metadata") or {}
    fr = md.get("first_response_ms")
    if md.get("deadline_missed") is True or (isinstance(fr, (int, float)) and fr >= 3000.0):
        return "deadline"
    if any(c.get("threshold_ms") is not None and c["duration_ms"] > c["threshold_ms"] for c in children):
        return "slow_child"
    if sampled(root["flow_id"], rate):
        return "sample"
    return None


def metrics_and_retained(records, interval_s: float = 10.0, sample_rate: float = 0.01, exemplars: int = 5,
                         retain_all: bool = False):
    """(metrics records, records a run writes): every span aggregated per interval and key; span records
    only for retained roots (all of them with ``retain_all``); flow_complete for every flow."""
    from autoperf.metrics.exphist import ExpHistogram
    records = list(records)
    spans_by_flow: dict = {}
    fcs = {}
    roots = {}
    for r in records:
        if r.get("type") == "span":
            spans_by_flow.setdefault(r["flow_id"], []).append(r)
            if r["span_id"] == r["flow_id"]:
                roots[r["flow_id"]] = r
        elif r.get("type") == "flow_complete":
            fcs[r["flow_id"]] = r
    rules = {}
    for fid, root in roots.items():
        children = [c for c in spans_by_flow[fid] if c is not root]
        rules[fid] = "all" if retain_all else retain_rule(root, fcs.get(fid), children, sample_rate)
    keys: dict = {}

    def key_of(sp, measure="duration"):
        root = sp["span_id"] == sp["flow_id"]
        attrs = sp.get("attrs") or {}       # a db key: the fingerprint, as the writer's (its statement a label)
        k = (sp.get("pid"), sp.get("host"), sp["name"], sp["kind"], sp["status"], None if root else sp.get("flow_name"),
             root, measure, (attrs.get("fingerprint") or attrs.get("statement")) if sp["kind"] == "db" else None)
        return k

    def observe(sp, value, measure="duration"):
        end = _parse(sp["timestamp"]) + _dt.timedelta(milliseconds=sp["duration_ms"])
        epoch = end.replace(tzinfo=_dt.timezone.utc).timestamp()
        slot = int(epoch // interval_s)
        k = (slot,) + key_of(sp, measure)
        a = keys.get(k)
        if a is None:
            a = keys[k] = {"h": ExpHistogram(), "ex": [], "sp": sp, "over_sla": 0, "over_th": 0, "dm": 0,
                           "ret": 0, "by": {}}
        a["h"].record(value / 1000.0)
        fc = fcs.get(sp["flow_id"]) if sp["span_id"] == sp["flow_id"] else None
        sla = (fc or {}).get("sla_ms", sp.get("sla_ms"))
        if sla is not None and measure == "duration":
            a["sla"] = sla
            a["over_sla"] += value > sla
        if sp.get("threshold_ms") is not None:
            a["th"] = sp["threshold_ms"]
            a["over_th"] += value > sp["threshold_ms"]
        if fc is not None and measure == "duration":
            md = fc.get("metadata") or {}
            fr = md.get("first_response_ms")
            if md.get("deadline_missed") is True or (isinstance(fr, (int, float)) and fr >= 3000.0):
                a["dm"] += 1
            rule = rules.get(sp["flow_id"])
            if rule is not None:
                a["ret"] += 1
                a["by"][rule] = a["by"].get(rule, 0) + 1
        a["ex"].append((value, sp["flow_id"], sp["span_id"], sp["timestamp"]))
        a["ex"] = sorted(a["ex"], reverse=True)[:exemplars]

    for fid, sps in spans_by_flow.items():
        for sp in sps:
            observe(sp, sp["duration_ms"])
        fc = fcs.get(fid)
        fr = ((fc or {}).get("metadata") or {}).get("first_response_ms")
        if fc is not None and isinstance(fr, (int, float)):
            observe(roots[fid], float(fr), "first_response")
    out = []
    for k, a in sorted(keys.items(), key=lambda kv: kv[0][0]):
        slot, pid, host, name, kind, status, flow_name, root, measure, fp = k
        h = a["h"]
        rec = {"timestamp": ts(_dt.datetime.fromtimestamp((slot + 1) * interval_s, _dt.timezone.utc)),
               "level": "INFO", "type": "metrics", "pid": pid,
               "interval_start": ts(_dt.datetime.fromtimestamp(slot * interval_s, _dt.timezone.utc)),
               "interval_s": interval_s, "name": name, "kind": kind, "status": status, "flow_name": flow_name,
               "root": root, "measure": measure, "count": h.count, "sum_ms": h.sum * 1000.0,
               "min_ms": h.min * 1000.0, "max_ms": h.max * 1000.0, "hist": h.to_dict(),
               "exemplars": [{"duration_ms": d, "flow_id": f, "span_id": s, "timestamp": t} for d, f, s, t in a["ex"]]}
        if host is not None:
            rec["host"] = host
        if a["sp"].get("shard_ids") is not None:
            rec["shard_ids"] = a["sp"]["shard_ids"]
        if fp is not None:
            rec["fingerprint"] = fp
            st = (a["sp"].get("attrs") or {}).get("statement")
            if st:
                rec["statement"] = st
        if "sla" in a:
            rec["sla_ms"], rec["over_sla"] = a["sla"], a["over_sla"]
        if "th" in a:
            rec["threshold_ms"], rec["over_threshold"] = a["th"], a["over_th"]
        if root and measure == "duration":
            rec["deadline_missed"] = a["dm"]
            rec["retained"] = a["ret"]
            rec["retained_by"] = a["by"]
        out.append(rec)
    kept = []
    for r in records:
        t = r.get("type")
        if t == "span":
            rule = rules.get(r["flow_id"])
            if rule is None:
                continue
            r = dict(r, retained=rule)          # as the writer: on every span of a kept root
        elif t == "flow_complete":
            r = dict(r, retained=rules.get(r["flow_id"]))
        kept.append(r)
    return out, kept


def write_logs(directory: str, records) -> None:
    """Records to ``performance_DAY.log`` and ``metrics_DAY.log`` as the file sink routes them."""
    import os

    import orjson
    os.makedirs(directory, exist_ok=True)
    files = {}
    try:
        for r in records:
            prefix = "metrics" if r.get("type") == "metrics" else "performance"
            path = os.path.join(directory, f"{prefix}_{r['timestamp'][:10]}.log")
            f = files.get(path)
            if f is None:
                f = files[path] = open(path, "ab")
            f.write(orjson.dumps(r) + b"\n")
    finally:
        for f in files.values():
            f.close()
