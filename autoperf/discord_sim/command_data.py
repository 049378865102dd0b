"""What a simulated user sends for an application command: slash commands (subcommands, typed
options with their ``resolved`` data), autocomplete requests and context menus, built against the
commands the bot synced (or inferred from the scenario's values when it did not sync)."""
from __future__ import annotations

import random
from typing import Any, Callable, Dict, List, Optional

from .actor import ActorCtx, StepFailed, add_user_resolved, channel_ref, resolved_channel, user_ref
from .scenario import AttachmentSpec, Step

# option types
OPT_SUB, OPT_GROUP, OPT_STR, OPT_INT, OPT_BOOL, OPT_USER, OPT_CHANNEL, OPT_ROLE, OPT_MENTIONABLE, OPT_NUMBER, OPT_ATTACHMENT = range(1, 12)


def _infer_type(value: Any) -> int:
    if isinstance(value, bool):
        return OPT_BOOL
    if isinstance(value, int):
        return OPT_INT
    if isinstance(value, float):
        return OPT_NUMBER
    if isinstance(value, str) and value.startswith("@"):
        return OPT_USER
    if isinstance(value, str) and value.startswith("#"):
        return OPT_CHANNEL
    return OPT_STR


def _offered_in_dms(cmd: Dict[str, Any]) -> bool:
    """Discord lists a command in DMs unless it is guild-only (dm_permission false, or contexts without 1)."""
    contexts = cmd.get("contexts")
    if isinstance(contexts, list):
        return 1 in contexts
    return cmd.get("dm_permission", True) is not False


class CommandData:
    """Builds command interaction data; ``warn`` collects what the report should say (unsynced names)."""

    def __init__(self, server: Any, warn: Callable[[str], None]):
        self.server = server
        self.world = server.world
        self.warn = warn
        self._inferred: set = set()

    def _command(self, name: str, ctype: int, ctx: ActorCtx, label: str) -> Optional[Dict[str, Any]]:
        cmd = self.world.find_command(name, ctype, ctx.guild_id)
        if cmd is None:
            if name not in self._inferred:
                self._inferred.add(name)
                if self.world.commands_synced.is_set():
                    self.warn(f"{label} is not among the commands the bot synced")
        elif ctx.guild_id is None and not _offered_in_dms(cmd):
            raise StepFailed(f"{label} is guild-only: Discord does not offer it in DMs")
        return cmd

    def _option_value(self, otype: int, odef: Optional[Dict[str, Any]], value: Any, ctx: ActorCtx,
                      resolved: Dict[str, Any], rng: random.Random, oname: str) -> Any:
        choices = (odef or {}).get("choices") or []
        if choices and value is not None and not any(ch.get("value") == value for ch in choices):
            for ch in choices:
                if ch.get("name") == str(value) or str(ch.get("value")) == str(value):
                    value = ch["value"]
                    break
        if otype == OPT_STR:
            return "sim" if value is None else str(value)
        if otype in (OPT_INT, OPT_NUMBER):
            kind, cast, default = ("an integer", int, 1) if otype == OPT_INT else ("a number", float, 1.0)
            try:
                return default if value is None else cast(value)
            except (TypeError, ValueError):
                raise StepFailed(f"option {oname}: expected {kind}, got {value!r}") from None
        if otype == OPT_BOOL:
            if isinstance(value, str):
                return value.strip().lower() in ("1", "true", "yes", "on")
            return True if value is None else bool(value)
        if otype in (OPT_USER, OPT_MENTIONABLE):
            uid = user_ref(self.world, value, ctx, rng)
            add_user_resolved(self.world, resolved, uid, ctx)
            return str(uid)
        if otype == OPT_CHANNEL:
            cid = channel_ref(self.world, value, ctx)
            resolved.setdefault("channels", {})[str(cid)] = resolved_channel(self.world, cid)
            return str(cid)
        if otype == OPT_ROLE:
            gid = ctx.guild_id or self.world.scenario.guilds[0].id
            role = self.world.roles_payload(gid)[0]
            resolved.setdefault("roles", {})[role["id"]] = role
            return role["id"]
        if otype == OPT_ATTACHMENT:
            spec = AttachmentSpec(filename=str(value or "upload.bin"))
            if isinstance(value, dict):
                spec = AttachmentSpec(filename=str(value.get("filename", "upload.bin")), size=int(value.get("size", 1024)))
            att = self.world.attachment_payload(ctx.channel_id, spec)
            resolved.setdefault("attachments", {})[att["id"]] = att
            return att["id"]
        return value

    def _leaf_options(self, defs: Optional[List[Dict[str, Any]]], given: Dict[str, Any], ctx: ActorCtx,
                      resolved: Dict[str, Any], rng: random.Random, *, focused: Optional[str] = None,
                      focused_value: Any = None) -> List[Dict[str, Any]]:
        out = []
        given = dict(given)
        if focused is not None:
            given.pop(focused, None)
        if defs is None:     # the bot did not sync: infer from the values
            for k, v in given.items():
                t = _infer_type(v)
                out.append({"name": k, "type": t, "value": self._option_value(t, None, v, ctx, resolved, rng, k)})
            if focused is not None:
                out.append({"name": focused, "type": OPT_STR, "value": str(focused_value or ""), "focused": True})
            return out
        known = {d["name"]: d for d in defs if int(d.get("type", 3)) not in (OPT_SUB, OPT_GROUP)}
        for k in given:
            if k not in known:
                raise StepFailed(f"unknown option {k!r} (the command has {sorted(known) or 'none'})")
        for name, d in known.items():
            t = int(d.get("type", 3))
            if name == focused:
                out.append({"name": name, "type": t, "value": "" if focused_value is None else str(focused_value),
                            "focused": True})
            elif name in given:
                out.append({"name": name, "type": t,
                            "value": self._option_value(t, d, given[name], ctx, resolved, rng, name)})
            elif d.get("required"):
                default = (d.get("choices") or [{}])[0].get("value") if d.get("choices") else None
                if t == OPT_STR and default is None:
                    default = "s" * max(3, int(d.get("min_length") or 0))
                if t in (OPT_INT, OPT_NUMBER) and default is None and d.get("min_value") is not None:
                    default = d["min_value"]
                out.append({"name": name, "type": t,
                            "value": self._option_value(t, d, default, ctx, resolved, rng, name)})
        if focused is not None and focused not in known:
            raise StepFailed(f"unknown autocomplete option {focused!r}")
        return out

    def slash(self, step: Step, ctx: ActorCtx, rng: random.Random, *, focused: Optional[str] = None,
              focused_value: Any = None) -> Dict[str, Any]:
        """A slash command's (or, with ``focused``, an autocomplete request's) interaction data."""
        parts = step.target.split()
        cmd = self._command(parts[0], 1, ctx, f"/{parts[0]}")
        data: Dict[str, Any] = {"name": parts[0], "type": 1}
        defs: Optional[List[Dict[str, Any]]] = None
        if cmd is None:
            data["id"] = str(9000 + len(self._inferred))
        else:
            data["id"] = cmd["id"]
            if cmd.get("guild_id"):
                data["guild_id"] = cmd["guild_id"]
            defs = cmd.get("options") or []
        container = data
        for i, sub in enumerate(parts[1:]):
            last = i == len(parts) - 2
            if defs is None:
                stype, sub_defs = (OPT_SUB if last else OPT_GROUP), None
            else:
                match = [d for d in defs if d.get("name") == sub and int(d.get("type", 0)) in (OPT_SUB, OPT_GROUP)]
                if not match:
                    raise StepFailed(f"/{step.target}: no subcommand {sub!r}")
                stype, sub_defs = int(match[0]["type"]), match[0].get("options") or []
            node: Dict[str, Any] = {"name": sub, "type": stype}
            container["options"] = [node]
            container = node
            defs = sub_defs
        if defs is not None and any(int(d.get("type", 0)) in (OPT_SUB, OPT_GROUP) for d in defs):
            raise StepFailed(f"/{step.target} is a group: name a subcommand, e.g. '{step.target} <sub>'")
        resolved: Dict[str, Any] = {}
        container["options"] = self._leaf_options(defs, step.options, ctx, resolved, rng, focused=focused,
                                                  focused_value=focused_value)
        if resolved:
            data["resolved"] = resolved
        return data

    def context_menu(self, step: Step, ctx: ActorCtx, rng: random.Random, ctype: int) -> Dict[str, Any]:
        """A user (ctype 2) or message (ctype 3) context menu's interaction data."""
        cmd = self._command(step.target, ctype, ctx, f"context menu {step.target!r}")
        data: Dict[str, Any] = {"name": step.target, "type": ctype, "id": cmd["id"] if cmd else str(9500 + ctype)}
        if cmd is not None and cmd.get("guild_id"):
            data["guild_id"] = cmd["guild_id"]
        resolved: Dict[str, Any] = {}
        target = step.options.get("target")
        if ctype == 2:
            uid = user_ref(self.world, target, ctx, rng)
            add_user_resolved(self.world, resolved, uid, ctx)
            data["target_id"] = str(uid)
        else:
            msg = self.world.messages.get(ctx.view_message_id) if ctx.view_message_id is not None else None
            if msg is None:
                author = user_ref(self.world, target, ctx, rng) if target else ctx.user_id
                msg = self.server.user_message(author, ctx.channel_id, "a message from the simulation", [])
            resolved["messages"] = {msg["id"]: msg}
            data["target_id"] = msg["id"]
        data["resolved"] = resolved
        return data
