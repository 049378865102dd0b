"""Thread pools: one ``job`` span per call submitted to a ``ThreadPoolExecutor``.

Every way into a thread pool (``run_in_executor``, ``asyncio.to_thread``, ``executor.map``) ends in
``ThreadPoolExecutor.submit``, the one method wrapped: each call is counted exactly once. The
submitter's span is the parent; the job span is current in the worker thread while the function
runs, inside the copied context that ``to_thread`` passes. The span starts at submit: its duration
is queue wait + run (``attrs``: ``executor: thread``, ``queue_wait_ms``, ``run_ms``).
"""
from __future__ import annotations

import contextvars
import functools
import sys
from time import perf_counter_ns

from autoperf.config.schema import Obj
from autoperf.spans import MUTED, Span, get_current, reset_current, set_current

OPTIONS = Obj({}, doc="Thread-pool jobs (run_in_executor, to_thread, submit) as job spans.")

_Context = contextvars.Context
_partial = functools.partial


def job_name(fn) -> str:
    """``module.qualname`` of the callable a job runs (through partials and ``context.run``)."""
    for _ in range(8):
        if type(fn) is _partial or isinstance(fn, functools.partial):
            inner = fn.func
            if _is_context_run(inner) and fn.args:
                fn = fn.args[0]
            elif getattr(inner, "__name__", "") == "_process_chunk" and fn.args:
                fn = fn.args[0]  # ProcessPoolExecutor.map: partial(_process_chunk, fn)
            else:
                fn = inner
            continue
        break
    target = getattr(fn, "__func__", fn)  # bound method -> function
    qual = getattr(target, "__qualname__", None)
    if qual is None:
        target = type(fn)
        qual = getattr(target, "__qualname__", repr(fn))
    module = getattr(target, "__module__", None)
    return f"{module}.{qual}" if module and module != "builtins" else qual


def _is_context_run(fn):
    return type(getattr(fn, "__self__", None)) is _Context and getattr(fn, "__name__", "") == "run"


def trim_own_frame(exc, frame):
    """Drop ``frame`` from the head of ``exc``'s traceback: a bare ``raise`` then looks as if
    the wrapper never existed (the caller's traceback shows only the program's frames)."""
    tb = exc.__traceback__
    if tb is not None and tb.tb_frame is frame:
        try:
            exc.__traceback__ = tb.tb_next
        except Exception:  # pragma: no cover - exotic exception types
            pass


class _ThreadJob:
    """The callable the executor really runs: times the call and makes the job span current."""

    __slots__ = ("fn", "name", "parent", "submit_ns", "context")

    def __init__(self, fn, parent, submit_ns):
        context = None
        if type(fn) is _partial and _is_context_run(fn.func) and fn.args:
            # asyncio.to_thread: run the job inside the copied context, not around it.
            context = fn.func.__self__
        self.fn = fn
        self.context = context
        self.parent = parent
        self.submit_ns = submit_ns
        self.name = job_name(fn)

    def __call__(self, *args, **kwargs):
        try:
            context = self.context
            if context is not None:
                fn = self.fn
                return context.run(self._run, fn.args[0], fn.args[1:] + args, {**fn.keywords, **kwargs})
            return self._run(self.fn, args, kwargs)
        except BaseException as exc:
            trim_own_frame(exc, sys._getframe())
            raise

    def _run(self, fn, args, kwargs):
        if self.parent is MUTED:       # submitted by autoperf's own work: the job is too
            token = set_current(MUTED)
            try:
                return fn(*args, **kwargs)
            finally:
                reset_current(token)
        start = perf_counter_ns()
        s = Span(self.name, "job", {"executor": "thread",
                                    "queue_wait_ms": round((start - self.submit_ns) / 1e6, 3)},
                 self.parent)
        s.start_ns = self.submit_ns
        token = set_current(s)
        try:
            return fn(*args, **kwargs)
        except BaseException as exc:
            s.fail(exc)
            trim_own_frame(exc, sys._getframe())
            raise
        finally:
            end = perf_counter_ns()
            reset_current(token)
            s.set("run_ms", round((end - start) / 1e6, 3))
            s.finish(end - self.submit_ns)

    def __repr__(self):
        return repr(self.fn)


def _submit_factory(original):
    def submit(self, fn, /, *args, **kwargs):
        return original(self, _ThreadJob(fn, get_current(), perf_counter_ns()), *args, **kwargs)
    return submit
