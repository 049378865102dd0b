"""One-pass aggregation of records into a plain-dict report.

``Aggregator().add(record)`` for every record, then ``result()``. Memory is bounded:
durations are kept in :class:`~autoperf.analysis.stats.Reservoir` s (exact up to their cap,
a uniform sample afterwards; counts, sums, min and max always exact), time series in at most
``max_buckets`` buckets (auto-coarsened second → 10 s → minute → 10 min → hour → day), and per-flow state for
the suggestions in at most ``open_flows_cap`` in-flight flows.
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Iterable

from . import merge as _merge
from . import result as _result
from .flowtrack import finish_flow, flush_open
from .loopblocks import LoopBlocks
from .metricsfold import SLOWEST, Retention, covered, fold_metrics, host_label, note_flow, shard_label, _by
from .spanfold import fold_explain, fold_retained_span, fold_span
from .state import DEADLINE_MS, HIST_EDGES, LEVELS, RESOURCE_METRICS, Buckets, DbState, FlowState, OpenFlow, OpState
from .stats import Reservoir
from .suggest import suggestions_from

__all__ = ["Aggregator", "aggregate", "suggest", "HIST_EDGES", "DEADLINE_MS"]


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
        # settings kept as given: alike in shape to other classes' fields (duplicates), nothing shared
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
        self.flows: dict[str, FlowState] = {}
        self._all_cache = None
        self.all_over = [0] * len(self.thresholds)
        self.ops: dict[tuple, OpState] = {}
        self.db: dict[str, DbState] = {}
        self.db_count = 0
        self.db_total = 0.0
        self.jobs: dict[str, list] = {}
        self.cycles: dict[str, list] = {}
        self.res_n = 0
        self.res_metrics = {k: [0, 0.0, -math.inf] for k in RESOURCE_METRICS}   # n, sum, max
        self.res_series = Buckets("dict", max_buckets)
        self.flow_series = Buckets("res", max_buckets, series_reservoir)
        self.daily: dict[tuple, Reservoir] = {}
        self.loop_blocks = LoopBlocks()
        self.warnings = Counter()
        self.dropped = 0
        # suggestion state
        self.open: dict[str, OpenFlow] = {}
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
        # metrics records (metricsfold): covered processes, retention, slowest flows, per host / shard
        self.coverage: set = set()          # (host, pid, UTC day) that wrote metrics records
        self.metrics_records = 0
        self.retention = Retention()
        self.slowest: list = []             # min-heap of (duration_ms, flow_id, name, timestamp, retained rule)
        self.hosts: dict = {}               # host -> [Dist, errors] of root flows
        self.shards: dict = {}              # "0,1" (a process's shard ids) -> [Dist, errors]
        self.retained_seen = 0              # flows whose records were read whole (suggestions run over them)
        self.db_on_demand = None            # split.py's span side: statements made by covered spans (a set)

    # ------------------------------------------------------------------ the parts (functions over this state)
    def merge(self, other: "Aggregator") -> "Aggregator":
        """Fold another Aggregator (another file, process or host) into this one (merge.py)."""
        return _merge.merge(self, other)

    def result(self, top: int = 10, suggestions: bool = True, suggest_options: dict | None = None) -> dict:
        """The plain-dict report (result.py), with the suggestions (suggest.py) unless ``suggestions=False``."""
        return _result.result(self, top, suggestions_from(self, **(suggest_options or {})) if suggestions else None)

    def flush_open(self) -> None:
        """Judge the flows whose root record never came (crash, window edge: flowtrack.py)."""
        flush_open(self)

    @property
    def all_cmds(self):
        """All commands' durations merged (result.all_commands)."""
        return _result.all_commands(self)

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
            if self.coverage and covered(self, rec, ts):
                fold_retained_span(self, rec, ts)
            else:
                fold_span(self, rec, ts)
        elif t == "flow_complete":
            if self.coverage and covered(self, rec, ts):
                self._retained_flow(rec, ts)
            else:
                self._flow_complete(rec, ts)
        elif t == "metrics":
            fold_metrics(self, rec, ts)
        else:
            self._other(rec, t, ts)
        tc = self.types
        tc[t] = tc.get(t, 0) + 1
        lv = rec.get("level")
        if lv is not None:
            lc = self.levels
            lc[lv] = lc.get(lv, 0) + 1

    @property
    def deferring(self) -> bool:
        """Flow ends are still being deferred to merge() (``defer_head``)."""
        return self._defer_left > 0

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
            f = self.flows[name] = FlowState(self.cap, len(self.thresholds))
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
            if f.itype is None and md.get("interaction_type") is not None:
                f.itype = str(md.get("interaction_type"))
        if ts is not None:
            fs = self.flow_series
            b = ts[:LEVELS[fs.level]]
            r = fs.data.get((name, b))
            if r is None:
                r = fs.get(name, ts)
            r.add(d)
            dk = (name, ts[:10])
            r = self.daily.get(dk)
            if r is None:
                r = self.daily[dk] = Reservoir(self.daily_cap)
            r.add(d)
        rt = self.retention
        rt.flows += 1
        rt.from_records += 1
        rt.retained += 1                    # a record without metrics: the whole flow was written
        rule = rec.get("retained")
        rt.by_rule[rule if rule.__class__ is str else "all"] += 1
        self.retained_seen += 1
        fid = rec.get("flow_id")
        if len(self.slowest) < SLOWEST or d > self.slowest[0][0]:
            note_flow(self, d, name, fid, ts, rule if rule.__class__ is str else "all")
        if "host" in rec or "shard_ids" in rec:
            err = 1 if status != "success" and status is not None else 0
            _by(self, self.hosts, host_label(rec), 1, err, d=d)
            _by(self, self.shards, shard_label(rec), 1, err, d=d)
        self.end_flow(fid, name)

    def end_flow(self, fid, name):
        """A flow ended (its root record or root cycle span): its spans are judged now, or in merge() while
        deferring."""
        if fid is not None:
            if self._defer_left > 0:
                self._defer_left -= 1
                self.head_pending[fid] = name
            else:
                finish_flow(self, fid, name)

    def _retained_flow(self, rec, ts):
        """A flow_complete of a process with metrics: its numbers are counted there; the record names a
        whole flow (suggestions, slowest flows) and its command's metadata."""
        if rec.get("flow_kind", "flow") != "flow":
            return
        name = rec.get("flow_name") or "?"
        f = self.flows.get(name)
        if f is None:
            f = self.flows[name] = FlowState(self.cap, len(self.thresholds))
        md = rec.get("metadata")
        if md.__class__ is dict and md:
            if f.command is None and md.get("command") is not None:
                f.command = str(md.get("command"))
            if f.itype is None and md.get("interaction_type") is not None:
                f.itype = str(md.get("interaction_type"))
        rule = rec.get("retained")
        if rule is None and "retained" in rec:
            return                          # not retained: its spans were not written, nothing to analyse
        self.retained_seen += 1
        d = rec.get("duration_ms")
        fid = rec.get("flow_id")
        if d.__class__ in (int, float):
            note_flow(self, float(d), name, fid, ts, rule if rule.__class__ is str else "all")
        self.end_flow(fid, name)

    def new_job(self, name):
        c = self.op_cap
        j = self.jobs[name] = [Reservoir(c), Reservoir(c), Reservoir(c), Reservoir(c), Counter()]
        return j

    def new_cycle(self, name):
        c = self.cycles[name] = [Reservoir(self.op_cap), {}, 0, False]
        return c

    def _other(self, rec, t, ts):
        """Record types other than span, flow_complete and metrics (rare)."""
        if t == "resource":
            self._resource(rec, ts)
        elif t == "loop_blocked":
            self.loop_blocks.add(rec)
        elif t == "warning":
            c = rec.get("count")
            self.warnings[str(rec.get("code"))] += c if c.__class__ is int else 1
        elif t == "dropped":
            c = rec.get("count")
            self.dropped += c if c.__class__ is int else 0
        elif t == "explain":
            fold_explain(self, rec)

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


def aggregate(records: Iterable[dict], **kw) -> dict:
    """Convenience: ``Aggregator(**kw).add_all(records).result()`` (metrics records first, as files are read)."""
    agg = Aggregator(**kw)
    records = list(records)
    agg.add_all(r for r in records if r.get("type") == "metrics")
    agg.add_all(r for r in records if r.get("type") != "metrics")
    agg.flush_open()
    return agg.result()


def suggest(records: Iterable[dict], **options) -> list[dict]:
    """Pure function: suggestions for an iterable of records."""
    agg_kw = {k: options.pop(k) for k in ("n_plus_one_min", "index_min_rows") if k in options}
    agg = Aggregator(**agg_kw)
    agg.add_all(records)
    agg.flush_open()
    return suggestions_from(agg, **options)
