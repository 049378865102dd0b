"""Pools: the registry behind ``pool_stats()`` and the wait spans of ``Pool._acquire`` and
``Connection.reset`` (what ``Pool.release`` runs).

DEV: the two waits are the largest record category of a pooled service (one of each per pooled
query batch), so they take the lean path of ``queries._execute_factory``: no Span object, timed
by hand, one tuple to ``spans.record_finished`` with the caller's span as parent.
- ``Pool._acquire`` makes nothing current: what the pool runs inside it (connecting, the pool's
  ``init``/``setup`` callbacks and their queries) hangs under the caller's span, not under the
  acquire wait (which still times all of it), and a ``loop_blocked`` inside it names the caller's
  span.
- ``Connection.reset`` must keep the reset query it runs from being recorded: the one shared
  ``_RESETTING`` marker (a ``_DbSpan``) is current while it runs, so the ``execute`` wrapper calls
  straight through. A span started inside a reset (nothing in asyncpg does) would hang under that
  marker, which is never recorded, and a ``loop_blocked`` inside it names ``db.pool.reset`` but
  not the caller's flow (the reset runs in ``Pool.release``'s own shielded task: only asyncpg code).
"""
from __future__ import annotations

import time
import weakref

from autoperf import diagnostics, spans

from .common import _DbSpan

_get_current = spans._get_current
_set_current = spans._set_current
_reset_current = spans._reset_current
_record_finished = spans.record_finished
_failure = spans.failure
_perf_counter_ns = time.perf_counter_ns

#: The attributes of every wait span (shared: ``record_finished`` never writes to them).
_WAIT_ATTRS = {"system": "postgresql"}
#: Current while ``Connection.reset`` runs: the query wrappers inside call straight through.
_RESETTING = _DbSpan("db.pool.reset", "wait", None, None)


# -- the registry --------------------------------------------------------------------------------
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


# -- the wrappers --------------------------------------------------------------------------------
def _acquire_factory(original):
    async def _acquire(self, timeout):
        _register_pool(self)
        parent = _get_current()
        start = _perf_counter_ns()
        try:
            result = await original(self, timeout)
        except BaseException as exc:
            status, etype = _failure(exc)
            _record_finished("db.pool.acquire", "wait", _WAIT_ATTRS, parent, None, start,
                             _perf_counter_ns() - start, status, etype)
            raise
        _record_finished("db.pool.acquire", "wait", _WAIT_ATTRS, parent, None, start, _perf_counter_ns() - start)
        return result
    return _acquire


def _reset_factory(original):
    # Pool.release resets the connection (unlock, close cursors, UNLISTEN, RESET ALL) on the
    # caller's time: one "db.pool.reset" wait span, not a query to tune, cache or count.
    async def reset(self, *args, **kwargs):
        parent = _get_current()
        token = _set_current(_RESETTING)
        start = _perf_counter_ns()
        try:
            result = await original(self, *args, **kwargs)
        except BaseException as exc:
            status, etype = _failure(exc)
            _record_finished("db.pool.reset", "wait", _WAIT_ATTRS, parent, None, start,
                             _perf_counter_ns() - start, status, etype)
            raise
        finally:
            try:
                _reset_current(token)
            except ValueError:
                # Ended in another context than it started in (a coroutine driven by hand): that
                # context keeps its own value, nothing to restore here (as in ``Span.finish``).
                pass
        _record_finished("db.pool.reset", "wait", _WAIT_ATTRS, parent, None, start, _perf_counter_ns() - start)
        return result
    return reset


def _async_init_factory(original):
    async def _async__init__(self):
        result = await original(self)
        _register_pool(self)
        return result
    return _async__init__
