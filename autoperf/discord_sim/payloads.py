"""Snowflakes and the JSON objects the loopback Discord hands out (users, members, channels, guilds,
messages, attachments), and the message validation Discord does."""
from __future__ import annotations

import time
from typing import Any, Dict, List, Optional

from .scenario import AttachmentSpec
from .wire import ALL_PERMISSIONS, DISCORD_EPOCH_MS, InteractionState, _ApiError, _guess_type, _iso


class PayloadsMixin:
    """SimServer's ids, payload builders and message validation (state lives on SimServer)."""

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
