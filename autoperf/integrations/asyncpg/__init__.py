"""asyncpg: one ``db`` span per query, on every path, exactly once; pool waits; pool statistics.

Where we wrap, and why it covers everything once
------------------------------------------------
asyncpg's wire protocol is a Cython extension type (``asyncpg.protocol.Protocol``): its methods
cannot be replaced (no attribute assignment on an extension type) and a per-instance proxy would
change what ``conn._protocol`` is. So we wrap the *Python-level* methods that are the last stop
before each protocol call — every protocol call that runs a query is made from exactly one of them:

=====================================================  ===========================================
wrapped                                                covers (protocol call)
=====================================================  ===========================================
``Connection.execute``                                 ``execute(q)`` without args (``query``);
                                                       with args it goes on to ``_execute``
``Connection._execute``                                ``fetch``, ``fetchrow``, ``fetchval``,
                                                       ``execute(q, *args)`` (``bind_execute``)
``Connection._executemany``                            ``executemany``, ``fetchmany``
``Connection._copy_out`` / ``_copy_in``                ``copy_from_table``/``_query``, ``copy_to_table``
``Connection.copy_records_to_table``                   its own ``copy_in`` call
``Connection.copy_from_query``                         with args it first runs ``quote_literal``
                                                       queries to inline them: one span over all
``PreparedStatement.__bind_execute``                   prepared ``fetch``/``fetchrow``/``fetchval``
``PreparedStatement.fetchmany`` / ``executemany``      prepared ``bind_execute_many``
``BaseCursor._bind_exec`` / ``_bind`` / ``_exec``,      cursor round-trips (``async for`` and
``Cursor.forward``                                     ``await conn.cursor()`` + ``fetch``/``forward``)
``Pool._acquire``                                      ``pool.acquire()`` (await and async with) —
                                                       a ``wait`` span, not a query
``Pool._async__init__``                                registers the pool for ``pool_stats()``
=====================================================  ===========================================

Pools, ``PoolConnectionProxy`` (it looks methods up on ``Connection`` at call time) and
transactions (``BEGIN``/``COMMIT`` go through ``Connection.execute``) need nothing more.

Exactly once: a query span is a ``_DbSpan``. A wrapper whose current span already is a
``_DbSpan`` just calls through — so ``execute(q, *args)`` -> ``_execute`` records once, and the
type-introspection queries asyncpg runs inside a query (``_introspect_types``) are part of that
query's span. One ``type() is`` check on the span we look up anyway for the parent.

DEV: a cursor is one span per round-trip to the server (``_bind_exec``/``_exec`` fetch a batch
of ``prefetch`` rows); a span over the whole ``async for`` would time the caller's loop body.
DEV: ``Connection.prepare()`` (Parse/Describe, no execution) is not a span; the statement's
executions are. ``Pool.release`` runs ``Connection.reset`` -> ``execute(<reset query>)``, which is
recorded like any query (it is a real round-trip on the caller's time).
DEV: the lean ``_execute`` wrapper (the hot path) makes no Span object and nothing current: it
times the call and hands one tuple to ``spans.record_finished`` (a Span and a ContextVar set +
reset were ~40 % of the wrapper's cost). Nothing wrapped runs inside ``_execute`` (type
introspection goes through the private ``__execute``; the outer ``execute`` wrapper and EXPLAIN
tasks mark themselves current, so ``_execute`` still sees them and calls through). What differs:
a span started by user code inside the call (a custom codec) hangs under the caller's span, and a
``loop_blocked`` inside it names the caller's span.
DEV: ``Pool`` has ``__slots__`` without ``__weakref__``; the registry holds a weak reference to
the pool's first ``PoolConnectionHolder`` (which has one and lives exactly as long as its pool).

Parameters are never read into a span or record. EXPLAIN (off by default) needs them: they stay
in memory, referenced by the background task until that one EXPLAIN has run.
"""
from __future__ import annotations

import inspect
import json
import re
import time
import weakref

from autoperf import diagnostics, pipeline, spans, sql
from autoperf.config.schema import Bool, Field, Float, Int, Map, Obj, Str
from autoperf.integrations import base
from autoperf.records import Site

NAME = "asyncpg"
MODULE = "asyncpg"
REQUIRES = "asyncpg >= 0.27"
DEFAULT_ENABLED = True

OPTIONS = Obj({
    "slow_query_ms": Field(Float(min=0), default=500,
                           doc="A query slower than this is logged at WARNING level."),
    "slow_query_overrides": Field(Map(Float(min=0), keys=Str(pattern="[0-9a-f]{16}")), default={},
                                  doc="Per-query thresholds: {fingerprint: ms} (fingerprints are in the db spans)."),
    "statement_max_length": Field(Int(min=16), default=200,
                                  doc="Normalised statements are cut to this many characters."),
    "explain": Field(Bool(), default=False,
                     doc="Capture EXPLAIN (FORMAT JSON) for slow SELECTs, at most once per query per hour, "
                         "on a separate connection, in the background."),
    "explain_threshold_ms": Field(Float(min=0), default=None,
                                  doc="A SELECT slower than this gets an EXPLAIN (default: its slow-query threshold)."),
}, doc="asyncpg (PostgreSQL) queries and pools.")

WRAPS = [
    ("asyncpg.connection", "Connection.execute"),
    ("asyncpg.connection", "Connection._execute"),
    ("asyncpg.connection", "Connection._executemany"),
    ("asyncpg.connection", "Connection._copy_out"),
    ("asyncpg.connection", "Connection._copy_in"),
    ("asyncpg.connection", "Connection.copy_records_to_table"),
    ("asyncpg.connection", "Connection.copy_from_query"),
    ("asyncpg.prepared_stmt", "PreparedStatement._PreparedStatement__bind_execute"),
    ("asyncpg.prepared_stmt", "PreparedStatement.fetchmany"),
    ("asyncpg.prepared_stmt", "PreparedStatement.executemany"),
    ("asyncpg.cursor", "BaseCursor._bind_exec"),
    ("asyncpg.cursor", "BaseCursor._bind"),
    ("asyncpg.cursor", "BaseCursor._exec"),
    ("asyncpg.cursor", "Cursor.forward"),
    ("asyncpg.connection", "Connection.reset"),
    ("asyncpg.pool", "Pool._acquire"),
    ("asyncpg.pool", "Pool._async__init__"),
]

EXPLAIN_INTERVAL_S = 3600.0
EXPLAIN_MAX_CONCURRENT = 2
EXPLAIN_TIMEOUT_S = 10.0
_CACHE_SIZE = 4096

_get_current = spans._get_current
_set_current = spans._set_current
_record_finished = spans.record_finished
_perf_counter_ns = time.perf_counter_ns


class _DbSpan(spans.Span):
    """A query span of this integration (its type marks "a query is already being recorded")."""

    __slots__ = ()


class _Settings:
    __slots__ = ("slow_ms", "overrides", "max_length", "explain", "explain_ms")

    def __init__(self, options):
        opts = {k: f.default_value() for k, f in OPTIONS.fields.items()}
        opts.update({k: v for k, v in (options or {}).items() if v is not None or k == "explain_threshold_ms"})
        self.slow_ms = float(opts["slow_query_ms"])
        self.overrides = {str(k): float(v) for k, v in (opts.get("slow_query_overrides") or {}).items()}
        self.max_length = int(opts["statement_max_length"])
        self.explain = bool(opts["explain"])
        e = opts.get("explain_threshold_ms")
        self.explain_ms = None if e is None else float(e)

    def key(self):
        return (self.slow_ms, tuple(sorted(self.overrides.items())), self.max_length, self.explain,
                self.explain_ms)


class _Info:
    """What every span of one query text shares (computed once per distinct text)."""

    __slots__ = ("name", "attrs", "site", "explain_ns", "statement", "fingerprint")


_settings = _Settings({})
_infos: dict = {}          # query text -> _Info
_sites: dict = {}          # threshold -> Site
_WRITE_WORDS = re.compile(r"\b(INSERT|UPDATE|DELETE|MERGE|TRUNCATE|CREATE|DROP|ALTER|COPY|CALL|DO|INTO|"
                          r"GRANT|REVOKE|LOCK|VACUUM|REFRESH|NOTIFY)\b", re.I)


def _site(threshold):
    site = _sites.get(threshold)
    if site is None:
        site = _sites[threshold] = Site(threshold_ms=threshold)
    return site


def _info(query):
    """The shared facts for ``query`` (cached, bounded)."""
    settings = _settings
    text = query if isinstance(query, str) else ""
    d = sql.describe(text, settings.max_length)
    info = _Info()
    op = d["operation"]
    info.name = "db." + (op.lower() if op else "query")
    info.fingerprint = d["fingerprint"]
    info.statement = d["statement"]
    info.attrs = {"statement": d["statement"], "fingerprint": d["fingerprint"], "operation": op,
                  "system": "postgresql"}
    threshold = settings.overrides.get(d["fingerprint"], settings.slow_ms)
    info.site = _site(threshold)
    info.explain_ns = None
    if settings.explain and op == "SELECT" and _explainable(text):
        explain_ms = settings.explain_ms if settings.explain_ms is not None else threshold
        info.explain_ns = explain_ms * 1e6
    if isinstance(query, str) and len(query) <= sql.MAX_CACHED_TEXT:
        if len(_infos) >= _CACHE_SIZE:
            try:
                _infos.pop(next(iter(_infos)), None)
            except (StopIteration, RuntimeError):
                pass
        _infos[query] = info
    return info


def _explainable(text):
    """A single read-only statement (conservative: any write keyword, even in a literal, says no)."""
    body = text.strip().rstrip(";")
    return ";" not in body and _WRITE_WORDS.search(body) is None


# -- rows --------------------------------------------------------------------------------------
def _rows_from_status(status):
    """``'INSERT 0 3'`` -> 3, ``'UPDATE 5'`` -> 5, ``'CREATE TABLE'`` -> None."""
    if isinstance(status, (bytes, bytearray, memoryview)):
        status = bytes(status).decode("ascii", "replace")
    if not isinstance(status, str):
        return None
    tail = status.rpartition(" ")[2]
    return int(tail) if tail.isdigit() else None


def _rows(result):
    t = type(result)
    if t is list:
        return len(result)
    if t is tuple and len(result) == 3:      # (data, status, completed) with return_status
        data, status, _ = result
        rows = _rows_from_status(status)
        if rows is None and isinstance(data, list):
            return len(data)
        return rows
    if t is str or t is bytes:
        return _rows_from_status(result)
    if t is int:                             # Cursor.forward
        return result
    return None


# -- the wrappers ------------------------------------------------------------------------------
def _query_wrapper(original, query_of, params_of=None, batch_of=None):
    """An ``async def`` wrapper recording one ``_DbSpan`` per call of ``original``.

    ``query_of(self, args, kwargs)`` -> SQL text; ``params_of`` -> the parameters, only for a
    possible EXPLAIN (never recorded); ``batch_of`` -> number of parameter sets (executemany).
    """
    async def wrapper(self, *args, **kwargs):
        parent = _get_current()
        if type(parent) is _DbSpan:          # an outer wrapper is recording this query
            return await original(self, *args, **kwargs)
        try:
            query = query_of(self, args, kwargs)
            info = _infos.get(query)
            if info is None:
                info = _info(query)
            s = _DbSpan(info.name, "db", info.attrs.copy(), parent, info.site)
            if batch_of is not None:
                n = batch_of(args, kwargs)
                if n is not None:
                    s.attrs["batch"] = n
        except Exception as exc:
            diagnostics.internal_error("asyncpg span start", exc)
            return await original(self, *args, **kwargs)
        s._token = _set_current(s)
        try:
            result = await original(self, *args, **kwargs)
        except BaseException as exc:
            s.fail(exc)
            code = getattr(exc, "sqlstate", None)
            if code is not None:
                s.attrs["sqlstate"] = code
            s.finish()
            raise
        rows = _rows(result)
        if rows is not None:
            s.attrs["rows"] = rows
        s.finish()
        if params_of is not None and info.explain_ns is not None and s.duration_ns >= info.explain_ns:
            _maybe_explain(self, query, info, params_of, args, kwargs, s.duration_ns)
        return result
    return wrapper


#: ``Connection._execute``'s parameters (as in asyncpg 0.32); the lean wrapper below spells them
#: out and is used only when the original has exactly these.
_EXECUTE_SIGNATURE = "(self, query, args, limit, timeout, *, return_status=False, ignore_custom_codec=False, record_class=None)"


#: ``{"rows": n}`` for small n, the extra attributes of most queries (fetchval/fetchrow: 0 or 1).
_ROWS_SHARED = 64
_ROWS = tuple({"rows": n} for n in range(_ROWS_SHARED))


def _execute_factory(original):
    """``Connection._execute``: the path of every fetch*/execute-with-args; kept lean by hand.

    Same behaviour as ``_query_wrapper`` with the signature spelled out: no ``*args``/``**kwargs``
    packing (a tuple and a dict per call, and a slower call of the original), no helper calls on
    the way in. Another signature gets the generic wrapper.
    """
    if _signature(original) != _EXECUTE_SIGNATURE:
        return _query_wrapper(original, _arg0("query"), _execute_params)

    async def _execute(self, query, args, limit, timeout, *, return_status=False,
                       ignore_custom_codec=False, record_class=None):
        parent = _get_current()
        if type(parent) is _DbSpan:
            return await original(self, query, args, limit, timeout, return_status=return_status,
                                  ignore_custom_codec=ignore_custom_codec, record_class=record_class)
        info = _infos.get(query)
        if info is None:
            try:
                info = _info(query)
            except Exception as exc:
                diagnostics.internal_error("asyncpg span start", exc)
                return await original(self, query, args, limit, timeout, return_status=return_status,
                                      ignore_custom_codec=ignore_custom_codec, record_class=record_class)
        # No Span object and not made current (see DEV above): one tuple once the query is done.
        start = _perf_counter_ns()
        try:
            result = await original(self, query, args, limit, timeout, return_status=return_status,
                                    ignore_custom_codec=ignore_custom_codec, record_class=record_class)
        except BaseException as exc:
            duration = _perf_counter_ns() - start
            status, etype = spans.failure(exc)
            code = getattr(exc, "sqlstate", None)
            _record_finished(info.name, "db", info.attrs, parent, info.site, start, duration, status,
                             etype, None if code is None else {"sqlstate": code})
            raise
        duration = _perf_counter_ns() - start
        rows = len(result) if type(result) is list else _rows(result)
        if rows is None:
            more = None
        elif 0 <= rows < _ROWS_SHARED:
            more = _ROWS[rows]          # shared, never written to: no allocation per query
        else:
            more = {"rows": rows}
        _record_finished(info.name, "db", info.attrs, parent, info.site, start, duration, "success",
                         None, more)
        if info.explain_ns is not None and duration >= info.explain_ns:
            _maybe_explain(self, query, info, _explain_params, args, None, duration)
        return result
    return _execute


def _signature(fn):
    try:
        return str(inspect.signature(fn))
    except (TypeError, ValueError):
        return None


def _execute_params(conn, args, kwargs):
    return conn, (args[1] if len(args) > 1 else kwargs["args"])


def _explain_params(conn, args, kwargs):
    return conn, args


def _arg0(name):
    def get(self, args, kwargs):
        return args[0] if args else kwargs[name]
    return get


def _self_query(self, args, kwargs):
    return self._query


def _execute_text_params(self, args, kwargs):
    return self, args[1:]


def _prepared_params(self, args, kwargs):
    return self._connection, (args[0] if args else kwargs.get("args", ()))


def _batch(index, name):
    def get(args, kwargs):
        seq = args[index] if len(args) > index else kwargs.get(name)
        try:
            return len(seq)
        except TypeError:
            return None
    return get


def _copy_records_query(self, args, kwargs):
    table = args[0] if args else kwargs.get("table_name", "")
    schema = kwargs.get("schema_name")
    target = f'"{schema}"."{table}"' if schema else f'"{table}"'
    return f"COPY {target} FROM STDIN (FORMAT binary)"


def _copy_query_query(self, args, kwargs):
    return f"COPY ({args[0] if args else kwargs.get('query', '')}) TO STDOUT"


def _acquire_factory(original):
    async def _acquire(self, timeout):
        _register_pool(self)
        s = spans.Span("db.pool.acquire", "wait", {"system": "postgresql"}, _get_current())
        s._token = _set_current(s)
        try:
            return await original(self, timeout)
        except BaseException as exc:
            s.fail(exc)
            raise
        finally:
            s.finish()
    return _acquire


def _reset_factory(original):
    # Pool.release resets the connection (unlock, close cursors, UNLISTEN, RESET ALL) on the
    # caller's time: one "db.pool.reset" wait span, not a query to tune, cache or count.
    async def reset(self, *args, **kwargs):
        s = _DbSpan("db.pool.reset", "wait", {"system": "postgresql"}, _get_current())
        s._token = _set_current(s)
        try:
            return await original(self, *args, **kwargs)
        except BaseException as exc:
            s.fail(exc)
            raise
        finally:
            s.finish()
    return reset


def _async_init_factory(original):
    async def _async__init__(self):
        result = await original(self)
        _register_pool(self)
        return result
    return _async__init__


_FACTORIES = {
    "Connection.reset": _reset_factory,
    "Connection.execute": lambda o: _query_wrapper(o, _arg0("query"), _execute_text_params),
    "Connection._execute": _execute_factory,
    "Connection._executemany": lambda o: _query_wrapper(o, _arg0("query"), batch_of=_batch(1, "args")),
    "Connection._copy_out": lambda o: _query_wrapper(o, _arg0("copy_stmt")),
    "Connection._copy_in": lambda o: _query_wrapper(o, _arg0("copy_stmt")),
    "Connection.copy_records_to_table": lambda o: _query_wrapper(o, _copy_records_query),
    "Connection.copy_from_query": lambda o: _query_wrapper(o, _copy_query_query),
    "PreparedStatement._PreparedStatement__bind_execute": lambda o: _query_wrapper(o, _self_query, _prepared_params),
    "PreparedStatement.fetchmany": lambda o: _query_wrapper(o, _self_query, batch_of=_batch(0, "args")),
    "PreparedStatement.executemany": lambda o: _query_wrapper(o, _self_query, batch_of=_batch(0, "args")),
    "BaseCursor._bind_exec": lambda o: _query_wrapper(o, _self_query),
    "BaseCursor._bind": lambda o: _query_wrapper(o, _self_query),
    "BaseCursor._exec": lambda o: _query_wrapper(o, _self_query),
    "Cursor.forward": lambda o: _query_wrapper(o, _self_query),
    "Pool._acquire": _acquire_factory,
    "Pool._async__init__": _async_init_factory,
}


# -- patch / unpatch ---------------------------------------------------------------------------
def configure(options: dict) -> None:
    """Apply options (also used by ``patch``); the per-query caches are kept if nothing changed."""
    global _settings
    new = _Settings(options)
    if new.key() != _settings.key():
        _infos.clear()
        _sites.clear()
    _settings = new


def patch(module, options: dict) -> None:
    """Wrap every entry of ``WRAPS`` present in this asyncpg version (older ones lack a few)."""
    configure(options)
    for mod, qualname in WRAPS:
        try:
            owner, attr = base.resolve(mod, qualname)
        except (ImportError, AttributeError):
            continue
        if attr not in vars(owner):
            continue
        base.wrap(owner, attr, _FACTORIES[qualname])


def unpatch(module) -> None:
    base.unwrap_all(WRAPS)


# -- pools ---------------------------------------------------------------------------------------
_pools: dict = {}   # id(pool) -> weakref to its first PoolConnectionHolder


def _register_pool(pool):
    key = id(pool)
    ref = _pools.get(key)
    if ref is not None:
        holder = ref()
        if holder is not None and holder._pool is pool:
            return
    holders = getattr(pool, "_holders", None)
    if not holders:
        return

    def forget(r, key=key):
        if _pools.get(key) is r:
            _pools.pop(key, None)
    try:
        _pools[key] = weakref.ref(holders[0], forget)
    except TypeError:  # pragma: no cover - a holder without __weakref__ (future asyncpg)
        pass


def pool_stats() -> list:
    """One dict per live asyncpg pool that has been used since patching.

    ``{"pool": id, "size", "in_use", "idle", "waiters", "min_size", "max_size", "utilisation_pct"}``:
    ``size`` connections open, ``in_use`` acquired, ``idle`` open and free, ``waiters`` tasks
    blocked in ``acquire()``, ``utilisation_pct`` = in_use / max_size. Safe from any thread.
    """
    out = []
    for key, ref in list(_pools.items()):
        holder = ref()
        if holder is None:
            continue
        pool = holder._pool
        try:
            if pool._closed or getattr(pool, "_closing", False):
                continue
            holders = list(pool._holders)
            size = sum(1 for h in holders if h.is_connected())
            idle = sum(1 for h in holders if h.is_connected() and h.is_idle())
            in_use = sum(1 for h in holders if not h.is_idle())
            max_size = pool._maxsize
            waiters = 0
            queue = pool._queue
            for fut in list(getattr(queue, "_getters", ()) if queue is not None else ()):
                if not fut.done():
                    waiters += 1
            out.append({
                "pool": f"{key:x}", "size": size, "in_use": in_use, "idle": idle, "waiters": waiters,
                "min_size": pool._minsize, "max_size": max_size,
                "utilisation_pct": round(100.0 * in_use / max_size, 1) if max_size else 0.0,
            })
        except Exception as exc:  # a pool mid-change from another thread: skip it this time
            diagnostics.internal_error("asyncpg.pool_stats", exc)
    return out


# -- EXPLAIN -------------------------------------------------------------------------------------
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
        pipeline.emit({
            "type": "explain", "level": "INFO",
            "fingerprint": info.fingerprint, "statement": info.statement, "plan": plan,
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
