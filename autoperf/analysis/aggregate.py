"""One-pass aggregation of records into a plain-dict report.

``Aggregator().add(record)`` for every record, then ``result()``. Memory is bounded:
durations are kept in :class:`~autoperf.analysis.stats.Reservoir` s (exact up to their cap,
a uniform sample afterwards; counts, sums, min and max always exact), time series in at most
``max_buckets`` buckets (auto-coarsened minute → 10 min → hour → day), and per-flow state for
the suggestions in at most ``open_flows_cap`` in-flight flows.
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Iterable

from .stats import Reservoir

__all__ = ["Aggregator", "aggregate", "HIST_EDGES", "DEADLINE_MS"]

DEADLINE_MS = 3000.0           # Discord interaction deadline (first response)
HIST_EDGES = [0, 5, 10, 25, 50, 100, 250, 500, 1000, 2000, 3000, 5000, 10000]
_LEVELS = (16, 15, 13, 10)     # timestamp prefix lengths: minute, 10 minutes, hour, day
_LEVEL_NAMES = ("minute", "10min", "hour", "day")

# resource metrics: output key -> path in the record
RESOURCE_METRICS = {
    "rss_mb": ("rss_mb",),
    "uss_mb": ("uss_mb",),
    "cpu_percent": ("cpu_percent",),
    "max_worker_rss_mb": ("max_worker_rss_mb",),
    "active_flows": ("active_flows",),
    "db_pool_utilisation_pct": ("db_pool", "utilisation_pct"),
    "db_pool_waiters": ("db_pool", "waiters"),
    "process_pool_pending": ("process_pool", "pending"),
    "loop_lag_p95_ms": ("loop_lag_ms", "p95"),
    "loop_lag_max_ms": ("loop_lag_ms", "max"),
    "gateway_latency_ms": ("gateway_latency_ms",),
}


def _num(v):
    return v if (type(v) is float or type(v) is int) else None


def _label(key: str, level: int) -> str:
    if level == 15:
        return key + "0"
    if level == 13:
        return key + ":00"
    return key


def _ms_of_day(ts) -> float | None:
    """'2025-01-20T15:30:45.123Z' -> milliseconds since the start of the day (fast, fixed positions)."""
    try:
        return (int(ts[11:13]) * 60 + int(ts[14:16])) * 60000 + float(ts[17:23]) * 1000.0
    except (TypeError, ValueError):
        try:
            return (int(ts[11:13]) * 60 + int(ts[14:16])) * 60000 + int(ts[17:19]) * 1000.0
        except (TypeError, ValueError):
            return None


class _Flow:
    __slots__ = ("res", "errors", "sla_ms", "sla_known", "sla_missed", "over", "fr_n", "fr_ok", "fr_res",
                 "statuses", "command")

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


class _Op:
    __slots__ = ("res", "errors")

    def __init__(self, cap):
        self.res = Reservoir(cap)
        self.errors = 0


class _Db:
    __slots__ = ("res", "errors", "statement", "operation", "system", "flows", "flow_names", "rows",
                 "seq_scans", "explained")

    def __init__(self, cap):
        self.res = Reservoir(cap)
        self.errors = 0
        self.statement = None
        self.operation = None
        self.system = None
        self.flows = 0              # distinct flows the fingerprint ran in (counted at flow end)
        self.flow_names = Counter()
        self.rows = 0
        self.seq_scans = None       # list of (relation, plan_rows) from the most recent EXPLAIN
        self.explained = 0


class _OpenFlow:
    __slots__ = ("name", "items")

    def __init__(self, name):
        self.name = name
        self.items = []             # (parent_id, timestamp, duration_ms, name, kind, fingerprint) of db/http spans


class _Buckets:
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
        if self.kind == "res":
            a.merge(b)
        else:
            _merge_res_bucket(a, b)

    def get(self, series, ts):
        L = _LEVELS[self.level]
        b = ts[:L]
        k = (series, b)
        v = self.data.get(k)
        if v is None:
            if b not in self.keys:
                self.keys.add(b)
                if len(self.keys) > self.max_buckets and self.level < len(_LEVELS) - 1:
                    self._coarsen()
                    return self.get(series, ts)
            v = self.data[k] = self.new()
        return v

    def _coarsen(self):
        while len(self.keys) > self.max_buckets and self.level < len(_LEVELS) - 1:
            self.level += 1
            L = _LEVELS[self.level]
            data = {}
            for (s, b), v in self.data.items():
                k = (s, b[:L])
                if k in data:
                    self.merge(data[k], v)
                else:
                    data[k] = v
            self.data = data
            self.keys = {b[:L] for b in self.keys}

    def series(self):
        L = _LEVELS[self.level]
        labels = sorted(self.keys)
        return labels, [_label(b, L) for b in labels]


def _merge_res_bucket(a: dict, b: dict):
    for k, v in b.items():
        x = a.get(k)
        if x is None:
            a[k] = v
        else:
            x[0] += v[0]
            x[1] += v[1]
            x[2] = max(x[2], v[2])


def _seq_scans_from_explain(explain, min_rows) -> list | None:
    """Walk an EXPLAIN (FORMAT JSON) plan; return [(relation, plan_rows, filter)] of big Seq Scans."""
    if explain is None:
        return None
    if isinstance(explain, (str, bytes)):
        try:
            import orjson
            explain = orjson.loads(explain)
        except Exception:
            return None
    found = []

    def walk(node):
        if isinstance(node, list):
            for n in node:
                walk(n)
        elif isinstance(node, dict):
            if "Plan" in node and isinstance(node["Plan"], dict):
                walk(node["Plan"])
                return
            if node.get("Node Type") == "Seq Scan":
                rows = node.get("Plan Rows") or 0
                if isinstance(rows, (int, float)) and rows >= min_rows:
                    found.append((str(node.get("Relation Name") or "?"), rows, node.get("Filter")))
            for child in node.get("Plans") or ():
                walk(child)

    walk(explain)
    return found


def _fold(mine: dict, theirs: dict, combine) -> None:
    """Merge ``theirs`` into ``mine``: absent keys are taken over, present ones ``combine(mine, theirs)``."""
    for key, value in theirs.items():
        current = mine.get(key)
        if current is None:
            mine[key] = value
        else:
            combine(current, value)


class Aggregator:
    """Streaming, bounded-memory aggregation of autoperf records (see module doc).

    Parameters: ``sla`` — {flow_name: sla_ms} used when a record carries no ``sla_ms``;
    ``thresholds_ms`` — command durations counted exactly above each (for SLO checks);
    ``reservoir`` / ``op_reservoir`` — sample caps per command / per operation or fingerprint.
    """

    def __init__(self, *, sla: dict | None = None, thresholds_ms=(500.0, 2000.0, 3000.0),
                 reservoir: int = 100_000, op_reservoir: int = 20_000, series_reservoir: int = 400,
                 daily_reservoir: int = 5_000, max_buckets: int = 240, open_flows_cap: int = 20_000,
                 n_plus_one_min: int = 5, index_min_rows: int = 1000, io_overlap_tolerance_ms: float = 1.0,
                 defer_head: int = 0, track_flows: bool = True):
        self.sla = dict(sla or {})
        self.thresholds = tuple(float(t) for t in thresholds_ms)
        self.cap = reservoir
        self.op_cap = op_reservoir
        self.series_cap = series_reservoir
        self.daily_cap = daily_reservoir
        self.open_flows_cap = open_flows_cap
        self.n_plus_one_min = n_plus_one_min
        self.index_min_rows = index_min_rows
        self.io_tol = io_overlap_tolerance_ms

        self.types = Counter()
        self.levels = Counter()
        self._first = "\uffff"       # timestamps compare as strings; sentinels avoid None checks
        self._last = ""
        self._th_min = min(self.thresholds) if self.thresholds else math.inf
        self.flows: dict[str, _Flow] = {}
        self._all_cache = None
        self.all_over = [0] * len(self.thresholds)
        self.ops: dict[tuple, _Op] = {}
        self.db: dict[str, _Db] = {}
        self.db_count = 0
        self.db_total = 0.0
        self.jobs: dict[str, list] = {}
        self.cycles: dict[str, list] = {}
        self.res_n = 0
        self.res_metrics = {k: [0, 0.0, -math.inf] for k in RESOURCE_METRICS}   # n, sum, max
        self.res_series = _Buckets("dict", max_buckets)
        self.flow_series = _Buckets("res", max_buckets, series_reservoir)
        self.daily: dict[tuple, Reservoir] = {}
        self.blocked: dict[str, list] = {}
        self.blocked_n = 0
        self.blocked_worst = None
        self.warnings = Counter()
        self.dropped = 0
        # suggestion state
        self.open: dict[str, _OpenFlow] = {}
        self.evicted_open = 0
        self.n_plus_one: dict[tuple, list] = {}      # (flow, fp) -> [flows_hit, sum_repeats, max_repeats, sum_ms]
        self.seq_io: dict[tuple, list] = {}          # (flow, names) -> [n, sum_saving, sum_total, max_saving]
        self.flow_counts = Counter()                 # flow_name -> finished flows seen (for ratios)
        # parallel ranges: the first `defer_head` flows finished in a range may have spans in the
        # previous range; their bookkeeping is deferred to merge() so they are judged whole
        self._defer_left = defer_head
        self.track_flows = track_flows      # per-flow bookkeeping for N+1 / gather / cache suggestions
        self._shapes: dict = {}
        self.head_pending: dict = {}

    # ------------------------------------------------------------------ ingest
    def add_all(self, records: Iterable[dict]) -> "Aggregator":
        add = self.add
        for r in records:
            add(r)
        return self

    def add(self, rec: dict) -> None:
        t = rec.get("type")
        ts = rec.get("timestamp")
        if ts.__class__ is str:
            if ts < self._first:
                self._first = ts
            if ts > self._last:
                self._last = ts
        else:
            ts = None
        if t == "span":
            self._span(rec, ts)
        elif t == "flow_complete":
            self._flow_complete(rec, ts)
        elif t == "resource":
            self._resource(rec, ts)
        elif t == "loop_blocked":
            self._blocked(rec)
        elif t == "warning":
            c = rec.get("count")
            self.warnings[str(rec.get("code"))] += c if c.__class__ is int else 1
        elif t == "dropped":
            c = rec.get("count")
            self.dropped += c if c.__class__ is int else 0
        elif t == "explain":
            self._explain(rec)
        tc = self.types
        tc[t] = tc.get(t, 0) + 1
        lv = rec.get("level")
        if lv is not None:
            lc = self.levels
            lc[lv] = lc.get(lv, 0) + 1

    @property
    def records(self) -> int:
        return sum(self.types.values())

    @property
    def first_ts(self):
        return self._first if self._first != "\uffff" else None

    @property
    def last_ts(self):
        return self._last or None

    def _flow_complete(self, rec, ts):
        if rec.get("flow_kind", "flow") != "flow":
            return  # a cycle (matchmaker loop, task loop): reported with the cycles, not as a command
        name = rec.get("flow_name") or "?"
        d = rec.get("duration_ms")
        if d.__class__ is not float:
            if d.__class__ is not int:
                return
            d = float(d)
        f = self.flows.get(name)
        if f is None:
            f = self.flows[name] = _Flow(self.cap, len(self.thresholds))
        r = f.res
        c = r.count
        if c < r.cap:                       # Reservoir.add, exact phase, inlined (hot path)
            r.count = c + 1
            r.values.append(d)
        else:
            r.add(d)
        if d > self._th_min:
            th = self.thresholds
            for i in range(len(th)):
                if d > th[i]:
                    f.over[i] += 1
                    self.all_over[i] += 1
        status = rec.get("status")
        st = f.statuses
        st[status] = st.get(status, 0) + 1
        if status != "success" and status is not None:
            f.errors += 1
        sla = rec.get("sla_ms")
        if sla is None or (sla.__class__ is not float and sla.__class__ is not int):
            sla = self.sla.get(name)
        if sla is not None:
            f.sla_ms = sla
            f.sla_known += 1
            if d > sla:
                f.sla_missed += 1
        md = rec.get("metadata")
        if md.__class__ is dict and md:
            fr = md.get("first_response_ms")
            if fr is not None and (fr.__class__ is float or fr.__class__ is int):
                f.fr_n += 1
                if fr < DEADLINE_MS and md.get("deadline_missed") is not True:
                    f.fr_ok += 1
                if f.fr_res is None:
                    f.fr_res = Reservoir(self.op_cap)
                f.fr_res.add(fr)
            elif md.get("deadline_missed") is True:     # never answered in time (discord integration)
                f.fr_n += 1
            if f.command is None and md.get("command") is not None:
                f.command = str(md.get("command"))
        if ts is not None:
            fs = self.flow_series
            b = ts[:_LEVELS[fs.level]]
            r = fs.data.get((name, b))
            if r is None:
                r = fs.get(name, ts)
            r.add(d)
            dk = (name, ts[:10])
            r = self.daily.get(dk)
            if r is None:
                r = self.daily[dk] = Reservoir(self.daily_cap)
            r.add(d)
        fid = rec.get("flow_id")
        if fid is not None:
            if self._defer_left > 0:
                self._defer_left -= 1
                self.head_pending[fid] = name
            else:
                self._finish_flow(fid, name)

    def _span(self, rec, ts):
        kind = rec.get("kind")
        if kind == "flow":
            return                      # flows are counted from flow_complete
        d = rec.get("duration_ms")
        if d.__class__ is not float:
            if d.__class__ is not int:
                return
            d = float(d)
        name = rec.get("name") or "?"
        err = rec.get("status") != "success"
        k = (name, kind)
        op = self.ops.get(k)
        if op is None:
            op = self.ops[k] = _Op(self.op_cap)
        r = op.res
        c = r.count
        if c < r.cap:
            r.count = c + 1
            r.values.append(d)
        else:
            r.add(d)
        if err and rec.get("status") is not None:
            op.errors += 1
        else:
            err = False
        if kind == "db" or kind == "http":
            attrs = rec.get("attrs")
            fp = None
            if kind == "db":
                if attrs.__class__ is not dict:
                    attrs = {}
                fp = attrs.get("fingerprint") or attrs.get("statement") or name
                if fp.__class__ is not str:
                    fp = str(fp)
                db = self.db.get(fp)
                if db is None:
                    db = self.db[fp] = _Db(self.op_cap)
                    db.statement = attrs.get("statement")
                    db.operation = attrs.get("operation")
                    db.system = attrs.get("system")
                r = db.res
                c = r.count
                if c < r.cap:
                    r.count = c + 1
                    r.values.append(d)
                else:
                    r.add(d)
                self.db_count += 1
                self.db_total += d
                if err:
                    db.errors += 1
                rows = attrs.get("rows")
                if rows.__class__ is int:
                    db.rows += rows
                ex = attrs.get("explain")
                if ex is not None:
                    scans = _seq_scans_from_explain(ex, self.index_min_rows)
                    if scans is not None:
                        db.seq_scans = scans
                        db.explained += 1
            fid = rec.get("flow_id") if self.track_flows else None
            if fid is not None and rec.get("span_id") != fid:
                of = self.open.get(fid)
                if of is None:
                    of = self._open_flow(fid, rec.get("flow_name"))
                items = of.items
                if len(items) < 500:
                    items.append((rec.get("parent_id"), ts, d, name, kind, fp))
            return
        if kind == "job":
            attrs = rec.get("attrs")
            if attrs.__class__ is not dict:
                attrs = {}
            j = self.jobs.get(name)
            if j is None:
                c = self.op_cap
                j = self.jobs[name] = [Reservoir(c), Reservoir(c), Reservoir(c), Reservoir(c), Counter()]
            j[0].add(d)
            for i, key in ((1, "queue_wait_ms"), (2, "run_ms"), (3, "transfer_ms")):
                v = attrs.get(key)
                if v is not None and (v.__class__ is float or v.__class__ is int):
                    j[i].add(v)
            ex = attrs.get("executor")
            if ex is not None:
                j[4][str(ex)] += 1
        elif kind == "cycle":
            attrs = rec.get("attrs")
            if attrs.__class__ is not dict:
                attrs = {}
            c = self.cycles.get(name)
            if c is None:
                c = self.cycles[name] = [Reservoir(self.op_cap), {}, 0]
            c[0].add(d)
            if err:
                c[2] += 1
            sums = c[1]
            for k2, v in attrs.items():
                if v.__class__ is int or v.__class__ is float:
                    sums[k2] = sums.get(k2, 0) + v
            fid = rec.get("flow_id")
            if fid is not None and rec.get("span_id") == fid:
                if self._defer_left > 0:
                    self._defer_left -= 1
                    self.head_pending[fid] = name
                else:
                    self._finish_flow(fid, name)

    def _explain(self, rec):
        """An `explain` record (asyncpg `explain: true`): remember big sequential scans of the fingerprint."""
        fp = rec.get("fingerprint") or rec.get("statement")
        if fp is None:
            return
        fp = str(fp)
        db = self.db.get(fp)
        if db is None:
            db = self.db[fp] = _Db(self.op_cap)
            db.statement = rec.get("statement")
            db.operation = "SELECT"
            db.system = rec.get("system")
        scans = _seq_scans_from_explain(rec.get("plan"), self.index_min_rows)
        if scans is not None:
            db.seq_scans = scans
            db.explained += 1

    def _open_flow(self, fid, name):
        if len(self.open) >= self.open_flows_cap:
            old = next(iter(self.open))
            self.evicted_open += 1
            self._finish_flow(old, None)
        of = self.open[fid] = _OpenFlow(name)
        return of

    def _finish_flow(self, fid, name):
        of = self.open.pop(fid, None)
        if name is not None:
            fc = self.flow_counts
            fc[name] = fc.get(name, 0) + 1
        if of is None:
            return
        items = of.items
        if not items:
            return
        fname = name or of.name or "?"
        dbs = self.db
        if len(items) == 1:                           # common and cheap: nothing to pair up
            fp = items[0][5]
            if fp is not None:
                db = dbs.get(fp)
                if db is not None:
                    db.flows += 1
                    fn = db.flow_names
                    if fname in fn or len(fn) < 50:
                        fn[fname] += 1
            return
        # per fingerprint in this flow: distinct flows (cache advice) and repeats (N+1)
        fps: dict = {}
        p0 = items[0][0]
        one_parent = True
        for it in items:
            fp = it[5]
            if fp is not None:
                x = fps.get(fp)
                if x is None:
                    fps[fp] = [1, it[2]]
                else:
                    x[0] += 1
                    x[1] += it[2]
            if it[0] != p0:
                one_parent = False
        n1 = self.n_plus_one_min
        for fp, (n, ms) in fps.items():
            db = dbs.get(fp)
            if db is not None:
                db.flows += 1
                fn = db.flow_names
                if fname in fn or len(fn) < 50:
                    fn[fname] += 1
            if n >= n1:
                k = (fname, fp)
                s = self.n_plus_one.get(k)
                if s is None:
                    s = self.n_plus_one[k] = [0, 0, 0, 0.0]
                s[0] += 1
                s[1] += n
                if n > s[2]:
                    s[2] = n
                s[3] += ms
        # sibling I/O (same parent) that never overlapped: could have been awaited concurrently
        if one_parent:
            groups = (items,)
        else:
            gd: dict = {}
            for it in items:
                g = gd.get(it[0])
                if g is None:
                    gd[it[0]] = [it]
                else:
                    g.append(it)
            groups = gd.values()
        tol = self.io_tol
        for lst in groups:
            if len(lst) < 2:
                continue
            if len(fps) == 1 and len(lst) == len(items) and lst[0][5] is not None:
                continue                      # one repeated query: that is an N+1, not a gather
            timed = []
            for x in lst:
                ts = x[1]
                try:                          # minute-of-hour + seconds: enough to order siblings
                    st = int(ts[14:16]) * 60000 + float(ts[17:23]) * 1000.0
                except (TypeError, ValueError):
                    st = None
                if st is None:
                    break
                timed.append((st, x[2], x[3], x[5]))
            else:
                timed.sort()
                t_first = timed[0][0]
                prev_end = t_first + timed[0][1]
                sequential = True
                for st, dd, _n, _f in timed[1:]:
                    if st < t_first:
                        st += 3600000.0       # wrapped past the hour
                    if st + tol < prev_end:
                        sequential = False
                        break
                    prev_end = st + dd
                if not sequential:
                    continue
                f0 = timed[0][3]
                if f0 is not None and all(x[3] == f0 for x in timed):
                    continue                  # the same query repeated: N+1 advice covers it
                shape = (fname, tuple([x[2] for x in timed]))
                k = self._shapes.get(shape)
                if k is None:
                    names = []                       # run-length: "db.fetch ×2"
                    for x in timed:
                        if names and names[-1][0] == x[2]:
                            names[-1][1] += 1
                        else:
                            names.append([x[2], 1])
                    labels = tuple(n if c == 1 else f"{n} ×{c}" for n, c in names[:8])
                    k = (fname, labels, len(timed) if len(timed) <= 8 else 9)
                    if len(self._shapes) < 10000:
                        self._shapes[shape] = k
                total = 0.0
                mx = 0.0
                for x in timed:
                    dd = x[1]
                    total += dd
                    if dd > mx:
                        mx = dd
                saving = total - mx
                s = self.seq_io.get(k)
                if s is None:
                    if len(self.seq_io) > 5000:
                        continue
                    s = self.seq_io[k] = [0, 0.0, 0.0, 0.0]
                s[0] += 1
                s[1] += saving
                s[2] += total
                if saving > s[3]:
                    s[3] = saving

    def _resource(self, rec, ts):
        self.res_n += 1
        bucket = self.res_series.get("r", ts) if ts is not None else None
        metrics = self.res_metrics
        for key, path in RESOURCE_METRICS.items():
            v = rec.get(path[0])
            if len(path) > 1:
                v = v.get(path[1]) if type(v) is dict else None
            if (type(v) is float or type(v) is int) and type(v) is not bool:
                m = metrics[key]
                m[0] += 1
                m[1] += v
                if v > m[2]:
                    m[2] = v
                if bucket is not None:
                    b = bucket.get(key)
                    if b is None:
                        bucket[key] = [1, v, v]
                    else:
                        b[0] += 1
                        b[1] += v
                        if v > b[2]:
                            b[2] = v


    def _blocked(self, rec):
        d = rec.get("duration_ms")
        if type(d) is not float and type(d) is not int:
            d = 0.0
        self.blocked_n += 1
        if self.blocked_worst is None or d > self.blocked_worst[0]:
            self.blocked_worst = (d, rec.get("location"), rec.get("flow_name"))
        loc = str(rec.get("location") or "?")
        b = self.blocked.get(loc)
        if b is None:
            if len(self.blocked) >= 2000:
                loc = "(other locations)"
                b = self.blocked.get(loc)
            if b is None:
                b = self.blocked[loc] = [0, 0.0, 0.0, Counter()]
        b[0] += 1
        b[1] += d
        if d > b[2]:
            b[2] = d
        fn = rec.get("flow_name")
        if fn is not None and (len(b[3]) < 20 or fn in b[3]):
            b[3][fn] += 1

    # ------------------------------------------------------------------ merge (parallel readers)
    def merge(self, other: "Aggregator") -> "Aggregator":
        """Fold another Aggregator (e.g. from another file / process) into this one."""
        self.types.update(other.types)
        self.levels.update(other.levels)
        self._first = min(self._first, other._first)
        self._last = max(self._last, other._last)

        def _combine_flows(mine, f):
            mine.res.merge(f.res)
            mine.errors += f.errors
            mine.sla_ms = mine.sla_ms if mine.sla_ms is not None else f.sla_ms
            mine.sla_known += f.sla_known
            mine.sla_missed += f.sla_missed
            mine.over = [a + b for a, b in zip(mine.over, f.over)]
            mine.fr_n += f.fr_n
            mine.fr_ok += f.fr_ok
            if f.fr_res is not None:
                if mine.fr_res is None:
                    mine.fr_res = f.fr_res
                else:
                    mine.fr_res.merge(f.fr_res)
            for k, v in f.statuses.items():
                mine.statuses[k] = mine.statuses.get(k, 0) + v
            mine.command = mine.command or f.command
        _fold(self.flows, other.flows, _combine_flows)
        self.all_over = [a + b for a, b in zip(self.all_over, other.all_over)]

        def _combine_ops(mine, op):
            mine.res.merge(op.res)
            mine.errors += op.errors
        _fold(self.ops, other.ops, _combine_ops)

        def _combine_db(mine, db):
            mine.res.merge(db.res)
            mine.errors += db.errors
            mine.flows += db.flows
            mine.flow_names.update(db.flow_names)
            mine.rows += db.rows
            mine.seq_scans = db.seq_scans if db.seq_scans is not None else mine.seq_scans
            mine.explained += db.explained
        _fold(self.db, other.db, _combine_db)
        self.db_count += other.db_count
        self.db_total += other.db_total

        def _combine_jobs(mine, j):
            for i in range(4):
                mine[i].merge(j[i])
            mine[4].update(j[4])
        _fold(self.jobs, other.jobs, _combine_jobs)

        def _combine_cycles(mine, c):
            mine[0].merge(c[0])
            for a, v in c[1].items():
                mine[1][a] = mine[1].get(a, 0) + v
            mine[2] += c[2]
        _fold(self.cycles, other.cycles, _combine_cycles)
        self.res_n += other.res_n
        for k, m in other.res_metrics.items():
            x = self.res_metrics[k]
            x[0] += m[0]
            x[1] += m[1]
            x[2] = max(x[2], m[2])
        for mine, theirs in ((self.res_series, other.res_series), (self.flow_series, other.flow_series)):
            L = _LEVELS[max(mine.level, theirs.level)]
            merged = {}
            for src in (mine.data, theirs.data):
                for (s, b), v in src.items():
                    k = (s, b[:L])
                    if k in merged:
                        mine.merge(merged[k], v)
                    else:
                        merged[k] = v
            mine.data = merged
            mine.level = max(mine.level, theirs.level)
            mine.keys = {b for (_s, b) in merged}
            if len(mine.keys) > mine.max_buckets:
                mine._coarsen()

        def _combine_daily(mine, r):
            mine.merge(r)
        _fold(self.daily, other.daily, _combine_daily)

        def _combine_blocked(mine, b):
            mine[0] += b[0]
            mine[1] += b[1]
            mine[2] = max(mine[2], b[2])
            mine[3].update(b[3])
        _fold(self.blocked, other.blocked, _combine_blocked)
        self.blocked_n += other.blocked_n
        if other.blocked_worst is not None and (self.blocked_worst is None
                                                 or other.blocked_worst[0] > self.blocked_worst[0]):
            self.blocked_worst = other.blocked_worst
        self.warnings.update(other.warnings)
        self.dropped += other.dropped

        def _combine_n_plus_one(mine, s):
            mine[0] += s[0]
            mine[1] += s[1]
            mine[2] = max(mine[2], s[2])
            mine[3] += s[3]
        _fold(self.n_plus_one, other.n_plus_one, _combine_n_plus_one)

        def _combine_seq_io(mine, s):
            mine[0] += s[0]
            mine[1] += s[1]
            mine[2] += s[2]
            mine[3] = max(mine[3], s[3])
        _fold(self.seq_io, other.seq_io, _combine_seq_io)
        for k, v in other.flow_counts.items():
            self.flow_counts[k] = self.flow_counts.get(k, 0) + v
        for fid, name in other.head_pending.items():
            mine = self.open.pop(fid, None)
            theirs = other.open.pop(fid, None)
            if mine is not None and theirs is not None:
                mine.items.extend(theirs.items)
            combined = mine if mine is not None else theirs
            if combined is not None:
                self.open[fid] = combined
            self._finish_flow(fid, name)
        other.head_pending = {}

        def _combine_open(mine, of):
            mine.items.extend(of.items)
        _fold(self.open, other.open, _combine_open)
        return self

    # ------------------------------------------------------------------ output
    @property
    def all_cmds(self) -> Reservoir:
        """All commands together: the per-command reservoirs merged (exact while they are; otherwise a
        count-weighted uniform sample). Count, total, min and max are exact."""
        n = sum(f.res.count for f in self.flows.values())
        if self._all_cache is not None and self._all_cache[0] == n:
            return self._all_cache[1]
        r = Reservoir(self.cap)
        for name in sorted(self.flows):
            r.merge(self.flows[name].res)
        self._all_cache = (n, r)
        return r

    def flush_open(self) -> None:
        """Finish flows whose root record never arrived (crash, time window edge)."""
        for fid in list(self.open):
            self._finish_flow(fid, None)

    def command_rows(self) -> list[dict]:
        rows = []
        for name, f in self.flows.items():
            s = f.res.summary()
            n = s["count"]
            row = {"name": name, "command": f.command, "count": n, "errors": f.errors,
                   "error_rate_pct": 100.0 * f.errors / n if n else None,
                   "avg_ms": s["avg_ms"], "p50_ms": s["p50_ms"], "p95_ms": s["p95_ms"], "p99_ms": s["p99_ms"],
                   "min_ms": s["min_ms"], "max_ms": s["max_ms"], "exact": f.res.exact,
                   "sla_ms": f.sla_ms,
                   "sla_met_pct": (100.0 * (f.sla_known - f.sla_missed) / f.sla_known) if f.sla_known else None,
                   "over_sla": f.sla_missed if f.sla_known else None,
                   "sla_status": (None if f.sla_ms is None or s["p95_ms"] is None
                                  else ("ok" if s["p95_ms"] <= f.sla_ms else "over")),
                   "over_ms": {f"{t:g}": c for t, c in zip(self.thresholds, f.over)},
                   "first_response": ({"measured": f.fr_n, "within_deadline": f.fr_ok,
                                       "pct": 100.0 * f.fr_ok / f.fr_n,
                                       "p95_ms": f.fr_res.percentile(95) if f.fr_res else None}
                                      if f.fr_n else None),
                   "statuses": {str(k): v for k, v in f.statuses.items()}}
            rows.append(row)
        rows.sort(key=lambda r: (-r["count"], r["name"]))
        return rows

    def histogram(self, res: Reservoir) -> dict:
        import bisect
        counts = [0] * len(HIST_EDGES)
        for v in res.values:
            counts[max(0, bisect.bisect_right(HIST_EDGES, v) - 1)] += 1
        scale = res.count / len(res.values) if len(res.values) else 1.0
        if scale != 1.0:
            counts = [round(c * scale) for c in counts]
        return {"edges": list(HIST_EDGES), "counts": counts}

    def result(self, top: int = 10, suggestions: bool = True, suggest_options: dict | None = None) -> dict:
        cmds = self.command_rows()
        total_cmds = self.all_cmds.count
        total_err = sum(f.errors for f in self.flows.values())
        fr_n = sum(f.fr_n for f in self.flows.values())
        fr_ok = sum(f.fr_ok for f in self.flows.values())
        allc = self.all_cmds.summary()
        allc["over_ms"] = {f"{t:g}": c for t, c in zip(self.thresholds, self.all_over)}
        allc["under_pct"] = {f"{t:g}": (100.0 * (total_cmds - c) / total_cmds if total_cmds else None)
                             for t, c in zip(self.thresholds, self.all_over)}
        allc["exact"] = self.all_cmds.exact

        ops = []
        for (name, kind), op in self.ops.items():
            s = op.res.summary()
            ops.append({"name": name, "kind": kind, "count": s["count"], "avg_ms": s["avg_ms"],
                        "p50_ms": s["p50_ms"], "p95_ms": s["p95_ms"], "p99_ms": s["p99_ms"],
                        "max_ms": s["max_ms"], "total_ms": op.res.total, "errors": op.errors})
        ops.sort(key=lambda r: (-(r["p95_ms"] or 0), r["name"]))

        queries = []
        for fp, db in self.db.items():
            s = db.res.summary()
            queries.append({"fingerprint": fp, "statement": db.statement, "operation": db.operation,
                            "system": db.system, "count": s["count"], "avg_ms": s["avg_ms"],
                            "p50_ms": s["p50_ms"], "p95_ms": s["p95_ms"], "max_ms": s["max_ms"],
                            "total_ms": db.res.total, "errors": db.errors, "rows": db.rows,
                            "flows": db.flows})
        queries.sort(key=lambda r: (-r["total_ms"], r["fingerprint"]))

        jobs = []
        for name, j in self.jobs.items():
            def sm(r):
                s = r.summary()
                return {"count": s["count"], "avg_ms": s["avg_ms"], "p50_ms": s["p50_ms"],
                        "p95_ms": s["p95_ms"], "max_ms": s["max_ms"]}
            jobs.append({"name": name, "count": j[0].count, "total": sm(j[0]), "queue_wait": sm(j[1]),
                         "run": sm(j[2]), "transfer": sm(j[3]), "executors": dict(j[4])})
        jobs.sort(key=lambda r: -r["count"])

        cycles = []
        for name, c in self.cycles.items():
            s = c[0].summary()
            cycles.append({"name": name, "count": s["count"], "avg_ms": s["avg_ms"], "p50_ms": s["p50_ms"],
                           "p95_ms": s["p95_ms"], "max_ms": s["max_ms"], "errors": c[2],
                           "sums": dict(sorted(c[1].items()))})
        cycles.sort(key=lambda r: -r["count"])

        resources = None
        if self.res_n:
            metrics = {}
            for k, (n, sm_, mx) in self.res_metrics.items():
                if n:
                    metrics[k] = {"peak": mx, "avg": sm_ / n, "samples": n}
            keys, labels = self.res_series.series()
            series = {}
            for k in RESOURCE_METRICS:
                vals = []
                any_v = False
                for b in keys:
                    bucket = self.res_series.data.get(("r", b))
                    x = bucket.get(k) if bucket else None
                    if x is None:
                        vals.append(None)
                    else:
                        any_v = True
                        vals.append(x[2] if k not in ("rss_mb", "uss_mb", "cpu_percent") else x[1] / x[0])
                if any_v:
                    series[k] = vals
            resources = {"samples": self.res_n, "metrics": metrics,
                         "series": {"labels": labels, "bucket": _LEVEL_NAMES[self.res_series.level],
                                    "values": series}}

        blocked = {"count": self.blocked_n,
                   "worst_ms": self.blocked_worst[0] if self.blocked_worst else None,
                   "worst_location": self.blocked_worst[1] if self.blocked_worst else None,
                   "by_location": sorted(({"location": loc, "count": b[0], "total_ms": b[1], "max_ms": b[2],
                                           "flows": dict(b[3].most_common(5))}
                                          for loc, b in self.blocked.items()),
                                         key=lambda r: (-r["total_ms"], r["location"]))}

        keys, labels = self.flow_series.series()
        fseries = {"labels": labels, "bucket": _LEVEL_NAMES[self.flow_series.level], "p95_ms": {}, "count": {}}
        for name in self.flows:
            p95s, counts = [], []
            for b in keys:
                r = self.flow_series.data.get((name, b))
                p95s.append(r.percentile(95) if r is not None and r.count else None)
                counts.append(r.count if r is not None else 0)
            fseries["p95_ms"][name] = p95s
            fseries["count"][name] = counts

        daily = {}
        for (name, day), r in sorted(self.daily.items(), key=lambda kv: (kv[0][0], kv[0][1])):
            daily.setdefault(name, []).append({"day": day, "count": r.count, "avg_ms": r.avg,
                                               "p50_ms": r.percentile(50), "p95_ms": r.percentile(95)})

        out = {
            "range": {"first": self.first_ts, "last": self.last_ts},
            "totals": {"records": self.records, "commands": total_cmds, "errors": total_err,
                       "error_rate_pct": 100.0 * total_err / total_cmds if total_cmds else None,
                       "by_type": {str(k): v for k, v in self.types.most_common()},
                       "by_level": {str(k): v for k, v in self.levels.most_common()}},
            "all_commands": allc,
            "commands": cmds,
            "deadline": ({"deadline_ms": DEADLINE_MS, "measured": fr_n, "within": fr_ok,
                          "pct": 100.0 * fr_ok / fr_n} if fr_n else None),
            "slowest_operations": ops[:top],
            "operations_total": len(ops),
            "db": {"count": self.db_count, "total_ms": self.db_total,
                   "avg_ms": self.db_total / self.db_count if self.db_count else None,
                   "fingerprints": len(queries)},
            "slow_queries": sorted(queries, key=lambda r: (-(r["p95_ms"] or 0), r["fingerprint"]))[:max(top, 20)],
            "jobs": jobs,
            "cycles": cycles,
            "resources": resources,
            "loop_blocked": blocked,
            "series": fseries,
            "histograms": {name: self.histogram(f.res) for name, f in self.flows.items()},
            "daily": daily,
            "warnings": dict(self.warnings),
            "dropped": self.dropped,
        }
        if suggestions:
            from .suggest import suggestions_from
            out["suggestions"] = suggestions_from(self, **(suggest_options or {}))
        return out


def aggregate(records: Iterable[dict], **kw) -> dict:
    """Convenience: ``Aggregator(**kw).add_all(records).result()``."""
    agg = Aggregator(**kw)
    agg.add_all(records)
    agg.flush_open()
    return agg.result()
