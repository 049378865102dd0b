"""A loopback Discord: REST API (/api/v9, /api/v10) and gateway websocket on 127.0.0.1.

Real, unmodified discord.py 2.0–2.7 logs in to it, syncs its commands, receives INTERACTION_CREATE /
MESSAGE_CREATE dispatches and answers through the REST API. ``SimServer`` is composed of the model
(``world.World``), the attribution of answers (``tracker.ResponseTracker``), the REST route table and
middleware (``rest_api.RestApi``), the gateway (``gateway.Gateway``) and the sink for HTTP to other
hosts (``http_sink.HttpSink``); here: lifecycle, and what the driver sends. The wire details discord.py
depends on are listed in docs/discord_sim.md ("What the sim implements").
"""
from __future__ import annotations

import asyncio
import secrets
from typing import Any, Dict, List, Optional, Tuple

from aiohttp import web

from .gateway import Gateway
from .http_sink import HttpSink
from .rest_api import RestApi
from .scenario import AttachmentSpec, Scenario
from .tracker import ResponseTracker
from .wire import (  # noqa: F401  (RecordedCall ... INTERACTION_DEADLINE_S: public names, re-exported)
    ALL_PERMISSIONS, ATTACHMENT_SIZE_LIMIT, INTENT_DIRECT_MESSAGES, INTENT_GUILD_MESSAGES, INTENT_MESSAGE_CONTENT,
    INTERACTION_DEADLINE_S, InteractionState, MessageWait, RecordedCall,
)
from .world import World

__all__ = ["SimServer", "RecordedCall", "InteractionState", "MessageWait", "INTERACTION_DEADLINE_S"]


class SimServer:
    """The loopback Discord. ``await start()``, then point discord.py at ``base_url``."""

    def __init__(self, scenario: Scenario):
        self.scenario = scenario
        self.host, self.port = "127.0.0.1", 0
        self.world = World(scenario, self.now)
        self.tracker = ResponseTracker(self.world)
        self.sink = HttpSink(scenario.http)
        self.gateway = Gateway(scenario, self.world, lambda: self.gateway_url, self.now)
        self.api = RestApi(scenario, self.world, self.tracker, self.sink, lambda: self.gateway_url, self.now)
        self._runner: Optional[web.AppRunner] = None

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
        app = web.Application(middlewares=[self.api.middleware], client_max_size=64 * 1024 * 1024)
        self.api.install(app)
        app.router.add_get("/gateway", self.gateway.handle)
        app.router.add_get("/gateway/", self.gateway.handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self.host = host
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.world.base_url = self.base_url

    async def close(self) -> None:
        await self.gateway.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    # ------------------------------------------------------------------ what the report reads
    @property
    def connected(self) -> bool:
        return self.gateway.connected

    @property
    def calls(self) -> List[RecordedCall]:
        return self.api.calls

    @property
    def unhandled(self) -> List[str]:
        return self.api.unhandled

    @property
    def commands_synced(self) -> asyncio.Event:
        return self.world.commands_synced

    @property
    def internal_errors(self) -> List[str]:
        return self.api.internal_errors + self.gateway.internal_errors

    def calls_to(self, route: str) -> List[RecordedCall]:
        """Recorded calls whose route is ``route`` ("POST /channels/{channel_id}/messages")."""
        route = " ".join(route.split())
        return [c for c in self.calls if c.route == route]

    # ------------------------------------------------------------------ what the driver sends
    def new_interaction(self, itype: int, data: Dict[str, Any], *, user_id: int, channel_id: int, step: str,
                        name: str = "", message: Optional[Dict[str, Any]] = None) -> Tuple[InteractionState, Dict[str, Any]]:
        w = self.world
        iid = w.snowflake()
        token = "sim." + secrets.token_urlsafe(24)
        guild_id = w.guild_of(channel_id)
        st = InteractionState(id=iid, token=token, type=itype, step=step, user_id=user_id, channel_id=channel_id,
                              guild_id=guild_id, t_dispatch=0.0, name=name,
                              source_message_id=int(message["id"]) if message else None)
        payload: Dict[str, Any] = {
            "id": str(iid), "application_id": str(self.scenario.bot_id), "type": itype, "data": data,
            "channel_id": str(channel_id), "channel": w.channel_payload(channel_id), "token": token, "version": 1,
            "locale": "en-US", "app_permissions": ALL_PERMISSIONS, "entitlements": [], "entitlement_sku_ids": [],
            "authorizing_integration_owners": {"0": str(guild_id)} if guild_id else {"1": str(user_id)},
            "context": 0 if guild_id else 1, "attachment_size_limit": ATTACHMENT_SIZE_LIMIT,
        }
        if guild_id is not None:
            payload["guild_id"] = str(guild_id)
            payload["guild_locale"] = "en-US"
            payload["guild"] = {"id": str(guild_id), "locale": "en-US", "features": []}
            payload["member"] = w.member_payload(user_id, guild_id, permissions=True)
        else:
            payload["user"] = w.users[user_id]
        if message is not None:
            payload["message"] = message
        self.tracker.add_interaction(st)
        return st, payload

    async def send_interaction(self, st: InteractionState, payload: Dict[str, Any]) -> bool:
        st.t_dispatch = self.now()
        return await self.gateway.dispatch("INTERACTION_CREATE", payload)

    def user_message(self, user_id: int, channel_id: int, content: str,
                     attachments: List[AttachmentSpec]) -> Dict[str, Any]:
        w = self.world
        content = content.replace("{bot}", f"<@{self.scenario.bot_id}>")
        msg = w.new_message(channel_id, w.users[user_id], {"content": content})
        msg["attachments"] = [w.attachment_payload(channel_id, a) for a in attachments]
        if "guild_id" in msg:
            msg["member"] = w.member_payload(user_id, int(msg["guild_id"]), with_user=False)
        return msg

    async def send_user_message(self, msg: Dict[str, Any], step: str) -> Tuple[Optional[MessageWait], str]:
        """Dispatch MESSAGE_CREATE as Discord would for the bot's intents. Returns (wait, note)."""
        intents = self.gateway.intents()
        note = ""
        is_dm = "guild_id" not in msg
        if not intents & (INTENT_DIRECT_MESSAGES if is_dm else INTENT_GUILD_MESSAGES):
            return None, ("bot lacks the " + ("DIRECT_MESSAGES" if is_dm else "GUILD_MESSAGES")
                          + " intent: Discord would not send it this message")
        payload = dict(msg)
        mentioned = any(u.get("id") == str(self.scenario.bot_id) for u in msg.get("mentions", []))
        if not intents & INTENT_MESSAGE_CONTENT and not is_dm and not mentioned:
            payload.update(content="", attachments=[], embeds=[], components=[])
            note = "bot lacks the MESSAGE_CONTENT intent: content and attachments blanked as Discord does"
        wait = MessageWait(message_id=int(msg["id"]), channel_id=int(msg["channel_id"]), step=step, t_dispatch=self.now())
        self.tracker.add_wait(wait)
        ok = await self.gateway.dispatch("MESSAGE_CREATE", payload)
        return (wait if ok else None), note or ("" if ok else "gateway not connected")
