"""The daily summary from the running program: once a day, at ``alerts.daily_summary.at`` (UTC), the summary of
the day before is sent by ``autoperf report --send --day D`` in a child process — reading a day of logs must
not take the program's CPU, GIL or memory — that autoperf does not instrument. A day is sent once: the log
directory's ``.autoperf-daily.json`` says which days went out (a restart after ``at`` sends a missed yesterday;
several processes sharing the directory send it once, under a file lock). The clock is a parameter.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import threading
import time

from autoperf import threads

__all__ = ["DailySchedule", "start", "STATE_FILE"]

STATE_FILE = ".autoperf-daily.json"
RETRY_S = 3600.0            # a failed send is tried again this much later
RUN_TIMEOUT_S = 3600.0


def start(cfg: dict, log_dir: str, config_path) -> "DailySchedule | None":
    """The schedule of the program's process, started; None when nothing would receive a summary."""
    from autoperf.alerts import daily
    d = cfg["daily_summary"]
    if not d.get("enabled", True):
        return None
    probe = {"rule": "regression", "severity": "WARNING"}
    if not daily.summary_channels(cfg) and not (d.get("regressions") and daily.regression_channels(cfg, probe)):
        return None
    schedule = DailySchedule(log_dir, config_path, at=d.get("at") or "00:10")
    schedule.start()
    return schedule


def _emit(record: dict) -> None:
    from autoperf import pipeline
    pipeline.emit(record)


class DailySchedule:
    """``run_pending()`` sends what is due now (the clock's now); ``start()`` runs it in a thread, waking when
    the next day is due. ``clock`` returns epoch seconds; ``run(day) -> (exit code, output)`` sends one day."""

    def __init__(self, log_dir, config_path=None, at: str = "00:10", clock=time.time, run=None, emit=_emit):
        self.log_dir = os.path.abspath(os.fspath(log_dir))
        self.config_path = os.fspath(config_path) if config_path else None
        hour, minute = (int(x) for x in at.split(":"))
        self.at = dt.timedelta(hours=hour, minutes=minute)
        self.clock = clock
        self.run = run or self._run_report
        self.emit = emit
        self.retry_at: dict = {}            # day -> clock time before which a failed day is not tried again
        self._stop = threading.Event()
        self._thread = None

    # ------------------------------------------------------------------ when
    def _today(self, now: float) -> dt.datetime:
        return dt.datetime.fromtimestamp(now, dt.timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)

    def due_day(self, now: float) -> str | None:
        """The day whose summary is due at ``now`` (the day before, from ``at`` on), if it has a log and was not
        sent; only the latest day: a program down for a week does not send seven summaries."""
        today = self._today(now)
        if now < (today + self.at).timestamp():
            return None
        day = (today - dt.timedelta(days=1)).date().isoformat()
        if now < self.retry_at.get(day, 0) or day in self._state().get("sent", {}):
            return None
        if not any(os.path.exists(os.path.join(self.log_dir, f"performance_{day}.log{ext}")) for ext in ("", ".gz")):
            return None
        return day

    def seconds_to_next(self, now: float) -> float:
        """Until the next moment something can be due (today's ``at``, tomorrow's, or a retry)."""
        today = self._today(now)
        nxt = (today + self.at).timestamp()
        if nxt <= now:
            nxt = (today + dt.timedelta(days=1) + self.at).timestamp()
        retries = [t for t in self.retry_at.values() if t > now]
        return max(1.0, min([nxt] + retries) - now)

    # ------------------------------------------------------------------ what
    def run_pending(self) -> str | None:
        """Send the due day (blocking: the report runs in a child process); the day sent, or None."""
        now = self.clock()
        day = self.due_day(now)
        if day is None or not self._claim(day, now):
            return None
        code, output = self.run(day)
        ok = code == 0
        self._finish(day, ok)
        if not ok:
            self.retry_at[day] = now + RETRY_S
        lines = [line for line in output.splitlines() if line.strip()]
        self.emit({"type": "daily_summary", "level": "INFO" if ok else "WARNING", "day": day, "ok": ok,
                   "exit_code": code, "deliveries": lines[-20:]})
        return day

    def _run_report(self, day: str) -> tuple[int, str]:
        cmd = [sys.executable, "-m", "autoperf", "report", "--send", "--day", day, "--log-dir", self.log_dir]
        if self.config_path:
            cmd += ["--config", self.config_path]
        env = dict(os.environ)
        env.pop("AUTOPERF_CHILD", None)       # not instrumented: its reading is not the program's work
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
                                  stdin=subprocess.DEVNULL)
        except (OSError, subprocess.SubprocessError) as exc:
            return -1, type(exc).__name__
        return proc.returncode, proc.stdout + proc.stderr

    # ------------------------------------------------------------------ once per day, whoever sends it
    def _state(self) -> dict:
        try:
            with open(os.path.join(self.log_dir, STATE_FILE), encoding="utf-8") as f:
                state = json.load(f)
            return state if isinstance(state, dict) else {}
        except (OSError, ValueError):
            return {}

    def _update(self, change) -> bool:
        """Apply ``change(state) -> bool`` under an exclusive lock and write the state when it returns True."""
        try:
            import fcntl
        except ImportError:         # no flock (Windows): one process per log directory is assumed
            fcntl = None
        os.makedirs(self.log_dir, exist_ok=True)
        with open(os.path.join(self.log_dir, STATE_FILE + ".lock"), "a") as lock:
            if fcntl is not None:
                fcntl.flock(lock, fcntl.LOCK_EX)
            state = self._state()
            if not change(state):
                return False
            tmp = os.path.join(self.log_dir, f"{STATE_FILE}.{os.getpid()}.tmp")
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(state, f)
            os.replace(tmp, os.path.join(self.log_dir, STATE_FILE))
            return True

    def _claim(self, day: str, now: float) -> bool:
        def claim(state):
            if day in state.get("sent", {}):
                return False
            other = state.get("sending", {}).get(day)
            if other and other.get("pid") != os.getpid() and now - other.get("since", 0) < RUN_TIMEOUT_S:
                return False            # another process is sending it
            state.setdefault("sending", {})[day] = {"pid": os.getpid(), "since": now}
            return True
        return self._update(claim)

    def _finish(self, day: str, ok: bool) -> None:
        def finish(state):
            state.get("sending", {}).pop(day, None)
            if ok:
                state.setdefault("sent", {})[day] = dt.datetime.fromtimestamp(
                    self.clock(), dt.timezone.utc).isoformat(timespec="seconds")
                for old in sorted(state["sent"])[:-30]:     # a month is enough to remember
                    del state["sent"][old]
            return True
        self._update(finish)

    # ------------------------------------------------------------------ the thread
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="autoperf-daily", daemon=True)
        threads.start(self._thread)

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_pending()
            except Exception as exc:  # noqa: BLE001 - never break the host
                from autoperf import diagnostics
                diagnostics.internal_error("daily summary", exc)
            self._stop.wait(self.seconds_to_next(self.clock()))
