"""Background EXPLAIN (FORMAT JSON) of slow SELECTs: at most once per fingerprint per hour, at most
``EXPLAIN_MAX_CONCURRENT`` at a time, on a connection of its own, never on the caller's time. The sizes
of the tables its filtered sequential scans read come along (the catalog's row estimates).

The parameters stay in memory only until that one EXPLAIN has run; plans are scrubbed of literals.
"""
from __future__ import annotations

import json
import time

from autoperf import diagnostics, pipeline, spans, sql

from .common import _CACHE_SIZE, _DbSpan

EXPLAIN_INTERVAL_S = 3600.0
EXPLAIN_MAX_CONCURRENT = 2
EXPLAIN_TIMEOUT_S = 10.0

_explained: dict = {}      # fingerprint -> monotonic time of the last EXPLAIN scheduled
_explain_tasks: set = set()
#: current span inside EXPLAIN tasks: makes our own wrappers call straight through
_SUPPRESS = _DbSpan("autoperf.explain", "db", None, None)


def _maybe_explain(conn_owner, query, info, params_of, args, kwargs, duration_ns):
    """Schedule one background EXPLAIN for this fingerprint if none ran in the last hour."""
    try:
        now = time.monotonic()
        last = _explained.get(info.fingerprint)
        if last is not None and now - last < EXPLAIN_INTERVAL_S:
            return
        if len(_explain_tasks) >= EXPLAIN_MAX_CONCURRENT:
            return
        conn, params = params_of(conn_owner, args, kwargs)
        addr, conn_params = conn._addr, conn._params
        import asyncio

        loop = asyncio.get_running_loop()
        if len(_explained) >= _CACHE_SIZE:
            _explained.clear()
        _explained[info.fingerprint] = now
        task = loop.create_task(_run_explain(addr, conn_params, query, tuple(params), info, duration_ns))
        _explain_tasks.add(task)
        task.add_done_callback(_explain_tasks.discard)
    except Exception as exc:
        diagnostics.internal_error("asyncpg explain scheduling", exc)


def _connect_kwargs(addr, params):
    kwargs = {"user": params.user, "password": params.password, "database": params.database,
              "timeout": EXPLAIN_TIMEOUT_S, "statement_cache_size": 0}
    if isinstance(addr, str):                 # unix socket: /dir/.s.PGSQL.5432
        directory, _, name = addr.rpartition("/")
        kwargs["host"] = directory or "/"
        kwargs["port"] = int(name.rpartition(".")[2]) if name.rpartition(".")[2].isdigit() else 5432
    else:
        kwargs["host"], kwargs["port"] = addr[0], addr[1]
    settings = dict(getattr(params, "server_settings", None) or {})
    settings["application_name"] = "autoperf-explain"
    settings["statement_timeout"] = str(int(EXPLAIN_TIMEOUT_S * 1000))
    kwargs["server_settings"] = settings
    # The caller's negotiated mode: "prefer"/"allow"/"disable" by name (an SSLContext object
    # would *require* TLS), a stricter mode with the caller's SSLContext.
    mode = getattr(getattr(params, "sslmode", None), "name", None)
    ssl = getattr(params, "ssl", None)
    if mode in ("disable", "allow", "prefer"):
        kwargs["ssl"] = mode
    elif ssl is not None:
        kwargs["ssl"] = ssl
    return kwargs


async def _run_explain(addr, conn_params, query, params, info, duration_ns):
    """EXPLAIN (FORMAT JSON) on a connection of our own; emit an ``explain`` record."""
    spans.activate(_SUPPRESS)   # this task's own context: nothing in here is a query span
    import asyncio

    import asyncpg

    conn = None
    started = time.perf_counter_ns()
    try:
        conn = await asyncpg.connect(**_connect_kwargs(addr, conn_params))
        if params:
            # A custom plan prints the parameter values into Filter/Index Cond; a generic plan
            # keeps $1... (PostgreSQL >= 12; older servers print values, scrubbed below anyway).
            try:
                await conn.execute("SET plan_cache_mode = force_generic_plan")
            except Exception:
                pass
        raw = await asyncio.wait_for(conn.fetchval("EXPLAIN (FORMAT JSON) " + query, *params),
                                     EXPLAIN_TIMEOUT_S)
        plan = _scrub_plan(json.loads(raw) if isinstance(raw, str) else raw)
        relations = await asyncio.wait_for(_relation_rows(conn, plan), EXPLAIN_TIMEOUT_S)
        pipeline.emit({
            "type": "explain", "level": "INFO",
            "fingerprint": info.fingerprint, "statement": info.statement, "plan": plan,
            "relations": relations,
            "query_ms": round(duration_ns / 1e6, 3),
            "explain_ms": round((time.perf_counter_ns() - started) / 1e6, 3),
            "connection_pid": conn.get_server_pid(),
            "system": "postgresql",
        })
    except Exception as exc:
        # The type only: asyncpg's messages may quote parameter values.
        diagnostics.warn_once("explain_failed",
                              f"asyncpg EXPLAIN for {info.fingerprint} failed: {type(exc).__name__}",
                              key=("explain_failed", type(exc).__name__), fingerprint=info.fingerprint)
    finally:
        params = None
        if conn is not None:
            try:
                await conn.close(timeout=2)
            except Exception:
                conn.terminate()


def _filtered_seq_scans(node, out):
    """Relation names of the plan's sequential scans that filter rows."""
    if isinstance(node, list):
        for n in node:
            _filtered_seq_scans(n, out)
    elif isinstance(node, dict):
        if node.get("Node Type") == "Seq Scan" and node.get("Filter") and node.get("Relation Name"):
            out.add(node["Relation Name"])
        for key in ("Plan", "Plans"):
            if key in node:
                _filtered_seq_scans(node[key], out)
    return out


async def _relation_rows(conn, plan):
    """{relation: rows} from the catalog for the filtered sequential scans: a plain EXPLAIN says how many
    rows a scan returns, not how many it reads (the index advice needs both). The planner's estimate
    (reltuples) once the table was analysed, else the live-row count of the statistics."""
    names = sorted(_filtered_seq_scans(plan, set()))
    if not names:
        return {}
    rows = await conn.fetch(
        "SELECT n.name, greatest(c.reltuples, coalesce(s.n_live_tup, 0))::float8 AS rows "
        "FROM unnest($1::text[]) AS n(name) JOIN pg_class c ON c.oid = to_regclass(quote_ident(n.name)) "
        "LEFT JOIN pg_stat_all_tables s ON s.relid = c.oid", names)
    return {r["name"]: r["rows"] for r in rows}


def _scrub_plan(node):
    """Every text in the plan with its literals replaced by ``?`` (conditions quote constants)."""
    if isinstance(node, dict):
        return {k: _scrub_plan(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_scrub_plan(v) for v in node]
    if isinstance(node, str) and ("'" in node or any(c.isdigit() for c in node)):
        return sql.normalise(node)[0]
    return node


def explain_tasks() -> set:
    """EXPLAIN tasks still running (tests wait on them)."""
    return set(_explain_tasks)


def reset_explain_memory() -> None:
    """Forget which fingerprints were explained (tests; a config reload)."""
    _explained.clear()
