"""The loopback Discord's REST API: one route table, and the middleware every call passes through.

The table is the concatenation of the handler groups' tables (``rest_model.ModelRoutes``: users,
guilds, channels, commands; ``rest_messages.MessageRoutes``: interaction responses and messages),
served under /api/v10 and /api/v9; anything else answers 404 and is reported as not implemented.
The middleware records each call (``RecordedCall``), adds Discord's rate-limit headers, plays the
scenario's forced 429s, turns handler errors into Discord's JSON errors, and hands HTTP the bot sent
to other hosts (rerouted by reroute.py) to the sink.
"""
from __future__ import annotations

import logging
import time
from typing import Awaitable, Callable, Dict, List, Optional, Tuple

from aiohttp import web

from .http_sink import HttpSink
from .rest_messages import MessageRoutes
from .rest_model import ModelRoutes
from .scenario import Scenario
from .tracker import ResponseTracker
from .wire import _CALL_KEY, REROUTED_HEADER, RecordedCall, _ApiError, _json_response, read_body
from .world import World

log = logging.getLogger("autoperf.discord_sim")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class RestApi:
    """Route table + middleware. ``install(app)`` registers every route; ``calls`` is what the bot sent."""

    def __init__(self, scenario: Scenario, world: World, tracker: ResponseTracker, sink: HttpSink,
                 gateway_url: Callable[[], str], now: Callable[[], float]):
        self.scenario, self.sink, self.now = scenario, sink, now
        self.calls: List[RecordedCall] = []
        self.max_calls = 100_000          # recorded REST calls kept (then counted in calls_dropped)
        self.calls_dropped = 0
        self.unhandled: List[str] = []
        self.internal_errors: List[str] = []
        self._route_counts: Dict[str, int] = {}
        self._buckets: Dict[str, Tuple[float, int]] = {}
        self.model = ModelRoutes(scenario, world, gateway_url)
        self.messages = MessageRoutes(world, tracker, now)
        self.table: List[Tuple[str, str, Handler]] = self.model.routes() + self.messages.routes()

    @property
    def logged_in(self) -> bool:
        """The bot asked for its own user (``GET /users/@me``: what discord.py's login does)."""
        return self.model.logged_in

    def install(self, app: web.Application) -> None:
        for version in ("v10", "v9"):
            for method, path, handler in self.table:
                app.router.add_route(method, f"/api/{version}{path}", handler)
            app.router.add_route("*", f"/api/{version}/{{tail:.*}}", self._not_found)
        for method, path, handler in self.model.files():
            app.router.add_route(method, path, handler)

    async def _not_found(self, request: web.Request) -> web.Response:
        raise web.HTTPNotFound()

    # ------------------------------------------------------------------ middleware
    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if REROUTED_HEADER in request.headers:
            return await self.sink.handle(request)
        path = request.path
        if not path.startswith("/api/"):
            return await handler(request)
        parts = path.split("/", 3)
        rel = "/" + parts[3] if len(parts) > 3 else "/"
        resource = request.match_info.route.resource
        canonical = resource.canonical if resource is not None else path
        cparts = canonical.split("/", 3)
        template = "/" + cparts[3] if len(cparts) > 3 else canonical
        if "{tail}" in template:          # not implemented by the sim: keep the real path
            template = rel
        route = f"{request.method} {template}"
        call = RecordedCall(t=self.now(), method=request.method, route=route, path=rel, query=dict(request.query))
        if len(self.calls) < self.max_calls:
            self.calls.append(call)
        else:
            self.calls_dropped += 1
        count = self._route_counts[route] = self._route_counts.get(route, 0) + 1
        info = request.match_info
        major = info.get("channel_id") or info.get("guild_id") or info.get("token") or ""
        headers = self._ratelimit_headers(route, f"{route}:{major}")
        try:
            forced = self._forced_429(route, count, headers)
            if forced is not None:
                await read_body(request, call)
                call.status = 429
                return forced
            request[_CALL_KEY] = call
            try:
                resp = await handler(request)
            except _ApiError as exc:
                body = {"message": exc.message, "code": exc.code}
                if exc.errors:
                    body["errors"] = exc.errors
                resp = _json_response(body, exc.status)
            except web.HTTPException as exc:
                if exc.status == 404:
                    self.unhandled.append(route)
                resp = _json_response({"message": f"{exc.status}: {exc.reason}", "code": 0}, exc.status)
            except Exception as exc:  # a sim bug must not hang the bot
                log.exception("discord_sim: internal error on %s", route)
                self.internal_errors.append(f"{route}: {type(exc).__name__}: {exc}")
                resp = _json_response({"message": "500: Internal Server Error", "code": 0}, 500)
            call.status = resp.status
            resp.headers.update(headers)
            return resp
        finally:
            if call.status == 0:
                call.status = 500

    def _forced_429(self, route: str, count: int, headers: Dict[str, str]) -> Optional[web.Response]:
        for rule in self.scenario.force_429:
            if rule.route == route and count in rule.nth:
                hdrs = dict(headers)
                hdrs.update({"Retry-After": str(max(1, int(rule.retry_after + 0.999))),
                             "X-RateLimit-Remaining": "0", "X-RateLimit-Scope": "user"})
                if rule.is_global:
                    hdrs["X-RateLimit-Global"] = "true"
                return _json_response({"message": "You are being rate limited.", "retry_after": rule.retry_after,
                                       "global": rule.is_global, "code": 0}, 429, hdrs)
        return None

    def _ratelimit_headers(self, route: str, bucket: str) -> Dict[str, str]:
        now = time.time()
        window = self.scenario.ratelimit_window_s
        limit = self.scenario.ratelimit_limit
        start, used = self._buckets.get(bucket, (now, 0))
        if now - start >= window:
            start, used = now, 0
        used += 1
        self._buckets[bucket] = (start, used)
        if len(self._buckets) > 10000:
            for k in [k for k, (s, _) in self._buckets.items() if now - s >= window]:
                del self._buckets[k]
        reset_after = max(0.001, window - (now - start))
        return {
            "Via": "1.1 google",
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": str(max(0, limit - used)),
            "X-RateLimit-Reset": f"{now + reset_after:.3f}",
            "X-RateLimit-Reset-After": f"{reset_after:.3f}",
            "X-RateLimit-Bucket": format(abs(hash(route)) & 0xFFFFFFFFFFFF, "x"),
        }
