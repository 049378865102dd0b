"""Process and thread pools: job spans, cross-process parents, exact results and exceptions."""
from __future__ import annotations

import asyncio
import concurrent.futures
import concurrent.futures.process
import concurrent.futures.thread
import contextvars
import glob
import multiprocessing
import multiprocessing.pool
import os
import signal
import time
import traceback

import orjson
import pytest

from autoperf import bootstrap, integrations, spans
from autoperf.integrations import base, process_pool, thread_pool
from autoperf.testing import capture_records, spans_by_name

# the session's pipeline writes into a temporary directory (tests/conftest.py), never ./logs
pytestmark = pytest.mark.usefixtures("autoperf_pipeline")

METHODS = ["fork", "spawn", "forkserver"]
NAME = __name__  # how worker processes import the functions below


# -- run in the workers (module level: picklable by reference) ----------------------------------
def work(x):
    with spans.span("inner"):
        time.sleep(0.01)
    return x * 2


def fail(x):
    raise ValueError("bad input", x)


def sleep_then_pid(seconds):
    time.sleep(seconds)
    return os.getpid()


def tag_current(x):
    spans.current().set("tagged", x)
    return x


class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __eq__(self, other):
        return type(other) is Point and (other.x, other.y) == (self.x, self.y)


def make_point(x):
    return Point(x, -x)


# -- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def log_dir(tmp_path_factory):
    """Spawned/forkserver workers write their records here (AUTOPERF_LOG_DIR), every span of them
    (AUTOPERF_RETAIN_ALL, as this process's pipeline: the tests read the workers' spans)."""
    path = tmp_path_factory.mktemp("worker-logs")
    env = {"AUTOPERF_LOG_DIR": str(path), "AUTOPERF_RETAIN_ALL": "1"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield path
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def executor_patched(log_dir):
    integrations.unpatch("process_pool")  # whatever an earlier test left
    assert integrations.patch("process_pool", concurrent.futures.process, {})
    yield
    integrations.unpatch("process_pool")


@pytest.fixture
def mp_pool_patched(log_dir):
    integrations.unpatch("multiprocessing_pool")
    assert integrations.patch("multiprocessing_pool", multiprocessing.pool, {})
    yield
    integrations.unpatch("multiprocessing_pool")


@pytest.fixture
def thread_patched():
    integrations.unpatch("thread_pool")
    assert integrations.patch("thread_pool", concurrent.futures.thread, {})
    yield
    integrations.unpatch("thread_pool")


def worker_records(log_dir, flow_id):
    """Records written by other processes (workers) for ``flow_id``, from every log dir in use."""
    dirs = {str(log_dir)}
    path = bootstrap.log_path()
    if path:
        dirs.add(os.path.dirname(path))  # forked workers keep the parent's file sink
    out = []
    for d in dirs:
        for name in glob.glob(os.path.join(d, "performance_*.log")):
            with open(name, "rb") as fh:
                for line in fh:
                    rec = orjson.loads(line)
                    if rec.get("flow_id") == flow_id and rec.get("pid") != os.getpid():
                        out.append(rec)
    return out


def jobs(records):
    return [r for r in records if r.get("type") == "span" and r.get("kind") == "job"]


# -- ProcessPoolExecutor -------------------------------------------------------------------------
class TestProcessPoolExecutor:
    @pytest.mark.timeout(120)
    @pytest.mark.parametrize("method", METHODS)
    def test_job_span_links_to_flow_and_worker_spans_hang_under_it(self, executor_patched, log_dir, method):
        """A submitted job is a child span of the submitting flow with timings; worker spans hang under it."""
        with capture_records() as records:
            with spans.span("replay_command", "flow") as flow:
                ex = concurrent.futures.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context(method))
                assert ex.submit(work, 21).result(timeout=60) == 42
                ex.shutdown(wait=True)
        (job,) = jobs(records)
        flow_id = f"{flow.span_id:016x}"
        assert job["name"] == f"{NAME}.work"
        assert job["parent_id"] == flow_id and job["flow_id"] == flow_id and job["flow_name"] == "replay_command"
        attrs = job["attrs"]
        assert attrs["executor"] == "process"
        assert attrs["worker_pid"] != os.getpid()
        assert attrs["run_ms"] >= 10
        assert attrs["queue_wait_ms"] >= 0 and attrs["transfer_ms"] >= 0
        total = attrs["queue_wait_ms"] + attrs["run_ms"] + attrs["transfer_ms"]
        assert abs(job["duration_ms"] - total) < 1.0
        inner = [r for r in worker_records(log_dir, flow_id) if r.get("name") == "inner"]
        assert len(inner) == 1
        assert inner[0]["parent_id"] == job["span_id"]
        assert inner[0]["pid"] == attrs["worker_pid"]
        assert inner[0]["flow_name"] == "replay_command"

    def test_map_and_run_in_executor_are_jobs_of_the_caller(self, executor_patched):
        """``map`` gives one job per chunk named after the function; ``run_in_executor`` parents to the coroutine's span."""
        async def handler(ex):
            with spans.span("cmd", "flow") as flow:
                with spans.span("parse") as parse:
                    value = await asyncio.get_running_loop().run_in_executor(ex, work, 5)
            return value, flow, parse

        with capture_records() as records:
            with concurrent.futures.ProcessPoolExecutor(2) as ex:
                assert list(ex.map(work, [1, 2, 3], chunksize=2)) == [2, 4, 6]
                value, flow, parse = asyncio.run(handler(ex))
        assert value == 10
        by_parent = {}
        for job in jobs(records):
            assert job["name"] == f"{NAME}.work"
            by_parent.setdefault(job["parent_id"], []).append(job)
        assert len(by_parent.pop(None)) == 2  # map outside any span: 2 chunks, 2 root jobs
        (job,) = by_parent[f"{parse.span_id:016x}"]
        assert job["flow_id"] == f"{flow.span_id:016x}"

    def test_result_is_the_original_object(self, executor_patched):
        """The caller gets exactly the function's result (type and value), never autoperf's wrapper."""
        with concurrent.futures.ProcessPoolExecutor(1) as ex:
            future = ex.submit(make_point, 3)
            result = future.result(timeout=60)
            assert isinstance(future, concurrent.futures.Future)
        assert type(result) is Point and result == Point(3, -3)

    def test_exception_is_the_original_exception(self, executor_patched):
        """The exception keeps its type, args and attributes, and its remote traceback shows no autoperf frame."""
        with capture_records() as records:
            with concurrent.futures.ProcessPoolExecutor(1) as ex:
                with pytest.raises(ValueError) as info:
                    ex.submit(fail, 7).result(timeout=60)
        exc = info.value
        assert exc.args == ("bad input", 7)
        assert vars(exc) == {}
        remote = str(exc.__cause__)
        assert "in fail" in remote and "autoperf" not in remote
        assert "autoperf" not in "".join(traceback.format_exception(exc))
        (job,) = jobs(records)
        assert job["status"] == "error" and job["error"] == "ValueError"
        assert job["attrs"]["run_ms"] >= 0 and job["attrs"]["worker_pid"] != os.getpid()

    def test_worker_attributes_reach_the_job_span(self, executor_patched):
        """An attribute the worker sets on its current span is recorded on the job span."""
        with capture_records() as records:
            with concurrent.futures.ProcessPoolExecutor(1) as ex:
                assert ex.submit(tag_current, "abc").result(timeout=60) == "abc"
        assert jobs(records)[0]["attrs"]["tagged"] == "abc"

    @pytest.mark.timeout(60)
    def test_killed_worker_is_recorded_as_broken_pool_and_does_not_hang(self, executor_patched):
        """A worker killed with SIGKILL fails its job with BrokenProcessPool, recorded as the span's error."""
        with capture_records() as records:
            ex = concurrent.futures.ProcessPoolExecutor(1)
            pid = ex.submit(os.getpid).result(timeout=60)
            future = ex.submit(sleep_then_pid, 30)
            time.sleep(0.3)
            os.kill(pid, signal.SIGKILL)
            with pytest.raises(concurrent.futures.process.BrokenProcessPool):
                future.result(timeout=20)
            ex.shutdown(wait=True)
        failed = [j for j in jobs(records) if j["name"] == f"{NAME}.sleep_then_pid"]
        assert len(failed) == 1
        assert failed[0]["error"] == "concurrent.futures.process.BrokenProcessPool"

    def test_pool_stats_reports_queue_depth_busy_workers_and_pids(self, executor_patched):
        """``pool_stats()`` shows jobs waiting, workers busy and the worker pids of a live executor."""
        with concurrent.futures.ProcessPoolExecutor(2) as ex:
            pids = {f.result() for f in [ex.submit(sleep_then_pid, 0.2) for _ in range(2)]}
            futures = [ex.submit(sleep_then_pid, 0.5) for _ in range(8)]
            time.sleep(0.2)
            (stats,) = [s for s in process_pool.pool_stats() if set(s["pids"]) == pids]
            assert stats["busy"] == 2
            assert stats["pending"] == 6
            assert stats["workers"] == 2
            concurrent.futures.wait(futures)
        assert not [s for s in process_pool.pool_stats() if set(s["pids"]) == pids]

    def test_patch_unpatch_patch_is_identical(self, log_dir):
        """Patching again after unpatch wraps once and records one job per call; unpatch restores the originals."""
        cls = concurrent.futures.ProcessPoolExecutor
        integrations.unpatch("process_pool")
        original_submit = cls.submit
        original_item = concurrent.futures.process._WorkItem
        for _ in range(2):
            assert integrations.patch("process_pool", concurrent.futures.process, {})
            assert not integrations.patch("process_pool", concurrent.futures.process, {})
            assert cls.submit is not original_submit and cls.submit.__wrapped__ is original_submit
            with capture_records() as records:
                with cls(1) as ex:
                    assert ex.submit(work, 1).result(timeout=60) == 2
            assert len(jobs(records)) == 1
            integrations.unpatch("process_pool")
            assert cls.submit is original_submit
            assert concurrent.futures.process._WorkItem is original_item
        with capture_records() as records:
            with cls(1) as ex:
                future = ex.submit(work, 1)
                assert future.result(timeout=60) == 2 and type(future) is concurrent.futures.Future
        assert jobs(records) == []


# -- multiprocessing.Pool ------------------------------------------------------------------------
class TestMultiprocessingPool:
    @pytest.mark.timeout(120)
    @pytest.mark.parametrize("method", METHODS)
    def test_apply_map_imap_are_linked_jobs(self, mp_pool_patched, log_dir, method):
        """apply_async, map and imap each record job spans under the flow; worker spans hang under them."""
        with capture_records() as records:
            with spans.span("ladder_cycle", "cycle") as flow:
                pool = multiprocessing.get_context(method).Pool(2)
                assert pool.apply_async(work, (1,)).get(timeout=60) == 2
                assert pool.map(work, range(4), chunksize=2) == [0, 2, 4, 6]
                assert list(pool.imap(work, [5, 6])) == [10, 12]
                assert sorted(pool.imap_unordered(work, [1, 2, 3], chunksize=3)) == [2, 4, 6]
                pool.close()
                pool.join()
        flow_id = f"{flow.span_id:016x}"
        found = jobs(records)
        assert len(found) == 1 + 2 + 2 + 1
        for job in found:
            assert job["name"] == f"{NAME}.work"
            assert job["parent_id"] == flow_id and job["flow_id"] == flow_id
            assert job["attrs"]["worker_pid"] != os.getpid() and job["attrs"]["run_ms"] >= 10
        inner = [r for r in worker_records(log_dir, flow_id) if r.get("name") == "inner"]
        assert len(inner) == 1 + 4 + 2 + 3
        assert {r["parent_id"] for r in inner} == {j["span_id"] for j in found}

    def test_exception_preserved_and_recorded(self, mp_pool_patched):
        """A failing apply_async raises the original exception and records the job span's error."""
        with capture_records() as records:
            pool = multiprocessing.get_context("fork").Pool(1)
            with pytest.raises(ValueError) as info:
                pool.apply_async(fail, (3,)).get(timeout=60)
            assert pool.apply(make_point, (2,)) == Point(2, -2)
            pool.close()
            pool.join()
        assert info.value.args == ("bad input", 3) and vars(info.value) == {}
        errors = [j for j in jobs(records) if j["error"]]
        assert [j["error"] for j in errors] == ["ValueError"]
        assert not process_pool._inflight

    def test_pool_stats_counts_outstanding_jobs(self, mp_pool_patched):
        """``pool_stats()`` shows a Pool's busy workers and waiting jobs."""
        pool = multiprocessing.get_context("fork").Pool(2)
        try:
            results = [pool.apply_async(sleep_then_pid, (0.5,)) for _ in range(7)]
            time.sleep(0.2)
            (stats,) = [s for s in process_pool.pool_stats() if s["kind"] == "multiprocessing.Pool"]
            assert stats["busy"] == 2 and stats["pending"] == 5 and stats["workers"] == 2
            assert {r.get(timeout=60) for r in results} <= set(stats["pids"])
        finally:
            pool.close()
            pool.join()


    def test_thread_pool_flavour_runs_in_process(self, mp_pool_patched):
        """``multiprocessing.pool.ThreadPool`` jobs are recorded as thread jobs with spans inside hanging under them."""
        with capture_records() as records:
            with spans.span("cmd", "flow") as flow:
                with multiprocessing.pool.ThreadPool(2) as pool:
                    assert pool.map(work, [1, 2]) == [2, 4]
        found = jobs(records)
        assert len(found) == 2
        assert {j["attrs"]["executor"] for j in found} == {"thread"}
        assert {j["attrs"]["worker_pid"] for j in found} == {os.getpid()}
        inner = spans_by_name(records)["inner"]
        assert {r["parent_id"] for r in inner} == {j["span_id"] for j in found}
        assert {r["flow_id"] for r in inner} == {f"{flow.span_id:016x}"}

    def test_unpatch_with_jobs_in_flight_still_returns_original_results(self, log_dir):
        """Unpatching while a job runs still hands back its original result; a later unpatch restores everything."""
        integrations.unpatch("multiprocessing_pool")
        apply_set = multiprocessing.pool.ApplyResult._set
        apply_async = multiprocessing.pool.Pool.apply_async
        assert integrations.patch("multiprocessing_pool", multiprocessing.pool, {})
        pool = multiprocessing.get_context("fork").Pool(1)
        try:
            running = pool.apply_async(sleep_then_pid, (0.3,))
            integrations.unpatch("multiprocessing_pool")
            assert multiprocessing.pool.Pool.apply_async is apply_async
            assert type(running.get(timeout=60)) is int
            assert pool.apply(make_point, (1,)) == Point(1, -1)
        finally:
            pool.close()
            pool.join()
        assert not process_pool._inflight
        assert integrations.patch("multiprocessing_pool", multiprocessing.pool, {})
        integrations.unpatch("multiprocessing_pool")
        assert multiprocessing.pool.ApplyResult._set is apply_set


# -- thread pools --------------------------------------------------------------------------------
request_id: contextvars.ContextVar = contextvars.ContextVar("request_id", default=None)


def in_thread(x):
    with spans.span("thread_inner"):
        time.sleep(0.005)
    return x, request_id.get()


def thread_fail():
    raise KeyError("missing")


class TestThreadPool:
    def test_run_in_executor_to_thread_and_submit_link_to_the_submitter(self, thread_patched):
        """Each way into a thread pool records one job span under the submitter; spans in the thread hang under it."""
        async def handler(ex):
            request_id.set("r-1")
            with spans.span("cmd", "flow") as flow:
                a = await asyncio.get_running_loop().run_in_executor(None, in_thread, 1)
                b = await asyncio.get_running_loop().run_in_executor(ex, in_thread, 2)
                c = await asyncio.to_thread(in_thread, 3)
                d = ex.submit(in_thread, 4).result()
            return flow, [a, b, c, d]

        with capture_records() as records:
            with concurrent.futures.ThreadPoolExecutor(2) as ex:
                flow, results = asyncio.run(handler(ex))
        # run_in_executor does not copy contextvars, to_thread does: unchanged behaviour.
        assert results == [(1, None), (2, None), (3, "r-1"), (4, None)]
        by_name = spans_by_name(records)
        found = by_name[f"{NAME}.in_thread"]
        assert len(found) == 4
        flow_id = f"{flow.span_id:016x}"
        for job in found:
            assert job["kind"] == "job" and job["parent_id"] == flow_id and job["flow_id"] == flow_id
            assert job["attrs"]["executor"] == "thread"
            assert job["attrs"]["run_ms"] >= 5 and job["attrs"]["queue_wait_ms"] >= 0
            assert job["thread"] != "MainThread"
        inner = by_name["thread_inner"]
        assert sorted(r["parent_id"] for r in inner) == sorted(j["span_id"] for j in found)

    def test_exception_keeps_type_and_a_clean_traceback(self, thread_patched):
        """A failing job raises the original exception without autoperf frames and records the error."""
        with capture_records() as records:
            with concurrent.futures.ThreadPoolExecutor(1) as ex:
                with pytest.raises(KeyError) as info:
                    ex.submit(thread_fail).result()
        assert info.value.args == ("missing",)
        assert "autoperf" not in "".join(traceback.format_exception(info.value))
        (job,) = spans_by_name(records)[f"{NAME}.thread_fail"]
        assert job["error"] == "KeyError"

    def test_patch_unpatch_patch_is_identical(self):
        """Repatching wraps once (one job per call); unpatch restores the original submit."""
        integrations.unpatch("thread_pool")
        cls = concurrent.futures.ThreadPoolExecutor
        original = cls.submit
        for _ in range(2):
            assert integrations.patch("thread_pool", concurrent.futures.thread, {})
            assert base.original(cls, "submit") is original
            with capture_records() as records:
                with cls(1) as ex:
                    assert ex.submit(in_thread, 1).result() == (1, None)
            assert len(spans_by_name(records)[f"{NAME}.in_thread"]) == 1
            integrations.unpatch("thread_pool")
            assert cls.submit is original

    def test_job_names_see_through_partials(self):
        """Job names come from the function inside partials and ``context.run``."""
        import functools
        ctx = contextvars.copy_context()
        assert thread_pool.job_name(functools.partial(ctx.run, in_thread, 1)) == f"{NAME}.in_thread"
        assert thread_pool.job_name(functools.partial(work, 1)) == f"{NAME}.work"
        assert thread_pool.job_name(Point(1, 2).__eq__) == f"{NAME}.Point.__eq__"
        assert thread_pool.job_name(time.sleep) == "time.sleep"
