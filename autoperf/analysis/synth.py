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
