"""Incoming requests as flows: what the HTTP server integrations (aiohttp.web, ASGI) share.

A request is a root flow named ``"{METHOD} {route template}"`` (just the method until a route
matched), with attributes ``server``, ``method``, ``route``, ``status``. A valid ``traceparent``
makes the flow continue that trace (``tracecontext.adopt``; ``trace_id`` and ``parent_span_id`` in
the root's attributes). A 5xx, or an exception the framework does not turn into a 4xx, fails it.
"""
from __future__ import annotations

import threading

from autoperf import diagnostics, spans, tracecontext

_current_thread = threading.current_thread


def ours() -> bool:
    """True in autoperf's own threads (the loopback Discord serves there): no flows for those."""
    return _current_thread().name.startswith("autoperf-")


def start(server: str, method, traceparent=None):
    """Start (and make current) the request's flow."""
    method = str(method).upper()
    attrs = {"server": server, "method": method}
    s = spans.start(method, "flow", attrs, parent=None)
    if traceparent:
        remote = tracecontext.parse_traceparent(traceparent)
        if remote is not None:
            trace_id, parent_id, _flags = remote
            tracecontext.adopt(s.span_id, trace_id, parent_id)
            attrs["trace_id"] = trace_id.hex()
            attrs["parent_span_id"] = f"{parent_id:016x}"
    return s


def end(s, route, status, exc=None, handled=False):
    """Name the flow by its route, record the status, end it. ``handled``: ``exc`` is the framework's
    own answer (an HTTP exception), a failure only when its status is 5xx."""
    try:
        if route:
            s.attrs["route"] = route
            s.name = f"{s.attrs['method']} {route}"
        if isinstance(status, int):
            s.attrs["status"] = status
    except Exception as err:
        diagnostics.internal_error(f"{s.attrs.get('server')} flow attributes", err)
    if exc is not None and not (handled and isinstance(status, int) and status < 500):
        s.fail(exc)
    elif isinstance(status, int) and status >= 500:
        s.status = "error"
    s.finish()
