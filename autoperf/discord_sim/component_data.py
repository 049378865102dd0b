"""What a simulated user sends when pressing a button, choosing in a select menu or submitting a modal,
found on the message the previous step produced (or the message a wait step matched)."""
from __future__ import annotations

import random
from typing import Any, Dict, List, Optional, Tuple

from .actor import ActorCtx, StepFailed, add_user_resolved, channel_ref, resolved_channel, user_ref
from .scenario import Step
from .tracker import visible_to
from .world import World

SELECT_TYPES = (3, 5, 6, 7, 8)


def walk_components(components: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Every interactive component of a message, depth first in reading order (rows, sections, labels)."""
    out = []
    stack = list(components or [])
    while stack:
        c = stack.pop(0)
        if not isinstance(c, dict):
            continue
        if c.get("custom_id") is not None or c.get("type") in (2,) + SELECT_TYPES:
            out.append(c)
        if isinstance(c.get("components"), list):
            stack[0:0] = c["components"]
        for key in ("accessory", "component"):
            if isinstance(c.get(key), dict):
                stack.insert(0, c[key])
    return out


class ComponentData:
    def __init__(self, world: World):
        self.world = world

    def _candidates(self, ctx: ActorCtx) -> List[Dict[str, Any]]:
        """Where the view can be: the previous step's response (or the waited-for message), then what the
        bot sent while handling the previous interaction, then messages the bot sent in this channel since
        the previous step started (newest first; e.g. ``channel.send(view=...)`` from a task)."""
        messages = self.world.messages
        out: List[Dict[str, Any]] = []
        if ctx.view_message_id is not None and ctx.view_message_id in messages:
            out.append(messages[ctx.view_message_id])
        caused = ctx.last_st.caused if ctx.last_st is not None else []
        out.extend(messages[m] for m in reversed(caused) if m in messages and messages[m].get("components"))
        bot_id = self.world.bot_user["id"]
        for mid in reversed(messages):
            if mid <= ctx.step_floor_prev:
                break
            m = messages[mid]
            if m.get("channel_id") == str(ctx.channel_id) and m["author"]["id"] == bot_id and m.get("components") \
                    and visible_to(m, ctx.user_id):
                out.append(m)
        return out

    def component(self, step: Step, ctx: ActorCtx, rng: random.Random) -> Tuple[Dict[str, Any], Dict[str, Any]]:
        """(interaction data, the message it was on) for a button or select step."""
        candidates = self._candidates(ctx)
        if not candidates:
            raise StepFailed(f"{step.kind} {step.target!r}: the previous step's response carried no components")
        names: List[Any] = []
        match: List[Dict[str, Any]] = []
        msg: Dict[str, Any] = candidates[0]
        for msg in candidates:
            comps = walk_components(msg.get("components") or [])
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
        if not match:
            raise StepFailed(f"no {step.kind} {step.target!r} on the previous response (found {names})")
        comp = match[0]
        if comp.get("disabled"):
            raise StepFailed(f"{step.kind} {step.target!r} is disabled")
        if comp.get("custom_id") is None:
            raise StepFailed(f"{step.kind} {step.target!r} is a link button (no custom_id)")
        data: Dict[str, Any] = {"custom_id": comp["custom_id"], "component_type": comp["type"]}
        if comp["type"] != 2:
            data["values"], resolved = self._select_values(step, comp, ctx, rng)
            if resolved:
                data["resolved"] = resolved
        return data, msg

    def _select_values(self, step: Step, comp: Dict[str, Any], ctx: ActorCtx,
                       rng: random.Random) -> Tuple[List[str], Dict[str, Any]]:
        resolved: Dict[str, Any] = {}
        if comp["type"] == 3:
            options = comp.get("options") or []
            values = []
            for v in step.values:
                for o in options:
                    if o.get("value") == v or o.get("label") == v:
                        values.append(o["value"])
                        break
                else:
                    raise StepFailed(f"select {comp['custom_id']!r} has no option {v!r}")
            return values or [o["value"] for o in options[: max(1, int(comp.get("min_values") or 1))]], resolved
        if comp["type"] in (5, 7):
            uids = [user_ref(self.world, v, ctx, rng) for v in (step.values or ["@random"])]
            for uid in uids:
                add_user_resolved(self.world, resolved, uid, ctx)
            return [str(u) for u in uids], resolved
        if comp["type"] == 6:
            role = self.world.roles_payload(ctx.guild_id or self.world.scenario.guilds[0].id)[0]
            resolved["roles"] = {role["id"]: role}
            return [role["id"]], resolved
        cids = [channel_ref(self.world, v, ctx) for v in (step.values or ["#here"])]
        resolved["channels"] = {str(c): resolved_channel(self.world, c) for c in cids}
        return [str(c) for c in cids], resolved

    def modal(self, step: Step, ctx: ActorCtx) -> Tuple[Dict[str, Any], Optional[Dict[str, Any]]]:
        """(interaction data, the message the modal's opener was on) for a modal submit step."""
        modal = ctx.modal
        if modal is None:
            raise StepFailed("modal: the previous step did not open a modal")
        if step.target and step.target not in (modal.get("custom_id"), modal.get("title")):
            raise StepFailed(f"modal {step.target!r}: the open modal is {modal.get('custom_id')!r}")
        fields = {k.casefold(): v for k, v in step.fields.items()}
        used = set()

        def value_for(c: Dict[str, Any], label: Optional[str]) -> str:
            for key in (c.get("custom_id"), label, c.get("label"), c.get("placeholder")):
                if key is not None and str(key).casefold() in fields:
                    used.add(str(key).casefold())
                    return fields[str(key).casefold()]
            return c.get("value") or "s" * max(3, int(c.get("min_length") or 0))

        def with_id(out: Dict[str, Any], c: Dict[str, Any]) -> Dict[str, Any]:
            if "id" in c:
                out["id"] = c["id"]
            return out

        def submit(c: Dict[str, Any], label: Optional[str] = None) -> Optional[Dict[str, Any]]:
            t = c.get("type")
            if t == 1:
                return {"type": 1, "components": [x for x in (submit(i) for i in c.get("components") or [])
                                                  if x is not None]}
            if t == 18:
                inner = submit(c.get("component") or {}, c.get("label"))
                return with_id({"type": 18, "component": inner}, c) if inner is not None else None
            if t == 4:
                return with_id({"type": 4, "custom_id": c.get("custom_id"), "value": value_for(c, label)}, c)
            if t in SELECT_TYPES:
                opts = c.get("options") or []
                named = any(k is not None and str(k).casefold() in fields for k in (c.get("custom_id"), label))
                vals = [value_for(c, label)] if named else [o["value"] for o in opts[:1]]
                return with_id({"type": t, "custom_id": c.get("custom_id"), "values": vals}, c)
            if t == 10:
                return {"type": 10, "id": c.get("id", 0)}
            return None

        comps = [x for x in (submit(c) for c in modal.get("components") or []) if x is not None]
        unknown = set(fields) - used
        if unknown:
            raise StepFailed(f"modal {modal.get('custom_id')!r} has no field {sorted(unknown)}")
        src = ctx.modal_source
        message = self.world.messages.get(src.source_message_id) if src is not None and src.source_message_id else None
        return {"custom_id": modal["custom_id"], "components": comps}, message
