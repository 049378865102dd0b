"""OTLP export: real `autoperf run` programs send to a receiver on 127.0.0.1 that decodes with opentelemetry-proto."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("opentelemetry.proto")

from autoperf import tracecontext  # noqa: E402
from tests.otlp_receiver import Receiver, attributes, free_port  # noqa: E402
from tests.pgserver import pg_dsn  # noqa: E402
from tests.runs import Run, clean_env  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
ACTIVATION_CODE = "EVO-BETA-2026"
# A short scenario: a replay upload (a process-pool job), the activation modal (its code a SQL
# parameter), the queue button and /profile, round-robin for two seconds.
LADDER_SCENARIO = f"""
seed: 7
duration_s: 2
rate: 4
users: 6
warmup_s: 0.3
grace_s: 4
step_timeout_s: 3
mix_order: round_robin
step_gap_s: 0.1
guilds:
  - name: EvoLadder
    channels: [ladder-general]
mix:
  - name: replay upload
    steps:
      - message: "!report"
        attachments:
          - {{filename: ranked_goldenaura.ladrep, path: {ROOT}/examples/ladder_bot/replays/ranked_goldenaura.ladrep}}
  - name: activate
    steps:
      - command: activate
      - modal: {{Activation code: {ACTIVATION_CODE}}}
  - name: queue and join
    steps:
      - command: queue
      - button: Join queue
  - command: profile
"""


def _ladder_run(tmp_path, endpoint):
    """The example ladder bot under ``autoperf run --simulate`` with the repository's autoperf.yaml, every
    flow retained and OTLP export to ``endpoint``."""
    import yaml
    data = yaml.safe_load((ROOT / "autoperf.yaml").read_text())
    data["log"]["console"] = False
    data["retain"] = {"all": True}
    data["export"] = {"otlp": {"endpoint": endpoint, "flush_interval_ms": 100, "exit_timeout_s": 30}}
    run = Run(tmp_path, (ROOT / "examples/ladder_bot/bot.py").read_text(), yaml.safe_dump(data))
    (tmp_path / "scenario.yaml").write_text(LADDER_SCENARIO)
    proc = subprocess.run([sys.executable, "-m", "autoperf", "run", "--config", str(run.config), "--log-dir",
                           str(run.log_dir), "--simulate", str(tmp_path / "scenario.yaml"),
                           str(ROOT / "examples/ladder_bot/bot.py")],
                          cwd=ROOT, env=clean_env(LADDER_MATCHMAKING_INTERVAL_S="0.5", AUTOPERF_CONSOLE="0"),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run


FLOWS = """
    import asyncio, sys, time

    async def handle(i):
        await asyncio.sleep(0.002)

    async def main():
        end = time.monotonic() + float(sys.argv[1])
        i = 0
        while time.monotonic() < end:
            await handle(i)
            i += 1
            await asyncio.sleep(0.01)

    asyncio.run(main())
"""

UNTIL_STOPPED = """
    import asyncio, os

    async def handle(i):
        await asyncio.sleep(0.002)

    async def main():
        i = 0
        while not os.path.exists("stop"):
            await handle(i)
            i += 1
            await asyncio.sleep(0.02)

    asyncio.run(main())
"""

TARGET = """
retain: {all: true}     # the tests count every flow's exported spans (under the default: the retained ones)
targets:
  - {target: "__main__:handle", kind: flow, name: handle}
"""


def _config(endpoint, extra="", head=TARGET):
    return head + f"""
export:
  otlp:
    endpoint: {endpoint}
    flush_interval_ms: 100
    retry_max_s: 0.5
{extra}"""


def _epoch(iso) -> float:
    """A record's ``timestamp`` (``2025-01-20T15:30:45.123Z``) as Unix seconds."""
    import calendar
    return calendar.timegm(time.strptime(iso[:19], "%Y-%m-%dT%H:%M:%S")) + float("0." + iso[20:-1])


def _received_ids(rx):
    return {span.span_id.hex() for span, _ in rx.spans()}


class TestTraces:
    def test_ladder_bot_trace_tree(self, tmp_path):
        """The example ladder bot's flows (--simulate): every span arrives once, one trace per flow, the replay
        parser's spans in pool workers under their job in the bot's process, semconv names, no SQL parameter."""
        pg_dsn()                                    # the bot needs PostgreSQL: skip with the reason when there is none
        with Receiver() as rx:
            run = _ladder_run(tmp_path, rx.endpoint)
            logged = run.records("span")
            received = {}
            for span, res in rx.spans():
                assert span.span_id.hex() not in received      # none twice
                received[span.span_id.hex()] = (span, res)
            assert set(received) == {r["span_id"] for r in logged}, run.records("warning")
            main_pid = next(r["pid"] for r in logged if r["name"] == "report")
            traces = {}
            adopted = []        # the bot's storage server (aiohttp.web) serving the bot's own upload
            for rec in logged:
                span, res = received[rec["span_id"]]
                remote = rec["attrs"].get("trace_id")
                if remote is None:
                    assert span.trace_id == tracecontext.trace_id_of(int(rec["flow_id"], 16))
                    assert span.parent_span_id.hex() == (rec["parent_id"] or "")
                    traces.setdefault(span.trace_id, set()).add(rec["flow_id"])
                else:
                    assert span.trace_id.hex() == remote and span.parent_span_id.hex() == rec["attrs"]["parent_span_id"]
                    adopted.append(span)
                assert span.end_time_unix_nano - span.start_time_unix_nano == round(rec["duration_ms"] * 1e6)
                assert res["service.name"] == "evoladder-bot" and res["process.pid"] == rec["pid"]
                assert res["host.name"] and res["service.instance.id"]
                assert span.name == rec["name"] or rec["kind"] == "db"
            assert all(len(flows) == 1 for flows in traces.values())          # one trace per flow
            assert len(adopted) >= 3
            for span in adopted:        # in the report flow's trace, under the client span that sent the PUT
                caller = received[span.parent_span_id.hex()][0]
                assert caller.kind == 3 and caller.trace_id == span.trace_id and span.kind == 2
                assert attributes(caller)["url.template"].startswith("/storage/v1/object/replays/")
            commands = {r["flow_id"] for r in logged if r["kind"] == "flow" and r["name"] in ("report", "activate", "queue", "profile")}
            assert len(commands) >= 12
            # parents across processes: the parser runs in a pool worker, under the job span of the bot's process
            parsed = [received[r["span_id"]] for r in logged if r["name"] == "replay.parse"]
            assert len(parsed) >= 3
            for span, res in parsed:
                job, job_res = received[span.parent_span_id.hex()]
                while job_res["process.pid"] != main_pid:
                    job, job_res = received[job.parent_span_id.hex()]
                assert res["process.pid"] != main_pid and job.trace_id == span.trace_id
                assert attributes(job)["autoperf.kind"] == "job"
                roots = [s for s, _ in received.values() if s.trace_id == span.trace_id and not s.parent_span_id]
                assert [s.name for s in roots] == ["report"] and roots[0].kind == 2
            # semantic conventions: db and Discord REST spans are CLIENT spans under the current names
            db = [received[r["span_id"]][0] for r in logged if r["kind"] == "db"]
            assert {"SELECT players", "UPDATE activation_codes", "INSERT replays"} <= {s.name for s in db}
            for s in db:
                a = attributes(s)
                assert s.kind == 3 and a["db.system.name"] == "postgresql" and a["db.query.text"]
                assert not {"statement", "system", "operation", "rows"} & set(a)
                if s.name.startswith(("SELECT ", "UPDATE ", "INSERT ")):
                    assert a["db.operation.name"] == s.name.split()[0] and a["db.collection.name"] == s.name.split()[1]
            rest = [received[r["span_id"]][0] for r in logged if r["kind"] == "http" and r["attrs"].get("system") == "discord"]
            assert any(s.name == "POST /interactions/{webhook_id}/{webhook_token}/callback" for s in rest)
            for s in rest:
                a = attributes(s)
                assert s.kind == 3 and s.name == f"{a['http.request.method']} {a['url.template']}"
                assert a["server.address"] == "127.0.0.1" and a["http.response.status_code"] in (200, 204)
                assert not {"method", "path", "status", "host"} & set(a)
            # the activation code the users typed is a query parameter ($1): nowhere in what was sent
            with rx.lock:
                raw = b"".join(msg.SerializeToString() for _, _, msg, _ in rx.requests)
            assert ACTIVATION_CODE.encode() not in raw and b"activation_codes" in raw

    def test_environment_configures_export_when_the_file_is_silent(self, tmp_path):
        """OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES work without an export section; JSON encoding too."""
        with Receiver() as rx:
            run = Run(tmp_path, FLOWS, TARGET)
            run.start("0.3", env={"OTEL_EXPORTER_OTLP_ENDPOINT": rx.endpoint, "OTEL_SERVICE_NAME": "envbot",
                                  "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=test,team=a%20b",
                                  "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"})
            logged = run.records("span")
            assert logged and _received_ids(rx) == {r["span_id"] for r in logged}
            res = rx.spans()[0][1]
            assert res["service.name"] == "envbot" and res["deployment.environment.name"] == "test"
            assert res["team"] == "a b"
            assert all(h.get("Content-Type") == "application/json" for _, _, _, h in rx.requests)
        with Receiver() as rx:
            run = Run(tmp_path / "off", FLOWS, TARGET)
            run.start("0.2", env={"OTEL_EXPORTER_OTLP_ENDPOINT": rx.endpoint, "OTEL_SDK_DISABLED": "true"})
            assert run.records("span") and not rx.requests


    def test_checkpoints_are_events_and_errors_a_status(self, tmp_path):
        """A flow's manual checkpoints become span events at their offsets; a failed flow has status ERROR with its exception type."""
        program = """
            import asyncio, autoperf

            async def handle(i):
                await asyncio.sleep(0.005)
                autoperf.checkpoint("loaded", {"items": 3})
                await asyncio.sleep(0.005)
                if i == 1:
                    raise KeyError("missing")

            async def main():
                for i in range(2):
                    try:
                        await handle(i)
                    except KeyError:
                        pass

            asyncio.run(main())
        """
        with Receiver() as rx:
            run = Run(tmp_path, program, _config(rx.endpoint))
            run.start()
            flows = sorted((s for s, _ in rx.spans() if s.name == "handle"), key=lambda s: s.start_time_unix_nano)
            assert len(flows) == 2
            for flow in flows:
                (event,) = flow.events
                assert event.name == "loaded" and attributes(event) == {"items": 3}
                assert 0 < event.time_unix_nano - flow.start_time_unix_nano < flow.end_time_unix_nano - flow.start_time_unix_nano
            assert flows[0].status.code == 0
            assert flows[1].status.code == 2 and flows[1].status.message == "KeyError"
            assert attributes(flows[1])["error.type"] == "KeyError"


    def test_a_forked_child_leaving_by_os_exit_exports_its_spans(self, tmp_path):
        """An os.fork() child (forked at once, while the exporter thread may still load its encoders) records,
        leaves by os._exit and its spans arrive, as the parent's do; neither process hangs."""
        program = """
            import os
            def work(i):
                return i
            pid = os.fork()
            if pid == 0:
                for i in range(5):
                    work(i)
                os._exit(0)
            os.waitpid(pid, 0)
            work(99)
        """
        with Receiver() as rx:
            run = Run(tmp_path, program, _config(rx.endpoint, head="targets:\n  - target: '__main__:work'\n"
                                                                  "    kind: flow\nretain: {all: true}\n"))
            run.start(timeout=60)
            logged = [r for r in run.records("flow_complete")]
            assert len(logged) == 6 and len({r["pid"] for r in logged}) == 2
            assert _received_ids(rx) == {r["flow_id"] for r in logged}


class TestDelivery:
    @pytest.mark.slow
    def test_a_60_s_outage_loses_nothing(self, tmp_path):
        """The receiver is away for 60 s while the program keeps making flows; once it is back every span and
        every metrics interval arrives, in the order written, none twice. (About 70 s of wall time.)"""
        import orjson
        port = free_port()
        head = TARGET + "metrics: {interval_s: 1}\nsampler: {enabled: true, interval_s: 1}\n"
        extra = "    exit_timeout_s: 30\n    metrics_interval_s: 0\n"       # a point per metrics interval
        run = Run(tmp_path, UNTIL_STOPPED, _config(f"http://127.0.0.1:{port}", extra, head))
        proc = subprocess.Popen([sys.executable, "-m", "autoperf", "run", "--config", str(run.config), "--log-dir",
                                 str(run.log_dir), "--no-console", str(run.script)], cwd=run.dir, env=clean_env())
        try:
            deadline = time.monotonic() + 60
            while not list(run.log_dir.glob("otlp_spill_*.bin")) and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            assert list(run.log_dir.glob("otlp_spill_*.bin")), "the exporter never found the receiver away"
            away_since = time.time()
            time.sleep(60.0)
            with Receiver(port) as rx:
                back_at = time.time()
                time.sleep(3.0)                       # flows made after it is back, too
                (run.dir / "stop").write_text("")
                assert proc.wait(90) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
        logged = run.records("span")
        during = [r for r in logged if away_since + 1 < _epoch(r["timestamp"]) < back_at - 1]
        assert len(during) > 1000 and any(_epoch(r["timestamp"]) > back_at for r in logged)
        received = [span.span_id.hex() for span, _ in rx.spans()]
        assert received == [r["span_id"] for r in logged]        # all, in the order written, none twice
        metrics = [orjson.loads(line) for path in sorted(run.log_dir.glob("metrics_*.log"))
                   for line in path.read_bytes().splitlines() if line.strip()]
        mine = [r for r in metrics if r["name"] == "handle" and r.get("measure", "duration") == "duration"]
        assert len(mine) >= 60
        points = [p for m, _ in rx.metrics() if m.name == "autoperf.flow.duration"
                  for p in m.exponential_histogram.data_points]
        assert [p.count for p in points] == [sum(r["count"] for r in mine[:k + 1]) for k in range(len(mine))]
        samples = run.records("resource")
        rss = [p.time_unix_nano for m, _ in rx.metrics() if m.name == "process.memory.usage" for p in m.gauge.data_points]
        assert len(samples) >= 60 and len(rss) == len(samples) and rss == sorted(set(rss))
        assert not list(run.log_dir.glob("otlp_spill_*.bin"))
        warnings = [r for r in run.records("warning") if r.get("code", "").startswith("otlp")]
        assert [w["code"] for w in warnings] == ["otlp_unavailable"]

    def test_spill_of_a_run_that_ended_during_an_outage_is_sent_by_the_next_run(self, tmp_path):
        """Requests a process spilled and could not send before it exited are sent by the next process on that log directory."""
        port = free_port()
        run = Run(tmp_path, FLOWS, _config(f"http://127.0.0.1:{port}"))
        run.start("0.3")
        first = {r["span_id"] for r in run.records("span")}
        assert first and list(run.log_dir.glob("otlp_spill_*.bin"))
        with Receiver(port) as rx:
            run.start("0.3")
            logged = {r["span_id"] for r in run.records("span")}
            assert _received_ids(rx) == logged and first < logged
        assert not list(run.log_dir.glob("otlp_*.bin"))

    @pytest.mark.slow
    def test_a_receiver_that_stalls_at_exit_loses_nothing(self, tmp_path):
        """A receiver that takes a request and never answers: at exit (after exit_timeout_s) the request in flight and what is still queued go to a spill file that the next run sends."""
        port = free_port()
        head = "log: {max_delay_ms: 50}\n" + TARGET      # records reach the exporter while it waits
        run = Run(tmp_path, FLOWS, _config(f"http://127.0.0.1:{port}", "    timeout_s: 60\n    exit_timeout_s: 2\n", head))
        with Receiver(port) as stalled:
            stalled.stall_s = 60
            started = time.monotonic()
            run.start("1.0")
            assert time.monotonic() - started < 30          # exit waited ~2 s for the exporter, not 60
            first = {r["span_id"] for r in run.records("span")}
            assert list(run.log_dir.glob("otlp_spill_*.bin"))
            got_first = _received_ids(stalled)
            stalled._server.socket.close()
        with Receiver(free_port()) as rx:
            run.config.write_text(_config(rx.endpoint))
            run.start("0.2")
            logged = {r["span_id"] for r in run.records("span")}
            assert got_first | _received_ids(rx) == logged and first < logged
        assert not list(run.log_dir.glob("otlp_*.bin"))

    def test_retry_after_is_honoured(self, tmp_path):
        """A 429 with Retry-After: 2 holds the next attempt back two seconds and loses nothing."""
        with Receiver() as rx:
            rx.answers = [(429, {"Retry-After": "2"})]
            run = Run(tmp_path, FLOWS, _config(rx.endpoint))
            run.start("0.5")
            logged = run.records("span")
            assert _received_ids(rx) == {r["span_id"] for r in logged}
            (refused_at, status), = rx.refused
            assert status == 429
            assert rx.requests[0][0] - refused_at >= 2.0

    def test_a_forged_spill_file_is_not_sent(self, tmp_path):
        """A spill file without this log directory's HMAC header (dropped there by someone else) is never sent and is reported."""
        with Receiver() as rx:
            run = Run(tmp_path, FLOWS, _config(rx.endpoint))
            run.log_dir.mkdir(parents=True)
            forged = run.log_dir / "otlp_spill_999999_20260101T000000000000.bin"
            from autoperf.export import otlp_wire
            body = otlp_wire.traces_request([(b"", b"", [otlp_wire.span(b"\x01" * 16, b"\xf0" * 8, b"", "forged", 1, 1, 2, {})])])
            forged.write_bytes(b"autoperf-otlp-spill " + b"0" * 64 + b"\n" + b"T" + len(body).to_bytes(4, "big") + body)
            run.start("0.2")
            assert all(path.endswith("/v1/traces") or path.endswith("/v1/metrics") for _, path, _, _ in rx.requests)
            logged = {r["span_id"] for r in run.records("span")}
            assert _received_ids(rx) == logged
            assert len([1 for _, p, _, _ in rx.requests if p.endswith("/v1/traces")]) >= 1
        assert not forged.exists() and forged.with_name(forged.name + ".foreign").exists()
        assert [w["code"] for w in run.records("warning") if w["code"].startswith("otlp")] == ["otlp_spill_foreign"]
