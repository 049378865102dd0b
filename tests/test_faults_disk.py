"""The log file under disk faults: full, read-only, missing, deleted and rotated away (issue 19, item 3)."""
from __future__ import annotations

import os

import orjson

from tests.faults import Program, fill, run_live, small_fs, step

CONFIG = """
retain: {all: true}     # the tests count every span written and lost
targets:
  - target: '__main__:work'
sampler: {enabled: false}
integrations: {resources: {enabled: false}, asyncio: {enabled: false}}
"""

PHASES = """
    import sys, time
    def work(i):
        return i
    def phase(name, n, start):
        for i in range(start, start + n):
            work(i)
        time.sleep(1.5)           # the writer drains (and fails, or not) meanwhile
        print(name, flush=True)
        sys.stdin.readline()
    phase("one", int(sys.argv[1]), 0)
    phase("two", int(sys.argv[2]), 10**6)
"""


def lines_of(directory):
    """Every line of every log file in ``directory``, parsed (a torn line fails the test)."""
    out = []
    for name in sorted(os.listdir(directory)):
        if name.startswith("performance_"):
            with open(os.path.join(directory, name), "rb") as handle:
                for line in handle.read().split(b"\n")[:-1]:
                    out.append(orjson.loads(line))
    return out


def test_full_disk_keeps_whole_lines_and_counts_what_was_lost(tmp_path):
    """On a full disk no line is torn, the loss is said once on stderr, and once space is freed a
    record says exactly how many records were lost; spans written + lost = spans produced."""
    with small_fs(1 << 20) as fs:
        filler = fill(fs, 96 * 1024)
        prog = Program(tmp_path, PHASES, CONFIG)
        prog.log_dir = tmp_path / "unused"
        proc = run_live(prog, "20000", "300", options=["--log-dir", fs])
        step(proc, "one")
        os.unlink(filler)
        step(proc, "two")
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert err.count("autoperf: cannot write the log file") == 1, err
        recs = lines_of(fs)                       # parses every line: none torn or glued
        spans = [r for r in recs if r["type"] == "span"]
        lost = [r for r in recs if r.get("code") == "log_records_lost"]
        assert len(lost) == 1 and lost[0]["count"] > 0, lost
        missing = 20300 - len(spans)
        # the count also covers the log_write_failed warning itself, which had nowhere to go
        assert missing <= lost[0]["count"] <= missing + 1, (missing, lost[0])
        assert {r["name"] for r in spans} == {"__main__.work"}
        # phase two, written after the space came back, is all there, after the count
        after = recs[recs.index(lost[0]) + 1:]
        assert sum(1 for r in after if r["type"] == "span") >= 300


def test_unwritable_directory_is_reported_once_and_the_program_is_unaffected(tmp_path):
    """A log directory that cannot be made (a path through a file) or written (read-only): the
    program runs and exits as without autoperf, and stderr says so once."""
    prog = Program(tmp_path, PHASES.replace("sys.stdin.readline()", "pass"), CONFIG)
    (tmp_path / "afile").write_text("x")
    through_file = prog.run("500", "500", options=["--log-dir", str(tmp_path / "afile" / "logs")])
    assert through_file.returncode == 0, through_file.stderr
    assert through_file.stdout.split() == ["one", "two"]
    assert through_file.stderr.count("autoperf: cannot write the log file") == 1, through_file.stderr
    assert "NotADirectoryError" in through_file.stderr
    with small_fs(1 << 20, read_only=True) as fs:
        read_only = prog.run("500", "500", options=["--log-dir", os.path.join(fs, "logs")])
    assert read_only.returncode == 0, read_only.stderr
    assert read_only.stderr.count("autoperf: cannot write the log file") == 1, read_only.stderr
    assert "Read-only file system" in read_only.stderr


def test_a_log_file_deleted_or_rotated_away_is_made_again(tmp_path):
    """Deleting the log file, or renaming it away (logrotate without copytruncate), mid-run: the
    records after it land in a new file at the same path, the rotated file keeps the earlier ones."""
    prog = Program(tmp_path, PHASES + "    phase('three', int(sys.argv[2]), 2 * 10**6)\n", CONFIG)
    proc = run_live(prog, "200", "200")
    step(proc, "one")
    (path,) = [prog.log_dir / n for n in os.listdir(prog.log_dir)]
    os.unlink(path)
    step(proc, "two")
    rotated = tmp_path / "rotated.log"
    os.rename(path, rotated)
    step(proc, "three")
    proc.communicate(timeout=60)
    assert proc.returncode == 0
    with open(rotated, "rb") as handle:
        two = [orjson.loads(line) for line in handle.read().splitlines()]
    three = [r for r in lines_of(prog.log_dir) if r["type"] == "span"]
    assert len([r for r in two if r["type"] == "span"]) == 200
    assert len(three) == 200


def test_a_disk_with_room_for_a_few_lines_is_no_recovery(tmp_path, capfd):
    """A full disk that frees a little (a page) takes no "lost" record and says nothing twice: the first write
    after the failure goes out whole or not at all; once there is room, one record counts every loss."""
    from autoperf import records as model
    from autoperf.sinks import JsonLinesFile

    def batch(n, start):
        return [model.fill_record({"type": "span", "level": "INFO", "name": "work", "i": start + i, "pad": "x" * 200},
                                  model.Settings()) for i in range(n)]

    with small_fs(1 << 20) as fs:
        sink = JsonLinesFile(fs)
        sink.write(batch(1, 0))
        filler = fill(fs, 0)
        sink.write(batch(400, 1))                       # ~100 kB: lost
        with open(filler, "r+b") as handle:             # one page free: room for the lost record, not the batch
            handle.truncate(os.path.getsize(filler) - 4096)
        sink.write(batch(400, 401))
        sink.write(batch(400, 801))
        os.unlink(filler)
        sink.write(batch(3, 1201))
        sink.close()
        recs = lines_of(fs)
    assert capfd.readouterr().err.count("autoperf: cannot write the log file") == 1
    lost = [r for r in recs if r.get("code") == "log_records_lost"]
    spans = [r for r in recs if r["type"] == "span"]
    assert len(lost) == 1 and lost[0]["count"] == 1204 - len(spans), (lost, len(spans))
    assert [r["i"] for r in spans][-3:] == [1201, 1202, 1203] and recs.index(lost[0]) == len(recs) - 4
