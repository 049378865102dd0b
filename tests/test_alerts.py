"""Alerts: rules (seed table 10.1), dedupe/rate limit, retry, real HTTP and SMTP(STARTTLS) receivers on 127.0.0.1."""
from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from autoperf.alerts import settings
from autoperf.alerts.engine import AlertEngine
from autoperf.alerts.rules import build_rules


# ---------------------------------------------------------------- receivers

class HookServer:
    """A real HTTP server on 127.0.0.1 recording POSTs; `statuses` lists the codes to answer in turn (then 200)."""

    def __init__(self, statuses=()):
        self.requests = []
        self.statuses = list(statuses)
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with outer.lock:
                    outer.requests.append((self.path, json.loads(body)))
                    code = outer.statuses.pop(0) if outer.statuses else 200
                self.send_response(code)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *a):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def bodies(self, path):
        with self.lock:
            return [b for p, b in self.requests if p == path]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def hooks():
    srv = HookServer()
    yield srv
    srv.close()


def wait_for(pred, timeout=10.0):
    """Poll pred() until true or timeout; return its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.02)
    return pred()


def engine(cfg, records):
    """An AlertEngine whose records go to the `records` list (instead of the pipeline)."""
    return AlertEngine(settings(cfg), emit=records.append)


def flow(ms, name="queue_command", **extra):
    return {"type": "flow_complete", "flow_kind": "flow", "flow_name": name, "flow_id": "00000000000000aa",
            "duration_ms": ms,
            "timestamp": "2025-01-20T15:30:45.123Z", "status": "success", **extra}


# ---------------------------------------------------------------- rules

def fired(rules, rec):
    return [ev["rule"] for r in rules if (ev := r.check(rec))]


def test_default_rules_table_10_1():
    """The defaults fire exactly on: command > 3000 ms, DB query > 500 ms, pool > 90 %, process queue > 10."""
    rules = build_rules(settings({}))
    assert fired(rules, flow(3000.0)) == []
    assert fired(rules, flow(3000.5)) == ["command_slow"]
    assert fired(rules, flow(9000.0, flow_kind="cycle")) == []     # a background cycle is not a command
    db_span = {"type": "span", "kind": "db", "name": "db.fetch", "duration_ms": 501.0, "attrs": {"fingerprint": "ab12"}}
    assert fired(rules, db_span) == ["db_query_slow"]
    assert fired(rules, dict(db_span, duration_ms=499.0)) == []
    assert fired(rules, dict(db_span, kind="http")) == []
    res = {"type": "resource", "db_pool": {"utilisation_pct": 95.0}, "process_pool": {"pending": 11}}
    assert sorted(fired(rules, res)) == ["db_pool_saturated", "process_pool_queue"]
    assert fired(rules, {"type": "resource", "db_pool": {"utilisation_pct": 90.0}, "process_pool": {"pending": 10}}) == []
    assert fired(rules, {"type": "resource"}) == []


def test_baseline_rule_uses_rolling_median_per_flow():
    """`command_baseline` waits for min samples, then fires above 2x the rolling median of that flow only."""
    cfg = settings({"rules": [{"name": "command_baseline", "baseline_min_samples": 5, "baseline_samples": 10}]})
    rule = [r for r in build_rules(cfg) if r.name == "command_baseline"][0]
    assert rule.check(flow(1000.0)) is None                  # no baseline yet
    for ms in (100, 110, 90, 105, 95):
        assert rule.check(flow(ms)) is None
    # history: 1000,100,110,90,105,95 -> median 102.5
    ev = rule.check(flow(206.0))
    assert ev and ev["baseline"] == 102.5 and ev["threshold"] == 205.0 and ev["key"] == "queue_command"
    assert rule.check(flow(204.0)) is None
    assert rule.check(flow(5000.0, name="other_command")) is None   # another flow has its own (empty) baseline


def test_baseline_median_follows_a_long_window_exactly():
    """Past the window size the baseline is the exact median of the last N values (evictions included)."""
    import random
    import statistics
    cfg = settings({"rules": [{"name": "command_baseline", "baseline_min_samples": 3, "baseline_samples": 7,
                               "min_value": 0}]})
    rule = [r for r in build_rules(cfg) if r.name == "command_baseline"][0]
    rng = random.Random(7)
    seen = []
    for _ in range(400):
        ms = float(rng.choice((10, 20, 20, 30, 45, 90, 200)) + rng.random())
        ev = rule.check(flow(ms))
        window = seen[-7:]
        expect = len(window) >= 3 and ms > 2.0 * statistics.median(window)
        assert (ev is not None) == expect
        if ev is not None:
            assert ev["baseline"] == round(statistics.median(window), 3)
        seen.append(ms)


def test_engine_checks_a_record_only_against_rules_of_its_type():
    """Rules with a `type` match never see other records; rules without one see every record type."""
    cfg = settings({"rules": [{"name": "any_type_slow", "match": {"name": "x"}, "above": 1, "key": "name"}]})
    engine = AlertEngine(cfg, start=False)
    for rec in ({"type": "span", "name": "x", "duration_ms": 5.0}, {"type": "custom", "name": "x", "duration_ms": 5.0},
                {"type": "resource", "name": "x", "duration_ms": 5.0}):
        engine.process(rec)
    engine.process({"type": "warning", "name": "x", "duration_ms": 5.0})   # autoperf's own records never alert
    assert engine.counters["events"] == 3 and engine._q.qsize() == 3
    assert [r.name for r in engine._rules_for_type["span"]] == ["db_query_slow", "any_type_slow"]


def test_rule_overrides_and_disable():
    """A rule with a default's name overrides fields; `disable` removes rules; custom rules match by path."""
    cfg = settings({"rules": [{"name": "command_slow", "above": 1000},
                              {"name": "cache_slow", "match": {"type": "span", "name": ["cache.get", "cache.set"]},
                               "above": 50, "severity": "WARNING", "key": "name"}],
                    "disable": ["db_query_slow"]})
    rules = build_rules(cfg)
    names = [r.name for r in rules]
    assert "db_query_slow" not in names and "cache_slow" in names
    assert fired(rules, flow(1500.0)) == ["command_slow"]
    assert fired(rules, {"type": "span", "name": "cache.set", "duration_ms": 51}) == ["cache_slow"]
    assert fired(rules, {"type": "span", "name": "cache.del", "duration_ms": 51}) == []


def test_check_many_gives_the_events_and_baselines_of_check_on_each_record():
    """A drain's unretained flows checked at once (check_many) fire the same events and leave the same
    baselines as one check per record in turn, odd values included."""
    import random
    rng = random.Random(14)
    cfg = settings({"rules": [{"name": "command_baseline", "baseline_min_samples": 5, "baseline_samples": 16},
                              {"name": "status_slow", "match": {"type": "flow_complete", "status": "error"},
                               "above": 50, "key": "flow_name"}]})
    one, many = build_rules(cfg), build_rules(cfg)
    for batch_no in range(60):
        batch = []
        for _ in range(rng.choice((1, 3, 40, 200))):
            ms = rng.choice((20.0, 60.0, 99.9, 100.0, 150.0, 400.0, 3500.0)) + rng.random()
            batch.append(flow(ms, name=rng.choice(("a", "b", "c")), status=rng.choice(("success", "error")),
                              flow_kind=rng.choice(("flow", "flow", "cycle"))))
        if batch_no % 7 == 3:
            batch.append(flow(None))
            batch.append(flow(float("nan")))
        expected = [(r.name, ev) for r in one for rec in batch if (ev := r.check(rec))]
        got = []
        for r in many:
            events = []
            r.check_many(batch, events)
            got += [(r.name, ev) for ev in events]
        key = lambda item: (item[0], item[1]["key"], item[1]["value"], item[1]["threshold"])   # noqa: E731
        assert sorted(got, key=key) == sorted(expected, key=key)
    assert [r.baselines() for r in many] == [r.baselines() for r in one]
    assert any(r.baselines() for r in many)


def test_observing_a_batch_queues_the_events_of_processing_each_record():
    """AlertEngine.observe over a mixed batch (spans, flows, resource samples, its own records, odd ones)
    queues the same events as process() on each record in turn."""
    cfg = settings({"rules": [{"name": "any_slow", "match": {"name": "x"}, "above": 1, "key": "name"}]})
    batch = [flow(3500.0), flow(20.0), {"type": "span", "kind": "db", "name": "db.q", "duration_ms": 700.0,
                                         "attrs": {"fingerprint": "f1"}},
             {"type": "span", "kind": "span", "name": "x", "duration_ms": 5.0},
             {"type": "resource", "db_pool": {"utilisation_pct": 95.0}, "process_pool": {"pending": 2}},
             {"type": "warning", "name": "x", "duration_ms": 9.0}, {"type": "span", "duration_ms": "slow"},
             {"type": "custom", "name": "x", "duration_ms": 2.0}]
    one, many = AlertEngine(cfg, start=False), AlertEngine(cfg, start=False)
    for rec in batch:
        one.process(rec)
    many.observe(batch)
    many.observe([{"type": ["odd"]}, flow(4000.0)])     # an unhashable type: record by record
    one.process({"type": ["odd"]})
    one.process(flow(4000.0))

    def queued(eng):
        out = []
        while not eng._q.empty():
            ev = eng._q.get_nowait()
            out.append((ev["rule"], ev["key"], ev["value"]))
        return sorted(out)
    expected = queued(one)
    assert queued(many) == expected
    assert ("command_slow", "queue_command", 3500.0) in expected and ("db_query_slow", "f1", 700.0) in expected
    assert ("any_slow", "x", 2.0) in expected and len(expected) == 6


def test_an_unretained_flow_alerts_through_the_engine_observing_batches(monkeypatch):
    """A flow the retention rules do not keep (sla rule off, no sample) fires command_slow for its 5-s
    duration, and no record is handed to the engine one by one: it observes each drain step's lists."""
    from autoperf import alerts, pipeline, spans
    from autoperf.metrics.retention import RetainSettings

    before = pipeline.stage().settings
    pipeline.configure_metrics(RetainSettings(all=False, sample_rate=0, rules={"sla": False}))
    records, seen = [], []
    original = AlertEngine.process
    monkeypatch.setattr(AlertEngine, "process", lambda self, rec: seen.append(rec.get("type")) or original(self, rec))
    alerts.install({"alerts": {"group_wait_s": 0.0}}, emit=records.append)
    try:
        s = spans.start("unkept_command", kind="flow")
        s.finish(duration_ns=5_000_000_000)
        pipeline.flush()
        assert wait_for(lambda: [r for r in records if r["type"] == "alert"])
    finally:
        alerts.uninstall()
        pipeline.configure_metrics(before)
    alert = [r for r in records if r["type"] == "alert"][0]
    assert (alert["rule"], alert["key"], alert["value"]) == ("command_slow", "unkept_command", 5000.0)
    assert seen == []


# ---------------------------------------------------------------- delivery

def test_dedupe_ten_violations_one_message_with_count(hooks, monkeypatch):
    """Ten violations of one rule+key within the group wait give one Discord message carrying count 10."""
    monkeypatch.setenv("AP_TEST_DISCORD", hooks.url("/discord/hook-token-aaa"))
    records = []
    eng = engine({"group_wait_s": 0.3, "window_s": 60,
                  "channels": [{"type": "discord", "url_env": "AP_TEST_DISCORD", "min_severity": "CRITICAL"}]}, records)
    try:
        for i in range(10):
            eng.process(flow(3100.0 + i))
        eng.process(flow(600.0, name="fast"))                # no violation
        assert wait_for(lambda: hooks.bodies("/discord/hook-token-aaa"))
        assert eng.idle(5)
        time.sleep(0.5)
    finally:
        eng.close()
    msgs = hooks.bodies("/discord/hook-token-aaa")
    assert len(msgs) == 1
    assert "10 occurrences" in msgs[0]["content"] and "worst 3109" in msgs[0]["content"]
    assert msgs[0]["allowed_mentions"] == {"parse": []}
    alerts = [r for r in records if r["type"] == "alert"]
    assert len(alerts) == 1 and alerts[0]["count"] == 10 and alerts[0]["rule"] == "command_slow"


def test_rate_limit_window_carries_suppressed_count(hooks, monkeypatch):
    """After a message, further occurrences wait for the window's end and arrive as one message with their count."""
    monkeypatch.setenv("AP_TEST_SLACK", hooks.url("/slack"))
    records = []
    eng = engine({"group_wait_s": 0.05, "window_s": 0.8,
                  "channels": [{"type": "slack", "url_env": "AP_TEST_SLACK"}]}, records)
    try:
        eng.process(flow(4000.0))
        assert wait_for(lambda: len(hooks.bodies("/slack")) == 1)
        for _ in range(4):
            eng.process(flow(4200.0))
        time.sleep(0.3)
        assert len(hooks.bodies("/slack")) == 1             # suppressed inside the window
        assert wait_for(lambda: len(hooks.bodies("/slack")) == 2, timeout=5)
    finally:
        eng.close()
    first, second = hooks.bodies("/slack")
    assert "1 occurrence" in first["text"] and "4 occurrences" in second["text"]
    assert "[CRITICAL] command_slow queue_command" in first["text"]


def test_retry_500_twice_then_delivered_once(monkeypatch):
    """A receiver answering 500, 500, 200 gets the message delivered once after exactly 3 attempts."""
    srv = HookServer(statuses=[500, 500])
    monkeypatch.setenv("AP_TEST_HOOK", srv.url("/generic"))
    records = []
    eng = engine({"group_wait_s": 0.0, "retry_base_s": 0.05, "max_attempts": 4,
                  "channels": [{"type": "webhook", "url_env": "AP_TEST_HOOK"}]}, records)
    try:
        eng.process({"type": "resource", "db_pool": {"utilisation_pct": 97.5}})
        assert wait_for(lambda: eng.counters["delivered"] == 1)
        assert eng.idle(5)
    finally:
        eng.close()
        srv.close()
    assert len(srv.requests) == 3
    assert [b["rule"] for _, b in srv.requests] == ["db_pool_saturated"] * 3
    assert eng.counters["attempts"] == 3 and eng.counters["delivered"] == 1
    assert srv.requests[-1][1]["value"] == 97.5 and srv.requests[-1][1]["count"] == 1
    assert not [r for r in records if r["type"] == "warning"]


def test_failed_delivery_is_a_warning_record_without_secret(monkeypatch, capfd):
    """A delivery that keeps failing becomes one warning record; the secret URL is in no record and not on stderr."""
    secret = "T0PSECRET-webhook-token-9f8e7d"
    with socket.socket() as s:                             # a port nobody listens on: connection refused
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    monkeypatch.setenv("AP_TEST_DEAD", f"http://127.0.0.1:{dead_port}/api/webhooks/{secret}")
    srv = HookServer(statuses=[500] * 10)
    monkeypatch.setenv("AP_TEST_500", srv.url(f"/hooks/{secret}"))
    records = []
    eng = engine({"group_wait_s": 0.0, "retry_base_s": 0.02, "max_attempts": 3,
                  "channels": [{"type": "discord", "name": "dead", "url_env": "AP_TEST_DEAD"},
                               {"type": "slack", "name": "err", "url_env": "AP_TEST_500"}]}, records)
    try:
        eng.process(flow(9999.0))
        assert wait_for(lambda: eng.counters["failed"] == 2)
        assert eng.idle(5)
    finally:
        eng.close()
        srv.close()
    warnings = [r for r in records if r["type"] == "warning"]
    assert sorted(w["channel"] for w in warnings) == ["dead", "err"]
    assert all(w["code"] == "alert_delivery_failed" and w["attempts"] == 3 for w in warnings)
    msg = {w["channel"]: w["message"] for w in warnings}
    assert "ConnectionRefusedError" in msg["dead"] and "HTTP 500" in msg["err"]
    dump = json.dumps(records) + repr(eng.channels) + repr(eng.counters)
    out = capfd.readouterr()
    assert secret not in dump and secret not in out.err and secret not in out.out
    assert len(srv.requests) == 3


def test_missing_env_var_disables_channel_with_warning(monkeypatch):
    """A channel whose url_env is unset is disabled with a warning naming the variable, and alerts still become records."""
    monkeypatch.delenv("AP_TEST_UNSET", raising=False)
    records = []
    eng = engine({"group_wait_s": 0.0, "channels": [{"type": "slack", "url_env": "AP_TEST_UNSET"}]}, records)
    try:
        eng.process(flow(5000.0))
        assert wait_for(lambda: [r for r in records if r["type"] == "alert"])
    finally:
        eng.close()
    w = [r for r in records if r["type"] == "warning"]
    assert w and w[0]["code"] == "alert_channel_disabled" and "AP_TEST_UNSET" in w[0]["message"]
    assert [r for r in records if r["type"] == "alert"][0]["channels"] == []


def test_severity_floor_routes_warning_only_to_slack(hooks, monkeypatch):
    """A WARNING alert goes to the channel with min_severity WARNING, not to the CRITICAL-only one."""
    monkeypatch.setenv("AP_D", hooks.url("/d"))
    monkeypatch.setenv("AP_S", hooks.url("/s"))
    eng = engine({"group_wait_s": 0.0, "channels": [
        {"type": "discord", "url_env": "AP_D", "min_severity": "CRITICAL"},
        {"type": "slack", "url_env": "AP_S", "min_severity": "WARNING"}]}, [])
    try:
        eng.process({"type": "span", "kind": "db", "name": "db.fetch", "duration_ms": 800.0,
                     "attrs": {"fingerprint": "f00d"}})
        assert wait_for(lambda: hooks.bodies("/s"))
        assert eng.idle(5)
    finally:
        eng.close()
    assert hooks.bodies("/d") == []
    assert "db_query_slow f00d" in hooks.bodies("/s")[0]["text"]


def test_processor_is_cheap_and_never_raises():
    """process() returns the record itself, survives odd records, and costs well under 20 µs per record."""
    eng = engine({"group_wait_s": 0.0}, [])
    try:
        odd = [{}, {"type": "span", "duration_ms": "slow"}, {"type": "resource", "db_pool": "n/a"},
               {"type": "flow_complete", "duration_ms": float("nan")}, {"type": None, "kind": ["x"]}]
        for rec in odd:
            assert eng.process(rec) is rec
        rec = {"type": "span", "kind": "db", "name": "db.fetch", "duration_ms": 3.0, "attrs": {"fingerprint": "a"}}
        n = 20000
        t0 = time.thread_time()     # CPU of this thread: a loaded machine does not make it look slow
        for _ in range(n):
            eng.process(rec)
        per = (time.thread_time() - t0) / n
    finally:
        eng.close()
    assert per < 20e-6, per


# ---------------------------------------------------------------- email (STARTTLS + AUTH)

@pytest.fixture
def smtp_tls(tmp_path):
    """aiosmtpd on 127.0.0.1 requiring STARTTLS and AUTH (self-signed certificate made with openssl)."""
    aiosmtpd = pytest.importorskip("aiosmtpd.controller")
    from aiosmtpd.smtp import AuthResult, LoginPassword

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    try:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                        "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                       check=True, capture_output=True, timeout=60)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"openssl cannot make a certificate: {exc}")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(cert), str(key))

    class Handler:
        def __init__(self):
            self.messages = []

        async def handle_DATA(self, server, session, envelope):
            self.messages.append((envelope.mail_from, list(envelope.rcpt_tos),
                                  envelope.content.decode("utf-8", "replace"), session.ssl is not None))
            return "250 OK"

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and auth_data.login == b"alerts" and \
            auth_data.password == b"smtp-Pa55-word-xyz"
        return AuthResult(success=ok, handled=False)  # handled=False: the server answers 535 itself

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    handler = Handler()
    ctl = aiosmtpd.Controller(handler, hostname="127.0.0.1", port=port, tls_context=ctx, require_starttls=True,
                              auth_required=True, auth_require_tls=True, authenticator=authenticator)
    ctl.start()
    yield {"port": port, "cert": str(cert), "handler": handler}
    ctl.stop()


def test_email_over_starttls_with_login(smtp_tls, monkeypatch, capfd):
    """An alert is mailed over STARTTLS with AUTH to a real SMTP server; the password appears nowhere."""
    monkeypatch.setenv("AP_SMTP_PW", "smtp-Pa55-word-xyz")
    records = []
    eng = engine({"group_wait_s": 0.0, "channels": [{
        "type": "email", "host": "127.0.0.1", "port": smtp_tls["port"], "starttls": True, "username": "alerts",
        "password_env": "AP_SMTP_PW", "from": "autoperf@test.local", "to": ["oncall@test.local"],
        "ca_file": smtp_tls["cert"], "min_severity": "WARNING"}]}, records)
    try:
        eng.process(flow(3500.0))
        assert wait_for(lambda: smtp_tls["handler"].messages)
        assert eng.idle(5)
    finally:
        eng.close()
    mail_from, rcpts, content, over_tls = smtp_tls["handler"].messages[0]
    assert (mail_from, rcpts, over_tls) == ("autoperf@test.local", ["oncall@test.local"], True)
    assert "Subject: [autoperf CRITICAL] command_slow queue_command" in content
    assert eng.counters["delivered"] == 1
    out = capfd.readouterr()
    assert "smtp-Pa55-word-xyz" not in json.dumps(records) + out.err + out.out


def test_email_wrong_password_fails_without_leaking(smtp_tls, monkeypatch, capfd):
    """A rejected SMTP login is a non-retried failure reported as a warning that does not contain the password."""
    monkeypatch.setenv("AP_SMTP_PW", "wrong-Secret-123456")
    records = []
    eng = engine({"group_wait_s": 0.0, "retry_base_s": 0.01, "channels": [{
        "type": "email", "host": "127.0.0.1", "port": smtp_tls["port"], "username": "alerts",
        "password_env": "AP_SMTP_PW", "to": ["oncall@test.local"], "ca_file": smtp_tls["cert"]}]}, records)
    try:
        eng.process(flow(3500.0))
        assert wait_for(lambda: eng.counters["failed"] == 1), (eng.counters, records)
    finally:
        eng.close()
    w = [r for r in records if r["type"] == "warning"][0]
    assert "SMTP 535" in w["message"] and w["attempts"] == 1
    out = capfd.readouterr()
    assert "wrong-Secret-123456" not in json.dumps(records) + out.err + out.out
    assert smtp_tls["handler"].messages == []


# ---------------------------------------------------------------- through the real pipeline

def test_install_runs_as_pipeline_processor(hooks, monkeypatch):
    """install() registers the rule processor with the real pipeline: an emitted slow flow reaches the webhook."""
    pipeline = pytest.importorskip("autoperf.pipeline")
    if not hasattr(pipeline, "add_processor"):
        pytest.skip("pipeline.add_processor not available yet")
    from autoperf import alerts

    monkeypatch.setenv("AP_PIPE_HOOK", hooks.url("/pipe"))

    class ListSink:
        def __init__(self):
            self.records = []

        def write(self, recs):
            self.records.extend(recs)

        def flush(self):
            pass

        def close(self):
            pass

    sink = ListSink()
    pipeline.add_sink(sink)
    eng = alerts.install({"alerts": {"group_wait_s": 0.0,
                                     "channels": [{"type": "webhook", "url_env": "AP_PIPE_HOOK"}]}})
    try:
        assert eng is not None
        pipeline.emit(flow(4321.0))
        pipeline.flush()
        assert wait_for(lambda: hooks.bodies("/pipe"))
        from autoperf import spans                            # a real flow span, as the runner makes them
        s = spans.start("slow_command", kind="flow")
        s.finish(duration_ns=5_000_000_000)
        pipeline.flush()
        assert wait_for(lambda: len(hooks.bodies("/pipe")) == 2)
        assert wait_for(lambda: (pipeline.flush(), [r for r in sink.records if r.get("type") == "alert"])[1])
    finally:
        alerts.uninstall()
        pipeline.remove_sink(sink)
    first, second = hooks.bodies("/pipe")
    assert first["value"] == 4321.0
    assert (second["rule"], second["key"], second["value"]) == ("command_slow", "slow_command", 5000.0)
    assert eng.observe not in pipeline._observers
    assert threading.current_thread() is threading.main_thread()
    assert sys.modules.get("autoperf.alerts.engine") is not None


def test_alerts_section_validates_with_config_loader(tmp_path):
    """The `alerts:` CONFIG_SCHEMA fills defaults and rejects a webhook channel given without url_env."""
    config = pytest.importorskip("autoperf.config")
    good = tmp_path / "autoperf.yaml"
    good.write_text("alerts:\n  rules:\n    - {name: command_slow, above: 2000}\n"
                    "  channels:\n    - {type: discord, url_env: AUTOPERF_DISCORD_WEBHOOK}\n")
    data = config.load_config(str(good)).data["alerts"]
    assert data["window_s"] == 300 and data["channels"][0]["min_severity"] == "WARNING"
    assert [r.above for r in build_rules(settings(data)) if r.name == "command_slow"] == [2000.0]
    bad = tmp_path / "bad.yaml"
    bad.write_text("alerts:\n  channels:\n    - {type: slack, url: 'https://hooks.slack.com/services/T/B/X'}\n")
    with pytest.raises(config.ConfigError) as err:
        config.load_config(str(bad))
    assert "alerts.channels[0]" in str(err.value)


def test_idle_delivery_thread_sleeps_until_something_is_due():
    """With nothing pending the delivery thread does not poll (each wake-up costs CPU in every
    monitored process); an event still gets delivered after group_wait."""
    records = []
    eng = AlertEngine(settings({"group_wait_s": 0.2}), emit=records.append, start=False)
    ticks = []
    real_tick = eng._tick
    eng._tick = lambda final=False: (ticks.append(time.monotonic()), real_tick(final))
    eng.start()
    try:
        time.sleep(1.6)
        assert len(ticks) <= 1, ticks          # polled every 0.5 s before: 3
        eng.process(flow(9000.0))              # over the default flow rule's limit
        deadline = time.monotonic() + 5
        while not records and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        eng.close()
    assert records and records[0]["type"] == "alert", records


# ---------------------------------------------------------------- the baseline rule in real runs

BASELINE_PROGRAM = """
    import sys, time

    def handle(ms):
        time.sleep(ms / 1000)

    for ms in [float(x) for x in sys.argv[1].split(",")]:
        handle(ms)
"""
BASELINE_CONFIG = """
    targets:
      - target: "__main__:handle"
        name: handle
        kind: flow
    sampler: {enabled: false}
    alerts: {group_wait_s: 0}
"""


def test_baseline_alert_has_a_floor_and_survives_a_restart(tmp_path):
    """8 ms against a ~2 ms median is no alert (the built-in floor is 100 ms); after a restart the first
    300 ms call is compared with the baseline the previous run saved, and alerts."""
    from tests.runs import Run

    run = Run(tmp_path, BASELINE_PROGRAM, BASELINE_CONFIG)
    run.start(",".join(["2"] * 25 + ["8"]))
    assert [r["rule"] for r in run.records("alert")] == []
    saved = json.loads((run.log_dir / ".autoperf-alert-baselines.json").read_text())
    assert len(saved["baselines"]["command_baseline"]["handle"]) == 26
    run.start("300")
    (alert,) = run.records("alert")
    assert alert["rule"] == "command_baseline" and alert["key"] == "handle" and alert["value"] >= 300
    assert 2 <= alert["baseline"] < 8


def test_alert_record_lists_delivered_and_failed_channels_apart(hooks, monkeypatch):
    """The ``alert`` record is written once each channel has answered: ``channels`` holds those the
    message reached, ``failed`` those it never reached (a refused connection, after the retries)."""
    monkeypatch.setenv("AP_OK", hooks.url("/ok"))
    monkeypatch.setenv("AP_DOWN", "http://127.0.0.1:1/down")     # nothing listens on port 1
    records = []
    eng = engine({"group_wait_s": 0.0, "max_attempts": 2, "retry_base_s": 0.05, "channels": [
        {"type": "slack", "name": "reachable", "url_env": "AP_OK"},
        {"type": "webhook", "name": "unreachable", "url_env": "AP_DOWN"}]}, records)
    try:
        eng.process(flow(5000.0))
        assert wait_for(lambda: [r for r in records if r["type"] == "alert"])
    finally:
        eng.close()
    (alert,) = [r for r in records if r["type"] == "alert"]
    assert alert["channels"] == ["reachable"] and alert["failed"] == ["unreachable"]
    assert len(hooks.bodies("/ok")) == 1
