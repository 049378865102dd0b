"""``autoperf tail``: the log rendered as the console renders it, filtered, followed across the day's
switch, rotation and truncation, with several processes' lines kept whole (real subprocesses)."""
from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time

import pytest
from test_cli_run import Program, clean_env

pytestmark = pytest.mark.timeout(120)


def _tail(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "autoperf", "tail", *map(str, args)], cwd=cwd,
                          env=clean_env(), capture_output=True, text=True, timeout=60)


class Follow:
    """``autoperf tail -f`` running in the background; ``lines(n)`` waits for n more output lines."""

    def __init__(self, *args):
        self.proc = subprocess.Popen([sys.executable, "-m", "autoperf", "tail", "-f", *map(str, args)],
                                     env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.out = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.out.put(line)

    def lines(self, n, timeout=15):
        got = []
        deadline = time.monotonic() + timeout
        while len(got) < n and time.monotonic() < deadline:
            try:
                got.append(self.out.get(timeout=0.1))
            except queue.Empty:
                pass
        return got

    def quiet(self, seconds=1.0):
        """Nothing more is printed for a while."""
        return self.lines(1, timeout=seconds) == []

    def stop(self):
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(timeout=10)
        return code, self.proc.stderr.read()


def _flow(name, pid=100, ms=12.5, status="success", ts="2026-01-01T10:00:00.000Z", checkpoints=()):
    return {"timestamp": ts, "level": "INFO" if status == "success" else "ERROR", "type": "flow_complete",
            "flow_name": name, "flow_kind": "flow", "flow_id": "00000000000000aa", "user_id": 7, "duration_ms": ms,
            "checkpoints": [{"name": c, "kind": "db", "duration_ms": 1.5, "offset_ms": 0.5} for c in checkpoints],
            "status": status, "error": None if status == "success" else "ValueError", "metadata": {}, "pid": pid}


def _span(name, kind="db", ms=3.0, flow="queue", level="DEBUG", pid=100, status="success"):
    return {"timestamp": "2026-01-01T10:00:00.000Z", "level": level, "type": "span", "name": name, "kind": kind,
            "span_id": "00000000000000bb", "parent_id": "00000000000000aa", "flow_id": "00000000000000aa",
            "flow_name": flow, "duration_ms": ms, "status": status, "error": None, "pid": pid, "thread": "MainThread",
            "task": None, "attrs": {}}


def _write(path, *records, mode="a"):
    with open(path, mode) as fh:
        for rec in records:
            fh.write(rec if isinstance(rec, str) else json.dumps(rec) + "\n")


def test_tail_prints_what_the_console_printed(tmp_path):
    """The lines ``autoperf tail`` prints for a run's log are the lines its console view showed (same renderer)."""
    prog = Program(tmp_path, """
        import time
        def step(i):
            time.sleep(0.002)
        def command(i):
            step(i)
            if i == 3:
                raise ValueError("boom")
        for i in range(6):
            try:
                command(i)
            except ValueError:
                pass
    """, "targets:\n  - target: '__main__:command'\n    kind: flow\n  - target: '__main__:step'\n"
         "    threshold_ms: 1\n")
    cmd = [a for a in prog.autoperf_cmd() if a != "--no-console"]
    cmd.insert(cmd.index(str(prog.script)), "--console")
    proc = subprocess.run(cmd, cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    console = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len([c for c in console if "flow  __main__.command" in c]) == 6
    shown = _tail(prog.log_dir, "-n", "1000", "--colour", "never")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines() == console


def test_a_directory_keeps_each_files_order_and_interleaves_the_families(tmp_path):
    """A span is written before the flow it ends in although its timestamp (its start) is later: the backlog of a
    directory keeps the main log's order and places the flows log's lines between by timestamp."""
    span = dict(_span("db.fetch", level="WARNING"), timestamp="2026-01-01T10:00:00.399Z")
    _write(tmp_path / "performance_2026-01-01.log", span, _flow("queue", ts="2026-01-01T10:00:00.398Z"),
           _flow("queue", ts="2026-01-01T10:00:00.500Z", status="error"))
    _write(tmp_path / "flows_2026-01-01.log", _flow("lean", ts="2026-01-01T10:00:00.450Z"))
    shown = _tail(tmp_path, "-n", "100").stdout.splitlines()
    assert [line.split()[3] for line in shown] == ["db.fetch", "queue", "lean", "queue"], shown


def test_filters(tmp_path):
    """Flow, name, kind, level, minimum duration and status select records; unknown types and broken lines are
    skipped; a flow is one line with its checkpoints."""
    log = tmp_path / "performance_2026-01-01.log"
    _write(log, _flow("queue", checkpoints=("db.fetch", "POST /x")), _span("db.fetch", ms=40.0),
           _span("GET /report", kind="http", ms=2.0, level="TRACE"), _flow("leaderboard", ms=900.0, status="error"),
           {"type": "metrics", "level": "INFO", "key": "queue", "count": 3, "pid": 100},
           '{"type": "span", "level": "INFO", "name": "torn', "\n", _span("db.slow", ms=700.0, level="WARNING"),
           {"timestamp": "2026-01-01T10:00:01.000Z", "level": "WARNING", "type": "warning",
            "code": "target_not_found", "message": "target 'x:y' not found", "pid": 100})
    every = _tail(log, "-n", "100", "--level", "TRACE").stdout.splitlines()
    assert len(every) == 6 and not [line for line in every if "metrics" in line or "torn" in line]
    assert "flow  queue 12.50ms success user=7  [db.fetch=1.5 POST /x=1.5]" in every[0]
    assert _tail(log, "-n", "100").stdout.count("\n") == 4                       # INFO and above by default
    assert [l.split()[3] for l in _tail(log, "--flow", "queue", "--level", "TRACE").stdout.splitlines()] == \
        ["queue", "db.fetch", "GET", "db.slow"]
    assert "GET /report" in _tail(log, "--kind", "http", "--level", "TRACE").stdout
    assert _tail(log, "--name", "db.*", "--min-ms", "50").stdout.count("\n") == 1
    errors = _tail(log, "--status", "error").stdout.splitlines()
    assert len(errors) == 1 and "leaderboard 900.00ms error" in errors[0]
    assert _tail(log, "--kind", "warning").stdout.strip().endswith("warning target 'x:y' not found")
    assert len(_tail(log, "-n", "2", "--level", "TRACE").stdout.splitlines()) == 2


def test_follow_switches_to_the_next_days_file(tmp_path):
    """``tail -f DIR`` moves on to the next UTC day's file and still shows what a process writes late to the old one."""
    old = tmp_path / "performance_2026-01-01.log"
    _write(old, _flow("before_midnight"))
    follow = Follow(tmp_path)
    try:
        assert "before_midnight" in follow.lines(1)[0]
        _write(old, _flow("late_yesterday"))
        assert "late_yesterday" in follow.lines(1)[0]
        _write(tmp_path / "performance_2026-01-02.log", _flow("after_midnight", ts="2026-01-02T00:00:00.100Z"))
        assert "after_midnight" in follow.lines(1)[0]
        _write(old, _flow("written_by_a_slower_process"))
        assert "written_by_a_slower_process" in follow.lines(1)[0]
        _write(tmp_path / "performance_2026-01-02.log", _flow("next"))
        assert "next" in follow.lines(1)[0]
    finally:
        code, err = follow.stop()
    assert code == 130 and "Traceback" not in err


def test_follow_across_rotation_and_truncation(tmp_path):
    """A followed file renamed away and recreated (logrotate) is read on in the new file; one truncated in
    place is read again from its start; nothing is shown twice."""
    log = tmp_path / "performance_2026-01-01.log"
    _write(log, _flow("first"))
    follow = Follow(log)
    try:
        assert "first" in follow.lines(1)[0]
        os.rename(log, tmp_path / "rotated.log.1")
        _write(tmp_path / "rotated.log.1", _flow("to_the_old_file"))
        _write(log, _flow("in_the_new_file"))
        got = "".join(follow.lines(2))
        assert "to_the_old_file" in got and "in_the_new_file" in got
        with open(log, "r+") as fh:       # copytruncate
            fh.truncate(0)
        time.sleep(0.5)
        _write(log, _flow("after_truncate"))
        assert "after_truncate" in follow.lines(1)[0]
        assert follow.quiet()
    finally:
        follow.stop()


def test_a_line_written_in_two_parts_is_shown_once_whole(tmp_path):
    """A record whose line arrives in two writes is printed once, when it is whole; two processes' records
    are told apart by their pid."""
    log = tmp_path / "performance_2026-01-01.log"
    _write(log, _flow("one", pid=111))
    follow = Follow(log)
    try:
        assert "one" in follow.lines(1)[0]
        line = json.dumps(_flow("halves", pid=222)) + "\n"
        _write(log, line[:40])
        assert follow.quiet(1.0)                 # several polls see half a line: nothing printed
        _write(log, line[40:])
        got = follow.lines(1)
        assert len(got) == 1 and got[0].split()[0] == "222" and "flow  halves 12.50ms success" in got[0]
        assert follow.quiet()
    finally:
        follow.stop()


def test_follow_lines_of_several_processes_in_one_file(tmp_path):
    """Forked workers and their parent write flows into one file while ``tail -f`` follows it: every flow is
    shown exactly once, whole, under the pid that wrote it."""
    prog = Program(tmp_path, """
        import multiprocessing, os, time
        def command(i):
            return i
        def work(n):
            for i in range(n):
                command(i)
                if i % 50 == 0:
                    time.sleep(0.05)
        if __name__ == "__main__":
            time.sleep(1.5)                     # tail is following by now
            ctx = multiprocessing.get_context("fork")
            workers = [ctx.Process(target=work, args=(300,)) for _ in range(3)]
            for w in workers:
                w.start()
            work(300)
            for w in workers:
                w.join()
    """, "targets:\n  - target: '__main__:command'\n    kind: flow\nsampler: {enabled: false}\n")   # flows only
    prog.log_dir.mkdir()
    follow = Follow(prog.log_dir, "-n", "0")
    try:
        proc = prog.run()
        assert proc.returncode == 0, proc.stderr
        got = follow.lines(1200, timeout=30)
        assert follow.quiet()
    finally:
        follow.stop()
    flows = [r for r in prog.records() if r["type"] == "flow_complete"]
    assert len(flows) == 1200 and len({r["pid"] for r in flows}) == 4
    assert len(got) == 1200
    pids = {r["pid"] for r in flows}
    first = next(i for i, line in enumerate(got) if line.split()[0].isdigit())   # the second process shows up
    by_pid = {}
    for i, line in enumerate(got):
        fields = line.split()
        if i >= first:                      # from then on each line carries the pid of the process that wrote it
            pid = int(fields.pop(0))
            assert pid in pids
            by_pid[pid] = by_pid.get(pid, 0) + 1
        assert fields[1:4] == ["INFO", "flow", "__main__.command"] and fields[5] == "success", line
    assert set(by_pid) == pids and all(n <= 300 for n in by_pid.values())
    assert sum(by_pid.values()) + first == 1200
