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
"""
from __future__ import annotations

import asyncio
import itertools
import json
import logging
import random
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Dict, List, Optional, Tuple

from aiohttp import WSMsgType, web

from .scenario import AttachmentSpec, Scenario

__all__ = ["SimServer", "RecordedCall", "InteractionState", "MessageWait", "INTERACTION_DEADLINE_S"]

log = logging.getLogger("autoperf.discord_sim")

DISCORD_EPOCH_MS = 1420070400000
INTERACTION_DEADLINE_S = 3.0          # Discord: the first callback must arrive within 3 s
ATTACHMENT_SIZE_LIMIT = 25 * 1024 * 1024
ALL_PERMISSIONS = str((1 << 47) - 1)

# gateway opcodes
OP_DISPATCH, OP_HEARTBEAT, OP_IDENTIFY, OP_PRESENCE, OP_VOICE, OP_RESUME, OP_RECONNECT = 0, 1, 2, 3, 4, 6, 7
OP_REQUEST_MEMBERS, OP_INVALID_SESSION, OP_HELLO, OP_HEARTBEAT_ACK = 8, 9, 10, 11

INTENT_GUILD_MESSAGES = 1 << 9
INTENT_DIRECT_MESSAGES = 1 << 12
INTENT_MESSAGE_CONTENT = 1 << 15

# interaction callback types
CB_PONG, CB_MESSAGE, CB_DEFERRED_MESSAGE, CB_DEFERRED_UPDATE, CB_UPDATE, CB_AUTOCOMPLETE, CB_MODAL = 1, 4, 5, 6, 7, 8, 9
CALLBACK_TYPES = {1, 4, 5, 6, 7, 8, 9, 10, 12}
FINAL_CALLBACKS = {CB_MESSAGE, CB_UPDATE, CB_AUTOCOMPLETE, CB_MODAL, CB_DEFERRED_UPDATE, 10, 12}


def _iso(ts: Optional[float] = None) -> str:
    dt = datetime.fromtimestamp(ts if ts is not None else time.time(), timezone.utc)
    return dt.isoformat(timespec="milliseconds")


def _dumps(data: Any) -> bytes:
    try:
        import orjson

        return orjson.dumps(data)
    except ImportError:  # pragma: no cover - orjson is a dependency
        return json.dumps(data, separators=(",", ":")).encode()


@dataclass
class RecordedCall:
    """One REST request the bot made."""
    t: float                       # loop.time() when it arrived
    method: str
    route: str                     # "POST /channels/{channel_id}/messages" (template, no /api/vN prefix)
    path: str                      # the actual path, no /api/vN prefix
    status: int = 0
    json: Any = None               # parsed JSON body (payload_json for multipart)
    files: List[Dict[str, Any]] = field(default_factory=list)   # [{filename, size}]
    query: Dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.method} {self.route.split(' ', 1)[1]}" if " " in self.route else self.route

    def to_dict(self) -> Dict[str, Any]:
        return {"t": self.t, "method": self.method, "route": self.route, "path": self.path, "status": self.status,
                "json": self.json, "files": self.files, "query": self.query}


@dataclass
class InteractionState:
    """Timing and outcome of one interaction the sim dispatched."""
    id: int
    token: str
    type: int                      # 2 command, 3 component, 4 autocomplete, 5 modal submit
    step: str
    user_id: int
    channel_id: int
    guild_id: Optional[int]
    t_dispatch: float
    source_message_id: Optional[int] = None      # component/modal: the message the user clicked on
    name: str = ""
    t_first: Optional[float] = None
    t_late: Optional[float] = None               # a callback that came after the 3 s deadline (rejected)
    first_type: Optional[int] = None
    t_final: Optional[float] = None
    original_id: Optional[int] = None            # message of the interaction response
    original_filled: bool = False
    message_ids: List[int] = field(default_factory=list)   # every message this interaction produced/edited
    view_message_id: Optional[int] = None        # last message with components
    modal: Optional[Dict[str, Any]] = None       # callback type 9 data
    choices: Optional[List[Dict[str, Any]]] = None
    errors: List[str] = field(default_factory=list)
    responses: int = 0
    first_event: asyncio.Event = field(default_factory=asyncio.Event)
    final_event: asyncio.Event = field(default_factory=asyncio.Event)

    def first_ms(self) -> Optional[float]:
        return None if self.t_first is None else (self.t_first - self.t_dispatch) * 1000.0

    def final_ms(self) -> Optional[float]:
        return None if self.t_final is None else (self.t_final - self.t_dispatch) * 1000.0


@dataclass
class MessageWait:
    """A MESSAGE_CREATE the sim sent and the bot's replies to it."""
    message_id: int
    channel_id: int
    step: str
    t_dispatch: float
    t_first: Optional[float] = None
    t_final: Optional[float] = None
    replies: int = 0
    errors: List[str] = field(default_factory=list)
    first_event: asyncio.Event = field(default_factory=asyncio.Event)


class _ApiError(Exception):
    def __init__(self, status: int, code: int, message: str, errors: Optional[dict] = None):
        super().__init__(message)
        self.status, self.code, self.message, self.errors = status, code, message, errors


def _json_response(data: Any, status: int = 200, headers: Optional[Dict[str, str]] = None) -> web.Response:
    h = {"Content-Type": "application/json"}
    if headers:
        h.update(headers)
    return web.Response(body=_dumps(data), status=status, headers=h)


_RequestKey = getattr(web, "RequestKey", None)
_CALL_KEY: Any = _RequestKey("autoperf_sim_call", object) if _RequestKey else "autoperf_sim_call"
_BODY_KEY: Any = _RequestKey("autoperf_sim_body", object) if _RequestKey else "autoperf_sim_body"


def _png_1x1() -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 6, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00\x00\x00\x00\x00"))
            + chunk(b"IEND", b""))


_PNG_1X1 = _png_1x1()


def _no_content() -> web.Response:
    # no Content-Type: discord.py 2.0 parses any "application/json" body, even an empty one
    return web.Response(status=204)


class SimServer:
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

    # ------------------------------------------------------------------ ids and payloads
    def snowflake(self) -> int:
        ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
        return (ms << 22) | (next(self._snow) & 0x3FFFFF)

    @staticmethod
    def _user_payload(uid: int, name: str, bot: bool = False) -> Dict[str, Any]:
        return {"id": str(uid), "username": name, "discriminator": "0", "global_name": name, "avatar": None,
                "bot": bot, "public_flags": 0, "flags": 0, "banner": None, "accent_color": None,
                "avatar_decoration_data": None, "system": False, "mfa_enabled": bot, "verified": True}

    def member_payload(self, uid: int, guild_id: int, *, with_user: bool = True, permissions: bool = False) -> Dict[str, Any]:
        roles = [str(guild_id + 1)] if uid == self.scenario.bot_id else []
        m: Dict[str, Any] = {"roles": roles, "joined_at": _iso(time.time() - 86400), "deaf": False, "mute": False,
                             "nick": None, "avatar": None, "flags": 0, "pending": False, "premium_since": None,
                             "communication_disabled_until": None}
        if with_user:
            m["user"] = self.bot_user if uid == self.scenario.bot_id else self.users[uid]
        if permissions:
            m["permissions"] = ALL_PERMISSIONS
        return m

    def channel_payload(self, channel_id: int) -> Dict[str, Any]:
        if channel_id in self.dm_channels:
            return {"id": str(channel_id), "type": 1, "last_message_id": None,
                    "recipients": [self.users.get(self.dm_channels[channel_id], self.bot_user)]}
        guild_id, name = self.channels[channel_id]
        pos = [c.id for c in self.guilds[guild_id].channels].index(channel_id)
        return {"id": str(channel_id), "type": 0, "guild_id": str(guild_id), "name": name, "position": pos,
                "permission_overwrites": [], "nsfw": False, "topic": None, "last_message_id": None,
                "parent_id": None, "rate_limit_per_user": 0, "flags": 0}

    def roles_payload(self, guild_id: int) -> List[Dict[str, Any]]:
        base = {"color": 0, "hoist": False, "managed": False, "mentionable": False, "flags": 0, "icon": None,
                "unicode_emoji": None}
        return [dict(base, id=str(guild_id), name="@everyone", position=0, permissions="1071698660929"),
                dict(base, id=str(guild_id + 1), name=self.scenario.bot_name, position=1, permissions="8",
                     managed=True, tags={"bot_id": str(self.scenario.bot_id)})]

    def guild_payload(self, guild_id: int) -> Dict[str, Any]:
        g = self.guilds[guild_id]
        member_ids = [self.scenario.bot_id] + [u.id for u in self.scenario.users]
        return {
            "id": str(g.id), "name": g.name, "icon": None, "splash": None, "discovery_splash": None,
            "owner_id": str(self.scenario.users[0].id), "afk_channel_id": None, "afk_timeout": 300,
            "verification_level": 0, "default_message_notifications": 0, "explicit_content_filter": 0,
            "roles": self.roles_payload(g.id), "emojis": [], "stickers": [], "features": [], "mfa_level": 0,
            "system_channel_id": None, "system_channel_flags": 0, "rules_channel_id": None, "max_members": 500000,
            "vanity_url_code": None, "description": None, "banner": None, "premium_tier": 0,
            "premium_subscription_count": 0, "preferred_locale": "en-US", "public_updates_channel_id": None,
            "nsfw_level": 0, "premium_progress_bar_enabled": False, "joined_at": _iso(time.time() - 86400),
            "large": False, "unavailable": False, "member_count": len(member_ids), "voice_states": [],
            "members": [self.member_payload(uid, g.id) for uid in member_ids],
            "channels": [self.channel_payload(c.id) for c in g.channels], "threads": [], "presences": [],
            "stage_instances": [], "guild_scheduled_events": [], "application_id": None, "lazy": True,
            "soundboard_sounds": [],
        }

    def app_info_payload(self) -> Dict[str, Any]:
        owner = self.users[self.scenario.users[0].id]
        return {"id": str(self.scenario.bot_id), "name": self.scenario.bot_name, "icon": None, "description": "",
                "summary": "", "type": None, "hook": True, "bot_public": True, "bot_require_code_grant": False,
                "verify_key": "00" * 32, "owner": owner, "team": None, "flags": 0, "rpc_origins": [],
                "bot": self.bot_user, "tags": [], "redirect_uris": [], "interactions_endpoint_url": None,
                "approximate_guild_count": len(self.guilds), "integration_types_config": {"0": {}}}

    def attachment_payload(self, channel_id: int, spec: AttachmentSpec, data: Optional[bytes] = None) -> Dict[str, Any]:
        att_id = self.snowflake()
        body = data if data is not None else spec.data(self.scenario.seed)
        ctype = spec.content_type or _guess_type(spec.filename)
        self.attachments[att_id] = (spec.filename, body, ctype)
        if len(self.attachments) > self.max_messages:
            del self.attachments[next(iter(self.attachments))]
        url = f"{self.base_url}/attachments/{channel_id}/{att_id}/{spec.filename}"
        return {"id": str(att_id), "filename": spec.filename, "size": len(body), "url": url, "proxy_url": url,
                "content_type": ctype, "ephemeral": False}

    def _message(self, channel_id: int, author: Dict[str, Any], body: Dict[str, Any], *, mid: Optional[int] = None,
                 mtype: int = 0, interaction: Optional[InteractionState] = None,
                 files: Optional[List[Dict[str, Any]]] = None) -> Dict[str, Any]:
        mid = mid or self.snowflake()
        guild_id = self.channels.get(channel_id, (None, ""))[0]
        msg: Dict[str, Any] = {
            "id": str(mid), "channel_id": str(channel_id), "author": author, "content": "",
            "timestamp": _iso(), "edited_timestamp": None, "tts": False, "mention_everyone": False,
            "mentions": [], "mention_roles": [], "attachments": [], "embeds": [], "pinned": False,
            "type": mtype, "flags": 0, "components": [],
        }
        if guild_id is not None:
            msg["guild_id"] = str(guild_id)
        if interaction is not None:
            msg["webhook_id"] = str(self.scenario.bot_id)
            msg["application_id"] = str(self.scenario.bot_id)
            user = self.users.get(interaction.user_id, self.bot_user)
            msg["interaction"] = {"id": str(interaction.id), "type": interaction.type, "name": interaction.name,
                                  "user": user}
            msg["interaction_metadata"] = {"id": str(interaction.id), "type": interaction.type, "user": user,
                                           "authorizing_integration_owners": {"0": str(guild_id or 0)}}
        self._apply_edit(msg, body, files)
        self.messages[mid] = msg
        if len(self.messages) > self.max_messages:          # bounded: forget the oldest
            del self.messages[next(iter(self.messages))]
        return msg

    def _apply_edit(self, msg: Dict[str, Any], body: Dict[str, Any], files: Optional[List[Dict[str, Any]]]) -> None:
        for key in ("content", "embeds", "components", "tts", "sticker_ids", "poll"):
            if key in body and body[key] is not None:
                msg[key] = body[key]
        if "flags" in body and body["flags"] is not None:
            msg["flags"] = int(body["flags"])
        if files or "attachments" in body:
            keep = []
            existing = {a["id"]: a for a in msg.get("attachments", [])}
            for a in body.get("attachments") or []:
                if str(a.get("id")) in existing:
                    keep.append(existing[str(a["id"])])
            for f in files or []:
                spec = AttachmentSpec(filename=f["filename"], size=f["size"], content_type=f.get("content_type"))
                keep.append(self.attachment_payload(int(msg["channel_id"]), spec, f.get("data", b"")))
            msg["attachments"] = keep

    # ------------------------------------------------------------------ validation
    @staticmethod
    def _validate_message(body: Any, files: List[Dict[str, Any]], *, allow_empty: bool = False) -> None:
        if not isinstance(body, dict):
            raise _ApiError(400, 50109, "The request body contains invalid JSON.")
        errors: Dict[str, Any] = {}
        content = body.get("content")
        if content is not None and not isinstance(content, str):
            errors["content"] = "must be a string"
        elif content and len(content) > 2000:
            errors["content"] = "Must be 2000 or fewer in length."
        embeds = body.get("embeds") or []
        if len(embeds) > 10:
            errors["embeds"] = "Must be 10 or fewer in length."
        total = 0
        for e in embeds:
            if isinstance(e, dict):
                total += len(e.get("title") or "") + len(e.get("description") or "")
                if len(e.get("description") or "") > 4096:
                    errors["embeds"] = "embed description must be 4096 or fewer in length."
        if total > 6000:
            errors["embeds"] = "Embed size exceeds maximum size of 6000"
        comps = body.get("components") or []
        if not (int(body.get("flags") or 0) & (1 << 15)) and len(comps) > 5:
            errors["components"] = "Must be 5 or fewer in length."
        if errors:
            raise _ApiError(400, 50035, "Invalid Form Body", errors)
        if not allow_empty and not (content or embeds or comps or files or body.get("sticker_ids")
                                    or body.get("poll")):
            raise _ApiError(400, 50006, "Cannot send an empty message")

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

    # --- simple
    async def h_not_found(self, request: web.Request) -> web.Response:
        raise web.HTTPNotFound()

    async def h_me(self, request: web.Request) -> web.Response:
        self.logged_in = True
        return _json_response(self.bot_user)

    async def h_user(self, request: web.Request) -> web.Response:
        uid = int(request.match_info["user_id"])
        if uid == self.scenario.bot_id:
            return _json_response(self.bot_user)
        if uid not in self.users:
            raise _ApiError(404, 10013, "Unknown User")
        return _json_response(self.users[uid])

    async def h_app_info(self, request: web.Request) -> web.Response:
        return _json_response(self.app_info_payload())

    async def h_gateway(self, request: web.Request) -> web.Response:
        return _json_response({"url": self.gateway_url})

    async def h_gateway_bot(self, request: web.Request) -> web.Response:
        return _json_response({"url": self.gateway_url, "shards": 1,
                               "session_start_limit": {"total": 1000, "remaining": 999, "reset_after": 0,
                                                       "max_concurrency": 1}})

    async def h_empty_list(self, request: web.Request) -> web.Response:
        return _json_response([])

    async def h_items(self, request: web.Request) -> web.Response:
        return _json_response({"items": []})

    async def h_no_content(self, request: web.Request) -> web.Response:
        return _no_content()

    async def h_channel(self, request: web.Request) -> web.Response:
        return _json_response(self.channel_payload(self._channel_id(request)))

    async def h_guild(self, request: web.Request) -> web.Response:
        return _json_response(self.guild_payload(self._guild_id(request)))

    async def h_guild_channels(self, request: web.Request) -> web.Response:
        g = self.guilds[self._guild_id(request)]
        return _json_response([self.channel_payload(c.id) for c in g.channels])

    async def h_guild_roles(self, request: web.Request) -> web.Response:
        return _json_response(self.roles_payload(self._guild_id(request)))

    async def h_guild_member(self, request: web.Request) -> web.Response:
        gid = self._guild_id(request)
        if request.method == "PATCH":
            await self._read_body(request)
        uid = int(request.match_info["user_id"])
        if uid != self.scenario.bot_id and uid not in self.users:
            raise _ApiError(404, 10007, "Unknown Member")
        return _json_response(self.member_payload(uid, gid))

    async def h_guild_members(self, request: web.Request) -> web.Response:
        gid = self._guild_id(request)
        uids = [self.scenario.bot_id] + [u.id for u in self.scenario.users]
        try:
            limit = max(1, min(1000, int(request.query.get("limit", "1"))))
        except ValueError:
            limit = 1
        after = int(request.query.get("after", "0") or 0)
        uids = sorted(u for u in uids if u > after)[:limit]
        return _json_response([self.member_payload(uid, gid) for uid in uids])

    async def h_guild_no_content(self, request: web.Request) -> web.Response:
        self._guild_id(request)
        await self._read_body(request)
        return _no_content()

    async def h_create_role(self, request: web.Request) -> web.Response:
        gid = self._guild_id(request)
        body, _ = await self._read_body(request)
        body = body or {}
        return _json_response({"id": str(self.snowflake()), "name": body.get("name", "new role"),
                               "color": body.get("color", 0), "hoist": bool(body.get("hoist", False)),
                               "position": 1, "permissions": str(body.get("permissions", "0")), "managed": False,
                               "mentionable": bool(body.get("mentionable", False)), "flags": 0, "icon": None,
                               "unicode_emoji": None})

    async def h_my_guilds(self, request: web.Request) -> web.Response:
        return _json_response([{"id": str(g.id), "name": g.name, "icon": None, "owner": False,
                                "permissions": ALL_PERMISSIONS, "features": []} for g in self.guilds.values()])

    async def h_create_dm(self, request: web.Request) -> web.Response:
        body, _ = await self._read_body(request)
        uid = int((body or {}).get("recipient_id", 0))
        if uid not in self.users:
            raise _ApiError(400, 50035, "Invalid Form Body", {"recipient_id": "unknown user"})
        for cid, other in self.dm_channels.items():
            if other == uid:
                return _json_response(self.channel_payload(cid))
        cid = self.snowflake()
        self.dm_channels[cid] = uid
        return _json_response(self.channel_payload(cid))

    async def h_attachment(self, request: web.Request) -> web.Response:
        try:
            filename, data, ctype = self.attachments[int(request.match_info["attachment_id"])]
        except (KeyError, ValueError):
            raise web.HTTPNotFound()
        return web.Response(body=data, headers={"Content-Type": ctype})

    async def h_cdn(self, request: web.Request) -> web.Response:
        return web.Response(body=_PNG_1X1, headers={"Content-Type": "image/png"})

    def _channel_id(self, request: web.Request) -> int:
        try:
            cid = int(request.match_info["channel_id"])
        except ValueError:
            raise _ApiError(404, 10003, "Unknown Channel")
        if cid not in self.channels and cid not in self.dm_channels:
            raise _ApiError(404, 10003, "Unknown Channel")
        return cid

    def _guild_id(self, request: web.Request) -> int:
        try:
            gid = int(request.match_info["guild_id"])
        except ValueError:
            raise _ApiError(404, 10004, "Unknown Guild")
        if gid not in self.guilds:
            raise _ApiError(404, 10004, "Unknown Guild")
        return gid

    # --- application commands
    def _commands_for(self, request: web.Request) -> Tuple[List[Dict[str, Any]], Optional[int]]:
        if "guild_id" in request.match_info:
            gid = self._guild_id(request)
            return self.guild_commands.setdefault(gid, []), gid
        return self.global_commands, None

    def _normalise_command(self, cmd: Dict[str, Any], guild_id: Optional[int], existing: Optional[dict] = None) -> Dict[str, Any]:
        if not isinstance(cmd, dict) or not cmd.get("name"):
            raise _ApiError(400, 50035, "Invalid Form Body", {"name": "required"})
        out = dict(cmd)
        out["id"] = existing["id"] if existing else str(self.snowflake())
        out["application_id"] = str(self.scenario.bot_id)
        out["version"] = str(self.snowflake())
        out.setdefault("type", 1)
        out.setdefault("description", "")
        out.setdefault("options", [])
        out.setdefault("default_member_permissions", None)
        out.setdefault("dm_permission", True)
        out.setdefault("nsfw", False)
        if guild_id is not None:
            out["guild_id"] = str(guild_id)
        if out["type"] == 1 and not out["description"]:
            raise _ApiError(400, 50035, "Invalid Form Body", {"description": "required for slash commands"})
        return out

    async def h_get_commands(self, request: web.Request) -> web.Response:
        cmds, _ = self._commands_for(request)
        return _json_response(cmds)

    async def h_put_commands(self, request: web.Request) -> web.Response:
        body, _ = await self._read_body(request)
        if not isinstance(body, list):
            raise _ApiError(400, 50035, "Invalid Form Body", {"_errors": "expected a list"})
        cmds, gid = self._commands_for(request)
        old = {(c["name"], c.get("type", 1)): c for c in cmds}
        new = [self._normalise_command(c, gid, old.get((c.get("name"), c.get("type", 1)))) for c in body]
        cmds[:] = new
        self.commands_synced.set()
        return _json_response(new)

    async def h_post_command(self, request: web.Request) -> web.Response:
        body, _ = await self._read_body(request)
        cmds, gid = self._commands_for(request)
        for i, c in enumerate(cmds):
            if c["name"] == (body or {}).get("name") and c.get("type", 1) == (body or {}).get("type", 1):
                cmds[i] = self._normalise_command(body, gid, c)
                self.commands_synced.set()
                return _json_response(cmds[i])
        cmd = self._normalise_command(body, gid)
        cmds.append(cmd)
        self.commands_synced.set()
        return _json_response(cmd, 201)

    def _find_command(self, request: web.Request) -> Tuple[List[Dict[str, Any]], int]:
        cmds, _ = self._commands_for(request)
        cid = request.match_info["command_id"]
        for i, c in enumerate(cmds):
            if c["id"] == cid:
                return cmds, i
        raise _ApiError(404, 10063, "Unknown application command")

    async def h_get_command(self, request: web.Request) -> web.Response:
        cmds, i = self._find_command(request)
        return _json_response(cmds[i])

    async def h_patch_command(self, request: web.Request) -> web.Response:
        body, _ = await self._read_body(request)
        cmds, i = self._find_command(request)
        merged = dict(cmds[i])
        merged.update(body or {})
        cmds[i] = merged
        return _json_response(merged)

    async def h_delete_command(self, request: web.Request) -> web.Response:
        cmds, i = self._find_command(request)
        del cmds[i]
        return _no_content()

    def all_commands(self) -> List[Dict[str, Any]]:
        out = list(self.global_commands)
        for cmds in self.guild_commands.values():
            out.extend(cmds)
        return out

    # --- interactions
    def _interaction(self, request: web.Request) -> InteractionState:
        st = self._by_token.get(request.match_info["token"])
        if st is None:
            raise _ApiError(404, 10015, "Unknown Webhook")
        return st

    def _mark_response(self, st: InteractionState, now: float, *, final: bool, message_id: Optional[int] = None) -> None:
        st.responses += 1
        if message_id is not None:
            if message_id not in st.message_ids:
                st.message_ids.append(message_id)
            msg = self.messages.get(message_id)
            if msg is not None and msg.get("components"):
                st.view_message_id = message_id
        if final:
            st.t_final = now
            st.final_event.set()

    async def h_callback(self, request: web.Request) -> web.Response:
        now = self.now()
        body, files = await self._read_body(request)
        st = self._by_token.get(request.match_info["token"])
        if st is None or str(st.id) != request.match_info["interaction_id"]:
            raise _ApiError(404, 10062, "Unknown interaction")
        if st.t_first is not None:
            st.errors.append("callback: interaction already acknowledged (40060)")
            raise _ApiError(400, 40060, "Interaction has already been acknowledged.")
        if now - st.t_dispatch > INTERACTION_DEADLINE_S:
            st.t_late = now
            st.errors.append(f"callback after {now - st.t_dispatch:.2f}s: Unknown interaction (10062)")
            raise _ApiError(404, 10062, "Unknown interaction")
        if not isinstance(body, dict) or body.get("type") not in CALLBACK_TYPES:
            st.errors.append(f"callback: invalid type {body.get('type') if isinstance(body, dict) else body!r}")
            raise _ApiError(400, 50035, "Invalid Form Body", {"type": "Value must be one of (1, 4, 5, 6, 7, 8, 9)."})
        cb_type = body["type"]
        data = body.get("data") or {}
        message: Optional[Dict[str, Any]] = None
        try:
            if cb_type == CB_MESSAGE:
                self._validate_message(data, files)
                message = self._message(st.channel_id, self.bot_user, data, mtype=20 if st.type == 2 else 0,
                                        interaction=st, files=files)
                st.original_id = int(message["id"])
                st.original_filled = True
            elif cb_type == CB_DEFERRED_MESSAGE:
                message = self._message(st.channel_id, self.bot_user, {"flags": data.get("flags", 0)},
                                        mtype=20 if st.type == 2 else 0, interaction=st)
                message["flags"] = int(message.get("flags") or 0) | (1 << 7)   # LOADING
                st.original_id = int(message["id"])
            elif cb_type in (CB_DEFERRED_UPDATE, CB_UPDATE):
                if st.source_message_id is None or st.source_message_id not in self.messages:
                    raise _ApiError(400, 50035, "Invalid Form Body", {"type": "update needs a component message"})
                message = self.messages[st.source_message_id]
                if cb_type == CB_UPDATE:
                    self._validate_message(data, files, allow_empty=True)
                    self._apply_edit(message, data, files)
                    message["edited_timestamp"] = _iso()
                st.original_id = st.source_message_id
                st.original_filled = True
            elif cb_type == CB_AUTOCOMPLETE:
                choices = data.get("choices")
                if not isinstance(choices, list) or len(choices) > 25:
                    raise _ApiError(400, 50035, "Invalid Form Body", {"choices": "Must be 25 or fewer in length."})
                st.choices = choices
            elif cb_type == CB_MODAL:
                if not data.get("custom_id") or not data.get("components"):
                    raise _ApiError(400, 50035, "Invalid Form Body", {"data": "a modal needs custom_id and components"})
                st.modal = data
        except _ApiError as exc:
            st.errors.append(f"callback: {exc.code} {exc.message}")
            raise
        st.t_first = now
        st.first_type = cb_type
        self._mark_response(st, now, final=cb_type in FINAL_CALLBACKS,
                            message_id=int(message["id"]) if message else None)
        st.first_event.set()
        if request.query.get("with_response") not in ("1", "true", "True"):
            return _no_content()
        inter: Dict[str, Any] = {"id": str(st.id), "type": st.type}
        resource: Dict[str, Any] = {"type": cb_type}
        if message is not None:
            inter["response_message_id"] = message["id"]
            inter["response_message_loading"] = cb_type == CB_DEFERRED_MESSAGE
            inter["response_message_ephemeral"] = bool(int(message.get("flags") or 0) & 64)
            resource["message"] = message
        return _json_response({"interaction": inter, "resource": resource})

    async def h_followup(self, request: web.Request) -> web.Response:
        now = self.now()
        st = self._interaction(request)
        body, files = await self._read_body(request)
        if st.t_first is None:
            st.errors.append("followup before the interaction was acknowledged")
            raise _ApiError(404, 10015, "Unknown Webhook")
        try:
            self._validate_message(body, files)
        except _ApiError as exc:
            st.errors.append(f"followup: {exc.code} {exc.message}")
            raise
        if st.first_type == CB_DEFERRED_MESSAGE and not st.original_filled and st.original_id in self.messages:
            # the first followup after a "thinking" defer replaces the loading message
            msg = self.messages[st.original_id]
            msg["flags"] = int(msg.get("flags") or 0) & ~(1 << 7)
            self._apply_edit(msg, body, files)
            st.original_filled = True
        else:
            msg = self._message(st.channel_id, self.bot_user, body, mtype=20 if st.type == 2 else 0,
                                interaction=st, files=files)
            msg["type"] = 0 if st.type != 2 else 20
        self._mark_response(st, now, final=True, message_id=int(msg["id"]))
        if request.query.get("wait") in ("true", "1", "True"):
            return _json_response(msg)
        return _no_content()

    async def h_webhook_message(self, request: web.Request) -> web.Response:
        now = self.now()
        st = self._interaction(request)
        raw_mid = request.match_info.get("message_id", "@original")
        if raw_mid == "@original":
            if st.original_id is None:
                st.errors.append(f"{request.method} @original before a message response")
                raise _ApiError(404, 10008, "Unknown Message")
            mid = st.original_id
        else:
            try:
                mid = int(raw_mid)
            except ValueError:
                raise _ApiError(404, 10008, "Unknown Message")
        msg = self.messages.get(mid)
        if msg is None:
            raise _ApiError(404, 10008, "Unknown Message")
        if request.method == "GET":
            return _json_response(msg)
        if request.method == "DELETE":
            self.messages.pop(mid, None)
            self._mark_response(st, now, final=True)
            return _no_content()
        body, files = await self._read_body(request)
        try:
            self._validate_message(body, files, allow_empty=True)
        except _ApiError as exc:
            st.errors.append(f"edit: {exc.code} {exc.message}")
            raise
        self._apply_edit(msg, body or {}, files)
        msg["edited_timestamp"] = _iso()
        if mid == st.original_id:
            msg["flags"] = int(msg.get("flags") or 0) & ~(1 << 7)
            st.original_filled = True
        self._mark_response(st, now, final=True, message_id=mid)
        return _json_response(msg)

    # --- channel messages
    async def h_channel_message(self, request: web.Request) -> web.Response:
        now = self.now()
        cid = self._channel_id(request)
        body, files = await self._read_body(request)
        self._validate_message(body, files)
        msg = self._message(cid, self.bot_user, body, files=files)
        ref = (body or {}).get("message_reference") or {}
        if ref.get("message_id"):
            msg["message_reference"] = {"message_id": str(ref["message_id"]), "channel_id": str(cid)}
            if "guild_id" in msg:
                msg["message_reference"]["guild_id"] = msg["guild_id"]
            msg["type"] = 19
        self._note_reply(cid, now, ref.get("message_id"))
        return _json_response(msg)

    async def h_reaction(self, request: web.Request) -> web.Response:
        now = self.now()
        cid = self._channel_id(request)
        self._note_reply(cid, now, request.match_info["message_id"])
        return _no_content()

    def _note_reply(self, channel_id: int, now: float, ref_id: Any) -> None:
        wait = None
        if ref_id is not None:
            for w in self.message_waits:
                if str(w.message_id) == str(ref_id):
                    wait = w
                    break
        if wait is None:
            # no reference: the oldest unanswered message in that channel, else the newest one
            pending = [w for w in self.message_waits if w.channel_id == channel_id and w.t_first is None]
            if pending:
                wait = pending[0]
            else:
                same = [w for w in self.message_waits if w.channel_id == channel_id]
                wait = same[-1] if same else None
        if wait is None:
            return
        wait.replies += 1
        if wait.t_first is None:
            wait.t_first = now
            wait.first_event.set()
        wait.t_final = now

    async def h_message(self, request: web.Request) -> web.Response:
        now = self.now()
        cid = self._channel_id(request)
        try:
            mid = int(request.match_info["message_id"])
        except ValueError:
            raise _ApiError(404, 10008, "Unknown Message")
        msg = self.messages.get(mid)
        if msg is None or msg.get("channel_id") != str(cid):
            raise _ApiError(404, 10008, "Unknown Message")
        if request.method == "GET":
            return _json_response(msg)
        if request.method == "DELETE":
            self.messages.pop(mid, None)
            return _no_content()
        body, files = await self._read_body(request)
        self._validate_message(body, files, allow_empty=True)
        self._apply_edit(msg, body or {}, files)
        msg["edited_timestamp"] = _iso()
        for st in self.interactions.values():    # editing the clicked message counts as a response
            if st.source_message_id == mid or st.original_id == mid:
                if st.t_final is None or st.t_final < now:
                    self._mark_response(st, now, final=True, message_id=mid)
        return _json_response(msg)

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


def _guess_type(filename: str) -> str:
    import mimetypes

    return mimetypes.guess_type(filename)[0] or "application/octet-stream"
