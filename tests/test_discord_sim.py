"""Loopback Discord (autoperf.discord_sim) against real, unmodified discord.py.

The main bot runs in a subprocess (so the discord.py patches stay out of the pytest process) under
the venv's discord.py 2.7 and, when a discord.py 2.0 interpreter is available
(AUTOPERF_DPY20_PYTHON, default .venv-dpy20/bin/python, which `make test` creates), under 2.0 too.
"""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from autoperf.discord_sim import Simulation, SimServer, ScenarioError, load_scenario, run_scenario

ROOT = Path(__file__).resolve().parents[1]
DPY20 = os.environ.get("AUTOPERF_DPY20_PYTHON", str(ROOT / ".venv-dpy20" / "bin" / "python"))
# more interpreters with other discord.py versions, e.g. "/tmp/dpy2.4.0/bin/python:/tmp/dpy2.5.2/bin/python"
EXTRA = [p for p in os.environ.get("AUTOPERF_DISCORD_PYTHONS", "").split(os.pathsep) if p]

SCENARIO = """
seed: 7
duration_s: 3.5
rate: 10
mix_order: round_robin
max_flows: 22
warmup_s: 0.2
step_gap_s: 0.15
grace_s: 5
users: 4
guilds:
  - name: ladder
    channels: [general, matches]
rate_limits:
  force_429:
    - route: "POST /channels/{channel_id}/messages"
      nth: 1
      retry_after: 0.05
mix:
  - command: ping
  - command: slow
    options: {n: 3}
  - steps:
      - command: ladder join
        options: {team: red, rival: "@random"}
      - button: Accept
  - steps:
      - command: feedback
      - modal: {Reason: gg}
  - message: "!report"
    attachments: [{filename: replay.txt, size: 321}]
  - steps:
      - command: pick
      - select: map
        values: [Dust 2]
  - user_command: Show stats
  - message_command: Quote
  - autocomplete: leaderboard
    option: player
    value: us
  - command: upload
  - steps:
      - command: board
      - button: Refresh
  - command: whisper
"""

BOT = r'''
import asyncio, io, json, sys
import discord
from discord import app_commands
from discord.ext import commands
from autoperf.discord_sim import start_in_process, start_in_thread, point_discord_at

scenario_path, out_path, mode = sys.argv[1], sys.argv[2], sys.argv[3]
start = start_in_process if mode == "process" else start_in_thread
handle = start(scenario_path, ready_timeout=20)
assert point_discord_at(handle.base_url)
events = []

intents = discord.Intents.default()
intents.message_content = True


class Bot(commands.Bot):
    async def setup_hook(self):
        await self.tree.sync()


bot = Bot(command_prefix="!", intents=intents, guild_ready_timeout=0.05)


@bot.tree.command(description="replies at once")
async def ping(i: discord.Interaction):
    await i.response.send_message("pong")


@bot.tree.command(description="defers, then follows up")
async def slow(i: discord.Interaction, n: int):
    await i.response.defer(thinking=True)
    await asyncio.sleep(0.05)
    await i.followup.send(f"done {n}")
    events.append("slow:%d" % n)


class Challenge(discord.ui.View):
    @discord.ui.button(label="Accept", custom_id="accept")
    async def accept(self, i: discord.Interaction, button: discord.ui.Button):
        events.append("click")
        await i.response.edit_message(content="accepted", view=None)


ladder = app_commands.Group(name="ladder", description="ladder commands")


@ladder.command(description="join the ladder")
async def join(i: discord.Interaction, team: str, rival: discord.User):
    events.append("join:%s:%s" % (team, rival.id))
    await i.response.send_message("join %s?" % team, view=Challenge())


bot.tree.add_command(ladder)


class Feedback(discord.ui.Modal, title="Feedback"):
    reason = discord.ui.TextInput(label="Reason")

    async def on_submit(self, i: discord.Interaction):
        events.append("modal:" + self.reason.value)
        await i.response.send_message("thanks", ephemeral=True)


@bot.tree.command(description="opens a modal")
async def feedback(i: discord.Interaction):
    await i.response.send_modal(Feedback())


class MapPick(discord.ui.View):
    @discord.ui.select(custom_id="map", placeholder="map",
                       options=[discord.SelectOption(label="Dust 2", value="dust2"),
                                discord.SelectOption(label="Nuke", value="nuke")])
    async def pick(self, i: discord.Interaction, select: discord.ui.Select):
        events.append("select:" + ",".join(select.values))
        await i.response.send_message("map " + select.values[0])


@bot.tree.command(description="pick a map")
async def pick(i: discord.Interaction):
    await i.response.send_message("pick a map", view=MapPick())


@bot.tree.context_menu(name="Show stats")
async def show_stats(i: discord.Interaction, member: discord.Member):
    events.append("stats:%s" % member.id)
    await i.response.send_message("stats for %s" % member.name)


@bot.tree.context_menu(name="Quote")
async def quote(i: discord.Interaction, message: discord.Message):
    events.append("quote")
    await i.response.send_message("quoted")


async def player_auto(i: discord.Interaction, current: str):
    events.append("auto:" + current)
    return [app_commands.Choice(name=current + "er", value=current + "er")]


@bot.tree.command(description="leaderboard")
@app_commands.autocomplete(player=player_auto)
async def leaderboard(i: discord.Interaction, player: str):
    await i.response.send_message(player)


@bot.tree.command(description="uploads a file, edits and reads the original response")
async def upload(i: discord.Interaction):
    await i.response.send_message("here", file=discord.File(io.BytesIO(b"abc" * 100), filename="a.txt"))
    await i.edit_original_response(content="here (edited)")
    m = await i.original_response()
    events.append("upload:%d:%d:%s" % (len(m.attachments), m.attachments[0].size, m.content))


class Board(discord.ui.View):
    @discord.ui.button(label="Refresh", custom_id="refresh")
    async def refresh(self, i: discord.Interaction, button: discord.ui.Button):
        events.append("refresh")
        await i.response.defer()
        await i.message.edit(content="refreshed")


@bot.tree.command(description="ephemeral ack, then a channel message with a view")
async def board(i: discord.Interaction):
    await i.response.send_message("ok", ephemeral=True)
    await i.channel.send("board", view=Board())


@bot.tree.command(description="DMs the user")
async def whisper(i: discord.Interaction):
    await i.response.defer(ephemeral=True)
    await i.user.send("psst")
    await i.followup.send("sent", ephemeral=True)
    events.append("whisper")


@bot.command()
async def report(ctx):
    data = await ctx.message.attachments[0].read()
    events.append("attachment:%d" % len(data))
    await ctx.reply("got %d bytes" % len(data))


bot.run("sim.token.0", log_handler=None)
report = handle.wait(30)
with open(out_path, "w") as fh:
    json.dump({"report": report.to_dict(with_calls=True), "events": events, "closed": bot.is_closed(),
               "version": discord.__version__, "text": report.format()}, fh, default=str)
'''


def _run_bot(python: str, tmp: Path, mode: str = "thread") -> dict:
    (tmp / "scenario.yaml").write_text(SCENARIO)
    (tmp / "bot.py").write_text(BOT)
    out = tmp / "out.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    t0 = time.monotonic()
    proc = subprocess.run([python, str(tmp / "bot.py"), str(tmp / "scenario.yaml"), str(out), mode], cwd=str(tmp),
                          env=env, capture_output=True, text=True, timeout=45)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr[-4000:]
    data = json.loads(out.read_text())
    data["elapsed"] = elapsed
    data["stderr"] = proc.stderr
    return data


def _usable(python: str, prefix: str = "2.") -> bool:
    if not os.path.exists(python):
        return False
    probe = subprocess.run([python, "-c", "import discord, autoperf.discord_sim; "
                                          f"assert discord.__version__.startswith({prefix!r})"],
                           env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, timeout=30)
    return probe.returncode == 0


@pytest.fixture(scope="module", params=["venv", "venv-process", "dpy20"] + [f"extra{i}" for i in range(len(EXTRA))])
def run(request, tmp_path_factory):
    mode = "thread"
    if request.param.startswith("venv"):
        python = sys.executable
        mode = "process" if request.param == "venv-process" else "thread"
    elif request.param == "dpy20":
        python = DPY20
        if not _usable(python, "2.0"):
            pytest.skip(f"no discord.py 2.0 interpreter at {DPY20}")
    else:
        python = EXTRA[int(request.param[5:])]
        if not _usable(python):
            pytest.skip(f"{python}: no discord.py 2.x")
    return _run_bot(python, tmp_path_factory.mktemp(request.param), mode)


def _calls(run: dict, route: str) -> list:
    return [c for c in run["report"]["calls"] if c["route"] == route]


def _steps(run: dict) -> dict:
    return run["report"]["steps"]


def test_bot_logged_in_and_synced_commands(run):
    """The real bot logged in over REST, identified on the gateway and synced its command tree."""
    bot = run["report"]["bot"]
    assert bot["logged_in"] and bot["identified"] and bot["commands_synced"]
    names = {name for name, _ in bot["commands"]}
    assert {"ping", "slow", "ladder", "feedback", "pick", "leaderboard", "Show stats", "Quote"} <= names
    assert _calls(run, "GET /users/@me") and _calls(run, "PUT /applications/{app_id}/commands")
    assert run["report"]["error"] is None


def test_every_interaction_got_a_response(run):
    """Every step of every flow was answered in time: no timeouts, no errors, nothing skipped."""
    steps = _steps(run)
    expected = {"/ping", "/slow", "/ladder join", "button:Accept", "/feedback", "modal", "message:!report",
                "/pick", "select:map", "user_command:Show stats", "message_command:Quote",
                "autocomplete:leaderboard", "/upload", "/board", "button:Refresh", "/whisper"}
    assert expected <= set(steps), run["text"]
    for name, s in steps.items():
        assert s["count"] >= 1 and s["ok"] == s["count"], (name, s, run["text"])
    assert run["report"]["ok"], run["text"]
    assert run["report"]["flows_started"] == 22


def test_button_click_reached_view_callback(run):
    """A click on the button of the message the sim returned reached the view, which edited that message."""
    assert "click" in run["events"]
    clicks = [r for r in run["report"]["results"] if r["step"] == "button:Accept"]
    assert clicks and all(r["callback_type"] == 7 for r in clicks)
    edits = [c for c in _calls(run, "POST /interactions/{interaction_id}/{token}/callback")
             if c["json"] and c["json"].get("type") == 7]
    assert edits and edits[0]["json"]["data"]["content"] == "accepted"
    assert any(e.startswith("join:red:") for e in run["events"])


def test_deferred_command_measures_followup(run):
    """A deferred command's final latency is the followup, later than the thinking callback."""
    results = [r for r in run["report"]["results"] if r["step"] == "/slow"]
    assert results and all(r["callback_type"] == 5 for r in results)
    assert all(r["final_ms"] >= r["first_ms"] + 40 for r in results)
    followups = _calls(run, "POST /webhooks/{app_id}/{token}")
    assert any((c["json"] or {}).get("content") == "done 3" for c in followups)


def test_message_with_attachment_is_served_and_answered(run):
    """The prefix command downloaded the sim-served attachment and its reply was attributed to the message."""
    assert "attachment:321" in run["events"]
    replies = [c for c in _calls(run, "POST /channels/{channel_id}/messages") if c["status"] == 200]
    assert any((c["json"] or {}).get("content") == "got 321 bytes" and (c["json"] or {}).get("message_reference")
               for c in replies)
    assert _steps(run)["message:!report"]["first_ms"]["p50"] > 0


def test_forced_429_was_retried(run):
    """The forced 429 on the first channel message was retried by discord.py: the sim saw the route twice."""
    calls = _calls(run, "POST /channels/{channel_id}/messages")
    assert [c["status"] for c in calls[:2]] == [429, 200]
    assert calls[0]["json"] == calls[1]["json"]


def test_modal_select_context_menus_and_autocomplete(run):
    """Modal submit values, select values, context-menu targets and autocomplete input reach the bot."""
    events = run["events"]
    assert "modal:gg" in events and "select:dust2" in events and "quote" in events and "auto:us" in events
    assert any(e.startswith("stats:") for e in events)
    auto = [c for c in _calls(run, "POST /interactions/{interaction_id}/{token}/callback")
            if c["json"] and c["json"].get("type") == 8]
    assert auto and auto[0]["json"]["data"]["choices"][0]["value"] == "user"


def test_files_original_edits_channel_views_and_dms(run):
    """Multipart uploads, @original edit/fetch, a view sent with channel.send() and a DM all work end to end."""
    assert "upload:1:300:here (edited)" in run["events"]
    assert "refresh" in run["events"] and "whisper" in run["events"]
    uploads = [c for c in _calls(run, "POST /interactions/{interaction_id}/{token}/callback")
               if c["files"] and c["files"][0]["filename"] == "a.txt"]
    assert uploads and uploads[0]["files"][0]["size"] == 300
    assert _calls(run, "PATCH /webhooks/{app_id}/{token}/messages/@original")
    assert _calls(run, "GET /webhooks/{app_id}/{token}/messages/@original")
    assert any((c["json"] or {}).get("content") == "refreshed"
               for c in _calls(run, "PATCH /channels/{channel_id}/messages/{message_id}"))
    dm = _calls(run, "POST /users/@me/channels")
    assert dm and dm[0]["status"] == 200
    refresh = [r for r in run["report"]["results"] if r["step"] == "button:Refresh"][0]
    assert refresh["callback_type"] == 6 and refresh["final_ms"] > refresh["first_ms"]


def test_report_latency_numbers_present(run):
    """Every step has positive p50/p95/p99 first and final latencies, p50 <= p95 <= p99."""
    for name, s in _steps(run).items():
        for key in ("first_ms", "final_ms"):
            q = s[key]
            assert q["p50"] is not None and q["p50"] > 0, (name, key, q)
            assert q["p50"] <= q["p95"] <= q["p99"], (name, key, q)


def test_bot_stops_by_itself(run):
    """When the scenario ends the sim closes the client, bot.run() returns and the process exits quickly."""
    assert run["closed"] is True
    assert run["elapsed"] < 25


def test_rest_headers_and_forced_429_on_the_wire():
    """REST answers carry exact JSON content type, Via and X-RateLimit headers; forced 429s carry retry_after."""
    scn = load_scenario({"mix": [{"command": "x"}], "rate_limits": {
        "limit": 3, "window_s": 10, "force_429": [{"route": "GET /gateway/bot", "nth": [2], "retry_after": 0.25}]}})

    async def main():
        srv = SimServer(scn)
        await srv.start()
        try:
            async with aiohttp.ClientSession() as s:
                async with s.get(srv.api_base + "/users/@me") as r:
                    assert r.headers["Content-Type"] == "application/json"
                    assert r.headers["Via"]
                    assert r.headers["X-RateLimit-Limit"] == "3" and r.headers["X-RateLimit-Remaining"] == "2"
                    assert float(r.headers["X-RateLimit-Reset-After"]) > 0 and r.headers["X-RateLimit-Bucket"]
                    assert (await r.json())["bot"] is True
                async with s.get(srv.api_base + "/gateway/bot") as r:
                    assert (await r.json())["url"] == srv.gateway_url
                async with s.get(srv.api_base + "/gateway/bot") as r:
                    assert r.status == 429 and (await r.json())["retry_after"] == 0.25
                gid = scn.guilds[0].id
                uid = scn.users[0].id
                async with s.put(f"{srv.api_base}/guilds/{gid}/members/{uid}/roles/{gid + 1}") as r:
                    assert r.status == 204 and "Content-Type" not in r.headers
                async with s.get(f"{srv.api_base}/guilds/{gid}/members", params={"limit": "1000"}) as r:
                    assert len(await r.json()) == len(scn.users) + 1
                async with s.get(srv.base_url + "/cdn/embed/avatars/0.png") as r:
                    assert r.headers["Content-Type"] == "image/png" and (await r.read()).startswith(b"\x89PNG")
                async with s.get(srv.api_base + "/no/such/route") as r:
                    assert r.status == 404 and r.headers["Content-Type"] == "application/json"
            assert [c.status for c in srv.calls_to("GET /gateway/bot")] == [200, 429]
            assert srv.unhandled == ["GET /no/such/route"]
        finally:
            await srv.close()

    asyncio.run(main())


async def _play_in_this_loop(scn, client, timeout=20):
    """run_scenario in this event loop with ``client`` (a real discord.py Client or Bot) pointed at the
    loopback Discord once it listens; the scenario closes the client at its end. Returns the report."""
    from autoperf.discord_sim import redirect

    task = None

    def started(url):
        nonlocal task
        assert redirect.point_discord_at(url)
        task = asyncio.ensure_future(client.start("sim.token.in-loop"))

    try:
        report = await asyncio.wait_for(run_scenario(scn, on_started=started, close_clients=True), timeout)
        await asyncio.wait_for(task, 10)   # close_clients closed the client: start() returned
    finally:
        redirect.restore()
        if not client.is_closed():
            await client.close()
    return report


def test_late_callback_is_a_timeout_and_rejected_like_discord():
    """In-loop run_scenario: a callback later than 3 s is a timeout, the sim answers 404 10062, the bot stops."""
    import discord
    from discord.ext import commands

    scn = {"seed": 1, "duration_s": 0.2, "rate": 50, "max_flows": 2, "warmup_s": 0.1, "grace_s": 5,
           "mix_order": "round_robin", "mix": [{"command": "sleepy"}, {"command": "fast"}]}
    errors = []

    async def main():
        bot = commands.Bot(command_prefix="!", intents=discord.Intents.default(), guild_ready_timeout=0.05)

        @bot.tree.command(description="too slow")
        async def sleepy(i: discord.Interaction):
            await asyncio.sleep(3.2)
            try:
                await i.response.send_message("late")
            except discord.NotFound as exc:
                errors.append(exc.code)

        @bot.tree.command(description="fast")
        async def fast(i: discord.Interaction):
            await i.response.send_message("ok")

        async def setup_hook():
            await bot.tree.sync()
        bot.setup_hook = setup_hook
        return await _play_in_this_loop(scn, bot)

    report = asyncio.run(main())
    assert report.steps["/sleepy"].timeouts == 1 and report.steps["/sleepy"].first_ms["p50"] is None
    assert report.steps["/fast"].ok == 1 and report.steps["/fast"].first_ms["p50"] > 0
    assert errors == [10062]
    late = [c for c in report.calls if c.route == "POST /interactions/{interaction_id}/{token}/callback"
            and c.status == 404]
    assert len(late) == 1
    sleepy = [r for r in report.results if r.step == "/sleepy"][0]
    assert sleepy.status == "timeout" and 3000 < sleepy.late_ms < 4500
    assert not report.ok


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_handle_stops_without_a_bot(mode):
    """start_in_thread/process with no bot end by themselves after ready_timeout; stop() ends a run early."""
    from autoperf.discord_sim import start_in_process, start_in_thread

    start = start_in_thread if mode == "thread" else start_in_process
    finished = []
    t0 = time.monotonic()
    h = start({"mix": [{"command": "a"}]}, ready_timeout=0.3, on_finished=finished.append)
    assert h.base_url.startswith("http://127.0.0.1:")
    report = h.wait(10)
    assert h.done and report is not None and "did not connect" in report.error and finished == [report]
    assert time.monotonic() - t0 < 5

    h2 = start({"mix": [{"command": "a"}]}, ready_timeout=30)
    t1 = time.monotonic()
    report2 = h2.stop(10)
    assert h2.done and report2.error == "stopped before the bot connected" and time.monotonic() - t1 < 5


def test_think_time_mode_and_message_content_intent():
    """Think-time mode loops every user; without MESSAGE_CONTENT the bot gets blank content, as on Discord."""
    import discord

    scn = {"seed": 5, "duration_s": 1.2, "think_time_s": 0.1, "users": 2, "warmup_s": 0.05, "grace_s": 3,
           "mix": [{"message": "hello {bot} !stats", "expect_reply": False}, {"message": "!stats", "expect_reply": False}]}
    seen = []

    async def main():
        intents = discord.Intents.default()
        intents.message_content = False
        client = discord.Client(intents=intents, guild_ready_timeout=0.05)

        @client.event
        async def on_message(message):
            seen.append((message.author.id, message.content))

        return await _play_in_this_loop(scn, client)

    report = asyncio.run(main())
    users = {r.user_id for r in report.results}
    assert len(users) == 2 and report.flows_started >= 4
    assert seen and all(content == "" or "<@" in content for _, content in seen)
    assert any(content.startswith("hello <@") for _, content in seen)       # a mention keeps the content
    assert any("MESSAGE_CONTENT" in w for w in report.warnings)
    assert report.bot["intents"] & (1 << 15) == 0


def test_scenario_validation_and_defaults():
    """Scenario files are validated with messages naming the key; subcommands and defaults parse."""
    scn = load_scenario("""
mix:
  - command: /ladder  join
    options: {page: 2}
  - steps: [{command: a}, {button: Go}, {modal: {why: x}}]
""")
    assert scn.mix[0].steps[0].target == "ladder join" and scn.mix[0].steps[0].name == "/ladder join"
    assert [s.kind for s in scn.mix[1].steps] == ["command", "button", "modal"]
    assert scn.rate == 1.0 and len(scn.users) == 3 and scn.step_timeout_s == 3.0
    with pytest.raises(ValueError, match="loopback"):
        Simulation(scn, host="0.0.0.0")
    bad = [
        ({"mix": []}, "mix"),
        ({"mix": [{"button": "x"}]}, "previous step"),
        ({"mix": [{"command": "a", "colour": 1}]}, "colour"),
        ({"mix": [{"command": "a"}], "rate": 1, "think_time_s": 2}, "exclusive"),
        ({"mix": [{"command": "a"}], "users": 0}, "users"),
        ({"mix": [{"command": "a"}], "rate_limits": {"force_429": [{"route": "nope"}]}}, "route"),
        ({"mix": [{"command": "a", "channel": "nowhere"}]}, "nowhere"),
        ({"mix": [{"command": "a"}], "duraton_s": 3}, "duraton_s"),
    ]
    for data, word in bad:
        with pytest.raises(ScenarioError, match=word):
            load_scenario(data)


def test_arrival_plan_is_reproducible():
    """The same seed gives the same arrival plan (gaps, flows, users); another seed gives another."""
    data = {"seed": 42, "rate": 5, "users": 10, "mix": [{"command": "a", "weight": 3}, {"command": "b"}]}

    def plan(seed):
        sim = Simulation(dict(data, seed=seed))
        return [(round(g, 9), f.name, u, fs) for g, f, u, fs in sim.plan(30)]

    assert plan(42) == plan(42)
    assert plan(42) != plan(43)
    names = [p[1] for p in plan(42)]
    assert names.count("/a") > names.count("/b")


def test_planned_arrivals_start_even_when_the_loop_wakes_late(monkeypatch):
    """Every arrival the seeded plan puts before the deadline starts, also when the driver wakes up late
    for it (loop lag): two runs of one seed play the same flows. The driver here oversleeps each wait by
    0.4 s; the deadline falls 0.2 s after an arrival that has to wait, so it wakes after the deadline."""
    import discord

    base = {"seed": 11, "rate": 2, "users": 2, "warmup_s": 0.05, "grace_s": 3,
            "mix": [{"message": "!stats", "expect_reply": False}]}
    t, starts = 0.0, []
    for gap, *_ in Simulation(dict(base, duration_s=60)).plan(40):
        t += gap
        starts.append((t, gap))
    # the last arrival before the deadline: 1.5 s or more into the run, its gap longer than the oversleep
    # (it waits, then wakes late), the next one more than 0.2 s after it
    k = next(i for i, (at, gap) in enumerate(starts) if at >= 1.5 and gap > 0.6 and starts[i + 1][1] > 0.2)
    scn = dict(base, duration_s=starts[k][0] + 0.2)

    real_sleep = Simulation._sleep

    async def late_sleep(self, seconds):
        await real_sleep(self, seconds + 0.4 if seconds > 0 else seconds)

    monkeypatch.setattr(Simulation, "_sleep", late_sleep)

    async def main():
        client = discord.Client(intents=discord.Intents.default(), guild_ready_timeout=0.05)
        return await _play_in_this_loop(scn, client, timeout=30)

    report = asyncio.run(main())
    assert report.error is None
    assert report.flows_started == k + 1          # the plan's arrivals before the deadline, the late one too
