"""YAML targets on a discord.py bot, through ``autoperf run --simulate`` (a subprocess, real discord.py, the
loopback Discord): ``kind: flow`` targets inside a flow, prefix subcommand names, extensions reloaded."""
from __future__ import annotations

import collections
import glob
import json
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.timeout(150)

BOT = """
    import asyncio, os
    import discord
    from discord import app_commands
    from discord.ext import commands


    async def finalize(interaction, delay):
        await asyncio.sleep(delay)          # a helper the commands call: a `kind: flow` target


    class JoinButton(discord.ui.Button):
        async def callback(self, interaction):
            await interaction.response.send_message("joined", ephemeral=True)


    @app_commands.command(description="a view with a Button subclass")
    async def lobby(interaction: discord.Interaction):
        view = discord.ui.View()
        view.add_item(JoinButton(label="Join", custom_id="join"))
        await interaction.response.send_message("lobby", view=view)


    @app_commands.command(description="calls the helper, quickly")
    async def fast(interaction: discord.Interaction):
        await finalize(interaction, 0.005)
        await interaction.response.send_message("fast")


    @app_commands.command(description="calls the helper, slowly")
    async def slow(interaction: discord.Interaction):
        await interaction.response.defer()
        await finalize(interaction, 0.3)
        await interaction.followup.send("slow")


    class Tags(commands.Cog):
        @commands.group(invoke_without_command=True)
        async def tag(self, ctx):
            await ctx.send("tags: ...")

        @tag.command()
        async def create(self, ctx, name: str):
            await ctx.send(f"created {name}")

        @tag.command()
        async def delete(self, ctx, name: str):
            await ctx.send(f"deleted {name}")


    class Bot(commands.Bot):
        def __init__(self):
            intents = discord.Intents.default()
            intents.message_content = True
            super().__init__(command_prefix="!", intents=intents, help_command=None)

        async def on_message(self, message):
            await self.process_commands(message)

        async def close(self):
            import gc
            from autoperf.integrations.discord.state import FlowState
            gc.collect()         # finished flows' states must not keep the items, views, modals and bots they ran
            print("HELD", sum(1 for o in gc.get_objects() if type(o) is FlowState and o.span is None and o.handlers),
                  flush=True)
            await super().close()

        async def setup_hook(self):
            for command in (lobby, fast, slow):
                self.tree.add_command(command)
            await self.add_cog(Tags())
            await self.load_extension("ext_stats")
            await self.reload_extension("ext_stats")     # a developer's hot reload: targets must survive it
            await self.load_extension("ext_gone")
            await self.unload_extension("ext_gone")      # unloaded: imported once, not "never imported"
            await self.tree.sync()


    if __name__ == "__main__":
        Bot().run(os.environ["DISCORD_TOKEN"], log_handler=None)
"""
EXT_STATS = """
    from discord.ext import commands


    def compute():
        return 42


    class Stats(commands.Cog):
        @commands.command()
        async def stats(self, ctx):
            await ctx.send(f"stats {compute()}")


    async def setup(bot):
        await bot.add_cog(Stats())
"""
EXT_GONE = """
    def unused():
        return 0


    async def setup(bot):
        pass
"""
CONFIG = """
    retain: {all: true}     # the tests read the steps inside the commands' flows
    log: {console: false}
    sampler: {enabled: false}
    targets:
      - target: "bot:JoinButton.callback"
        kind: flow
        name: join_button
        sla_ms: 2500
      - target: "bot:finalize"
        kind: flow
        sla_ms: 150
      - target: "ext_stats:Stats.stats"
        kind: flow
        name: stats_flow
        sla_ms: 2500
      - target: "ext_stats:compute"
      - target: "ext_gone:unused"
      - target: "bot:Bot.on_message"
        kind: flow
        sla_ms: 2500
"""
SCENARIO = """
    seed: 5
    duration_s: 2.5
    rate: 6
    users: 3
    warmup_s: 0.3
    grace_s: 6
    step_gap_s: 0.05
    mix_order: round_robin
    mix:
      - name: lobby
        steps:
          - command: lobby
          - button: Join
      - command: fast
      - command: slow
      - message: "!tag create alpha"
      - message: "!tag delete alpha"
      - message: "!tag"
      - message: "!stats"
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("discord_targets")
    for name, text in (("bot.py", BOT), ("ext_stats.py", EXT_STATS), ("ext_gone.py", EXT_GONE),
                       ("autoperf.yaml", CONFIG), ("scenario.yaml", SCENARIO)):
        (tmp / name).write_text(textwrap.dedent(text))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOPERF_") and k != "DISCORD_TOKEN"}
    proc = subprocess.run([sys.executable, "-m", "autoperf", "run", "--log-dir", str(tmp / "logs"),
                           "--simulate", "scenario.yaml", "bot.py"],
                          cwd=tmp, env=env, capture_output=True, text=True, timeout=140)
    records = [json.loads(line) for path in glob.glob(str(tmp / "logs" / "*.log")) for line in open(path)]
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, records, tmp


def _flows(records, name=None):
    return [r for r in records if r["type"] == "flow_complete" and (name is None or r["flow_name"] == name)]


def test_button_subclass_callback_target_joins_the_component_flow(run):
    """A ``kind: flow`` target on a ``Button`` subclass's ``callback`` is the component's flow: one flow, named by
    the target, with its SLA evaluated (``sla_met``), and no second flow nested inside it."""
    _, records, _ = run
    flows = _flows(records, "join_button")
    assert flows and all(f["sla_ms"] == 2500 and f["sla_met"] is True for f in flows)
    assert all(f["metadata"]["interaction_type"] == "component" for f in flows)
    assert not [f for f in _flows(records) if f["flow_name"].endswith("JoinButton.callback")]
    assert "HELD 0\n" in run[0].stdout, run[0].stdout
    ids = {f["flow_id"] for f in flows}
    nested = [r for r in records if r["type"] == "span" and r["kind"] == "flow" and r["flow_id"] in ids
              and r["span_id"] != r["flow_id"]]
    assert nested == []


def test_event_handler_target_joins_the_event_flow(run):
    """A ``kind: flow`` target on the bot's ``on_message`` is the event's flow (its SLA evaluated), not nested in it."""
    _, records, _ = run
    events = _flows(records, "on_message")
    assert events and all(f["sla_ms"] == 2500 and f["sla_met"] is True for f in events)
    assert not [r for r in records if r["type"] == "span" and r["name"].endswith("on_message")
                and r["span_id"] != r["flow_id"]]


def test_flow_target_called_inside_a_flow_is_a_step_with_its_sla(run):
    """A ``kind: flow`` helper the commands call is a step of each command's flow, and its SLA is evaluated on
    each run: ``sla_met`` true for the quick call, false for the slow one."""
    _, records, _ = run
    helper = [r for r in records if r["type"] == "span" and r["name"] == "__main__.finalize"]
    assert {r["flow_name"] for r in helper} == {"fast", "slow"} and all(r["sla_ms"] == 150 for r in helper)
    assert all(r["sla_met"] is (r["flow_name"] == "fast") for r in helper)
    assert all(r["duration_ms"] >= 300 for r in helper if r["flow_name"] == "slow")
    for name in ("fast", "slow"):
        flow = _flows(records, name)[0]
        assert "__main__.finalize" in [c["name"] for c in flow["checkpoints"]]
        assert "sla_ms" not in flow                       # the command itself has no SLA
    assert not _flows(records, "__main__.finalize")


def test_report_shows_every_sla(run):
    """The report lists the joined flow's SLA with the commands and the nested helper's SLA with its share met."""
    _, _, tmp = run
    proc = subprocess.run([sys.executable, "-m", "autoperf", "report", str(tmp / "logs"), "--format", "json"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    commands = {c["name"]: c for c in report["commands"]}
    assert commands["join_button"]["sla_ms"] == 2500 and commands["join_button"]["sla_met_pct"] == 100.0
    slas = {(o["name"], o["kind"]): o for o in report["operation_slas"]}
    helper = slas[("__main__.finalize", "flow")]
    fast = len(_flows(run[1], "fast"))
    assert helper["sla_ms"] == 150 and helper["count"] == fast + len(_flows(run[1], "slow"))
    assert helper["sla_met_pct"] == pytest.approx(100.0 * fast / helper["count"])
    text = subprocess.run([sys.executable, "-m", "autoperf", "report", str(tmp / "logs")],
                          capture_output=True, text=True, timeout=60).stdout
    assert "Spans with an SLA" in text and "__main__.finalize" in text


def test_prefix_subcommands_are_named_by_their_qualified_name(run):
    """``!tag create`` and ``!tag delete`` are flows ``tag create`` / ``tag delete``; ``!tag`` alone is ``tag``."""
    _, records, _ = run
    names = collections.Counter(f["flow_name"] for f in _flows(records) if
                                f["metadata"].get("interaction_type") == "prefix_command")
    assert names["tag create"] >= 1 and names["tag delete"] >= 1 and names["tag"] >= 1
    assert set(names) == {"tag create", "tag delete", "tag", "stats_flow"}
    assert all(f["metadata"]["interaction_type"] == "event" for f in _flows(records, "on_message"))
    create = _flows(records, "tag create")[0]
    assert create["metadata"]["command"] == "tag create" and create["status"] == "success"


def test_targets_survive_reload_extension_and_unload_is_not_never_imported(run):
    """After ``reload_extension`` the extension's targets apply to the new module (its command is the target's
    flow, its function a span); the extension loaded and unloaded draws no 'never imported' warning."""
    _, records, _ = run
    flows = _flows(records, "stats_flow")
    assert flows and flows[0]["sla_met"] is True and flows[0]["metadata"]["command"] == "stats"
    assert "ext_stats.compute" in [c["name"] for c in flows[0]["checkpoints"]]
    warnings = [r for r in records if r["type"] == "warning"]
    assert not [w for w in warnings if w.get("code") in ("target_module_not_imported", "target_not_found")], warnings
