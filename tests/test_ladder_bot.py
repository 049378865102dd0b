"""The example ladder bot under ``python -m autoperf run --simulate``: the records a user gets for free.

One subprocess run of ``examples/ladder_bot/bot.py`` (unmodified, no autoperf import) against the
loopback Discord playing ``scenario_small.yaml`` with the top-level ``autoperf.yaml`` and every span
written (``AUTOPERF_RETAIN_ALL``); real asyncpg / PostgreSQL, a real spawn ProcessPoolExecutor, a real
aiohttp storage server. ``TestRetention`` runs it again under the config's default retention.
"""
from __future__ import annotations

import collections
import glob
import json
import os
import socket
import subprocess
import sys

import pytest

from autoperf.analysis.stats import percentile as exact_percentile
from autoperf.discord_sim.report import percentile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCENARIO = "examples/ladder_bot/scenario_small.yaml"
BOT = "examples/ladder_bot/bot.py"
COMMANDS = ("setup", "queue", "profile", "leaderboard", "activate", "setcountry", "termsofservice", "seasonstats",
            "matchhistory", "report")

pytestmark = pytest.mark.timeout(150)


_LOGS: dict = {}           # the run's log directory (TestRetention reports over it)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    logs = tmp_path_factory.mktemp("ladder_logs")
    _LOGS["all"] = str(logs)
    scratch = tmp_path_factory.mktemp("ladder_tmp")
    env = dict(os.environ)
    env["TMPDIR"] = str(scratch)     # the bot's temporary files, to see that it removes them
    env.pop("DISCORD_TOKEN", None)
    env["LADDER_MATCHMAKING_INTERVAL_S"] = "0.5"
    env["AUTOPERF_CONSOLE"] = "0"
    env["AUTOPERF_RETAIN_ALL"] = "1"      # every span: these tests read the steps, jobs and REST calls of each flow
    proc = subprocess.run([sys.executable, "-m", "autoperf", "run", "--log-dir", str(logs), "--simulate", SCENARIO, BOT],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=140)
    records = []
    for path in glob.glob(os.path.join(str(logs), "*.log")):
        with open(path) as fh:
            records.extend(json.loads(line) for line in fh if line.strip())
    return proc, records, scratch


def _flows(records, name):
    return [r for r in records if r["type"] == "flow_complete" and r["flow_name"] == name]


def _by_id(records):
    return {r["span_id"]: r for r in records if r["type"] == "span"}


class TestLadderBot:
    def test_program_exits_cleanly_and_prints_the_user_side_summary(self, run):
        """The bot stops when the scenario ends (exit 0) and the per-step latency table is on stderr."""
        proc, _, _ = run
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "discord_sim:" in proc.stderr and "first p50" in proc.stderr
        assert "/queue" in proc.stderr and "button:Join queue" in proc.stderr

    def test_the_bot_leaves_no_temporary_directory(self, run):
        """The replay store's temporary directory is removed when the bot stops (``make demo`` left one a run)."""
        _, _, scratch = run
        assert not glob.glob(os.path.join(str(scratch), "ladder_storage_*"))

    def test_every_command_has_flows_with_the_right_status(self, run):
        """Each slash command (and !report) produced flows; the broken /matchhistory is an error."""
        _, records, _ = run
        for name in COMMANDS:
            assert _flows(records, name), name
        for name in ("setup", "queue", "profile", "leaderboard", "activate", "setcountry", "termsofservice", "report"):
            assert {f["status"] for f in _flows(records, name)} == {"success"}, name
        broken = _flows(records, "matchhistory")
        assert {f["status"] for f in broken} == {"error"} and {f["error"] for f in broken} == {"TypeError"}
        assert _flows(records, "profile")[0]["sla_ms"] == 200

    def test_components_and_modal_flows(self, run):
        """Dropdowns, buttons and the modal are flows of their own, answered in time."""
        _, records, _ = run
        for name in ("SetupView.choose_country", "SetupView.choose_race", "SetupView.confirm", "QueueView.join",
                     "LeaderboardView.next", "TosView.accept", "ActivateModal.on_submit"):
            flows = _flows(records, name)
            assert flows, name
            assert all(f["metadata"]["answered"] for f in flows), name
        assert _flows(records, "QueueView.join")[0]["sla_ms"] == 300   # the YAML target on the View button

    def test_deadline_missing_command_is_flagged(self, run):
        """The cold-cache /seasonstats misses Discord's 3 s deadline and says so."""
        _, records, _ = run
        missed = [f for f in _flows(records, "seasonstats") if f["metadata"].get("deadline_missed")]
        assert missed and all(f["level"] == "ERROR" for f in missed)
        assert missed[0]["metadata"].get("unknown_interaction") is True
        assert missed[0]["metadata"]["first_response_ms"] > 3000
        assert any(f["metadata"].get("first_response_ms", 1e9) < 100 for f in _flows(records, "seasonstats"))

    def test_db_spans_nest_in_the_right_flow(self, run):
        """Reader methods and asyncpg statements are inside the command that ran them."""
        _, records, _ = run
        spans = _by_id(records)
        queue_ids = {f["flow_id"] for f in _flows(records, "queue")}
        prefs = [s for s in spans.values() if s["name"] == "db.get_preferences_1v1"]
        assert prefs and all(s["flow_id"] in queue_ids for s in prefs)
        assert all(s["threshold_ms"] == 15 for s in prefs)
        sql = [s for s in spans.values() if s["kind"] == "db" and s["parent_id"] in {p["span_id"] for p in prefs}]
        assert sum("FROM preferences_1v1" in s["attrs"].get("statement", "") for s in sql) == len(prefs)
        guard = [s for s in spans.values() if s["name"] == "guard_checks" and s["flow_id"] in queue_ids]
        assert guard and all(spans[s["parent_id"]]["kind"] == "flow" for s in guard)

    def test_replay_parsing_jobs_are_linked_to_the_report_flow(self, run):
        """The process-pool job and the parser span in the worker belong to the `report` flow."""
        _, records, _ = run
        report_ids = {f["flow_id"] for f in _flows(records, "report")}
        jobs = [r for r in records if r["type"] == "span" and r["kind"] == "job" and "parse_replay" in r["name"]]
        assert jobs and all(j["flow_id"] in report_ids for j in jobs)
        parsed = [r for r in records if r["type"] == "span" and r["name"] == "replay.parse"]
        assert parsed and all(p["flow_id"] in report_ids for p in parsed)
        main_pid = _flows(records, "report")[0]["pid"]
        assert all(p["pid"] != main_pid for p in parsed)
        assert all(p["attrs"]["bytes"] > 100_000 for p in parsed)
        assert not _flows(records, "on_message")   # discord.py's default Bot.on_message is not the bot's code
        uploads = [r for r in records if r["type"] == "span" and r["name"] == "storage.upload_replay"]
        assert uploads and all(u["flow_id"] in report_ids for u in uploads)

    def test_matchmaker_cycles_capture_matches_made(self, run):
        """Each matchmaking pass is a cycle with queue_size and matches_made; queued players got matched."""
        _, records, _ = run
        cycles = _flows(records, "matchmaking_cycle")
        assert len(cycles) >= 5
        assert all("matches_made" in c["metadata"] and "queue_size" in c["metadata"] for c in cycles)
        assert sum(c["metadata"]["matches_made"] for c in cycles) >= 1
        busy = [c for c in cycles if c["metadata"]["matches_made"]]
        names = {cp["name"] for c in busy for cp in c["checkpoints"]}
        assert "db.insert_match_result" in names and "POST /channels/{channel_id}/messages" in names
        assert _flows(records, "LadderBot.refresh_leaderboard_cache")   # the tasks.loop job

    def test_discord_rest_spans(self, run):
        """Interaction callbacks, channel posts and the command sync are http spans with templates."""
        _, records, _ = run
        names = collections.Counter(r["name"] for r in records if r["type"] == "span" and r["kind"] == "http"
                                    and r["attrs"].get("system") == "discord")
        assert names["POST /interactions/{webhook_id}/{webhook_token}/callback"] >= 20
        assert names["PUT /applications/{application_id}/commands"] == 1
        assert names["POST /channels/{channel_id}/messages"] >= 1

    def test_every_record_names_host_instance_and_shard(self, run):
        """Every record says its host and process start; the bot's flows also the shard it runs (0: unsharded)."""
        _, records, _ = run
        assert records and all(r["host"] == socket.gethostname() for r in records)
        instances = collections.defaultdict(set)
        for r in records:
            instances[r["pid"]].add(r["instance_id"])
        assert len(instances) >= 2 and all(len(ids) == 1 for ids in instances.values())   # bot + spawned workers
        assert len({next(iter(ids)) for ids in instances.values()}) == len(instances)
        main_pid = _flows(records, "report")[0]["pid"]
        commands = [f for f in records if f["type"] == "flow_complete" and f["flow_name"] in COMMANDS]
        assert commands and all(f["shard_ids"] == [0] for f in commands)   # an interaction comes after IDENTIFY
        assert not any("shard_ids" in r for r in records if r["pid"] != main_pid)   # pool workers run no shard

    def test_gateway_latency_in_resource_samples(self, run):
        """The resource sampler carries the heartbeat latency the discord integration measured."""
        _, records, _ = run
        values = [r["gateway_latency_ms"] for r in records if r["type"] == "resource" and r.get("gateway_latency_ms")]
        assert values and all(0 < v < 1000 for v in values)

    def test_users_table_agrees_with_the_flows(self, run):
        """Per slash command, the simulator's first-response p95 (sim_step records) is within 10 ms + 20 % of
        the p95 of the bot-side flows' first_response_ms on the same run, and its timeouts are the flows that
        missed the 3 s deadline. (The two clocks differ by the gateway frame's and the HTTP response's transit;
        under --simulate the sim shares the bot's GIL, so each can wait a 5 ms switch interval.)"""
        _, records, _ = run
        sim = {r["step"]: r for r in records if r["type"] == "sim_step"}
        compared = 0
        for name in ("setup", "queue", "profile", "leaderboard", "activate", "setcountry", "termsofservice",
                     "seasonstats", "matchhistory"):
            flows = [f for f in _flows(records, name) if "first_response_ms" in f["metadata"]]
            in_time = [f["metadata"]["first_response_ms"] for f in flows if not f["metadata"].get("deadline_missed")]
            step = sim["/" + name]
            assert step["timeouts"] == len(flows) - len(in_time), (name, step, len(flows), len(in_time))
            assert step["count"] - step["timeouts"] == len(in_time), (name, step, len(in_time))
            bot_p95, sim_p95 = percentile(in_time, 95), step["first_ms"]["p95"]
            assert abs(sim_p95 - bot_p95) <= 10 + 0.2 * bot_p95, (name, sim_p95, bot_p95, sorted(in_time))
            compared += 1
        assert compared == 9


SMALL = """
duration_s: 1
rate: 2
users: 2
warmup_s: 0.2
mix:
  - command: ping
"""


def _simulate(tmp_path, script, timeout_s="2"):
    (tmp_path / "scn.yaml").write_text(SMALL)
    (tmp_path / "bot.py").write_text(script)
    env = dict(os.environ, AUTOPERF_SIM_CONNECT_TIMEOUT=timeout_s, AUTOPERF_CONSOLE="0")
    env.pop("DISCORD_TOKEN", None)
    return subprocess.run([sys.executable, "-m", "autoperf", "run", "--log-dir", str(tmp_path / "logs"),
                           "--simulate", str(tmp_path / "scn.yaml"), str(tmp_path / "bot.py")],
                          cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=60)


class TestSimulate:
    def test_bot_that_never_connects_is_stopped_with_a_message(self, tmp_path):
        """A script that never logs in is interrupted after the connect timeout; exit code non-zero."""
        proc = _simulate(tmp_path, "import time, discord\nprint('up', flush=True)\nwhile True:\n    time.sleep(0.1)\n")
        assert proc.returncode != 0
        assert "did not connect to the gateway within 2s" in proc.stderr
        assert "never connected" in proc.stderr

    def test_script_that_exits_early_stops_the_scenario(self, tmp_path):
        """A script that exits before connecting: its exit code is kept and the sim stops at once."""
        proc = _simulate(tmp_path, "import sys, discord, os\nassert os.environ['DISCORD_TOKEN']\nsys.exit(3)\n", "30")
        assert proc.returncode == 3
        assert "FAILED" in proc.stderr

    def test_plain_bot_runs_unmodified(self, tmp_path):
        """An unmodified minimal bot (token from DISCORD_TOKEN) plays the scenario and exits 0."""
        script = (
            "import os, discord\nfrom discord import app_commands\n"
            "client = discord.Client(intents=discord.Intents.default())\n"
            "tree = app_commands.CommandTree(client)\n"
            "@tree.command()\nasync def ping(interaction: discord.Interaction):\n"
            "    await interaction.response.send_message('pong')\n"
            "@client.event\nasync def setup_hook():\n    await tree.sync()\n"
            "client.setup_hook = setup_hook\n"
            "client.run(os.environ['DISCORD_TOKEN'], log_handler=None)\n")
        proc = _simulate(tmp_path, script)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "/ping" in proc.stderr
        flows = [json.loads(line) for path in glob.glob(str(tmp_path / "logs" / "*.log")) for line in open(path)]
        assert any(r["type"] == "flow_complete" and r["flow_name"] == "ping" for r in flows)


class TestRetention:
    """The same scenario under the config's default (tail-based retention, issue 14) and under retain all (the
    run above): the summary, the report and the check give the same answers."""

    @pytest.fixture(scope="class")
    @classmethod
    def default_run(cls, tmp_path_factory):
        logs = tmp_path_factory.mktemp("ladder_default_logs")
        env = dict(os.environ, LADDER_MATCHMAKING_INTERVAL_S="0.5", AUTOPERF_CONSOLE="0")
        env.pop("DISCORD_TOKEN", None)
        proc = subprocess.run([sys.executable, "-m", "autoperf", "run", "--log-dir", str(logs), "--summary",
                               "--simulate", SCENARIO, BOT], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=140)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc, str(logs)

    @staticmethod
    def _cli(*args):
        p = subprocess.run([sys.executable, "-m", "autoperf", *args], cwd=ROOT, capture_output=True, text=True,
                           timeout=120, env=dict(os.environ, NO_COLOR="1"))
        assert p.returncode in (0, 1), p.stderr
        return p.returncode, p.stdout

    def _report(self, logs):
        return json.loads(self._cli("report", "--format", "json", logs)[1])

    def _check(self, logs):
        res = json.loads(self._cli("check", "--json", logs)[1])
        return {c["name"] + (f" [{c['scope']}]" if c["scope"] else ""): c for c in res["checks"]}

    @staticmethod
    def _old_log(logs, dest):
        """A run's record lines as an old log (no metrics): every flow_complete and every span it wrote, in
        performance_ files; a report counts from those records, exactly."""
        dest.mkdir()
        for path in glob.glob(os.path.join(logs, "performance_*.log")):
            name = os.path.basename(path)
            flows = os.path.join(logs, "flows_" + name[len("performance_"):])
            with open(dest / name, "wb") as out:
                for src in (path, flows):
                    if os.path.exists(src):
                        with open(src, "rb") as f:
                            out.write(f.read())
        return str(dest)

    @staticmethod
    def _flow_durations(logs):
        """Per flow name, the exact durations of the run's flows (every flow has its flow_complete)."""
        out = collections.defaultdict(list)
        for path in glob.glob(os.path.join(logs, "performance_*.log")) + glob.glob(os.path.join(logs, "flows_*.log")):
            with open(path) as fh:
                for line in fh:
                    rec = json.loads(line)
                    if rec["type"] == "flow_complete" and rec.get("flow_kind", "flow") == "flow":
                        out[rec["flow_name"]].append(rec["duration_ms"])
        return out

    def test_the_default_writes_fewer_flows_whole_and_says_so(self, run, default_run):
        """Under the default, the flows kept whole are fewer than all, by rules the report names; the failed
        and the late flows (the two planted problems) are among them."""
        logs = default_run[1]
        rt = self._report(logs)["retention"]
        assert rt["flows"] == self._report(_LOGS["all"])["retention"]["flows"] and 0 < rt["retained"] < rt["flows"]
        assert rt["by_rule"].get("error", 0) >= 1
        fcs = [json.loads(line) for path in glob.glob(os.path.join(logs, "*.log")) if "metrics_" not in path
               for line in open(path)]
        fcs = [r for r in fcs if r["type"] == "flow_complete"]
        late = [r for r in fcs if r["status"] != "success" or r["metadata"].get("deadline_missed")]
        assert late and all(r["retained"] for r in late)
        # the report's retention line counts flows; a sampled matchmaking cycle (about one run in two)
        # is kept by the same rules but is not a flow
        flows = [r for r in fcs if r.get("flow_kind", "flow") == "flow"]
        assert sum(1 for r in flows if r["retained"]) == rt["retained"]

    def test_report_answers_the_same_under_both(self, run, default_run, tmp_path):
        """Per command: count, errors, statuses and its kind (slash command, component, modal, event …) are the
        same under both runs and in the every-span run read as an old log; every query is named by its
        statement and every pool job by its executor under both; p50/p95/p99 are within 1 % of the exact
        values of each run's own flows."""
        logs = {"all": _LOGS["all"], "default": default_run[1]}
        reports = {k: self._report(d) for k, d in logs.items()}
        reports["spans"] = self._report(self._old_log(_LOGS["all"], tmp_path / "spans_only"))
        assert reports["spans"]["retention"]["from_metrics"] == 0 and reports["all"]["retention"]["from_metrics"] > 0
        rows = {k: {c["name"]: (c["count"], c["errors"], c["statuses"], c["type"]) for c in r["commands"]}
                for k, r in reports.items()}
        assert rows["all"] == rows["default"] == rows["spans"] and len(rows["all"]) >= len(COMMANDS)
        for k in ("all", "default"):
            queries = reports[k]["slow_queries"]
            assert queries and all(q["statement"] for q in queries), [q for q in queries if not q["statement"]]
        executors = {k: {j["name"]: set(j["executors"]) for j in reports[k]["jobs"]} for k in ("all", "default", "spans")}
        assert executors["all"] == executors["default"] == executors["spans"] and executors["all"]
        compared = 0
        for k, d in logs.items():
            exact = self._flow_durations(d)
            for c in reports[k]["commands"]:
                values = sorted(exact[c["name"]])
                assert len(values) == c["count"], (k, c["name"])
                for q in (50, 95, 99):
                    want = exact_percentile(values, q)      # records hold whole µs: + 1 µs
                    assert abs(c[f"p{q}_ms"] - want) < 0.01 * want + 0.001, (k, c["name"], q, c[f"p{q}_ms"], want)
                compared += 1
        assert compared >= 2 * len(COMMANDS)

    def test_check_and_summary_answer_the_same_under_both(self, run, default_run, tmp_path):
        """`autoperf check` gives the same verdicts from the metrics as from every record of the same run, under
        the default and under retain all (two runs' timings differ on this machine: verdicts near a limit are
        compared within one run); `--summary` under the default says the totals of retain all."""
        from autoperf.analysis.render_sections import summary_lines
        flow_level = ("commands_p95", "commands_p99", "interaction_deadline", "error_rate", "first_response_p95")
        for logs, name in ((_LOGS["all"], "all"), (default_run[1], "default")):
            metrics, records = self._check(logs), self._check(self._old_log(logs, tmp_path / f"old_{name}"))
            if name == "default":        # its old log has the retained flows' spans only: flows' objectives
                metrics = {k: c for k, c in metrics.items() if c["name"] in flow_level}
                records = {k: c for k, c in records.items() if c["name"] in flow_level}
            assert len(metrics) >= 3 and {k: c["ok"] for k, c in metrics.items()} == {k: c["ok"] for k, c in records.items()}, name
        proc_def, logs_def = default_run
        summary = [" ".join(ln.split()) for ln in proc_def.stderr.splitlines() if ln.startswith(("Total flows", "Errors"))]
        for logs in (logs_def, _LOGS["all"]):
            want = dict(summary_lines(self._report(logs)))
            assert summary == [" ".join(f"Total flows {want['Total flows']}".split()),
                               " ".join(f"Errors {want['Errors']}".split())], logs
