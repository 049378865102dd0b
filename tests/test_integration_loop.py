"""Event loop: lag monitor numbers and loop_blocked records naming the blocking line and flow."""
from __future__ import annotations

import asyncio
import inspect
import json
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from autoperf import integrations, spans
from autoperf.integrations import base, event_loop
from autoperf.testing import capture_records

# the session's pipeline writes into a temporary directory (tests/conftest.py), never ./logs
pytestmark = pytest.mark.usefixtures("autoperf_pipeline")

OPTIONS = {"lag_interval_ms": 20, "blocking_threshold_ms": 100}


@pytest.fixture
def loop_patched():
    integrations.unpatch("asyncio")
    assert integrations.patch("asyncio", asyncio, OPTIONS)
    event_loop.lag_stats()  # start from nothing
    yield
    integrations.unpatch("asyncio")


def line_of(fn, marker):
    """``file:line`` suffix of the source line of ``fn`` containing ``marker``."""
    lines, first = inspect.getsourcelines(fn)
    for offset, text in enumerate(lines):
        if marker in text:
            return f"{os.path.basename(__file__)}:{first + offset} in {fn.__name__}"
    raise AssertionError(marker)


def blocked(records):
    return [r for r in records if r["type"] == "loop_blocked"]


async def blocking_command():
    with spans.span("queue_command", "flow") as flow:
        await asyncio.sleep(0.01)
        time.sleep(0.3)  # BLOCKS
        await asyncio.sleep(0.01)
    return flow


async def short_block():
    await asyncio.sleep(0.01)
    time.sleep(0.03)


def blocking_callback():
    time.sleep(0.2)  # CALLBACK BLOCKS


async def never_returns_soon():
    time.sleep(1.3)  # LONG BLOCK


class TestBlockingDetection:
    def test_sleep_in_coroutine_names_the_line_and_the_flow(self, loop_patched):
        """``time.sleep(0.3)`` in a coroutine gives one loop_blocked record naming that line and its flow."""
        with capture_records() as records:
            flow = asyncio.run(blocking_command())
        (rec,) = blocked(records)
        assert rec["location"].endswith(line_of(blocking_command, "# BLOCKS"))
        assert rec["stack"][-1] == rec["location"]
        assert rec["flow_id"] == f"{flow.span_id:016x}" and rec["flow_name"] == "queue_command"
        assert 300 <= rec["duration_ms"] < 400
        assert rec["sampled"] is True and rec["detector"] == "handle"
        assert rec["task"] and rec["level"] == "WARNING"

    def test_short_block_under_threshold_is_not_reported(self, loop_patched):
        """A 30 ms block under the 100 ms threshold gives no record."""
        with capture_records() as records:
            asyncio.run(short_block())
        assert blocked(records) == []

    def test_idle_wait_before_a_short_step_is_not_counted(self, loop_patched):
        """A 30 ms step right after 300 ms idle in the selector is no block (the step is timed from the selector's return)."""
        async def wake_then_work():
            await asyncio.sleep(0.3)
            time.sleep(0.03)

        with capture_records() as records:
            asyncio.run(wake_then_work())
        assert blocked(records) == []

    def test_many_short_callbacks_in_one_iteration_are_no_block(self, loop_patched):
        """Twenty 10 ms callbacks run in one loop iteration (200 ms) give no record: each callback is timed alone."""
        async def burst():
            loop = asyncio.get_running_loop()
            done = loop.create_future()
            for i in range(20):
                loop.call_soon(time.sleep, 0.01)
            loop.call_soon(done.set_result, None)
            await done

        with capture_records() as records:
            asyncio.run(burst())
        assert blocked(records) == []

    def test_second_of_two_steps_in_one_iteration_is_timed_alone(self, loop_patched):
        """A 150 ms callback after an 80 ms one in the same iteration is reported with about 150 ms, naming its own line."""
        async def two():
            loop = asyncio.get_running_loop()
            done = loop.create_future()
            loop.call_soon(time.sleep, 0.08)
            loop.call_soon(blocking_callback)
            loop.call_soon(done.set_result, None)
            await done

        with capture_records() as records:
            asyncio.run(two())
        (rec,) = blocked(records)
        assert 200 <= rec["duration_ms"] < 260  # blocking_callback sleeps 200 ms; the 80 ms before is not added
        assert rec["location"].endswith(line_of(blocking_callback, "# CALLBACK BLOCKS"))

    def test_a_stopped_loop_keeps_no_trace(self, loop_patched):
        """After run_until_complete the loop and its selector carry nothing of autoperf; a second run is watched again."""
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(asyncio.sleep(0.01))
            assert "_autoperf_loop_state" not in vars(loop)
            assert "select" not in vars(loop._selector)
            with capture_records() as records:
                loop.run_until_complete(blocking_command())
            assert len(blocked(records)) == 1
        finally:
            loop.close()

    def test_blocking_callback_on_new_event_loop_in_a_thread(self, loop_patched):
        """A plain callback blocking a loop from ``new_event_loop`` in another thread is reported with its flow."""
        def run():
            loop = asyncio.new_event_loop()
            with spans.span("cycle", "cycle") as flow:
                loop.call_soon(blocking_callback)
            holder.append(flow)
            loop.run_until_complete(asyncio.sleep(0.3))
            loop.close()

        holder = []
        with capture_records() as records:
            thread = threading.Thread(target=run, name="loop-thread")
            thread.start()
            thread.join(10)
        (rec,) = blocked(records)
        assert rec["location"].endswith(line_of(blocking_callback, "# CALLBACK BLOCKS"))
        assert rec["thread"] == "loop-thread"
        assert rec["flow_id"] == f"{holder[0].span_id:016x}"

    @pytest.mark.timeout(30)
    def test_block_that_does_not_return_is_reported_while_ongoing(self, loop_patched):
        """A block still going on after 1 s is reported by the watchdog before it ends, then again with its duration."""
        with capture_records() as records:
            asyncio.run(never_returns_soon())
        ongoing, final = blocked(records)
        where = line_of(never_returns_soon, "# LONG BLOCK")
        assert ongoing["ongoing"] is True and ongoing["location"].endswith(where)
        assert 1000 <= ongoing["duration_ms"] < 1300
        assert "ongoing" not in final and final["location"].endswith(where)
        assert final["duration_ms"] >= 1300

    def test_block_started_by_a_timer_after_long_idle_is_sampled_while_going_on(self, loop_patched):
        """After 1.5 s idle (the watchdog sleeps past the lag ticks) a step woken by its timer is still sampled mid-block."""
        async def sleep_then_block():
            await asyncio.sleep(1.5)
            time.sleep(0.3)  # AFTER IDLE

        with capture_records() as records:
            asyncio.run(sleep_then_block())
        (rec,) = blocked(records)
        assert rec["sampled"] is True
        assert rec["location"].endswith(line_of(sleep_then_block, "# AFTER IDLE"))

    def test_block_started_by_io_after_long_idle_is_sampled_while_going_on(self, loop_patched):
        """A reader callback woken by bytes on a socket after 1.5 s idle is sampled mid-block, naming its line."""
        import socket

        def on_readable(sock, done):
            sock.recv(16)
            time.sleep(0.3)  # READER BLOCKS
            done.set_result(None)

        async def serve():
            loop = asyncio.get_running_loop()
            left, right = socket.socketpair()
            done = loop.create_future()
            left.setblocking(False)
            loop.add_reader(left, on_readable, left, done)
            threading.Timer(1.5, right.send, (b"x",)).start()
            try:
                await done
            finally:
                loop.remove_reader(left)
                left.close()
                right.close()

        with capture_records() as records:
            asyncio.run(serve())
        (rec,) = blocked(records)
        assert rec["sampled"] is True
        assert rec["location"].endswith(line_of(on_readable, "# READER BLOCKS"))

    def test_idle_loop_wakes_the_watchdog_about_once_a_second(self, loop_patched):
        """Over 3 s of an idle loop (lag ticks every 20 ms) the watchdog wakes a handful of times, not once per threshold."""
        async def idle():
            await asyncio.sleep(0.5)
            before = event_loop._watchdog.looks
            await asyncio.sleep(3)
            return event_loop._watchdog.looks - before

        looks = asyncio.run(idle())
        assert looks <= 10  # once per 100 ms threshold would be 30

    def test_patch_unpatch_patch_is_identical(self):
        """Repatching wraps once (one record per block); unpatch restores Handle._run and _set_running_loop."""
        integrations.unpatch("asyncio")
        handle_run = asyncio.events.Handle._run
        set_running = asyncio.events._set_running_loop
        for _ in range(2):
            assert integrations.patch("asyncio", asyncio, OPTIONS)
            assert base.original(asyncio.events.Handle, "_run") is handle_run
            with capture_records() as records:
                asyncio.run(blocking_command())
            assert len(blocked(records)) == 1
            integrations.unpatch("asyncio")
            assert asyncio.events.Handle._run is handle_run
            assert asyncio.events._set_running_loop is set_running
        with capture_records() as records:
            asyncio.run(blocking_command())
        assert blocked(records) == []
        assert not event_loop._watchdog
        assert not hasattr(asyncio.BaseEventLoop, "_autoperf_loop_state")


class TestLagMonitor:
    def test_idle_loop_has_small_lag_and_a_block_shows_up(self, loop_patched):
        """An idle loop is probed every interval with near-zero lag; a 150 ms block raises max lag above 100 ms."""
        async def idle():
            await asyncio.sleep(0.5)

        asyncio.run(idle())
        stats = event_loop.lag_stats()
        assert 15 <= stats["count"] <= 30
        assert stats["p50"] < 15 and stats["max"] < 60
        assert event_loop.lag_stats() is None  # "since the last sample": read once

        async def block():
            await asyncio.sleep(0.05)
            time.sleep(0.15)
            await asyncio.sleep(0.05)

        asyncio.run(block())
        stats = event_loop.lag_stats()
        assert stats["max"] >= 100
        assert set(stats) == {"avg", "p50", "p95", "max", "count"}

    def test_idle_loop_is_not_woken_for_the_lag_tick(self, loop_patched, monkeypatch):
        """While the loop sleeps with nothing else to do, the tick does not wake it (each wake-up costs
        CPU); the ticks slept through still count, with lag 0. Under load the tick runs as before."""
        ran = []
        real_tick = event_loop._LoopState.tick
        monkeypatch.setattr(event_loop._LoopState, "tick", lambda self: (ran.append(1), real_tick(self)))

        async def idle():
            await asyncio.sleep(0.5)

        asyncio.run(idle())
        stats = event_loop.lag_stats()
        assert len(ran) <= 2                   # one tick when the sleep's timer woke the loop
        assert 20 <= stats["count"] <= 35 and stats["max"] < 50   # ~25 ticks of 20 ms

        async def busy():
            end = time.monotonic() + 0.3
            while time.monotonic() < end:
                time.sleep(0.004)              # the loop is never idle: every tick runs
                await asyncio.sleep(0)

        ran.clear()
        asyncio.run(busy())
        assert 8 <= len(ran) <= 17
        stats = event_loop.lag_stats()
        assert stats["count"] == len(ran) and stats["max"] < 50   # no lag-0 samples added

    def test_loops_in_several_threads_are_all_probed(self, loop_patched):
        """Loops running at the same time in three threads are each probed every interval."""
        threads = [threading.Thread(target=asyncio.run, args=(asyncio.sleep(0.4),)) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        stats = event_loop.lag_stats()
        assert 45 <= stats["count"] <= 75
        assert event_loop.monitored_loops() == []

    def test_monitor_restarts_with_the_loop(self, loop_patched):
        """A loop stopped and run again does not count the stopped time as lag."""
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(asyncio.sleep(0.1))
            time.sleep(0.3)  # the loop is not running: not lag
            loop.run_until_complete(asyncio.sleep(0.1))
        finally:
            loop.close()
        assert event_loop.lag_stats()["max"] < 60


async def worker_main():
    await asyncio.sleep(0.01)
    time.sleep(0.25)  # WORKER BLOCKS


def run_loop_in_worker():
    asyncio.run(worker_main())
    return os.getpid()


class TestForkedWorker:
    @pytest.mark.timeout(60)
    def test_loop_in_a_worker_forked_from_a_running_loop(self, loop_patched, tmp_path):
        """A worker forked from inside a loop callback watches its own loop: one record, the worker's line, the job's flow."""
        import concurrent.futures
        import concurrent.futures.process
        import glob
        import multiprocessing

        import orjson

        from autoperf import bootstrap

        async def submit():
            with spans.span("parse_replay", "flow") as flow:
                ex = concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork"))
                pid = await asyncio.get_running_loop().run_in_executor(ex, run_loop_in_worker)
                ex.shutdown(wait=True)
            return flow, pid

        assert integrations.patch("process_pool", concurrent.futures.process, {})
        try:
            with capture_records() as records:
                flow, pid = asyncio.run(submit())
        finally:
            integrations.unpatch("process_pool")
        # The parent's loop only waited for the worker: no block of the worker's length there (a
        # shorter one, e.g. the fork itself on a loaded machine, is not what this test is about).
        assert [r for r in blocked(records) if r["duration_ms"] >= 200] == []
        found = []
        for name in glob.glob(os.path.join(os.path.dirname(bootstrap.log_path()), "performance_*.log")):
            with open(name, "rb") as fh:
                found += [r for r in map(orjson.loads, fh) if r.get("type") == "loop_blocked" and r["pid"] == pid]
        (rec,) = found
        assert rec["location"].endswith(line_of(worker_main, "# WORKER BLOCKS"))
        assert rec["flow_id"] == f"{flow.span_id:016x}"


UVLOOP_SCRIPT = """
import asyncio, json, time
from autoperf import bootstrap, integrations, pipeline, spans
from autoperf.integrations import event_loop
bootstrap.ensure_pipeline(console=False)
integrations.patch("asyncio", asyncio, {"lag_interval_ms": 20, "blocking_threshold_ms": 100})
import uvloop  # imported after the patch, as under `autoperf run`

async def main():
    assert type(asyncio.get_running_loop()).__module__.startswith("uvloop")
    await asyncio.sleep(0.2)
    stats = event_loop.lag_stats()
    with spans.span("cmd", "flow"):
        time.sleep(0.3)  # UVLOOP BLOCK
    await asyncio.sleep(0.1)
    return stats

idle = uvloop.run(main())
pipeline.flush()
print(json.dumps({"idle": idle}))
"""


class TestUvloop:
    @pytest.mark.timeout(60)
    def test_lag_monitor_and_lag_based_blocking_detection(self, tmp_path):
        """Under uvloop the lag monitor runs and a block is found from the late tick, with its line (no flow)."""
        script = tmp_path / "uv.py"
        script.write_text(textwrap.dedent(UVLOOP_SCRIPT))
        env = dict(os.environ, AUTOPERF_LOG_DIR=str(tmp_path / "logs"))
        out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=50)
        assert out.returncode == 0, out.stderr
        idle = json.loads(out.stdout.strip().splitlines()[-1])["idle"]
        assert 5 <= idle["count"] <= 15 and idle["max"] < 60
        records = [json.loads(line) for path in (tmp_path / "logs").iterdir() for line in path.read_text().splitlines()]
        (rec,) = blocked(records)
        line = next(i for i, text in enumerate(textwrap.dedent(UVLOOP_SCRIPT).splitlines(), 1) if "UVLOOP BLOCK" in text)
        assert rec["location"] == f"{script}:{line} in main"
        assert rec["detector"] == "lag" and rec["sampled"] is True
        assert 200 <= rec["duration_ms"] <= 320
        assert rec["flow_id"] is None
