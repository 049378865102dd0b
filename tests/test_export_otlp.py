"""OTLP export: real `autoperf run` programs send to a receiver on 127.0.0.1 that decodes with opentelemetry-proto."""
from __future__ import annotations

import time

import pytest

pytest.importorskip("opentelemetry.proto")

from autoperf import tracecontext  # noqa: E402
from tests.otlp_receiver import Receiver, attributes, free_port  # noqa: E402
from tests.pgserver import pg_dsn  # noqa: E402
from tests.runs import Run  # noqa: E402

SECRET_NUMBER = 987654321
SECRET_TEXT = "literal-secret-9f2c"

POOL_PROGRAM = f"""
    import asyncio, concurrent.futures, os, sys, time
    import asyncpg

    def job(x):
        time.sleep(0.005)
        return x * 2

    async def handle(i, pool, conn):
        await conn.fetchval("SELECT $1::bigint + relpages FROM pg_class WHERE relname = 'pg_class'", {SECRET_NUMBER} + i)
        await conn.fetchval("SELECT count(*) FROM pg_class WHERE relname = '{SECRET_TEXT}'")
        await asyncio.get_running_loop().run_in_executor(pool, job, i)

    async def main():
        conn = await asyncpg.connect(os.environ["DSN"])
        with concurrent.futures.ProcessPoolExecutor(2) as pool:
            for i in range(int(sys.argv[1])):
                await handle(i, pool, conn)
        await conn.close()

    asyncio.run(main())
"""

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

TARGET = """
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


def _received_ids(rx):
    return {span.span_id.hex() for span, _ in rx.spans()}


class TestTraces:
    def test_pool_program_trace_tree(self, tmp_path):
        """Every span of a program with db calls and process-pool jobs arrives as one trace per flow, parents across processes, semconv names, no SQL parameter."""
        dsn = pg_dsn()
        if dsn is None:
            pytest.skip("no PostgreSQL server")
        with Receiver() as rx:
            config = "service: poolbot\n" + TARGET + '  - {target: "__main__:job", kind: span, name: job_body}\n'
            # a loaded machine can take seconds per local request: the workers' exit may wait 30 s
            extra = "    resource: {service.version: '1.2.3'}\n    exit_timeout_s: 30\n"
            run = Run(tmp_path, POOL_PROGRAM, _config(rx.endpoint, extra, config))
            run.start("4", env={"DSN": dsn})
            logged = run.records("span")
            assert len(logged) >= 4 * 4
            received = {span.span_id.hex(): (span, res) for span, res in rx.spans()}
            missing = [(r["name"], r["pid"]) for r in logged if r["span_id"] not in received]
            assert set(received) == {r["span_id"] for r in logged}, (missing, run.records("warning"))
            pids = set()
            for rec in logged:
                span, res = received[rec["span_id"]]
                pids.add(res["process.pid"])
                assert span.trace_id == tracecontext.trace_id_of(int(rec["flow_id"], 16))
                assert span.trace_id[8:].hex() == rec["flow_id"]
                assert span.parent_span_id.hex() == (rec["parent_id"] or "")
                assert res["service.name"] == "poolbot" and res["service.version"] == "1.2.3"
                assert res["host.name"] and res["service.instance.id"] and res["process.pid"] == rec["pid"]
                assert span.end_time_unix_nano - span.start_time_unix_nano == round(rec["duration_ms"] * 1e6)
            assert len(pids) >= 2      # the pool workers export their job spans themselves
            bodies = [r for r in logged if r["name"] == "job_body"]
            assert len(bodies) == 4 and all(received[r["parent_id"]][1]["process.pid"] != r["pid"] for r in bodies)
            flows = [received[r["span_id"]][0] for r in logged if r["kind"] == "flow"]
            assert len(flows) == 4 and all(f.kind == 2 and f.name == "handle" for f in flows)
            db = [received[r["span_id"]][0] for r in logged if r["kind"] == "db" and r["parent_id"]]
            assert db and all(s.kind == 3 for s in db)
            attrs = [attributes(s) for s in db]
            assert all(a["db.system.name"] == "postgresql" and a["db.operation.name"] == "SELECT" for a in attrs)
            assert {s.name for s in db} == {"SELECT pg_class"}
            assert all("db.query.text" in a and "statement" not in a for a in attrs)
            assert all(a["db.collection.name"] == "pg_class" for a in attrs)
            with rx.lock:
                raw = b"".join(msg.SerializeToString() for _, _, msg, _ in rx.requests)
            assert str(SECRET_NUMBER).encode() not in raw and SECRET_TEXT.encode() not in raw

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


class TestDelivery:
    @pytest.mark.slow
    def test_outage_loses_nothing(self, tmp_path):
        """A receiver that is down for the first seconds of a run gets every span afterwards, the spilled ones first."""
        port = free_port()
        run = Run(tmp_path, FLOWS, _config(f"http://127.0.0.1:{port}"))
        import subprocess
        import sys
        from tests.runs import clean_env
        proc = subprocess.Popen([sys.executable, "-m", "autoperf", "run", "--config", str(run.config), "--log-dir",
                                 str(run.log_dir), "--no-console", str(run.script), "6"], cwd=run.dir, env=clean_env())
        deadline = time.monotonic() + 30
        while not list(run.log_dir.glob("otlp_spill_*.bin")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert list(run.log_dir.glob("otlp_spill_*.bin"))      # kept on disk meanwhile
        time.sleep(1.0)                                          # a longer outage: more spilled
        with Receiver(port) as rx:
            assert proc.wait(60) == 0
            logged = run.records("span")
            assert _received_ids(rx) == {r["span_id"] for r in logged}
            starts = [s.start_time_unix_nano for s, _ in rx.spans()]
            assert starts == sorted(starts)        # replayed in order, then the newer ones
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
