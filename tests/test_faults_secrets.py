"""Secrets never reach a record, stderr or the config cache (issue 19, item 4)."""
from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from autoperf import redact
from tests.faults import Program, clean_env, read_records

SECRET = "pw-S3CRET-xyz"


def files_under(directory):
    for base, _, names in os.walk(directory):
        for name in names:
            yield os.path.join(base, name)


def test_config_cache_holds_no_expanded_secret_and_is_private(tmp_path):
    """A config that reads a DSN from the environment is not cached (neither the value nor a hash
    of it lands on disk); what is cached is readable by the user alone (0600 in a 0700 directory)."""
    cache = tmp_path / "cache"
    env = clean_env(AUTOPERF_CONFIG_CACHE="1", AUTOPERF_CACHE_DIR=str(cache),
                    AP_DSN=f"postgresql://u:{SECRET}@127.0.0.1:1/db")
    with_env = tmp_path / "with_env.yaml"
    with_env.write_text("store: {dsn: '${AP_DSN}'}\n")
    plain = tmp_path / "plain.yaml"
    plain.write_text("service: s\n")
    for config in (with_env, plain, with_env, plain):
        done = subprocess.run([sys.executable, "-m", "autoperf", "validate", "--config", str(config)],
                              env=env, capture_output=True, text=True, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
    cached = list(files_under(cache))
    assert len(cached) == 1, cached              # the plain config only
    for path in cached:
        assert SECRET.encode() not in open(path, "rb").read()
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(cache).st_mode) == 0o700


def test_config_error_names_the_variable_never_its_value(tmp_path):
    """``buffer_records: ${D}`` with a non-number in D: the error names ``${D}``, not D's value."""
    config = tmp_path / "autoperf.yaml"
    config.write_text("log:\n  buffer_records: ${D}\n  dir: ${E:-x}\ntargets:\n  - target: '${T}'\n")
    done = subprocess.run([sys.executable, "-m", "autoperf", "validate", "--config", str(config)],
                          env=clean_env(D=SECRET, T=f"not a target {SECRET}"), capture_output=True,
                          text=True, cwd=tmp_path)
    assert done.returncode == 2
    assert SECRET not in done.stderr + done.stdout
    assert "log.buffer_records: expected an integer, got '${D}'" in done.stderr
    assert "targets[0].target: malformed target '${T}'" in done.stderr


@pytest.mark.parametrize("dsn", [
    f"postgresql://autoperf:{SECRET}@127.0.0.1:1/db",
    f"host=127.0.0.1 port=1 user=autoperf password={SECRET} dbname=db",
    f"host=127.0.0.1 port=1 user=autoperf password='{SECRET} x' dbname=db",
])
def test_db_cli_and_store_records_never_print_a_password(tmp_path, dsn):
    """``autoperf db status --dsn …`` and the store's ``store_unavailable`` record show
    ``host:port/db`` only, for URL and key=value DSNs alike."""
    done = subprocess.run([sys.executable, "-m", "autoperf", "db", "status", "--dsn", dsn, "--timeout", "2"],
                          env=clean_env(), capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 1
    assert "127.0.0.1:1/db" in done.stderr
    assert SECRET not in done.stderr + done.stdout
    prog = Program(tmp_path, "import time\ntime.sleep(1.5)\n",
                   "store: {dsn: '${AP_DSN}', connect_timeout_s: 0.5}\nsampler: {enabled: false}\n")
    run = subprocess.run(prog.autoperf_cmd(), cwd=tmp_path, env=clean_env(AP_DSN=dsn),
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    text = "".join(open(p, encoding="utf-8").read() for p in files_under(tmp_path / "logs") if p.endswith(".log"))
    assert "store_unavailable" in text and "127.0.0.1:1/db" in text
    assert SECRET not in text + run.stderr


def test_key_value_dsn_reaches_postgresql(tmp_path):
    """A libpq key=value DSN works where a URL does (asyncpg reads only URLs: it is converted)."""
    from tests.pgserver import dsn_parts, pg_dsn
    p = dsn_parts(pg_dsn())
    if p["host"].startswith("/"):
        pytest.skip("the test server listens on a unix socket")
    keywords = f"host={p['host']} port={p['port']} user={p['user']} dbname={p['database']}"
    if p["password"]:
        keywords += f" password='{p['password']}'"
    done = subprocess.run([sys.executable, "-m", "autoperf", "db", "status", "--dsn", keywords],
                          env=clean_env(), capture_output=True, text=True, cwd=tmp_path)
    assert f"database:        {p['host']}:{p['port']}/{p['database']}" in done.stdout, done.stderr


@pytest.mark.parametrize("host, path, expected", [
    ("hooks.slack.com", "/services/T0AAAAAAA/B0BBBBBBB/abcdefghijklmnopqrstuvwx",
     "/services/{team}/{channel}/{token}"),
    ("discord.com", "/api/v10/webhooks/1234567/tok_en-short", "/api/v10/webhooks/{id}/{token}"),
    ("discordapp.com", "/api/webhooks/1234567/tokenshort/messages/55", "/api/webhooks/{id}/{token}/messages/{id}"),
    ("api.telegram.org", "/bot123456:AAbbCC/sendMessage", "/bot{token}/sendMessage"),
    ("api.telegram.org", "/file/bot123456:AAbbCC/photos/a.jpg", "/file/bot{token}/photos/a.jpg"),
    ("acme.webhook.office.com", "/webhookb2/x/IncomingWebhook/y/z", "/webhookb2/{id}/IncomingWebhook/{token}/{owner}"),
    ("hooks.zapier.com", "/hooks/catch/123/abcdef/", "/hooks/catch/{account}/{token}/"),
    ("maker.ifttt.com", "/trigger/ev/with/key/shortkey", "/trigger/ev/with/key/{key}"),
    ("chat.example.org", "/hooks/abcdefgh", "/hooks/{token}"),
    ("example.com", "/users/42/profile?token=abc", "/users/{id}/profile"),
])
def test_known_webhook_and_bot_token_paths_are_templated(host, path, expected):
    """The secret parts of known webhook / bot-token URLs never reach an ``http`` span's path."""
    assert redact.http_path(path, host) == expected


USER_TEMPLATE = """
    import asyncio, aiohttp
    from aiohttp import web
    async def main():
        app = web.Application()
        app.router.add_get("/{tail:.*}", lambda request: web.Response(text="ok"))
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/v1/keys/shortKEY/usage") as resp:
                await resp.text()
        await runner.cleanup()
    asyncio.run(main())
"""


def test_user_path_templates_redact_segments_in_http_spans(tmp_path):
    """``redact.http_paths`` in autoperf.yaml replaces the named segments of matching requests."""
    prog = Program(tmp_path, USER_TEMPLATE, "redact: {http_paths: ['/v1/keys/{key}']}\n"
                                            "sampler: {enabled: false}\nretain: {all: true}\n")   # reads each span
    done = prog.run()
    assert done.returncode == 0, done.stderr
    paths = [r["attrs"]["path"] for r in prog.records() if r.get("kind") == "http"]
    assert paths == ["/v1/keys/{key}/usage"]
    assert "shortKEY" not in open(next(files_under(prog.log_dir))).read()
