"""The loopback Discord's gateway: one websocket session (HELLO, IDENTIFY -> READY + GUILD_CREATE,
heartbeats, member chunks, RESUME refused) and ``dispatch`` for the events the driver sends.

Frames are plain JSON text whatever ``compress=`` the bot asks for (discord.py only inflates binary
frames); READY carries ``resume_gateway_url``. IDENTIFY is kept without its token.
"""
from __future__ import annotations

import asyncio
import json
import logging
import secrets
from typing import Any, Callable, Dict, List, Optional

from aiohttp import WSMsgType, web

from .scenario import Scenario
from .wire import (
    OP_DISPATCH, OP_HEARTBEAT, OP_HEARTBEAT_ACK, OP_HELLO, OP_IDENTIFY, OP_INVALID_SESSION, OP_REQUEST_MEMBERS,
    OP_RESUME, _dumps,
)
from .world import World

log = logging.getLogger("autoperf.discord_sim")


class Gateway:
    def __init__(self, scenario: Scenario, world: World, url: Callable[[], str], now: Callable[[], float]):
        self.scenario, self.world, self.url, self.now = scenario, world, url, now
        self.identified = asyncio.Event()
        self.ready_sent = asyncio.Event()
        self.disconnected = asyncio.Event()
        self.identify: Optional[Dict[str, Any]] = None     # IDENTIFY's payload without the token
        self.t_ready: Optional[float] = None
        self.connections = 0
        self.heartbeats = 0
        self.internal_errors: List[str] = []
        self._ws: Optional[web.WebSocketResponse] = None
        self._lock = asyncio.Lock()
        self._seq = 0
        self._session_id = secrets.token_hex(16)

    @property
    def connected(self) -> bool:
        return self._ws is not None and not self._ws.closed

    def intents(self) -> int:
        try:
            return int((self.identify or {}).get("intents", 0))
        except (TypeError, ValueError):
            return 0

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True, max_msg_size=0)
        await ws.prepare(request)
        self.connections += 1
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
                await self._on_frame(ws, payload)
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

    async def close(self, code: int = 1000) -> None:
        ws = self._ws
        if ws is not None and not ws.closed:
            try:
                await ws.close(code=code, message=b"simulation finished")
            except Exception:  # pragma: no cover
                pass

    async def _send(self, ws: web.WebSocketResponse, payload: Dict[str, Any]) -> None:
        async with self._lock:
            if not ws.closed:
                await ws.send_str(_dumps(payload).decode("utf-8"))

    async def dispatch(self, event: str, data: Dict[str, Any], ws: Optional[web.WebSocketResponse] = None) -> bool:
        ws = ws or self._ws
        if ws is None or ws.closed:
            return False
        self._seq += 1
        await self._send(ws, {"op": OP_DISPATCH, "t": event, "s": self._seq, "d": data})
        return True

    async def _on_frame(self, ws: web.WebSocketResponse, payload: Dict[str, Any]) -> None:
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
            if gid in self.world.guilds:
                members = [self.world.member_payload(uid, gid) for uid in [self.scenario.bot_id, *self.world.users]]
                chunk = {"guild_id": str(gid), "members": members, "chunk_index": 0, "chunk_count": 1,
                         "not_found": [], "presences": []}
                if (d or {}).get("nonce") is not None:
                    chunk["nonce"] = d["nonce"]
                await self.dispatch("GUILD_MEMBERS_CHUNK", chunk, ws=ws)

    async def _send_ready(self, ws: web.WebSocketResponse) -> None:
        self._seq = 0
        ready = {
            "v": 10, "user": self.world.bot_user,
            "guilds": [{"id": str(g), "unavailable": True} for g in self.world.guilds],
            "session_id": self._session_id, "resume_gateway_url": self.url(),
            "session_type": "normal", "shard": [0, 1], "private_channels": [], "relationships": [],
            "presences": [], "guild_join_requests": [], "geo_ordered_rtc_regions": [],
            "application": {"id": str(self.scenario.bot_id), "flags": 0}, "user_settings": {},
            "_trace": ["autoperf-discord-sim"],
        }
        await self.dispatch("READY", ready, ws=ws)
        for gid in self.world.guilds:
            await self.dispatch("GUILD_CREATE", self.world.guild_payload(gid), ws=ws)
        self.t_ready = self.now()
        self.ready_sent.set()
