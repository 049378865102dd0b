"""Pure-function tests of autoperf.analysis on generated records with known answers."""
import datetime as dt
import gzip
import math
import random

import orjson
import pytest

from autoperf.analysis import synth
from autoperf.analysis.aggregate import Aggregator, aggregate
from autoperf.analysis.reader import read_records, to_ts
from autoperf.analysis.regress import compare, compare_samples, regress, split_by_tag
from autoperf.analysis.render_sections import sections
from autoperf.analysis.slo import CONFIG_SCHEMA, check_records, evaluate, sla_from_config
from autoperf.analysis.stats import Reservoir, exceedance_test, mann_whitney_u, percentile
from autoperf.analysis.aggregate import suggest

T0 = dt.datetime(2025, 1, 20, 12, 0, 0)


def flows(name, durations, start=T0, step_s=1.0, **kw):
    out = []
    for i, d in enumerate(durations):
        out += synth.flow(name, start + dt.timedelta(seconds=i * step_s), d, **kw)
    return out


# ---------------------------------------------------------------- statistics
def test_percentile_linear_interpolation_known_values():
    s = list(range(1, 11))
    assert percentile(s, 50) == 5.5
    assert percentile(s, 95) == pytest.approx(9.55)
    assert percentile(s, 99) == pytest.approx(9.91)
    assert percentile(s, 0) == 1 and percentile(s, 100) == 10
    assert percentile([7.0], 95) == 7.0
    assert percentile([], 50) is None


def test_reservoir_exact_under_cap_and_bounded_over_cap():
    r = Reservoir(cap=1000)
    for v in range(1, 1001):
        r.add(float(v))
    assert r.exact and r.percentile(50) == 500.5 and r.percentile(95) == pytest.approx(950.05)
    for v in range(1001, 100_001):
        r.add(float(v))
    assert not r.exact
    assert len(r.values) == 1000                       # memory bounded
    assert r.count == 100_000 and r.min == 1 and r.max == 100_000
    assert r.total == pytest.approx(100_000 * 100_001 / 2)
    # a uniform sample: its mean and median are close to the stream's
    assert abs(sum(r.values) / 1000 - 50_000) < 3_000
    assert abs(r.percentile(50) - 50_000) < 5_000
    # late values are kept too (not just the first 1000)
    assert sum(1 for v in r.values if v > 50_000) > 350


def test_reservoir_add_many_is_add_in_a_loop():
    """add_many keeps the same sample, totals and random stream as add() value by value, across the cap."""
    rng = random.Random(3)
    for cap in (1, 7, 100, 1000):
        a, b = Reservoir(cap), Reservoir(cap)
        for _ in range(6):
            vals = [rng.random() * 100 if rng.random() < 0.9 else rng.randint(0, 50) for _ in range(rng.randint(0, 3000))]
            for v in vals:
                a.add(v)
            b.add_many(vals)
            assert (list(a.values), a.count, a.total, a.min, a.max) == (list(b.values), b.count, b.total, b.min, b.max)
        assert a.percentile(95) == b.percentile(95) and not a.exact


def test_reservoir_merge_exact_when_it_fits():
    a, b = Reservoir(100), Reservoir(100)
    a.extend([1.0, 2.0, 3.0])
    b.extend([4.0, 5.0])
    a.merge(b)
    assert a.count == 5 and a.percentile(50) == 3.0 and a.max == 5.0 and a.exact


def test_mann_whitney_no_ties_matches_hand_computation():
    r = mann_whitney_u([1, 2, 3, 4, 5], [6, 7, 8, 9, 10], "greater")
    assert r["u"] == 25
    # mu = 12.5, sigma = sqrt(25 * 11 / 12), continuity 0.5
    z = (25 - 12.5 - 0.5) / math.sqrt(25 * 11 / 12)
    assert r["z"] == pytest.approx(z)
    assert r["p"] == pytest.approx(0.5 * math.erfc(z / math.sqrt(2)))
    assert r["p"] == pytest.approx(0.00609, abs=2e-4)


def test_mann_whitney_tie_correction_matches_hand_computation():
    # ranks: 1 | 2,2,2 -> 3 | 3,3,3 -> 6 | 4 -> 8 ; rank sum of b = 3+6+6+8 = 23, U_b = 23 - 10 = 13
    r = mann_whitney_u([1, 2, 2, 3], [2, 3, 3, 4], "greater")
    assert r["u"] == 13
    var = 16 / 12 * (9 - 48 / 56)
    assert r["z"] == pytest.approx((13 - 8 - 0.5) / math.sqrt(var))
    assert r["p"] == pytest.approx(0.0860, abs=5e-4)
    assert mann_whitney_u([1, 1], [1, 1])["p"] == 1.0      # all tied: no evidence


def test_exceedance_test():
    base_p95 = 100.0
    same = sorted([random.Random(1).uniform(0, 105.26) for _ in range(1000)])   # ~5 % above 100
    assert exceedance_test(same, base_p95)["p"] > 0.05
    worse = sorted([random.Random(2).uniform(0, 150) for _ in range(1000)])     # ~33 % above 100
    assert exceedance_test(worse, base_p95)["p"] < 1e-6


# ---------------------------------------------------------------- reader
def _write_lines(path, recs, extra_lines=()):
    with open(path, "wb") as f:
        for r in recs:
            f.write(orjson.dumps(r) + b"\n")
        for line in extra_lines:
            f.write(line)


def test_reader_skips_and_counts_corrupt_and_truncated_lines(tmp_path):
    recs = flows("queue_command", [10.0, 20.0, 30.0])
    p = tmp_path / "performance_2025-01-20.log"
    good = b"".join(orjson.dumps(r) + b"\n" for r in recs)
    lines = good.split(b"\n")
    # a crash mid-write: half a line, then another process appends a whole line right after it
    corrupt = (lines[0] + b"\n" + lines[1][:17] + lines[2] + b"\n" + b"not json at all\n" + b"[1, 2]\n" + b"\n"
               + b"\n".join(lines[3:]) + lines[1][:25])           # truncated tail without newline
    p.write_bytes(corrupt)
    rd = read_records([str(p)])
    got = list(rd)
    assert rd.skipped == 4        # merged half-line, garbage, non-object, truncated tail
    assert len(got) == len(recs) - 2
    assert all(isinstance(r, dict) for r in got)
    assert rd.stats()["skipped_lines"] == 4


def test_reader_gz_and_time_filter_and_file_pruning(tmp_path):
    day1 = flows("a", [1.0] * 5, start=dt.datetime(2025, 1, 19, 23, 59, 58))
    day2 = flows("a", [2.0] * 5, start=dt.datetime(2025, 1, 20, 0, 0, 0))
    p1 = tmp_path / "performance_2025-01-19.log.gz"
    with gzip.open(p1, "wb") as f:
        for r in day1:
            f.write(orjson.dumps(r) + b"\n")
    p2 = tmp_path / "performance_2025-01-20.log"
    _write_lines(p2, day2)
    assert len(list(read_records([str(p1), str(p2)]))) == len(day1) + len(day2)
    rd = read_records([str(p1), str(p2)], since=dt.datetime(2025, 1, 20), until="2025-01-20T00:00:03Z")
    got = list(rd)
    assert {r["timestamp"][:10] for r in got} == {"2025-01-20"}
    assert all(r["timestamp"] < "2025-01-20T00:00:03" for r in got) and len(got) == 3 * 2
    assert rd.files_read == [str(p2)]          # the 01-19 file was never opened
    calls = []
    list(read_records([str(p2)], progress=lambda done, total: calls.append((done, total))))
    assert calls and calls[-1][0] == calls[-1][1] == p2.stat().st_size


def test_reader_type_prefilter(tmp_path):
    recs = flows("a", [1.0] * 3) + [synth.resource(T0)]
    p = tmp_path / "x.log"
    _write_lines(p, recs)
    got = list(read_records(str(p), types={"resource"}))
    assert [r["type"] for r in got] == ["resource"]


def test_to_ts_formats():
    assert to_ts(dt.datetime(2025, 1, 20, 1, 2, 3, 456789)) == "2025-01-20T01:02:03.456Z"
    assert to_ts("2025-01-20T01:02:03+01:00") == "2025-01-20T00:02:03.000Z"
    assert to_ts(dt.date(2025, 1, 20)) == "2025-01-20T00:00:00.000Z"


# ---------------------------------------------------------------- aggregation
def test_command_stats_exact_percentiles_errors_sla():
    recs = flows("queue_command", [float(v) for v in range(1, 101)], sla_ms=90)
    recs += flows("queue_command", [5.0, 6.0], status="error", sla_ms=90)
    recs += flows("profile_command", [10.0, 20.0, 30.0, 40.0])
    r = aggregate(recs, sla={"profile_command": 25})
    assert r["totals"]["commands"] == 106
    q = next(c for c in r["commands"] if c["name"] == "queue_command")
    vals = sorted([float(v) for v in range(1, 101)] + [5.0, 6.0])
    assert q["count"] == 102 and q["errors"] == 2
    assert q["p50_ms"] == percentile(vals, 50) and q["p95_ms"] == percentile(vals, 95)
    assert q["p99_ms"] == percentile(vals, 99) and q["max_ms"] == 100.0
    assert q["error_rate_pct"] == pytest.approx(200 / 102)
    assert q["sla_ms"] == 90 and q["over_sla"] == 10 and q["sla_status"] == "over"
    p = next(c for c in r["commands"] if c["name"] == "profile_command")
    assert p["sla_ms"] == 25 and p["over_sla"] == 2 and p["p50_ms"] == 25.0   # SLA from config
    assert r["deadline"] is None               # no first_response_ms anywhere -> n/a
    assert q["first_response"] is None


def test_deadline_compliance_from_first_response():
    recs = []
    for i, fr in enumerate([100.0, 200.0, 2999.0, 3000.0, 5000.0]):
        recs += synth.flow("queue_command", T0 + dt.timedelta(seconds=i), fr + 10,
                           metadata={"command": "queue", "first_response_ms": fr})
    r = aggregate(recs)
    assert r["deadline"]["measured"] == 5 and r["deadline"]["within"] == 3
    assert r["deadline"]["pct"] == pytest.approx(60.0)
    assert r["commands"][0]["command"] == "queue"


def test_deadline_table_lists_only_flows_with_an_interaction():
    """A prefix command (no first response) gets no "0 / n/a" row in the deadline table, only a mention."""
    recs = synth.flow("queue_command", T0, 110.0, metadata={"command": "queue", "first_response_ms": 100.0})
    recs += synth.flow("report", T0, 50.0)
    table = next(t for t in sections(aggregate(recs)) if t["id"] == "deadline")
    assert [row[0] for row in table["rows"]] == ["queue_command"] and table["flags"] == [False]
    assert table["note"] == "No interaction response recorded (prefix commands, events): report."


def test_operations_queries_jobs_cycles_resources_blocked():
    explain = [{"Plan": {"Node Type": "Seq Scan", "Relation Name": "players", "Plan Rows": 1, "Actual Rows": 1,
                         "Actual Loops": 1, "Rows Removed by Filter": 119999, "Filter": "(discord_uid = $1)"}}]
    children = [("db.fetch", "db", 40.0, synth.db_attrs("SELECT * FROM players WHERE discord_uid = $1",
                                                       "fp_players", explain=orjson.dumps(explain).decode())),
                ("db.execute", "db", 2.0, synth.db_attrs("UPDATE players SET mmr = $1", "fp_update", "UPDATE"))]
    recs = []
    for i in range(10):
        recs += synth.flow("queue_command", T0 + dt.timedelta(seconds=i), 50.0, children)
    cid = synth.new_id()
    recs.append(synth.span("matchmaker.cycle", "cycle", T0, 12.0, cid, None, "matchmaker.cycle",
                           attrs={"matches_made": 3, "players": 10, "label": "x"}, span_id=cid))
    cid2 = synth.new_id()
    recs.append(synth.span("matchmaker.cycle", "cycle", T0, 20.0, cid2, None, "matchmaker.cycle",
                           attrs={"matches_made": 2, "players": 8}, span_id=cid2))
    for qw in (1.0, 3.0, 50.0):
        recs.append(synth.span("parse_replay", "job", T0, qw + 100, cid, cid, "matchmaker.cycle",
                               attrs={"queue_wait_ms": qw, "run_ms": 100.0, "transfer_ms": 4.0, "executor": "process"}))
    recs += [synth.resource(T0, pool_pct=20.0, pending=1, worker_rss=100, lag_p95=3, lag_max=9),
             synth.resource(T0 + dt.timedelta(seconds=5), pool_pct=95.0, pending=7, worker_rss=650, lag_p95=5, lag_max=40,
                            acquire_max=120.0)]
    for d, loc in ((150.0, "bot.py:10 in handler"), (900.0, "bot.py:10 in handler"), (120.0, "util.py:3 in f")):
        recs.append({"timestamp": to_ts(T0), "type": "loop_blocked", "level": "WARNING", "duration_ms": d,
                     "flow_id": None, "flow_name": "queue_command", "location": loc, "stack": [loc]})
    recs.append({"timestamp": to_ts(T0), "type": "warning", "code": "target_not_found", "message": "x"})
    recs.append({"timestamp": to_ts(T0), "type": "dropped", "count": 7, "since": to_ts(T0)})
    r = aggregate(recs)
    ops = {(o["name"], o["kind"]): o for o in r["slowest_operations"]}
    assert r["slowest_operations"][0]["name"] == "parse_replay"          # ordered by p95
    assert ops[("db.fetch", "db")]["count"] == 10 and ops[("db.fetch", "db")]["p95_ms"] == 40.0
    q = {x["fingerprint"]: x for x in r["slow_queries"]}
    assert q["fp_players"]["total_ms"] == 400.0 and q["fp_players"]["count"] == 10
    assert q["fp_players"]["statement"].startswith("SELECT * FROM players") and q["fp_players"]["flows"] == 10
    assert r["db"]["count"] == 20 and r["db"]["avg_ms"] == pytest.approx(21.0)
    job = r["jobs"][0]
    assert job["name"] == "parse_replay" and job["queue_wait"]["max_ms"] == 50.0 and job["run"]["p50_ms"] == 100.0
    assert job["queue_wait"]["p50_ms"] == 3.0 and job["executors"] == {"process": 3}
    cyc = r["cycles"][0]
    assert cyc["count"] == 2 and cyc["sums"] == {"matches_made": 5, "players": 18} and cyc["p50_ms"] == 16.0
    m = r["resources"]["metrics"]
    assert m["db_pool_utilisation_pct"]["peak"] == 95.0 and m["db_pool_utilisation_pct"]["avg"] == 57.5
    assert m["process_pool_pending"]["peak"] == 7 and m["max_worker_rss_mb"]["peak"] == 650
    assert m["loop_lag_max_ms"]["peak"] == 40 and m["loop_lag_p95_ms"]["avg"] == 4.0
    assert m["db_pool_acquire_wait_max_ms"]["peak"] == 120.0
    lb = r["loop_blocked"]
    assert lb["count"] == 3 and lb["worst_ms"] == 900.0 and lb["worst_location"] == "bot.py:10 in handler"
    assert lb["by_location"][0] == {"location": "bot.py:10 in handler", "count": 2, "total_ms": 1050.0,
                                    "max_ms": 900.0, "flows": {"queue_command": 2}, "startup": False}
    assert r["warnings"] == {"target_not_found": 1} and r["dropped"] == 7
    kinds = {s["kind"] for s in r["suggestions"]}
    assert {"index", "loop_blocking", "scale_db_pool", "scale_process_pool", "worker_memory"} <= kinds
    pool = next(s for s in r["suggestions"] if s["kind"] == "scale_db_pool")
    assert "longest acquire 120" in pool["evidence"] and pool["details"]["longest_acquire_ms"] == 120.0
    idx = next(s for s in r["suggestions"] if s["kind"] == "index")
    assert idx["flow"] == "queue_command" and "players" in idx["title"] and "120,000 rows read" in idx["evidence"]


def test_time_series_coarsen_and_stay_bounded():
    recs = []
    for day in range(10):
        for hour in range(0, 24, 2):
            recs += synth.flow("a", dt.datetime(2025, 1, 1 + day, hour, 0), 10.0 + day)
    r = aggregate(recs, max_buckets=50)
    labels = r["series"]["labels"]
    assert r["series"]["bucket"] == "day" and len(labels) == 10 and labels[0] == "2025-01-01"
    assert r["series"]["p95_ms"]["a"][3] == 13.0
    assert [d["day"] for d in r["daily"]["a"]] == [f"2025-01-{d:02d}" for d in range(1, 11)]
    r = aggregate(recs, max_buckets=500)         # the finest level that fits: seconds
    assert r["series"]["bucket"] == "second" and len(r["series"]["labels"]) == 120
    assert r["series"]["labels"][1] == "2025-01-01T02:00:00"
    r = aggregate(recs[:10], max_buckets=4)      # 5 distinct seconds, minutes, 10 minutes and hours: days
    assert r["series"]["bucket"] == "day" and r["series"]["labels"] == ["2025-01-01"]


def test_histogram_counts():
    r = aggregate(flows("a", [1.0, 7.0, 7.5, 60.0, 4000.0, 20000.0]))
    h = r["histograms"]["a"]
    assert sum(h["counts"]) == 6
    assert h["counts"][h["edges"].index(5)] == 2 and h["counts"][h["edges"].index(10000)] == 1


def test_merge_equals_single_pass():
    rng = random.Random(5)
    recs = flows("a", [rng.uniform(1, 100) for _ in range(300)]) + flows("b", [rng.uniform(1, 9) for _ in range(50)])
    one = Aggregator().add_all(recs)
    a = Aggregator().add_all(recs[: len(recs) // 3])
    b = Aggregator().add_all(recs[len(recs) // 3:])
    a.merge(b)
    r1, r2 = one.result(suggestions=False), a.result(suggestions=False)
    for c1, c2 in zip(r1["commands"], r2["commands"]):
        assert c1.pop("avg_ms") == pytest.approx(c2.pop("avg_ms"))
        assert c1 == c2
    assert r1["totals"] == r2["totals"]
    assert len(r1["commands"]) == 2


# ---------------------------------------------------------------- regressions
def _lognormal(seed, n, scale=1.0, mu=4.6, sigma=0.3):
    rng = random.Random(seed)
    return [scale * rng.lognormvariate(mu, sigma) for _ in range(n)]


def _res(vals, cap=100_000):
    r = Reservoir(cap)
    r.extend(vals)
    return r


def test_planted_regression_is_flagged():
    r = compare_samples(_res(_lognormal(1, 400)), _res(_lognormal(2, 300, scale=1.5)))
    assert r["regressed_p50"] and r["regressed_p95"] and r["verdict"] == "regression"
    assert r["p50_change_pct"] == pytest.approx(50, abs=8) and r["mw_p"] < 1e-6


def test_noise_is_not_a_regression():
    for seed in range(5):      # same distribution, different noise
        r = compare_samples(_res(_lognormal(10 + seed, 300)), _res(_lognormal(100 + seed, 300)))
        assert r["verdict"] == "no credible change", r
    # a real but small (10 %) slowdown does not cross a 20 % threshold
    r = compare_samples(_res(_lognormal(3, 400)), _res(_lognormal(4, 400, scale=1.10)))
    assert not r["regressed_p50"] and not r["regressed_p95"]


def test_large_change_on_few_samples_is_not_credible():
    r = compare_samples(_res(_lognormal(1, 20)), _res(_lognormal(2, 20, scale=2.0)), min_samples=30)
    assert r["verdict"] == "insufficient data" and not r["regressed_p50"]
    # enough samples but high noise: 25 % p50 shift with sigma 1.5 on 35 samples is not credible
    r = compare_samples(_res(_lognormal(7, 35, sigma=1.5)), _res(_lognormal(8, 35, scale=1.25, sigma=1.5)))
    assert not r["regressed_p50"]


def test_tail_only_regression_flags_p95_not_p50():
    base = _lognormal(1, 1000, sigma=0.1)
    cur = _lognormal(2, 1000, sigma=0.1)
    cur = [v * 4 if i % 10 == 0 else v for i, v in enumerate(cur)]     # 10 % of requests 4× slower
    r = compare_samples(_res(base), _res(cur))
    assert r["regressed_p95"] and not r["regressed_p50"]


def test_regress_windows_operations_and_new_slow_queries():
    recs = []
    rng = random.Random(3)
    base_day = dt.datetime(2025, 1, 13)
    for day in range(7):
        for i in range(60):
            t = base_day + dt.timedelta(days=day, minutes=i)
            ch = [("db.fetch", "db", rng.uniform(8, 12), synth.db_attrs("SELECT 1", "fp_old"))]
            recs += synth.flow("queue_command", t, rng.uniform(90, 110), ch)
            recs += synth.flow("profile_command", t, rng.uniform(40, 60))
    today = dt.datetime(2025, 1, 20)
    for i in range(80):
        t = today + dt.timedelta(minutes=i)
        ch = [("db.fetch", "db", rng.uniform(8, 12), synth.db_attrs("SELECT 1", "fp_old")),
              ("db.fetch", "db", rng.uniform(150, 250), synth.db_attrs("SELECT * FROM big", "fp_new_slow"))]
        recs += synth.flow("queue_command", t, rng.uniform(250, 350), ch)
        recs += synth.flow("profile_command", t, rng.uniform(40, 60))
    res = regress(recs, window_start=today, window_end=today + dt.timedelta(days=1),
                  baseline_start=today - dt.timedelta(days=7))
    flagged = {(r["scope"], r["name"]) for r in res["regressions"]}
    assert ("flow", "queue_command") in flagged
    assert ("flow", "profile_command") not in flagged
    assert [q["fingerprint"] for q in res["new_slow_queries"]] == ["fp_new_slow"]
    assert len(res["trend"]["queue_command"]) == 8
    assert res["trend"]["queue_command"][-1]["day"] == "2025-01-20"


def test_compare_and_split_by_tag():
    a = flows("q", _lognormal(1, 100))
    b = flows("q", _lognormal(2, 100, scale=2.0))
    res = compare(a, b)
    assert [r["name"] for r in res["regressions"]] == ["q"]
    for r in a:
        r["tags"] = {"variant": "A"}
    for r in b:
        r["variant"] = "B"         # top-level tag field works too
    A, B = split_by_tag(a + b, "variant", "A", "B")
    assert A.all_cmds.count == 100 and B.all_cmds.count == 100


# ---------------------------------------------------------------- suggestions
def test_planted_n_plus_one_and_non_n_plus_one():
    recs = []
    for i in range(6):
        t = T0 + dt.timedelta(seconds=i)
        ch = [("db.fetch", "db", 3.0, synth.db_attrs("SELECT * FROM players WHERE id = $1", "fp_n1"))] * 8
        recs += synth.flow("leaderboard_command", t, 40.0, ch)
        ch = [("db.fetch", "db", 3.0, synth.db_attrs("SELECT * FROM prefs WHERE id = $1", "fp_four"))] * 4
        recs += synth.flow("profile_command", t, 20.0, ch)
    s = suggest(recs)
    n1 = [x for x in s if x["kind"] == "n_plus_one"]
    assert len(n1) == 1 and n1[0]["flow"] == "leaderboard_command"
    assert n1[0]["details"]["fingerprint"] == "fp_n1" and n1[0]["details"]["avg_repeats"] == 8
    assert n1[0]["saving_ms"] == pytest.approx(24.0 * (1 - 1 / 8))
    assert "6 of 6" in n1[0]["evidence"]
    # repeated identical queries are N+1, not a gather opportunity
    assert not [x for x in s if x["kind"] == "concurrency" and x["flow"] == "leaderboard_command"]


def test_sequential_siblings_suggest_gather_but_overlapping_do_not():
    recs = []
    for i in range(5):
        t = T0 + dt.timedelta(seconds=i)
        ch = [("get_player", "db", 30.0, synth.db_attrs("SELECT a", "fa")),
              ("get_prefs", "db", 20.0, synth.db_attrs("SELECT b", "fb")),
              ("GET /users/{id}", "http", 50.0, {"method": "GET"})]
        recs += synth.flow("setup_command", t, 110.0, ch, sequential=True)
        recs += synth.flow("queue_command", t, 60.0, ch, sequential=False)    # already concurrent
    s = [x for x in suggest(recs) if x["kind"] == "concurrency"]
    assert len(s) == 1 and s[0]["flow"] == "setup_command"
    assert s[0]["saving_ms"] == pytest.approx(100.0 - 50.0)
    assert "get_player → get_prefs → GET /users/{id}" in s[0]["evidence"]


def test_cache_candidate():
    recs = []
    for i in range(12):
        ch = [("db.fetch", "db", 5.0, synth.db_attrs("SELECT * FROM settings", "fp_settings"))] * 2
        recs += synth.flow(["a", "b", "c"][i % 3], T0 + dt.timedelta(seconds=i), 20.0, ch)
    s = [x for x in suggest(recs) if x["kind"] == "cache"]
    assert len(s) == 1 and s[0]["details"]["flows"] == 12 and s[0]["details"]["calls"] == 24
    assert s[0]["saving_ms"] == pytest.approx(10.0)
    assert not [x for x in suggest(recs[: len(recs) // 3]) if x["kind"] == "cache"]    # 4 flows: not enough


def test_suggestion_totals_under_a_second_are_given_in_ms():
    """24 calls of 5 ms: the evidence says 120 ms in total, not "0.1 s" (or "0.0 s" for less)."""
    def cache_suggestion(ms):
        recs = []
        for i in range(12):
            ch = [("db.fetch", "db", ms, synth.db_attrs("SELECT * FROM settings", "fp_settings"))] * 2
            recs += synth.flow(["a", "b", "c"][i % 3], T0 + dt.timedelta(seconds=i), 2 * ms + 10, ch)
        return next(x for x in suggest(recs) if x["kind"] == "cache")
    small, large = cache_suggestion(5.0), cache_suggestion(125.0)
    assert "120 ms total" in small["evidence"] and "120 ms in total" in small["saving"]
    assert "3.0 s total" in large["evidence"] and "3.0 s in total" in large["saving"]


# ---------------------------------------------------------------- SLO
def test_slo_defaults_pass_and_fail():
    good = flows("q", [100.0] * 100)
    res = check_records(good)
    assert res["ok"], res["violations"]
    late = good + flows("q", [3500.0], metadata={"first_response_ms": 3100.0})
    res = check_records(late)
    assert [v["name"] for v in res["violations"]] == ["interaction_deadline"]
    # no interaction answered late: a long flow without one (an event, a prefix command) is no timeout
    res = check_records(good + flows("q", [3500.0]))
    assert res["ok"], res["violations"]
    slow = flows("q", [100.0] * 90 + [800.0] * 10)          # only 90 % under 500 ms
    res = check_records(slow)
    assert {v["name"] for v in res["violations"]} == {"commands_p95"}


def test_slo_per_flow_overrides_and_resources():
    recs = flows("queue_command", [float(v) for v in range(1, 101)]) + flows("other", [10.0] * 10)
    recs.append(synth.resource(T0, pool_pct=85.0, pending=2, worker_rss=100))
    slo = {"flows": {"queue_command": {"p95_ms": 90}, "other": {"p95_ms": 50}}}
    res = check_records(recs, slo)
    names = {(v["name"], v["scope"]) for v in res["violations"]}
    assert names == {("flow_p95", "queue_command"), ("db_pool_utilisation_pct", None)}
    res = check_records(recs, {"db_pool_utilisation_pct": 90, "flows": {"queue_command": {"p95_ms": 96}}})
    assert res["ok"], res["violations"]


def test_slo_db_average_and_regression_over_days():
    recs = []
    rng = random.Random(9)
    for day in range(8):
        slow = day == 7
        for i in range(50):
            t = dt.datetime(2025, 1, 13 + day, 10, i)
            d = rng.uniform(90, 110) * (1.3 if slow else 1.0)
            recs += synth.flow("q", t, d, [("db.fetch", "db", 60.0, synth.db_attrs("SELECT 1", "f"))])
    res = check_records(recs)
    assert {v["name"] for v in res["violations"]} == {"db_avg", "regression"}
    reg = next(v for v in res["violations"] if v["name"] == "regression")
    assert reg["scope"] == "q" and "2025-01-20" in reg["detail"]


def test_slo_schema_and_sla_from_config():
    d = CONFIG_SCHEMA.empty()
    assert d["commands_p95_ms"] == 500 and d["commands_p99_ms"] == 2000 and d["deadline_ms"] == 3000
    assert d["db_avg_ms"] == 50 and d["db_pool_utilisation_pct"] == 80 and d["process_pool_pending"] == 5
    assert d["worker_rss_mb"] == 500 and d["regression_pct"] == 10 and d["regression_days"] == 7
    cfg = {"targets": [{"target": "bot.cmds:queue", "name": "queue_command", "sla_ms": 300},
                       {"target": "bot.cmds:profile", "name": None, "sla_ms": 200}],
           "slo": {"flows": {"x": {"sla_ms": 50}}}}
    assert sla_from_config(cfg) == {"queue_command": 300.0, "bot.cmds.profile": 200.0, "x": 50.0}


def test_slo_schema_validates_through_config_loader(tmp_path):
    config = pytest.importorskip("autoperf.config")
    p = tmp_path / "autoperf.yaml"
    p.write_text("slo:\n  commands_p95_ms: 300\n  flows:\n    queue_command: {p95_ms: 200}\n")
    data = config.load_config(str(p)).data
    assert data["slo"]["commands_p95_ms"] == 300 and data["slo"]["flows"]["queue_command"]["p95_ms"] == 200
    assert data["slo"]["db_avg_ms"] == 50
    p.write_text("slo:\n  comands_p95_ms: 300\n")
    with pytest.raises(config.ConfigError) as e:
        config.load_config(str(p))
    assert "commands_p95_ms" in str(e.value)


def test_evaluate_no_data_is_not_a_failure():
    res = evaluate(Aggregator())
    assert res["ok"] and res["checks"][0]["ok"] is None


# ---------------------------------------------------------------- parallel ranges
def test_parallel_ranges_equal_single_pass(tmp_path):
    from autoperf.analysis.parallel import aggregate_files, plan_ranges
    recs = list(synth.stream(3000, seed=4))
    for i in range(0, 3000, 500):                 # planted N+1 flows spread over the file
        ch = [("db.fetch", "db", 2.0, synth.db_attrs("SELECT x FROM y WHERE id = $1", "fp_loop"))] * 6
        recs += synth.flow("leaderboard_command", T0 + dt.timedelta(seconds=i), 30.0, ch)
    p = tmp_path / "performance_2025-01-20.log"
    body = b"".join(orjson.dumps(r) + b"\n" for r in recs)
    p.write_bytes(body[:200_000] + b'{"type":"span","dur\n' + body[200_000:] + b'{"truncated')
    gz = tmp_path / "performance_2025-01-21.log.gz"
    with gzip.open(gz, "wb") as f:
        f.write(b"".join(orjson.dumps(r) + b"\n" for r in flows("gz_flow", [1.0, 2.0, 3.0])))
    assert len(plan_ranges([str(p)], 100_000)) > 10
    agg, st = aggregate_files([str(p), str(gz)], jobs=2, range_bytes=100_000)
    single = Aggregator()
    rd = read_records([str(p), str(gz)])
    single.add_all(rd)
    single.flush_open()
    assert st["skipped_lines"] == rd.skipped == 3 and st["records"] == rd.records == len(recs) - 1 + 6
    # the corrupt line was split across a record boundary: exactly the same lines were skipped
    r1, r2 = agg.result(), single.result()
    assert r1["totals"] == r2["totals"]
    for c1, c2 in zip(r1["commands"], r2["commands"]):
        assert (c1["name"], c1["count"], c1["p50_ms"], c1["p95_ms"], c1["max_ms"]) == \
               (c2["name"], c2["count"], c2["p50_ms"], c2["p95_ms"], c2["max_ms"])
    assert orjson.dumps(r1["suggestions"]) == orjson.dumps(r2["suggestions"])
    assert [s for s in r1["suggestions"] if s["kind"] == "n_plus_one"][0]["details"]["flows_affected"] == 6
    agg, st = aggregate_files([str(p)], since="2025-01-20T00:00:10Z", until="2025-01-20T00:00:20Z", jobs=2,
                              range_bytes=100_000)
    assert agg.all_cmds.count == sum(1 for r in recs if r["type"] == "flow_complete"
                                     and "2025-01-20T00:00:10" <= r["timestamp"] < "2025-01-20T00:00:20")


def test_overlong_garbage_line_is_bounded_and_counted(tmp_path, monkeypatch):
    from autoperf.analysis import blocks
    from autoperf.analysis.parallel import aggregate_files
    monkeypatch.setattr(blocks, "MAX_LINE", 5000)
    recs = flows("a", [1.0, 2.0, 3.0])
    good = b"".join(orjson.dumps(r) + b"\n" for r in recs)
    p = tmp_path / "g.log"
    p.write_bytes(good + b"x" * 50_000 + b"\n" + good + b"y" * 30_000)
    rd = read_records(str(p))
    assert sum(1 for _ in rd) == 2 * len(recs) and rd.skipped == 2
    for rb in (7_000, 20_000, 10 ** 9):
        agg, st = aggregate_files([str(p)], jobs=1 if rb == 10 ** 9 else 2, range_bytes=rb)
        assert st["records"] == 2 * len(recs) and st["skipped_lines"] == 2, (rb, st)


def test_explain_records_drive_index_advice_and_deadline_missed_counts():
    recs = []
    for i in range(20):
        ch = [("db.fetch", "db", 80.0, synth.db_attrs("SELECT * FROM matches WHERE player_id = $1", "fp_matches"))]
        md = {"command": "history", "first_response_ms": 100.0}
        if i == 0:
            md = {"command": "history", "deadline_missed": True, "answered": False}     # never answered
        elif i == 1:
            md = {"command": "history", "first_response_ms": 2900.0, "deadline_missed": True}  # + gateway delay
        recs += synth.flow("history_command", T0 + dt.timedelta(seconds=i), 90.0, ch, metadata=md)
    plan = [{"Plan": {"Node Type": "Limit", "Plan Rows": 10, "Plans": [
        {"Node Type": "Seq Scan", "Relation Name": "matches", "Plan Rows": 12, "Filter": "(player_id = ?)"}]}}]
    recs.append({"timestamp": to_ts(T0), "type": "explain", "fingerprint": "fp_matches",
                 "statement": "SELECT * FROM matches WHERE player_id = $1", "plan": plan, "query_ms": 80.0,
                 "relations": {"matches": 250000.0}})
    r = aggregate(recs)
    idx = [s for s in r["suggestions"] if s["kind"] == "index"]
    assert len(idx) == 1 and "matches" in idx[0]["title"] and "250,000" in idx[0]["evidence"]
    assert idx[0]["flow"] == "history_command"
    assert r["deadline"]["measured"] == 20 and r["deadline"]["within"] == 18
    # an explain for a fast query gives no advice
    recs2 = [x for x in recs if x.get("type") != "span" or x.get("kind") != "db"]
    assert not [s for s in aggregate(recs2)["suggestions"] if s["kind"] == "index"]


def test_cycles_are_not_commands():
    """A cycle's flow_complete (matchmaker loop) is not counted among the commands."""
    from autoperf.analysis.aggregate import aggregate
    base = {"type": "flow_complete", "timestamp": "2026-01-01T00:00:00.000Z", "status": "success",
            "checkpoints": [], "metadata": {}}
    recs = [dict(base, flow_name="queue", flow_kind="flow", duration_ms=5.0),
            dict(base, flow_name="matchmaking_cycle", flow_kind="cycle", duration_ms=7.0)]
    result = aggregate(recs)
    text = repr(result)
    assert "queue" in text
    commands = result.get("commands") or result.get("flows")
    names = {c["name"] if isinstance(c, dict) else c for c in (commands if isinstance(commands, list) else commands.keys())}
    assert names == {"queue"}


def test_time_buckets_absorbed_from_another_worker_equal_one_pass():
    """Buckets filled in two halves and absorbed equal one pass over all values, also when one half
    had to coarsen (more seconds than max_buckets) and the other did not."""
    from autoperf.analysis.state import Buckets

    def filled(stamps):
        b = Buckets("res", max_buckets=20, cap=1000)
        for ts in stamps:
            b.get("flow", ts).add(float(ts[-5:].replace(":", "")))   # the value names its second
        return b

    stamps = [f"2026-12-07T10:{m:02d}:{s:02d}" for m in range(3) for s in range(0, 60, 2)]
    one = filled(stamps)
    a, b = filled(stamps[:10]), filled(stamps[10:])
    assert a.level < b.level            # a fits at full resolution; b coarsened
    a.absorb(b)
    assert (a.level, a.keys) == (one.level, one.keys)
    assert {k: sorted(v.values) for k, v in a.data.items()} == {k: sorted(v.values) for k, v in one.data.items()}
