"""A loopback Discord: REST API (/api/v9, /api/v10) and gateway websocket on 127.0.0.1.

Real, unmodified discord.py 2.0–2.7 logs in to it, syncs its application commands, receives
INTERACTION_CREATE / MESSAGE_CREATE dispatches and answers through the REST API. Everything the bot
sends is recorded (`SimServer.calls`) and every interaction keeps its response timing
(`InteractionState`). The driver (driver.py) plays scenarios on top of this.

Wire facts this server honours (checked against discord.py 2.0.1 and 2.7.1):
- every response is `Content-Type: application/json` exactly (discord.py compares the header verbatim);
- every response carries `Via` and `X-RateLimit-*` headers (a 429 without `Via` is taken for a
  Cloudflare ban and not retried);
- gateway frames are plain JSON text whatever `compress=` the bot asks for (discord.py only
  decompresses binary frames);
- READY carries `resume_gateway_url`; interactions carry `attachment_size_limit` (2.6+), both
  `channel_id` (2.0) and `channel` (2.7);
- interaction callbacks with `?with_response=1` (2.5+) get 200 + an InteractionCallback body naming
  `response_message_id`; without it, 204;
- messages created by an interaction response carry `interaction` / `interaction_metadata`, and
  component interactions carry that exact message, so the view lookup works by message id (2.4+) and
  by interaction id (2.0–2.3).

Modules: ``wire`` (constants, recorded calls, interaction state, JSON responses), ``payloads``
(snowflakes, the JSON objects handed out, message validation), ``rest_api`` (the REST handlers);
here: the server itself (state, lifecycle, middleware, route table, gateway, the driver's API).
"""
from __future__ import annotations

import asyncio
import itertools
import json
import logging
import random
import secrets
import time
from typing import Any, Dict, List, Optional, Tuple

from aiohttp import WSMsgType, web

from .scenario import AttachmentSpec, Scenario

__all__ = ["SimServer", "RecordedCall", "InteractionState", "MessageWait", "INTERACTION_DEADLINE_S"]

log = logging.getLogger("autoperf.discord_sim")
from .payloads import PayloadsMixin
from .rest_api import RestApiMixin
from .wire import (  # noqa: F401  (RecordedCall ... INTERACTION_DEADLINE_S: public names, re-exported)
    _BODY_KEY, _CALL_KEY, ALL_PERMISSIONS, ATTACHMENT_SIZE_LIMIT, INTENT_DIRECT_MESSAGES, INTENT_GUILD_MESSAGES,
    INTENT_MESSAGE_CONTENT, INTERACTION_DEADLINE_S, OP_DISPATCH, OP_HEARTBEAT, OP_HEARTBEAT_ACK, OP_HELLO,
    OP_IDENTIFY, OP_INVALID_SESSION, OP_REQUEST_MEMBERS, OP_RESUME, InteractionState, MessageWait,
    RecordedCall, _ApiError, _dumps, _json_response,
)


class SimServer(PayloadsMixin, RestApiMixin):
    """The loopback Discord. `await start()`, then point discord.py at `base_url`."""

    def __init__(self, scenario: Scenario):
        self.scenario = scenario
        self.loop: Optional[asyncio.AbstractEventLoop] = None
        self.calls: List[RecordedCall] = []
        self.max_calls = 100_000          # recorded REST calls kept (then counted in calls_dropped)
        self.calls_dropped = 0
        self.max_messages = 20_000        # messages / attachments kept for edits and component clicks
        self.interactions: Dict[int, InteractionState] = {}
        self._by_token: Dict[str, InteractionState] = {}
        self.message_waits: List[MessageWait] = []
        self.messages: Dict[int, Dict[str, Any]] = {}
        self.attachments: Dict[int, Tuple[str, bytes, str]] = {}   # id -> (filename, bytes, content type)
        self.global_commands: List[Dict[str, Any]] = []
        self.guild_commands: Dict[int, List[Dict[str, Any]]] = {}
        self.commands_synced = asyncio.Event()
        self.identified = asyncio.Event()
        self.ready_sent = asyncio.Event()
        self.disconnected = asyncio.Event()
        self.t_ready: Optional[float] = None
        self.identify: Optional[Dict[str, Any]] = None     # identify payload without the token
        self.logged_in = False
        self.gateway_connections = 0
        self.heartbeats = 0
        self.internal_errors: List[str] = []
        self.unhandled: List[str] = []
        self.dm_channels: Dict[int, int] = {}             # channel id -> user id
        self._ws: Optional[web.WebSocketResponse] = None
        self._ws_lock = asyncio.Lock()
        self._seq = 0
        self._route_counts: Dict[str, int] = {}
        self._buckets: Dict[str, Tuple[float, int]] = {}
        self._snow = itertools.count(1)
        self._runner: Optional[web.AppRunner] = None
        self._site: Optional[web.TCPSite] = None
        self.host = "127.0.0.1"
        self.port = 0
        self._session_id = secrets.token_hex(16)
        self._closing = False
        # model
        self.bot_user = self._user_payload(scenario.bot_id, scenario.bot_name, bot=True)
        self.users = {u.id: self._user_payload(u.id, u.name) for u in scenario.users}
        self.guilds = {g.id: g for g in scenario.guilds}
        self.channels: Dict[int, Tuple[int, str]] = {}   # channel id -> (guild id, name)
        for g in scenario.guilds:
            for c in g.channels:
                self.channels[c.id] = (g.id, c.name)
        self.rng = random.Random(scenario.seed)

    # ------------------------------------------------------------------ lifecycle
    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def api_base(self) -> str:
        return f"{self.base_url}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"ws://{self.host}:{self.port}/gateway"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.loop = asyncio.get_running_loop()
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024 * 1024)
        self._add_routes(app)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, host, port)
        await self._site.start()
        self.host = host
        self.port = self._site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def close_gateway(self, code: int = 1000) -> None:
        ws = self._ws
        if ws is not None and not ws.closed:
            try:
                await ws.close(code=code, message=b"simulation finished")
            except Exception:  # pragma: no cover
                pass

    async def close(self) -> None:
        self._closing = True
        await self.close_gateway()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    # ------------------------------------------------------------------ middleware: record, rate limit, 429s
    @web.middleware
    async def _middleware(self, request: web.Request, handler):
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
        call = RecordedCall(t=self.now(), method=request.method, route=route, path=rel,
                            query=dict(request.query))
        if len(self.calls) < self.max_calls:
            self.calls.append(call)
        else:
            self.calls_dropped += 1
        count = self._route_counts[route] = self._route_counts.get(route, 0) + 1
        info = request.match_info
        major = info.get("channel_id") or info.get("guild_id") or info.get("token") or ""
        bucket = f"{route}:{major}"
        headers = self._ratelimit_headers(route, bucket)
        try:
            for rule in self.scenario.force_429:
                if rule.route == route and count in rule.nth:
                    await self._read_body(request, call)
                    call.status = 429
                    hdrs = dict(headers)
                    hdrs.update({"Retry-After": str(max(1, int(rule.retry_after + 0.999))),
                                 "X-RateLimit-Remaining": "0", "X-RateLimit-Scope": "user"})
                    if rule.is_global:
                        hdrs["X-RateLimit-Global"] = "true"
                    return _json_response({"message": "You are being rate limited.", "retry_after": rule.retry_after,
                                           "global": rule.is_global, "code": 0}, 429, hdrs)
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

    async def _read_body(self, request: web.Request, call: Optional[RecordedCall] = None) -> Tuple[Any, List[Dict[str, Any]]]:
        if _BODY_KEY in request:
            return request[_BODY_KEY]
        call = call or request.get(_CALL_KEY)
        body: Any = None
        files: List[Dict[str, Any]] = []
        if request.body_exists:
            ctype = request.content_type or ""
            if ctype.startswith("multipart/"):
                reader = await request.multipart()
                while True:
                    part = await reader.next()
                    if part is None:
                        break
                    data = await part.read()
                    if part.name == "payload_json":
                        try:
                            body = json.loads(data.decode("utf-8"))
                        except ValueError:
                            raise _ApiError(400, 50109, "The request body contains invalid JSON.")
                    else:
                        files.append({"name": part.name, "filename": part.filename or part.name, "size": len(data),
                                      "content_type": part.headers.get("Content-Type"), "data": bytes(data)})
            else:
                raw = await request.read()
                if raw:
                    try:
                        body = json.loads(raw.decode("utf-8"))
                    except ValueError:
                        raise _ApiError(400, 50109, "The request body contains invalid JSON.")
        if call is not None:
            call.json = body
            call.files = [{"filename": f["filename"], "size": f["size"]} for f in files]
        request[_BODY_KEY] = (body, files)
        return body, files

    # ------------------------------------------------------------------ routes
    def _add_routes(self, app: web.Application) -> None:
        api = [
            ("GET", "/users/@me", self.h_me),
            ("GET", "/users/{user_id}", self.h_user),
            ("POST", "/users/@me/channels", self.h_create_dm),
            ("GET", "/oauth2/applications/@me", self.h_app_info),
            ("GET", "/applications/@me", self.h_app_info),
            ("GET", "/gateway", self.h_gateway),
            ("GET", "/gateway/bot", self.h_gateway_bot),
            ("GET", "/applications/{app_id}/commands", self.h_get_commands),
            ("PUT", "/applications/{app_id}/commands", self.h_put_commands),
            ("POST", "/applications/{app_id}/commands", self.h_post_command),
            ("GET", "/applications/{app_id}/commands/{command_id}", self.h_get_command),
            ("PATCH", "/applications/{app_id}/commands/{command_id}", self.h_patch_command),
            ("DELETE", "/applications/{app_id}/commands/{command_id}", self.h_delete_command),
            ("GET", "/applications/{app_id}/guilds/{guild_id}/commands", self.h_get_commands),
            ("PUT", "/applications/{app_id}/guilds/{guild_id}/commands", self.h_put_commands),
            ("POST", "/applications/{app_id}/guilds/{guild_id}/commands", self.h_post_command),
            ("GET", "/applications/{app_id}/guilds/{guild_id}/commands/permissions", self.h_empty_list),
            ("GET", "/applications/{app_id}/guilds/{guild_id}/commands/{command_id}", self.h_get_command),
            ("PATCH", "/applications/{app_id}/guilds/{guild_id}/commands/{command_id}", self.h_patch_command),
            ("DELETE", "/applications/{app_id}/guilds/{guild_id}/commands/{command_id}", self.h_delete_command),
            ("GET", "/applications/{app_id}/emojis", self.h_items),
            ("GET", "/applications/{app_id}/entitlements", self.h_empty_list),
            ("GET", "/applications/{app_id}/skus", self.h_empty_list),
            ("POST", "/interactions/{interaction_id}/{token}/callback", self.h_callback),
            ("POST", "/webhooks/{app_id}/{token}", self.h_followup),
            ("GET", "/webhooks/{app_id}/{token}/messages/@original", self.h_webhook_message),
            ("PATCH", "/webhooks/{app_id}/{token}/messages/@original", self.h_webhook_message),
            ("DELETE", "/webhooks/{app_id}/{token}/messages/@original", self.h_webhook_message),
            ("GET", "/webhooks/{app_id}/{token}/messages/{message_id}", self.h_webhook_message),
            ("PATCH", "/webhooks/{app_id}/{token}/messages/{message_id}", self.h_webhook_message),
            ("DELETE", "/webhooks/{app_id}/{token}/messages/{message_id}", self.h_webhook_message),
            ("GET", "/channels/{channel_id}", self.h_channel),
            ("GET", "/channels/{channel_id}/messages", self.h_empty_list),
            ("POST", "/channels/{channel_id}/messages", self.h_channel_message),
            ("GET", "/channels/{channel_id}/messages/{message_id}", self.h_message),
            ("PATCH", "/channels/{channel_id}/messages/{message_id}", self.h_message),
            ("DELETE", "/channels/{channel_id}/messages/{message_id}", self.h_message),
            ("POST", "/channels/{channel_id}/typing", self.h_no_content),
            ("PUT", "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me", self.h_reaction),
            ("DELETE", "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me", self.h_no_content),
            ("GET", "/guilds/{guild_id}", self.h_guild),
            ("GET", "/guilds/{guild_id}/channels", self.h_guild_channels),
            ("GET", "/guilds/{guild_id}/roles", self.h_guild_roles),
            ("GET", "/guilds/{guild_id}/members/{user_id}", self.h_guild_member),
            ("PATCH", "/guilds/{guild_id}/members/{user_id}", self.h_guild_member),
            ("GET", "/guilds/{guild_id}/members", self.h_guild_members),
            ("PUT", "/guilds/{guild_id}/members/{user_id}/roles/{role_id}", self.h_guild_no_content),
            ("DELETE", "/guilds/{guild_id}/members/{user_id}/roles/{role_id}", self.h_guild_no_content),
            ("DELETE", "/guilds/{guild_id}/members/{user_id}", self.h_guild_no_content),
            ("PUT", "/guilds/{guild_id}/bans/{user_id}", self.h_guild_no_content),
            ("POST", "/guilds/{guild_id}/roles", self.h_create_role),
            ("GET", "/users/@me/guilds", self.h_my_guilds),
            ("PATCH", "/users/@me", self.h_me),
            ("POST", "/channels/{channel_id}/messages/bulk-delete", self.h_no_content),
        ]
        for version in ("v10", "v9"):
            for method, path, handler in api:
                app.router.add_route(method, f"/api/{version}{path}", handler)
            app.router.add_route("*", f"/api/{version}/{{tail:.*}}", self.h_not_found)
        app.router.add_get("/gateway", self.h_ws)
        app.router.add_get("/gateway/", self.h_ws)
        app.router.add_get("/attachments/{channel_id}/{attachment_id}/{filename}", self.h_attachment)
        app.router.add_get("/cdn/{tail:.*}", self.h_cdn)

    # ------------------------------------------------------------------ gateway
    async def h_ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True, max_msg_size=0)
        await ws.prepare(request)
        self.gateway_connections += 1
        self.disconnected.clear()
        self._ws = ws
        self._seq = 0
        try:
            await self._send(ws, {"op": OP_HELLO, "d": {"heartbeat_interval": self.scenario.heartbeat_interval_ms,
                                                      "_trace": ["autoperf-discord-sim"]}, "s": None, "t": None})
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    payload = json.loads(msg.data)
                elif msg.type == WSMsgType.BINARY:
                    payload = json.loads(msg.data.decode("utf-8"))
                else:
                    break
                await self._on_gateway(ws, payload)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        except Exception as exc:  # pragma: no cover - a sim bug
            log.exception("discord_sim: gateway error")
            self.internal_errors.append(f"gateway: {type(exc).__name__}: {exc}")
        finally:
            if self._ws is ws:
                self._ws = None
                self.disconnected.set()
        return ws

    async def _send(self, ws: web.WebSocketResponse, payload: Dict[str, Any]) -> None:
        async with self._ws_lock:
            if not ws.closed:
                await ws.send_str(_dumps(payload).decode("utf-8"))

    async def _on_gateway(self, ws: web.WebSocketResponse, payload: Dict[str, Any]) -> None:
        op = payload.get("op")
        d = payload.get("d")
        if op == OP_HEARTBEAT:
            self.heartbeats += 1
            await self._send(ws, {"op": OP_HEARTBEAT_ACK, "d": None, "s": None, "t": None})
        elif op == OP_IDENTIFY:
            ident = dict(d or {})
            ident.pop("token", None)
            self.identify = ident
            self.identified.set()
            await self._send_ready(ws)
        elif op == OP_RESUME:
            # sessions are not resumable here: make the bot identify again
            await self._send(ws, {"op": OP_INVALID_SESSION, "d": False, "s": None, "t": None})
        elif op == OP_REQUEST_MEMBERS:
            gid = int((d or {}).get("guild_id", 0))
            if gid in self.guilds:
                members = [self.member_payload(uid, gid)
                           for uid in [self.scenario.bot_id] + [u.id for u in self.scenario.users]]
                chunk = {"guild_id": str(gid), "members": members, "chunk_index": 0, "chunk_count": 1,
                         "not_found": [], "presences": []}
                if (d or {}).get("nonce") is not None:
                    chunk["nonce"] = d["nonce"]
                await self.dispatch("GUILD_MEMBERS_CHUNK", chunk, ws=ws)

    async def _send_ready(self, ws: web.WebSocketResponse) -> None:
        self._seq = 0
        ready = {
            "v": 10, "user": self.bot_user, "guilds": [{"id": str(g), "unavailable": True} for g in self.guilds],
            "session_id": self._session_id, "resume_gateway_url": self.gateway_url,
            "session_type": "normal", "shard": [0, 1], "private_channels": [], "relationships": [],
            "presences": [], "guild_join_requests": [], "geo_ordered_rtc_regions": [],
            "application": {"id": str(self.scenario.bot_id), "flags": 0}, "user_settings": {},
            "_trace": ["autoperf-discord-sim"],
        }
        await self.dispatch("READY", ready, ws=ws)
        for gid in self.guilds:
            await self.dispatch("GUILD_CREATE", self.guild_payload(gid), ws=ws)
        self.t_ready = self.now()
        self.ready_sent.set()

    @property
    def connected(self) -> bool:
        return self._ws is not None and not self._ws.closed

    async def dispatch(self, event: str, data: Dict[str, Any], ws: Optional[web.WebSocketResponse] = None) -> bool:
        ws = ws or self._ws
        if ws is None or ws.closed:
            return False
        self._seq += 1
        await self._send(ws, {"op": OP_DISPATCH, "t": event, "s": self._seq, "d": data})
        return True

    # ------------------------------------------------------------------ what the driver sends
    def new_interaction(self, itype: int, data: Dict[str, Any], *, user_id: int, channel_id: int, step: str,
                        name: str = "", message: Optional[Dict[str, Any]] = None) -> Tuple[InteractionState, Dict[str, Any]]:
        iid = self.snowflake()
        token = "sim." + secrets.token_urlsafe(24)
        guild_id = self.channels.get(channel_id, (None, ""))[0]
        st = InteractionState(id=iid, token=token, type=itype, step=step, user_id=user_id, channel_id=channel_id,
                              guild_id=guild_id, t_dispatch=0.0, name=name,
                              source_message_id=int(message["id"]) if message else None)
        payload: Dict[str, Any] = {
            "id": str(iid), "application_id": str(self.scenario.bot_id), "type": itype, "data": data,
            "channel_id": str(channel_id), "channel": self.channel_payload(channel_id), "token": token, "version": 1,
            "locale": "en-US", "app_permissions": ALL_PERMISSIONS, "entitlements": [], "entitlement_sku_ids": [],
            "authorizing_integration_owners": {"0": str(guild_id)} if guild_id else {"1": str(user_id)},
            "context": 0 if guild_id else 1, "attachment_size_limit": ATTACHMENT_SIZE_LIMIT,
        }
        if guild_id is not None:
            payload["guild_id"] = str(guild_id)
            payload["guild_locale"] = "en-US"
            payload["guild"] = {"id": str(guild_id), "locale": "en-US", "features": []}
            payload["member"] = self.member_payload(user_id, guild_id, permissions=True)
        else:
            payload["user"] = self.users[user_id]
        if message is not None:
            payload["message"] = message
        self.interactions[iid] = st
        self._by_token[token] = st
        return st, payload

    async def send_interaction(self, st: InteractionState, payload: Dict[str, Any]) -> bool:
        st.t_dispatch = self.now()
        return await self.dispatch("INTERACTION_CREATE", payload)

    def user_message(self, user_id: int, channel_id: int, content: str,
                     attachments: List[AttachmentSpec]) -> Dict[str, Any]:
        content = content.replace("{bot}", f"<@{self.scenario.bot_id}>")
        msg = self._message(channel_id, self.users[user_id], {"content": content})
        msg["attachments"] = [self.attachment_payload(channel_id, a) for a in attachments]
        if "guild_id" in msg:
            msg["member"] = self.member_payload(user_id, int(msg["guild_id"]), with_user=False)
        mention = f"<@{self.scenario.bot_id}>"
        if mention in content or f"<@!{self.scenario.bot_id}>" in content:
            msg["mentions"] = [self.bot_user]
        return msg

    def intents(self) -> int:
        try:
            return int((self.identify or {}).get("intents", 0))
        except (TypeError, ValueError):
            return 0

    async def send_user_message(self, msg: Dict[str, Any], step: str) -> Tuple[Optional[MessageWait], str]:
        """Dispatch MESSAGE_CREATE as Discord would for the bot's intents. Returns (wait, note)."""
        intents = self.intents()
        note = ""
        is_dm = "guild_id" not in msg
        needed = INTENT_DIRECT_MESSAGES if is_dm else INTENT_GUILD_MESSAGES
        if not intents & needed:
            return None, "bot lacks the GUILD_MESSAGES/DIRECT_MESSAGES intent: Discord would not send it messages"
        payload = dict(msg)
        mentioned = any(u.get("id") == str(self.scenario.bot_id) for u in msg.get("mentions", []))
        if not intents & INTENT_MESSAGE_CONTENT and not is_dm and not mentioned:
            payload.update(content="", attachments=[], embeds=[], components=[])
            note = "bot lacks the MESSAGE_CONTENT intent: content and attachments blanked as Discord does"
        wait = MessageWait(message_id=int(msg["id"]), channel_id=int(msg["channel_id"]), step=step, t_dispatch=self.now())
        self.message_waits.append(wait)
        ok = await self.dispatch("MESSAGE_CREATE", payload)
        return (wait if ok else None), note or ("" if ok else "gateway not connected")

    def calls_to(self, route: str) -> List[RecordedCall]:
        """Recorded calls whose route is `route` ("POST /channels/{channel_id}/messages")."""
        route = " ".join(route.split())
        return [c for c in self.calls if c.route == route]
