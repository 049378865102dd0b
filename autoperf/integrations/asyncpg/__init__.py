"""asyncpg: one ``db`` span per query, on every path, exactly once; pool waits; pool statistics.

asyncpg's protocol is a Cython type whose methods cannot be replaced, so the Python methods that are
the last stop before each protocol call are wrapped (its rows in ``autoperf.integrations.TABLE``;
docs/integrations_db_http.md has the table of what covers what and the edge cases). A wrapper that
finds a query span current calls straight through: each query is recorded once.

Modules: ``common`` (options, settings, ``_DbSpan``), ``queries`` (the query wrappers, incl. the
lean ``_execute``), ``pools`` (pool registry, ``pool_stats``, acquire / reset / init), ``explain``
(background EXPLAIN, off by default). Parameters are never read into a span or record.
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
