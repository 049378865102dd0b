"""Pools: the registry behind ``pool_stats()``, and the waits of ``Pool._acquire`` and
``Connection.reset`` (what ``Pool.release`` runs): a ``wait`` span when one took longer than
``pool_wait_span_ms``, always counted (``wait_stats()``: count, total and longest per sampler
interval, in the resource record's ``db_pool``). Why not a span each, and the lean path they take:
docs/integrations_db_http.md ("Pool waits", "Implementation notes").
"""
from __future__ import annotations

# DEV: the two waits run once each per pooled query batch, so they take the lean path of
# ``queries._execute_factory``: no Span object, timed by hand, one tuple to ``spans.record_finished``
# with the caller's span as parent. ``Pool._acquire`` makes nothing current (what the pool runs inside
# it hangs under the caller's span). ``Connection.reset`` keeps its reset query from being recorded:
# the shared ``_RESETTING`` marker (a ``_DbSpan``) is current while it runs, so the ``execute`` wrapper
# calls straight through (the reset runs in ``Pool.release``'s own shielded task: only asyncpg code).

import time
import weakref

from autoperf import diagnostics
from autoperf.spans import failure, get_current, record_finished, reset_current, set_current

from .common import _DbSpan

_perf_counter_ns = time.perf_counter_ns

#: Waits up to this long are only counted (``configure``: the ``pool_wait_span_ms`` option).
_span_over_ns = 1_000_000
#: Per wait: [count, total ns, spans recorded] since start, [3] the longest since the last
#: ``wait_stats()``, [4] the first three as that call saw them. Updated on the loop's thread with
#: no lock: two loops in two threads could lose an increment (a ``+=`` is not atomic across
#: threads); nothing else can.
_acquires = [0, 0, 0, 0, (0, 0, 0)]
_resets = [0, 0, 0, 0, (0, 0, 0)]

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


def configure(settings) -> None:
    global _span_over_ns
    _span_over_ns = round(settings.pool_wait_span_ms * 1e6)


def wait_stats() -> dict:
    """The pool waits since the previous call (the sampler's interval), for the ``db_pool`` record:
    ``acquires``, ``acquire_wait_ms`` (total), ``acquire_wait_max_ms``, ``resets``, ``reset_ms``,
    ``reset_max_ms`` and ``wait_spans`` (how many were long enough to be recorded as spans)."""
    out = {}
    spans_n = 0
    for counts, n_key, label in ((_acquires, "acquires", "acquire_wait"), (_resets, "resets", "reset")):
        now, before = (counts[0], counts[1], counts[2]), counts[4]
        longest, counts[3], counts[4] = counts[3], 0, now
        out[n_key] = now[0] - before[0]
        out[f"{label}_ms"] = round((now[1] - before[1]) / 1e6, 3)
        out[f"{label}_max_ms"] = round(longest / 1e6, 3)
        spans_n += now[2] - before[2]
    out["wait_spans"] = spans_n
    return out


# -- the wrappers --------------------------------------------------------------------------------
def _count(counts, dur) -> bool:
    """Count one wait; True when it is long enough to be a span."""
    counts[0] += 1
    counts[1] += dur
    if dur > counts[3]:
        counts[3] = dur
    if dur > _span_over_ns:
        counts[2] += 1
        return True
    return False


def _acquire_factory(original):
    async def _acquire(self, timeout):
        _register_pool(self)
        parent = get_current()
        start = _perf_counter_ns()
        try:
            result = await original(self, timeout)
        except BaseException as exc:     # a failed wait is always a span
            status, etype = failure(exc)
            dur = _perf_counter_ns() - start
            if not _count(_acquires, dur):
                _acquires[2] += 1
            record_finished("db.pool.acquire", "wait", _WAIT_ATTRS, parent, None, start, dur, status, etype)
            raise
        dur = _perf_counter_ns() - start
        if _count(_acquires, dur):
            record_finished("db.pool.acquire", "wait", _WAIT_ATTRS, parent, None, start, dur)
        return result
    return _acquire


def _reset_factory(original):
    # Pool.release resets the connection (unlock, close cursors, UNLISTEN, RESET ALL) on the
    # caller's time: one "db.pool.reset" wait span, not a query to tune, cache or count.
    # (The timing steps repeat _acquire_factory's on purpose: inline, a wait costs no extra call.)
    async def reset(self, *args, **kwargs):
        parent = get_current()
        token = set_current(_RESETTING)
        start = _perf_counter_ns()
        try:
            result = await original(self, *args, **kwargs)
        except BaseException as exc:     # a failed wait is always a span
            status, etype = failure(exc)
            dur = _perf_counter_ns() - start
            if not _count(_resets, dur):
                _resets[2] += 1
            record_finished("db.pool.reset", "wait", _WAIT_ATTRS, parent, None, start, dur, status, etype)
            raise
        finally:
            try:
                reset_current(token)
            except ValueError:
                # Ended in another context than it started in (a coroutine driven by hand): that
                # context keeps its own value, nothing to restore here (as in ``Span.finish``).
                pass
        dur = _perf_counter_ns() - start
        if _count(_resets, dur):
            record_finished("db.pool.reset", "wait", _WAIT_ATTRS, parent, None, start, dur)
        return result
    return reset


def _async_init_factory(original):
    async def _async__init__(self):
        result = await original(self)
        _register_pool(self)
        return result
    return _async__init__
