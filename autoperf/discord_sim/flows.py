"""Playing one flow: each actor (a simulated user) plays its steps in order, actors concurrently; each
step is timed from what it sent to what the bot answered for it, then checked against its ``expect:``.

Step kinds: interactions (commands, components, modals, context menus, autocomplete), messages, and
waits for a bot message (in a channel, the user's DMs or anywhere, matching ``match:``) that the next
button / select then acts on. When an actor fails, the other actors of its flow stop (skipped).
"""
from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from .actor import ActorCtx, StepFailed, pick_channel
from .command_data import CommandData
from .component_data import ComponentData
from .expectations import Response, describe_all, matches, unmet, wanted
from .report import StepResult
from .scenario import ANYWHERE, DM, Actor, Expectation, Flow, Scenario, Step
from .tracker import visible_to
from .wire import CB_DEFERRED_MESSAGE, InteractionState, MessageWait

SKIPPED = "an earlier step of the flow failed"


@dataclass
class Pending:
    """A step being (or that was) played: its result, and the interaction or message it sent."""
    result: StepResult
    st: Optional[InteractionState] = None
    wait: Optional[MessageWait] = None


class _Group:
    """The actors of one flow: the first failure stops the others."""

    def __init__(self) -> None:
        self.failed: Optional[str] = None
        self.tasks: List[asyncio.Task] = []

    def fail(self, reason: str) -> None:
        if self.failed is None:
            self.failed = reason
            me = asyncio.current_task()
            for t in self.tasks:
                if t is not me:
                    t.cancel()


class FlowPlayer:
    def __init__(self, server: Any, scenario: Scenario, warn: Callable[[str], None]):
        self.server, self.world, self.scenario = server, server.world, scenario
        self.commands = CommandData(server, warn)
        self.components = ComponentData(server.world)
        self.warn = warn
        self.pending: List[Pending] = []
        self.t0 = 0.0             # loop time the scenario started (StepResult.t_start is relative to it)
        self.completed = 0

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _cast(self, flow: Flow, first_user: int, rng: random.Random) -> Dict[str, int]:
        """Actor name -> user: a scenario user of that name, else ``first_user``, else distinct random users."""
        cast: Dict[str, int] = {}
        for a in flow.actors:
            u = self.scenario.user_named(a.name) if a.name else None
            if u is not None:
                cast[a.name] = u.id
        for a in flow.actors:
            if a.name not in cast:
                taken = set(cast.values())
                if first_user not in taken:
                    cast[a.name] = first_user
                else:
                    cast[a.name] = rng.choice([u.id for u in self.scenario.users if u.id not in taken])
        return cast

    async def play(self, flow: Flow, user_id: int, rng: random.Random) -> None:
        cast = self._cast(flow, user_id, rng)
        if len(flow.actors) == 1:
            ok = await self._play_actor(flow, flow.actors[0], cast, rng, None)
        else:
            group = _Group()
            rngs = [random.Random(rng.getrandbits(64)) for _ in flow.actors]
            group.tasks = [asyncio.ensure_future(self._play_actor(flow, a, cast, r, group))
                           for a, r in zip(flow.actors, rngs)]
            ok = all(await asyncio.gather(*group.tasks))
        if ok:
            self.completed += 1

    def _begin(self, flow: Flow, actor: Actor, step: Step, user_id: int) -> Pending:
        pending = Pending(StepResult(flow=flow.name, step=step.name, kind=step.kind, user_id=user_id,
                                     actor=actor.name, t_start=self._now() - self.t0))
        self.pending.append(pending)
        return pending

    def _skip_rest(self, flow: Flow, actor: Actor, steps: List[Step], user_id: int, reason: str) -> None:
        for step in steps:
            res = self._begin(flow, actor, step, user_id).result
            res.status, res.error = "skipped", reason

    async def _play_actor(self, flow: Flow, actor: Actor, cast: Dict[str, int], rng: random.Random,
                          group: Optional[_Group]) -> bool:
        uid = cast[actor.name]
        channel_id, guild_id = pick_channel(self.world, rng, actor.steps[0].channel, uid)
        ctx = ActorCtx(flow=flow, actor=actor.name, user_id=uid, channel_id=channel_id, guild_id=guild_id,
                       cast=cast, step_floor=self.world.snowflake(), last_action_t=self._now())
        running: Optional[Pending] = None
        i = 0
        try:
            for i, step in enumerate(actor.steps):
                if i:
                    # a user reads the response before clicking; discord.py also stores the view/modal only
                    # after the callback's HTTP response arrived, as with the real Discord
                    await asyncio.sleep(self.scenario.step_gap_s)
                if step.channel:
                    ctx.channel_id, ctx.guild_id = pick_channel(self.world, rng, step.channel, uid)
                running = self._begin(flow, actor, step, uid)
                ctx.step_floor_prev, ctx.step_floor = ctx.step_floor, self.world.snowflake()
                await self._play_step(step, ctx, running, rng)
                res, running = running.result, None
                if res.status != "ok":
                    if group is not None:
                        group.fail(f"{actor.name} failed at {step.name}")
                    self._skip_rest(flow, actor, actor.steps[i + 1:], uid, SKIPPED)
                    return False
            return True
        except asyncio.CancelledError:
            if group is None or group.failed is None:     # the run is over (grace_s): not a failure of ours
                if running is not None:
                    res, st = running.result, running.st
                    if res.status == "ok" and res.first_ms is None and st is not None and st.t_first is None:
                        res.status = "timeout"
                raise
            if running is not None:
                running.result.status, running.result.error = "skipped", group.failed
            self._skip_rest(flow, actor, actor.steps[i + 1:], uid, group.failed)
            return False

    async def _play_step(self, step: Step, ctx: ActorCtx, pending: Pending, rng: random.Random) -> None:
        try:
            if step.kind == "message":
                await self._message_step(step, ctx, pending)
            elif step.kind == "wait":
                await self._wait_step(step, ctx, pending)
            else:
                await self._interaction_step(step, ctx, pending, rng)
            if step.expect is not None and step.kind != "wait":
                await self._check(step.expect, step, ctx, pending)
        except StepFailed as exc:
            pending.result.status, pending.result.error = "error", str(exc)

    # ------------------------------------------------------------------ interactions and messages
    def _build(self, step: Step, ctx: ActorCtx, rng: random.Random) -> Tuple[int, Dict[str, Any], Optional[dict], str]:
        """(interaction type, data, the message it is on, command name) for an interaction step."""
        if step.kind == "command":
            return 2, self.commands.slash(step, ctx, rng), None, step.target
        if step.kind == "autocomplete":
            return 4, self.commands.slash(step, ctx, rng, focused=step.option, focused_value=step.value), None, step.target
        if step.kind in ("user_command", "message_command"):
            return 2, self.commands.context_menu(step, ctx, rng, 2 if step.kind == "user_command" else 3), None, step.target
        if step.kind == "modal":
            data, msg = self.components.modal(step, ctx)
            ctx.modal = None
            return 5, data, msg, ""
        data, msg = self.components.component(step, ctx, rng)
        return 3, data, msg, ""

    async def _interaction_step(self, step: Step, ctx: ActorCtx, pending: Pending, rng: random.Random) -> None:
        scn, srv, res = self.scenario, self.server, pending.result
        itype, data, message, name = self._build(step, ctx, rng)
        # a click happens where the message is (a button in the user's DMs is a DM interaction)
        channel_id = int(message["channel_id"]) if message is not None else ctx.channel_id
        st, payload = srv.new_interaction(itype, data, user_id=ctx.user_id, channel_id=channel_id,
                                          step=step.name, name=name, message=message)
        pending.st = ctx.last_st = st
        res.interaction_id = st.id
        if not await srv.send_interaction(st, payload):
            raise StepFailed("the bot is not connected to the gateway")
        ctx.last_action_t = st.t_dispatch
        timeout = step.timeout_s or scn.step_timeout_s
        try:
            await asyncio.wait_for(st.first_event.wait(), timeout)
        except asyncio.TimeoutError:
            res.status, res.error = "timeout", f"no interaction callback within {timeout:g}s"
            return
        if st.first_type == CB_DEFERRED_MESSAGE:          # "thinking": the user waits for the followup / edit
            try:
                await asyncio.wait_for(st.final_event.wait(), scn.final_timeout_s)
            except asyncio.TimeoutError:
                res.status = "error"
                res.error = f"deferred (thinking) but no followup or edit within {scn.final_timeout_s:g}s"
                return
        if st.view_message_id is not None:
            ctx.view_message_id = st.view_message_id
        if st.modal is not None:
            ctx.modal, ctx.modal_source = st.modal, st

    async def _message_step(self, step: Step, ctx: ActorCtx, pending: Pending) -> None:
        srv, res = self.server, pending.result
        msg = srv.user_message(ctx.user_id, ctx.channel_id, step.target, step.attachments)
        res.message_id = int(msg["id"])
        wait, note = await srv.send_user_message(msg, step.name)
        self.warn(note)
        if wait is None:
            raise StepFailed(note or "MESSAGE_CREATE not delivered")
        pending.wait = wait
        ctx.last_action_t = wait.t_dispatch
        if not step.expect_reply:
            return
        timeout = step.timeout_s or self.scenario.step_timeout_s
        try:
            await asyncio.wait_for(wait.first_event.wait(), timeout)
        except asyncio.TimeoutError:
            res.status, res.error = "timeout", f"no reply within {timeout:g}s"

    # ------------------------------------------------------------------ expectations
    def _response(self, pending: Pending) -> Response:
        messages = self.world.messages
        if pending.st is not None:
            st = pending.st
            ids = st.message_ids + [m for m in st.caused if m not in st.message_ids]
            return Response([messages[m] for m in ids if m in messages], st.ephemeral, st.modal)
        ids = pending.wait.reply_ids if pending.wait is not None else []
        return Response([messages[m] for m in ids if m in messages], False if ids else None)

    def _mention_id(self, exp: Optional[Expectation], ctx: ActorCtx) -> Optional[int]:
        if exp is None or exp.mentions is None:
            return None
        if exp.mentions == "me":
            return ctx.user_id
        if exp.mentions == "bot":
            return self.scenario.bot_id
        if exp.mentions in ctx.cast:
            return ctx.cast[exp.mentions]
        user = self.scenario.user_named(exp.mentions)
        return user.id if user is not None else None

    async def _check(self, exp: Expectation, step: Step, ctx: ActorCtx, pending: Pending) -> None:
        """Compare the step with ``exp``; wait for more of the response until the step's timeout if needed."""
        res = pending.result
        got = res.status if res.status != "ok" or pending.st is None or not pending.st.errors else "error"
        if exp.status is not None and got != exp.status:
            detail = f" ({res.error})" if res.error else ""
            res.status, res.error = "failed", (f"expected status {exp.status}, got {got}{detail}: "
                                               f"{describe_all(self._response(pending).messages)}")
            return
        if got != "ok":
            if exp.status is not None:       # the timeout / error the scenario asked for
                res.status, res.expected, res.error = "ok", got, None
            return
        source = pending.st if pending.st is not None else pending.wait
        if source is None:
            return
        deadline = source.t_dispatch + (step.timeout_s or self.scenario.step_timeout_s)
        mention = self._mention_id(exp, ctx)
        while True:
            source.changed.clear()
            problem = unmet(exp, self._response(pending), mention)
            if problem is None:
                return
            remaining = deadline - self._now()
            if remaining <= 0:
                res.status, res.error = "failed", problem
                return
            try:
                await asyncio.wait_for(source.changed.wait(), remaining)
            except asyncio.TimeoutError:
                pass

    # ------------------------------------------------------------------ waits for a bot message
    def _place(self, target: str, ctx: ActorCtx) -> Tuple[Set[int], str]:
        """The channels a wait looks in, and how to say it."""
        dm = self.world.dm_channel(ctx.user_id)
        if target == DM:
            return {dm}, "in the user's DMs"
        if target == ANYWHERE:
            return set(self.world.channels) | {dm}, "anywhere"
        return {cid for cid, (_, name) in self.world.channels.items() if name == target}, f"in #{target}"

    def _since_floor(self, ctx: ActorCtx, channels: Set[int]) -> List[Dict[str, Any]]:
        """Bot messages this user sees in ``channels``, created or edited since the previous step began, newest first."""
        out = []
        bot_id = self.world.bot_user["id"]
        for mid, (changed, _) in reversed(self.world.touched.items()):
            if changed <= ctx.step_floor_prev:
                break
            msg = self.world.messages[mid]
            if int(msg["channel_id"]) in channels and msg["author"]["id"] == bot_id and visible_to(msg, ctx.user_id):
                out.append(msg)
        return out

    async def _wait_step(self, step: Step, ctx: ActorCtx, pending: Pending) -> None:
        res, world, exp = pending.result, self.world, step.expect
        channels, where = self._place(step.target, ctx)
        mention = self._mention_id(exp, ctx)

        def accept(msg: Dict[str, Any]) -> bool:
            mid = int(msg["id"])
            if mid in ctx.seen and world.touched.get(mid, (0, 0.0))[0] <= ctx.seen[mid]:
                return False            # taken by an earlier wait of this user, unchanged since
            return exp is None or matches(exp, msg, mention)

        found = next((m for m in reversed(self._since_floor(ctx, channels)) if accept(m)), None)
        if found is None:
            watch = self.server.tracker.watch(ctx.user_id, channels, accept)
            timeout = step.timeout_s or self.scenario.wait_timeout_s
            try:
                found = await asyncio.wait_for(watch.future, timeout)
            except asyncio.TimeoutError:
                what = wanted(exp) if exp is not None else "a message"
                res.status = "timeout"
                res.error = (f"no {what[2:] if what.startswith('a ') else what} {where} within {timeout:g}s; "
                             f"since the previous step: {describe_all(self._since_floor(ctx, channels))}")
                return
            finally:
                self.server.tracker.unwatch(watch)
        mid = int(found["id"])
        changed, t_msg = world.touched.get(mid, (mid, self._now()))
        ctx.seen[mid] = changed
        res.message_id = mid
        res.first_ms = res.final_ms = max(0.0, (t_msg - ctx.last_action_t) * 1000.0)
        ctx.last_action_t = t_msg
        ctx.view_message_id = mid
        ctx.channel_id = int(found["channel_id"])
        ctx.guild_id = world.guild_of(ctx.channel_id)
