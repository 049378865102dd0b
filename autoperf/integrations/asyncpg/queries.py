"""Query spans: the per-query-text info cache, rows from results, the generic query wrapper and
the lean ``Connection._execute`` wrapper (the hot path: every fetch*/execute-with-args).

Everything a wrapper uses per call is a global of this module (no lookups through other modules
on the way).
"""
from __future__ import annotations

import inspect
import re
import time

from autoperf import diagnostics, spans, sql
from autoperf.records import Site
from autoperf.spans import MUTED, get_current, record_finished, set_current

from .common import _CACHE_SIZE, _DbSpan, _Settings
from .explain import _maybe_explain

_perf_counter_ns = time.perf_counter_ns


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
        parent = get_current()
        if type(parent) is _DbSpan or parent is MUTED:   # an outer wrapper records it / autoperf's own query
            return await original(self, *args, **kwargs)
        try:
            query = query_of(self, args, kwargs)
            info = _infos.get(query)
            if info is None:
                info = _info(query)
            batch = None if batch_of is None else batch_of(args, kwargs)
        except Exception as exc:
            diagnostics.internal_error("asyncpg span start", exc)
            return await original(self, *args, **kwargs)
        s = _DbSpan(info.name, "db", info.attrs.copy(), parent, info.site, True)   # entered: current until finish()
        if batch is not None:
            s.attrs["batch"] = batch
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
        parent = get_current()
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
            record_finished(info.name, "db", info.attrs, parent, info.site, start, duration, status,
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
        record_finished(info.name, "db", info.attrs, parent, info.site, start, duration, "success",
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


def configure(settings) -> None:
    """Use ``settings`` (a ``_Settings``); the per-query caches are kept if nothing changed."""
    global _settings
    if settings.key() != _settings.key():
        _infos.clear()
        _sites.clear()
    _settings = settings
