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
``Connection.reset``                                   ``pool.release()``'s reset: a ``wait`` span
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
executions are.
DEV: ``Pool.release`` runs ``Connection.reset`` (unlock, close cursors, UNLISTEN, RESET ALL) on the
caller's time: that is one ``db.pool.reset`` ``wait`` span, and the reset query inside it is *not*
a query span (a shared ``_DbSpan`` marker is current meanwhile, so the ``execute`` wrapper calls
through): it is nothing to tune, cache or count. A pool made with ``reset=`` (asyncpg >= 0.30) does
not call ``Connection.reset``: the queries of its callback are recorded as queries.
DEV: the lean ``_execute`` wrapper (the hot path) makes no Span object and nothing current: it
times the call and hands one tuple to ``spans.record_finished`` (a Span and a ContextVar set +
reset were ~40 % of the wrapper's cost). Nothing wrapped runs inside ``_execute`` (type
introspection goes through the private ``__execute``; the outer ``execute`` wrapper, EXPLAIN tasks
and ``Connection.reset`` mark themselves current, so ``_execute`` still sees them and calls
through). What differs: a span started by user code inside the call (a custom codec) hangs under
the caller's span, and a ``loop_blocked`` inside it names the caller's span.
DEV: the pool waits (``db.pool.acquire``, ``db.pool.reset``) take the lean path too (see ``pools``):
no Span object, one ``record_finished`` tuple each — and only for waits over ``pool_wait_span_ms``
(1 ms): the rest are counted for the sampler (``wait_stats``). They were 27 % of the ladder bot's
records, nearly all a few µs long. What the pool runs inside ``acquire`` (connect,
``init``/``setup`` callbacks and their queries) hangs under the caller's span, not under the wait.
DEV: ``Pool`` has ``__slots__`` without ``__weakref__``; the registry holds a weak reference to
the pool's first ``PoolConnectionHolder`` (which has one and lives exactly as long as its pool).

Modules: ``common`` (options, settings, the ``_DbSpan`` type), ``queries`` (per-query info cache,
rows, the query wrappers incl. the lean ``_execute``), ``pools`` (pool registry, ``pool_stats``,
the acquire / reset / init wrappers), ``explain`` (background EXPLAIN).

asyncpg's long timers (a cached statement's expiry, a pooled connection's idle close) are set up in an
empty context (``common.in_empty_context``), so they never keep a finished flow alive.

Parameters are never read into a span or record. EXPLAIN (off by default) needs them: they stay
in memory, referenced by the background task until that one EXPLAIN has run.
"""
from __future__ import annotations

from . import pools, queries
from .common import OPTIONS, _DbSpan, _Settings, in_empty_context  # noqa: F401  (re-exported: tests, tools)
from .explain import (EXPLAIN_INTERVAL_S, EXPLAIN_MAX_CONCURRENT, EXPLAIN_TIMEOUT_S,  # noqa: F401
                      _SUPPRESS, explain_tasks, reset_explain_memory)
from .pools import _acquire_factory, _async_init_factory, _reset_factory, pool_stats, wait_stats  # noqa: F401
from .queries import (_EXECUTE_SIGNATURE, _arg0, _batch, _copy_query_query,  # noqa: F401
                      _copy_records_query, _execute_factory, _execute_text_params, _infos,
                      _prepared_params, _query_wrapper, _self_query)


# Factories named in the integration table (autoperf.integrations.TABLE): what each wrapped method
# reads its query (and parameters, for EXPLAIN) from.
def wrap_execute(o):
    return _query_wrapper(o, _arg0("query"), _execute_text_params)


def wrap_executemany(o):
    return _query_wrapper(o, _arg0("query"), batch_of=_batch(1, "args"))


def wrap_copy_stmt(o):
    return _query_wrapper(o, _arg0("copy_stmt"))


def wrap_copy_records(o):
    return _query_wrapper(o, _copy_records_query)


def wrap_copy_query(o):
    return _query_wrapper(o, _copy_query_query)


def wrap_prepared(o):
    return _query_wrapper(o, _self_query, _prepared_params)


def wrap_prepared_batch(o):
    return _query_wrapper(o, _self_query, batch_of=_batch(0, "args"))


def wrap_cursor(o):
    return _query_wrapper(o, _self_query)


def configure(options: dict) -> None:
    """Apply options (also at patch time); the per-query caches are kept if nothing changed."""
    settings = _Settings(options)
    queries.configure(settings)
    pools.configure(settings)


def setup(module, options: dict) -> None:
    configure(options)
