"""Trace context: traceparent out (aiohttp, httpx), aiohttp.web requests as flows honouring it, log correlation."""
from __future__ import annotations

import pytest

pytest.importorskip("aiohttp")
pytest.importorskip("httpx")

from autoperf import tracecontext  # noqa: E402
from autoperf.integrations.aiohttp import traceparent_for  # noqa: E402
from tests.otlp_receiver import attributes  # noqa: E402
from tests.runs import Run  # noqa: E402

PROGRAM = """
    import asyncio, logging, sys
    import aiohttp, httpx
    from aiohttp import web

    log = logging.getLogger("prog")
    handler = logging.FileHandler("prog.log")
    handler.setFormatter(logging.Formatter("%(trace_id)s %(span_id)s %(flow_name)s %(message)s",
                                           defaults={"trace_id": "-", "span_id": "-", "flow_name": "-"}))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    seen = []

    async def user(request):
        seen.append(request.headers.get("traceparent"))
        log.info("serving %s", request.match_info["id"])
        return web.json_response({"ok": True})

    async def boom(request):
        raise RuntimeError("handler failed")

    async def call(base):
        log.info("calling")
        async with aiohttp.ClientSession() as session:
            async with session.get(base + "/users/u-771") as resp:
                assert resp.status == 200
            async with session.get(base + "/users/u-772", headers={"traceparent": "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"}) as resp:
                assert resp.status == 200
            async with session.get(base + "/nowhere") as resp:
                assert resp.status == 404
            async with session.get(base + "/boom") as resp:
                assert resp.status == 500
        async with httpx.AsyncClient() as client:
            assert (await client.get(base + "/users/u-773")).status_code == 200

    async def main():
        app = web.Application()
        app.router.add_get("/users/{id}", user)
        app.router.add_get("/boom", boom)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        await call(f"http://127.0.0.1:{port}")
        log.info("outside")
        await runner.cleanup()
        print("\\n".join(str(s) for s in seen))

    asyncio.run(main())
"""

CONFIG = """
retain: {all: true}     # the tests read each span's trace ids
targets:
  - {target: "__main__:call", kind: flow, name: call}
"""


@pytest.fixture(scope="module")
def receiver():
    pytest.importorskip("opentelemetry.proto")
    from tests.otlp_receiver import Receiver
    with Receiver() as rx:
        yield rx


@pytest.fixture(scope="module")
def run(tmp_path_factory, receiver):
    config = CONFIG + f"export:\n  otlp: {{endpoint: '{receiver.endpoint}', flush_interval_ms: 100}}\n"
    run = Run(tmp_path_factory.mktemp("tracectx"), PROGRAM, config)
    proc = run.start()
    return run, proc.stdout.split()


def _spans(run):
    return run.records("span")


class TestOutgoing:
    def test_client_requests_carry_traceparent_of_their_span(self, run):
        """aiohttp and httpx requests send traceparent naming their http span in the flow's trace; one the program set is kept."""
        run, seen = run
        records = _spans(run)
        (flow,) = [r for r in records if r["name"] == "call"]
        trace = tracecontext.trace_hex(int(flow["flow_id"], 16))
        clients = {r["attrs"]["path"]: r for r in records if r["kind"] == "http" and r["flow_id"] == flow["flow_id"]}
        assert seen[0] == f"00-{trace}-{clients['/users/u-771']['span_id']}-01"     # aiohttp
        assert seen[1] == "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"
        assert seen[2] == f"00-{trace}-{clients['/users/u-773']['span_id']}-01"     # httpx

    def test_never_to_discord_and_switchable(self, tmp_path):
        """Discord's API hosts get no traceparent; traceparent: false turns it off."""
        class S:
            flow_id, span_id = 0x1234, 0x5678
        assert traceparent_for(S, "discord.com") is None and traceparent_for(S, "cdn.discordapp.com") is None
        assert traceparent_for(S, "example.org") == f"00-{tracecontext.trace_hex(0x1234)}-0000000000005678-01"
        run = Run(tmp_path, PROGRAM, CONFIG + "integrations:\n  aiohttp: {traceparent: false}\n  httpx: {traceparent: false}\n")
        seen = run.start().stdout.split()
        assert seen[0] == "None" and seen[2] == "None" and seen[1].startswith("00-abab")


class TestServerFlows:
    def test_requests_become_flows_named_by_route(self, run):
        """Each request is a flow named METHOD route-template with its status; an unmatched one is named by its method; a raising handler is an error with 500."""
        run, _ = run
        flows = {}
        for r in _spans(run):
            if r["kind"] == "flow" and r["attrs"].get("server") == "aiohttp":
                flows.setdefault(r["name"], []).append(r)
        assert sorted(flows) == ["GET", "GET /boom", "GET /users/{id}"]
        assert [f["attrs"]["status"] for f in flows["GET /users/{id}"]] == [200, 200, 200]
        assert all(f["attrs"]["route"] == "/users/{id}" and f["parent_id"] is None for f in flows["GET /users/{id}"])
        assert "u-771" not in str([f["attrs"] for f in flows["GET /users/{id}"]])
        (missing,) = flows["GET"]
        assert missing["attrs"]["status"] == 404 and missing["status"] == "success"
        (boom,) = flows["GET /boom"]
        assert boom["status"] == "error" and boom["attrs"]["status"] == 500 and boom["error"] == "RuntimeError"
        completes = [r for r in run.records("flow_complete") if r["flow_name"] == "GET /users/{id}"]
        assert len(completes) == 3

    def test_incoming_traceparent_is_honoured(self, run):
        """A request's traceparent puts its flow in the caller's trace under the caller's span."""
        run, seen = run
        served = [r for r in _spans(run) if r["name"] == "GET /users/{id}"]
        by_trace = {r["attrs"].get("trace_id"): r for r in served}
        assert by_trace["ab" * 16]["attrs"]["parent_span_id"] == "cd" * 8
        (call,) = [r for r in _spans(run) if r["name"] == "call"]
        trace = tracecontext.trace_hex(int(call["flow_id"], 16))
        parents = {r["attrs"]["parent_span_id"] for r in served if r["attrs"].get("trace_id") == trace}
        assert parents == {seen[0].split("-")[2], seen[2].split("-")[2]}


    def test_exported_server_spans_join_the_callers_trace(self, run, receiver):
        """Over OTLP a served request is a SERVER span in the caller's trace whose parent is the caller's span."""
        run, seen = run
        spans = {s.span_id.hex(): s for s, _ in receiver.spans()}
        served = [s for s in spans.values() if s.name == "GET /users/{id}"]
        assert all(s.kind == 2 for s in served)
        foreign = [s for s in served if s.trace_id.hex() == "ab" * 16]
        assert len(foreign) == 1 and foreign[0].parent_span_id.hex() == "cd" * 8
        own = [s for s in served if s is not foreign[0]]
        assert len(own) == 2
        for s in own:
            caller = spans[s.parent_span_id.hex()]       # the client span, exported by the same process
            assert caller.kind == 3 and caller.trace_id == s.trace_id
            a = attributes(caller)
            assert a["server.address"] == "127.0.0.1" and isinstance(a["server.port"], int) and "host" not in a
            assert a["http.request.method"] == "GET" and a["url.template"].startswith("/users/")
            assert a["http.response.status_code"] == 200


class TestLogCorrelation:
    def test_log_records_carry_the_current_flow(self, run):
        """Log lines written inside a flow carry its trace id, the current span and the flow name; outside, nothing."""
        run, _ = run
        lines = [line.split(" ", 3) for line in (run.dir / "prog.log").read_text().splitlines()]
        by_message = {parts[3]: parts[:3] for parts in lines}
        (call,) = [r for r in _spans(run) if r["name"] == "call"]
        assert by_message["calling"] == [tracecontext.trace_hex(int(call["flow_id"], 16)), call["span_id"], "call"]
        assert by_message["outside"] == ["-", "-", "-"]
        served = {r["attrs"].get("trace_id"): r for r in _spans(run) if r["name"] == "GET /users/{id}"}
        flow = served["ab" * 16]
        assert by_message["serving u-772"] == ["ab" * 16, flow["span_id"], "GET"]


ASGI_PROGRAM = """
    import asyncio
    import httpx, uvicorn
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.responses import JSONResponse
    from starlette.routing import Mount, Route

    async def user(request):
        return JSONResponse({"id": request.path_params["user_id"]})

    async def boom(request):
        raise RuntimeError("handler failed")

    async def missing(request):
        raise HTTPException(status_code=404)

    inner = Starlette(routes=[Route("/items/{user_id}", user)])
    app = Starlette(routes=[Route("/users/{user_id}", user), Route("/boom", boom), Route("/gone", missing),
                            Mount("/v2", app=inner)])

    async def main():
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error", lifespan="off"))
        task = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient() as client:
            assert (await client.get(base + "/users/u-881", headers={"traceparent": "00-" + "ef" * 16 + "-" + "12" * 8 + "-01"})).status_code == 200
            assert (await client.get(base + "/boom")).status_code == 500
            assert (await client.get(base + "/gone")).status_code == 404
            assert (await client.get(base + "/v2/items/u-882")).status_code == 200
            assert (await client.get(base + "/nowhere")).status_code == 404
        server.should_exit = True
        await task

    asyncio.run(main())
"""


class TestAsgi:
    def test_starlette_requests_become_flows(self, tmp_path):
        """Starlette (uvicorn) requests are flows named by route template with status, a mounted app's request is one flow, traceparent honoured."""
        pytest.importorskip("starlette")
        pytest.importorskip("uvicorn")
        run = Run(tmp_path, ASGI_PROGRAM, "log: {console: false}\nretain: {all: true}\n")   # every request's span
        run.start()
        flows = [r for r in _spans(run) if r["kind"] == "flow" and r["attrs"].get("server") == "asgi"]
        by_name = {r["name"]: r for r in flows}
        assert sorted(by_name) == ["GET", "GET /boom", "GET /gone", "GET /items/{user_id}", "GET /users/{user_id}"]
        assert len(flows) == 5          # the mounted app's request is not a second flow
        user = by_name["GET /users/{user_id}"]
        assert user["attrs"]["status"] == 200 and user["attrs"]["trace_id"] == "ef" * 16
        assert user["attrs"]["parent_span_id"] == "12" * 8 and "u-881" not in str(user)
        boom = by_name["GET /boom"]
        assert boom["status"] == "error" and boom["error"] == "RuntimeError" and boom["attrs"]["status"] == 500
        assert by_name["GET /gone"]["status"] == "success" and by_name["GET /gone"]["attrs"]["status"] == 404
        assert by_name["GET"]["attrs"]["status"] == 404


class TestLogCorrelationInProcess:
    @pytest.fixture
    def installed(self):
        import logging

        from autoperf.integrations import log_context
        log_context.setup(None, {})
        yield logging.getLogger("tests.log_context")
        log_context.teardown(None)

    def test_extra_keys_win_and_never_raise(self, installed):
        """A call's own extra= trace_id inside a flow is kept and does not raise (a record factory made it a KeyError)."""
        from autoperf import spans
        s = spans.start("f", "flow")
        try:
            rec = installed.makeRecord("x", 20, "p", 1, "m", None, None, extra={"trace_id": "mine"})
            plain = installed.makeRecord("x", 20, "p", 1, "m", None, None)
        finally:
            s.finish()
        assert rec.trace_id == "mine" and rec.span_id == f"{s.span_id:016x}" and rec.flow_name == "f"
        assert plain.trace_id == tracecontext.trace_hex(s.flow_id)
        with pytest.raises(KeyError):     # the stdlib's own rule stays
            installed.makeRecord("x", 20, "p", 1, "m", None, None, extra={"message": "x"})
        assert not hasattr(installed.makeRecord("x", 20, "p", 1, "m", None, None), "trace_id")

    def test_autoperfs_own_work_is_not_correlated(self, installed):
        """A record made while MUTED (autoperf's own work) gets no ids."""
        from autoperf import current
        token = current.mute()
        try:
            rec = installed.makeRecord("x", 20, "p", 1, "m", None, None)
        finally:
            current.unmute(token)
        assert not hasattr(rec, "trace_id")

    def test_copy_matches_the_stdlib_make_record(self):
        """Our copy of Logger.makeRecord has the stdlib's body line for line (a Python that changes it fails here)."""
        import inspect

        from autoperf.integrations import log_context

        def body(fn):       # the code from "rv = " to "return rv", whitespace left out
            text = "".join(inspect.getsource(fn).split())
            return text[text.index("rv="):text.index("returnrv")]
        ours = body(log_context._stdlib_make_record).replace("_logging._logRecordFactory", "_logRecordFactory")
        correlation = "s=get_current()ifsisnotNone:_correlate(rv.__dict__,s)"
        assert correlation in ours
        assert ours.replace(correlation, "") == body(log_context.STDLIB_MAKE_RECORD)

    def test_over_someone_elses_make_record_and_back(self):
        """Over a makeRecord another tool set, ours wraps it; teardown puts theirs back; over ours, theirs stays."""
        import logging

        from autoperf import spans
        from autoperf.integrations import log_context
        original = logging.Logger.makeRecord

        def theirs(self, *args, **kwargs):
            rec = original(self, *args, **kwargs)
            rec.theirs = True
            return rec
        logging.Logger.makeRecord = theirs
        try:
            log_context.setup(None, {})
            s = spans.start("f", "flow")
            rec = logging.getLogger("x").makeRecord("x", 20, "p", 1, "m", None, None)
            s.finish()
            assert rec.theirs and rec.flow_name == "f"
            log_context.teardown(None)
            assert logging.Logger.makeRecord is theirs
        finally:
            logging.Logger.makeRecord = original


POOL_SERVER = """
    import asyncio, concurrent.futures, multiprocessing
    import aiohttp
    from aiohttp import web
    import jobs

    async def work(request):
        pool = request.app["pool"]
        return web.json_response(await asyncio.get_running_loop().run_in_executor(pool, jobs.crunch, 3))

    async def main():
        pool = concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        pool.submit(jobs.crunch, 0).result()      # the worker exists before any request adopts a trace
        app = web.Application()
        app["pool"] = pool
        app.router.add_get("/work", work)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        base = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
        async with aiohttp.ClientSession() as session:
            async with session.get(base + "/work", headers={"traceparent": "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"}) as resp:
                assert resp.status == 200
        await runner.cleanup()
        pool.shutdown()

    if __name__ == "__main__":
        asyncio.run(main())
"""

POOL_JOBS = """
import logging

log = logging.getLogger("jobs")
handler = logging.FileHandler("worker.log")
handler.setFormatter(logging.Formatter("%(trace_id)s %(message)s", defaults={"trace_id": "-"}))
log.addHandler(handler)
log.setLevel(logging.INFO)


def crunch(x):
    log.info("crunch %s", x)
    return x * 2
"""


class TestAdoptedTraceInPoolJobs:
    def test_a_pool_job_of_an_adopted_flow_stays_in_the_remote_trace(self, tmp_path, receiver):
        """A request's traceparent reaches its process-pool job: the worker's spans and log lines carry that trace."""
        config = f"""
            retain: {{all: true}}     # reads the worker's spans (a worker cannot know its flow's rule)
            targets:
              - {{target: "jobs:crunch", kind: span, name: crunch}}
            export:
              otlp: {{endpoint: '{receiver.endpoint}', flush_interval_ms: 100, exit_timeout_s: 30}}
        """
        run = Run(tmp_path, POOL_SERVER, config)
        (run.dir / "jobs.py").write_text(POOL_JOBS)
        run.start()
        records = _spans(run)
        (flow,) = [r for r in records if r["name"] == "GET /work" and r["kind"] == "flow"]
        (served,) = [r for r in records if r["name"] == "crunch" and r["flow_id"] == flow["flow_id"]]
        assert served["pid"] != flow["pid"]                          # ran in the pool's worker
        exported = {s.span_id.hex(): s for s, _ in receiver.spans()}
        worker_span = exported[served["span_id"]]
        assert worker_span.trace_id.hex() == "ab" * 16
        job = exported[worker_span.parent_span_id.hex()]             # the job span, in the server's process
        assert job.trace_id.hex() == "ab" * 16 and job.parent_span_id.hex() == flow["span_id"]
        lines = (run.dir / "worker.log").read_text().splitlines()
        assert lines[1] == f"{'ab' * 16} crunch 3"
        assert lines[0].endswith(" crunch 0") and not lines[0].startswith("abab")   # the warm-up job's own trace
