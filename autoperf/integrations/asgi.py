"""ASGI (Starlette, and FastAPI on it): every HTTP request a ``Starlette`` app serves is a flow
(``Starlette.__call__``).

Same shape as aiohttp.web (``server_flows``): name ``"{METHOD} {route template}"`` from the route
the router matched (``scope["route"].path``, ``/users/{user_id}``; inside a ``Mount`` the inner
route's path), attributes ``server: asgi``, ``method``, ``route``, ``status`` (the
``http.response.start`` the app sent; 500 when it raised before answering), ``traceparent``
honoured. A Starlette app mounted in another one is part of the outer request's flow.
Lifespan and websocket scopes are not flows.
"""
from __future__ import annotations

from autoperf import diagnostics
from autoperf.config.schema import Obj
from autoperf.integrations import server_flows
from autoperf.integrations.aiohttp_web import HONOUR

OPTIONS = Obj({"traceparent": HONOUR}, doc="Starlette / FastAPI requests (a flow per request).")

_options = {"traceparent": True}
_KEY = "autoperf.flow"


def _header(scope, name: bytes):
    for key, value in scope.get("headers") or ():
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _route_of(scope):
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else None


def _call_factory(original):
    async def __call__(self, scope, receive, send):
        if scope.get("type") != "http" or _KEY in scope or server_flows.ours():
            return await original(self, scope, receive, send)
        try:
            s = server_flows.start("asgi", scope.get("method", "GET"),
                                   _header(scope, b"traceparent") if _options["traceparent"] else None)
            scope[_KEY] = s
        except Exception as exc:
            diagnostics.internal_error("asgi flow start", exc)
            return await original(self, scope, receive, send)
        status = []

        async def send_status(message):
            if message.get("type") == "http.response.start" and not status:
                status.append(message.get("status"))
            await send(message)

        try:
            await original(self, scope, receive, send_status)
        except BaseException as exc:
            server_flows.end(s, _route_of(scope), status[0] if status else 500, exc)
            raise
        server_flows.end(s, _route_of(scope), status[0] if status else None)
    return __call__


def setup(module, options: dict) -> None:
    _options["traceparent"] = bool(options.get("traceparent", True))
