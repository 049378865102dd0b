"""The manual API from the seed plan, for explicit checkpoints; works with or without ``autoperf run``.

    with autoperf.measure_time("db.query", {"table": "players"}) as timer: ...
    flow = autoperf.FlowTracker("queue_command", user_id); flow.checkpoint("guards"); flow.complete()
    autoperf.checkpoint("loaded_preferences")        # inside whatever flow is current
    @autoperf.flow / @autoperf.flow("name", sla_ms=300) / @autoperf.span
"""
from __future__ import annotations

import time

from autoperf import pipeline, spans, wrappers
from autoperf.records import Site


def _ensure_running():
    from autoperf import lifecycle
    lifecycle.ensure_pipeline()


class measure_time:
    """Time a block as a span (sync ``with`` or ``async with``); ``.duration_ms`` after the block."""

    __slots__ = ("name", "metadata", "kind", "span", "duration_ms")

    def __init__(self, name: str, metadata: dict | None = None, kind: str = "span"):
        self.name = name
        self.metadata = dict(metadata) if metadata else None
        self.kind = kind
        self.span = None
        self.duration_ms = None

    def __enter__(self):
        _ensure_running()
        self.span = spans.start(self.name, self.kind, self.metadata)
        return self

    def __exit__(self, etype, exc, tb):
        s = self.span
        if etype is not None:
            s.fail(etype)
        s.finish()
        self.duration_ms = s.duration_ns / 1e6
        return False

    async def __aenter__(self):
        return self.__enter__()

    async def __aexit__(self, etype, exc, tb):
        return self.__exit__(etype, exc, tb)


class Checkpoint:
    """A named moment in a flow: ``duration_ms`` since the flow started (seed 9.1), ``step_ms`` since the previous."""

    __slots__ = ("name", "duration_ms", "step_ms", "timestamp", "metadata")

    def __init__(self, name, duration_ms, step_ms, metadata):
        self.name = name
        self.duration_ms = duration_ms
        self.step_ms = step_ms
        self.timestamp = time.time()
        self.metadata = metadata

    def __repr__(self):
        return f"Checkpoint({self.name!r}, {self.duration_ms:.3f} ms)"


def _add_checkpoint(span, name, metadata):
    now = time.perf_counter_ns()
    marks = span.checkpoints
    if marks is None:
        marks = span.checkpoints = []
    previous = marks[-1][1] if marks else span.start_ns
    marks.append((name, now, dict(metadata) if metadata else None))
    return Checkpoint(name, (now - span.start_ns) / 1e6, (now - previous) / 1e6, metadata or {})


class FlowTracker:
    """A flow you start and complete by hand (seed plan 2.2). Also a (async) context manager.

    While it runs it is the current span of the context that created it, so instrumented calls
    made meanwhile nest under it.
    """

    def __init__(self, flow_name: str, user_id=None, metadata: dict | None = None, sla_ms=None):
        _ensure_running()
        self.flow_name = flow_name
        self.user_id = user_id
        self.metadata: dict = dict(metadata) if metadata else {}
        self.checkpoints: list[Checkpoint] = []
        self.status = None
        site = Site(sla_ms=sla_ms) if sla_ms is not None else None
        self._span = spans.start(flow_name, "flow", None, spans.CURRENT, site)

    @property
    def span(self):
        return self._span

    @property
    def duration_ms(self):
        return self._span.duration_ms

    def checkpoint(self, name: str, metadata: dict | None = None) -> Checkpoint:
        mark = _add_checkpoint(self._span, name, metadata)
        self.checkpoints.append(mark)
        return mark

    def complete(self, status: str = "success", error=None):
        if self.status is not None:
            return
        s = self._span
        self.status = status
        attrs = dict(s.attrs) if s.attrs else {}  # what was set on the span meanwhile stays
        attrs.update(self.metadata)
        if self.user_id is not None:
            attrs["user_id"] = self.user_id
        s.attrs = attrs
        if error is not None:
            s.fail(error)
        elif status != "success":
            s.status = status
        s.finish()

    def __enter__(self):
        return self

    def __exit__(self, etype, exc, tb):
        if etype is None:
            self.complete("success")
        else:
            self.complete("error", etype)
        return False

    async def __aenter__(self):
        return self

    async def __aexit__(self, etype, exc, tb):
        return self.__exit__(etype, exc, tb)


def checkpoint(name: str, metadata: dict | None = None) -> Checkpoint | None:
    """Mark a checkpoint in the current flow (None when no flow is running)."""
    current = spans.current()
    if current is None:
        return None
    root = current.root if current.root is not None else current
    if type(root) is not spans.Span or root.kind not in spans.FLOW_KINDS:
        # A tree without a flow (nothing would report the mark), or one whose flow lives in
        # another process (a SpanRef has nowhere to keep marks): no flow here.
        return None
    return _add_checkpoint(root, name, metadata)


def _decorator(kind):
    def decorate(fn=None, /, name: str | None = None, *, sla_ms=None, threshold_ms=None):
        def apply(func):
            if isinstance(func, (staticmethod, classmethod)):  # written above @staticmethod
                return type(func)(apply(func.__func__))
            _ensure_running()
            label = name or f"{func.__module__}.{func.__qualname__}"
            return wrappers.instrument(func, wrappers.CallSite(label, kind, threshold_ms, sla_ms))
        if callable(fn) or isinstance(fn, (staticmethod, classmethod)):
            return apply(fn)
        if isinstance(fn, str):  # @autoperf.flow("queue_command")
            name = fn
        return apply
    decorate.__name__ = kind
    decorate.__doc__ = f"Decorator: every call is a ``{kind}`` (``@{kind}`` or ``@{kind}('name', sla_ms=…)``)."
    return decorate


flow = _decorator("flow")
span = _decorator("span")
cycle = _decorator("cycle")


def emit(record: dict):
    """Write a record of your own through the pipeline (``type`` required)."""
    _ensure_running()
    pipeline.emit(dict(record))
