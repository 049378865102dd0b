"""Folding one Aggregator into another (several files, processes or chunks)."""
from __future__ import annotations

import heapq

from .dist import merge_res
from .flowtrack import finish_flow
from .metricsfold import SLOWEST
from .state import fold

__all__ = ["merge"]


def merge(agg, other):
    """Fold another Aggregator (e.g. from another file / process) into this one."""
    agg.types.update(other.types)
    agg.levels.update(other.levels)
    agg._first = min(agg._first, other._first)
    agg._last = max(agg._last, other._last)

    def _combine_flows(mine, f):
        _combine_counts(mine, f)
        mine.over = [a + b for a, b in zip(mine.over, f.over)]
        mine.fr_n += f.fr_n
        mine.fr_ok += f.fr_ok
        if f.fr_res is not None:
            if mine.fr_res is None:
                mine.fr_res = f.fr_res
            else:
                mine.fr_res = merge_res(mine.fr_res, f.fr_res)
        for k, v in f.statuses.items():
            mine.statuses[k] = mine.statuses.get(k, 0) + v
        mine.command = mine.command or f.command
        mine.itype = mine.itype or f.itype
    fold(agg.flows, other.flows, _combine_flows)
    agg.all_over = [a + b for a, b in zip(agg.all_over, other.all_over)]

    def _combine_ops(mine, op):
        _combine_counts(mine, op)
        mine.merge_budget(op)
    fold(agg.ops, other.ops, _combine_ops)

    def _combine_db(mine, db):
        mine.res = merge_res(mine.res, db.res)
        mine.errors += db.errors
        mine.merge_budget(db)
        mine.flows += db.flows
        mine.flow_ms += db.flow_ms
        mine.flow_names.update(db.flow_names)
        mine.calls_by_flow.update(db.calls_by_flow)
        mine.statement = mine.statement or db.statement
        mine.operation = mine.operation or db.operation
        mine.system = mine.system or db.system
        mine.rows += db.rows
        mine.seq_scans = db.seq_scans if db.seq_scans is not None else mine.seq_scans
        mine.explained += db.explained
    fold(agg.db, other.db, _combine_db)
    agg.db_count += other.db_count
    agg.db_total += other.db_total

    def _combine_jobs(mine, j):
        for i in range(4):
            mine[i] = merge_res(mine[i], j[i])
        mine[4].update(j[4])
    fold(agg.jobs, other.jobs, _combine_jobs)

    def _combine_cycles(mine, c):
        mine[0] = merge_res(mine[0], c[0])
        mine[3] = mine[3] or c[3]
        for a, v in c[1].items():
            mine[1][a] = mine[1].get(a, 0) + v
        mine[2] += c[2]
    fold(agg.cycles, other.cycles, _combine_cycles)
    agg.res_n += other.res_n
    for k, m in other.res_metrics.items():
        x = agg.res_metrics[k]
        x[0] += m[0]
        x[1] += m[1]
        x[2] = max(x[2], m[2])
    agg.res_series.absorb(other.res_series)
    agg.flow_series.absorb(other.flow_series)

    for k, r in other.daily.items():
        mine = agg.daily.get(k)
        agg.daily[k] = r if mine is None else merge_res(mine, r)
    agg.coverage |= other.coverage
    agg.metrics_records += other.metrics_records
    agg.retention.merge(other.retention)
    agg.retained_seen += other.retained_seen
    for item in other.slowest:
        if len(agg.slowest) < SLOWEST:
            heapq.heappush(agg.slowest, item)
        elif item > agg.slowest[0]:
            heapq.heapreplace(agg.slowest, item)
    for mine_t, theirs_t in ((agg.hosts, other.hosts), (agg.shards, other.shards)):
        for k, row in theirs_t.items():
            m = mine_t.get(k)
            if m is None:
                mine_t[k] = row
            else:
                m[0].merge(row[0])
                m[1] += row[1]

    agg.loop_blocks.merge(other.loop_blocks)
    agg.warnings.update(other.warnings)
    agg.dropped += other.dropped

    def _combine_n_plus_one(mine, s):
        mine[0] += s[0]
        mine[1] += s[1]
        mine[2] = max(mine[2], s[2])
        mine[3] += s[3]
    fold(agg.n_plus_one, other.n_plus_one, _combine_n_plus_one)

    def _combine_seq_io(mine, s):
        mine[0] += s[0]
        mine[1] += s[1]
        mine[2] += s[2]
        mine[3] = max(mine[3], s[3])
    fold(agg.seq_io, other.seq_io, _combine_seq_io)
    for k, v in other.flow_counts.items():
        agg.flow_counts[k] = agg.flow_counts.get(k, 0) + v
    for fid, name in other.head_pending.items():
        mine = agg.open.pop(fid, None)
        theirs = other.open.pop(fid, None)
        if mine is not None and theirs is not None:
            mine.items.extend(theirs.items)
        combined = mine if mine is not None else theirs
        if combined is not None:
            agg.open[fid] = combined
        finish_flow(agg, fid, name)
    other.head_pending = {}

    def _combine_open(mine, of):
        mine.items.extend(of.items)
    fold(agg.open, other.open, _combine_open)
    return agg


def _combine_counts(mine, other):
    """What a flow's and an operation's state both keep: the reservoir, errors and the SLA counts."""
    mine.res = merge_res(mine.res, other.res)
    mine.errors += other.errors
    mine.sla_ms = mine.sla_ms if mine.sla_ms is not None else other.sla_ms
    mine.sla_known += other.sla_known
    mine.sla_missed += other.sla_missed

