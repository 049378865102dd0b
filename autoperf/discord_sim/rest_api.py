"""The loopback Discord's REST handlers: users, guilds, channels, application commands, interaction
callbacks, followups and webhook edits, channel messages."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from aiohttp import web

from .wire import (
    _PNG_1X1, ALL_PERMISSIONS, CALLBACK_TYPES, CB_AUTOCOMPLETE, CB_DEFERRED_MESSAGE, CB_DEFERRED_UPDATE, CB_MESSAGE,
    CB_MODAL, CB_UPDATE, FINAL_CALLBACKS, INTERACTION_DEADLINE_S, InteractionState, _ApiError, _iso, _json_response,
    _no_content,
)


class RestApiMixin:
    """SimServer's REST route handlers (``h_*``); routes are registered in ``SimServer._add_routes``."""

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
