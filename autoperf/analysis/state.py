"""Small state holders of the Aggregator: per command / operation / fingerprint, time buckets, helpers."""
from __future__ import annotations

from collections import Counter

from .stats import Reservoir

__all__ = ["HIST_EDGES", "DEADLINE_MS", "WITHIN_SHARE", "sla_holds", "RESOURCE_METRICS", "FlowState", "Budget",
           "OpState", "DbState", "OpenFlow", "Buckets", "LEVELS", "LEVEL_NAMES", "merge_res_bucket",
           "seq_scans_from_explain", "fold", "transaction_marker"]

DEADLINE_MS = 3000.0           # Discord interaction deadline (first response)
#: an SLA or a span budget holds when at least this share of the runs is within it (seed 12.1: "95 % of
#: commands complete in < 500 ms" — the report's "SLA" column and `autoperf check` use the same rule)
WITHIN_SHARE = 0.95
HIST_EDGES = [0, 5, 10, 25, 50, 100, 250, 500, 1000, 2000, 3000, 5000, 10000]
# timestamp prefix lengths of the time buckets, finest first: a short run's charts get seconds, a day 10 minutes
LEVELS = (19, 18, 16, 15, 13, 10)
LEVEL_NAMES = ("second", "10s", "minute", "10min", "hour", "day")

# resource metrics: output key -> path in the record
RESOURCE_METRICS = {
    "rss_mb": ("rss_mb",),
    "uss_mb": ("uss_mb",),
    "cpu_percent": ("cpu_percent",),
    "max_worker_rss_mb": ("max_worker_rss_mb",),
    "active_flows": ("active_flows",),
    "db_pool_utilisation_pct": ("db_pool", "utilisation_pct"),
    "db_pool_waiters": ("db_pool", "waiters"),
    "db_pool_acquire_wait_max_ms": ("db_pool", "acquire_wait_max_ms"),
    "process_pool_pending": ("process_pool", "pending"),
    "loop_lag_p95_ms": ("loop_lag_ms", "p95"),
    "loop_lag_max_ms": ("loop_lag_ms", "max"),
    "gateway_latency_ms": ("gateway_latency_ms",),
}


def sla_holds(known: int, over: int) -> bool:
    """At least WITHIN_SHARE of ``known`` runs within the limit (exact counts)."""
    return known - over >= WITHIN_SHARE * known


def _label(key: str, level: int) -> str:
    if level == 15 or level == 18:      # "…T10:1" -> "…T10:10", "…T10:07:1" -> "…T10:07:10"
        return key + "0"
    if level == 13:
        return key + ":00"
    return key


class FlowState:
    __slots__ = ("res", "errors", "sla_ms", "sla_known", "sla_missed", "over", "fr_n", "fr_ok", "fr_res",
                 "statuses", "command", "itype")

    def __init__(self, cap, n_thresholds):
        self.res = Reservoir(cap)
        self.errors = 0
        self.sla_ms = None
        self.sla_known = 0
        self.sla_missed = 0
        self.over = [0] * n_thresholds
        self.fr_n = 0
        self.fr_ok = 0
        self.fr_res = None
        self.statuses = Counter()
        self.command = None
        self.itype = None           # metadata.interaction_type (discord): slash command, component, event …


class Budget:
    """A span's configured ``threshold_ms`` (target or integration): the latest one seen, the calls that
    carried one and those over it (`autoperf check`: at least 95 % within)."""
    __slots__ = ("threshold_ms", "th_known", "th_over")

    def __init__(self):
        self.threshold_ms = None
        self.th_known = 0
        self.th_over = 0

    def count(self, th, d):
        self.threshold_ms = th
        self.th_known += 1
        if d > th:
            self.th_over += 1

    def merge_budget(self, other):
        if other.threshold_ms is not None:
            self.threshold_ms = other.threshold_ms
        self.th_known += other.th_known
        self.th_over += other.th_over


class OpState(Budget):
    __slots__ = ("res", "errors", "sla_ms", "sla_known", "sla_missed")

    def __init__(self, cap):
        super().__init__()
        self.res = Reservoir(cap)
        self.errors = 0
        self.sla_ms = None          # a span's own SLA (a target's sla_ms; a kind: flow target run inside a flow)
        self.sla_known = 0
        self.sla_missed = 0


class DbState(Budget):
    __slots__ = ("res", "errors", "statement", "operation", "system", "flows", "flow_ms", "flow_names",
                 "calls_by_flow", "rows", "seq_scans", "explained")

    def __init__(self, cap):
        super().__init__()
        self.res = Reservoir(cap)
        self.errors = 0
        self.statement = None
        self.operation = None
        self.system = None
        self.flows = 0              # distinct flows the fingerprint ran in (counted at flow end)
        self.flow_ms = 0.0          # its time inside those flows (under retention: the flows read whole)
        self.flow_names = Counter()
        self.calls_by_flow = Counter()  # from metrics: every call, by the name of the flow it ran in
        self.rows = 0
        self.seq_scans = None       # [(relation, rows_read, rows_returned, filter)] from the most recent EXPLAIN
        self.explained = 0


class OpenFlow:
    __slots__ = ("name", "items")

    def __init__(self, name):
        self.name = name
        self.items = []             # (parent_id, timestamp, duration_ms, name, kind, fingerprint) of db/http spans


class Buckets:
    """Time-bucketed values with automatic coarsening (bounded number of buckets)."""

    def __init__(self, kind, max_buckets=240, cap=400):
        self.level = 0
        self.data: dict = {}        # (series key, bucket key) -> value
        self.keys: set = set()
        self.kind = kind            # "res": Reservoir per bucket; "dict": resource metric dict per bucket
        self.cap = cap
        self.max_buckets = max_buckets

    def new(self):
        return Reservoir(self.cap) if self.kind == "res" else {}

    def merge(self, a, b):
        """``a`` with ``b`` merged in (the holder to keep: a Reservoir may become a Dist)."""
        if self.kind == "res":
            from .dist import merge_res
            return merge_res(a, b)
        merge_res_bucket(a, b)
        return a

    def get(self, series, ts):
        L = LEVELS[self.level]
        b = ts[:L]
        k = (series, b)
        v = self.data.get(k)
        if v is None:
            if b not in self.keys:
                self.keys.add(b)
                if len(self.keys) > self.max_buckets and self.level < len(LEVELS) - 1:
                    self._coarsen()
                    return self.get(series, ts)
            v = self.data[k] = self.new()
        return v

    def _coarsen(self):
        while len(self.keys) > self.max_buckets and self.level < len(LEVELS) - 1:
            self.level += 1
            L = LEVELS[self.level]
            self.data = self._rebucket(self.data.items(), L)
            self.keys = {b[:L] for b in self.keys}

    def absorb(self, other):
        """Merge ``other`` (Buckets of the same kind, another worker's) in, at the coarser level of the two."""
        self.level = max(self.level, other.level)
        self.data = self._rebucket([*self.data.items(), *other.data.items()], LEVELS[self.level])
        self.keys = {b for (_s, b) in self.data}
        if len(self.keys) > self.max_buckets:
            self._coarsen()

    def _rebucket(self, items, L):
        """``(series, bucket) -> value`` of ``items`` with each bucket cut to ``L`` characters, merged."""
        data = {}
        for (s, b), v in items:
            k = (s, b[:L])
            data[k] = self.merge(data[k], v) if k in data else v
        return data

    def series(self):
        L = LEVELS[self.level]
        labels = sorted(self.keys)
        return labels, [_label(b, L) for b in labels]


def merge_res_bucket(a: dict, b: dict):
    for k, v in b.items():
        x = a.get(k)
        if x is None:
            a[k] = v
        else:
            x[0] += v[0]
            x[1] += v[1]
            x[2] = max(x[2], v[2])


#: a sequential scan whose Filter keeps at most this share of the rows it reads is a selective lookup
SELECTIVE_FRACTION = 0.1


def seq_scans_from_explain(explain, min_rows, relations=None) -> list | None:
    """Walk an EXPLAIN (FORMAT JSON) plan; return ``[(relation, rows_read, rows_returned, filter)]`` of the
    sequential scans an index would serve: a Filter that keeps at most ``SELECTIVE_FRACTION`` of the rows
    the scan reads, and at least ``min_rows`` read. Rows read come from EXPLAIN ANALYZE (rows out + "Rows
    Removed by Filter", times loops) or, for a plain EXPLAIN, from ``relations`` ({relation: rows}, the
    table's size from the catalog); rows returned are the actual or the planned ones. A scan without a
    Filter (the query wants the whole table) or without a known size is no candidate. None: no plan."""
    if explain is None:
        return None
    if isinstance(explain, (str, bytes)):
        try:
            import orjson
            explain = orjson.loads(explain)
        except Exception:
            return None
    sizes = relations if isinstance(relations, dict) else {}
    found = []

    def walk(node):
        if isinstance(node, list):
            for n in node:
                walk(n)
        elif isinstance(node, dict):
            if "Plan" in node and isinstance(node["Plan"], dict):
                walk(node["Plan"])
                return
            if node.get("Node Type") == "Seq Scan" and node.get("Filter"):
                scan = _selective_scan(node, sizes, min_rows)
                if scan is not None:
                    found.append(scan)
            for child in node.get("Plans") or ():
                walk(child)

    walk(explain)
    return found


def _number(v):
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _selective_scan(node, sizes, min_rows):
    rel = str(node.get("Relation Name") or "?")
    actual = _number(node.get("Actual Rows"))
    if actual is not None:
        loops = _number(node.get("Actual Loops")) or 1
        returned = actual * loops
        read = returned + (_number(node.get("Rows Removed by Filter")) or 0) * loops
    else:
        read = _number(sizes.get(rel))
        returned = _number(node.get("Plan Rows"))
        if read is None or returned is None:
            return None
    if read < min_rows or returned > SELECTIVE_FRACTION * read:
        return None
    return (rel, read, returned, node.get("Filter"))


_TX_START = frozenset(("BEGIN", "START"))
_TX_END = frozenset(("COMMIT", "END", "ABORT", "ROLLBACK"))


def transaction_marker(operation, statement) -> int:
    """+1 for a statement that starts a transaction, -1 for one that ends it, else 0."""
    op = str(operation or "").upper()
    if op in _TX_START:
        return 1
    if op in _TX_END:
        words = str(statement or "").upper().split()
        return 0 if "TO" in words[1:4] else -1      # ROLLBACK [WORK|TRANSACTION] TO SAVEPOINT stays inside
    return 0


def fold(mine: dict, theirs: dict, combine) -> None:
    """Merge ``theirs`` into ``mine``: absent keys are taken over, present ones ``combine(mine, theirs)``."""
    for key, value in theirs.items():
        current = mine.get(key)
        if current is None:
            mine[key] = value
        else:
            combine(current, value)

