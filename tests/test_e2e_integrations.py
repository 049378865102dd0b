"""End to end under ``python -m autoperf run``: one flow touching every built-in integration.

A flow runs asyncpg queries, a thread-pool adapter call, a process-pool job, a blocking call and an
HTTP call; the records must form one correctly nested tree, with a ``loop_blocked`` event naming the
blocking line. Real PostgreSQL, real process pool, a real HTTP server on 127.0.0.1.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import orjson
import pytest

from tests.pgserver import pg_dsn

ROOT = Path(__file__).resolve().parents[1]

PROGRAM = '''
import asyncio, os, sqlite3, sys, threading, time
from concurrent.futures import ProcessPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import aiohttp
import asyncpg


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"stored"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Adapter:
    """A home-made sync DB adapter, run in the default thread pool."""

    def __init__(self):
        self.db = sqlite3.connect(":memory:", check_same_thread=False)

    def execute_query(self, query, params):
        return self.db.execute(query, params).fetchall()


def parse_replay(n):
    return sum(i * i for i in range(n))


async def report_match(user_id, pool, adapter, workers, url):
    loop = asyncio.get_running_loop()
    async with pool.acquire() as conn:
        await conn.fetchval("SELECT $1::int + 1", user_id)
    rows = await loop.run_in_executor(None, adapter.execute_query, "SELECT ? + 1", (user_id,))
    score = await loop.run_in_executor(workers, parse_replay, 20000)
    time.sleep(0.3)  # BLOCKING-LINE
    async with aiohttp.ClientSession() as session:
        async with session.get(url + "/upload?token=secret-token-123") as resp:
            await resp.read()
    return rows, score


async def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    pool = await asyncpg.create_pool(os.environ["E2E_DSN"], min_size=1, max_size=2)
    with ProcessPoolExecutor(max_workers=1) as workers:
        print(await report_match(7, pool, Adapter(), workers, url))
    await pool.close()
    server.shutdown()


asyncio.run(main())
'''

CONFIG = '''
retain: {all: true}     # every span of the tree, the pool worker's too (a worker cannot know its flow's rule)
loop: {blocking_threshold_ms: 100}
integrations:
  asyncpg: {pool_wait_span_ms: 0}   # every pool wait a span (the default records those over 1 ms)
targets:
  - target: "__main__:report_match"
    kind: flow
    capture: {user_id: user_id}
  - target: "__main__:Adapter.execute_query"
    kind: db
    statement_arg: query
  - target: "__main__:parse_replay"
'''


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    try:
        dsn = pg_dsn()
    except Exception as exc:  # pragma: no cover - no server and no throwaway one
        pytest.skip(f"no PostgreSQL: {exc}")
    tmp = tmp_path_factory.mktemp("e2e")
    (tmp / "prog.py").write_text(textwrap.dedent(PROGRAM))
    (tmp / "autoperf.yaml").write_text(CONFIG)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOPERF_")}
    env.update(PYTHONPATH=str(ROOT), E2E_DSN=dsn)
    proc = subprocess.run([sys.executable, "-m", "autoperf", "run", "--no-console", "--log-dir",
                           str(tmp / "logs"), "prog.py"], cwd=tmp, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    records = [orjson.loads(line) for pattern in ("performance_*.log", "flows_*.log")
               for path in (tmp / "logs").glob(pattern) for line in path.read_bytes().splitlines()]
    line = next(i for i, text in enumerate(PROGRAM.splitlines(), start=1) if "BLOCKING-LINE" in text)
    return records, proc, line, dsn


def test_one_tree_from_every_integration(run):
    """Every span of the flow, in this process and in the worker, hangs in one tree under the flow."""
    records, proc, _, _ = run
    flows = [r for r in records if r["type"] == "flow_complete"]
    assert [f["flow_name"] for f in flows] == ["__main__.report_match"] and flows[0]["user_id"] == 7
    flow_id = flows[0]["flow_id"]
    spans = {r["span_id"]: r for r in records if r["type"] == "span" and r["flow_id"] == flow_id}
    by_kind = {}
    for s in spans.values():
        by_kind.setdefault(s["kind"], []).append(s)
    # Every span's parent is a span of the same flow (or the flow itself): one connected tree.
    for s in spans.values():
        if s["span_id"] != flow_id:
            assert s["parent_id"] in spans, s
    pg = [s for s in by_kind["db"] if s["attrs"].get("system") == "postgresql"
          and s["attrs"].get("operation") == "SELECT"]
    assert any(s["attrs"]["statement"] == "SELECT $1::int + ?" for s in pg)
    assert any(s["kind"] == "wait" and s["name"] == "db.pool.acquire" for s in spans.values())
    adapter = [s for s in by_kind["db"] if s["name"].endswith("Adapter.execute_query")]
    assert len(adapter) == 1 and adapter[0]["attrs"]["statement"] == "SELECT ? + ?"
    # the adapter ran in a thread-pool job that is itself a child of the flow
    thread_job = spans[adapter[0]["parent_id"]]
    assert thread_job["kind"] == "job" and thread_job["attrs"]["executor"] == "thread"
    assert thread_job["parent_id"] == flow_id
    process_job = [s for s in by_kind["job"] if s["attrs"].get("executor") == "process"]
    assert len(process_job) == 1 and process_job[0]["parent_id"] == flow_id
    assert process_job[0]["attrs"]["worker_pid"] != flows[0]["pid"]
    worker_side = [s for s in spans.values() if s["name"] == "__main__.parse_replay" and s["kind"] == "span"]
    assert len(worker_side) == 1 and worker_side[0]["pid"] == process_job[0]["attrs"]["worker_pid"]
    http = by_kind["http"]
    assert len(http) == 1 and http[0]["parent_id"] == flow_id
    assert http[0]["attrs"]["status"] == 200 and http[0]["attrs"]["path"] == "/upload"


def test_blocking_line_is_named(run):
    """The time.sleep holding the loop is a loop_blocked event in that flow, naming its line."""
    records, _, line, _ = run
    flow_id = next(r["flow_id"] for r in records if r["type"] == "flow_complete")
    blocked = [r for r in records if r["type"] == "loop_blocked"]
    assert blocked, "no loop_blocked record"
    at_line = [r for r in blocked if r["location"].startswith(f"prog.py:{line} ")]
    assert len(at_line) == 1, [r["location"] for r in blocked]
    assert at_line[0]["duration_ms"] >= 250 and at_line[0]["sampled"] is True
    assert at_line[0]["flow_id"] == flow_id and at_line[0]["flow_name"] == "__main__.report_match"


def test_no_secrets_in_the_log(run):
    """Query-string tokens, SQL parameters and the DSN never reach the records."""
    records, _, _, dsn = run
    text = b"\n".join(orjson.dumps(r) for r in records).decode()
    assert "secret-token-123" not in text
    assert dsn not in text
