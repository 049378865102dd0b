"""``autoperf run --simulate SCENARIO bot.py``: an unmodified discord.py bot against the loopback Discord.

    code = simulate.run("scenario.yaml", program)   # program() runs the bot script, returns its exit code

The loopback Discord starts in a background thread; the bot's other HTTP is rerouted to it from the
first line and discord.py is pointed at it on import (``DISCORD_TOKEN`` gets a placeholder when unset);
``program()`` runs in the main thread. When the scenario is over the bot's client is closed (then
SIGINT, then abandoned, if it does not stop), the per-step summary goes to stderr and one ``sim_step``
record per step to the pipeline. A bot that never connects: a message and a non-zero exit code.
"""
from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import time
from typing import Callable, Optional

from autoperf import threads

ENV_CONNECT_TIMEOUT = "AUTOPERF_SIM_CONNECT_TIMEOUT"
PLACEHOLDER_TOKEN = "MTAwMDAwMDAwMDAwMDAwMDAx.simulated.autoperf-loopback-token"

__all__ = ["run"]


def _say(text: str) -> None:
    try:
        sys.stderr.write(f"autoperf simulate: {text}\n")
        sys.stderr.flush()
    except Exception:
        pass


def _point_hook(base_url: str):
    from autoperf.discord_sim import point_discord_at

    done = {"ok": False}

    def hook(module):
        # A post-import hook must never fail the program's import.
        try:
            if not done["ok"]:
                done["ok"] = bool(point_discord_at(base_url, module))
        except Exception as exc:
            _say(f"could not redirect discord.py: {type(exc).__name__}: {exc}")
    return hook


def _register_discord_hook(hook) -> None:
    if "discord" in sys.modules:
        hook(sys.modules["discord"])
        return
    from autoperf import lifecycle
    lifecycle.hook("discord", hook)


def _close_known_clients() -> int:
    """Close every discord.Client we know of (sim login registry, then the integration's registry)."""
    n = 0
    try:
        from autoperf.discord_sim import close_clients
        n += close_clients()
    except Exception:
        pass
    try:
        integration = sys.modules.get("autoperf.integrations.discord")
        for client in (integration.clients() if integration is not None else ()):
            loop = getattr(client, "loop", None)
            if loop is None or client.is_closed() or loop.is_closed():
                continue
            asyncio.run_coroutine_threadsafe(client.close(), loop)
            n += 1
    except Exception:
        pass
    return n


class _Watchdog(threading.Thread):
    """Once the scenario is over, make sure the program ends: close, then SIGINT, then give up."""

    def __init__(self, handle, main_done: threading.Event, close_after: float = 5.0,
                 interrupt_after: float = 10.0, abandon_after: float = 20.0):
        super().__init__(name="autoperf-simulate-watchdog", daemon=True)
        self.handle, self.main_done = handle, main_done
        self.close_after, self.interrupt_after, self.abandon_after = close_after, interrupt_after, abandon_after
        self.interrupted = False

    def run(self) -> None:
        while not self.handle.done:
            if self.main_done.wait(0.2):
                return
        t0 = time.monotonic()
        report = self.handle.report
        never_connected = report is None or bool(report.error)
        if not never_connected and self.main_done.wait(self.close_after):
            return
        if _close_known_clients():
            _say("the scenario is over; closing the bot")
            if self.main_done.wait(max(0.0, self.interrupt_after - (time.monotonic() - t0))):
                return
        elif not never_connected and self.main_done.wait(max(0.0, self.interrupt_after - (time.monotonic() - t0))):
            return
        _say("the bot never connected; sending SIGINT" if never_connected
             else "the bot did not stop after the scenario; sending SIGINT")
        self.interrupted = True
        try:
            os.kill(os.getpid(), signal.SIGINT)
        except Exception:
            pass
        if self.main_done.wait(max(0.0, self.abandon_after - (time.monotonic() - t0))):
            return
        _say("the bot is still running; exiting")
        try:
            from autoperf import pipeline
            pipeline.flush()
        except Exception:
            pass
        try:
            sys.stderr.flush()
            sys.stdout.flush()
        finally:
            os._exit(3)


def _emit_report(report) -> None:
    try:
        from autoperf import pipeline
        for rec in report.to_records():
            pipeline.emit(rec)
    except Exception:
        pass


def run(scenario_path: str, program: Callable[[], int], *, connect_timeout: Optional[float] = None) -> int:
    """Run ``program()`` (the bot) against the loopback Discord playing ``scenario_path``; returns the exit code."""
    from autoperf.discord_sim import ScenarioError, load_scenario, reroute, start_in_thread

    try:
        scenario = load_scenario(scenario_path)
    except (ScenarioError, OSError) as exc:
        _say(f"bad scenario {scenario_path}: {exc}")
        return 2
    if connect_timeout is None:
        connect_timeout = float(os.environ.get(ENV_CONNECT_TIMEOUT, "60"))
    try:
        handle = start_in_thread(scenario, ready_timeout=connect_timeout, close_clients=True)
    except Exception as exc:
        _say(f"the loopback Discord did not start: {exc}")
        return 2
    os.environ.setdefault("DISCORD_TOKEN", PLACEHOLDER_TOKEN)
    reroute.install(handle.base_url)      # the bot's other HTTP stays off the network from its first line
    _register_discord_hook(_point_hook(handle.base_url))
    _say(f"loopback Discord at {handle.base_url}; playing {scenario.source or 'scenario'} "
         f"({len(scenario.users)} users, {scenario.duration_s:g}s)")

    main_done = threading.Event()
    watchdog = _Watchdog(handle, main_done)
    threads.start(watchdog)
    code = 1
    try:
        code = program()
    except KeyboardInterrupt:
        code = 0 if watchdog.interrupted else 130
        if not watchdog.interrupted:
            raise
    finally:
        main_done.set()
        if not handle.done:
            # The program ended first (crashed, or never started the bot): stop the scenario.
            handle.stop(timeout=15.0)
    report = handle.wait(15.0)
    if report is None:
        _say(f"the simulation did not finish: {handle.error!r}")
        return code or 1
    try:
        sys.stderr.write(report.format() + "\n")
    except Exception:
        pass
    _emit_report(report)
    if report.error:
        _say(f"FAILED: {report.error}" + (" — did the script call bot.run()/client.start()?"
                                          if "connect" in report.error else ""))
        return code or 1
    return code
