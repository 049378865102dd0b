"""Loopback Discord: measure a discord.py bot's SLAs on your own machine before deploying.

    from autoperf.discord_sim import start_in_thread, point_discord_at
    handle = start_in_thread("scenario.yaml")       # server + driver in a background thread
    point_discord_at(handle.base_url)                # discord.py now talks to 127.0.0.1
    bot.run(token)                                   # returns when the scenario is over
    print(handle.wait().format())

Where to start: driver.py (the Simulation), flows.py (how a step is played), server.py (the fake
Discord's parts). See docs/discord_sim.md.
"""
from .driver import Simulation
from .handles import SimHandle, run_scenario, start_in_process, start_in_thread
from .redirect import close_clients, point_discord_at, restore
from .report import SimReport, StepResult, StepStats
from .scenario import Scenario, ScenarioError
from .scenario_file import load_scenario
from .server import SimServer

__all__ = [
    "SimHandle", "Simulation", "run_scenario", "start_in_thread", "start_in_process", "point_discord_at", "restore",
    "close_clients", "SimReport", "StepResult", "StepStats", "Scenario", "ScenarioError", "load_scenario", "SimServer",
]
