"""What the simulated users send: application-command, component and modal interaction payloads
built from scenario steps against the commands and messages the bot registered / sent."""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from .scenario import Flow, Step
from .server import InteractionState

# option types
OPT_SUB, OPT_GROUP, OPT_STR, OPT_INT, OPT_BOOL, OPT_USER, OPT_CHANNEL, OPT_ROLE, OPT_MENTIONABLE, OPT_NUMBER, OPT_ATTACHMENT = range(1, 12)
SELECT_TYPES = (3, 5, 6, 7, 8)


class _StepFailed(Exception):
    pass


@dataclass
class _FlowCtx:
    flow: Flow
    user_id: int
    channel_id: int
    guild_id: Optional[int]
    view_message_id: Optional[int] = None
    step_floor: int = 0          # snowflake taken when the current step started
    step_floor_prev: int = 0     # ... and when the previous one did: newer bot messages are its response
    modal: Optional[Dict[str, Any]] = None
    modal_source: Optional[InteractionState] = None


class InteractionDataMixin:
    """Simulation's payload builders (state — the server, the scenario — lives on Simulation)."""

    # ------------------------------------------------------------------ payload building
    def _find_command(self, name: str, ctype: int, guild_id: Optional[int]) -> Optional[Dict[str, Any]]:
        srv = self.server
        pools = []
        if guild_id is not None:
            pools.append(srv.guild_commands.get(guild_id, []))
        pools.append(srv.global_commands)
        for pool in pools:
            for c in pool:
                if c.get("name") == name and int(c.get("type", 1)) == ctype:
                    return c
        return None

    def _user_ref(self, value: Any, ctx: _FlowCtx, rng: random.Random) -> int:
        users = self.scenario.users
        if isinstance(value, int) and not isinstance(value, bool):
            if value in self.server.users or value == self.scenario.bot_id:
                return value
            raise _StepFailed(f"unknown user id {value}")
        text = str(value or "@random").lstrip("@")
        if text in ("self", "me"):
            return ctx.user_id
        if text in ("random", "other", ""):
            others = [u.id for u in users if u.id != ctx.user_id] or [ctx.user_id]
            return rng.choice(others)
        if text == "bot":
            return self.scenario.bot_id
        for u in users:
            if u.name == text or str(u.id) == text:
                return u.id
        raise _StepFailed(f"unknown user {value!r}")

    def _add_user_resolved(self, resolved: Dict[str, Any], uid: int, ctx: _FlowCtx) -> None:
        srv = self.server
        user = srv.bot_user if uid == self.scenario.bot_id else srv.users[uid]
        resolved.setdefault("users", {})[str(uid)] = user
        if ctx.guild_id is not None:
            resolved.setdefault("members", {})[str(uid)] = srv.member_payload(uid, ctx.guild_id, with_user=False,
                                                                             permissions=True)

    def _channel_ref(self, value: Any, ctx: _FlowCtx) -> int:
        if value in (None, "", "#here", "here"):
            return ctx.channel_id
        if isinstance(value, int) and value in self.server.channels:
            return value
        text = str(value).lstrip("#")
        for cid, (_, name) in self.server.channels.items():
            if name == text or str(cid) == text:
                return cid
        raise _StepFailed(f"unknown channel {value!r}")

    def _option_value(self, otype: int, odef: Optional[Dict[str, Any]], value: Any, ctx: _FlowCtx,
                      resolved: Dict[str, Any], rng: random.Random, oname: str) -> Any:
        choices = (odef or {}).get("choices") or []
        if choices and value is not None:
            for ch in choices:
                if ch.get("value") == value:
                    break
            else:
                for ch in choices:
                    if ch.get("name") == str(value) or str(ch.get("value")) == str(value):
                        value = ch["value"]
                        break
        if otype == OPT_STR:
            return "sim" if value is None else str(value)
        if otype == OPT_INT:
            try:
                return 1 if value is None else int(value)
            except (TypeError, ValueError):
                raise _StepFailed(f"option {oname}: expected an integer, got {value!r}")
        if otype == OPT_NUMBER:
            try:
                return 1.0 if value is None else float(value)
            except (TypeError, ValueError):
                raise _StepFailed(f"option {oname}: expected a number, got {value!r}")
        if otype == OPT_BOOL:
            if isinstance(value, str):
                return value.strip().lower() in ("1", "true", "yes", "on")
            return True if value is None else bool(value)
        if otype in (OPT_USER, OPT_MENTIONABLE):
            uid = self._user_ref(value, ctx, rng)
            self._add_user_resolved(resolved, uid, ctx)
            return str(uid)
        if otype == OPT_CHANNEL:
            cid = self._channel_ref(value, ctx)
            ch = dict(self.server.channel_payload(cid))
            ch["permissions"] = "2251799813685247"
            resolved.setdefault("channels", {})[str(cid)] = ch
            return str(cid)
        if otype == OPT_ROLE:
            gid = ctx.guild_id or self.scenario.guilds[0].id
            role = self.server.roles_payload(gid)[0]
            resolved.setdefault("roles", {})[role["id"]] = role
            return role["id"]
        if otype == OPT_ATTACHMENT:
            from .scenario import AttachmentSpec

            spec = AttachmentSpec(filename=str(value or "upload.bin"))
            if isinstance(value, dict):
                spec = AttachmentSpec(filename=str(value.get("filename", "upload.bin")), size=int(value.get("size", 1024)))
            att = self.server.attachment_payload(ctx.channel_id, spec)
            resolved.setdefault("attachments", {})[att["id"]] = att
            return att["id"]
        return value

    @staticmethod
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

    def _leaf_options(self, defs: Optional[List[Dict[str, Any]]], given: Dict[str, Any], ctx: _FlowCtx,
                      resolved: Dict[str, Any], rng: random.Random, *, focused: Optional[str] = None,
                      focused_value: Any = None) -> List[Dict[str, Any]]:
        out = []
        given = dict(given)
        if focused is not None:
            given.pop(focused, None)
        if defs is None:     # the bot did not sync: infer from the values
            for k, v in given.items():
                t = self._infer_type(v)
                out.append({"name": k, "type": t, "value": self._option_value(t, None, v, ctx, resolved, rng, k)})
            if focused is not None:
                out.append({"name": focused, "type": OPT_STR, "value": str(focused_value or ""), "focused": True})
            return out
        known = {d["name"]: d for d in defs if int(d.get("type", 3)) not in (OPT_SUB, OPT_GROUP)}
        for k in given:
            if k not in known:
                raise _StepFailed(f"unknown option {k!r} (the command has {sorted(known) or 'none'})")
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
            raise _StepFailed(f"unknown autocomplete option {focused!r}")
        return out

    def _slash_data(self, step: Step, ctx: _FlowCtx, rng: random.Random, *, focused: Optional[str] = None,
                    focused_value: Any = None) -> Tuple[Dict[str, Any], str]:
        parts = step.target.split()
        cmd = self._find_command(parts[0], 1, ctx.guild_id)
        data: Dict[str, Any] = {"name": parts[0], "type": 1}
        if cmd is None:
            if parts[0] not in self._inferred:
                self._inferred.add(parts[0])
                if self.server.commands_synced.is_set():
                    self.warn(f"/{parts[0]} is not among the commands the bot synced")
            data["id"] = str(9000 + len(self._inferred))
            defs: Optional[List[Dict[str, Any]]] = None
        else:
            data["id"] = cmd["id"]
            if cmd.get("guild_id"):
                data["guild_id"] = cmd["guild_id"]
            defs = cmd.get("options") or []
        container = data
        for i, sub in enumerate(parts[1:]):
            last = i == len(parts) - 2
            if defs is None:
                stype = OPT_SUB if last else OPT_GROUP
                sub_defs = None
            else:
                match = [d for d in defs if d.get("name") == sub and int(d.get("type", 0)) in (OPT_SUB, OPT_GROUP)]
                if not match:
                    raise _StepFailed(f"/{step.target}: no subcommand {sub!r}")
                stype = int(match[0]["type"])
                sub_defs = match[0].get("options") or []
            node: Dict[str, Any] = {"name": sub, "type": stype}
            container["options"] = [node]
            container = node
            defs = sub_defs
        if defs is not None and any(int(d.get("type", 0)) in (OPT_SUB, OPT_GROUP) for d in defs):
            raise _StepFailed(f"/{step.target} is a group: name a subcommand, e.g. '{step.target} <sub>'")
        resolved: Dict[str, Any] = {}
        container["options"] = self._leaf_options(defs, step.options, ctx, resolved, rng, focused=focused,
                                                  focused_value=focused_value)
        if resolved:
            data["resolved"] = resolved
        return data, parts[0]

    def _context_data(self, step: Step, ctx: _FlowCtx, rng: random.Random, ctype: int) -> Tuple[Dict[str, Any], str]:
        srv = self.server
        cmd = self._find_command(step.target, ctype, ctx.guild_id)
        data: Dict[str, Any] = {"name": step.target, "type": ctype,
                                "id": cmd["id"] if cmd else str(9500 + ctype)}
        if cmd is None and step.target not in self._inferred:
            self._inferred.add(step.target)
            if srv.commands_synced.is_set():
                self.warn(f"context menu {step.target!r} is not among the commands the bot synced")
        if cmd is not None and cmd.get("guild_id"):
            data["guild_id"] = cmd["guild_id"]
        resolved: Dict[str, Any] = {}
        target = step.options.get("target")
        if ctype == 2:
            uid = self._user_ref(target, ctx, rng)
            self._add_user_resolved(resolved, uid, ctx)
            data["target_id"] = str(uid)
        else:
            msg = None
            if ctx.view_message_id is not None:
                msg = srv.messages.get(ctx.view_message_id)
            if msg is None:
                msg = srv.user_message(self._user_ref(target, ctx, rng) if target else ctx.user_id, ctx.channel_id,
                                       "a message from the simulation", [])
            resolved["messages"] = {msg["id"]: msg}
            data["target_id"] = msg["id"]
        data["resolved"] = resolved
        return data, step.target

    @staticmethod
    def _walk_components(components: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
        out = []
        stack = list(components or [])
        while stack:
            c = stack.pop(0)
            if not isinstance(c, dict):
                continue
            if c.get("custom_id") is not None or c.get("type") in (2,) + SELECT_TYPES:
                out.append(c)
            for key in ("components",):
                if isinstance(c.get(key), list):
                    stack[0:0] = c[key]
            for key in ("accessory", "component"):
                if isinstance(c.get(key), dict):
                    stack.insert(0, c[key])
        return out

    def _component_data(self, step: Step, ctx: _FlowCtx, rng: random.Random) -> Tuple[Dict[str, Any], Dict[str, Any]]:
        srv = self.server
        # where the view can be: first the previous step's own response message (this user's),
        # then messages the bot sent in this channel since the previous step started (newest
        # first; e.g. `channel.send(view=...)` after an ephemeral ack). Checking the channel
        # first made concurrent users click each other's views.
        bot_id = str(self.scenario.bot_id)
        candidates = []
        if ctx.view_message_id is not None and ctx.view_message_id in srv.messages:
            candidates.append(srv.messages[ctx.view_message_id])
        for mid in reversed(list(srv.messages)):
            if mid <= ctx.step_floor_prev:
                break
            m = srv.messages[mid]
            if m.get("channel_id") == str(ctx.channel_id) and m["author"]["id"] == bot_id and m.get("components"):
                candidates.append(m)
        if not candidates:
            raise _StepFailed(f"{step.kind} {step.target!r}: the previous step's response carried no components")
        names: List[Any] = []
        msg = None
        match: List[Dict[str, Any]] = []
        for msg in candidates:
            comps = self._walk_components(msg.get("components") or [])
            if step.kind == "button":
                cands = [c for c in comps if c.get("type") == 2]
                match = [c for c in cands if c.get("custom_id") == step.target] or \
                        [c for c in cands if c.get("label") == step.target]
            else:
                cands = [c for c in comps if c.get("type") in SELECT_TYPES]
                match = [c for c in cands if c.get("custom_id") == step.target or
                         c.get("placeholder") == step.target] if step.target else cands
            if match:
                break
            names.extend(c.get("label") or c.get("placeholder") or c.get("custom_id") for c in cands)
        if not match or msg is None:
            raise _StepFailed(f"no {step.kind} {step.target!r} on the previous response (found {names})")
        comp = match[0]
        if comp.get("disabled"):
            raise _StepFailed(f"{step.kind} {step.target!r} is disabled")
        if comp.get("custom_id") is None:
            raise _StepFailed(f"{step.kind} {step.target!r} is a link button (no custom_id)")
        data: Dict[str, Any] = {"custom_id": comp["custom_id"], "component_type": comp["type"]}
        if comp["type"] != 2:
            values: List[str] = []
            resolved: Dict[str, Any] = {}
            if comp["type"] == 3:
                options = comp.get("options") or []
                for v in step.values:
                    for o in options:
                        if o.get("value") == v or o.get("label") == v:
                            values.append(o["value"])
                            break
                    else:
                        raise _StepFailed(f"select {comp['custom_id']!r} has no option {v!r}")
                if not values:
                    values = [o["value"] for o in options[: max(1, int(comp.get("min_values") or 1))]]
            elif comp["type"] in (5, 7):
                uids = [self._user_ref(v, ctx, rng) for v in (step.values or ["@random"])]
                for uid in uids:
                    self._add_user_resolved(resolved, uid, ctx)
                values = [str(u) for u in uids]
            elif comp["type"] == 6:
                gid = ctx.guild_id or self.scenario.guilds[0].id
                role = srv.roles_payload(gid)[0]
                resolved["roles"] = {role["id"]: role}
                values = [role["id"]]
            elif comp["type"] == 8:
                cids = [self._channel_ref(v, ctx) for v in (step.values or ["#here"])]
                resolved["channels"] = {str(c): dict(srv.channel_payload(c), permissions="2251799813685247")
                                        for c in cids}
                values = [str(c) for c in cids]
            data["values"] = values
            if resolved:
                data["resolved"] = resolved
        return data, msg

    def _modal_data(self, step: Step, ctx: _FlowCtx) -> Tuple[Dict[str, Any], Optional[Dict[str, Any]]]:
        modal = ctx.modal
        if modal is None:
            raise _StepFailed("modal: the previous step did not open a modal")
        if step.target and step.target not in (modal.get("custom_id"), modal.get("title")):
            raise _StepFailed(f"modal {step.target!r}: the open modal is {modal.get('custom_id')!r}")
        fields = {k.casefold(): v for k, v in step.fields.items()}
        used = set()

        def value_for(c: Dict[str, Any], label: Optional[str]) -> str:
            for key in (c.get("custom_id"), label, c.get("label"), c.get("placeholder")):
                if key is not None and str(key).casefold() in fields:
                    used.add(str(key).casefold())
                    return fields[str(key).casefold()]
            return c.get("value") or "s" * max(3, int(c.get("min_length") or 0))

        def submit(c: Dict[str, Any], label: Optional[str] = None) -> Optional[Dict[str, Any]]:
            t = c.get("type")
            if t == 1:
                inner = [x for x in (submit(i) for i in c.get("components") or []) if x is not None]
                return {"type": 1, "components": inner}
            if t == 18:
                inner = submit(c.get("component") or {}, c.get("label"))
                out = {"type": 18, "component": inner}
                if "id" in c:
                    out["id"] = c["id"]
                return out if inner is not None else None
            if t == 4:
                out = {"type": 4, "custom_id": c.get("custom_id"), "value": value_for(c, label)}
                if "id" in c:
                    out["id"] = c["id"]
                return out
            if t in SELECT_TYPES:
                opts = c.get("options") or []
                raw = value_for(c, label) if any(k is not None and str(k).casefold() in fields
                                                 for k in (c.get("custom_id"), label)) else None
                vals = [raw] if raw is not None else [o["value"] for o in opts[:1]]
                out = {"type": t, "custom_id": c.get("custom_id"), "values": vals}
                if "id" in c:
                    out["id"] = c["id"]
                return out
            if t == 10:
                return {"type": 10, "id": c.get("id", 0)}
            return None

        comps = [x for x in (submit(c) for c in modal.get("components") or []) if x is not None]
        unknown = set(fields) - used
        if unknown:
            raise _StepFailed(f"modal {modal.get('custom_id')!r} has no field {sorted(unknown)}")
        message = None
        src = ctx.modal_source
        if src is not None and src.source_message_id is not None:
            message = self.server.messages.get(src.source_message_id)
        return {"custom_id": modal["custom_id"], "components": comps}, message

    def _build_interaction(self, step: Step, ctx: _FlowCtx, rng: random.Random
                           ) -> Tuple[int, Dict[str, Any], Optional[Dict[str, Any]], str]:
        if step.kind == "command":
            data, name = self._slash_data(step, ctx, rng)
            return 2, data, None, step.target
        if step.kind == "autocomplete":
            data, name = self._slash_data(step, ctx, rng, focused=step.option, focused_value=step.value)
            return 4, data, None, step.target
        if step.kind == "user_command":
            data, name = self._context_data(step, ctx, rng, 2)
            return 2, data, None, name
        if step.kind == "message_command":
            data, name = self._context_data(step, ctx, rng, 3)
            return 2, data, None, name
        if step.kind in ("button", "select"):
            data, msg = self._component_data(step, ctx, rng)
            return 3, data, msg, ""
        if step.kind == "modal":
            data, msg = self._modal_data(step, ctx)
            ctx.modal = None
            return 5, data, msg, ""
        raise _StepFailed(f"unknown step kind {step.kind!r}")   # pragma: no cover
