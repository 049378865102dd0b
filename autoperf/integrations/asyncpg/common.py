"""What the modules of this integration share: the options, the settings made from them, the
``_DbSpan`` marker type (imported by ``queries``, ``pools`` and ``explain``; imports none of them)."""
from __future__ import annotations

import contextvars

from autoperf import spans
from autoperf.config.schema import Bool, Field, Float, Int, Map, Obj, Str

OPTIONS = Obj({
    "slow_query_ms": Field(Float(min=0), default=500,
                           doc="A query slower than this is logged at WARNING level."),
    "slow_query_overrides": Field(Map(Float(min=0), keys=Str(pattern="[0-9a-f]{16}")), default={},
                                  doc="Per-query thresholds: {fingerprint: ms} (fingerprints are in the db spans)."),
    "statement_max_length": Field(Int(min=16), default=200,
                                  doc="Normalised statements are cut to this many characters."),
    "explain": Field(Bool(), default=False,
                     doc="Capture EXPLAIN (FORMAT JSON) for slow SELECTs, at most once per query per hour, "
                         "on a separate connection, in the background."),
    "explain_threshold_ms": Field(Float(min=0), default=None,
                                  doc="A SELECT slower than this gets an EXPLAIN (default: its slow-query threshold)."),
    "pool_wait_span_ms": Field(Float(min=0), default=1.0,
                               doc="A pool acquire or reset longer than this is a `wait` span; shorter ones are "
                                   "counted in the resource record's `db_pool` (count, total, max). 0: a span for every one."),
}, doc="asyncpg (PostgreSQL) queries and pools.")

#: Bound of each per-text / per-fingerprint memory (query infos, fingerprints explained).
_CACHE_SIZE = 4096


class _DbSpan(spans.Span):
    """A query span of this integration (its type marks "a query is already being recorded")."""

    __slots__ = ()


class _Settings:
    __slots__ = ("slow_ms", "overrides", "max_length", "explain", "explain_ms", "pool_wait_span_ms")

    def __init__(self, options):
        opts = {k: f.default_value() for k, f in OPTIONS.fields.items()}
        opts.update({k: v for k, v in (options or {}).items() if v is not None or k == "explain_threshold_ms"})
        self.slow_ms = float(opts["slow_query_ms"])
        self.overrides = {str(k): float(v) for k, v in (opts.get("slow_query_overrides") or {}).items()}
        self.max_length = int(opts["statement_max_length"])
        self.explain = bool(opts["explain"])
        e = opts.get("explain_threshold_ms")
        self.explain_ms = None if e is None else float(e)
        self.pool_wait_span_ms = float(opts["pool_wait_span_ms"])

    def key(self):
        return (self.slow_ms, tuple(sorted(self.overrides.items())), self.max_length, self.explain,
                self.explain_ms, self.pool_wait_span_ms)


def in_empty_context(original):
    """asyncpg's long timers — a cached statement's expiry and an idle pooled connection's close, 300 s
    each by default — are made during a query and copy its context: the flow and span current then.
    Made in an empty context, they hold none of autoperf's objects (measured on the ladder bot at
    100 flows/s: ~300 flows' FlowState, spans and context nodes were kept alive by them). Their
    callbacks only drop a cache entry or close a connection."""
    def setup_timer(*args, **kwargs):
        return contextvars.Context().run(original, *args, **kwargs)
    return setup_timer
