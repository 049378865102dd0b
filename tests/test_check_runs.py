"""`autoperf check` and `report` over real runs: every configured SLA and budget and the seed's goals (section
12) are enforced — the exit code says so — on a run built to break them and hold on the same program built not
to; the report tells slash commands, components, modals, prefix commands and events apart."""
from __future__ import annotations

import json

import pytest

from tests.runs import Run

PROGRAM = """
    import asyncio, sys, time
    from concurrent.futures import ProcessPoolExecutor


    def parse(n):                    # a process-pool job
        return sum(range(n))


    async def lookup(ms):            # a query with a budget (threshold_ms, seed 4.2)
        await asyncio.sleep(ms / 1000)


    async def profile(ms):           # a command with an SLA (sla_ms)
        await lookup(ms)


    async def history():             # a command that always fails
        raise LookupError("no replay")


    async def main(bad):
        loop = asyncio.get_running_loop()
        with ProcessPoolExecutor(1) as pool:
            await loop.run_in_executor(pool, parse, 1000)
            ballast = bytearray(160 << 20) if bad else b""  # the program's own memory (the worker forked before)
            for i in range(0, len(ballast), 4096):
                ballast[i] = 1
            await asyncio.to_thread(time.sleep, 0.01)        # a thread-pool job
            for _ in range(20):
                await profile(60 if bad else 4)
                if bad:
                    try:
                        await history()
                    except LookupError:
                        pass
            await asyncio.sleep(0.7)                         # resource samples, the worker still alive
        return len(ballast)


    asyncio.run(main(sys.argv[1] == "bad"))
"""
CONFIG = """
    targets:
      - {target: "__main__:profile", kind: flow, name: profile, sla_ms: 30}
      - {target: "__main__:history", kind: flow, name: history}
      - {target: "__main__:lookup", name: db.lookup, threshold_ms: 20}
    sampler: {interval_s: 0.2}
    slo: {worker_rss_mb: 140}
"""


@pytest.fixture(scope="module")
def plain_runs(tmp_path_factory):
    runs = {}
    for mode in ("good", "bad"):
        runs[mode] = Run(tmp_path_factory.mktemp(mode), PROGRAM, CONFIG)
        runs[mode].start(mode)
    return runs


def test_configured_slas_budgets_errors_and_memory_fail_the_check(plain_runs):
    """The bad run misses the command's sla_ms (60 ms vs 30), the query budget (threshold_ms 20), fails every
    `history` run and holds 160 MB in the program's own process: exit 1 naming exactly those; the seed's
    latency goals (all well under 500 ms) still pass."""
    code, checks = plain_runs["bad"].check()
    assert code == 1
    failed = {k for k, c in checks.items() if c["ok"] is False}
    assert failed == {"sla [profile]", "budget [db.lookup (span)]", "error_rate [history]", "process_rss_mb"}, failed
    assert checks["sla [profile]"]["actual"] == 0.0 and checks["sla [profile]"]["source"] == "sla_ms"
    assert checks["budget [db.lookup (span)]"]["detail"] == "0 of 20 calls within 20 ms"
    assert checks["error_rate [history]"]["actual"] == 100.0
    assert checks["process_rss_mb"]["actual"] >= 160
    for passed in ("commands_p95", "commands_p99", "error_rate [profile]", "worker_rss_mb"):
        assert checks[passed]["ok"] is True, checks[passed]


def test_the_same_program_within_its_objectives_passes(plain_runs):
    """The good run keeps every objective: exit 0, and each one is listed as evaluated (none silently skipped);
    the ones without data (no interactions, no queries) say n/a."""
    code, checks = plain_runs["good"].check()
    assert code == 0, {k: c for k, c in checks.items() if c["ok"] is False}
    for name in ("commands_p95", "commands_p99", "sla [profile]", "budget [db.lookup (span)]",
                 "error_rate [profile]", "process_rss_mb", "worker_rss_mb"):
        assert checks[name]["ok"] is True, checks[name]
    assert checks["interaction_deadline"]["ok"] is None and checks["db_avg"]["ok"] is None
    code, out = plain_runs["good"].cli("check")
    assert code == 0 and out.startswith("SLO check: ") and "objectives evaluated, all met" in out.splitlines()[0]


def test_report_says_over_where_check_fails(plain_runs):
    """The report's SLA column and `check` use one rule: at least 95 % of runs within sla_ms."""
    code, out = plain_runs["bad"].cli("report", "--format", "json")
    profile = next(c for c in json.loads(out)["commands"] if c["name"] == "profile")
    assert profile["sla_status"] == "over" and profile["sla_met_pct"] == 0.0
    code, out = plain_runs["good"].cli("report", "--format", "json")
    profile = next(c for c in json.loads(out)["commands"] if c["name"] == "profile")
    assert profile["sla_status"] == "ok"


# ---------------------------------------------------------------- a Discord bot on the loopback Discord
BOT = """
    import asyncio, os
    import discord
    from discord.ext import commands

    intents = discord.Intents.default()
    intents.message_content = True


    class Bot(commands.Bot):
        async def setup_hook(self):
            await self.tree.sync()


    bot = Bot(command_prefix="!", intents=intents, guild_ready_timeout=0.05)


    @bot.tree.command(description="answers at once")
    async def fast(i: discord.Interaction):
        await i.response.send_message("ok")


    @bot.tree.command(description="the first screen at once, the rest later (an initial SLA)")
    async def setup(i: discord.Interaction):
        await i.response.defer(thinking=True)
        await asyncio.sleep(0.7)
        await i.followup.send("all set")


    @bot.tree.command(description="answers after Discord's deadline")
    async def late(i: discord.Interaction):
        await asyncio.sleep(3.3)
        await i.response.send_message("too late")


    class Board(discord.ui.View):
        @discord.ui.button(label="Refresh", custom_id="refresh")
        async def refresh(self, i: discord.Interaction, button: discord.ui.Button):
            await i.response.edit_message(content="refreshed")


    @bot.tree.command(description="a message with a button")
    async def board(i: discord.Interaction):
        await i.response.send_message("board", view=Board())


    class Feedback(discord.ui.Modal, title="Feedback"):
        reason = discord.ui.TextInput(label="Reason")

        async def on_submit(self, i: discord.Interaction):
            await i.response.send_message("thanks", ephemeral=True)


    @bot.tree.command(description="opens a modal")
    async def feedback(i: discord.Interaction):
        await i.response.send_modal(Feedback())


    @bot.tree.context_menu(name="Show stats")
    async def show_stats(i: discord.Interaction, member: discord.Member):
        await i.response.send_message("stats")


    @bot.command()
    async def hello(ctx):
        await ctx.reply("hi")


    @bot.event
    async def on_message(message):
        if "slow-event" in message.content:          # an event handler: no interaction, no deadline
            await asyncio.sleep(3.2)
        await bot.process_commands(message)


    bot.run(os.environ["DISCORD_TOKEN"], log_handler=None)
"""
SCENARIO = """
    seed: 5
    duration_s: 5
    rate: 4
    mix_order: round_robin
    max_flows: {max_flows}
    warmup_s: 0.2
    step_gap_s: 0.1
    grace_s: 6
    users: 4
    guilds: [{{name: g, channels: [general]}}]
    mix:
    {mix}
"""
MIX = {
    "fast": "- command: fast",
    "setup": "- command: setup",
    "late": "- command: late",
    "board": "- steps: [{command: board}, {button: Refresh}]",
    "feedback": "- steps: [{command: feedback}, {modal: {Reason: gg}}]",
    "stats": "- user_command: Show stats",
    "hello": "- message: '!hello'",
    "slow_event": "- {message: 'a slow-event please', expect_reply: false}",
}
BOT_CONFIG = """
    sampler: {enabled: false}
    slo:
      commands_p95_ms: 1000
      flows:
        setup: {first_response_p95_ms: 300}
"""


def discord_run(directory, steps, max_flows):
    import textwrap
    mix = "\n".join("    " + MIX[s] for s in steps)
    run = Run(directory, BOT, BOT_CONFIG, name="bot.py")
    scenario = directory / "scenario.yaml"
    scenario.write_text(textwrap.dedent(SCENARIO).format(max_flows=max_flows, mix=textwrap.dedent(mix)))
    run.start(options=("--simulate", str(scenario)), timeout=120)
    return run


@pytest.fixture(scope="module")
def bot_run(tmp_path_factory):
    pytest.importorskip("discord")
    return discord_run(tmp_path_factory.mktemp("bot"),
                       ["slow_event", "fast", "setup", "board", "feedback", "stats", "hello", "fast", "fast"], 18)


def test_events_are_not_interactions_and_initial_slas_are_first_responses(bot_run):
    """A 3.2 s on_message handler is no interaction timeout and no command; /setup's initial SLA (300 ms) is
    met by its first response (a defer) though the command takes 700 ms: exit 0."""
    assert [r for r in bot_run.records("flow_complete") if r["flow_name"] == "on_message"
            and r["duration_ms"] > 3000], "the slow event handler ran"
    code, checks = bot_run.check()
    assert code == 0, {k: c for k, c in checks.items() if c["ok"] is False}
    assert checks["interaction_deadline"]["ok"] is True and checks["interaction_deadline"]["actual"] == 0.0
    assert checks["first_response_p95 [setup]"]["ok"] is True and checks["first_response_p95 [setup]"]["actual"] < 300


def test_the_initial_sla_and_a_total_sla_fail_when_missed(bot_run):
    """The same run against an SLA on /setup's total time (sla_ms 300) and an initial SLA it cannot meet
    (first response p95 < 0.01 ms): exit 1 naming both."""
    strict = bot_run.config_variant("strict.yaml", BOT_CONFIG.replace(
        "setup: {first_response_p95_ms: 300}", "setup: {first_response_p95_ms: 0.01, sla_ms: 300}"))
    code, checks = bot_run.check(config=strict)
    assert code == 1
    assert {k for k, c in checks.items() if c["ok"] is False} == {"sla [setup]", "first_response_p95 [setup]"}


def test_an_interaction_answered_after_the_deadline_fails_the_check(tmp_path):
    """/late answers after 3.3 s: one interaction timeout of three, exit 1."""
    pytest.importorskip("discord")
    run = discord_run(tmp_path, ["fast", "late", "fast"], 3)
    code, checks = run.check()
    assert code == 1 and checks["interaction_deadline"]["ok"] is False
    assert checks["interaction_deadline"]["detail"].startswith("1 of 3 interactions")


# ---------------------------------------------------------------- the report over the same runs
def test_report_separates_commands_components_modals_prefix_commands_and_events(bot_run):
    """One table per kind of flow (no "commands" that are events); the deadline table lists interactions
    only, and shows the initial SLA of /setup."""
    code, out = bot_run.cli("report", "--format", "markdown")
    titles = [line[3:] for line in out.splitlines() if line.startswith("## ")]
    assert titles[:6] == ["Slash commands", "Context menus", "Components (buttons, selects)", "Modals",
                          "Prefix commands", "Events"], titles

    def table(title):
        lines = out.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0].splitlines()
        return {row.split(" | ")[0].lstrip("| ") for row in lines if row.startswith("| ") and "---" not in row} - {"name"}
    assert table("Slash commands") == {"fast", "setup", "board", "feedback"}
    assert table("Context menus") == {"Show stats"}
    assert table("Components (buttons, selects)") == {"Board.refresh"}
    assert table("Modals") == {"Feedback.on_submit"}
    assert table("Prefix commands") == {"hello"}
    assert "on_message" in table("Events")
    deadline = table("Interaction deadline (first response < 3 s)")
    assert "hello" not in deadline and "on_message" not in deadline and "setup" in deadline
    assert "| setup | 2 | 100.00% |" in out and "| 300 | ok |" in out.split("| setup | 2 | 100.00% |", 1)[1].split("\n")[0]


def test_prefix_only_bot_is_not_told_to_enable_the_discord_integration(tmp_path):
    """A bot with prefix commands only has no interactions: the report says so, not "enable the discord
    integration" (which is on)."""
    pytest.importorskip("discord")
    run = discord_run(tmp_path, ["hello"], 3)
    code, out = run.cli("report", "--format", "json")
    from autoperf.analysis.render_sections import sections
    deadline = next(t for t in sections(json.loads(out)) if t["id"] == "deadline")
    assert deadline["rows"] == [] and "prefix commands and events answer none" in deadline["note"]
    assert "enable the discord integration" not in deadline["note"]


def test_process_pool_table_lists_process_pool_jobs_only(plain_runs):
    """The asyncio.to_thread job is in a thread-pool table, not among the process-pool jobs."""
    code, out = plain_runs["good"].cli("report", "--format", "markdown")
    process = out.split("## Process-pool jobs: queue wait vs run time\n", 1)[1].split("\n## ", 1)[0]
    thread = out.split("## Thread-pool jobs: queue wait vs run time\n", 1)[1].split("\n## ", 1)[0]
    assert "parse" in process and "sleep" not in process
    assert "sleep" in thread and "parse" not in thread
