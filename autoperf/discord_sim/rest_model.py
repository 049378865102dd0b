"""REST handlers over the sim's model: the bot's user and application, the gateway URL, users, DMs,
guilds, channels, members and roles, application commands; attachments and the CDN (outside /api)."""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple

from aiohttp import web

from .scenario import Scenario
from .wire import _PNG_1X1, ALL_PERMISSIONS, _ApiError, _json_response, _no_content, read_body
from .world import World


def channel_id(world: World, request: web.Request) -> int:
    """The request's {channel_id}, a guild channel or DM the sim knows (else Discord's 10003)."""
    try:
        cid = int(request.match_info["channel_id"])
    except ValueError:
        raise _ApiError(404, 10003, "Unknown Channel") from None
    if not world.knows_channel(cid):
        raise _ApiError(404, 10003, "Unknown Channel")
    return cid


class ModelRoutes:
    """Handlers that read or change the model (``World``); ``routes()`` is their part of the table."""

    def __init__(self, scenario: Scenario, world: World, gateway_url: Callable[[], str]):
        self.world = world
        self.bot_id = scenario.bot_id
        self.gateway_url = gateway_url
        self.logged_in = False

    def routes(self) -> List[Tuple[str, str, Any]]:
        return [
            ("GET", "/users/@me", self.me),
            ("PATCH", "/users/@me", self.me),
            ("GET", "/users/@me/guilds", self.my_guilds),
            ("GET", "/users/{user_id}", self.user),
            ("POST", "/users/@me/channels", self.create_dm),
            ("GET", "/oauth2/applications/@me", self.app_info),
            ("GET", "/applications/@me", self.app_info),
            ("GET", "/gateway", self.gateway),
            ("GET", "/gateway/bot", self.gateway_bot),
            ("GET", "/applications/{app_id}/commands", self.get_commands),
            ("PUT", "/applications/{app_id}/commands", self.put_commands),
            ("POST", "/applications/{app_id}/commands", self.post_command),
            ("GET", "/applications/{app_id}/commands/{command_id}", self.get_command),
            ("PATCH", "/applications/{app_id}/commands/{command_id}", self.patch_command),
            ("DELETE", "/applications/{app_id}/commands/{command_id}", self.delete_command),
            ("GET", "/applications/{app_id}/guilds/{guild_id}/commands", self.get_commands),
            ("PUT", "/applications/{app_id}/guilds/{guild_id}/commands", self.put_commands),
            ("POST", "/applications/{app_id}/guilds/{guild_id}/commands", self.post_command),
            ("GET", "/applications/{app_id}/guilds/{guild_id}/commands/permissions", self.empty_list),
            ("GET", "/applications/{app_id}/guilds/{guild_id}/commands/{command_id}", self.get_command),
            ("PATCH", "/applications/{app_id}/guilds/{guild_id}/commands/{command_id}", self.patch_command),
            ("DELETE", "/applications/{app_id}/guilds/{guild_id}/commands/{command_id}", self.delete_command),
            ("GET", "/applications/{app_id}/emojis", self.items),
            ("GET", "/applications/{app_id}/entitlements", self.empty_list),
            ("GET", "/applications/{app_id}/skus", self.empty_list),
            ("GET", "/channels/{channel_id}", self.channel),
            ("GET", "/channels/{channel_id}/messages", self.empty_list),
            ("GET", "/guilds/{guild_id}", self.guild),
            ("GET", "/guilds/{guild_id}/channels", self.guild_channels),
            ("GET", "/guilds/{guild_id}/roles", self.guild_roles),
            ("POST", "/guilds/{guild_id}/roles", self.create_role),
            ("GET", "/guilds/{guild_id}/members", self.guild_members),
            ("GET", "/guilds/{guild_id}/members/{user_id}", self.guild_member),
            ("PATCH", "/guilds/{guild_id}/members/{user_id}", self.guild_member),
            ("PUT", "/guilds/{guild_id}/members/{user_id}/roles/{role_id}", self.guild_no_content),
            ("DELETE", "/guilds/{guild_id}/members/{user_id}/roles/{role_id}", self.guild_no_content),
            ("DELETE", "/guilds/{guild_id}/members/{user_id}", self.guild_no_content),
            ("PUT", "/guilds/{guild_id}/bans/{user_id}", self.guild_no_content),
        ]

    def files(self) -> List[Tuple[str, str, Any]]:
        """Routes outside /api: attachments the users uploaded, CDN assets (a 1x1 PNG for any path)."""
        return [("GET", "/attachments/{channel_id}/{attachment_id}/{filename}", self.attachment),
                ("GET", "/cdn/{tail:.*}", self.cdn)]

    # ------------------------------------------------------------------ simple answers
    async def empty_list(self, request: web.Request) -> web.Response:
        return _json_response([])

    async def items(self, request: web.Request) -> web.Response:
        return _json_response({"items": []})

    async def me(self, request: web.Request) -> web.Response:
        self.logged_in = True
        return _json_response(self.world.bot_user)

    async def user(self, request: web.Request) -> web.Response:
        uid = int(request.match_info["user_id"])
        if uid != self.bot_id and uid not in self.world.users:
            raise _ApiError(404, 10013, "Unknown User")
        return _json_response(self.world.user(uid))

    async def app_info(self, request: web.Request) -> web.Response:
        return _json_response(self.world.app_info_payload())

    async def gateway(self, request: web.Request) -> web.Response:
        return _json_response({"url": self.gateway_url()})

    async def gateway_bot(self, request: web.Request) -> web.Response:
        return _json_response({"url": self.gateway_url(), "shards": 1,
                               "session_start_limit": {"total": 1000, "remaining": 999, "reset_after": 0,
                                                       "max_concurrency": 1}})

    async def my_guilds(self, request: web.Request) -> web.Response:
        return _json_response([{"id": str(g.id), "name": g.name, "icon": None, "owner": False,
                                "permissions": ALL_PERMISSIONS, "features": []} for g in self.world.guilds.values()])

    async def create_dm(self, request: web.Request) -> web.Response:
        body, _ = await read_body(request)
        uid = int((body or {}).get("recipient_id", 0))
        if uid not in self.world.users:
            raise _ApiError(400, 50035, "Invalid Form Body", {"recipient_id": "unknown user"})
        return _json_response(self.world.channel_payload(self.world.dm_channel(uid)))

    async def attachment(self, request: web.Request) -> web.Response:
        try:
            _, data, ctype = self.world.attachments[int(request.match_info["attachment_id"])]
        except (KeyError, ValueError):
            raise web.HTTPNotFound()
        return web.Response(body=data, headers={"Content-Type": ctype})

    async def cdn(self, request: web.Request) -> web.Response:
        return web.Response(body=_PNG_1X1, headers={"Content-Type": "image/png"})

    # ------------------------------------------------------------------ guilds and channels
    def guild_id(self, request: web.Request) -> int:
        try:
            gid = int(request.match_info["guild_id"])
        except ValueError:
            raise _ApiError(404, 10004, "Unknown Guild") from None
        if gid not in self.world.guilds:
            raise _ApiError(404, 10004, "Unknown Guild")
        return gid

    async def channel(self, request: web.Request) -> web.Response:
        return _json_response(self.world.channel_payload(channel_id(self.world, request)))

    async def guild(self, request: web.Request) -> web.Response:
        return _json_response(self.world.guild_payload(self.guild_id(request)))

    async def guild_channels(self, request: web.Request) -> web.Response:
        g = self.world.guilds[self.guild_id(request)]
        return _json_response([self.world.channel_payload(c.id) for c in g.channels])

    async def guild_roles(self, request: web.Request) -> web.Response:
        return _json_response(self.world.roles_payload(self.guild_id(request)))

    async def guild_member(self, request: web.Request) -> web.Response:
        gid = self.guild_id(request)
        if request.method == "PATCH":
            await read_body(request)
        uid = int(request.match_info["user_id"])
        if uid != self.bot_id and uid not in self.world.users:
            raise _ApiError(404, 10007, "Unknown Member")
        return _json_response(self.world.member_payload(uid, gid))

    async def guild_members(self, request: web.Request) -> web.Response:
        gid = self.guild_id(request)
        uids = [self.bot_id] + list(self.world.users)
        try:
            limit = max(1, min(1000, int(request.query.get("limit", "1"))))
        except ValueError:
            limit = 1
        after = int(request.query.get("after", "0") or 0)
        uids = sorted(u for u in uids if u > after)[:limit]
        return _json_response([self.world.member_payload(uid, gid) for uid in uids])

    async def guild_no_content(self, request: web.Request) -> web.Response:
        self.guild_id(request)
        await read_body(request)
        return _no_content()

    async def create_role(self, request: web.Request) -> web.Response:
        self.guild_id(request)
        body, _ = await read_body(request)
        body = body or {}
        return _json_response({"id": str(self.world.snowflake()), "name": body.get("name", "new role"),
                               "color": body.get("color", 0), "hoist": bool(body.get("hoist", False)),
                               "position": 1, "permissions": str(body.get("permissions", "0")), "managed": False,
                               "mentionable": bool(body.get("mentionable", False)), "flags": 0, "icon": None,
                               "unicode_emoji": None})

    # ------------------------------------------------------------------ application commands
    def _commands_for(self, request: web.Request) -> Tuple[List[Dict[str, Any]], Optional[int]]:
        if "guild_id" in request.match_info:
            gid = self.guild_id(request)
            return self.world.guild_commands.setdefault(gid, []), gid
        return self.world.global_commands, None

    def _normalise(self, cmd: Dict[str, Any], guild_id: Optional[int], existing: Optional[dict] = None) -> Dict[str, Any]:
        if not isinstance(cmd, dict) or not cmd.get("name"):
            raise _ApiError(400, 50035, "Invalid Form Body", {"name": "required"})
        out = dict(cmd)
        out["id"] = existing["id"] if existing else str(self.world.snowflake())
        out["application_id"] = str(self.bot_id)
        out["version"] = str(self.world.snowflake())
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

    async def get_commands(self, request: web.Request) -> web.Response:
        return _json_response(self._commands_for(request)[0])

    async def put_commands(self, request: web.Request) -> web.Response:
        body, _ = await read_body(request)
        if not isinstance(body, list):
            raise _ApiError(400, 50035, "Invalid Form Body", {"_errors": "expected a list"})
        cmds, gid = self._commands_for(request)
        old = {(c["name"], c.get("type", 1)): c for c in cmds}
        cmds[:] = [self._normalise(c, gid, old.get((c.get("name"), c.get("type", 1)))) for c in body]
        self.world.commands_synced.set()
        return _json_response(cmds)

    async def post_command(self, request: web.Request) -> web.Response:
        body, _ = await read_body(request)
        cmds, gid = self._commands_for(request)
        key = ((body or {}).get("name"), (body or {}).get("type", 1))
        i = next((i for i, c in enumerate(cmds) if (c["name"], c.get("type", 1)) == key), None)
        cmd = self._normalise(body, gid, cmds[i] if i is not None else None)
        if i is None:
            cmds.append(cmd)
        else:
            cmds[i] = cmd
        self.world.commands_synced.set()
        return _json_response(cmd, 201 if i is None else 200)

    def _find(self, request: web.Request) -> Tuple[List[Dict[str, Any]], int]:
        cmds, _ = self._commands_for(request)
        cid = request.match_info["command_id"]
        for i, c in enumerate(cmds):
            if c["id"] == cid:
                return cmds, i
        raise _ApiError(404, 10063, "Unknown application command")

    async def get_command(self, request: web.Request) -> web.Response:
        cmds, i = self._find(request)
        return _json_response(cmds[i])

    async def patch_command(self, request: web.Request) -> web.Response:
        body, _ = await read_body(request)
        cmds, i = self._find(request)
        merged = dict(cmds[i])
        merged.update(body or {})
        cmds[i] = merged
        return _json_response(merged)

    async def delete_command(self, request: web.Request) -> web.Response:
        cmds, i = self._find(request)
        del cmds[i]
        return _no_content()
