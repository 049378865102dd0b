"""One simulated user inside a flow: where they are, what they last saw (``ActorCtx``), and how the
scenario names users and channels ("@random", "@alice", "#general", an id)."""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

from .scenario import Flow
from .wire import InteractionState
from .world import World


class StepFailed(Exception):
    """The step could not be played (an unknown option, no such button ...): a step error."""


@dataclass
class ActorCtx:
    flow: Flow
    actor: str
    user_id: int
    channel_id: int
    guild_id: Optional[int]
    cast: Dict[str, int] = field(default_factory=dict)    # actor name -> user id, for every actor of the flow
    view_message_id: Optional[int] = None   # the message the next button / select acts on
    step_floor: int = 0          # snowflake taken when the current step started
    step_floor_prev: int = 0     # ... and when the previous one did: newer bot messages are its response
    last_action_t: float = 0.0   # loop time of the previous action (a wait's latency starts there)
    seen: Dict[int, int] = field(default_factory=dict)  # message id -> its change snowflake when a wait took it
    last_st: Optional[InteractionState] = None   # the previous interaction step's state
    modal: Optional[Dict[str, Any]] = None
    modal_source: Optional[InteractionState] = None


def user_ref(world: World, value: Any, ctx: ActorCtx, rng: random.Random) -> int:
    """A user named in the scenario: an id, "@self", "@random" (another user), "@bot", a name or an actor."""
    scn = world.scenario
    if isinstance(value, int) and not isinstance(value, bool):
        if value in world.users or value == scn.bot_id:
            return value
        raise StepFailed(f"unknown user id {value}")
    text = str(value or "@random").lstrip("@")
    if text in ("self", "me"):
        return ctx.user_id
    if text in ("random", "other", ""):
        others = [u.id for u in scn.users if u.id != ctx.user_id] or [ctx.user_id]
        return rng.choice(others)
    if text == "bot":
        return scn.bot_id
    if text in ctx.cast:
        return ctx.cast[text]
    for u in scn.users:
        if u.name == text or str(u.id) == text:
            return u.id
    raise StepFailed(f"unknown user {value!r}")


def add_user_resolved(world: World, resolved: Dict[str, Any], uid: int, ctx: ActorCtx) -> None:
    resolved.setdefault("users", {})[str(uid)] = world.user(uid)
    if ctx.guild_id is not None:
        resolved.setdefault("members", {})[str(uid)] = world.member_payload(uid, ctx.guild_id, with_user=False,
                                                                           permissions=True)


def channel_ref(world: World, value: Any, ctx: ActorCtx) -> int:
    if value in (None, "", "#here", "here"):
        return ctx.channel_id
    if isinstance(value, int) and value in world.channels:
        return value
    text = str(value).lstrip("#")
    for cid, (_, name) in world.channels.items():
        if name == text or str(cid) == text:
            return cid
    raise StepFailed(f"unknown channel {value!r}")


def resolved_channel(world: World, cid: int) -> Dict[str, Any]:
    return dict(world.channel_payload(cid), permissions="2251799813685247")


def pick_channel(world: World, rng: random.Random, name: Optional[str], user_id: int) -> Tuple[int, Optional[int]]:
    """(channel id, guild id) for a step's ``channel:`` ("dm": the user's DMs); none given: a random one."""
    if name == "dm":
        return world.dm_channel(user_id), None
    if name:
        for g in world.scenario.guilds:
            for c in g.channels:
                if c.name == name:
                    return c.id, g.id
    g = rng.choice(world.scenario.guilds)
    c = rng.choice(g.channels)
    return c.id, g.id
