"""User journeys on the loopback Discord against real discord.py (the venv's and 2.0.1): DMs, expectations,
waits for bot messages acted on by several users, answers matched to what caused them, other HTTP
kept off the network. The bot is tests/discord_sim_bot.py; ground truth is what it recorded itself.
"""
from __future__ import annotations

import glob
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DPY20 = os.environ.get("AUTOPERF_DPY20_PYTHON", str(ROOT / ".venv-dpy20" / "bin" / "python"))
# more interpreters with other discord.py versions, as in test_discord_sim.py
EXTRA = [p for p in os.environ.get("AUTOPERF_DISCORD_PYTHONS", "").split(os.pathsep) if p]
BOT = ROOT / "tests" / "discord_sim_bot.py"

pytestmark = pytest.mark.timeout(180)

HTTP_RULES = """
http:
  - host: tz.example.com
    path: /v1/zones.json
    json: {"Europe/Berlin": 1, "America/New_York": -5}
  - host: api.weather.example
    json: {sky: sunny}
  - host: static.example.org
    path: /motd.txt
    file: motd.txt
    content_type: text/plain
  - host: status.example.com
    status: 503
    body: down for maintenance
"""

SCENARIO = """
seed: 3
users: [alice, bob, carol, dave, erin, frank]
guilds:
  - name: ladder
    channels: [general, matches]
rate: 12
duration_s: 3
max_flows: 19
mix_order: round_robin
warmup_s: 0.2
step_gap_s: 0.05
grace_s: 30
wait_timeout_s: 10
""" + HTTP_RULES + """
mix:
  - name: ranked match
    channel: dm
    actors:
      alice:
        - command: queue
          expect: {content: "You are in the queue", ephemeral: false}
        - wait: dm
          name: match found
          match: {content_matches: "Match #\\\\d+ found", mentions: bob, components: [Confirm]}
        - button: Confirm
          expect: {content: "confirmed"}
        - wait: dm
          name: match on
          match: {content: "is on"}
        - message: "!result win"
          attachments: [{filename: match.replay, size: 2048}]
          expect: {content: "replay of 2048 bytes"}
      bob:
        - command: queue
        - wait: dm
          name: match found
          match: {content: "found", mentions: alice}
        - button: Confirm
        - wait: dm
          name: match on
          match: {content: "is on"}
  - name: queue in a guild
    channel: general
    steps:
      - command: queue
        expect: {content: "You are in the queue"}
  - command: zone
    options: {name: Europe/Berlin}
    expect: {content: "Europe/Berlin is UTC+1"}
  - command: weather
    expect: {content: "sunny / welcome"}
  - command: flaky
  - message: "!flaky"
  - command: flaky
  - message: "!flaky"
  - command: flaky
  - message: "!flaky"
  - command: flaky
  - message: "!flaky"
  - command: ignore
    name: ignored on purpose
    expect: {status: timeout}
    timeout_s: 0.5
  - command: profile
    expect: {embed_title: "Profile of", embed_description_matches: "Rank \\\\d+", components: [Refresh]}
  - name: profile, wrong title
    steps:
      - command: profile
        name: /profile (expects a leaderboard)
        expect: {embed_title: Leaderboard}
        timeout_s: 0.5
  - command: secret
    expect: {ephemeral: true, content: "only you"}
  - name: feedback
    steps:
      - command: feedback
        expect: {modal: Feedback}
      - modal: {Text: great bot}
        expect: {content: "thanks for 'great bot'", ephemeral: true}
  - name: challenge
    actors:
      challenger:
        - command: challenge
          channel: matches
          options: {opponent: "@opponent"}
          expect: {ephemeral: true}
        - wait: any
          name: challenge accepted
          match: {content: "accepted your challenge", mentions: opponent}
      opponent:
        - wait: matches
          name: challenged
          match: {mentions: me, components: [Accept]}
        - button: Accept
          expect: {content: "accepted the challenge"}
  - name: nobody writes
    steps:
      - command: secret
      - wait: dm
        name: wait for nothing
        match: {content: "never sent"}
        timeout_s: 0.5
"""

RUNNER = r'''
import json, os, sys
from autoperf.discord_sim import point_discord_at, start_in_process, start_in_thread
scenario, out, mode, bot_path = sys.argv[1:5]
handle = (start_in_process if mode == "process" else start_in_thread)(scenario, ready_timeout=30)
import discord
assert point_discord_at(handle.base_url)
sys.path.insert(0, os.path.dirname(bot_path))
import discord_sim_bot
bot = discord_sim_bot.SimTestBot()
bot.run("sim.token.journeys", log_handler=None)
report = handle.wait(60)
with open(out, "w") as fh:
    json.dump({"report": report.to_dict(with_calls=True), "truth": discord_sim_bot.TRUTH, "text": report.format(),
               "version": discord.__version__}, fh, default=str)
'''


def _usable(python: str) -> bool:
    if not os.path.exists(python):
        return False
    probe = subprocess.run([python, "-c", "import discord, httpx"], capture_output=True, timeout=30)
    return probe.returncode == 0


@pytest.fixture(scope="module", params=["venv", "venv-process", "dpy20"] + [f"extra{i}" for i in range(len(EXTRA))])
def played(request, tmp_path_factory):
    python = {"dpy20": DPY20}.get(request.param) or (EXTRA[int(request.param[5:])] if request.param.startswith("extra")
                                                     else sys.executable)
    if not _usable(python):
        pytest.skip(f"no discord.py interpreter at {python}")
    tmp = tmp_path_factory.mktemp(request.param)
    (tmp / "scenario.yaml").write_text(SCENARIO)
    (tmp / "motd.txt").write_text("welcome")
    (tmp / "runner.py").write_text(RUNNER)
    mode = "process" if request.param == "venv-process" else "thread"
    env = dict(os.environ, PYTHONPATH=str(ROOT), LADDER_WAVE_S="1")
    proc = subprocess.run([python, str(tmp / "runner.py"), str(tmp / "scenario.yaml"), str(tmp / "out.json"), mode,
                           str(BOT)], cwd=str(tmp), env=env, capture_output=True, text=True, timeout=150)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads((tmp / "out.json").read_text())


def _results(played, step):
    return [r for r in played["report"]["results"] if r["step"] == step]


def _one(played, step):
    results = _results(played, step)
    assert len(results) == 1, (step, results, played["text"])
    return results[0]


def test_two_player_journey_in_dms(played):
    """Both players queue in DMs, each waits for the match DM, confirms on it, waits for "is on"; alice reports."""
    journey = [r for r in played["report"]["results"] if r["flow"] == "ranked match"]
    assert [(r["actor"], r["step"], r["status"]) for r in journey if r["actor"] == "alice"] == [
        ("alice", "/queue", "ok"), ("alice", "match found", "ok"), ("alice", "button:Confirm", "ok"),
        ("alice", "match on", "ok"), ("alice", "message:!result", "ok")], played["text"]
    assert [r["status"] for r in journey if r["actor"] == "bob"] == ["ok"] * 4, played["text"]
    waits = [r for r in journey if r["step"] == "match found"]
    # the wave is 1 s: the match DM comes 0-1 s after the queue answer (plus the bot's own time)
    assert all(0 < r["first_ms"] < 2500 for r in waits), waits
    dm_channels = {c["path"].split("/")[2] for c in played["report"]["calls"]
                   if c["route"] == "POST /channels/{channel_id}/messages" and "found" in (c["json"] or {}).get("content", "")}
    assert len(dm_channels) == 2                       # one DM channel per player
    assert played["report"]["flows_completed"] >= 1


def test_expectation_failures_say_what_came_instead(played):
    """A DM-only command used in a guild and a wrong embed title fail their step, naming what the bot sent."""
    guild = next(r for r in _results(played, "/queue") if r["flow"] == "queue in a guild")
    assert guild["status"] == "failed"
    assert "You are in the queue" in guild["error"] and "Use /queue in your DMs with me." in guild["error"]
    assert "ephemeral" in guild["error"]
    wrong = _one(played, "/profile (expects a leaderboard)")
    assert wrong["status"] == "failed" and "embed title containing 'Leaderboard'" in wrong["error"]
    assert "embed 'Profile of" in wrong["error"]
    steps = played["report"]["steps"]
    assert steps["/profile (expects a leaderboard)"]["failed"] == 1 and not played["report"]["ok"]


def test_expectations_that_hold(played):
    """Content, regex, embed, components, ephemeral, modal and an expected timeout all pass when the bot complies."""
    for step in ("/zone", "/weather", "/profile", "/feedback", "modal"):
        assert _one(played, step)["status"] == "ok", (step, played["text"])
    assert all(r["status"] == "ok" for r in _results(played, "/secret"))
    ignored = _one(played, "ignored on purpose")
    assert ignored["status"] == "ok" and ignored["expected"] == "timeout" and ignored["first_ms"] is None


def test_waits_in_channels_and_anywhere_across_users(played):
    """The opponent waits in #matches for the message mentioning them, presses Accept on it; the challenger
    waits anywhere and gets the DM the bot sent after the click."""
    flow = [r for r in played["report"]["results"] if r["flow"] == "challenge"]
    assert {(r["actor"], r["step"]): r["status"] for r in flow} == {
        ("challenger", "/challenge"): "ok", ("challenger", "challenge accepted"): "ok",
        ("opponent", "challenged"): "ok", ("opponent", "button:Accept"): "ok"}, played["text"]
    users = {r["actor"]: r["user_id"] for r in flow}
    assert users["challenger"] != users["opponent"]


def test_a_wait_that_sees_nothing_is_a_timeout(played):
    """A wait with no matching message times out after its own timeout_s and lists what the user saw."""
    nothing = _one(played, "wait for nothing")
    assert nothing["status"] == "timeout"
    assert "no message with content containing 'never sent' in the user's DMs within 0.5s" in nothing["error"]


def test_answers_are_matched_to_what_caused_them(played):
    """/flaky and !flaky answer every other call: exactly the unanswered ones are timeouts, by interaction or
    message id (FIFO matching would pair the reply to one !flaky with the unanswered one before it)."""
    truth = played["truth"]["flaky"]
    slash = _results(played, "/flaky")
    prefix = _results(played, "message:!flaky")
    assert len(slash) == 4 and len(prefix) == 4
    for r in slash:
        assert r["status"] == ("ok" if truth[str(r["interaction_id"])] else "timeout"), r
    for r in prefix:
        assert r["status"] == ("ok" if truth[str(r["message_id"])] else "timeout"), r
        if r["status"] == "ok":
            assert r["first_ms"] < 1000, r         # its own reply, not a later one's
    assert sum(truth.values()) == 4
    assert played["report"]["steps"]["/flaky"]["timeouts"] == 2
    assert played["report"]["steps"]["message:!flaky"]["timeouts"] == 2


def test_other_http_is_answered_locally_and_listed(played):
    """The cog's downloads at load and the commands' httpx calls got the scenario's answers (JSON, a file,
    a status with a body) or a 404; the report lists every host with its statuses (and no other)."""
    truth = played["truth"]
    assert truth["zones"] == 2 and truth["banner_status"] == 404 and truth["status"] == [503, "down for maintenance"]
    hosts = {h["host"]: h for h in played["report"]["http"]}
    assert set(hosts) == {"tz.example.com", "cdn.example.net", "api.weather.example", "static.example.org",
                          "status.example.com"}
    assert hosts["tz.example.com"]["statuses"] == {"200": 1} and hosts["tz.example.com"]["static"] == 1
    assert hosts["tz.example.com"]["scheme"] == "https"
    assert hosts["cdn.example.net"]["statuses"] == {"404": 1} and hosts["cdn.example.net"]["static"] == 0
    assert hosts["static.example.org"]["scheme"] == "http"
    assert "GET /v1/zones.json" in hosts["tz.example.com"]["paths"]       # never the query string
    assert "other HTTP the bot sent" in played["text"] and "cdn.example.net" in played["text"]


def test_simulate_cli_reroutes_and_lists_hosts(tmp_path):
    """`autoperf run --simulate` on the unmodified test bot: the cog loads from the scenario's answers, the
    summary lists the hosts, and the per-step records are written."""
    (tmp_path / "motd.txt").write_text("welcome")
    (tmp_path / "scenario.yaml").write_text("""
seed: 1
users: 2
max_flows: 2
rate: 10
duration_s: 1
warmup_s: 0.2
mix_order: round_robin
""" + HTTP_RULES + """
mix:
  - command: zone
    options: {name: America/New_York}
    expect: {content: "UTC-5"}
  - command: weather
    expect: {content: sunny}
""")
    env = dict(os.environ, AUTOPERF_CONSOLE="0", LADDER_WAVE_S="1")
    env.pop("DISCORD_TOKEN", None)
    proc = subprocess.run([sys.executable, "-m", "autoperf", "run", "--log-dir", str(tmp_path / "logs"), "--simulate",
                           str(tmp_path / "scenario.yaml"), str(BOT)], cwd=str(tmp_path), env=env,
                          capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = proc.stderr[proc.stderr.index("discord_sim:"):]
    assert re.search(r"/zone\s+1\s+1\s+0\s+0\s+0", table) and re.search(r"/weather\s+1\s+1\s+0\s+0\s+0", table), table
    for host in ("tz.example.com", "cdn.example.net", "api.weather.example", "static.example.org"):
        assert host in table
    records = [json.loads(line) for path in glob.glob(str(tmp_path / "logs" / "*.log")) for line in open(path)]
    steps = {r["step"]: r for r in records if r["type"] == "sim_step"}
    assert steps["/zone"]["ok"] == 1 and steps["/weather"]["failed"] == 0


def _doc_block(path: str) -> str:
    """The fenced block that follows ``<!-- example: PATH -->`` in docs/discord_sim.md."""
    doc = (ROOT / "docs" / "discord_sim.md").read_text()
    marker = doc.index(f"<!-- example: {path} -->")
    start = doc.index("\n", doc.index("```", marker)) + 1
    return doc[start:doc.index("```", start)]


@pytest.mark.parametrize("python", ["venv", "dpy20"])
def test_docs_journey_example_runs(python, tmp_path):
    """The two-player DM journey printed in docs/discord_sim.md is examples/dm_ladder verbatim, and
    `autoperf run --simulate` plays it to the end: every step of both players ok."""
    for path in ("examples/dm_ladder/scenario.yaml", "examples/dm_ladder/bot.py"):
        assert _doc_block(path) == (ROOT / path).read_text(), f"docs/discord_sim.md shows an old {path}"
    interpreter = DPY20 if python == "dpy20" else sys.executable
    if not _usable(interpreter):
        pytest.skip(f"no discord.py interpreter at {interpreter}")
    env = dict(os.environ, AUTOPERF_CONSOLE="0", LADDER_WAVE_S="1")
    env.pop("DISCORD_TOKEN", None)
    proc = subprocess.run([interpreter, "-m", "autoperf", "run", "--log-dir", str(tmp_path / "logs"), "--simulate",
                           "examples/dm_ladder/scenario.yaml", "examples/dm_ladder/bot.py"],
                          cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = proc.stderr[proc.stderr.index("discord_sim:"):]
    expected = {"/queue": 2, "match found": 2, "button:Confirm": 2, "match on": 2, "message:!result": 1}
    for step, n in expected.items():
        assert re.search(rf"^{re.escape(step)}\s+{n}\s+{n}\s+0\s+0\s+0\s", table, re.M), (step, table)


def test_scenario_validation_of_journey_keys():
    """expect:, wait:, actors:, channel: dm and http: are validated with messages naming the key."""
    from autoperf.discord_sim import ScenarioError, load_scenario

    scn = load_scenario({"users": [{"name": "alice"}, "bob"], "http": [{"host": "a.example", "json": [1]}], "mix": [
        {"name": "j", "channel": "dm", "actors": {
            "alice": [{"command": "queue", "expect": {"content": "ok", "ephemeral": False}},
                      {"wait": "any", "match": {"mentions": "bob"}}, {"button": "Go"}],
            "bob": [{"wait": "dm"}]}}]})
    alice, bob = scn.mix[0].actors
    assert [s.kind for s in alice.steps] == ["command", "wait", "button"] and alice.steps[0].channel == "dm"
    assert alice.steps[1].channel is None and alice.steps[1].expect.mentions == "bob" and bob.steps[0].name == "wait:dm"
    assert scn.http[0].body == b"[1]" and scn.http[0].content_type == "application/json"
    bad = [
        ({"mix": [{"command": "a", "expect": {"colour": "red"}}]}, "colour"),
        ({"mix": [{"command": "a", "expect": {"content_matches": "("}}]}, "invalid regular expression"),
        ({"mix": [{"command": "a", "expect": {"status": "late"}}]}, "status"),
        ({"mix": [{"steps": [{"command": "a"}, {"wait": "nowhere"}]}]}, "unknown place 'nowhere'"),
        ({"mix": [{"steps": [{"command": "a"}, {"wait": "dm", "match": {"ephemeral": True}}]}]}, "ephemeral"),
        ({"mix": [{"steps": [{"command": "a", "expect": {"mentions": "zed"}}]}]}, "'zed'"),
        ({"mix": [{"wait": "dm"}]}, "previous step"),
        ({"mix": [{"actors": {"a": [{"button": "Go"}]}}]}, "previous step"),
        ({"users": 1, "mix": [{"actors": {"a": ["x"], "b": ["y"]}}]}, "2 actors but only 1 users"),
        ({"mix": [{"steps": ["a"], "actors": {"a": ["x"]}}]}, "not both"),
        ({"mix": ["a"], "http": [{"host": "h", "json": 1, "body": "x"}]}, "one of json, body, file"),
        ({"mix": ["a"], "http": [{"path": "/x"}]}, "host"),
        ({"mix": ["a"], "guilds": [{"name": "g", "channels": ["dm"]}]}, "reserved"),
        ({"mix": [{"message": "!a", "expect_reply": False, "expect": {"content": "x"}}]}, "needs a reply"),
    ]
    for data, word in bad:
        with pytest.raises(ScenarioError, match=re.escape(word)):
            load_scenario(data)
