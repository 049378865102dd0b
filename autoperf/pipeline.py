"""The record pipeline: a bounded in-memory buffer and one writer thread.

Producers (finished spans: ``Span`` objects or ``spans.record_finished`` tuples, and ``emit()``) only
append to ``BUFFER``. The writer wakes every ``flush_interval_ms`` while records come (or when the
buffer is half full) and drains it a chunk at a time: every span feeds the interval's aggregates,
retained ones become records (``metrics.stage``), processors (per record) and observers (per batch)
run, the chunk goes to every sink. An idle writer, or one finding only a trickle (< ``TRICKLE_RECORDS``),
doubles its wait up to ``IDLE_WAIT_S``; ``emit()`` rings it out of an idle back-off. Flush and exit paths drain everything.
A full buffer drops new items and counts them (a ``dropped`` record). Why these wake-up rules, with
the measurements: docs/performance.md, "The writer's wake-ups".
"""
from __future__ import annotations

import atexit
import collections
import itertools
import operator
import os
import sys
import threading
import time

from autoperf import current, diagnostics, records, threads
from autoperf.metrics.stage import Stage

BUFFER: collections.deque = collections.deque()
_DEFAULT_CAPACITY = 100_000

#: ``[high_water]`` — one-element list so the hot path reads it without a global lookup chain.
high_water = [_DEFAULT_CAPACITY // 2]
_capacity = _DEFAULT_CAPACITY

_state_lock = threading.Lock()      # guards drop counters and start/stop
_process_lock = threading.RLock()   # one drain at a time (writer thread, flush(), shutdown)
_bell = threading.Lock()            # released to wake the writer; a timed acquire is its sleep
_bell.acquire()
_backing_off = [False]              # the writer waits longer than flush_interval: emit() rings it
_waiting_flushes: list = []         # one entry per flush() waiting for the drain lock
_stopping = [False]                 # final_flush() ran: spans finished from now on are not recorded
IDLE_WAIT_S = 1.0
TRICKLE_RECORDS = 128               # fewer per wake-up: wake less often (see module doc)
_dropped = 0
_dropped_since_ns = None

_processors: list = []
_observers: list = []               # read-only: see each delivered batch as one list
_sinks: list = []
_settings = records.Settings()
#: Aggregates every finished span and decides which become records (metrics/stage.py).
_stage = Stage()
_writer: threading.Thread | None = None
_flush_interval = 0.25
_pid = os.getpid()


# -- producers ------------------------------------------------------------------------------
_len, _type, _time_ns = len, type, time.time_ns   # bound once: targets on them must not re-enter here


def overflow(item):
    """Slow path of an append: above the high-water mark, wake the writer; above capacity, drop.
    Once the process is stopping (``final_flush``) every append comes here: spans are not recorded
    any more, the records the stop path emits still are."""
    if _stopping[0] and _type(item) is not dict:
        return
    if _len(BUFFER) < _capacity:
        BUFFER.append(item)
        _ring()
        return
    global _dropped, _dropped_since_ns
    with _state_lock:
        if _dropped == 0:
            _dropped_since_ns = _time_ns()
        _dropped += 1


def emit(record: dict):
    """Queue a record dict from any thread. Never blocks, never raises."""
    if _len(BUFFER) < high_water[0]:
        BUFFER.append(record)
        if _backing_off[0]:
            _ring()
    else:
        overflow(record)


def _ring():
    try:
        _bell.release()
    except RuntimeError:    # rung already and not yet heard
        pass


def dropped_count():
    return _dropped


# -- configuration --------------------------------------------------------------------------
def configure(settings: records.Settings, capacity=None, flush_interval_ms=None):
    global _settings, _capacity, _flush_interval
    _settings = settings
    if capacity:
        _capacity = int(capacity)
        high_water[0] = max(1, _capacity // 2)
    if flush_interval_ms:
        _flush_interval = min(float(flush_interval_ms), 250.0) / 1000.0


def settings() -> records.Settings:
    return _settings


def configure_metrics(retain_settings):
    """``metrics:`` / ``retain:`` settings (a ``metrics.retention.RetainSettings``)."""
    with _process_lock:
        _stage.configure(retain_settings)


def stage() -> Stage:
    return _stage


def _register(registry: list, item):
    with _process_lock:
        if item not in registry:
            registry.append(item)


def _unregister(registry: list, item):
    with _process_lock:
        if item in registry:
            registry.remove(item)


def add_processor(fn):
    """Run ``fn(record) -> record or None`` over every record before the sinks (it may change or drop it)."""
    _register(_processors, fn)


def remove_processor(fn):
    _unregister(_processors, fn)


def add_observer(fn):
    """Call ``fn(records)`` with each delivered batch (a list, after the processors, before the sinks):
    one call per drain step where a processor is called once per record. It reads, never changes."""
    _register(_observers, fn)


def remove_observer(fn):
    _unregister(_observers, fn)


def add_sink(sink):
    _register(_sinks, sink)


def remove_sink(sink):
    with _process_lock:
        if sink in _sinks:
            _sinks.remove(sink)
        _call_quietly(sink, "flush")


def sinks():
    return list(_sinks)


# -- the writer -----------------------------------------------------------------------------
#: Items taken, converted and written per step of a drain. A step's records are freed before the
#: next step allocates its own, in the same (cache-warm) memory: converting a 50k-item backlog
#: at once would put every record on fresh heap pages (page faults, ~2x the CPU per record).
CHUNK = 512


def _take(n):
    """The ``n`` oldest buffered items (at most as many as are buffered), popped at C level."""
    popleft = BUFFER.popleft
    n = min(n, len(BUFFER))     # one consumer: the buffer only grows meanwhile, no pop can fail
    if _call is not None:
        return list(map(_call, itertools.repeat(popleft, n)))
    return [popleft() for _ in range(n)]


_call = getattr(operator, "call", None)   # Python >= 3.11


def _drop_record():
    global _dropped, _dropped_since_ns
    with _state_lock:
        count, since = _dropped, _dropped_since_ns
        _dropped, _dropped_since_ns = 0, None
    if not count:
        return None
    return records.dropped_record(count, since, _settings)


def _process_once():
    """Drain what is buffered now through processors into sinks, a chunk at a time.

    Caller holds ``_process_lock``. Returns the number of buffered items taken.
    """
    taken = 0
    remaining = len(BUFFER)   # what arrives meanwhile waits for the next drain
    while remaining > 0:
        items = _take(min(remaining, CHUNK))
        if not items:
            break
        remaining -= len(items)
        taken += len(items)
        flows = []
        _deliver(_stage.convert(items, _settings, flows), flows)
        del items, flows
    dropped = _drop_record()
    if dropped is not None:
        _deliver([dropped])
    if _stage.held and not taken:     # roots waiting one drain for a late loop_blocked
        _deliver(_stage.settle(_settings, final=True))
    if _stage.due():
        _deliver(_stage.metrics(_settings))
    return taken


def _deliver(batch, flows=()):
    """Run the processors over ``batch``, show it to the observers and hand it to every sink.
    ``flows``: unretained ``flow_complete`` records (``Stage.convert``), a list of their own: the
    file sink writes them to flows_*.log (``write_flows``; a sink without it gets them after ``batch``)."""
    for proc in list(_processors):
        if batch:
            batch = _run(proc, batch)
        if flows:
            flows = _run(proc, flows)
    if not batch and not flows:
        return
    for observe in list(_observers):
        for records in (batch, flows):
            if records:
                try:
                    observe(records)
                except Exception as exc:  # an observer's bug loses nothing
                    _internal_error(f"observer {getattr(observe, '__qualname__', observe)!r}", exc)
    for sink in list(_sinks):
        try:
            if batch:
                sink.write(batch)
            if flows:
                write_flows = getattr(sink, "write_flows", None)
                if write_flows is not None:
                    write_flows(flows)
                else:
                    sink.write(flows)
        except Exception as exc:
            _internal_error(f"sink {type(sink).__name__}", exc)


def _run(proc, batch):
    out = []
    for rec in batch:
        try:
            rec = proc(rec)
        except Exception as exc:  # a broken processor loses nothing
            _internal_error(f"processor {getattr(proc, '__qualname__', proc)!r}", exc)
        if rec is not None:
            out.append(rec)
    return out


_drain_owner = None   # ident of the thread inside a drain, if any
_deferred: list = []  # callbacks a signal handler postponed until the drain it interrupted ends


class _Draining:
    """Hold the drain lock; remember which thread drains so a signal handler can tell."""

    _outer: list = []  # a stack: the lock is re-entrant, drains nest on one thread

    def __enter__(self):
        global _drain_owner
        _process_lock.acquire()
        self._outer.append(_drain_owner)
        _drain_owner = threading.get_ident()

    def __exit__(self, *exc):
        global _drain_owner
        outer = _drain_owner = self._outer.pop()
        _process_lock.release()
        if outer is None and _deferred:
            callbacks = _deferred[:]
            del _deferred[:]
            for callback in callbacks:
                callback()
        return False


_draining = _Draining()


def draining_in_this_thread() -> bool:
    """True inside a drain on this thread (a signal handler interrupted it)."""
    return _drain_owner == threading.get_ident()


def after_drain(callback):
    """Run ``callback`` once the drain this thread is in has finished (signal handlers)."""
    _deferred.append(callback)


def writer_wakeups() -> int:
    """How often the writer thread has woken up in this process (tests, benchmarks)."""
    return _wakeups


_wakeups = 0


def _run_writer():
    global _wakeups
    sleep = _bell.acquire
    wait = _flush_interval
    while True:
        sleep(True, wait)
        _wakeups += 1
        n = 0
        if _waiting_flushes:    # a stop is waiting for the lock: it drains (bounded) first
            wait = _flush_interval
            continue
        with _draining:
            try:
                n = _process_once()
                if n == 0 or len(BUFFER) < high_water[0]:
                    for sink in list(_sinks):
                        _call_quietly(sink, "flush")
            except Exception as exc:  # pragma: no cover - last-resort guard, keep writing
                _internal_error("writer", exc)
        if n >= TRICKLE_RECORDS or len(BUFFER) >= TRICKLE_RECORDS:
            wait = _flush_interval
            _backing_off[0] = False
        elif n or BUFFER:       # a trickle: wake less often, not rung (emit() rings only an idle writer)
            wait = min(wait * 2, max(IDLE_WAIT_S, _flush_interval))
            _backing_off[0] = False
        else:                   # nothing came: wake less often (emit() rings, see module doc)
            wait = min(wait * 2, max(IDLE_WAIT_S, _flush_interval))
            _backing_off[0] = wait > _flush_interval
            if BUFFER:          # emitted before the flag was up: not rung
                wait = _flush_interval


def ensure_started():
    """Start the writer thread (idempotent; restarted in a forked child)."""
    global _writer
    if _writer is not None and _writer.is_alive():
        return
    with _state_lock:
        if _writer is not None and _writer.is_alive():
            return
        _writer = threading.Thread(target=_run_writer, name="autoperf-writer", daemon=True)
        threads.start(_writer)
    _register_exit_flush()


#: A flush drains what was buffered when it began, then once more what came during that drain (the
#: records its processors emitted are among it), and stops there: a thread that keeps producing
#: spans cannot hold a stop. Draining until the buffer is empty never ended at >= 33k spans/s from
#: one thread. Bound: FLUSH_PASSES drains of at most the buffer's capacity (docs/performance.md).
FLUSH_PASSES = 2


def flush(end_interval=True):
    """Process everything buffered up to this call and flush the sinks (any thread; bounded).
    ``end_interval``: also write the aggregates of the interval so far (every stop path does; False:
    only when due)."""
    _waiting_flushes.append(None)   # the writer leaves the drain lock to a waiting flush
    try:
        _draining.__enter__()
    finally:
        _waiting_flushes.pop()
    token = current.mute()          # a drain on the program's thread is autoperf's work, not the program's
    try:
        for _ in range(FLUSH_PASSES):
            if not _process_once():
                break
        if _stage.held:             # what an empty drain would settle: the passes may all have found some
            _deliver(_stage.settle(_settings, final=True))
        if end_interval:
            _deliver(_stage.metrics(_settings))
        for sink in list(_sinks):
            _call_quietly(sink, "flush")
    finally:
        current.unmute(token)
        _draining.__exit__(None, None, None)


def final_flush():
    """Flush at a stop (exit, SIGTERM, a worker's exit): what was recorded up to this call is written,
    in bounded time whatever other threads do, because spans finished from now on are not recorded
    (a daemon thread that keeps producing cannot hold the exit). Records the stop path itself emits
    (alerts, metrics) still are."""
    _stopping[0] = True
    high_water[0] = 0           # every append takes the slow path, which checks _stopping
    flush()


def shutdown():
    """Flush and close the sinks. Safe to call more than once (atexit, signals, runner)."""
    try:
        final_flush()
    finally:
        with _draining:
            for sink in list(_sinks):
                _call_quietly(sink, "close")
            _sinks.clear()


def _call_quietly(obj, method):
    try:
        getattr(obj, method)()
    except Exception as exc:
        _internal_error(f"{type(obj).__name__}.{method}", exc)


def _internal_error(where, exc):
    diagnostics.internal_error(where, exc)


_exit_registered = False


def _register_exit_flush():
    global _exit_registered
    if _exit_registered:
        return
    _exit_registered = True
    atexit.register(shutdown)
    # multiprocessing workers leave through os._exit(): their finalizers are the last chance.
    mp_util = sys.modules.get("multiprocessing.util")
    if mp_util is not None:
        register_mp_finalizer(mp_util)


class _ForkMarker:
    """register_after_fork needs a live, weak-referenceable object."""


_FORK_MARKER = _ForkMarker()


def register_mp_finalizer(mp_util):
    """Flush in multiprocessing children, which exit through os._exit() after their finalizers.

    A child's bootstrap clears the finalizer registry and then runs the after-fork callbacks,
    so the finalizer is registered again from one of those.
    """
    mp_util.Finalize(None, final_flush, exitpriority=-100)
    mp_util.register_after_fork(_FORK_MARKER, lambda _m: mp_util.Finalize(None, final_flush, exitpriority=-100))


# -- fork safety ----------------------------------------------------------------------------
def _before_fork():
    _process_lock.acquire()


def _after_fork_parent():
    _process_lock.release()


def _after_fork_child():
    global _process_lock, _state_lock, _writer, _dropped, _dropped_since_ns, _pid, _exit_registered
    _process_lock = threading.RLock()
    _state_lock = threading.Lock()
    # The parent writes what it buffered; the child starts empty with a fresh writer.
    global _drain_owner
    _drain_owner = None
    _Draining._outer.clear()
    del _waiting_flushes[:]
    if _stopping[0]:            # forked during a stop: the child records as usual
        _stopping[0] = False
        high_water[0] = max(1, _capacity // 2)
    BUFFER.clear()
    _dropped, _dropped_since_ns = 0, None
    _pid = os.getpid()
    records.on_fork()
    _stage.after_fork()
    for sink in _sinks:
        reopen = getattr(sink, "after_fork", None)
        if reopen is not None:
            try:
                reopen()
            except Exception:
                pass
    was_running = _writer is not None
    _writer = None
    _backing_off[0] = False
    _exit_registered = False
    if was_running:
        ensure_started()


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_parent,
                    after_in_child=_after_fork_child)

diagnostics.attach(emit)   # autoperf's own warnings are records (diagnostics imports nothing of ours)
