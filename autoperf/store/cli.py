"""`autoperf db init|rollup|status` — registered by the main CLI via :func:`register`.

The DSN comes from ``--dsn``, else ``AUTOPERF_PG_DSN``, else ``store.dsn`` of the config file
(``--config``, else ``$AUTOPERF_CONFIG`` or ``./autoperf.yaml``). It is never printed: output names ``host:port/db`` only.
"""
from __future__ import annotations

import sys


def register(subparsers) -> None:
    """Add the ``db`` command (with ``init``, ``rollup``, ``status``) to an argparse subparsers object."""
    p = subparsers.add_parser("db", help="PostgreSQL store: schema, rollup, status",
                              description="Manage the PostgreSQL store (DSN from --dsn or AUTOPERF_PG_DSN).")
    sub = p.add_subparsers(dest="db_command", metavar="{init,rollup,status}")
    p.set_defaults(handler=_no_subcommand, _db_parser=p)

    def common(sp):
        sp.add_argument("--dsn", default=None, help="PostgreSQL DSN (default: $AUTOPERF_PG_DSN); never printed")
        sp.add_argument("--timeout", type=float, default=10.0, help="connection timeout in seconds")
        sp.add_argument("--config", default=None,
                        help="autoperf.yaml whose store.dsn to use when neither --dsn nor AUTOPERF_PG_DSN is given "
                             "(default: $AUTOPERF_CONFIG or ./autoperf.yaml when present)")

    sp = sub.add_parser("init", help="create or upgrade the schema (idempotent)")
    common(sp)
    sp.set_defaults(handler=cmd_init)

    sp = sub.add_parser("rollup", help="(re)compute performance_stats for a UTC day")
    common(sp)
    sp.add_argument("--date", default=None, help="YYYY-MM-DD (default: yesterday, UTC)")
    sp.set_defaults(handler=cmd_rollup)

    sp = sub.add_parser("status", help="schema version, partitions, rows, stats coverage")
    common(sp)
    sp.add_argument("--json", action="store_true", help="print JSON")
    sp.set_defaults(handler=cmd_status)


def _no_subcommand(args) -> int:
    args._db_parser.print_help(sys.stderr)
    return 2


def _dsn(args) -> str | None:
    from autoperf.store import resolve_dsn, settings

    dsn = resolve_dsn(getattr(args, "dsn", None))
    if not dsn:
        try:
            from autoperf.config import find_config, load_config

            path = find_config(getattr(args, "config", None))
            if path is not None:
                dsn = resolve_dsn(settings(load_config(path).data.get("store")).get("dsn"))
        except Exception as exc:  # noqa: BLE001
            print(f"autoperf db: cannot read config: {type(exc).__name__}", file=sys.stderr)
    if not dsn:
        print("autoperf db: no DSN: pass --dsn or set AUTOPERF_PG_DSN", file=sys.stderr)
        return None
    return dsn


def _run(args, work) -> int:
    """Connect, run ``work(conn)``, close; errors are printed without the DSN. Returns an exit code."""
    import asyncio

    from autoperf.store import db

    dsn = _dsn(args)
    if dsn is None:
        return 2
    where = db.describe_dsn(dsn)

    async def main():
        import asyncpg

        conn = await asyncpg.connect(dsn, timeout=args.timeout)
        try:
            return await work(conn, where)
        finally:
            await conn.close()

    try:
        return asyncio.run(main())
    except Exception as exc:  # noqa: BLE001
        from autoperf.redact import mask

        msg = mask(str(exc), dsn)
        print(f"autoperf db: {where}: {type(exc).__name__}: {msg[:300]}", file=sys.stderr)
        return 1


def cmd_init(args) -> int:
    from autoperf.store import db

    async def work(conn, where):
        done = await db.migrate(conn)
        version = (await db.applied_versions(conn))[-1]
        if done:
            print(f"{where}: applied migrations {', '.join(map(str, done))}; schema version {version}")
        else:
            print(f"{where}: schema up to date (version {version})")
        return 0

    return _run(args, work)


def cmd_rollup(args) -> int:
    import datetime as dt

    from autoperf.store import db

    try:
        day = (dt.date.fromisoformat(args.date) if args.date
               else dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=1))
    except ValueError:
        print(f"autoperf db rollup: bad --date {args.date!r} (want YYYY-MM-DD)", file=sys.stderr)
        return 2

    async def work(conn, where):
        await db.migrate(conn)
        n = await db.rollup(conn, day)
        print(f"{where}: performance_stats for {day}: {n} (flow, operation) rows")
        return 0

    return _run(args, work)


def cmd_status(args) -> int:
    import json

    from autoperf.store import db

    async def work(conn, where):
        st = await db.status(conn)
        if args.json:
            print(json.dumps({"database": where, **st}, default=str))
            return 0
        print(f"database:        {where}")
        print(f"schema version:  {st['schema_version']} (latest {st['latest_version']})")
        if st["schema_version"] is None:
            print("not initialised: run `autoperf db init`")
            return 1
        print(f"partitions:      {st['partitions']} ({st['first_partition']} .. {st['last_partition']})")
        rows = st["rows"] if st.get("rows") is not None else f"~{st['approx_rows']}"
        print(f"rows:            {rows}")
        print(f"newest record:   {st['newest_record']}")
        print(f"stats rows:      {st['stats_rows']} {' .. '.join(st['stats_dates'])}")
        return 0

    return _run(args, work)
