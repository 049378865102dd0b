"""PostgreSQL store: migrations, a batching COPY sink, daily rollup (docs/store.md).

Light at import time: asyncpg is imported only when a sink or a command actually runs.
"""
from __future__ import annotations

import os

DEFAULTS = {
    "dsn": "",
    "batch_records": 10000,
    "flush_interval_ms": 1000,
    "max_buffer_records": 200000,
    "rollup": True,
    "connect_timeout_s": 5.0,
    "retry_max_s": 10.0,
    "max_spill_mb": 1024,
    "connections": 2,
    "command_timeout_s": 30.0,
    "keepalive_s": 10.0,
}

from autoperf.config.schema import Bool, Field, Float, Int, Obj, Str, with_defaults

CONFIG_SCHEMA = Obj({
    "dsn": Field(Str(), default="", doc="PostgreSQL DSN; empty = store disabled. Usually "
                 "`${AUTOPERF_PG_DSN:-}` so the secret stays in the environment. Never printed."),
    "batch_records": Field(Int(min=1), default=10000, doc="Most records per COPY batch."),
    "flush_interval_ms": Field(Int(min=10), default=1000, doc="Longest time a record waits before its batch is written."),
    "max_buffer_records": Field(Int(min=100), default=200000,
                                doc="Records held in memory for the sink; beyond that they are dropped and counted."),
    "rollup": Field(Bool(), default=True, doc="Compute performance_stats for the previous UTC day once a day."),
    "connect_timeout_s": Field(Float(min=0.1), default=5.0, doc="Timeout of one connection attempt."),
    "retry_max_s": Field(Float(min=0.1), default=10.0, doc="Longest pause between reconnection attempts."),
    "connections": Field(Int(min=1), default=2,
                         doc="Connections a big batch is split across (inserted in parallel)."),
    "max_spill_mb": Field(Float(min=1), default=1024,
                          doc="Largest spill file (records kept on disk while PostgreSQL is unreachable)."),
    "command_timeout_s": Field(Float(min=0.1), default=30.0,
                               doc="A batch, replay or rollup that takes longer means the connection has stalled "
                                   "(a silent network partition): it is dropped, the batch spilled and replayed later."),
    "keepalive_s": Field(Float(min=1), default=10.0,
                         doc="TCP keepalive of the sink's connections: a peer that stopped answering is found after "
                             "about this long idle plus three probes (TCP_USER_TIMEOUT: command_timeout_s)."),
})


def settings(section: dict | None) -> dict:
    """The `store:` section with defaults applied."""
    return with_defaults(DEFAULTS, section)


def resolve_dsn(dsn: str | None = None) -> str:
    """An explicit DSN, else ``AUTOPERF_PG_DSN`` from the environment, else ''; a libpq
    ``key=value`` DSN becomes the ``postgresql://`` URL asyncpg reads."""
    from autoperf.redact import url_dsn

    return url_dsn((dsn or os.environ.get("AUTOPERF_PG_DSN") or "").strip())


def start_from_config(config_data: dict, log_dir, register: bool = True) -> "object | None":
    """Create and start a :class:`PostgresSink` when `store.dsn` (or AUTOPERF_PG_DSN) is set, register it
    with ``pipeline.add_sink`` (idempotent, so adding it again is harmless) and return it.

    Returns None when no DSN is configured. Never raises: a failure is reported as a warning.
    """
    try:
        cfg = settings((config_data or {}).get("store"))
        dsn = resolve_dsn(cfg.get("dsn"))
        if not dsn:
            return None
        from autoperf.store.sink import PostgresSink

        sink = PostgresSink(
            dsn,
            log_dir=log_dir,
            batch_records=int(cfg["batch_records"]),
            flush_interval_ms=float(cfg["flush_interval_ms"]),
            max_buffer_records=int(cfg["max_buffer_records"]),
            rollup=bool(cfg["rollup"]),
            connect_timeout_s=float(cfg["connect_timeout_s"]),
            retry_max_s=float(cfg["retry_max_s"]),
            max_spill_mb=float(cfg["max_spill_mb"]),
            connections=int(cfg["connections"]),
            command_timeout_s=float(cfg["command_timeout_s"]),
            keepalive_s=float(cfg["keepalive_s"]),
        )
        if register:
            from autoperf import pipeline

            pipeline.add_sink(sink)
        return sink
    except Exception as exc:  # noqa: BLE001 - never break the host program
        from autoperf.store.db import report_warning

        report_warning("store_start_failed", f"PostgreSQL store not started: {type(exc).__name__}")
        return None
