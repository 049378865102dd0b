"""Plays a scenario against a bot connected to the loopback Discord and measures what users see.

    report = await run_scenario(scenario, on_started=lambda url: ...)      # same loop as the bot
    handle = start_in_thread(scenario); point_discord_at(handle.base_url); bot.run(token)  # other thread
    report = handle.wait()

Timeline: start the server -> wait for the bot to IDENTIFY (ready_timeout) -> wait warmup_s after the
last GUILD_CREATE and for the command sync (sync_timeout_s, only if the scenario uses commands) ->
start flows for duration_s (rate or think time) -> wait up to grace_s for running flows -> build the
report -> on_finished(report) (and close the bot's discord.Client with close_clients=True) -> wait up to
5 s for the bot to leave the gateway -> stop the server. Everything on 127.0.0.1; nothing outlives it.

Modules: here the Simulation (timeline, flows, steps, report); ``interaction_data`` builds what the users
send; ``handles`` runs a Simulation on the bot's loop, in a thread or in a child process.
"""
from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import Iterator, List, Optional, Tuple, Union

from .interaction_data import InteractionDataMixin, _FlowCtx, _StepFailed
from .report import SimReport, StepResult
from .scenario import Flow, Scenario, Step, load_scenario
from .server import InteractionState, MessageWait, SimServer

__all__ = ["Simulation", "run_scenario", "start_in_thread", "start_in_process", "SimHandle"]


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class _Pending:
    result: StepResult
    st: Optional[InteractionState] = None
    wait: Optional[MessageWait] = None


class Simulation(InteractionDataMixin):
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

        def may_start() -> bool:
            return (not self._stop.is_set() and self.server.connected
                    and (scn.max_flows is None or self._flows_started < scn.max_flows))

        def can_start() -> bool:
            return loop.time() < deadline and may_start()

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
                # The plan put this arrival before the deadline: a late wake-up (loop lag) must not
                # drop it, or two runs of one seed would play different numbers of flows.
                if not may_start():
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


# Re-exported: they lived here (handles imports Simulation from this module, so last).
from .handles import SimHandle, run_scenario, start_in_process, start_in_thread  # noqa: E402,F401
