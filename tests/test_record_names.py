"""What records are named and what they say, from ``autoperf run`` subprocesses: HTTP spans per
endpoint, ``kind: db`` targets with rows and system."""
from __future__ import annotations

import collections

from test_cli_run import Program

HTTP_PROGRAM = """
    import asyncio, threading
    import aiohttp, httpx
    from aiohttp import web

    async def ok(request):
        return web.Response(text="ok")

    def serve(ready, box):
        loop = asyncio.new_event_loop()
        app = web.Application()
        app.router.add_get("/orders/{id}", ok)
        app.router.add_get("/report", ok)
        runner = web.AppRunner(app)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        box.append(site._server.sockets[0].getsockname()[1])
        ready.set()
        loop.run_forever()

    async def handle(base):
        async with aiohttp.ClientSession() as session:
            for path in ("/orders/17", "/orders/18", "/report"):
                async with session.get(base + path) as resp:
                    await resp.read()
        async with httpx.AsyncClient() as client:
            await client.get(base + "/orders/19")
            await client.get(base + "/report?x=1")

    if __name__ == "__main__":
        ready, box = threading.Event(), []
        threading.Thread(target=serve, args=(ready, box), daemon=True).start()
        ready.wait(10)
        asyncio.run(handle(f"http://127.0.0.1:{box[0]}"))
"""


def test_http_spans_are_named_by_method_and_path_template(tmp_path):
    """aiohttp and httpx spans are named ``METHOD /template``: ``/orders/{id}`` and ``/report`` are two rows, not one per host."""
    prog = Program(tmp_path, HTTP_PROGRAM, "targets:\n  - target: '__main__:handle'\n    kind: flow\n"
                   "retain: {all: true}     # the test reads each http span\n")
    proc = prog.run()
    assert proc.returncode == 0, proc.stderr
    http = [r for r in prog.records() if r["type"] == "span" and r["kind"] == "http"]
    assert collections.Counter(r["name"] for r in http) == {"GET /orders/{id}": 3, "GET /report": 2}
    assert {r["attrs"]["host"] for r in http} == {http[0]["attrs"]["host"]}
    assert http[0]["attrs"]["host"].startswith("127.0.0.1:")
    # the server side of each request is a flow of its own (integration aiohttp_web): take the client's
    flow = next(r for r in prog.records() if r["type"] == "flow_complete" and r["flow_name"] == "__main__.handle")
    assert [c["name"] for c in flow["checkpoints"]] == ["GET /orders/{id}"] * 2 + ["GET /report"] + \
        ["GET /orders/{id}", "GET /report"]


DB_PROGRAM = """
    import sqlite3
    import store

    if __name__ == "__main__":
        conn = sqlite3.connect(":memory:")
        conn.execute("CREATE TABLE players (id INTEGER, name TEXT)")
        conn.executemany("INSERT INTO players VALUES (?, ?)", [(i, f"p{i}") for i in range(5)])
        store.fetch_all(conn, "SELECT id FROM players WHERE id < ?", (3,))
        store.count(conn, "SELECT count(*) FROM players")
        store.Repo().rows_of("SELECT name FROM players")
        store.Repo().first("SELECT name FROM players WHERE id = 1")
"""
STORE = """
    def fetch_all(conn, query, params=()):
        return conn.execute(query, params).fetchall()

    def count(conn, query):
        return conn.execute(query).fetchone()[0]

    class Repo:
        def rows_of(self, query):
            return {"a": 1, "b": 2}

        def first(self, query):
            return "p1"
"""
DB_CONFIG = """
retain: {all: true}     # the test reads each db span's attrs
targets:
  - target: 'store:fetch_all'
    kind: db
    name: db.fetch_all
  - target: 'store:count'
    kind: db
    name: db.count
  - target: 'store:Repo.rows_of'
    kind: db
    name: db.rows_of
    system: mysql
  - target: 'store:Repo.first'
    kind: db
    name: db.first
"""


def test_db_targets_record_rows_and_system(tmp_path):
    """``kind: db`` targets record ``rows`` for a sized result and ``system`` when configured or known from the driver."""
    prog = Program(tmp_path, DB_PROGRAM, DB_CONFIG)
    (tmp_path / "store.py").write_text(__import__("textwrap").dedent(STORE))
    proc = prog.run()
    assert proc.returncode == 0, proc.stderr
    spans = {r["name"]: r["attrs"] for r in prog.records() if r["type"] == "span"}
    assert spans["db.fetch_all"]["rows"] == 3 and spans["db.fetch_all"]["system"] == "sqlite"
    assert spans["db.fetch_all"]["statement"].startswith("SELECT id FROM players")
    assert "rows" not in spans["db.count"] and spans["db.count"]["system"] == "sqlite"   # an int: not sized
    assert spans["db.rows_of"]["rows"] == 2 and spans["db.rows_of"]["system"] == "mysql"
    assert "rows" not in spans["db.first"] and "system" not in spans["db.first"]     # nothing to know it from
