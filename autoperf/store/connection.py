"""One connection of the PostgreSQL sink, and what a failure on it means.

``open_connection`` connects with the sink's server settings, sets TCP keepalive and
``TCP_USER_TIMEOUT`` (a vanished peer fails the connection), applies missing migrations (primary
connection only) and prepares the statements. ``is_transient`` tells "the server is not there (now)"
(reconnect, spill, replay later) from "this data is bad" (bisect the batch, keep the bad records).
Coroutines run on the sink's io loop; asyncpg is imported only when one runs.
"""
from __future__ import annotations

import asyncio

from autoperf.store import db

__all__ = ["is_transient", "open_connection"]


def is_transient(exc: BaseException, conn) -> bool:
    """True when ``exc`` means "the server is (temporarily) not there" rather than "this data is bad"."""
    if conn is None or conn.is_closed():
        return True
    if isinstance(exc, (OSError, asyncio.TimeoutError, ConnectionError, EOFError)):
        return True
    try:
        import asyncpg
    except ImportError:  # pragma: no cover
        return True
    if isinstance(exc, (asyncpg.InterfaceError, asyncpg.exceptions.ConnectionDoesNotExistError,
                        asyncpg.exceptions.PostgresConnectionError)):
        return True
    state = getattr(exc, "sqlstate", None) or ""
    # 08 connection, 40 serialization/deadlock, 53 resources, 57 operator intervention, 58 system,
    # 42P01/3F000 schema not there (yet), 55P03 lock not available
    return state[:2] in ("08", "40", "53", "57", "58") or state in ("42P01", "3F000", "55P03")


async def open_connection(dsn, *, connect_timeout, command_timeout, keepalive, migrate):
    """A prepared connection; ``migrate``: apply missing migrations first (the primary connection)."""
    import asyncpg

    conn = await asyncpg.connect(dsn, timeout=connect_timeout, command_timeout=command_timeout,
                                 server_settings={"temp_buffers": "64MB", "application_name": "autoperf-sink"})
    _keepalive(conn, keepalive, command_timeout)
    try:
        if migrate:
            await db.migrate(conn, rewrite_ok=False)
        await db.prepare_connection(conn)
    except BaseException:
        await conn.close()
        raise
    return conn


def _keepalive(conn, keepalive, command_timeout):
    """TCP keepalive, and TCP_USER_TIMEOUT so unacknowledged data fails the connection (Linux)."""
    import socket
    try:
        sock = conn._transport.get_extra_info("socket")
        if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
            return
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in (("TCP_KEEPIDLE", keepalive), ("TCP_KEEPINTVL", max(1, keepalive / 3)),
                            ("TCP_KEEPCNT", 3), ("TCP_USER_TIMEOUT", command_timeout * 1000)):
            if hasattr(socket, name):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), int(value))
    except (AttributeError, OSError):   # another transport, or an OS without these options
        pass
