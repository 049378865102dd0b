"""The daily outputs (seed 7.2, 7.3, 10.2): `autoperf report --send` and the running program's once-a-day send,
to a real SMTP server (aiosmtpd) and webhook receivers on 127.0.0.1; the day boundary is a fake clock's."""
from __future__ import annotations

import datetime as dt
import email
import email.policy
import json
import os
import random
import socket
import subprocess
import sys
import textwrap
import time

import orjson
import pytest

from autoperf.alerts.schedule import DailySchedule
from autoperf.analysis import synth
from tests.runs import ROOT, Run, clean_env
from tests.test_alerts import HookServer, wait_for

DAY = dt.datetime(2025, 1, 20)
UTC = dt.timezone.utc


@pytest.fixture
def smtp():
    """A plain SMTP server on 127.0.0.1 keeping the messages it receives."""
    controller = pytest.importorskip("aiosmtpd.controller")

    class Handler:
        def __init__(self):
            self.messages = []

        async def handle_DATA(self, server, session, envelope):
            self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
            return "250 OK"

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    handler = Handler()
    ctl = controller.Controller(handler, hostname="127.0.0.1", port=port)
    ctl.start()
    yield port, handler.messages
    ctl.stop()


@pytest.fixture
def hooks():
    srv = HookServer()
    yield srv
    srv.close()


def day_records(day, n, scale, seed, new_query=False):
    rng = random.Random(seed)
    recs = []
    for i in range(n):
        t = day + dt.timedelta(minutes=i * 7)
        ch = [("db.fetch", "db", rng.uniform(2, 4), synth.db_attrs("SELECT * FROM players WHERE id = $1", "fp1"))]
        if new_query:
            ch.append(("db.fetch", "db", 250.0, synth.db_attrs("SELECT * FROM matches ORDER BY played_at", "fpnew")))
        recs += synth.flow("queue_command", t, rng.uniform(80, 120) * scale, ch,
                           metadata={"command": "queue", "first_response_ms": 20.0})
        recs += synth.flow("profile_command", t, rng.uniform(20, 40), [])
    return recs


def write_days(log_dir, last_scale=1.0, days=((DAY, 8),)):
    """``days`` of logs ending with each given day (8 by default: 7 of baseline and the day)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    for end, count in days:
        for k in range(count):
            day = end - dt.timedelta(days=count - 1 - k)
            last = k == count - 1
            recs = day_records(day, 60, last_scale if last else 1.0, seed=k, new_query=last and last_scale > 1)
            (log_dir / f"performance_{day:%Y-%m-%d}.log").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in recs))


CONFIG = """
    service: ladder
    alerts:
      retry_base_s: 0.01
      channels:
        - {{type: email, name: mail, host: 127.0.0.1, port: {port}, starttls: false, to: [ops@test.local]}}
        - {{type: webhook, name: hook, url_env: AP_HOOK_URL}}
        - {{type: slack, name: chat, url_env: AP_CHAT_URL, min_severity: WARNING}}
      daily_summary:
        at: "{at}"
"""


def config(tmp_path, port, at="00:10"):
    path = tmp_path / "autoperf.yaml"
    path.write_text(textwrap.dedent(CONFIG.format(port=port, at=at)))
    return path


def send(tmp_path, cfg, day, hooks):
    env = clean_env(AP_HOOK_URL=hooks.url("/hook"), AP_CHAT_URL=hooks.url("/chat"))
    return subprocess.run([sys.executable, "-m", "autoperf", "report", "--send", "--day", day, "--log-dir",
                           str(tmp_path / "logs"), "--config", str(cfg)], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=120)


def test_report_send_mails_the_summary_and_posts_the_regressions(tmp_path, smtp, hooks):
    """A day 60 % slower than the 7 before, with a new 250-ms query: the summary (seed 7.2's contents, the
    regressions, the HTML report attached) by email and to the generic webhook; the regressions once to the
    alert channel that did not get the summary (Slack)."""
    port, mails = smtp
    write_days(tmp_path / "logs", last_scale=1.6)
    p = send(tmp_path, config(tmp_path, port), "2025-01-20", hooks)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "daily summary 2025-01-20 → mail: sent" in p.stdout and "regressions 2025-01-20 → chat: sent" in p.stdout
    (mail,) = mails
    assert mail["Subject"] == "[autoperf] daily summary ladder 2025-01-20"
    body, attachment = [part for part in mail.walk() if not part.is_multipart()]
    text = body.get_content()
    for expected in ("Total flows: 120", "Errors: 0 (0.00%)", "queue_command", "Slowest operations (p95):",
                     "Regressions vs the 7 days before", "flow queue_command: p50", "New slow queries: 1",
                     "SELECT * FROM matches ORDER BY played_at"):
        assert expected in text, expected
    assert attachment.get_filename() == "autoperf-report-2025-01-20.html"
    assert "<!DOCTYPE html>" in attachment.get_content()
    (summary,) = hooks.bodies("/hook")
    assert summary["type"] == "daily_summary" and summary["day"] == "2025-01-20" and summary["commands"] == 120
    assert summary["regressions"] >= 1 and "queue_command" in summary["text"]
    (chat,) = hooks.bodies("/chat")
    assert chat["text"].startswith("ladder: [WARNING] regressions on 2025-01-20")
    assert "flow queue_command" in chat["text"] and "SELECT * FROM matches" in chat["text"]


def test_a_quiet_day_sends_the_summary_and_no_regression(tmp_path, smtp, hooks):
    """The same traffic as the week before: the summary says "none"; no alert goes out."""
    port, mails = smtp
    write_days(tmp_path / "logs")
    p = send(tmp_path, config(tmp_path, port), "2025-01-20", hooks)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "regressions 2025-01-20: none" in p.stdout
    assert len(mails) == 1 and "credible): none" in mails[0].get_body(("plain",)).get_content()
    assert hooks.bodies("/chat") == []


def test_a_failed_delivery_is_reported_and_fails_the_command(tmp_path, smtp, hooks):
    """The webhook answers 500 every time: retried, then named as failed; the email still goes; exit 1."""
    port, mails = smtp
    write_days(tmp_path / "logs")
    hooks.statuses = [500] * 10
    p = send(tmp_path, config(tmp_path, port), "2025-01-20", hooks)
    assert p.returncode == 1
    assert "daily summary 2025-01-20 → hook: FAILED (HTTP 500)" in p.stdout and len(mails) == 1
    assert len(hooks.bodies("/hook")) == 4          # alerts.max_attempts


class FakeClock:
    def __init__(self, when):
        self.now = when.timestamp()

    def __call__(self):
        return self.now

    def set(self, when):
        self.now = when.timestamp()


def test_the_program_sends_each_day_once_at_the_configured_time(tmp_path, smtp, hooks, monkeypatch):
    """Driven by a fake clock: nothing before 00:10 UTC; at 00:10 the day before goes out (in a child process,
    the real `report --send`); not again — not by a second process sharing the log directory either; the
    next day without logs sends nothing; the wait until the next send is computed from the clock."""
    port, mails = smtp
    monkeypatch.setenv("AP_HOOK_URL", hooks.url("/hook"))
    monkeypatch.setenv("AP_CHAT_URL", hooks.url("/chat"))
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    logs = tmp_path / "logs"
    write_days(logs)
    records = []
    clock = FakeClock(dt.datetime(2025, 1, 21, 0, 5, tzinfo=UTC))
    schedule = DailySchedule(logs, config(tmp_path, port), at="00:10", clock=clock, emit=records.append)
    assert schedule.run_pending() is None and schedule.seconds_to_next(clock()) == 300
    clock.set(dt.datetime(2025, 1, 21, 0, 10, tzinfo=UTC))
    assert schedule.run_pending() == "2025-01-20"
    assert [m["Subject"] for m in mails] == ["[autoperf] daily summary ladder 2025-01-20"]
    assert records[-1]["type"] == "daily_summary" and records[-1]["ok"] is True
    clock.set(dt.datetime(2025, 1, 21, 9, 0, tzinfo=UTC))
    assert schedule.run_pending() is None
    other = DailySchedule(logs, config(tmp_path, port), at="00:10", clock=clock, emit=records.append)
    assert other.run_pending() is None                     # another process, the same directory
    assert schedule.seconds_to_next(clock()) == 15 * 3600 + 600
    clock.set(dt.datetime(2025, 1, 22, 0, 10, tzinfo=UTC))
    assert schedule.run_pending() is None                  # no log of 2025-01-21
    assert len(mails) == 1 and len(hooks.bodies("/hook")) == 1


def test_a_failed_day_is_tried_again_an_hour_later(tmp_path):
    """A send that fails (exit 1) is not marked sent: tried again after an hour, then once only."""
    write_days(tmp_path / "logs", days=((DAY, 1),))
    outcomes = [(1, "daily summary 2025-01-20 → mail: FAILED (ConnectionRefusedError)"), (0, "sent")]
    calls, records = [], []

    def run(day):
        calls.append(day)
        return outcomes[len(calls) - 1]
    clock = FakeClock(dt.datetime(2025, 1, 21, 0, 10, tzinfo=UTC))
    schedule = DailySchedule(tmp_path / "logs", at="00:10", clock=clock, run=run, emit=records.append)
    assert schedule.run_pending() == "2025-01-20" and records[-1]["ok"] is False
    assert "FAILED (ConnectionRefusedError)" in records[-1]["deliveries"][0]
    clock.set(dt.datetime(2025, 1, 21, 0, 40, tzinfo=UTC))
    assert schedule.run_pending() is None and schedule.seconds_to_next(clock()) == 1800
    clock.set(dt.datetime(2025, 1, 21, 1, 10, tzinfo=UTC))
    assert schedule.run_pending() == "2025-01-20" and records[-1]["ok"] is True
    clock.set(dt.datetime(2025, 1, 21, 5, 0, tzinfo=UTC))
    assert schedule.run_pending() is None and calls == ["2025-01-20", "2025-01-20"]


PROGRAM = """
    import json, os, time

    # a bot that runs a while: the daily summary of yesterday goes out from it (its `at` has passed)
    state = os.path.join(os.environ["APP_LOGS"], ".autoperf-daily.json")
    deadline = time.time() + 60
    while time.time() < deadline:
        if os.path.exists(state) and json.load(open(state)).get("sent"):
            break
        time.sleep(0.1)
"""


def test_the_running_program_sends_yesterdays_summary(tmp_path, smtp, hooks):
    """`autoperf run` of a program, with yesterday's log in its log directory and `at: 00:00`: the summary of
    yesterday is mailed from the running program, which records a `daily_summary` record."""
    port, mails = smtp
    yesterday = dt.datetime.now(UTC).replace(tzinfo=None) - dt.timedelta(days=1)
    run = Run(tmp_path, PROGRAM, "")
    write_days(run.log_dir, days=((yesterday.replace(hour=0, minute=0, second=0, microsecond=0), 1),))
    run.config.write_text(textwrap.dedent(CONFIG.format(port=port, at="00:00")))
    run.start(env={"APP_LOGS": str(run.log_dir), "AP_HOOK_URL": hooks.url("/hook"),
                   "AP_CHAT_URL": hooks.url("/chat")})
    day = f"{yesterday:%Y-%m-%d}"
    assert [m["Subject"] for m in mails] == [f"[autoperf] daily summary ladder {day}"]
    (rec,) = [r for r in run.records("daily_summary")]
    assert rec["day"] == day and rec["ok"] is True and rec["pid"]
