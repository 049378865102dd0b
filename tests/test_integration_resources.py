"""Resource sampler: periodic resource records, pool and lag fields, thresholds and alerts."""
from __future__ import annotations

import asyncio
import concurrent.futures
import concurrent.futures.process
import os
import threading
import time

import pytest

import autoperf
from autoperf import bootstrap, integrations, spans
from autoperf import sampler as resources
from autoperf.integrations import event_loop
from autoperf.testing import capture_records

# the session's pipeline writes into a temporary directory (tests/conftest.py), never ./logs
pytestmark = pytest.mark.usefixtures("autoperf_pipeline")

FIELDS = {"type", "timestamp", "level", "rss_mb", "uss_mb", "cpu_percent", "threads", "open_fds",
          "system_memory_percent", "workers", "max_worker_rss_mb", "active_flows", "loop_lag_ms"}


@pytest.fixture(autouse=True)
def no_sampler_left():
    resources.stop()
    integrations.unpatch("resources")
    yield
    integrations.unpatch("resources")
    resources.stop()


def sampler_threads():
    return [t for t in threading.enumerate() if t.name == "autoperf-sampler"]


def resource_records(records):
    return [r for r in records if r["type"] == "resource"]


def sleep_a_bit(seconds):
    time.sleep(seconds)
    return os.getpid()


class TestSampler:
    def test_periodic_records_have_the_documented_fields(self, monkeypatch):
        """Started through the registry, the sampler writes a resource record every interval with every field."""
        monkeypatch.setattr(bootstrap, "_config", None)  # another test's install() may have left its config
        with capture_records() as records:
            assert integrations.patch("resources", autoperf, {"interval_s": 0.2})
            assert len(sampler_threads()) == 1
            time.sleep(0.75)
            integrations.unpatch("resources")
        found = resource_records(records)
        assert 2 <= len(found) <= 4
        rec = found[-1]
        assert FIELDS <= set(rec)
        assert rec["level"] == "INFO" and "alerts" not in rec
        assert rec["rss_mb"] > 5 and rec["threads"] >= 2 and rec["open_fds"] > 0
        assert 0 < rec["system_memory_percent"] < 100
        assert rec["pid"] == os.getpid()
        assert sampler_threads() == []

    def test_uss_is_read_once_per_uss_interval(self):
        """USS (a page-table walk in the kernel) is read on the first sample and then once per
        ``uss_interval_s``; the samples between carry null, RSS is in every one (a fake clock: 0.1 s a sample)."""
        now = [100.0]
        sampler = resources.Sampler(interval_s=0.1, uss_interval_s=0.45, clock=lambda: now[0])
        found = []
        for _ in range(13):
            found.append(sampler.sample())
            now[0] += 0.1
        assert all(r["rss_mb"] > 5 for r in found)
        read = [i for i, r in enumerate(found) if r["uss_mb"] is not None]
        assert read == [0, 5, 10], [r["uss_mb"] for r in found]
        assert all(0 < found[i]["uss_mb"] <= found[i]["rss_mb"] for i in read)
        every = resources.Sampler(interval_s=60, uss_interval_s=0)
        assert every.sample()["uss_mb"] is not None and every.sample()["uss_mb"] is not None

    def test_workers_pool_queue_and_alerts(self):
        """With 14 jobs on 2 workers the record lists each worker's RSS, the queue, and a CRITICAL queue alert."""
        integrations.unpatch("process_pool")
        assert integrations.patch("process_pool", concurrent.futures.process, {})
        try:
            sampler = resources.Sampler(interval_s=60)
            with concurrent.futures.ProcessPoolExecutor(2) as ex:
                pids = {f.result() for f in [ex.submit(sleep_a_bit, 0.1) for _ in range(2)]}
                futures = [ex.submit(sleep_a_bit, 0.5) for _ in range(14)]
                time.sleep(0.2)
                rec = sampler.sample()
                concurrent.futures.wait(futures)
        finally:
            integrations.unpatch("process_pool")
        assert pids <= {w["pid"] for w in rec["workers"]}
        assert all(w["rss_mb"] > 1 for w in rec["workers"])
        assert rec["max_worker_rss_mb"] == max(w["rss_mb"] for w in rec["workers"])
        assert rec["process_pool"] == {"pending": 12, "busy": 2, "workers": 2}
        assert rec["level"] == "CRITICAL"
        assert rec["alerts"] == [{"metric": "process_pool.pending", "value": 12, "threshold": 10.0,
                                  "level": "CRITICAL"}]

    def test_worker_memory_threshold(self):
        """A worker above ``worker_rss_warning_mb`` makes the record WARNING and names the worker."""
        sampler = resources.Sampler(interval_s=60, thresholds={"worker_rss_warning_mb": 1})
        with concurrent.futures.ProcessPoolExecutor(1) as ex:
            pid = ex.submit(os.getpid).result()
            rec = sampler.sample()
        assert rec["level"] == "WARNING"
        assert f"worker.{pid}.rss_mb" in {a["metric"] for a in rec["alerts"]}

    def test_loop_lag_is_read_from_the_event_loop_monitor(self):
        """While the loop monitor runs, each sample carries the lag statistics since the previous one."""
        integrations.unpatch("asyncio")
        assert integrations.patch("asyncio", asyncio, {"lag_interval_ms": 20})
        try:
            event_loop.lag_stats()
            sampler = resources.Sampler(interval_s=60)

            async def main():
                await asyncio.sleep(0.3)
                return sampler.sample()

            rec = asyncio.run(main())
        finally:
            integrations.unpatch("asyncio")
        assert set(rec["loop_lag_ms"]) == {"avg", "p50", "p95", "max", "count"}
        assert rec["loop_lag_ms"]["count"] >= 8

    @pytest.mark.timeout(60)
    def test_db_pool_utilisation_from_a_real_asyncpg_pool(self):
        """A saturated asyncpg pool (all connections out, one task waiting) is sampled as CRITICAL with its waiter."""
        asyncpg = pytest.importorskip("asyncpg")
        from tests.pgserver import pg_dsn
        dsn = pg_dsn()
        integrations.unpatch("asyncpg")
        assert integrations.patch("asyncpg", asyncpg, {})
        from autoperf.integrations.asyncpg import wait_stats
        wait_stats()                    # an interval of this test's own waits
        try:
            sampler = resources.Sampler(interval_s=60)

            async def main():
                async with asyncpg.create_pool(dsn, min_size=1, max_size=3) as pool:
                    held = [await pool.acquire() for _ in range(3)]
                    waiter = asyncio.ensure_future(pool.acquire())
                    await asyncio.sleep(0.05)
                    busy = await asyncio.to_thread(sampler.sample)
                    for conn in held:
                        await pool.release(conn)
                    await pool.release(await waiter)
                    calm = await asyncio.to_thread(sampler.sample)
                return busy, calm

            busy, calm = asyncio.run(main())
        finally:
            integrations.unpatch("asyncpg")
        state = ("size", "in_use", "idle", "waiters", "utilisation_pct")
        assert {k: busy["db_pool"][k] for k in state} == {"size": 3, "in_use": 3, "idle": 0, "waiters": 1,
                                                          "utilisation_pct": 100.0}
        assert busy["level"] == "CRITICAL"
        assert [a["metric"] for a in busy["alerts"]] == ["db_pool.utilisation_pct"]
        assert calm["db_pool"]["in_use"] == 0 and calm["level"] == "INFO"
        # the pool waits of each interval: three acquires before the first sample; the waiter's
        # (>= 50 ms, a span) and four releases' resets before the second
        assert (busy["db_pool"]["acquires"], busy["db_pool"]["resets"]) == (3, 0)
        assert (calm["db_pool"]["acquires"], calm["db_pool"]["resets"]) == (1, 4)
        assert calm["db_pool"]["acquire_wait_max_ms"] >= 45 and calm["db_pool"]["acquire_wait_ms"] >= 45
        assert calm["db_pool"]["wait_spans"] >= 1

    def test_active_flows_counts_flows_running_now(self):
        """``active_flows`` is the number of root flows started and not yet finished."""
        sampler = resources.Sampler(interval_s=60)
        before = sampler.sample()["active_flows"]
        first, second = spans.start("a", "flow", parent=None), spans.start("b", "flow", parent=None)
        try:
            during = sampler.sample()["active_flows"]
        finally:
            second.finish()
            first.finish()
        assert during == before + 2
        assert sampler.sample()["active_flows"] == before

    def test_sources_add_fields(self):
        """``add_source`` puts another integration's number into every record."""
        resources.add_source("gateway_latency_ms", lambda: 42.5)
        try:
            rec = resources.Sampler(interval_s=60).sample()
        finally:
            resources.remove_source("gateway_latency_ms")
        assert rec["gateway_latency_ms"] == 42.5

    def test_start_is_once_and_respects_sampler_enabled(self):
        """``start`` runs one sampler at most and none when ``sampler.enabled`` is false."""
        assert resources.start({"sampler": {"enabled": False}}) is None
        assert sampler_threads() == []
        first = resources.start({"sampler": {"interval_s": 30}})
        assert first is not None and first.interval_s == 30
        assert resources.start({"sampler": {"interval_s": 30}}) is None
        assert len(sampler_threads()) == 1
        resources.stop()
        assert sampler_threads() == [] and not resources.running()


class TestThresholds:
    @pytest.mark.parametrize("util, level", [(50, "INFO"), (80, "INFO"), (85, "WARNING"), (90, "WARNING"),
                                             (95, "CRITICAL")])
    def test_db_pool_utilisation(self, util, level):
        """DB pool utilisation above 80 % is WARNING, above 90 % CRITICAL."""
        rec = {"db_pool": {"size": 10, "in_use": 9, "idle": 1, "waiters": 0, "utilisation_pct": util}}
        got, alerts = resources.evaluate(rec)
        assert got == level
        assert [a["metric"] for a in alerts] == ([] if level == "INFO" else ["db_pool.utilisation_pct"])

    @pytest.mark.parametrize("pending, level", [(5, "INFO"), (6, "WARNING"), (10, "WARNING"), (11, "CRITICAL")])
    def test_process_pool_queue(self, pending, level):
        """More than 5 jobs waiting is WARNING, more than 10 CRITICAL."""
        assert resources.evaluate({"process_pool": {"pending": pending, "busy": 2, "workers": 2}})[0] == level

    def test_highest_level_wins_and_every_crossing_is_named(self):
        """Several crossings are all listed; the record takes the highest level."""
        rec = {"db_pools": [{"utilisation_pct": 85}, {"utilisation_pct": 20}],
               "process_pool": {"pending": 12}, "workers": [{"pid": 7, "rss_mb": 600.0}]}
        level, alerts = resources.evaluate(rec)
        assert level == "CRITICAL"
        assert [(a["metric"], a["level"]) for a in alerts] == [
            ("db_pool.utilisation_pct", "WARNING"), ("process_pool.pending", "CRITICAL"),
            ("worker.7.rss_mb", "WARNING")]


def test_a_run_shorter_than_the_interval_ends_with_one_sample(tmp_path):
    """The stop writes a last `resource` record (after the sampler's 1-s warm-up), so a short run has one."""
    from tests.runs import Run
    run = Run(tmp_path, "import time\ntime.sleep(1.6)\n", "sampler: {interval_s: 30}\n")
    run.start()
    samples = run.records("resource")
    assert len(samples) == 1 and samples[0]["rss_mb"] > 0 and samples[0]["pid"] == run.records()[0]["pid"]
