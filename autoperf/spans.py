"""Spans and the current-span context: the hot path.

Starting and finishing a span does no serialisation and no I/O: a finished span object is
appended to the pipeline's in-memory buffer and everything else (ids as hex, timestamps, levels,
JSON) happens later in the writer thread. Keep this module small and allocation-light.
"""
from __future__ import annotations

import itertools
import os
import random
import threading
from contextvars import ContextVar
from threading import get_ident
from time import perf_counter_ns

from autoperf import current as _current_module
from autoperf import pipeline, records, tracecontext

__all__ = ["Span", "SpanRef", "CURRENT", "MUTED", "start", "start_detached", "span", "current", "record_finished",
           "get_current", "set_current", "reset_current"]

_current: ContextVar = _current_module.CURRENT_SPAN
#: Current while autoperf does its own work: no span starts under it (autoperf/current.py).
MUTED = _MUTED = _current_module.MUTED
# Bound once: a target on builtins:len must not make the hot path call its own wrapper.
_len = len
#: The current-span primitives, public for integrations (bind them once at import: the hot path
#: then calls the ContextVar's own methods). ``set_current`` returns the token ``reset_current`` takes.
get_current = _get_current = _current.get
set_current = _set_current = _current.set
reset_current = _reset_current = _current.reset

#: ``parent=CURRENT`` (the default) means "whatever span is current in this context".
CURRENT = object()

#: Kinds whose root span is a "flow" in reports (gets a ``flow_complete`` record).
FLOW_KINDS = records.FLOW_KINDS    # defined once, with the record model
#: A flow lists at most this many direct child spans in its ``flow_complete`` record (each one
#: still gets its own ``span`` record); a long-lived flow must not grow without bound.
MAX_CHECKPOINT_SPANS = 256

#: ident -> Thread of the live threads (threading keeps this dict in place, also after fork).
_live_thread = threading._active.get  # noqa: SLF001 - a dict lookup, no lock needed to read

# Until asyncio is imported there is no running loop: NoneType() is a C call returning None.
_running_loop = type(None)
_current_tasks: dict = {}


def use_asyncio():
    """asyncio is imported: read the running loop's current task (C-level lookups only)."""
    global _running_loop, _current_tasks
    from asyncio import events, tasks
    _current_tasks = tasks._current_tasks  # noqa: SLF001 - what asyncio.current_task() reads
    _running_loop = events._get_running_loop  # noqa: SLF001


_buffer = pipeline.BUFFER
_append = _buffer.append
_high_water = pipeline.high_water
_overflow = pipeline.overflow


# Root flows started and finished (concurrent interactions, for the resource sampler).
# itertools.count increments atomically under the GIL; reading peeks without incrementing.
_flows_started = itertools.count()
_flows_finished = itertools.count()
_flow_started = _flows_started.__next__
_flow_finished = _flows_finished.__next__


def _peek(counter) -> int:
    return int(repr(counter)[6:-1])  # "count(42)": read without incrementing


def active_flows() -> int:
    """Root flows running now."""
    return _peek(_flows_started) - _peek(_flows_finished)


def flows_started() -> int:
    """Root flows started in this process so far."""
    return _peek(_flows_started)


def _id_source():
    # A random 62-bit start per process keeps ids unique across processes without coordination;
    # a counter keeps them cheap (~40 ns) and ordered within one process.
    return itertools.count(random.getrandbits(62) | 1).__next__


_next_id = _id_source()


def _reseed_after_fork():
    global _next_id
    _next_id = _id_source()


os.register_at_fork(after_in_child=_reseed_after_fork)


class SpanRef:
    """A picklable reference to a span, to parent spans in another thread or process."""

    __slots__ = ("span_id", "flow_id", "flow_name")
    is_remote = True
    children = None  # a remote parent collects no checkpoints here
    duration_ns = None  # whether a remote flow has ended is not known here

    @property
    def root(self):
        return self

    def __init__(self, span_id, flow_id, flow_name=None):
        self.span_id = span_id
        self.flow_id = flow_id
        self.flow_name = flow_name

    def __reduce__(self):
        # a flow that joined a remote trace (an incoming traceparent) takes it to the other process
        remote = tracecontext.adopted(self.flow_id)
        if remote is None:
            return SpanRef, (self.span_id, self.flow_id, self.flow_name)
        return _joined_ref, (self.span_id, self.flow_id, self.flow_name, *remote)

    def __repr__(self):
        return f"SpanRef({self.span_id:016x}, flow={self.flow_id:016x}, {self.flow_name!r})"


def _task_name(task):
    """The running task's name, taken when a span starts. Spans keep the name, not the Task: a span stays
    reachable from every context copied while it was current — a library's timer handle, such as asyncpg's
    statement-cache expiry (300 s) — and a Task held there keeps its coroutine, result and context alive
    (measured on the ladder bot at 100 flows/s: +235 finished tasks, +244 coroutines over a 15-s window)."""
    try:
        return task.get_name()
    except Exception:   # a task factory's object without get_name(): no task name, never an error
        return None


def _joined_ref(span_id, flow_id, flow_name, trace_id, parent_id):
    """Unpickling a SpanRef of a flow that adopted a remote trace: this process adopts it too."""
    tracecontext.adopt(flow_id, trace_id, parent_id)
    return SpanRef(span_id, flow_id, flow_name)


class Span:
    """One timed operation. Fields are read by the writer thread once the span has finished.

    ``root`` is the root of the tree (a Span, or a SpanRef for a flow in another process), None
    when this span is the root itself. ``enter=True`` makes it the current span of this context
    until ``finish()`` restores the one before (what ``start`` does; wrappers pass it positionally).
    """

    __slots__ = (
        "name", "kind", "attrs", "span_id", "parent", "root", "start_ns", "duration_ns",
        "status", "error", "thread", "task", "site", "children", "checkpoints", "_token",
        "__weakref__",
    )
    is_remote = False

    def __init__(self, name, kind, attrs, parent, site=None, enter=False):
        self.name = name
        self.kind = kind
        self.site = site
        self.span_id = _next_id()
        if parent is not None:
            root = parent.root
            if root is None:
                root = parent
            if root.duration_ns is None and kind != "cycle" or root is _MUTED:
                self.root = root
            else:
                # Its flow has ended (work a flow left running: create_task copies the context) or
                # it is a cycle: a root of its own, linked to the flow it came from.
                attrs = _linked(attrs, root)
                parent = None
        self.parent = parent
        self.attrs = attrs
        if parent is None:
            # None, not self: a root pointing at itself would be a reference cycle, and every
            # finished root span would wait for the cyclic GC instead of being freed at once.
            self.root = None
            if kind in FLOW_KINDS:
                self.children = []
                if kind == "flow":
                    _flow_started()
            else:
                self.children = None
        else:
            self.children = None
        self.status = "success"
        self.error = None
        self.checkpoints = None
        # The Thread itself (its name is read later by the writer, when the thread may be gone
        # and its ident reused); the bare ident for threads that threading does not know.
        ident = get_ident()
        self.thread = _live_thread(ident) or ident
        loop = _running_loop()
        task = None if loop is None else _current_tasks.get(loop)
        if task is not None:
            task = _task_name(task)
        self.task = task
        # enter: current in this context until finish() restores the span before
        self._token = _set_current(self) if enter else None
        self.duration_ns = None
        self.start_ns = perf_counter_ns()

    @property
    def flow_id(self):
        root = self.root or self
        return root.flow_id if type(root) is SpanRef else root.span_id

    @property
    def flow_name(self):
        root = self.root or self
        if type(root) is SpanRef:
            return root.flow_name
        return root.name if root.kind in FLOW_KINDS else None

    # -- attributes -------------------------------------------------------------------------
    def set(self, key, value):
        attrs = self.attrs
        if attrs is None:
            self.attrs = {key: value}
        else:
            attrs[key] = value

    def ref(self):
        return SpanRef(self.span_id, self.flow_id, self.flow_name)

    @property
    def is_root(self):
        return self.parent is None

    @property
    def duration_ms(self):
        end = self.duration_ns
        if end is None:
            return (perf_counter_ns() - self.start_ns) / 1e6
        return end / 1e6

    # -- end ----------------------------------------------------------------------------------
    def fail(self, exc):
        """Mark the span failed with ``exc`` (an exception instance or class)."""
        self.status, self.error = failure(exc)

    def finish(self, duration_ns=None):
        """End the span, restore the previous current span and hand the span to the writer."""
        if self.duration_ns is not None:
            return  # finished already: finishing twice must not record twice
        self.duration_ns = (perf_counter_ns() - self.start_ns) if duration_ns is None else duration_ns
        token = self._token
        if token is not None:
            self._token = None
            try:
                _reset_current(token)
            except ValueError:
                # Finished in another context than it started in (a span handed to a callback):
                # the starting context keeps its own value, nothing to restore here.
                pass
        parent = self.parent
        if parent is None:
            if self.kind == "flow":
                _flow_finished()
        else:
            siblings = parent.children
            # a flow's checkpoints are what ended within it (it may be written as soon as it ends)
            if siblings is not None and parent.duration_ns is None and _len(siblings) < MAX_CHECKPOINT_SPANS:
                siblings.append(self)
        if _len(_buffer) < _high_water[0]:
            _append(self)
        else:
            _overflow(self)

    # context-manager protocol (sync; also correct inside coroutines)
    def __enter__(self):
        return self

    def __exit__(self, etype, exc, tb):
        if etype is not None:
            self.fail(etype)
        self.finish()
        return False

    def __repr__(self):
        return f"<Span {self.kind} {self.name!r} id={self.span_id:016x}>"


def failure(exc):
    """``(status, exception type)`` of a span that ``exc`` (an instance or class) ended."""
    etype = exc if isinstance(exc, type) else type(exc)
    return ("cancelled" if etype.__name__ == "CancelledError" else "error"), etype


def record_finished(name, kind, attrs, parent, site, start_ns, duration_ns, status="success",
                    error=None, extra=None):
    """Record a span that has already ended, without making a Span object (hot paths).

    For a call that nothing else needs to see as its current span while it runs and that is
    never a flow (no ``flow_complete``, not counted in ``active_flows``): it costs one
    tuple instead of a Span, and ``attrs`` may be shared between calls (it is never written to;
    ``extra``, a dict or None, holds this call's own attributes and is merged over it when the
    record is made). The tuple's layout is ``records.COMPACT_SPAN``.
    """
    siblings = None
    if parent is not None:
        root = parent.root or parent
        if root is _MUTED:
            return          # autoperf's own work (MUTED, or a span made under it)
        end = root.duration_ns
        if end is None:
            siblings = parent.children
        elif root.start_ns + end <= start_ns:
            # started after its flow ended: a root of its own, linked to that flow (see Span)
            extra = _linked(extra, root)
            parent = None
    ident = get_ident()
    loop = _running_loop()
    task = None if loop is None else _current_tasks.get(loop)
    if task is not None:
        task = _task_name(task)
    item = (name, kind, attrs, parent, site, _next_id(), _live_thread(ident) or ident, task, start_ns,
            duration_ns, status, error, extra)
    if siblings is not None and _len(siblings) < MAX_CHECKPOINT_SPANS:
        siblings.append(item)
    if _len(_buffer) < _high_water[0]:
        _append(item)
    else:
        _overflow(item)


def _linked(attrs, root):
    """``attrs`` (never written to: it may be shared) plus ``link_flow_id``, the flow ``root`` belongs to."""
    link = records.hex16(root.flow_id if root.is_remote else root.span_id)
    return {"link_flow_id": link} if not attrs else {**attrs, "link_flow_id": link}


def start(name, kind="span", attrs=None, parent=CURRENT, site=None):
    """Start a span that becomes the current span of this context until ``finish()``."""
    if parent is CURRENT:
        parent = _get_current()
    if parent is _MUTED:
        return _MUTED   # autoperf's own work: nothing to record, MUTED stays current
    return Span(name, kind, attrs, parent, site, True)


def start_detached(name, kind="span", attrs=None, parent=CURRENT, site=None):
    """Start a span without making it current (its end may happen anywhere)."""
    if parent is CURRENT:
        parent = _get_current()
    if parent is _MUTED:
        return _MUTED
    return Span(name, kind, attrs, parent, site)


def span(name, kind="span", attrs=None, parent=CURRENT):
    """``with spans.span("name", "db") as s:`` — start() as a context manager."""
    return start(name, kind, attrs, parent)


def current():
    """The span current in this context, or None."""
    return _get_current()


def activate(s):
    """Make ``s`` current in this context; returns a token for ``deactivate``."""
    return _set_current(s)


def deactivate(token):
    try:
        _reset_current(token)
    except ValueError:
        pass
