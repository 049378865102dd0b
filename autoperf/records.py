"""The record model: finished spans become plain dicts (documented in README "Record schema").

Runs in the writer thread only. Field names follow the seed plan's log format (section 5.2).
"""
from __future__ import annotations

import math
import os
import threading
import time

from autoperf import identity
from autoperf.current import MUTED

LEVELS = {"TRACE": 5, "DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}
FLOW_KINDS = ("flow", "cycle")


class Site:
    """Static facts about an instrumented place, shared by all its spans."""

    __slots__ = ("threshold_ms", "sla_ms", "retain")

    def __init__(self, threshold_ms=None, sla_ms=None, retain=None):
        self.threshold_ms = threshold_ms
        self.sla_ms = sla_ms
        self.retain = retain        # a target's ``retain:``: "always", "never" or None (the rules)


class Settings:
    """What the writer needs from the config to turn spans into records."""

    __slots__ = ("debug_ns", "warning_ns", "error_ns", "extra")

    def __init__(self, debug_ms=1.0, warning_ms=500.0, error_ms=3000.0, service=None, tags=None):
        # Whole nanoseconds: durations are ints, and ``d > floor(x)`` is ``d > x`` for an int d
        # (an int-int comparison is the interpreter's fast path, int-float is not).
        self.debug_ns = math.floor(debug_ms * 1e6)
        self.warning_ns = math.floor(warning_ms * 1e6)
        self.error_ns = math.floor(error_ms * 1e6)
        extra = {}
        if service:
            extra["service"] = service
        if tags:
            extra["tags"] = dict(tags)
        self.extra = extra

    @classmethod
    def from_config(cls, data: dict) -> "Settings":
        levels = data.get("levels") or {}
        return cls(levels.get("debug_ms", 1.0), levels.get("warning_ms", 500.0),
                   levels.get("error_ms", 3000.0), data.get("service"), data.get("tags"))


_pid = os.getpid()


def on_fork():
    global _pid
    _pid = os.getpid()
    identity.on_fork()


# -- time ----------------------------------------------------------------------------------
# perf_counter_ns() is CLOCK_MONOTONIC on Linux (shared by all processes); the offset to the wall
# clock is measured again for every batch so that clock adjustments reach the timestamps.
_wall_offset_ns = time.time_ns() - time.perf_counter_ns()
_ts_cache_sec = -1
_ts_cache_prefix = ""


def _refresh_wall_offset():
    global _wall_offset_ns
    _wall_offset_ns = time.time_ns() - time.perf_counter_ns()


_MS_SUFFIX = tuple(f".{ms:03d}Z" for ms in range(1000))


def iso_from_wall_ns(wall_ns: int) -> str:
    """``2025-01-20T15:30:45.123Z``; the seconds part is cached (most records share it)."""
    global _ts_cache_sec, _ts_cache_prefix
    sec, rem = divmod(wall_ns, 1_000_000_000)
    if sec != _ts_cache_sec:
        _ts_cache_prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        _ts_cache_sec = sec
    return _ts_cache_prefix + _MS_SUFFIX[rem // 1_000_000]


def now_iso() -> str:
    return iso_from_wall_ns(time.time_ns())


def wall_ns_of(perf_ns: int) -> int:
    return perf_ns + _wall_offset_ns


# -- names ---------------------------------------------------------------------------------
_error_names: dict = {}


def error_name(etype) -> str | None:
    if etype is None:
        return None
    name = _error_names.get(etype)
    if name is None:
        mod = getattr(etype, "__module__", "builtins")
        qual = getattr(etype, "__qualname__", repr(etype))
        name = qual if mod in ("builtins", "__main__") else f"{mod}.{qual}"
        _error_names[etype] = name
    return name


_thread_names: dict = {}


def _thread_name(ident) -> str:
    if type(ident) is not int:  # the Thread object the span started in (see spans.Span)
        try:
            return ident.name
        except Exception:
            return str(ident)
    thread = threading._active.get(ident)  # noqa: SLF001 - a dict lookup; no lock needed to read
    if thread is not None:
        name = thread.name
        _thread_names[ident] = name
        return name
    return _thread_names.get(ident) or str(ident)


_hex_cache: dict = {}


def hex_id(value) -> str:
    """``f"{value:016x}"``, cached: parents and flows repeat across a batch."""
    text = _hex_cache.get(value)
    if text is None:
        if len(_hex_cache) > 50_000:
            _hex_cache.clear()
        text = _hex_cache[value] = hex16(value)
    return text


def hex16(value) -> str:
    """An id as 16 hex digits: ``f"{value:016x}"`` in a third of the time (ids are 62-bit: always 8 bytes)."""
    try:
        return value.to_bytes(8, "big").hex()
    except (OverflowError, AttributeError, TypeError):
        return f"{value:016x}" if isinstance(value, int) else str(value)


# -- conversion ----------------------------------------------------------------------------
#: A finished span in compact form, as ``spans.record_finished`` buffers it: a tuple of these
#: fields (``attrs`` may be shared between spans and is never written to; ``extra`` is merged
#: over it). Everything else reads a finished span as a ``Span`` object.
COMPACT_SPAN = ("name", "kind", "attrs", "parent", "site", "span_id", "thread", "task", "start_ns",
                "duration_ns", "status", "error", "extra")

def _span_records(spans, settings: Settings, append, retained=None):
    """Append the ``span`` record of each finished span (and ``flow_complete`` after a root flow).

    ``retained`` (the retention rule that kept these spans, or "all") is written on every record.

    The writer's inner loop (a few µs per span add up to the writer's CPU): everything is inlined,
    names of threads and tasks are looked up once per batch, the second of the timestamp once per
    second, the ``flow_id``/``parent_id`` hex once per id (``hex_id``).
    """
    offset = _wall_offset_ns
    pid = _pid
    ident = identity.FIELDS           # host, instance_id, shard_ids (replaced whole, never edited)
    extra = settings.extra
    warning_ns, error_ns, debug_ns = settings.warning_ns, settings.error_ns, settings.debug_ns
    names = {None: None}       # Thread / ident -> its name, for this batch
    thresholds = {None: warning_ns}   # Site -> its WARNING threshold in whole ns, for this batch
    hex_of = _hex_cache.get
    suffix = _MS_SUFFIX
    sec_now, prefix = -1, ""
    for span in spans:
        if type(span) is tuple:           # COMPACT_SPAN (spans.record_finished)
            (name, kind, attrs, parent, site, span_id, thread, task, start_ns, dur, status, error,
             more) = span
            # attrs is shared between spans: the record gets its own dict (processors may edit it)
            if more:
                attrs = {**attrs, **more} if attrs else dict(more)
            else:
                attrs = dict(attrs) if attrs else {}
            root = None if parent is None else (parent.root or parent)
            children = None
        else:
            name, kind, attrs, parent, site = span.name, span.kind, span.attrs, span.parent, span.site
            span_id, thread, task, start_ns = span.span_id, span.thread, span.task, span.start_ns
            dur, status, error = span.duration_ns, span.status, span.error
            root = span.root
            children = span.children
        wall = start_ns + offset
        sec = wall // 1_000_000_000
        if sec != sec_now:
            sec_now, prefix = sec, iso_from_wall_ns(wall)[:-5]  # "...T15:30:45" (".123Z" cut)
        try:
            span_id = span_id.to_bytes(8, "big").hex()   # f"{span_id:016x}", 3x faster
        except OverflowError:
            span_id = f"{span_id:016x}"
        if root is None:                  # a root span: its own flow
            flow_id = span_id
            flow_name = name if kind in FLOW_KINDS else None
        else:
            if root.is_remote:            # a SpanRef: the flow lives in another process
                if root is MUTED:         # made under autoperf's own work by code that missed the check
                    continue
                flow_id, flow_name = root.flow_id, root.flow_name
            else:
                flow_id = root.span_id
                flow_name = root.name if root.kind in FLOW_KINDS else None
            flow_id = hex_of(flow_id) or hex_id(flow_id)
        if parent is None:
            parent_id = None
        else:
            parent_id = parent.span_id
            parent_id = hex_of(parent_id) or hex_id(parent_id)
        # the level: ERROR over error_ms, WARNING over the site's threshold (else warning_ms),
        # flows INFO, DEBUG over debug_ms, else TRACE; a failed span is at least WARNING (a
        # failed root flow ERROR)
        threshold = thresholds.get(site)
        if threshold is None:
            ms = site.threshold_ms
            threshold = thresholds[site] = warning_ns if ms is None else math.floor(ms * 1e6)
        if dur > error_ns:
            level = "ERROR"
        elif dur > threshold:
            level = "WARNING"
        elif kind in FLOW_KINDS:
            level = "INFO"
        elif dur > debug_ns:
            level = "DEBUG"
        else:
            level = "TRACE"
        if status == "error" and level != "ERROR":
            level = "ERROR" if kind in FLOW_KINDS and parent is None else "WARNING"
        thread_name = names.get(thread)
        if thread_name is None:
            thread_name = names[thread] = _thread_name(thread)
        rec = {
            "timestamp": prefix + suffix[wall % 1_000_000_000 // 1_000_000],
            "level": level,
            "type": "span",
            "name": name,
            "kind": kind,
            "span_id": span_id,
            "parent_id": parent_id,
            "flow_id": flow_id,
            "flow_name": flow_name,
            "duration_ms": dur // 1000 / 1000,
            "status": status,
            "error": None if error is None else error_name(error),
            "pid": pid,
            **ident,
            "thread": thread_name,
            "task": task,                 # its name (spans.Span keeps no Task)
            "attrs": attrs if attrs is not None else {},
        }
        if site is not None:
            if site.threshold_ms is not None:
                rec["threshold_ms"] = site.threshold_ms
            if site.sla_ms is not None:    # a step's SLA is evaluated too (a kind: flow target inside a flow)
                rec["sla_ms"] = site.sla_ms
                rec["sla_met"] = rec["duration_ms"] <= site.sla_ms
        if extra:
            rec.update(extra)
        if retained is not None:
            rec["retained"] = retained
        append(rec)
        if children is not None:          # a root flow or cycle
            append(flow_complete_record(span, settings, rec, retained))
            # The flow and its children point at each other: let go here, so that the spans
            # are freed by reference counting once written (not left to the cyclic GC).
            span.children = None


def checkpoint_entries(span) -> list:
    """The flow's checkpoints: manual ones (time since the previous) and its direct child spans."""
    children = _child_entries(span)
    marks = span.checkpoints
    if not marks:
        return children
    start = prev = span.start_ns
    entries = []
    for name, at_ns, metadata in marks:
        entry = {"name": name, "kind": "checkpoint", "duration_ms": round((at_ns - prev) / 1e6, 3),
                 "offset_ms": round((at_ns - start) / 1e6, 3)}
        if metadata:
            entry["metadata"] = metadata
        entries.append(entry)
        prev = at_ns
    entries += children
    entries.sort(key=_offset_of)          # stable: a checkpoint stays before a child of the same µs
    return entries


def flow_complete_record(span, settings: Settings, span_rec: dict, retained=None) -> dict:
    attrs = span_rec["attrs"]
    rec = {
        "timestamp": span_rec["timestamp"],
        "level": span_rec["level"],
        "type": "flow_complete",
        "flow_name": span.name,
        "flow_kind": span.kind,
        "flow_id": span_rec["span_id"],
        "user_id": attrs.get("user_id"),
        "duration_ms": span_rec["duration_ms"],
        "checkpoints": checkpoint_entries(span),
        "status": span_rec["status"],
        "error": span_rec["error"],
        "metadata": attrs,
        "pid": _pid,
        **identity.FIELDS,
    }
    sla = span_rec.get("sla_ms")
    if sla is not None:
        rec["sla_ms"] = sla
        rec["sla_met"] = span_rec["duration_ms"] <= sla
    if retained is not None:
        rec["retained"] = retained
    if settings.extra:
        rec.update(settings.extra)
    return rec


def _child_entries(span) -> list:
    """A flow's direct child spans as checkpoint entries (every flow, unretained ones too): offsets
    rounded to the µs by integer arithmetic (float ``round`` goes through a decimal conversion),
    sorted only when the children did not end in the order they started."""
    start = span.start_ns
    entries = []
    last = -1
    ordered = True
    for child in span.children or ():
        if type(child) is tuple:          # COMPACT_SPAN
            name, kind, child_start, dur, status = child[0], child[1], child[8], child[9], child[10]
        else:
            name, kind, child_start = child.name, child.kind, child.start_ns
            dur, status = child.duration_ns, child.status
        if child_start < last:
            ordered = False
        last = child_start
        offset = child_start - start
        entries.append({"name": name, "kind": kind, "duration_ms": dur // 1000 / 1000,
                        "offset_ms": (offset + 500) // 1000 / 1000 if offset >= 0 else round(offset / 1e6, 3),
                        "status": status})
    if not ordered:
        entries.sort(key=_offset_of)
    return entries


def _offset_of(entry):
    return entry["offset_ms"]


def flow_complete_only(span, settings: Settings) -> dict:
    """The ``flow_complete`` record of a root flow that was not retained (``"retained": null``),
    made without its ``span`` record: the writer's per-flow cost when nothing else is written, so
    the checkpoints, the id's hex and the timestamp are made inline here (same fields and values
    as ``flow_complete_record``)."""
    global _ts_cache_sec, _ts_cache_prefix
    dur, site, status, start = span.duration_ns, span.site, span.status, span.start_ns
    threshold = settings.warning_ns
    if site is not None and site.threshold_ms is not None:
        threshold = math.floor(site.threshold_ms * 1e6)
    if dur > settings.error_ns or status == "error":
        level = "ERROR"
    elif dur > threshold:
        level = "WARNING"
    else:
        level = "INFO"
    if span.checkpoints:
        checkpoints = checkpoint_entries(span)
    else:
        checkpoints = _child_entries(span)
    span.children = None      # see _span_records: the spans are freed by reference counting
    wall = start + _wall_offset_ns
    sec = wall // 1_000_000_000
    if sec != _ts_cache_sec:                # iso_from_wall_ns, inline
        _ts_cache_prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        _ts_cache_sec = sec
    try:
        flow_id = span.span_id.to_bytes(8, "big").hex()   # not cached: a root id never comes back
    except OverflowError:
        flow_id = f"{span.span_id:016x}"
    attrs = span.attrs
    error = span.error
    duration_ms = dur // 1000 / 1000
    rec = {
        "timestamp": _ts_cache_prefix + _MS_SUFFIX[wall % 1_000_000_000 // 1_000_000],
        "level": level,
        "type": "flow_complete",
        "flow_name": span.name,
        "flow_kind": span.kind,
        "flow_id": flow_id,
        "user_id": attrs.get("user_id") if attrs else None,
        "duration_ms": duration_ms,
        "checkpoints": checkpoints,
        "status": status,
        "error": None if error is None else error_name(error),
        "metadata": attrs if attrs is not None else {},
        "pid": _pid,
        **identity.FIELDS,
        "retained": None,
    }
    if site is not None and site.sla_ms is not None:
        rec["sla_ms"] = site.sla_ms
        rec["sla_met"] = duration_ms <= site.sla_ms
    if settings.extra:
        rec.update(settings.extra)
    return rec


def fill_record(rec: dict, settings: Settings) -> dict:
    """Complete a record dict made by ``pipeline.emit``."""
    if "timestamp" not in rec:
        rec["timestamp"] = now_iso()
    if "level" not in rec:
        rec["level"] = "INFO"
    rec.setdefault("pid", _pid)
    for key, value in identity.FIELDS.items():
        rec.setdefault(key, value)
    if settings.extra:
        for key, value in settings.extra.items():
            rec.setdefault(key, value)
    return rec


def to_records(items, settings: Settings, retained=None) -> list:
    """Record dicts for a batch of buffered items (finished spans and ``emit``ted dicts), in order."""
    _refresh_wall_offset()
    out = []
    append = out.append
    spans = []
    for item in items:
        if type(item) is dict:
            if spans:
                _span_records(spans, settings, append, retained)
                spans = []
            append(fill_record(item, settings))
        else:
            spans.append(item)
    if spans:
        _span_records(spans, settings, append, retained)
    return out


def dropped_record(count: int, since_ns, settings: Settings) -> dict:
    return fill_record({
        "type": "dropped", "level": "WARNING", "count": count,
        "since": iso_from_wall_ns(since_ns) if since_ns else None,
        "message": f"{count} records dropped: the writer could not keep up (buffer full)",
    }, settings)
