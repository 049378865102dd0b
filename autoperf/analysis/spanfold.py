"""``span`` and ``explain`` records folded into the Aggregator's state.

Functions over the :class:`~autoperf.analysis.aggregate.Aggregator`'s state, as metricsfold is for
``metrics`` records: operations, statements and their captured plans, pool jobs, cycles, and the db/http
steps each flow holds for the suggestions (flowtrack). A covered process's span (metricsfold.covered) goes
to ``fold_retained_span``: details only, its counts come from the metrics.
"""
from __future__ import annotations

from .flowtrack import open_flow
from .state import DbState, OpState, seq_scans_from_explain

__all__ = ["fold_span", "fold_retained_span", "fold_explain"]


def fold_span(agg, rec, ts):
    """A span counted from its record: its operation, statement, job or cycle, and a db/http step held for
    its flow's suggestions."""
    kind = rec.get("kind")
    if kind == "flow" and rec.get("span_id") == rec.get("flow_id"):
        return                      # root flows are counted from flow_complete; a nested one is a step
    d = rec.get("duration_ms")
    if d.__class__ is not float:
        if d.__class__ is not int:
            return
        d = float(d)
    name = rec.get("name") or "?"
    err = rec.get("status") != "success"
    k = (name, kind)
    op = agg.ops.get(k)
    if op is None:
        op = agg.ops[k] = OpState(agg.op_cap)
    r = op.res
    c = r.count
    if c < r.cap:                       # Reservoir.add, exact phase, inlined (hot path; as in _flow_complete)
        r.count = c + 1
        r.values.append(d)
    else:
        r.add(d)
    if err and rec.get("status") is not None:
        op.errors += 1
    else:
        err = False
    sla = rec.get("sla_ms")
    if sla is not None and (sla.__class__ is float or sla.__class__ is int):
        op.sla_ms = sla
        op.sla_known += 1
        if d > sla:
            op.sla_missed += 1
    th = rec.get("threshold_ms")
    if th is not None and (th.__class__ is float or th.__class__ is int):
        op.count(th, d)
    if kind == "db" or kind == "http":
        fp = None
        if kind == "db":
            attrs, fp = _db_key(rec, name)
            db = agg.db.get(fp)
            if db is None:
                db = agg.db[fp] = DbState(agg.op_cap)
                db.statement = attrs.get("statement")
                db.operation = attrs.get("operation")
                db.system = attrs.get("system")
            r = db.res
            c = r.count
            if c < r.cap:               # Reservoir.add inlined (hot path; as above)
                r.count = c + 1
                r.values.append(d)
            else:
                r.add(d)
            agg.db_count += 1
            agg.db_total += d
            if err:
                db.errors += 1
            if th is not None and (th.__class__ is float or th.__class__ is int):
                db.count(th, d)
            rows = attrs.get("rows")
            if rows.__class__ is int:
                db.rows += rows
            _explained(agg, db, attrs)
        _hold_step(agg, rec, rec.get("flow_id"), ts, d, name, kind, fp)
        return
    if kind == "job":
        _job(agg, rec, name, d)
    elif kind == "cycle":
        _cycle(agg, rec, name, d, err)
        fid = rec.get("flow_id")
        if fid is not None and rec.get("span_id") == fid:
            agg.end_flow(fid, name)


def _hold_step(agg, rec, fid, ts, d, name, kind, fp):
    """A db/http step held in its open flow for the suggestions (at most 500 per flow)."""
    if agg.track_flows and fid is not None and rec.get("span_id") != fid:
        of = agg.open.get(fid)
        if of is None:
            of = open_flow(agg, fid, rec.get("flow_name"))
        if len(of.items) < 500:
            of.items.append((rec.get("parent_id"), ts, d, name, kind, fp))


def fold_retained_span(agg, rec, ts):
    """A span of a process with metrics: no count; statements, plans, job and cycle details and the
    per-flow bookkeeping of the suggestions."""
    kind = rec.get("kind")
    fid = rec.get("flow_id")
    if kind == "flow" and rec.get("span_id") == fid:
        return
    d = rec.get("duration_ms")     # the duration check of fold_span, inline: once per record
    if d.__class__ is not float:
        if d.__class__ is not int:
            return
        d = float(d)
    name = rec.get("name") or "?"
    # fold_span's db/http steps in shape, not in meaning: details only (no DbState made, nothing counted)
    if kind == "db" or kind == "http":
        fp = None
        if kind == "db":
            attrs, fp = _db_key(rec, name)
            db = agg.db.get(fp)
            if db is None:
                st = attrs.get("statement")
                db = agg.db.get(st) if st.__class__ is str else None
                if db is not None:
                    fp = st
                elif agg.db_on_demand is not None:     # the metrics are folded elsewhere (split.py)
                    db = agg.db[fp] = DbState(agg.op_cap)
                    agg.db_on_demand.add(fp)
            if db is not None:
                if attrs.get("statement"):
                    db.statement = attrs.get("statement")
                db.operation = attrs.get("operation") or db.operation
                db.system = attrs.get("system") or db.system
                _explained(agg, db, attrs)
        _hold_step(agg, rec, fid, ts, d, name, kind, fp)
    elif kind == "job":
        _job(agg, rec, name, d, detail_only=True)
    elif kind == "cycle":
        attrs = rec.get("attrs")
        c = agg.cycles.get(name) or agg.new_cycle(name)
        if attrs.__class__ is dict:
            sums = c[1]
            for k2, v in attrs.items():
                if v.__class__ is int or v.__class__ is float:
                    sums[k2] = sums.get(k2, 0) + v
        if fid is not None and rec.get("span_id") == fid:
            agg.retained_seen += 1
            agg.end_flow(fid, name)


def fold_explain(agg, rec):
    """An `explain` record (asyncpg `explain: true`): remember big sequential scans of the fingerprint."""
    fp = rec.get("fingerprint") or rec.get("statement")
    if fp is None:
        return
    fp = str(fp)
    db = agg.db.get(fp)
    if db is None:
        db = agg.db[fp] = DbState(agg.op_cap)
        db.statement = rec.get("statement")
        db.operation = "SELECT"
        db.system = rec.get("system")
    scans = seq_scans_from_explain(rec.get("plan"), agg.index_min_rows, rec.get("relations"))
    if scans is not None:
        db.seq_scans = scans
        db.explained += 1


def _job(agg, rec, name, d, detail_only=False):
    attrs = rec.get("attrs")
    if attrs.__class__ is not dict:
        attrs = {}
    j = agg.jobs.get(name)
    if j is None:
        j = agg.new_job(name)
    if not detail_only:
        j[0].add(d)
    for i, key in () if detail_only else ((1, "queue_wait_ms"), (2, "run_ms"), (3, "transfer_ms")):
        v = attrs.get(key)
        if v is not None and (v.__class__ is float or v.__class__ is int):
            j[i].add(v)
    ex = attrs.get("executor")
    if ex is not None and not detail_only:      # a covered process: its metrics counted every job's
        j[4][str(ex)] += 1


def _cycle(agg, rec, name, d, err):
    """A cycle span's own numbers (its end also ends its flow: see fold_span)."""
    attrs = rec.get("attrs")
    if attrs.__class__ is not dict:
        attrs = {}
    c = agg.cycles.get(name)
    if c is None:
        c = agg.new_cycle(name)
    c[0].add(d)
    if err:
        c[2] += 1
    sums = c[1]
    for k2, v in attrs.items():
        if v.__class__ is int or v.__class__ is float:
            sums[k2] = sums.get(k2, 0) + v


def _explained(agg, db, attrs):
    """A captured plan's sequential scans (index advice) onto the statement's state."""
    ex = attrs.get("explain")
    if ex is not None:
        scans = seq_scans_from_explain(ex, agg.index_min_rows)
        if scans is not None:
            db.seq_scans = scans
            db.explained += 1


def _db_key(rec: dict, name: str):
    """A db span's attrs (a dict) and the key its statement is aggregated under: the fingerprint, else
    the statement, else the span's name."""
    attrs = rec.get("attrs")
    if attrs.__class__ is not dict:
        attrs = {}
    fp = attrs.get("fingerprint") or attrs.get("statement") or name
    return attrs, fp if fp.__class__ is str else str(fp)
