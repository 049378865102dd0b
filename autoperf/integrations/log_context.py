"""Log correlation: the program's ``logging`` records carry ``trace_id``, ``span_id`` and ``flow_name``
while a span is current (as ddtrace's log injection does).

``trace_id`` is the 32-hex W3C trace id of the current flow (``autoperf.tracecontext``: the id its
OTLP trace has), ``span_id`` the current span's 16-hex id, ``flow_name`` the flow's name (None outside
a flow). With no current span the record is left as it is. A formatter that names ``%(trace_id)s``
needs the attribute on every record: use ``defaults=`` (Python 3.10+). A key the call's own ``extra=``
gives wins over ours. Why ``Logger.makeRecord`` and not a record factory: docs/performance.md.
"""
from __future__ import annotations

import logging as _logging

from autoperf import tracecontext
from autoperf.config.schema import Obj
from autoperf.spans import MUTED, get_current

OPTIONS = Obj({}, doc="Log correlation: trace_id / span_id / flow_name on the program's log records.")

_installed = []   # [our makeRecord, the one it replaced]
_ids: dict = {}   # span id -> (trace_id, span_id) as hex: a span's log lines share them
_MAX_IDS = 1024


def _correlate(record_dict, s):
    if s is MUTED:         # autoperf's own work: no flow of the program's
        return
    try:
        ids = _ids.get(s.span_id)
        if ids is None:
            ids = (tracecontext.trace_hex(s.flow_id), f"{s.span_id:016x}")
            if len(_ids) >= _MAX_IDS:
                _ids.clear()
            _ids[s.span_id] = ids
        name = s.flow_name      # read each time: a server flow is renamed once its route is known
    except Exception:   # a span-like object without ids: leave the record as it is
        return
    # setdefault: a key the call's extra= gave stays the caller's
    record_dict.setdefault("trace_id", ids[0])
    record_dict.setdefault("span_id", ids[1])
    record_dict.setdefault("flow_name", name)


def _make_record_over(previous):
    """``previous`` (Logger.makeRecord) followed by the correlation: one more Python call per record."""
    def makeRecord(self, name, level, fn, lno, msg, args, exc_info, func=None, extra=None, sinfo=None):
        record = previous(self, name, level, fn, lno, msg, args, exc_info, func, extra, sinfo)
        s = get_current()
        if s is not None:
            _correlate(record.__dict__, s)
        return record
    return makeRecord


def _stdlib_make_record(self, name, level, fn, lno, msg, args, exc_info, func=None, extra=None, sinfo=None):
    """``logging.Logger.makeRecord`` (3.10-3.13, unchanged; tests/test_trace_context.py checks its source)
    plus the correlation, so that a record costs no extra call when no span is current."""
    rv = _logging._logRecordFactory(name, level, fn, lno, msg, args, exc_info, func, sinfo)
    if extra is not None:
        for key in extra:
            if (key in ["message", "asctime"]) or (key in rv.__dict__):
                raise KeyError("Attempt to overwrite %r in LogRecord" % key)
            rv.__dict__[key] = extra[key]
    s = get_current()
    if s is not None:
        _correlate(rv.__dict__, s)
    return rv


STDLIB_MAKE_RECORD = _logging.Logger.makeRecord


def setup(module, options: dict) -> None:
    """Set ``Logger.makeRecord``: our copy of the stdlib's, or a wrapper over someone else's."""
    if _installed:
        return
    previous = _logging.Logger.makeRecord
    # DEV: a record factory (setLogRecordFactory) costs a Python call on every record and makes a
    # call's extra={"trace_id": ...} raise KeyError; a copy of the stdlib's makeRecord costs one
    # context-variable read when no span is current (docs/performance.md).
    ours = _stdlib_make_record if previous is STDLIB_MAKE_RECORD else _make_record_over(previous)
    _logging.Logger.makeRecord = ours
    _installed[:] = [ours, previous]


def teardown(module):
    if not _installed:
        return
    ours, previous = _installed
    if _logging.Logger.makeRecord is ours:      # someone set theirs over ours: leave it
        _logging.Logger.makeRecord = previous
    _installed.clear()
    _ids.clear()
