"""``metrics`` records (issue 14, docs/records.md) folded into the Aggregator's state.

Counts, sums and percentiles of every key come from the records' histograms (``dist.Dist``). A
process (host, pid, UTC day) that wrote metrics is *covered*: its ``span`` / ``flow_complete``
records then only feed what needs whole flows (suggestions, slowest flows, statements, metadata),
never a count — see ``covered``. Processes without metrics (old logs) count from their records.
Read the metrics records first (``reader.expand_inputs`` puts the metrics_ files first).
"""
from __future__ import annotations

import heapq
import itertools
import re
from collections import Counter

from autoperf.metrics.exphist import bucket_index, lower_bound

from .dist import Dist, as_dist
from .state import DEADLINE_MS, LEVELS, DbState, FlowState, OpState

__all__ = ["fold_metrics", "covered", "note_flow", "host_label", "shard_label", "Retention", "SLOWEST"]

_seq = itertools.count()
_HEX16 = re.compile(r"^[0-9a-f]{16}$")
SLOWEST = 20                # flows kept for the "slowest flows" list (exemplars and retained flows)


class Retention:
    """How many root flows ran, how many were kept whole and by which rule (``retained_by``)."""
    __slots__ = ("flows", "retained", "by_rule", "from_metrics", "from_records")

    def __init__(self):
        self.flows = 0
        self.retained = 0
        self.by_rule = Counter()
        self.from_metrics = 0       # flows counted from metrics records
        self.from_records = 0       # flows counted from flow_complete records (processes without metrics)

    def merge(self, o):
        self.flows += o.flows
        self.retained += o.retained
        self.by_rule.update(o.by_rule)
        self.from_metrics += o.from_metrics
        self.from_records += o.from_records

    def to_dict(self):
        return {"flows": self.flows, "retained": self.retained, "by_rule": dict(self.by_rule.most_common()),
                "from_metrics": self.from_metrics, "from_records": self.from_records}


def covered(agg, rec, ts) -> bool:
    """The record's process wrote metrics that day: its durations are counted there already."""
    return (rec.get("host"), rec.get("pid"), ts[:10] if ts is not None else None) in agg.coverage


def host_label(rec):
    return rec.get("host")


def shard_label(rec):
    s = rec.get("shard_ids")
    if isinstance(s, list) and s:
        return ",".join(str(x) for x in s)
    return None


def _by(agg, table, label, cnt, err, hist=None, d=None, rec=None):
    """Per-host / per-shard root flow counts and durations."""
    if label is None:
        return
    row = table.get(label)
    if row is None:
        row = table[label] = [Dist(), 0]
    if hist is not None:
        row[0].add_metrics(hist, cnt, rec.get("sum_ms") or 0.0, rec.get("min_ms"), rec.get("max_ms"))
    else:
        row[0].add(d)
    row[1] += err


def note_flow(agg, d, name, fid, ts, retained):
    """A candidate for the slowest-flows list (a bounded min-heap)."""
    item = (d, fid or "", next(_seq), (name, ts, retained))
    h = agg.slowest
    if len(h) < SLOWEST:
        heapq.heappush(h, item)
    elif item > h[0]:
        heapq.heapreplace(h, item)


def _series(buckets, name, ts, hist, cnt, rec):
    r = buckets.get(name, ts)
    k = (name, ts[:LEVELS[buckets.level]])
    if r.__class__ is not Dist:
        r = buckets.data[k] = Dist(r)
    r.add_metrics(hist, cnt, rec.get("sum_ms") or 0.0, rec.get("min_ms"), rec.get("max_ms"))


#: a job's measures besides its duration (metrics/stage.py) -> their place in the report's job entry
_JOB_PARTS = {"queue_wait": 1, "run": 2, "transfer": 3}


def fold_metrics(agg, rec, ts) -> None:
    cnt = rec.get("count")
    hist = rec.get("hist")
    if cnt.__class__ is not int or cnt <= 0 or hist.__class__ is not dict:
        return
    agg.metrics_records += 1
    host, pid = rec.get("host"), rec.get("pid")
    cov = agg.coverage
    if ts is not None:
        cov.add((host, pid, ts[:10]))
    start = rec.get("interval_start")
    if start.__class__ is str:
        cov.add((host, pid, start[:10]))
        if start < agg._first:
            agg._first = start
    name = rec.get("name") or "?"
    kind = rec.get("kind")
    status = rec.get("status")
    err = status != "success" and status is not None
    sum_ms = rec.get("sum_ms")
    sum_ms = float(sum_ms) if sum_ms.__class__ in (int, float) else 0.0
    mn, mx = rec.get("min_ms"), rec.get("max_ms")
    args = (hist, cnt, sum_ms, mn, mx)
    if rec.get("root") is True and kind == "flow":
        _root_flow(agg, rec, ts, name, status, err, cnt, args)
        return
    if kind == "job":
        part = _JOB_PARTS.get(rec.get("measure"))
        if part is not None:        # a job's queue wait / run / transfer: no call of its own
            j = agg.jobs.get(name)
            if j is None:
                j = agg.new_job(name)
            r = j[part]
            if r.__class__ is not Dist:
                r = j[part] = Dist(r)
            r.add_metrics(*args)
            return
    k = (name, kind)
    op = agg.ops.get(k)
    if op is None:
        op = agg.ops[k] = OpState(agg.op_cap)
    as_dist(op).add_metrics(*args)
    if err:
        op.errors += cnt
    sla = rec.get("sla_ms")
    if sla.__class__ in (int, float):
        op.sla_ms = sla
        op.sla_known += cnt
        op.sla_missed += int(rec.get("over_sla") or 0)
    th = rec.get("threshold_ms")
    if th.__class__ in (int, float):
        _budget(op, th, cnt, rec)
    if kind == "db":
        fp = rec.get("fingerprint") or name
        fp = fp if fp.__class__ is str else str(fp)
        db = agg.db.get(fp)
        if db is None:
            db = agg.db[fp] = DbState(agg.op_cap)
        if db.statement is None:        # the record's statement label, else normalised SQL as the key
            st = rec.get("statement")
            st = st if st.__class__ is str else None if _HEX16.match(fp) else fp
            if st:
                db.statement = st
                word = st.split(None, 1)
                db.operation = db.operation or (word[0].upper() if word else None)
        as_dist(db).add_metrics(*args)
        fn = rec.get("flow_name")
        if fn.__class__ is str and (fn in db.calls_by_flow or len(db.calls_by_flow) < 50):
            db.calls_by_flow[fn] += cnt
        agg.db_count += cnt
        agg.db_total += sum_ms
        if err:
            db.errors += cnt
        if th.__class__ in (int, float):
            _budget(db, th, cnt, rec)
    elif kind == "job":
        j = _fed_entry(agg.jobs, name, agg.new_job, args)
        ex = rec.get("executor")
        if ex.__class__ is str:
            j[4][ex] += cnt
    elif kind == "cycle":
        c = _fed_entry(agg.cycles, name, agg.new_cycle, args)
        if err:
            c[2] += cnt
        c[3] = True                 # captured sums come from retained cycles only
    if rec.get("root") is True:
        _retention(agg, rec, cnt, flow=False)


def _fed_entry(table, name, new, args):
    """A job's or cycle's entry in ``table`` (made by ``new(name)`` when first seen), its durations
    (item 0, a Dist from now on) fed the metrics record's histogram ``args``."""
    e = table.get(name)
    if e is None:
        e = new(name)
    r = e[0]
    if r.__class__ is not Dist:
        r = e[0] = Dist(r)
    r.add_metrics(*args)
    return e


def _budget(state, th, cnt, rec):
    state.threshold_ms = th
    state.th_known += cnt
    state.th_over += int(rec.get("over_threshold") or 0)


def _retention(agg, rec, cnt, flow):
    if not flow:
        return
    r = agg.retention
    r.flows += cnt
    r.from_metrics += cnt
    n = rec.get("retained")
    if n.__class__ is int:
        r.retained += n
    by = rec.get("retained_by")
    if by.__class__ is dict:
        for rule, v in by.items():
            if v.__class__ is int:
                r.by_rule[str(rule)] += v


def _root_flow(agg, rec, ts, name, status, err, cnt, args):
    f = agg.flows.get(name)
    if f is None:
        f = agg.flows[name] = FlowState(agg.cap, len(agg.thresholds))
    if f.itype is None:             # labels: what kind of command (when none of its flows was retained)
        v = rec.get("interaction_type")
        f.itype = v if v.__class__ is str else None
    if f.command is None:
        v = rec.get("command")
        f.command = v if v.__class__ is str else None
    hist = args[0]
    measure = rec.get("measure") or "duration"
    if measure == "first_response":
        late = rec.get("deadline_missed")       # answered, but after the deadline
        if late.__class__ is not int:
            late = count_above(hist, cnt, args[4], DEADLINE_MS)
        f.fr_n += cnt - late            # the late ones are in deadline_missed (the duration record)
        f.fr_ok += cnt - late
        if f.fr_res is None:
            f.fr_res = Dist()
        elif f.fr_res.__class__ is not Dist:
            f.fr_res = Dist(f.fr_res)
        f.fr_res.add_metrics(*args)
        return
    as_dist(f).add_metrics(*args)
    agg._all_cache = None
    f.statuses[status] = f.statuses.get(status, 0) + cnt
    if err:
        f.errors += cnt
    sla = rec.get("sla_ms")
    over = rec.get("over_sla")
    if sla.__class__ not in (int, float):
        sla, over = agg.sla.get(name), None
    if sla is not None:
        if over.__class__ is not int:
            over = count_above(hist, cnt, args[4], sla)
        f.sla_ms = sla
        f.sla_known += cnt
        f.sla_missed += over
    mx = args[4]
    if mx is not None and mx > agg._th_min:
        th = agg.thresholds
        for i in range(len(th)):
            n = count_above(hist, cnt, mx, th[i])
            f.over[i] += n
            agg.all_over[i] += n
    dm = rec.get("deadline_missed")
    if dm.__class__ is int:
        f.fr_n += dm
    if ts is not None:
        _series(agg.flow_series, name, ts, hist, cnt, rec)
        dk = (name, ts[:10])
        r = agg.daily.get(dk)
        if r is None:
            r = agg.daily[dk] = Dist()
        elif r.__class__ is not Dist:
            r = agg.daily[dk] = Dist(r)
        r.add_metrics(*args)
    _retention(agg, rec, cnt, flow=True)
    for ex in rec.get("exemplars") or ():
        if ex.__class__ is dict and ex.get("duration_ms").__class__ in (int, float):
            note_flow(agg, float(ex["duration_ms"]), name, ex.get("flow_id"), ex.get("timestamp"), None)
    _by(agg, agg.hosts, host_label(rec), cnt, cnt if err else 0, hist=hist, rec=rec)
    _by(agg, agg.shards, shard_label(rec), cnt, cnt if err else 0, hist=hist, rec=rec)


def count_above(hist: dict, cnt: int, max_ms, limit_ms: float) -> int:
    """Observations of a record's histogram above ``limit_ms`` (a bucket that straddles it counts as
    above: ExpHistogram.count_above, read from the record's dict without building the histogram)."""
    if max_ms is not None and max_ms <= limit_ms:
        return 0
    if limit_ms < 0:
        return cnt
    counts = hist.get("counts") or ()
    if limit_ms == 0:
        return sum(counts)
    scale, offset = hist.get("scale", 6), hist.get("offset") or 0
    t = limit_ms / 1000.0
    index = bucket_index(t, scale)
    if t >= lower_bound(index + 1, scale):
        index += 1
    return sum(counts[max(index - offset, 0):])
