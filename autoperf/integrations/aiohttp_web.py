"""aiohttp.web server: every request an ``Application`` handles is a flow (``Application._handle``).

Name: ``"{METHOD} {route template}"`` (``GET /users/{id}``, the route's canonical path; ``GET`` alone
when no route matched). Attributes: ``server`` (``"aiohttp"``), ``method``, ``route``, ``status``
(the response's, an ``HTTPException``'s, or 500 for any other exception). A 5xx, or an exception
other than an ``HTTPException`` below 500, marks the flow failed. A valid incoming ``traceparent``
is honoured: the flow continues that trace (``autoperf.tracecontext.adopt``; the root's ``attrs``
carry ``trace_id`` and ``parent_span_id``). Never the path's values, query string, headers or body.
Requests served by autoperf's own threads (the loopback Discord) are not flows.
"""
from __future__ import annotations

import threading

from autoperf import diagnostics, spans, tracecontext
from autoperf.config.schema import Bool, Field, Obj

OPTIONS = Obj({"traceparent": Field(Bool(), default=True, doc="Honour an incoming W3C `traceparent` header.")},
              doc="aiohttp.web server requests (a flow per request).")

_options = {"traceparent": True}
_current_thread = threading.current_thread


def _route_of(request):
    try:
        resource = request.match_info.route.resource
        return None if resource is None else resource.canonical
    except Exception:   # no match info (an expect handler failed, a custom router)
        return None


def _start(request):
    method = request.method
    attrs = {"server": "aiohttp", "method": method}
    s = spans.start(method, "flow", attrs, parent=None)
    if _options["traceparent"]:
        remote = tracecontext.parse_traceparent(request.headers.get("traceparent"))
        if remote is not None:
            trace_id, parent_id, _flags = remote
            tracecontext.adopt(s.span_id, trace_id, parent_id)
            attrs["trace_id"] = trace_id.hex()
            attrs["parent_span_id"] = f"{parent_id:016x}"
    return s


def _end(s, request, status, exc=None):
    try:
        route = _route_of(request)
        if route is not None:
            s.attrs["route"] = route
            s.name = f"{s.attrs['method']} {route}"
        if status is not None:
            s.attrs["status"] = status
    except Exception as err:
        diagnostics.internal_error("aiohttp.web flow attributes", err)
    if exc is not None and not (isinstance(status, int) and status < 500 and exc is not None
                                and isinstance(exc, _http_exception())):
        s.fail(exc)
    elif isinstance(status, int) and status >= 500:
        s.status = "error"
    s.finish()


def _http_exception():
    from aiohttp import web
    return web.HTTPException


def _handle_factory(original):
    async def _handle(self, request):
        if _current_thread().name.startswith("autoperf-"):
            return await original(self, request)
        try:
            s = _start(request)
        except Exception as exc:
            diagnostics.internal_error("aiohttp.web flow start", exc)
            return await original(self, request)
        try:
            resp = await original(self, request)
        except BaseException as exc:
            status = getattr(exc, "status", None)
            _end(s, request, status if isinstance(status, int) else 500, exc)
            raise
        _end(s, request, getattr(resp, "status", None))
        return resp
    return _handle


def setup(module, options: dict) -> None:
    _options["traceparent"] = bool(options.get("traceparent", True))
