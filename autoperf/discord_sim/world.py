"""The loopback Discord's model: users, guilds, channels, DMs, messages, attachments, synced commands,
and the JSON objects it hands out for them (with the message validation Discord does)."""
from __future__ import annotations

import asyncio
import itertools
import re
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from .scenario import AttachmentSpec, Scenario
from .wire import ALL_PERMISSIONS, DISCORD_EPOCH_MS, InteractionState, _ApiError, _guess_type, _iso

_DM_CHANNEL_BASE = 710000000000000000
_MENTION = re.compile(r"<@!?(\d+)>")


class World:
    """Everything the sim knows about its Discord; REST handlers and the driver share one."""

    def __init__(self, scenario: Scenario, now: Callable[[], float], max_messages: int = 20_000):
        self.scenario = scenario
        self.now = now
        self.max_messages = max_messages   # messages / attachments kept for edits and component clicks
        self.base_url = ""                 # set once the server listens (attachment URLs)
        self._snow = itertools.count(1)
        self.bot_user = self.user_payload(scenario.bot_id, scenario.bot_name, bot=True)
        self.users = {u.id: self.user_payload(u.id, u.name) for u in scenario.users}
        self.guilds = {g.id: g for g in scenario.guilds}
        self.channels: Dict[int, Tuple[int, str]] = {}      # guild channel id -> (guild id, name)
        for g in scenario.guilds:
            for c in g.channels:
                self.channels[c.id] = (g.id, c.name)
        self.dm_channels: Dict[int, int] = {}               # DM channel id -> user id
        self._dm_of: Dict[int, int] = {}                    # user id -> DM channel id
        self.messages: Dict[int, Dict[str, Any]] = {}
        # message id -> (snowflake, loop time) of its last create/edit, oldest first: what changed since a step
        self.touched: Dict[int, Tuple[int, float]] = {}
        self.attachments: Dict[int, Tuple[str, bytes, str]] = {}   # id -> (filename, bytes, content type)
        self.joined_at = _iso(time.time() - 86400)          # every member joined a day before the run
        self.global_commands: List[Dict[str, Any]] = []
        self.guild_commands: Dict[int, List[Dict[str, Any]]] = {}
        self.commands_synced = asyncio.Event()

    # ------------------------------------------------------------------ ids, places
    def snowflake(self) -> int:
        ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
        return (ms << 22) | (next(self._snow) & 0x3FFFFF)

    def guild_of(self, channel_id: int) -> Optional[int]:
        """The channel's guild; None for a DM channel."""
        return self.channels.get(channel_id, (None, ""))[0]

    def dm_channel(self, user_id: int) -> int:
        """The user's DM channel with the bot (one per user, as on Discord)."""
        cid = self._dm_of.get(user_id)
        if cid is None:
            cid = _DM_CHANNEL_BASE + len(self._dm_of) + 1
            while cid in self.channels or cid in self.dm_channels:
                cid += 1
            self._dm_of[user_id] = cid
            self.dm_channels[cid] = user_id
        return cid

    def knows_channel(self, channel_id: int) -> bool:
        return channel_id in self.channels or channel_id in self.dm_channels

    # ------------------------------------------------------------------ commands the bot synced
    def find_command(self, name: str, ctype: int, guild_id: Optional[int]) -> Optional[Dict[str, Any]]:
        pools = [self.guild_commands.get(guild_id, [])] if guild_id is not None else []
        pools.append(self.global_commands)
        for pool in pools:
            for c in pool:
                if c.get("name") == name and int(c.get("type", 1)) == ctype:
                    return c
        return None

    def all_commands(self) -> List[Dict[str, Any]]:
        out = list(self.global_commands)
        for cmds in self.guild_commands.values():
            out.extend(cmds)
        return out

    # ------------------------------------------------------------------ payloads
    @staticmethod
    def user_payload(uid: int, name: str, bot: bool = False) -> Dict[str, Any]:
        return {"id": str(uid), "username": name, "discriminator": "0", "global_name": name, "avatar": None,
                "bot": bot, "public_flags": 0, "flags": 0, "banner": None, "accent_color": None,
                "avatar_decoration_data": None, "system": False, "mfa_enabled": bot, "verified": True}

    def user(self, uid: int) -> Dict[str, Any]:
        return self.bot_user if uid == self.scenario.bot_id else self.users[uid]

    def member_payload(self, uid: int, guild_id: int, *, with_user: bool = True, permissions: bool = False) -> Dict[str, Any]:
        roles = [str(guild_id + 1)] if uid == self.scenario.bot_id else []
        m: Dict[str, Any] = {"roles": roles, "joined_at": self.joined_at, "deaf": False, "mute": False,
                             "nick": None, "avatar": None, "flags": 0, "pending": False, "premium_since": None,
                             "communication_disabled_until": None}
        if with_user:
            m["user"] = self.user(uid)
        if permissions:
            m["permissions"] = ALL_PERMISSIONS
        return m

    def channel_payload(self, channel_id: int) -> Dict[str, Any]:
        if channel_id in self.dm_channels:
            return {"id": str(channel_id), "type": 1, "last_message_id": None, "flags": 0,
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
            "nsfw_level": 0, "premium_progress_bar_enabled": False, "joined_at": self.joined_at,
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

    # ------------------------------------------------------------------ messages
    def new_message(self, channel_id: int, author: Dict[str, Any], body: Dict[str, Any], *, mtype: int = 0,
                    interaction: Optional[InteractionState] = None,
                    files: Optional[List[Dict[str, Any]]] = None) -> Dict[str, Any]:
        mid = self.snowflake()
        guild_id = self.guild_of(channel_id)
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
        self.apply_edit(msg, body, files)
        self.messages[mid] = msg
        self.touched[mid] = (mid, self.now())
        if len(self.messages) > self.max_messages:          # bounded: forget the oldest
            old = next(iter(self.messages))
            del self.messages[old]
            self.touched.pop(old, None)
        return msg

    def edited(self, mid: int) -> None:
        """A message changed: it moves to the end of ``touched`` (waits look at what changed since a step)."""
        self.touched.pop(mid, None)
        if mid in self.messages:
            self.touched[mid] = (self.snowflake(), self.now())

    def forget(self, mid: int) -> None:
        self.messages.pop(mid, None)
        self.touched.pop(mid, None)

    def apply_edit(self, msg: Dict[str, Any], body: Dict[str, Any], files: Optional[List[Dict[str, Any]]]) -> None:
        for key in ("content", "embeds", "components", "tts", "sticker_ids", "poll"):
            if key in body and body[key] is not None:
                msg[key] = body[key]
        if "flags" in body and body["flags"] is not None:
            msg["flags"] = int(body["flags"])
        if "content" in body and body["content"] is not None:
            msg["mentions"] = self._mentions(body["content"])
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

    def _mentions(self, content: str) -> List[Dict[str, Any]]:
        """The users a message's content mentions (<@id> / <@!id>), as Discord resolves them."""
        if "<@" not in content:
            return []
        ids = dict.fromkeys(int(m) for m in _MENTION.findall(content))
        return [self.user(uid) for uid in ids if uid in self.users or uid == self.scenario.bot_id]

    @staticmethod
    def validate_message(body: Any, files: List[Dict[str, Any]], *, allow_empty: bool = False) -> None:
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
