"""Log correlation: the program's ``logging`` records carry ``trace_id``, ``span_id`` and ``flow_name``
while a span is current (as ddtrace's log injection does), through the log-record factory.

``trace_id`` is the 32-hex W3C trace id of the current flow (``autoperf.tracecontext``: the id its
OTLP trace has), ``span_id`` the current span's 16-hex id, ``flow_name`` the flow's name (None outside
a flow). With no current span the record is left as it is: one context-variable read. A formatter
that names ``%(trace_id)s`` needs the attribute on every record: use ``defaults=`` (Python 3.10+).
"""
from __future__ import annotations

import logging as _logging

from autoperf import spans, tracecontext
from autoperf.config.schema import Obj

OPTIONS = Obj({}, doc="Log correlation: trace_id / span_id / flow_name on the program's log records.")

_get_current = spans.get_current
_installed = []   # [our factory, the one it replaced]


def _factory_over(previous):
    def record_factory(*args, **kwargs):
        record = previous(*args, **kwargs)
        s = _get_current()
        if s is not None:
            try:
                record.trace_id = tracecontext.trace_hex(s.flow_id)
                record.span_id = f"{s.span_id:016x}"
                record.flow_name = s.flow_name
            except Exception:   # a span-like object without ids: leave the record as it is
                pass
        return record
    return record_factory


def setup(module, options: dict) -> None:
    """Set the record factory (set, not wrapped: ``logging.setLogRecordFactory``)."""
    if _installed:
        return
    previous = _logging.getLogRecordFactory()
    ours = _factory_over(previous)
    _logging.setLogRecordFactory(ours)
    _installed[:] = [ours, previous]


def teardown(module):
    if not _installed:
        return
    ours, previous = _installed
    if _logging.getLogRecordFactory() is ours:      # someone set theirs over ours: leave it
        _logging.setLogRecordFactory(previous)
    _installed.clear()
