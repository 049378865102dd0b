"""Plays a scenario against a bot connected to the loopback Discord and measures what users see.

    report = await run_scenario(scenario, on_started=lambda url: ...)      # same loop as the bot
    handle = start_in_thread(scenario); point_discord_at(handle.base_url); bot.run(token)  # other thread
    report = handle.wait()

Timeline: start the server -> wait for the bot to IDENTIFY (ready_timeout) -> wait warmup_s after the
last GUILD_CREATE and for the command sync (sync_timeout_s, only if the scenario uses commands) ->
start flows for duration_s (rate or think time) -> wait up to grace_s for running flows -> build the
report -> on_finished(report) (and close the bot's discord.Client with close_clients=True) -> wait up to
5 s for the bot to leave the gateway -> stop the server. Everything on 127.0.0.1; nothing outlives it.
"""
from __future__ import annotations

import asyncio
import inspect
import random
import threading
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

from .report import SimReport, StepResult
from .scenario import Flow, Scenario, Step, load_scenario
from .server import InteractionState, MessageWait, SimServer

__all__ = ["Simulation", "run_scenario", "start_in_thread", "start_in_process", "SimHandle"]

# option types
OPT_SUB, OPT_GROUP, OPT_STR, OPT_INT, OPT_BOOL, OPT_USER, OPT_CHANNEL, OPT_ROLE, OPT_MENTIONABLE, OPT_NUMBER, OPT_ATTACHMENT = range(1, 12)
SELECT_TYPES = (3, 5, 6, 7, 8)


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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


@dataclass
class _Pending:
    result: StepResult
    st: Optional[InteractionState] = None
    wait: Optional[MessageWait] = None


class Simulation:
    """Server + driver for one scenario. `await start()`, connect the bot, `await run()`, `await close()`."""

    def __init__(self, scenario: Union[Scenario, dict, str], *, host: str = "127.0.0.1", port: int = 0,
                 ready_timeout: float = 30.0):
        self.scenario = load_scenario(scenario)
        if not _is_loopback(host):
            raise ValueError(f"discord_sim listens on loopback only (127.0.0.0/8, ::1, localhost), not {host!r}")
        self.host, self.port, self.ready_timeout = host, port, ready_timeout
        self.server = SimServer(self.scenario)
        self.rng = random.Random(self.scenario.seed)
        self._pending: List[_Pending] = []
        self._warnings: List[str] = []
        self._stop: Optional[asyncio.Event] = None
        self._t0 = 0.0
        self._flows_started = 0
        self._flows_completed = 0
        self._inferred: set = set()

    @property
    def base_url(self) -> str:
        return self.server.base_url

    def warn(self, text: str) -> None:
        if text and text not in self._warnings:
            self._warnings.append(text)

    async def start(self) -> str:
        self._stop = asyncio.Event()
        await self.server.start(self.host, self.port)
        return self.server.base_url

    def request_stop(self) -> None:
        """Stop starting flows now (call from the sim loop; SimHandle.stop() does it thread-safely)."""
        if self._stop is not None:
            self._stop.set()

    async def close(self, *, bot_leave_timeout: float = 5.0) -> None:
        if self.server.connected:
            try:
                await asyncio.wait_for(self.server.disconnected.wait(), bot_leave_timeout)
            except asyncio.TimeoutError:
                pass
        await self.server.close()

    # ------------------------------------------------------------------ main
    async def run(self) -> SimReport:
        scn = self.scenario
        srv = self.server
        report = SimReport(seed=scn.seed)
        loop = asyncio.get_running_loop()
        assert self._stop is not None, "call start() first"
        stopper = asyncio.ensure_future(self._stop.wait())
        ready = asyncio.ensure_future(srv.ready_sent.wait())
        try:
            await asyncio.wait([ready, stopper], timeout=self.ready_timeout, return_when=asyncio.FIRST_COMPLETED)
            ready.cancel()
            if not srv.ready_sent.is_set():
                report.error = (f"the bot did not connect to the gateway within {self.ready_timeout:.0f}s"
                                if not self._stop.is_set() else "stopped before the bot connected")
                return self._finish(report, 0.0)
            needs_sync = any(s.kind in ("command", "user_command", "message_command", "autocomplete")
                             for f in scn.mix for s in f.steps)
            t_sync = loop.time() + scn.sync_timeout_s
            if scn.warmup_s > 0:
                await self._sleep(scn.warmup_s)
            if needs_sync and not srv.commands_synced.is_set():
                remaining = max(0.0, t_sync - loop.time())
                try:
                    await asyncio.wait_for(srv.commands_synced.wait(), remaining)
                except asyncio.TimeoutError:
                    self.warn(f"the bot did not sync application commands within {scn.sync_timeout_s:.0f}s; "
                              "interaction payloads are built from the scenario's options")
                await self._sleep(0.05)   # let discord.py finish handling the sync response
            self._t0 = loop.time()
            await self._play()
        finally:
            stopper.cancel()
            ready.cancel()
        return self._finish(report, loop.time() - self._t0)

    async def _sleep(self, seconds: float) -> None:
        assert self._stop is not None
        if seconds <= 0:
            return
        try:
            await asyncio.wait_for(self._stop.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    def plan(self, n: Optional[int] = None) -> "Iterator[Tuple[float, Flow, int, int]]":
        """The arrival plan, a pure function of the seed: (gap_s before it, flow, user id, flow seed).

        Rate mode only (think-time mode draws per user). `n` limits the count; the driver stops at
        duration_s / max_flows."""
        scn = self.scenario
        rng = random.Random(scn.seed)
        weights = [f.weight for f in scn.mix]
        rate = scn.rate or 1.0
        i = 0
        while n is None or i < n:
            if scn.mix_order == "round_robin":
                flow = scn.mix[i % len(scn.mix)]
            else:
                flow = rng.choices(scn.mix, weights=weights)[0]
            user = rng.choice(scn.users).id
            yield (0.0 if i == 0 else rng.expovariate(rate)), flow, user, rng.getrandbits(64)
            i += 1

    async def _play(self) -> None:
        scn = self.scenario
        loop = asyncio.get_running_loop()
        assert self._stop is not None
        tasks: List[asyncio.Task] = []
        deadline = self._t0 + scn.duration_s
        weights = [f.weight for f in scn.mix]

        def can_start() -> bool:
            return (not self._stop.is_set() and loop.time() < deadline and self.server.connected
                    and (scn.max_flows is None or self._flows_started < scn.max_flows))

        def launch(flow: Flow, user_id: int, flow_seed: int) -> asyncio.Task:
            self._flows_started += 1
            return asyncio.ensure_future(self._run_flow(flow, user_id, random.Random(flow_seed)))

        if scn.think_time_s is not None:
            async def user_loop(idx: int, uid: int) -> None:
                rng = random.Random(f"{scn.seed}:{uid}")
                await self._sleep(rng.uniform(0, min(scn.think_time_s or 0.0, 1.0)))
                k = 0
                while can_start():
                    if scn.mix_order == "round_robin":
                        flow = scn.mix[(idx + k) % len(scn.mix)]
                    else:
                        flow = rng.choices(scn.mix, weights=weights)[0]
                    k += 1
                    await launch(flow, uid, rng.getrandbits(64))
                    await self._sleep(rng.expovariate(1.0 / scn.think_time_s) if scn.think_time_s else 0.0)

            tasks = [asyncio.ensure_future(user_loop(i, u.id)) for i, u in enumerate(scn.users)]
            await asyncio.wait(tasks, timeout=scn.duration_s + scn.grace_s)
        else:
            next_t = loop.time()
            for gap, flow, user_id, flow_seed in self.plan():
                next_t += gap       # absolute schedule: loop lag does not lower the rate
                if next_t >= deadline:
                    break
                wait = next_t - loop.time()
                if wait > 0:
                    await self._sleep(wait)
                if not can_start():
                    break
                tasks.append(launch(flow, user_id, flow_seed))
            if tasks:
                await asyncio.wait(tasks, timeout=scn.grace_s)
        if not self.server.connected and not self._stop.is_set():
            self.warn("the bot left the gateway during the run (crashed or closed): no more flows were started")
        for t in tasks:
            if not t.done():
                t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        # timed-out interactions: keep listening a little to see (and reject) late callbacks
        t_end = loop.time() + scn.late_window_s
        while loop.time() < t_end and not self._stop.is_set() and self.server.connected:
            if not any(p.st is not None and p.st.t_first is None and p.st.t_late is None for p in self._pending):
                break
            await asyncio.sleep(0.02)

    # ------------------------------------------------------------------ flows and steps
    def _pick_channel(self, rng: random.Random, step: Step) -> Tuple[int, Optional[int]]:
        if step.channel:
            for g in self.scenario.guilds:
                for c in g.channels:
                    if c.name == step.channel:
                        return c.id, g.id
        g = rng.choice(self.scenario.guilds)
        c = rng.choice(g.channels)
        return c.id, g.id

    async def _run_flow(self, flow: Flow, user_id: int, rng: random.Random) -> None:
        channel_id, guild_id = self._pick_channel(rng, flow.steps[0])
        ctx = _FlowCtx(flow=flow, user_id=user_id, channel_id=channel_id, guild_id=guild_id)
        failed = False
        for i, step in enumerate(flow.steps):
            if i and not failed:
                # a user reads the response before clicking; discord.py also stores the view/modal only
                # after the callback's HTTP response arrived, as with the real Discord
                await asyncio.sleep(self.scenario.step_gap_s)
            if step.channel:
                ctx.channel_id, ctx.guild_id = self._pick_channel(rng, step)
            res = StepResult(flow=flow.name, step=step.name, kind=step.kind, user_id=user_id,
                             t_start=asyncio.get_running_loop().time() - self._t0)
            pending = _Pending(result=res)
            self._pending.append(pending)
            if failed:
                res.status = "skipped"
                res.error = "an earlier step of the flow failed"
                continue
            ctx.step_floor_prev, ctx.step_floor = ctx.step_floor, self.server.snowflake()
            try:
                if step.kind == "message":
                    await self._message_step(step, ctx, pending, rng)
                else:
                    await self._interaction_step(step, ctx, pending, rng)
            except _StepFailed as exc:
                res.status = "error"
                res.error = str(exc)
            except asyncio.CancelledError:
                if res.status == "ok" and res.first_ms is None and pending.st is not None and pending.st.t_first is None:
                    res.status = "timeout"
                raise
            if res.status != "ok":
                failed = True
        if not failed:
            self._flows_completed += 1

    async def _interaction_step(self, step: Step, ctx: _FlowCtx, pending: _Pending, rng: random.Random) -> None:
        scn = self.scenario
        srv = self.server
        res = pending.result
        itype, data, message, name = self._build_interaction(step, ctx, rng)
        st, payload = srv.new_interaction(itype, data, user_id=ctx.user_id, channel_id=ctx.channel_id,
                                          step=step.name, name=name, message=message)
        pending.st = st
        res.interaction_id = st.id
        if not await srv.send_interaction(st, payload):
            raise _StepFailed("the bot is not connected to the gateway")
        timeout = step.timeout_s or scn.step_timeout_s
        try:
            await asyncio.wait_for(st.first_event.wait(), timeout)
        except asyncio.TimeoutError:
            res.status = "timeout"
            res.error = f"no interaction callback within {timeout:g}s"
            return
        if st.first_type == 5:          # "thinking": the user waits for the followup / edit
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

    async def _message_step(self, step: Step, ctx: _FlowCtx, pending: _Pending, rng: random.Random) -> None:
        srv = self.server
        res = pending.result
        msg = srv.user_message(ctx.user_id, ctx.channel_id, step.target, step.attachments)
        res.message_id = int(msg["id"])
        wait, note = await srv.send_user_message(msg, step.name)
        self.warn(note)
        if wait is None:
            raise _StepFailed(note or "MESSAGE_CREATE not delivered")
        pending.wait = wait
        if not step.expect_reply:
            return
        timeout = step.timeout_s or self.scenario.step_timeout_s
        try:
            await asyncio.wait_for(wait.first_event.wait(), timeout)
        except asyncio.TimeoutError:
            res.status = "timeout"
            res.error = f"no reply within {timeout:g}s"
            return

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

    # ------------------------------------------------------------------ report
    def _finish(self, report: SimReport, duration: float) -> SimReport:
        srv = self.server
        for p in self._pending:
            r = p.result
            if p.st is not None:
                st = p.st
                r.first_ms = st.first_ms()
                r.final_ms = st.final_ms()
                r.callback_type = st.first_type
                if st.t_late is not None:
                    r.late_ms = (st.t_late - st.t_dispatch) * 1000.0
                if st.errors and r.status == "ok":
                    r.status = "error"
                    r.error = "; ".join(st.errors[:3])
                elif st.errors and not r.error:
                    r.error = "; ".join(st.errors[:3])
                if r.status == "ok" and st.t_first is None:
                    r.status = "timeout"
                    r.error = r.error or "no interaction callback"
            elif p.wait is not None:
                w = p.wait
                if w.t_first is not None:
                    r.first_ms = (w.t_first - w.t_dispatch) * 1000.0
                    r.final_ms = ((w.t_final or w.t_first) - w.t_dispatch) * 1000.0
            report.results.append(r)
        report.duration_s = duration
        report.flows_started = self._flows_started
        report.flows_completed = self._flows_completed
        report.calls = srv.calls
        ident = srv.identify or {}
        report.bot = {
            "logged_in": srv.logged_in, "identified": srv.identified.is_set(), "intents": ident.get("intents"),
            "gateway_connections": srv.gateway_connections, "heartbeats": srv.heartbeats,
            "commands_synced": srv.commands_synced.is_set(),
            "commands": sorted({(c.get("name"), int(c.get("type", 1))) for c in srv.all_commands()}),
            "rest_calls": len(srv.calls) + srv.calls_dropped, "calls_dropped": srv.calls_dropped,
        }
        for route in sorted(set(srv.unhandled)):
            self.warn(f"the sim does not implement {route} (answered 404)")
        for e in srv.internal_errors[:5]:
            self.warn(f"sim internal error: {e}")
        report.warnings = list(self._warnings)
        return report.compute()


async def _call_finished(cb: Optional[Callable[[SimReport], Any]], report: SimReport) -> None:
    if cb is None:
        return
    try:
        res = cb(report)
        if inspect.isawaitable(res):
            await res
    except Exception as exc:
        try:
            from autoperf import diagnostics  # type: ignore

            diagnostics.internal_error("discord_sim.on_finished", exc)
        except Exception:
            import logging

            logging.getLogger("autoperf.discord_sim").exception("on_finished callback failed")


async def run_scenario(scenario: Union[Scenario, dict, str], *, host: str = "127.0.0.1", port: int = 0,
                       ready_timeout: float = 30.0, on_started: Optional[Callable[[str], Any]] = None,
                       on_finished: Optional[Callable[[SimReport], Any]] = None,
                       close_clients: bool = False) -> SimReport:
    """Start the sim, call on_started(base_url) (connect the bot there), play the scenario, report, stop.

    close_clients=True closes every discord.Client that logged in through point_discord_at() once the
    report is built (after on_finished)."""
    sim = Simulation(scenario, host=host, port=port, ready_timeout=ready_timeout)
    await sim.start()
    try:
        if on_started is not None:
            res = on_started(sim.base_url)
            if inspect.isawaitable(res):
                await res
        report = await sim.run()
        await _call_finished(on_finished, report)
        if close_clients:
            from .redirect import close_clients as _close

            _close()
        return report
    finally:
        await sim.close()


class SimHandle:
    """A simulation running in a background thread with its own event loop."""

    def __init__(self) -> None:
        self.base_url: str = ""
        self.report: Optional[SimReport] = None
        self.error: Optional[BaseException] = None
        self.simulation: Optional[Simulation] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None
        self._started = threading.Event()
        self._done = threading.Event()
        self._stop_fn: Optional[Callable[[], None]] = None
        self.pid: Optional[int] = None            # start_in_process: the sim's process id

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: Optional[float] = None) -> Optional[SimReport]:
        """Block until the simulation finished (report built, server stopped). Returns the report."""
        self._done.wait(timeout)
        return self.report

    def stop(self, timeout: float = 15.0) -> Optional[SimReport]:
        """Stop starting flows now, build the report, shut down; returns the (partial) report."""
        if self._stop_fn is not None and not self._done.is_set():
            try:
                self._stop_fn()
            except Exception:
                pass
            return self.wait(timeout)
        loop, sim = self._loop, self.simulation
        if loop is not None and sim is not None and not self._done.is_set():
            try:
                loop.call_soon_threadsafe(sim.request_stop)
            except RuntimeError:
                pass
        return self.wait(timeout)


def start_in_thread(scenario: Union[Scenario, dict, str], *, host: str = "127.0.0.1", port: int = 0,
                    ready_timeout: float = 30.0, on_finished: Optional[Callable[[SimReport], Any]] = None,
                    close_clients: bool = True, start_timeout: float = 10.0) -> SimHandle:
    """Run server + driver in a daemon thread; returns once the server listens (handle.base_url is set).

    When the scenario is over: on_finished(report) runs in the sim thread, then (close_clients=True)
    every discord.Client that logged in through point_discord_at() is closed on its own loop, so
    `bot.run()` in the main thread returns; the server waits up to 5 s for the bot to leave, then stops."""
    scn = load_scenario(scenario)
    handle = SimHandle()

    def runner() -> None:
        loop = asyncio.new_event_loop()
        handle._loop = loop
        asyncio.set_event_loop(loop)

        async def main() -> None:
            sim = Simulation(scn, host=host, port=port, ready_timeout=ready_timeout)
            handle.simulation = sim
            try:
                handle.base_url = await sim.start()
            finally:
                handle._started.set()
            try:
                report = await sim.run()
                handle.report = report
                await _call_finished(on_finished, report)
                if close_clients:
                    from .redirect import close_clients as _close

                    _close()
            finally:
                await sim.close()

        try:
            loop.run_until_complete(main())
        except BaseException as exc:  # reported through handle.error
            handle.error = exc
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()
                handle._started.set()
                handle._done.set()

    t = threading.Thread(target=runner, name="autoperf-discord-sim", daemon=True)
    handle._thread = t
    t.start()
    handle._started.wait(start_timeout)
    if not handle.base_url:
        handle.stop(timeout=1.0)
        raise RuntimeError(f"discord_sim failed to start: {handle.error!r}")
    return handle


def start_in_process(scenario: Union[Scenario, dict, str], *, host: str = "127.0.0.1", port: int = 0,
                     ready_timeout: float = 30.0, on_finished: Optional[Callable[[SimReport], Any]] = None,
                     close_clients: bool = True, start_timeout: float = 30.0) -> SimHandle:
    """Like start_in_thread, but server + driver run in a child Python process.

    The bot's process then keeps its GIL and CPU to itself, so latencies are not inflated by the
    simulator (in-thread, the sim roughly doubles p50/p95 at ~30 interactions/s on one core).
    The child is not instrumented by autoperf (AUTOPERF_CHILD is removed from its environment); it
    ends by itself, and when this process exits (its stdin closes). on_finished(report) and
    close_clients() run in a watcher thread of this process, exactly as with start_in_thread."""
    import os
    import subprocess
    import sys

    from ._child import read_frame, write_frame

    scn = load_scenario(scenario)
    handle = SimHandle()
    pkg_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ)
    env.pop("AUTOPERF_CHILD", None)
    env["PYTHONPATH"] = os.pathsep.join([pkg_root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep)
                                                      if p and "_bootstrap" not in p])
    proc = subprocess.Popen([sys.executable, "-m", "autoperf.discord_sim._child"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, env=env, cwd=os.getcwd())
    handle.pid = proc.pid
    lock = threading.Lock()
    assert proc.stdin is not None and proc.stdout is not None
    write_frame(proc.stdin, {"scenario": scn, "host": host, "port": port, "ready_timeout": ready_timeout})

    def send(msg: tuple) -> None:
        with lock:
            try:
                write_frame(proc.stdin, msg)   # type: ignore[arg-type]
            except (OSError, ValueError):
                pass

    handle._stop_fn = lambda: send(("stop",))

    def watcher() -> None:
        try:
            while True:
                msg = read_frame(proc.stdout)  # type: ignore[arg-type]
                if msg is None:
                    break
                kind, value = msg
                if kind == "started":
                    handle.base_url = value
                    handle._started.set()
                elif kind == "start_failed":
                    handle.error = RuntimeError(value)
                    handle._started.set()
                elif kind == "report":
                    handle.report = value
                    if on_finished is not None:
                        asyncio.run(_call_finished(on_finished, value))
                    if close_clients:
                        from .redirect import close_clients as _close

                        _close()
                    send(("closed",))
                elif kind == "done":
                    break
        except BaseException as exc:  # pragma: no cover - reported through handle.error
            handle.error = exc
        finally:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if handle.report is None and handle.error is None:
                handle.error = RuntimeError(f"the simulation process exited with code {proc.returncode}")
            handle._started.set()
            handle._done.set()

    t = threading.Thread(target=watcher, name="autoperf-discord-sim-watcher", daemon=True)
    handle._thread = t
    t.start()
    handle._started.wait(start_timeout)
    if not handle.base_url:
        handle._stop_fn()
        raise RuntimeError(f"discord_sim process failed to start: {handle.error!r}")
    return handle
