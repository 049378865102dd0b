"""Per-flow bookkeeping for the suggestions (N+1, cache candidates, awaits that could be gathered).

Functions over the :class:`~autoperf.analysis.aggregate.Aggregator`'s state: the db/http spans of a flow are held
(at most ``open_flows_cap`` flows in flight, 500 spans each) until the flow ends, then folded into
``n_plus_one``, ``seq_io``, ``flow_counts`` and the fingerprints' ``flows`` / ``flow_names``. Sibling
statements of one transaction are never counted as awaits that could run concurrently.
"""
from __future__ import annotations

from .state import OpenFlow, transaction_marker

__all__ = ["open_flow", "finish_flow", "flush_open"]


def open_flow(agg, fid, name):
    if len(agg.open) >= agg.open_flows_cap:
        old = next(iter(agg.open))
        agg.evicted_open += 1
        finish_flow(agg, old, None)
    of = agg.open[fid] = OpenFlow(name)
    return of

def finish_flow(agg, fid, name):
    of = agg.open.pop(fid, None)
    if name is not None:
        fc = agg.flow_counts
        fc[name] = fc.get(name, 0) + 1
    if of is None:
        return
    items = of.items
    if not items:
        return
    fname = name or of.name or "?"
    dbs = agg.db
    if len(items) == 1:                           # common and cheap: nothing to pair up
        fp = items[0][5]
        if fp is not None:
            _seen_in_flow(dbs.get(fp), fname, items[0][2])
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
    n1 = agg.n_plus_one_min
    for fp, (n, ms) in fps.items():
        _seen_in_flow(dbs.get(fp), fname, ms)
        if n >= n1:
            k = (fname, fp)
            s = agg.n_plus_one.get(k)
            if s is None:
                s = agg.n_plus_one[k] = [0, 0, 0, 0.0]
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
    tol = agg.io_tol
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
            timed = outside_transactions(agg, timed)
            if len(timed) < 2:
                continue
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
            total = 0.0
            mx = 0.0
            for x in timed:
                dd = x[1]
                total += dd
                if dd > mx:
                    mx = dd
            add_seq_io(agg, seq_io_key(agg, fname, tuple([x[2] for x in timed])), 1, total - mx, total,
                             total - mx)

def outside_transactions(agg, timed):
    """The siblings (sorted by start) that are not a transaction's BEGIN / COMMIT nor run between them:
    the statements of one transaction run on one connection, one after the other — never concurrently.
    Depth = starts minus ends among the earlier siblings."""
    dbs = agg.db
    kept, depth = [], 0
    for x in timed:
        db = dbs.get(x[3]) if x[3] is not None else None
        m = transaction_marker(db.operation, db.statement) if db is not None else 0
        if m == 0 and depth <= 0:
            kept.append(x)
        depth += m
    return kept

def seq_io_key(agg, fname, names: tuple):
    """(flow, run-length labels such as "db.fetch ×2", number of spans, 9 meaning more than 8)."""
    shape = (fname, names)
    k = agg._shapes.get(shape)
    if k is None:
        runs = []
        for n in names:
            if runs and runs[-1][0] == n:
                runs[-1][1] += 1
            else:
                runs.append([n, 1])
        labels = tuple(n if c == 1 else f"{n} ×{c}" for n, c in runs[:8])
        k = (fname, labels, len(names) if len(names) <= 8 else 9)
        if len(agg._shapes) < 10000:
            agg._shapes[shape] = k
    return k

def add_seq_io(agg, k, n, sum_saving, sum_total, max_saving):
    s = agg.seq_io.get(k)
    if s is None:
        if len(agg.seq_io) > 5000:
            return
        s = agg.seq_io[k] = [0, 0.0, 0.0, 0.0]
    s[0] += n
    s[1] += sum_saving
    s[2] += sum_total
    if max_saving > s[3]:
        s[3] = max_saving

def flush_open(agg) -> None:
    """Finish flows whose root record never arrived (crash, time window edge)."""
    for fid in list(agg.open):
        finish_flow(agg, fid, None)


def _seen_in_flow(db, fname, ms):
    """One more flow ran the statement for ``ms`` in all (cache advice); its flow names, at most 50 kept."""
    if db is not None:
        db.flows += 1
        db.flow_ms += ms
        fn = db.flow_names
        if fname in fn or len(fn) < 50:
            fn[fname] += 1
