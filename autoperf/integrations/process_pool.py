"""Process pools: one ``job`` span per call, linked to the flow that submitted it.

Two rows of the integration table use this module: ``process_pool`` (ProcessPoolExecutor: submit,
map, run_in_executor) and ``multiprocessing_pool`` (Pool: apply/map/imap and friends). The parent
starts the span and sends ``_Job(fn, span.ref())``; the worker runs it under a stand-in span (its
spans hang under the job) and returns an ``_Outcome`` that the parent unwraps before anyone sees
the result, so the user gets exactly the original result or exception. While a job runs, a worker's
default SIGTERM flushes first. How a job travels, step by step: docs/integrations_runtime.md.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import weakref
from time import perf_counter_ns

from autoperf import diagnostics, lifecycle, pipeline, spans
from autoperf.config.schema import Obj
from autoperf.integrations.thread_pool import job_name, trim_own_frame
from autoperf.spans import Span, get_current, reset_current, set_current

POOL_MODULE = "multiprocessing.pool"
OPTIONS = Obj({}, doc="Process-pool jobs (ProcessPoolExecutor, multiprocessing.Pool) as job spans.")

#: Jobs of ``multiprocessing.Pool`` in flight: span_id -> (span, id(pool)). Bounded: a task
#: whose worker died never reports back (Pool itself never fails it).
MAX_INFLIGHT = 10_000
_inflight: dict = {}
_executors: "weakref.WeakSet" = weakref.WeakSet()
_pools: "weakref.WeakSet" = weakref.WeakSet()

_OUTCOME_ATTR = "_autoperf_outcome"
_BUFFER = pipeline.BUFFER


def _flush():
    try:
        # after each job: records now (a kill may come next); the metrics interval ends when due
        # or at the worker's exit, not once per job (a metrics record per job would cost more
        # than the job's spans)
        pipeline.flush(end_interval=False)
    except Exception as exc:  # pragma: no cover - flush never raises by contract
        diagnostics.internal_error("process_pool worker flush", exc)


os.register_at_fork(after_in_child=_inflight.clear)  # the parent's jobs are not the child's


# -- the worker side ------------------------------------------------------------------------
class _Outcome:
    """What a job sends back: the real result plus its timings in the worker."""

    __slots__ = ("result", "span_id", "start_ns", "end_ns", "pid", "attrs")

    def __init__(self, result, span_id, start_ns, end_ns, pid, attrs):
        # plain fields, alike in shape only to other constructors' (duplicates): nothing to share
        self.result = result
        self.span_id = span_id
        self.start_ns = start_ns
        self.end_ns = end_ns
        self.pid = pid
        self.attrs = attrs

    def __reduce__(self):
        return _Outcome, (self.result, self.span_id, self.start_ns, self.end_ns, self.pid, self.attrs)


_worker_pid = None


def _init_worker():
    """First job in this process: start the pipeline; forget a span inherited through fork."""
    global _worker_pid
    _worker_pid = os.getpid()
    set_current(None)
    try:
        lifecycle.ensure_pipeline(console=False)
    except Exception as exc:  # never fail the job for autoperf's sake
        diagnostics.internal_error("process_pool worker pipeline", exc)


def _flush_on_sigterm():
    """While a job runs in a worker: SIGTERM flushes first (when its action is the default and
    this is the main thread). Returns whether the handler went in."""
    if threading.current_thread() is not threading.main_thread():
        return False
    try:
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return False        # the program's own handler, or ours already
        signal.signal(signal.SIGTERM, lifecycle.on_sigterm)
        return True
    except (ValueError, OSError):
        return False


def _default_sigterm_again():
    """Between jobs SIGTERM's action is the default again. SIGTERM is blocked meanwhile; one that
    came during the job runs its handler inside ``signal.signal`` (CPython handles pending signals
    before it changes a handler), which flushes and dies once the mask is restored."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class _Job:
    """The picklable callable a pool really runs: ``fn`` under the job span's id, timed."""

    __slots__ = ("fn", "ref", "span", "remote")

    def __init__(self, fn, ref, span=None, remote=False):
        self.fn = fn
        self.ref = ref
        self.span = span  # parent process only; never pickled
        self.remote = remote  # True once unpickled in a worker process

    def __reduce__(self):
        return _remote_job, (self.fn, self.ref)

    def __repr__(self):
        return repr(self.fn)

    def __call__(self, *args, **kwargs):
        start = perf_counter_ns()
        remote = self.remote
        if remote and _worker_pid != os.getpid():
            _init_worker()
        guarded = remote and _flush_on_sigterm()
        ref = self.ref
        stand_in = Span("job", "job", None, ref)
        stand_in.span_id = ref.span_id  # children get parent_id = the job span, flow_id = its flow
        token = set_current(stand_in)
        try:
            result = self.fn(*args, **kwargs)
        except BaseException as exc:
            end = perf_counter_ns()
            reset_current(token)
            try:
                setattr(exc, _OUTCOME_ATTR, _Outcome(None, ref.span_id, start, end, os.getpid(),
                                                     stand_in.attrs))
            except Exception:
                pass  # an exception type without __dict__: the parent records it without timings
            if remote and _BUFFER:
                _flush()
            if guarded:
                _default_sigterm_again()
            trim_own_frame(exc, sys._getframe())
            raise
        end = perf_counter_ns()
        reset_current(token)
        if remote and _BUFFER:
            _flush()  # spans made in the worker reach the file even if the worker is killed next
        if guarded:
            _default_sigterm_again()
        return _Outcome(result, ref.span_id, start, end, os.getpid(), stand_in.attrs)


def _remote_job(fn, ref):
    """Unpickling a job (in a worker process)."""
    return _Job(fn, ref, None, True)


# -- the parent side ------------------------------------------------------------------------
def _pop_outcome(exc):
    d = getattr(exc, "__dict__", None)
    return d.pop(_OUTCOME_ATTR, None) if d else None


def _finish(span, outcome, exc=None, cancelled=False):
    """Complete the job span from the worker's outcome. Never raises."""
    if span is None:
        return
    try:
        now = perf_counter_ns()
        if outcome is not None:
            if outcome.attrs:
                for key, value in outcome.attrs.items():
                    span.set(key, value)
            span.set("queue_wait_ms", round((outcome.start_ns - span.start_ns) / 1e6, 3))
            span.set("run_ms", round((outcome.end_ns - outcome.start_ns) / 1e6, 3))
            span.set("transfer_ms", round((now - outcome.end_ns) / 1e6, 3))
            span.set("worker_pid", outcome.pid)
        if exc is not None:
            span.fail(exc)
        elif cancelled:
            span.status = "cancelled"
        span.finish(now - span.start_ns)
    except Exception as err:
        diagnostics.internal_error("process_pool finish", err)


def _new_span(fn, executor="process"):
    return spans.start_detached(job_name(fn), "job", {"executor": executor})


def _executor_kind(pool):
    # multiprocessing.pool.ThreadPool (multiprocessing.dummy) is a Pool of threads
    return "thread" if type(pool).__name__ == "ThreadPool" else "process"


# ProcessPoolExecutor ------------------------------------------------------------------------
def _job_future_class(future_class):
    class Future(future_class):
        """The executor's own future, unwrapping ``_Outcome`` before anyone can see the result."""

        def set_result(self, result):
            outcome = None
            if type(result) is _Outcome:
                outcome, result = result, result.result
            try:
                super().set_result(result)
            finally:
                job = self.__dict__.pop("_autoperf_job", None)
                _finish(job and job.span, outcome)

        def set_exception(self, exception):
            outcome = _pop_outcome(exception)
            try:
                super().set_exception(exception)
            finally:
                job = self.__dict__.pop("_autoperf_job", None)
                _finish(job and job.span, outcome, exception)

        def cancel(self):
            cancelled = super().cancel()
            if cancelled:
                job = self.__dict__.pop("_autoperf_job", None)
                _finish(job and job.span, None, cancelled=True)
            return cancelled

    Future.__module__ = future_class.__module__
    return Future


def _submit_factory(original):
    def submit(self, fn, /, *args, **kwargs):
        if self not in _executors:
            _executors.add(self)
        span = _new_span(fn)
        try:
            return original(self, _Job(fn, span.ref(), span), *args, **kwargs)
        except BaseException as exc:  # broken or shut down: the job failed right here
            _finish(span, None, exc)
            raise
    return submit


def _work_item_factory(original):
    from concurrent.futures import _base
    plain_future, job_future = _base.Future, _job_future_class(_base.Future)

    class _WorkItem(original):
        # Runs inside submit(), before the item is queued: no result can arrive before the swap.
        def __init__(self, future, fn, args, kwargs):
            if type(fn) is _Job and type(future) is plain_future:
                future.__class__ = job_future
                future._autoperf_job = fn
            original.__init__(self, future, fn, args, kwargs)

    _WorkItem.__qualname__ = _WorkItem.__name__ = original.__name__
    _WorkItem.__module__ = original.__module__
    return _WorkItem


# multiprocessing.Pool -----------------------------------------------------------------------
def _track(span, pool):
    if len(_inflight) >= MAX_INFLIGHT:
        try:
            _inflight.pop(next(iter(_inflight)))
        except (StopIteration, KeyError, RuntimeError):
            pass
    _inflight[span.span_id] = (span, id(pool))


def _apply_async_factory(original):
    def apply_async(self, func, args=(), kwds={}, callback=None, error_callback=None):  # noqa: B006 - mirrors Pool
        if self not in _pools:
            _pools.add(self)
        span = _new_span(func, _executor_kind(self))
        _track(span, self)
        try:
            return original(self, _Job(func, span.ref()), args, kwds, callback, error_callback)
        except BaseException:
            _inflight.pop(span.span_id, None)
            raise
    return apply_async


def _task_generation_factory(original):
    from multiprocessing import pool as mp_pool
    star = (mp_pool.mapstar, mp_pool.starmapstar)
    reraise = mp_pool._helper_reraises_exception

    def _jobs(pool, tasks, parent, submit_ns):
        name = None
        executor = _executor_kind(pool)
        for task in tasks:
            result_job, i, func, args, kwds = task
            if func is reraise or not _pool_patched[0]:
                yield task  # (unpatched meanwhile: tasks made from now on run unwrapped)
                continue
            if name is None:
                name = job_name(args[0][0] if func in star else func)
            span = Span(name, "job", {"executor": executor}, parent)
            span.start_ns = submit_ns
            _track(span, pool)
            yield result_job, i, _Job(func, span.ref()), args, kwds

    def _guarded_task_generation(self, result_job, func, iterable):
        # Called by map/imap in the caller's thread; the tasks are made later in Pool's task thread.
        if self not in _pools:
            _pools.add(self)
        return _jobs(self, original(self, result_job, func, iterable), get_current(), perf_counter_ns())
    return _guarded_task_generation


def _set_factory(original):
    def _set(self, i, obj):
        outcome = exc = None
        try:
            success, value = obj
            if success:
                if type(value) is _Outcome:
                    outcome = value
                    obj = (True, value.result)
            else:
                outcome, exc = _pop_outcome(value), value
        except Exception:
            pass
        try:
            return original(self, i, obj)
        finally:
            if outcome is not None:
                entry = _inflight.pop(outcome.span_id, None)
                if entry is not None:
                    _finish(entry[0], outcome, exc)
    return _set



#: ``[True]`` while multiprocessing.pool is patched (read by task generators already running).
_pool_patched = [False]
_RESULT_SIDE = {"ApplyResult._set", "MapResult._set", "IMapIterator._set", "IMapUnorderedIterator._set"}


def setup(module, options):
    """Both ``process_pool`` (concurrent.futures.process) and ``multiprocessing_pool`` rows."""
    if module.__name__ == POOL_MODULE:
        _pool_patched[0] = True


def teardown(module):
    """What stays wrapped after unpatch (``integrations.unpatch``)."""
    if module.__name__ == POOL_MODULE:
        _pool_patched[0] = False
        if _inflight:
            # DEV: jobs already sent still come back as _Outcome: keep the result side wrapped
            # (it passes anything else through) until a later unpatch finds nothing in flight.
            return _RESULT_SIDE
    return ()


# -- metrics for the resource sampler --------------------------------------------------------
def pool_stats() -> list:
    """One dict per live pool: ``kind``, ``pending`` (queued, not running), ``busy`` workers,
    ``workers`` (count), ``pids``. Read from another thread; never raises."""
    out = []
    for ex in list(_executors):
        try:
            items = list(ex._pending_work_items.values())
            if (ex._shutdown_thread or ex._broken) and not items:
                continue  # shut down or broken, nothing left to run
            # (no exitcode/is_alive here: they waitpid() behind the executor's back)
            pids = list(ex._processes or ())
            running = sum(1 for w in items if w.future.running())
            busy = min(running, len(pids))
            out.append({"kind": "ProcessPoolExecutor", "pending": len(items) - busy, "busy": busy,
                        "workers": len(pids), "pids": pids})
        except Exception as exc:
            diagnostics.internal_error("process_pool.pool_stats", exc)
    if _pools:
        counts: dict = {}
        for _, pool_id in list(_inflight.values()):
            counts[pool_id] = counts.get(pool_id, 0) + 1
        for pool in list(_pools):
            try:
                outstanding = counts.get(id(pool), 0)
                if pool._state != "RUN" and not outstanding:
                    continue  # closed or terminated, nothing left to run
                pids = [p.pid for p in list(pool._pool) if p.pid is not None]
                busy = min(outstanding, len(pids))
                out.append({"kind": "multiprocessing.Pool", "pending": outstanding - busy, "busy": busy,
                            "workers": len(pids), "pids": pids})
            except Exception as exc:
                diagnostics.internal_error("process_pool.pool_stats", exc)
    return out

