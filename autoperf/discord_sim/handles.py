"""Ways to run a Simulation: on the bot's own loop (run_scenario), in a thread (start_in_thread) or in
a child process (start_in_process), and the handle the last two return. Each adds to the report the
loopback hosts the bot reached directly (counted in this process by reroute.py)."""
from __future__ import annotations

import asyncio
import inspect
import threading
from typing import Any, Callable, Optional, Union

from autoperf import threads

from . import reroute
from .driver import Simulation
from .redirect import close_clients as _close_clients
from .report import SimReport
from .scenario import Scenario
from .scenario_file import load_scenario
from .wire import internal_error


async def _finished(report: SimReport, cb: Optional[Callable[[SimReport], Any]], close_clients: bool) -> None:
    """The report is built: add what this process saw, call on_finished, close the bot's clients."""
    report.add_http(reroute.passed_through())
    if cb is not None:
        try:
            res = cb(report)
            if inspect.isawaitable(res):
                await res
        except Exception as exc:
            internal_error("discord_sim.on_finished", exc)
    if close_clients:
        _close_clients()


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
        await _finished(report, on_finished, close_clients)
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
                await _finished(report, on_finished, close_clients)
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
    threads.start(t)      # runs in the bot's process under --simulate: the bot's signals stay the bot's
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
                    asyncio.run(_finished(value, on_finished, close_clients))
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
