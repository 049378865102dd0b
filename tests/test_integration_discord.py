"""The discord integration, with real discord.py bots talking to the loopback Discord (no mocks).

One scenario is played twice by the same small bot: first without autoperf (the reference for
"the bot behaves the same"), then under ``bootstrap.install`` with a config that also names an app
command, a cog command and a View button as targets. The tests read the second run's records.
"""
from __future__ import annotations

import asyncio
import collections
import gc
import io
import sys
import textwrap

import discord
import pytest
from discord import app_commands
from discord.ext import commands, tasks

from autoperf import bootstrap, pipeline, sinks
from autoperf.discord_sim import point_discord_at, restore, start_in_thread

pytestmark = pytest.mark.timeout(120)
MODULE = __name__


# -- the bot -----------------------------------------------------------------------------------
class JoinView(discord.ui.View):
    @discord.ui.button(label="Join", custom_id="join")
    async def join(self, interaction: discord.Interaction, button: discord.ui.Button):
        await interaction.response.send_message("joined", ephemeral=True)


class NameModal(discord.ui.Modal, title="Your name"):
    name = discord.ui.TextInput(label="Name", custom_id="name")

    async def on_submit(self, interaction: discord.Interaction):
        await interaction.response.send_message(f"hi {self.name.value}", ephemeral=True)


@app_commands.command(description="pong with a view")
async def ping(interaction: discord.Interaction, text: str):
    await interaction.response.send_message(f"pong {text}", view=JoinView())


@app_commands.command(description="opens a modal")
async def form(interaction: discord.Interaction):
    await interaction.response.send_modal(NameModal())


@app_commands.command(description="defer, followup, edit")
async def later(interaction: discord.Interaction):
    await interaction.response.defer(thinking=True)
    await asyncio.sleep(0.2)
    await interaction.followup.send("part 1")
    await interaction.edit_original_response(content="done")


HELD_ERRORS: list = []   # per run: flow states still holding an exception when the bot closed


@app_commands.command(description="always fails")
async def boom(interaction: discord.Interaction):
    # a long timer made during the command copies the flow's context, as a library's would (asyncpg's
    # statement-cache expiry, an HTTP client's timeout)
    asyncio.get_running_loop().call_later(300, lambda: None)
    raise ValueError("boom")


@app_commands.command(description="check always fails")
@app_commands.check(lambda interaction: False)
async def guarded(interaction: discord.Interaction):
    await interaction.response.send_message("never")


@app_commands.command(description="one use per minute, per guild and bot")
@app_commands.checks.cooldown(1, 60.0, key=lambda i: (id(i.client), i.guild_id))
async def cool(interaction: discord.Interaction):
    await interaction.response.send_message("cool")


@app_commands.command(description="misses the 3 s deadline")
async def slow(interaction: discord.Interaction):
    await asyncio.sleep(3.2)
    try:
        await interaction.response.send_message("too late")
    except discord.NotFound:
        pass


@app_commands.command(description="answers after 2.2 s: slow, within the deadline")
async def sluggish(interaction: discord.Interaction):
    await asyncio.sleep(2.2)
    await interaction.response.send_message("phew")


@app_commands.command(description="posts to the channel (the sim answers the first post with 429)")
async def announce(interaction: discord.Interaction):
    await interaction.response.defer()
    await interaction.channel.send("announcement")
    await interaction.followup.send("announced")


TIMEOUT_SPANS: list = []   # spans.current() inside ShortView.on_timeout


class ShortView(discord.ui.View):
    def __init__(self):
        super().__init__(timeout=0.3)

    @discord.ui.button(label="Flip", custom_id="flip")
    async def flip(self, interaction: discord.Interaction, button: discord.ui.Button):
        await interaction.response.defer()

    async def on_timeout(self):
        from autoperf import spans
        TIMEOUT_SPANS.append(spans.current())


@app_commands.command(description="answers with a file (a multipart interaction response) and a short-lived view")
async def card(interaction: discord.Interaction):
    await interaction.response.send_message("your card", file=discord.File(io.BytesIO(b"ace"), "card.txt"),
                                            view=ShortView())


class Games(commands.Cog):
    @app_commands.command(description="cog slash command")
    async def stats(self, interaction: discord.Interaction):
        await interaction.response.send_message("stats")

    @commands.command()
    async def echo(self, ctx: commands.Context, *, text: str = ""):
        await ctx.send(f"echo {text}")


class LoopbackBot(commands.Bot):
    def __init__(self):
        intents = discord.Intents.default()
        intents.message_content = True
        super().__init__(command_prefix="!", intents=intents, help_command=None)
        self.ticks = 0

    async def setup_hook(self):
        for cmd in (ping, form, later, boom, guarded, cool, slow, sluggish, announce, card):
            self.tree.add_command(cmd)
        await self.add_cog(Games())
        await self.tree.sync()
        self.ticker.start()

    async def on_message(self, message):
        self.messages_seen = getattr(self, "messages_seen", 0) + 1
        await self.process_commands(message)

    @tasks.loop(seconds=0.3)
    async def ticker(self):
        self.ticks += 1

    async def close(self):
        self.ticker.cancel()
        from autoperf.integrations.discord.state import FlowState
        gc.collect()
        HELD_ERRORS.append(sum(1 for o in gc.get_objects() if type(o) is FlowState and o.error is not None))
        await super().close()


SCENARIO = {
    "seed": 3, "duration_s": 3.0, "rate": 8, "users": 4, "warmup_s": 0.3, "grace_s": 6, "step_gap_s": 0.05,
    "mix_order": "round_robin", "heartbeat_interval_ms": 400,
    "rate_limits": {"force_429": [{"route": "POST /channels/{channel_id}/messages", "nth": [1], "retry_after": 0.25}]},
    "mix": [
        {"name": "ping", "steps": [{"command": "ping", "options": {"text": "hello"}}, {"button": "Join"}]},
        {"name": "form", "steps": [{"command": "form"}, {"modal": {"Name": "ada"}}]},
        {"command": "later"},
        {"command": "boom", "timeout_s": 1},
        {"command": "guarded", "timeout_s": 1},
        {"command": "cool", "timeout_s": 1},
        {"command": "slow", "timeout_s": 3.5},
        {"command": "sluggish", "timeout_s": 3.5},
        {"command": "announce"},
        {"command": "card"},
        {"command": "stats"},
        {"message": "!echo hi"},
    ],
}

CONFIG = textwrap.dedent(f"""
    version: 1
    retain: {{all: true}}     # the tests read every span of the run
    log: {{console: false}}
    sampler: {{enabled: false}}
    targets:
      - target: "{MODULE}:ping"
        kind: flow
        sla_ms: 250
        capture: {{text_len: len(text)}}
      - target: "{MODULE}:Games.stats"
        kind: flow
        name: games_stats
      - target: "{MODULE}:JoinView.join"
        name: join_button_body
      - target: "{MODULE}:LoopbackBot.ticker"
        kind: cycle
        name: ticker_cycle
        capture: {{ticks_before: self.ticks}}
    integrations:
      discord: {{capture_option_values: true}}
""")


def _play(scenario):
    handle = start_in_thread(scenario, ready_timeout=20)
    point_discord_at(handle.base_url)
    bot = LoopbackBot()
    bot.run("sim.token.value", log_handler=None)
    report = handle.wait(20)
    assert report is not None and report.error is None, report and report.error
    return report, bot


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(plain report, instrumented report, records of the instrumented run)."""
    tmp = tmp_path_factory.mktemp("discord")
    try:
        plain, _ = _play(SCENARIO)
        cfg_path = tmp / "autoperf.yaml"
        cfg_path.write_text(CONFIG)
        bootstrap.install(str(cfg_path), log_dir=str(tmp / "logs"), console=False)
        memory = sinks.Memory()
        pipeline.add_sink(memory)
        try:
            TIMEOUT_SPANS.clear()
            HELD_ERRORS.clear()
            traced, bot = _play(SCENARIO)
            pipeline.flush()
        finally:
            pipeline.remove_sink(memory)
            bootstrap.uninstall()
        return plain, traced, memory.records, bot
    finally:
        restore()


def _flows(records, name=None):
    return [r for r in records if r["type"] == "flow_complete" and (name is None or r["flow_name"] == name)]


def _spans(records, **match):
    return [r for r in records if r["type"] == "span" and all(r.get(k) == v for k, v in match.items())]


class TestFlows:
    def test_slash_command_flow_has_interaction_attributes(self, runs):
        """A slash command is one flow named after the command, with user, guild, channel and options."""
        flows = _flows(runs[2], "ping")
        assert flows
        md = flows[0]["metadata"]
        assert md["command"] == "ping" and md["interaction_type"] == "application_command"
        assert md["user_id"] >= 800000000000000001 and md["guild_id"] and md["channel_id"]
        assert md["options"] == ["text"] and md["option_values"] == {"text": "hello"}
        assert flows[0]["status"] == "success" and md["answered"] is True

    def test_yaml_flow_target_joins_the_integration_flow(self, runs):
        """A `kind: flow` target on an app command adds its SLA and captures to the one flow (no nested flow)."""
        flow = _flows(runs[2], "ping")[0]
        assert flow["sla_ms"] == 250 and "sla_met" in flow
        assert flow["metadata"]["text_len"] == 5
        assert not [s for s in _spans(runs[2], kind="flow") if s["parent_id"] is not None]

    def test_cog_command_target_renames_the_flow(self, runs):
        """A target on a cog's app command (copied per cog instance) applies: the flow takes its name."""
        flows = _flows(runs[2], "games_stats")
        assert flows and flows[0]["metadata"]["command"] == "stats"
        assert not _flows(runs[2], "stats")

    def test_button_flow_and_view_method_target(self, runs):
        """A button click is a flow `View.method`; a target on the View method times what is really called."""
        flows = _flows(runs[2], "JoinView.join")
        assert flows and flows[0]["metadata"]["custom_id"] == "join"
        assert flows[0]["metadata"]["component_type"] == "button" and flows[0]["metadata"]["answered"]
        body = _spans(runs[2], name="join_button_body")
        assert body and body[0]["flow_id"] == flows[0]["flow_id"]

    def test_modal_submit_flow(self, runs):
        """A modal submit is a flow `Modal.on_submit` with the modal's custom id."""
        flows = _flows(runs[2], "NameModal.on_submit")
        assert flows and flows[0]["status"] == "success"
        assert flows[0]["metadata"]["interaction_type"] == "modal_submit"
        assert flows[0]["metadata"]["response_type"] == "message"
        assert _flows(runs[2], "form")[0]["metadata"]["response_type"] == "modal"

    def test_prefix_command_and_event_flows(self, runs):
        """`!echo` is a flow named `echo` (user, channel); the bot's on_message handler is its own flow."""
        echo = _flows(runs[2], "echo")
        assert echo and echo[0]["metadata"]["interaction_type"] == "prefix_command"
        assert echo[0]["user_id"] >= 800000000000000001
        assert any(c["name"] == "POST /channels/{channel_id}/messages" for c in echo[0]["checkpoints"])
        events = _flows(runs[2], "on_message")
        assert events and events[0]["metadata"]["interaction_type"] == "event"
        assert events[0]["flow_id"] != echo[0]["flow_id"]

    def test_task_loop_iterations_are_cycles(self, runs):
        """Each tasks.loop iteration is a root `cycle` span (not a child of what started the loop); a
        `kind: cycle` target on the Loop names it and captures from its arguments."""
        cycles = _spans(runs[2], kind="cycle", name="ticker_cycle")
        assert len(cycles) >= 5 and not _spans(runs[2], kind="cycle", name="LoopbackBot.ticker")
        assert all(c["parent_id"] is None for c in cycles)
        assert runs[3].ticks >= len(cycles)
        ticks = [c["attrs"]["ticks_before"] for c in cycles]
        assert ticks == sorted(ticks) and ticks[-1] >= 4

    def test_failing_command_is_an_error_with_the_original_type(self, runs):
        """An exception in a command (swallowed by the CommandTree) is status error with its own type."""
        flow = _flows(runs[2], "boom")[0]
        assert flow["status"] == "error" and flow["error"] == "ValueError" and flow["level"] == "ERROR"

    def test_a_failed_flows_state_left_in_a_timer_holds_no_exception(self, runs):
        """A timer made during a failing command holds the flow's context for its whole delay: the flow's
        state it reaches must not keep the exception (whose traceback holds the command's frames, the
        interaction, the members) alive with it."""
        assert _flows(runs[2], "boom") and HELD_ERRORS == [0], HELD_ERRORS

    def test_check_failure_and_cooldown(self, runs):
        """A failing check is status check_failure; a cooldown hit is status cooldown."""
        assert {f["status"] for f in _flows(runs[2], "guarded")} == {"check_failure"}
        statuses = collections.Counter(f["status"] for f in _flows(runs[2], "cool"))
        assert statuses["success"] == 1 and statuses["cooldown"] >= 1


class TestResponseTimes:
    def test_first_response_matches_what_the_user_saw(self, runs):
        """first_response_ms runs from the bot's receipt; gateway_delay_ms (from the snowflake's
        creation) before it. Their sum is within a few ms of the sim's own dispatch → callback
        measurement — also when the interaction waited in the socket while the bot was busy."""
        sim = {r.interaction_id: r for r in runs[1].results if r.interaction_id}
        checked = 0
        for flow in _flows(runs[2]):
            md = flow["metadata"]
            r = sim.get(md.get("interaction_id"))
            if r is None or r.first_ms is None or "first_response_ms" not in md:
                continue
            assert 0 < md["first_response_ms"] <= md["final_response_ms"]
            as_seen = md["first_response_ms"] + md["gateway_delay_ms"]
            assert abs(as_seen - r.first_ms) < 30, (flow["flow_name"], md, r)
            checked += 1
        assert checked >= 8

    def test_deferred_command_final_response(self, runs):
        """defer → followup → edit: the first response is the defer, the final one 200 ms+ later."""
        md = _flows(runs[2], "later")[0]["metadata"]
        assert md["response_type"] == "defer_thinking"
        assert md["final_response_ms"] - md["first_response_ms"] >= 195

    def test_file_response_type_and_time(self, runs):
        """A response carrying a file (multipart body) still gives the response type and first-response time."""
        md = _flows(runs[2], "card")[0]["metadata"]
        assert md["response_type"] == "message" and md["answered"] is True and md["first_response_ms"] > 0

    def test_view_timeout_runs_outside_the_flow(self, runs):
        """A view's timeout fires long after the flow that sent it ended: it runs outside that flow (its
        task does not keep the finished flow's span alive for the whole timeout)."""
        assert TIMEOUT_SPANS and all(s is None for s in TIMEOUT_SPANS), TIMEOUT_SPANS

    def test_missed_deadline_is_flagged(self, runs):
        """A command that answers after 3 s: deadline_missed, status timeout, ERROR, Unknown interaction counted."""
        flow = _flows(runs[2], "slow")[0]
        md = flow["metadata"]
        assert md["deadline_missed"] is True and md["answered"] is False and md["unknown_interaction"] is True
        assert md["first_response_ms"] >= 3200     # the refused attempt: what the report's deadline check reads
        assert flow["status"] == "timeout" and flow["level"] == "ERROR"
        callbacks = [s for s in _spans(runs[2], kind="http", flow_id=flow["flow_id"])]
        assert callbacks and callbacks[0]["attrs"]["status"] == 404 and callbacks[0]["attrs"]["discord_code"] == 10062


    def test_slow_first_response_is_a_warning(self, runs):
        """A first response after 2 s but within 3 s: WARNING, not a deadline miss."""
        flow = _flows(runs[2], "sluggish")[0]
        assert flow["level"] == "WARNING" and flow["status"] == "success"
        assert 2200 <= flow["metadata"]["first_response_ms"] < 3000 and "deadline_missed" not in flow["metadata"]

    def test_counters(self, runs):
        """The integration counts interactions, deadline misses, 10062s and 429s."""
        from autoperf.integrations import discord as integration
        c = integration.counters()
        assert c["interactions"] >= 10 and c["deadline_missed"] >= 1 and c["unknown_interaction"] >= 1
        assert c["rest_429"] >= 1 and c["ratelimit_wait_ms"] >= 250 and c["slow_first_response"] >= 1


class TestRest:
    def test_rest_calls_are_http_spans_with_route_templates(self, runs):
        """Every REST call is an http span named `METHOD /template` with method, route and status."""
        spans = [s for s in _spans(runs[2], kind="http") if s["attrs"].get("system") == "discord"]
        names = {s["name"] for s in spans}
        assert "POST /interactions/{webhook_id}/{webhook_token}/callback" in names
        assert "PUT /applications/{application_id}/commands" in names
        assert "PATCH /webhooks/{application_id}/{interaction_token}/messages/@original" in names or \
            "PATCH /webhooks/{webhook_id}/{webhook_token}/messages/@original" in names
        for s in spans:
            assert s["attrs"]["method"] == s["name"].split(" ")[0] and s["attrs"]["route"] == s["name"].split(" ", 1)[1]
            assert "token" not in s["attrs"]["route"].replace("{webhook_token}", "").replace("{interaction_token}", "")

    def test_forced_429_wait_is_recorded(self, runs):
        """The sim answers the first channel post with 429: 2 attempts, statuses [429, 200], the wait recorded."""
        posts = _spans(runs[2], name="POST /channels/{channel_id}/messages")
        limited = [s for s in posts if s["attrs"].get("attempts") == 2]
        assert limited, [s["attrs"] for s in posts]
        attrs = limited[0]["attrs"]
        assert attrs["statuses"] == [429, 200] and attrs["retries"] == 1
        assert attrs["ratelimit_wait_ms"] >= 250 and limited[0]["duration_ms"] >= 250

    def test_rest_spans_nest_in_their_flow(self, runs):
        """The interaction callback span's parent is the command's flow."""
        flow = _flows(runs[2], "ping")[0]
        kids = _spans(runs[2], kind="http", parent_id=flow["flow_id"])
        assert [k["name"] for k in kids] == ["POST /interactions/{webhook_id}/{webhook_token}/callback"]


class TestGateway:
    def test_heartbeat_latency_is_a_resource_metric(self, runs):
        """Heartbeat send → ACK is measured by autoperf and written as gateway_latency_ms."""
        values = [r["gateway_latency_ms"] for r in runs[2] if r["type"] == "resource" and "gateway_latency_ms" in r]
        assert values and all(0 < v < 500 for v in values)


class TestTransparency:
    def test_bot_behaviour_is_identical(self, runs):
        """The REST calls the bot makes and what the users see are the same with and without autoperf."""
        plain, traced = runs[0], runs[1]

        def calls(report):
            return collections.Counter((c.route, c.status) for c in report.calls)

        def steps(report):
            return {name: (s.count, s.ok, s.timeouts, s.errors) for name, s in report.steps.items()}

        assert calls(plain) == calls(traced)
        assert steps(plain) == steps(traced)

    def test_unpatch_restores_discord(self, runs):
        """After uninstall, discord.py's functions are its own again."""
        import discord.app_commands.tree as tree
        import discord.http as http
        assert not hasattr(tree.CommandTree._call, "__wrapped__")
        assert not hasattr(http.HTTPClient.request, "__wrapped__")
        assert ping._callback.__name__ == "ping" and not hasattr(ping._callback, "__autoperf__")
        assert "JoinView" not in sys.modules[MODULE].JoinView.join.__qualname__ or \
            not hasattr(sys.modules[MODULE].JoinView.join, "__autoperf__")


class TestNeverBreaksTheBot:
    def test_internal_errors_in_the_gateway_path_are_contained(self, runs, monkeypatch, tmp_path):
        """If autoperf's own bookkeeping fails inside the gateway parser, the bot keeps answering and
        the failure is reported once as a warning."""
        from autoperf import diagnostics, integrations
        from autoperf.integrations import discord as integration

        class Broken:
            def __init__(self, *args):
                raise RuntimeError("bookkeeping exploded")

        bootstrap.ensure_pipeline(log_dir=str(tmp_path), console=False)
        memory = sinks.Memory()
        pipeline.add_sink(memory)
        monkeypatch.setattr(integration.state, "_IState", Broken)
        integrations.patch("discord", discord, {})
        try:
            report, _ = _play({"seed": 9, "duration_s": 1.0, "rate": 6, "users": 2, "warmup_s": 0.2, "grace_s": 3,
                               "mix": [{"command": "ping", "options": {"text": "x"}}]})
            pipeline.flush()
        finally:
            integrations.unpatch("discord")
            pipeline.remove_sink(memory)
            restore()
        step = report.steps["/ping"]
        assert step.count >= 3 and step.ok == step.count
        warnings = [r for r in memory.records if r["type"] == "warning" and "tracking an interaction" in r["message"]]
        assert len(warnings) == 1 and "bookkeeping exploded" in warnings[0]["message"]
        assert any(key[0] == "internal_error" and n >= 3 for key, n in diagnostics.counts().items())
        assert _flows(memory.records, "ping")   # flows still recorded, without response times
