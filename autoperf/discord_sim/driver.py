"""The ``Simulation``: one scenario against a bot connected to the loopback Discord, and its report.

Timeline: start the server -> wait for the bot to IDENTIFY (ready_timeout) -> wait warmup_s after the
last GUILD_CREATE and for the command sync (sync_timeout_s, only if the scenario uses commands) ->
start flows for duration_s (rate or think time; ``flows.FlowPlayer`` plays each) -> wait up to grace_s
for running flows -> build the report. ``handles`` runs a Simulation on the bot's loop, in a thread or
in a child process, and stops the bot and the server afterwards. Everything on 127.0.0.1.
"""
from __future__ import annotations

import asyncio
import ipaddress
import random
from typing import Iterator, List, Optional, Tuple, Union

from .flows import FlowPlayer
from .report import SimReport
from .scenario import COMMAND_KINDS, Flow, Scenario
from .scenario_file import load_scenario
from .server import SimServer

__all__ = ["Simulation"]


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Simulation:
    """Server + driver for one scenario. `await start()`, connect the bot, `await run()`, `await close()`."""

    def __init__(self, scenario: Union[Scenario, dict, str], *, host: str = "127.0.0.1", port: int = 0,
                 ready_timeout: float = 30.0):
        self.scenario = load_scenario(scenario)
        if not _is_loopback(host):
            raise ValueError(f"discord_sim listens on loopback only (127.0.0.0/8, ::1, localhost), not {host!r}")
        self.host, self.port, self.ready_timeout = host, port, ready_timeout
        self.server = SimServer(self.scenario)
        self._warnings: List[str] = []
        self.player = FlowPlayer(self.server, self.scenario, self.warn)
        self._stop: Optional[asyncio.Event] = None
        self._flows_started = 0

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
                await asyncio.wait_for(self.server.gateway.disconnected.wait(), bot_leave_timeout)
            except asyncio.TimeoutError:
                pass
        await self.server.close()

    # ------------------------------------------------------------------ main
    async def run(self) -> SimReport:
        scn, gateway = self.scenario, self.server.gateway
        report = SimReport(seed=scn.seed)
        loop = asyncio.get_running_loop()
        assert self._stop is not None, "call start() first"
        stopper = asyncio.ensure_future(self._stop.wait())
        ready = asyncio.ensure_future(gateway.ready_sent.wait())
        try:
            await asyncio.wait([ready, stopper], timeout=self.ready_timeout, return_when=asyncio.FIRST_COMPLETED)
            ready.cancel()
            if not gateway.ready_sent.is_set():
                report.error = (f"the bot did not connect to the gateway within {self.ready_timeout:.0f}s"
                                if not self._stop.is_set() else "stopped before the bot connected")
                return self._finish(report, 0.0)
            needs_sync = any(s.kind in COMMAND_KINDS for f in scn.mix for s in f.steps)
            t_sync = loop.time() + scn.sync_timeout_s
            if scn.warmup_s > 0:
                await self._sleep(scn.warmup_s)
            synced = self.server.commands_synced
            if needs_sync and not synced.is_set():
                try:
                    await asyncio.wait_for(synced.wait(), max(0.0, t_sync - loop.time()))
                except asyncio.TimeoutError:
                    self.warn(f"the bot did not sync application commands within {scn.sync_timeout_s:.0f}s; "
                              "interaction payloads are built from the scenario's options")
                await self._sleep(0.05)   # let discord.py finish handling the sync response
            self.player.t0 = loop.time()
            await self._play()
        finally:
            stopper.cancel()
            ready.cancel()
        return self._finish(report, loop.time() - self.player.t0)

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
        stop = self._stop
        assert stop is not None
        tasks: List[asyncio.Task] = []
        deadline = self.player.t0 + scn.duration_s
        weights = [f.weight for f in scn.mix]

        def may_start() -> bool:
            return (not stop.is_set() and self.server.connected
                    and (scn.max_flows is None or self._flows_started < scn.max_flows))

        def launch(flow: Flow, user_id: int, flow_seed: int) -> asyncio.Task:
            self._flows_started += 1
            return asyncio.ensure_future(self.player.play(flow, user_id, random.Random(flow_seed)))

        if scn.think_time_s is not None:
            async def user_loop(idx: int, uid: int) -> None:
                rng = random.Random(f"{scn.seed}:{uid}")
                await self._sleep(rng.uniform(0, min(scn.think_time_s or 0.0, 1.0)))
                k = 0
                while loop.time() < deadline and may_start():
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
        if not self.server.connected and not stop.is_set():
            self.warn("the bot left the gateway during the run (crashed or closed): no more flows were started")
        for t in tasks:
            if not t.done():
                t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        # timed-out interactions: keep listening a little to see (and reject) late callbacks
        t_end = loop.time() + scn.late_window_s
        while loop.time() < t_end and not stop.is_set() and self.server.connected:
            if not any(p.st is not None and p.st.t_first is None and p.st.t_late is None for p in self.player.pending):
                break
            await asyncio.sleep(0.02)

    # ------------------------------------------------------------------ report
    def _finish(self, report: SimReport, duration: float) -> SimReport:
        srv = self.server
        for p in self.player.pending:
            r = p.result
            if p.st is not None:
                st = p.st
                r.first_ms, r.final_ms, r.callback_type = st.first_ms(), st.final_ms(), st.first_type
                if st.t_late is not None:
                    r.late_ms = (st.t_late - st.t_dispatch) * 1000.0
                if st.errors and not r.error and r.expected is None:
                    r.error = "; ".join(st.errors[:3])
                if r.status == "ok" and r.expected is None:
                    if st.errors:
                        r.status = "error"
                    elif st.t_first is None:
                        r.status, r.error = "timeout", r.error or "no interaction callback"
            elif p.wait is not None:
                w = p.wait
                if w.t_first is not None:
                    r.first_ms = (w.t_first - w.t_dispatch) * 1000.0
                    r.final_ms = ((w.t_final or w.t_first) - w.t_dispatch) * 1000.0
            report.results.append(r)
        report.duration_s = duration
        report.flows_started = self._flows_started
        report.flows_completed = self.player.completed
        report.calls = srv.calls
        report.http = sorted(srv.sink.hosts.values(), key=lambda h: (-h["requests"], h["host"]))
        gw = srv.gateway
        ident = gw.identify or {}
        report.bot = {
            "logged_in": srv.api.logged_in, "identified": gw.identified.is_set(), "intents": ident.get("intents"),
            "gateway_connections": gw.connections, "heartbeats": gw.heartbeats,
            "commands_synced": srv.commands_synced.is_set(),
            "commands": sorted({(c.get("name"), int(c.get("type", 1))) for c in srv.world.all_commands()}),
            "rest_calls": len(srv.calls) + srv.api.calls_dropped, "calls_dropped": srv.api.calls_dropped,
        }
        for route in sorted(set(srv.unhandled)):
            self.warn(f"the sim does not implement {route} (answered 404)")
        for e in srv.internal_errors[:5]:
            self.warn(f"sim internal error: {e}")
        report.warnings = list(self._warnings)
        return report.compute()
