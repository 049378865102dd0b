"""Reports, checks and suggestions read counts and percentiles from `metrics` records (issue 14 §3).

The logs are made by ``synth.metrics_and_retained`` — the metrics record format and retention rules of
docs/records.md applied to every-span records — so the every-span records are the ground truth.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import random
import subprocess
import sys

import pytest

from autoperf.analysis import synth
from autoperf.analysis.aggregate import aggregate
from autoperf.analysis.reader import expand_inputs, read_records
from autoperf.analysis.stats import percentile

try:
    from tests import pgserver as pgs
except ImportError:  # tests/ on sys.path (rootdir-less invocation)
    import pgserver as pgs

T0 = dt.datetime(2026, 12, 1, 10, 0, 0)
pg_db = pgs.fresh_db_fixture()
QUERY = ("SELECT * FROM players WHERE id = $1", "a1b2c3d4e5f60718")


def bot_records(n=20_000, seed=3, host=None, shard=None, pid=1, start=T0):
    """Two commands with a known log-normal distribution, a db child each, 0.2 % errors (all in queue_command), an SLA of 200 ms."""
    rng = random.Random(seed)
    recs = []
    for i in range(n):
        name = ("queue_command", "profile_command")[i % 2]
        d = rng.lognormvariate(4, 0.6)
        ch = [("db.fetch", "db", d * 0.3, synth.db_attrs(*QUERY))]
        for r in synth.flow(name, start + dt.timedelta(milliseconds=i * 37), d, ch, sla_ms=200,
                            status="error" if i % 500 == 0 else "success",
                            metadata={"command": name, "first_response_ms": d * 0.8,
                                      "interaction_type": "application_command"}):
            r["pid"] = pid
            if host is not None:
                r["host"] = host
            if shard is not None:
                r["shard_ids"] = [shard]
            recs.append(r)
    return recs


def _cli(*args):
    """The CLI in a directory without an autoperf.yaml (the defaults)."""
    env = {k: v for k, v in os.environ.items() if k != "AUTOPERF_CONFIG"}
    return subprocess.run([sys.executable, "-m", "autoperf", *args], capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.abspath(args[-1])), env={**env, "NO_COLOR": "1"}, timeout=300)


def _report(path, *extra):
    p = _cli("report", "--format", "json", *extra, path)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


@pytest.fixture(scope="module")
def truth():
    return bot_records()


@pytest.fixture(scope="module")
def logs(tmp_path_factory, truth):
    """The same run written three ways: every span and no metrics (an old log), retain all, the default."""
    base = tmp_path_factory.mktemp("metrics_logs")
    old, every, default = str(base / "old"), str(base / "all"), str(base / "default")
    synth.write_logs(old, truth)
    m_all, kept_all = synth.metrics_and_retained(truth, retain_all=True)
    synth.write_logs(every, m_all + kept_all)
    m, kept = synth.metrics_and_retained(truth)
    synth.write_logs(default, m + kept)
    return {"old": old, "all": every, "default": default}


def _exact(truth, name, q):
    return percentile(sorted(r["duration_ms"] for r in truth if r["type"] == "flow_complete"
                             and r["flow_name"] == name), q)


class TestGroundTruth:
    def test_counts_identical_and_percentiles_within_one_percent(self, truth, logs):
        """Old log, retain all and the default report the same counts; every percentile within 1 % of the exact one."""
        reports = {k: _report(v) for k, v in logs.items()}
        for name in ("queue_command", "profile_command"):
            rows = {k: next(c for c in r["commands"] if c["name"] == name) for k, r in reports.items()}
            assert {rows[k]["count"] for k in rows} == {10_000}
            assert len({rows[k]["errors"] for k in rows}) == 1
            assert len({rows[k]["over_sla"] for k in rows}) == 1
            for q in (50, 95, 99):
                exact = _exact(truth, name, q)
                for k in ("all", "default"):
                    assert abs(rows[k][f"p{q}_ms"] / exact - 1) < 0.01, (k, name, q)
        assert {r["totals"]["errors"] for r in reports.values()} == {40}
        q = {k: r["slow_queries"][0] for k, r in reports.items()}
        assert {x["count"] for x in q.values()} == {20_000}
        assert abs(q["default"]["total_ms"] / q["old"]["total_ms"] - 1) < 1e-9

    def test_report_states_retention_and_exemplars_name_flows_in_the_log(self, logs):
        """The default's report says how many flows were kept whole and why; its slowest flows exist in the log."""
        r = _report(logs["default"])
        rt = r["retention"]
        assert rt["flows"] == 20_000 and rt["from_metrics"] == 20_000
        assert rt["retained"] == sum(rt["by_rule"].values()) and 0 < rt["retained"] < 2000
        assert set(rt["by_rule"]) <= {"error", "sla", "sample", "deadline", "slow_child"} and rt["by_rule"]["error"] == 40
        ids = {rec["flow_id"] for rec in read_records(expand_inputs([logs["default"]]))
               if rec.get("type") == "flow_complete"}
        assert r["slowest_flows"] and all(f["flow_id"] in ids for f in r["slowest_flows"])
        assert r["slowest_flows"][0]["duration_ms"] == max(f["duration_ms"] for f in r["slowest_flows"])
        old = _report(logs["old"])["retention"]
        assert old == {"flows": 20_000, "retained": 20_000, "by_rule": {"all": 20_000}, "from_metrics": 0,
                       "from_records": 20_000}
        text = _cli("report", logs["default"]).stdout
        assert f"{rt['retained']:,} of 20,000 (" in text and "Slowest flows" in text

    def test_unretained_lines_are_skipped_unread(self, logs):
        """A log with metrics beside it: the report never decodes an unretained flow_complete line."""
        r = _report(logs["default"])
        assert r["source"]["unretained_lines"] == 20_000 - r["retention"]["retained"]
        assert _report(logs["old"])["source"]["unretained_lines"] == 0

    def test_check_gives_the_same_verdicts(self, logs):
        """`autoperf check` passes and fails the same objectives on the three logs."""
        outs = {}
        for k, path in logs.items():
            p = _cli("check", "--json", path)
            assert p.returncode in (0, 1), p.stderr
            res = json.loads(p.stdout)
            outs[k] = [(c["name"], c["scope"], c["ok"]) for c in res["checks"]]
        assert outs["old"] == outs["all"] == outs["default"] and len(outs["old"]) >= 4

    def test_suggestions_say_how_many_flows_they_saw(self, logs):
        """`autoperf suggest` names the flows recorded whole it ran over."""
        r = _report(logs["default"])
        assert r["suggestions_flows"] == r["retention"]["retained"]


class TestFleet:
    def test_hosts_merge_exactly_with_a_breakdown(self, tmp_path):
        """Logs of two hosts (same pids) merge: counts add up, one row per host and per shard."""
        dirs = []
        for i, host in enumerate(("bot-a", "bot-b")):
            recs = bot_records(2000, seed=i, host=host, shard=i)
            m, kept = synth.metrics_and_retained(recs)
            d = str(tmp_path / host)
            synth.write_logs(d, m + kept)
            dirs.append(d)
        r = _report(dirs[0], dirs[1])
        assert sum(c["count"] for c in r["commands"]) == 4000
        assert [(h["label"], h["count"]) for h in r["hosts"]] == [("bot-a", 2000), ("bot-b", 2000)]
        assert [(h["label"], h["count"]) for h in r["shards"]] == [("0", 2000), ("1", 2000)]
        assert r["retention"]["from_metrics"] == 4000
        p = _cli("compare", dirs[0], dirs[1], "--format", "json")
        assert p.returncode in (0, 1), p.stderr

    def test_a_process_without_metrics_counts_from_its_records(self, tmp_path):
        """An old process's spans count once beside a new process's metrics (no double count, none lost)."""
        new = bot_records(1000, seed=1, pid=10)
        old = bot_records(1000, seed=2, pid=11)
        m, kept = synth.metrics_and_retained(new)
        r = aggregate(m + kept + old)
        assert sum(c["count"] for c in r["commands"]) == 2000
        assert r["retention"]["from_metrics"] == 1000 and r["retention"]["from_records"] == 1000
        assert r["db"]["count"] == 2000


class TestStore:
    @pytest.mark.postgres
    def test_report_over_the_store_counts_from_metrics(self, pg_db, tmp_path):
        """`autoperf report --dsn`: metrics rows come first, so stored retained spans are not counted twice."""
        from autoperf.store.sink import PostgresSink
        recs = bot_records(2000, seed=9)
        m, kept = synth.metrics_and_retained(recs)
        sink = PostgresSink(pg_db, log_dir=str(tmp_path), flush_interval_ms=30)
        try:
            sink.write(kept + m)            # spans first in time order, as a run stores them
            assert sink.sync(30)
        finally:
            sink.close()
        (tmp_path / "x").write_text("")
        r = _report(str(tmp_path / "x"), "--dsn", pg_db)
        assert sum(c["count"] for c in r["commands"]) == 2000 and r["totals"]["errors"] == 4
        assert r["retention"]["from_metrics"] == 2000 and r["retention"]["from_records"] == 0


def test_count_above_from_a_record_equals_the_histograms():
    """Counts over a limit read from a record's histogram dict equal ExpHistogram.count_above."""
    from autoperf.analysis.metricsfold import count_above
    from autoperf.metrics.exphist import ExpHistogram
    rng = random.Random(2)
    h = ExpHistogram()
    for _ in range(5000):
        h.record(rng.lognormvariate(-3, 1.2))
    d = h.to_dict()
    for limit_ms in (0.0, 0.5, 10.0, 49.99, 50.0, 100.0, 500.0, 1e6):
        assert count_above(d, h.count, h.max * 1000, limit_ms) == h.count_above(limit_ms / 1000), limit_ms


class TestSplitRead:
    """With metrics, a worker folds them while this process reads the span files (analysis/split.py)."""

    @staticmethod
    def _serial(paths):
        from autoperf.analysis.aggregate import Aggregator
        agg = Aggregator()
        agg.add_all(read_records(paths))
        agg.flush_open()
        return agg

    @staticmethod
    def _same(a, b):
        """Equal results; floats to 12 digits (sums added in another order differ in the last bits)."""
        def norm(x):
            if isinstance(x, float):
                return float(f"{x:.12g}")
            if isinstance(x, dict):
                return {k: norm(v) for k, v in x.items()}
            if isinstance(x, (list, tuple)):
                return [norm(v) for v in x]
            return x
        assert norm(a.result()) == norm(b.result())

    def test_the_split_read_answers_as_one_process(self, logs, tmp_path):
        """The default's logs, and beside them an old process's every-span log: the report (counts,
        percentiles, statements, suggestions, slowest flows) is the one-process report."""
        from autoperf.analysis.split import aggregate_split
        mixed = tmp_path / "mixed"
        new = bot_records(3000, seed=5, pid=20)
        m, kept = synth.metrics_and_retained(new)
        synth.write_logs(str(mixed), m + kept + bot_records(1000, seed=6, pid=21))
        for d in (logs["default"], logs["all"], str(mixed)):
            paths = expand_inputs([d])
            agg, stats = aggregate_split(paths, None, None, {})
            serial = self._serial(paths)
            self._same(agg, serial)
            assert stats["records"] == sum(serial.types.values()) and agg.retention.from_metrics > 0

    def test_a_worker_that_dies_leaves_the_answer_to_one_process(self, logs, monkeypatch):
        """The metrics worker raising (killed, out of memory) gives no split answer, not a failed report."""
        from autoperf.analysis import split

        def dies(*args):
            raise MemoryError("worker")
        monkeypatch.setattr(split, "_fold", dies)       # a forked worker runs the patched function
        assert split.aggregate_split(expand_inputs([logs["default"]]), None, None, {}) is None

    def test_a_wrong_prediction_reads_again_in_one_process(self, tmp_path, monkeypatch, capsys):
        """A process whose records say it aggregates but whose metrics the inputs lack: no split answer,
        and the CLI's answer is still the one-process one."""
        from autoperf.analysis.split import aggregate_split
        d = tmp_path / "logs"
        m, kept = synth.metrics_and_retained(bot_records(1000, seed=7, pid=30))
        _, orphan = synth.metrics_and_retained(bot_records(1000, seed=8, pid=31))   # its metrics lost
        synth.write_logs(str(d), m + kept + orphan)
        paths = expand_inputs([str(d)])
        assert aggregate_split(paths, None, None, {}) is None
        from autoperf import cli as main_cli
        from autoperf.analysis import cli
        monkeypatch.setattr(cli, "SPLIT_FROM_BYTES", 0)      # the CLI tries the split on these small logs
        monkeypatch.delenv("AUTOPERF_CONFIG", raising=False)
        monkeypatch.chdir(tmp_path)
        assert main_cli.main(["report", "--format", "json", str(d)]) == 0
        got = json.loads(capsys.readouterr().out)
        assert got["commands"] == _report(str(d))["commands"]


def test_a_histogram_sum_widens_its_buckets_before_a_count_can_overflow_them():
    """Bucket counts are packed 32 bits wide while the sum's count is below 2**32, then 64 (add and merge)."""
    from autoperf.analysis.dist import HistSum
    big = 3_000_000_000
    rec = {"scale": 6, "zero_count": 0, "offset": 10, "counts": [big, 0, 1]}
    a, b = HistSum(), HistSum()
    a.add(rec, big + 1, 1.0, 1.0, 2.0)
    b.add(rec, big + 1, 1.0, 1.0, 2.0)
    assert (a.w, a.hist().counts) == (32, [big, 0, 1])
    a.add({"scale": 6, "zero_count": 0, "offset": 9, "counts": [5]}, 5, 1.0, 1.0, 2.0)
    assert a.w == 32 and a.hist().counts == [5, big, 0, 1]
    a.add(rec, big + 1, 1.0, 1.0, 2.0)
    assert a.w == 64 and a.hist().counts == [5, 2 * big, 0, 2] and a.count == 2 * big + 7
    b.merge(a)
    assert b.w == 64 and b.hist().counts == [5, 3 * big, 0, 3] and a.w == 64
    c, d = HistSum(), HistSum()
    c.add(rec, big + 1, 1.0, 1.0, 2.0)
    d.add(rec, big + 1, 1.0, 1.0, 2.0)
    c.merge(d)                                  # two narrow sums past 2**32 together
    assert c.w == 64 and c.hist().counts == [2 * big, 0, 2] and d.w == 32 and d.hist().counts == [big, 0, 1]
