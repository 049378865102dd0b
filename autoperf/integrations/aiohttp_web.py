"""aiohttp.web server: every request an ``Application`` handles is a flow (``Application._handle``).

Name ``"{METHOD} {route template}"`` (the route's canonical path, ``GET /users/{id}``; ``GET`` alone
when no route matched); attributes ``server: aiohttp``, ``method``, ``route``, ``status`` (the
response's, an ``HTTPException``'s, or 500 for any other exception); an incoming ``traceparent`` is
honoured (option ``traceparent``). Shared rules: ``server_flows``. Never the path's values, query
string, headers or body. Requests served by autoperf's own threads (the loopback Discord) are not flows.
"""
from __future__ import annotations

from autoperf import diagnostics
from autoperf.config.schema import Bool, Field, Obj
from autoperf.integrations import server_flows

HONOUR = Field(Bool(), default=True, doc="Honour an incoming W3C `traceparent` header.")
OPTIONS = Obj({"traceparent": HONOUR}, doc="aiohttp.web server requests (a flow per request).")

_options = {"traceparent": True}


def _route_of(request):
    try:
        resource = request.match_info.route.resource
        return None if resource is None else resource.canonical
    except Exception:   # no match info (an expect handler failed, a custom router)
        return None


def _handle_factory(original):
    from aiohttp.web import HTTPException

    async def _handle(self, request):
        if server_flows.ours():
            return await original(self, request)
        try:
            s = server_flows.start("aiohttp", request.method,
                                   request.headers.get("traceparent") if _options["traceparent"] else None)
        except Exception as exc:
            diagnostics.internal_error("aiohttp.web flow start", exc)
            return await original(self, request)
        try:
            resp = await original(self, request)
        except BaseException as exc:
            status = getattr(exc, "status", None)
            server_flows.end(s, _route_of(request), status if isinstance(status, int) else 500, exc,
                             handled=isinstance(exc, HTTPException))
            raise
        server_flows.end(s, _route_of(request), getattr(resp, "status", None))
        return resp
    return _handle


def setup(module, options: dict) -> None:
    _options["traceparent"] = bool(options.get("traceparent", True))
