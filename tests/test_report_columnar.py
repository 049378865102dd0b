"""The columnar (DuckDB) report reader gives the Python reader's report on the same logs.

Logs with every record type, corrupt and non-object lines, blank lines, a truncated tail, several files
(one gzipped) and flows that straddle chunk boundaries; small reservoirs so that sampling and bucket
coarsening happen. Percentiles must be identical (same reservoir sample); float sums outside
reservoirs may differ in the last bits (summation order).
"""
import datetime as dt
import gzip
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys

import orjson
import pytest

from autoperf.analysis import synth
from autoperf.analysis.aggregate import Aggregator
from autoperf.analysis.columnar import aggregate_files_columnar, available
from autoperf.analysis.reader import read_records

pytestmark = pytest.mark.skipif(not available(), reason="DuckDB is not installed")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DAY = dt.datetime(2025, 1, 20)
PLAN = [{"Plan": {"Node Type": "Seq Scan", "Relation Name": "players", "Plan Rows": 50, "Actual Rows": 40,
                  "Actual Loops": 1, "Rows Removed by Filter": 49960,
                  "Filter": "(mmr > ?)"}}]


def _records(day, n_flows, seed):
    """Every record type the report reads, in a plausible interleaving."""
    rng = random.Random(seed)
    out = list(synth.stream(n_flows, start=day, seed=seed, per_second=0.05))   # ~5.5 h: buckets coarsen
    extra = []
    for i in range(n_flows // 10):
        t = day + dt.timedelta(minutes=i * 7, seconds=rng.random() * 30)
        ms = lambda k: dt.timedelta(milliseconds=k)  # noqa: E731
        # N+1: the same fingerprint 6 times, back to back; then two different queries back to back (a gather)
        n1 = [("db.fetch", "db", 3.0 + rng.random(), synth.db_attrs("SELECT * FROM items WHERE id = $1", "fpitem"))
              for _ in range(6)]
        flow = synth.flow("inventory_command", t, 40.0, n1, status=rng.choice(["success", "error", "cancelled"]),
                          sla_ms=rng.choice([30, 45.5]),
                          metadata={"command": "inventory", "first_response_ms": rng.choice([20.0, 3500, 7]),
                                    "deadline_missed": rng.random() < 0.1, "interaction_type": "application_command"})
        for rec in flow:        # budgets (a target's or the integration's threshold_ms): int and float
            if rec.get("kind") == "db":
                rec["threshold_ms"] = rng.choice([4, 3.5])
        extra += flow
        seq = [("db.fetch", "db", 5.0, synth.db_attrs("SELECT a FROM t1", "fpA")),
               ("db.fetch", "db", 6.0, synth.db_attrs("SELECT b FROM t2", "fpB")),
               ("GET /users/{id}", "http", 7.0, {"method": "GET", "status": 200})]
        extra += synth.flow("profile_view", t + ms(5), 20.0, seq, metadata={})
        # one transaction between two independent calls: only the calls outside it could be gathered
        tx = [("GET /users/{id}", "http", 7.0, {"method": "GET", "status": 200}),
              ("db.begin", "db", 0.5, synth.db_attrs("BEGIN;", "fpbegin", "BEGIN")),
              ("db.fetch", "db", 4.0, synth.db_attrs("SELECT a FROM t1 FOR UPDATE", "fpA2")),
              ("db.execute", "db", 3.0, synth.db_attrs("UPDATE t1 SET a = $1", "fpU", "UPDATE")),
              ("db.commit", "db", 1.0, synth.db_attrs("COMMIT;", "fpcommit", "COMMIT")),
              ("db.fetch", "db", 6.0 + i % 2, synth.db_attrs("SELECT b FROM t2", "fpB"))]
        extra += synth.flow("trade_command", t + ms(9), 30.0, tx, metadata={})
        # a flow whose root never arrives (crash): flushed at the end
        fid = synth.new_id()
        extra.append(synth.span("db.fetch", "db", t, 2.0, fid, fid, "lost_flow",
                                attrs=synth.db_attrs("SELECT 1", "fpone")))
        base = {"timestamp": synth.ts(t), "pid": 1}
        extra += [
            dict(base, level="WARNING", type="loop_blocked", duration_ms=120.0 + i, threshold_ms=100,
                 flow_id=None, flow_name="queue_command", location=f"bot.py:{10 + i % 3} in handler",
                 stack=["bot.py:10 in handler"]),
            # a block reported while ongoing, then its final record (same block_id): counted once
            dict(base, level="ERROR", type="loop_blocked", duration_ms=1000.0 + i, ongoing=True, block_id=f"{i:x}",
                 pid=7, flow_id=None, flow_name=None, location="bot.py:50 in slow", stack=[]),
            dict(base, level="ERROR", type="loop_blocked", duration_ms=1500.0 + i, block_id=f"{i:x}", pid=7,
                 flow_id=None, flow_name=None, location="bot.py:50 in slow", stack=[]),
            dict(base, level="WARNING", type="loop_blocked", duration_ms=300.0, startup=True, flow_id=None,
                 flow_name=None, location="bot.py:5 in <module>", stack=[]),
            dict(base, level="WARNING", type="warning", code="capture_failed", message="x", count=i % 3 or None),
            dict(base, level="WARNING", type="dropped", count=2, since=synth.ts(t)),
            dict(base, level="INFO", type="explain", fingerprint="fpA", statement="SELECT a FROM t1", plan=PLAN,
                 query_ms=600.0, system="postgresql"),
            dict(base, level="WARNING", type="alert", rule="command_slow", severity="warning", count=1),
            dict(base, level="INFO", type="sim_step", step="s", ok=3),
            dict(base, level="INFO", type="something_new", value=1),
            dict(base, level="INFO", type="flow_complete", flow_kind="cycle", flow_name="matchmaker.cycle",
                 flow_id=fid, duration_ms=3.0),
            synth.span("db.fetch", "db", t, 800.0, None, None, None,
                       attrs=dict(synth.db_attrs("SELECT * FROM big WHERE x = $1", "fpbig"),
                                  explain=json.dumps(PLAN) if i % 2 else PLAN, rows=3)),
            synth.span("db.fetch", "db", t, 1.0, None, None, None, attrs={"statement": "SELECT 2"}),
            synth.span("raw", None, t, 1.0, None, None, None, attrs="not a dict"),
            {"timestamp": synth.ts(t), "level": "INFO"},                      # an object without a type
            {},
        ]
    out += extra
    rng.shuffle(out)       # spans of a flow arrive around (mostly before) its end, as from several tasks
    out.sort(key=lambda r: r.get("timestamp") or "")
    return out


def _write(path, recs, junk_every=97, tail=b""):
    lines = [orjson.dumps(r) for r in recs]
    junk = [b'{"type":"span","trunc', b"[1, 2]", b"null", b'"text"', b"", b"   ", b"\xff\xfe not json"]
    for i in range(0, len(lines), junk_every):
        lines.insert(i, junk[(i // junk_every) % len(junk)])
    data = b"\n".join(lines) + b"\n" + tail
    if str(path).endswith(".gz"):
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        with open(path, "wb") as f:
            f.write(data)


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    d = tmp_path_factory.mktemp("logs")
    _write(d / "performance_2025-01-19.log", _records(DAY - dt.timedelta(days=1), 200, 1))
    _write(d / "performance_2025-01-20.log.gz", _records(DAY, 150, 2))
    _write(d / "performance_2025-01-21.log", _records(DAY + dt.timedelta(days=1), 200, 3),
           tail=b'{"timestamp":"2025-01-21T23:00:00.000Z","type":"flow_comp')
    return d


def _close(a, b, where="result"):
    """Equal, except floats equal to 1e-9 relative (sums in another order)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), where
        for k in a:
            _close(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert a == b or math.isclose(a, b, rel_tol=1e-9), (where, a, b)
    else:
        assert type(a) is type(b) and a == b, (where, a, b)


def _both(paths, chunk_bytes, since=None, until=None, **kw):
    rd = read_records(paths, since=since, until=until)
    py = Aggregator(**kw)
    py.add_all(rd)
    py.flush_open()
    col, stats = aggregate_files_columnar(paths, since, until, agg_kwargs=kw, chunk_bytes=chunk_bytes)
    return py, rd.stats(), col, stats


SMALL = dict(reservoir=60, op_reservoir=40, series_reservoir=7, daily_reservoir=25, max_buckets=5,
             sla={"profile_view": 12, "queue_command": 250.0}, thresholds_ms=(10.0, 100.0, 3000.0))


@pytest.mark.parametrize("chunk_bytes", [40_000, 32 << 20])
def test_same_result_as_python_reader(logs, chunk_bytes):
    """Every record type, corrupt lines, .gz, three files, tiny chunks: the same report, suggestions too."""
    paths = sorted(str(p) for p in logs.iterdir())
    py, pst, col, cst = _both(paths, chunk_bytes, **SMALL)
    assert cst == pst
    assert pst["skipped_lines"] > 10 and pst["records"] > 3000
    r1, r2 = py.result(), col.result()
    assert r1["suggestions"] and r1["resources"] and r1["loop_blocked"]["count"] and r1["cycles"] and r1["jobs"]
    assert not r1["all_commands"]["exact"]                  # the reservoirs sampled
    assert r1["series"]["bucket"] != "minute"               # the time buckets coarsened
    _close(r1, r2)
    assert py.n_plus_one and py.seq_io and any(db.seq_scans for db in py.db.values())
    assert py.db["fpitem"].th_known and py.db["fpitem"].th_over and py.ops[("db.fetch", "db")].th_known
    assert py.flows["inventory_command"].itype == "application_command"
    # the statements of a transaction are never gather advice: only the two calls around it
    assert [k[1] for k in py.seq_io if k[0] == "trade_command"] == [("GET /users/{id}", "db.fetch")]
    # a block reported while ongoing and again at its end is one block (files straddled, chunks cut)
    slow = next(b for b in r1["loop_blocked"]["by_location"] if b["location"] == "bot.py:50 in slow")
    assert slow["count"] == 20 + 15 + 20 and slow["max_ms"] == 1519.0
    assert next(b for b in r1["loop_blocked"]["by_location"] if b["location"] == "bot.py:5 in <module>")["startup"]
    _close(py.n_plus_one, col.n_plus_one, "n_plus_one")
    _close({str(k): v for k, v in py.seq_io.items()}, {str(k): v for k, v in col.seq_io.items()}, "seq_io")
    _close(dict(py.flow_counts), dict(col.flow_counts), "flow_counts")
    assert py.evicted_open == col.evicted_open


def test_same_result_with_a_time_window(logs):
    """--since/--until: the same records kept and the same lines counted as filtered."""
    paths = sorted(str(p) for p in logs.iterdir())
    py, pst, col, cst = _both(paths, 50_000, since="2025-01-20T02:00:00Z", until="2025-01-21T01:00:00Z")
    assert cst == pst and pst["filtered"] > 1000
    _close(py.result(), col.result())


def _cli(engine, logs, fmt, *extra):
    p = subprocess.run([sys.executable, "-m", "autoperf", "report", "--engine", engine, "--format", fmt,
                        "--log-dir", str(logs), *extra], capture_output=True, cwd=ROOT, timeout=300,
                       env=dict(os.environ, NO_COLOR="1"))
    assert p.returncode == 0, p.stderr.decode()
    return p.stdout.decode()


def _round_floats(text):
    return re.sub(r"\d+\.\d{6,}(e[-+]?\d+)?", lambda m: f"{float(m.group(0)):.6g}", text)


@pytest.mark.parametrize("fmt", ["terminal", "markdown", "json", "html"])
def test_cli_output_is_the_same(logs, fmt):
    """`autoperf report --engine columnar` prints what `--engine python` prints (floats to 6 digits)."""
    a, b = _cli("python", logs, fmt), _cli("columnar", logs, fmt)
    if fmt == "json":
        ja, jb = json.loads(a), json.loads(b)
        _close(ja, jb)
    else:
        assert _round_floats(a) == _round_floats(b)


def test_cli_output_with_worker_processes_is_the_same(logs):
    """`-j 2`: the inputs cut into spans read by two worker processes, each engine — the same JSON report."""
    a, b = _cli("python", logs, "json", "-j", "2"), _cli("columnar", logs, "json", "-j", "2")
    ja, jb = json.loads(a), json.loads(b)
    assert ja["source"]["jobs"] == jb["source"]["jobs"] == 2
    _close(ja, jb)


def test_flows_carried_between_chunks_end_up_the_same(tmp_path):
    """Spans whose flow ends chunks later (and flows that never end) are paired as the Python path pairs them."""
    recs = []
    t = DAY
    open_flows = []
    for i in range(400):
        fid = synth.new_id()
        for k in range(3):
            recs.append(synth.span("db.fetch", "db", t + dt.timedelta(milliseconds=10 * k), 9.0, fid, fid,
                                   flow_name="slow_flow", attrs=synth.db_attrs("SELECT x", f"fp{k % 2}")))
        open_flows.append((fid, t))
        if i % 3 == 0:                   # end some flows only much later
            continue
        recs += [r for r in synth.flow("slow_flow", t, 50.0) if r["type"] == "flow_complete"]
        for r in recs[-1:]:
            r["flow_id"] = fid
    many = [("db.fetch", "db", 1.0, synth.db_attrs("SELECT y", "fpmany"))] * 520    # over the 500 kept per flow
    recs += synth.flow("batch_flow", t, 600.0, many)
    for fid, t0 in open_flows[::6]:
        fc = synth.flow("slow_flow", t0, 60.0)[-1]
        fc["flow_id"] = fid
        recs.append(fc)
    path = tmp_path / "performance_2025-01-20.log"
    _write(path, recs, junk_every=10_000)
    py, pst, col, cst = _both([str(path)], 20_000, open_flows_cap=50)
    assert cst == pst
    _close(py.result(), col.result())
    assert py.n_plus_one[("batch_flow", "fpmany")][2] == 500
    _close(py.n_plus_one, col.n_plus_one, "n_plus_one")
    _close(dict(py.flow_counts), dict(col.flow_counts), "flow_counts")
    assert {k: (v.flows, dict(v.flow_names)) for k, v in py.db.items()} == \
        {k: (v.flows, dict(v.flow_names)) for k, v in col.db.items()}


def test_chunks_duckdb_cannot_read_go_through_the_python_path(logs):
    """A chunk DuckDB rejects is read by the Python code; open flows pass between the two readers intact."""
    from autoperf.analysis.columnar import ColumnarReader

    class EveryThirdChunkFails(ColumnarReader):
        def _load(self, data):
            if self.chunks % 3 == 0:
                raise RuntimeError("not readable here")
            return super()._load(data)

    paths = sorted(str(p) for p in logs.iterdir())
    rd = read_records(paths)
    py = Aggregator(**SMALL)
    py.add_all(rd)
    py.flush_open()
    col = Aggregator(**SMALL)
    reader = EveryThirdChunkFails(col, chunk_bytes=60_000)
    try:
        reader.run(paths)
    finally:
        reader.close()
    col.flush_open()
    assert reader.fallback_chunks > 5 and reader.stats() == rd.stats()
    _close(py.result(), col.result())
    _close(py.n_plus_one, col.n_plus_one, "n_plus_one")


def test_lines_up_to_the_readers_line_limit_are_read_by_duckdb(tmp_path):
    """DuckDB reads a JSON object up to 16 MiB by default — the readers' own line limit (``blocks.MAX_LINE``,
    longer is garbage, skipped and counted). A 15 MiB record is read like any other (no Python fallback for
    its chunk); a 17 MiB one is skipped by both readers."""
    from autoperf.analysis.blocks import MAX_LINE
    from autoperf.analysis.columnar import ColumnarReader
    recs = _records(DAY, 60, 7)
    for fp, size in (("fp15mib", MAX_LINE - (1 << 20)), ("fptoolong", MAX_LINE + (1 << 20))):
        recs.insert(len(recs) // 2, synth.span("db.fetch", "db", DAY, 4.0, None, None, None,
                                               attrs=dict(synth.db_attrs("SELECT big FROM t", fp), blob="x" * size)))
    path = tmp_path / "performance_2025-01-20.log"
    _write(path, recs)
    rd = read_records([str(path)])
    py = Aggregator(**SMALL)
    py.add_all(rd)
    py.flush_open()
    col = Aggregator(**SMALL)
    reader = ColumnarReader(col, chunk_bytes=4 << 20)
    try:
        reader.run([str(path)])
    finally:
        reader.close()
    col.flush_open()
    assert reader.fallback_chunks == 0
    assert reader.stats() == rd.stats()
    assert col.db["fp15mib"].res.count == py.db["fp15mib"].res.count == 1 and "fptoolong" not in col.db
    _close(py.result(), col.result())


def test_chunk_directory_of_a_killed_report_is_removed_by_the_next(logs):
    """A report killed mid-run leaves its chunk directory (on /dev/shm: memory until reboot); the next
    report deletes it, keeps those of reports still running, and leaves nothing of its own behind."""
    from autoperf.analysis.columnar import chunk_dir_base

    base = chunk_dir_base()
    killed = subprocess.Popen([sys.executable, "-c", "pass"])
    killed.wait()
    stale = os.path.join(base, f"autoperf-report-{killed.pid}-test")
    running = os.path.join(base, f"autoperf-report-{os.getpid()}-test")
    for d in (stale, running):
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "chunk.ndjson"), "wb") as f:
            f.write(b"{}\n" * 1000)
    try:
        before = set(os.listdir(base))
        _cli("columnar", logs, "json")
        after = set(os.listdir(base))
        assert not os.path.exists(stale)
        assert os.path.exists(os.path.join(running, "chunk.ndjson"))
        assert after == before - {os.path.basename(stale)}    # the report's own directory went too
    finally:
        for d in (stale, running):
            shutil.rmtree(d, ignore_errors=True)


def test_duckdb_prints_no_progress_bar_on_stdout(logs, capfd):
    """DuckDB draws a progress bar on stdout (a pipe too) for a query over 2 s: it would land in the
    middle of `autoperf report --format json > out.json`. Shown at once here if it were on."""
    from autoperf.analysis.columnar import ColumnarReader

    rd = ColumnarReader(Aggregator(**SMALL), chunk_bytes=40_000)
    rd.con.execute("SET progress_bar_time = 0")
    try:
        rd.run(sorted(str(p) for p in logs.iterdir()))
    finally:
        rd.close()
    assert rd.records > 3000
    assert capfd.readouterr().out == ""


@pytest.mark.parametrize("window", [(None, None), ("2025-01-20T02:00:00Z", "2025-01-21T01:00:00Z")])
def test_parallel_workers_give_the_python_workers_result(logs, window):
    """`aggregate_files(engine="columnar")`: byte spans cut mid-line (three files, one .gz), each read by the
    columnar reader in its own process, merged — the same aggregate as the Python reader's workers, N+1 and
    gather state of flows straddling the spans included; progress only moves forward and ends at the total."""
    from autoperf.analysis.parallel import aggregate_files
    paths = sorted(str(p) for p in logs.iterdir())
    since, until = window
    out = {}
    for engine in ("python", "columnar"):
        seen = []
        agg, st = aggregate_files(paths, since, until, jobs=2, agg_kwargs=SMALL, range_bytes=150_000, engine=engine,
                                  progress=lambda done, total: seen.append((done, total)))
        assert st["spans"] >= 4 and seen and seen == sorted(seen) and seen[-1][0] == seen[-1][1]
        out[engine] = agg, st
    (py, pst), (col, cst) = out["python"], out["columnar"]
    assert cst == pst and pst["records"] > 1000
    r1, r2 = py.result(), col.result()
    assert r1["suggestions"] and r1["cycles"]
    _close(r1, r2)
    if since is None:       # early and final reports of one block in different spans: still one block
        slow = next(b for b in r1["loop_blocked"]["by_location"] if b["location"] == "bot.py:50 in slow")
        assert slow["count"] == 55
    assert py.n_plus_one and py.seq_io
    _close(py.n_plus_one, col.n_plus_one, "n_plus_one")
    _close({str(k): v for k, v in py.seq_io.items()}, {str(k): v for k, v in col.seq_io.items()}, "seq_io")
    _close(dict(py.flow_counts), dict(col.flow_counts), "flow_counts")


def test_byte_ranges_cover_every_line_once(tmp_path):
    """Blocks of the lines starting in [start, end): ranges cut at every offset of a file (lines of every
    length, a last line without a newline) give back each line exactly once."""
    from autoperf.analysis.blocks import whole_line_blocks

    class Counts:
        bytes_read = skipped = 0
        files_missing: list = []

    rng = random.Random(5)
    lines = [b"x" * rng.choice([0, 1, 2, 7, 30]) + b"%d" % i for i in range(60)]
    data = b"\n".join(lines)                       # no newline at the end
    p = tmp_path / "f.log"
    p.write_bytes(data)

    def read(start, end, read_size):
        return b"".join(b[:e] for b, e in whole_line_blocks(str(p), Counts(), read_size, start, end))

    whole = data + b"\n"
    for read_size in (3, 16, 1 << 20):
        for cut in range(0, len(data) + 1):
            assert read(0, cut, read_size) + read(cut, None, read_size) == whole, (read_size, cut)
        cuts = sorted(rng.sample(range(1, len(data)), 8))
        parts = [read(a, b, read_size) for a, b in zip([0] + cuts, cuts + [None])]
        assert b"".join(parts) == whole
