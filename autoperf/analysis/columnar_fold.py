"""How the columnar reader folds one chunk into the :class:`Aggregator` (see columnar.py's module doc).

The chunk is loaded as DuckDB view ``c`` (row order ``rn``). Per-key group-bys fill the Aggregator's
counters and reservoirs in order of first appearance, so the state is the Python path's; records the SQL
does not cover (resource, loop_blocked, job and cycle spans, EXPLAIN plans ...) go through the
Aggregator's own code, decoded from their lines.
"""
from __future__ import annotations

import orjson

from .state import DEADLINE_MS, LEVELS

__all__ = ["ChunkFolding"]


def _sla_value(text, fallback):
    """The record's own sla_ms as the Python path keeps it (int stays int), else the configured one."""
    if text is not None:
        try:
            return int(text)
        except ValueError:
            try:
                return float(text)
            except ValueError:
                pass
    return fallback


# a span's threshold_ms per key: calls that carried one, calls over it, the latest one (as JSON text)
_BUDGET = ("count(*) FILTER (th IS NOT NULL), count(*) FILTER (d > th), "
           "arg_max(th_txt, rn) FILTER (th IS NOT NULL)")


def _fold_budget(state, known, over, th_txt) -> None:
    if known:
        state.threshold_ms = _sla_value(th_txt, None)
        state.th_known += known
        state.th_over += over


class ChunkFolding:
    """The fold of :class:`~autoperf.analysis.columnar.ColumnarReader` (a mixin: it uses the reader's
    ``agg``, ``con``, ``flows``, ``seq``, ``line()`` and ``_typeless``)."""

    def _fold(self) -> None:
        agg, con = self.agg, self.con
        # objects without a type count as type None (their timestamp and level too), in file order
        extra_t, extra_l = {}, {}
        for rn, rec in self._typeless:
            x = extra_t.setdefault(None, [0, rn])
            x[0] += 1
            lv = rec.get("level")
            if lv is not None:
                x = extra_l.setdefault(lv, [0, rn])
                x[0] += 1
            ts = rec.get("timestamp")
            if ts.__class__ is str:
                agg._first = min(agg._first, ts)
                agg._last = max(agg._last, ts)
        for counter, sql, extra in (
                (agg.types, "SELECT type, count(*), min(rn) m FROM c GROUP BY type", extra_t),
                (agg.levels, "SELECT level, count(*), min(rn) m FROM c WHERE level IS NOT NULL GROUP BY level",
                 extra_l)):
            rows = con.execute(sql).fetchall() + [(k, n, rn) for k, (n, rn) in extra.items()]
            rows.sort(key=lambda r: r[2])
            for k, n, _m in rows:
                counter[k] = counter.get(k, 0) + n
        lo, hi = con.execute("SELECT min(ts), max(ts) FROM c").fetchone()
        if lo is not None:
            agg._first = min(agg._first, lo)
            agg._last = max(agg._last, hi)
        self._flow_completes()
        self._operations()
        self._rare_and_db()
        self.flows.fold(self.seq)

    # ------------------------------------------------------------------ flow_complete -> commands
    def _flow_completes(self) -> None:
        agg, con = self.agg, self.con
        con.execute("""CREATE OR REPLACE TEMP TABLE fc AS
            SELECT c.rn, coalesce(nullif(c.flow_name, ''), '?') AS name, c.d, c.ts, c.status, c.err, c.sla_txt,
                   coalesce(TRY_CAST(c.sla_txt AS DOUBLE), s.sla) AS esla, TRY_CAST(c.sla_txt AS DOUBLE) IS NOT NULL
                   AS own_sla, c.command, c.itype, c.fr, c.dm
            FROM c LEFT JOIN cfg_sla s ON s.name = coalesce(nullif(c.flow_name, ''), '?')
            WHERE c.type = 'flow_complete' AND (c.flow_kind IS NULL OR c.flow_kind = 'flow') AND c.d IS NOT NULL""")
        over = ", ".join(f"count(*) FILTER (d > {float(t)!r})" for t in agg.thresholds) or "0"
        rows = con.execute(f"""
            SELECT name, list(d ORDER BY rn), count(*) FILTER (err),
                   count(*) FILTER (esla IS NOT NULL), count(*) FILTER (d > esla),
                   arg_max(sla_txt, rn) FILTER (esla IS NOT NULL), arg_max(own_sla, rn) FILTER (esla IS NOT NULL),
                   count(*) FILTER (fr IS NOT NULL OR dm IS TRUE),
                   count(*) FILTER (fr IS NOT NULL AND fr < {DEADLINE_MS!r} AND dm IS NOT TRUE),
                   list(fr ORDER BY rn) FILTER (fr IS NOT NULL),
                   arg_min(command, rn) FILTER (command IS NOT NULL), [{over}],
                   arg_min(itype, rn) FILTER (itype IS NOT NULL), min(rn) m
            FROM fc GROUP BY name ORDER BY m""").fetchall()
        from .state import FlowState
        from .stats import Reservoir
        nth = len(agg.thresholds)
        for (name, vals, errors, known, missed, sla_txt, own, fr_n, fr_ok, frs, command, overs, itype, _m) in rows:
            f = agg.flows.get(name)
            if f is None:
                f = agg.flows[name] = FlowState(agg.cap, nth)
            f.res.add_many(vals)
            f.errors += errors
            if known:
                f.sla_ms = _sla_value(sla_txt if own else None, agg.sla.get(name))
                f.sla_known += known
                f.sla_missed += missed
            f.fr_n += fr_n
            f.fr_ok += fr_ok
            if frs:
                if f.fr_res is None:
                    f.fr_res = Reservoir(agg.op_cap)
                f.fr_res.add_many(frs)
            if f.command is None and command is not None:
                f.command = command
            if f.itype is None and itype is not None:
                f.itype = itype
            if nth:
                for i, n in enumerate(overs):
                    f.over[i] += n
                    agg.all_over[i] += n
        for name, status, n, _m in con.execute("SELECT name, status, count(*), min(rn) m FROM fc "
                                               "GROUP BY name, status ORDER BY m").fetchall():
            st = agg.flows[name].statuses
            st[status] = st.get(status, 0) + n
        for name, day, vals, _m in con.execute("SELECT name, substr(ts, 1, 10) AS day, list(d ORDER BY rn), "
                                               "min(rn) m FROM fc WHERE ts IS NOT NULL GROUP BY name, day "
                                               "ORDER BY m").fetchall():
            r = agg.daily.get((name, day))
            if r is None:
                r = agg.daily[(name, day)] = Reservoir(agg.daily_cap)
            r.add_many(vals)
        self._flow_series()

    def _flow_series(self) -> None:
        """Per-command time buckets. They coarsen when a new bucket would exceed ``max_buckets`` — on the Python
        path at that very record — so the chunk is folded in segments cut at those records."""
        fs, con = self.agg.flow_series, self.con
        last = len(LEVELS) - 1
        lo = None
        for finest, rn in con.execute(f"SELECT substr(ts, 1, {LEVELS[0]}) AS k, min(rn) m FROM fc WHERE ts IS NOT NULL "
                                      "GROUP BY k ORDER BY m").fetchall():
            while True:                        # Buckets.get: add the key; coarsen and look again when too many
                b = finest[:LEVELS[fs.level]]
                if b in fs.keys:
                    break
                fs.keys.add(b)
                if len(fs.keys) <= fs.max_buckets or fs.level >= last:
                    break
                self._series_segment(lo, rn)   # the records before this one, at the old level
                lo = rn
                fs._coarsen()
        self._series_segment(lo, None)

    def _series_segment(self, lo, hi) -> None:
        fs = self.agg.flow_series
        where = ["ts IS NOT NULL"]
        if lo is not None:
            where.append(f"rn >= {lo}")
        if hi is not None:
            where.append(f"rn < {hi}")
        for name, b, vals, _m in self.con.execute(
                f"SELECT name, substr(ts, 1, {LEVELS[fs.level]}) AS b, list(d ORDER BY rn), min(rn) m FROM fc "
                f"WHERE {' AND '.join(where)} GROUP BY name, b ORDER BY m").fetchall():
            r = fs.data.get((name, b))
            if r is None:
                r = fs.data[(name, b)] = fs.new()
            r.add_many(vals)

    # ------------------------------------------------------------------ spans -> operations, fingerprints
    def _operations(self) -> None:
        from .state import OpState
        agg = self.agg
        for name, kind, vals, errors, sla_txt, known, missed, th_n, th_over, th_txt, _m in self.con.execute(
                "SELECT name, kind, list(d ORDER BY rn), count(*) FILTER (err), "
                "arg_max(sla_txt, rn) FILTER (sla IS NOT NULL), count(sla), count(*) FILTER (d > sla), "
                f"{_BUDGET}, min(rn) m "
                "FROM (SELECT *, TRY_CAST(sla_txt AS DOUBLE) AS sla FROM c) "
                "WHERE type = 'span' AND (kind IS DISTINCT FROM 'flow' OR NOT is_root) AND d IS NOT NULL "
                "GROUP BY name, kind ORDER BY m").fetchall():
            op = agg.ops.get((name, kind))
            if op is None:
                op = agg.ops[(name, kind)] = OpState(agg.op_cap)
            op.res.add_many(vals)
            op.errors += errors
            if known:
                op.sla_ms = _sla_value(sla_txt, None)
                op.sla_known += known
                op.sla_missed += missed
            _fold_budget(op, th_n, th_over, th_txt)

    def _rare_and_db(self) -> None:
        """Fingerprints and the records handled by the Python code, in file order where order matters
        (a fingerprint's statement comes from its first record; the most recent EXPLAIN wins)."""
        from .state import DbState, seq_scans_from_explain
        agg, con = self.agg, self.con
        con.execute("""CREATE OR REPLACE TEMP VIEW dbs AS
            SELECT rn, fp, d, err, a_explain, th, th_txt,
                   CASE WHEN regexp_full_match(a_rows, '-?[0-9]+') THEN TRY_CAST(a_rows AS HUGEINT) END AS nrows
            FROM c WHERE type = 'span' AND kind = 'db' AND d IS NOT NULL""")
        events = []      # (rn, order, ...) applied in file order
        per_fp = con.execute(f"""SELECT fp, list(d ORDER BY rn), count(*) FILTER (err), sum(nrows), sum(d), count(*),
                                        {_BUDGET}, min(rn) m FROM dbs GROUP BY fp ORDER BY m""").fetchall()
        for row in per_fp:
            if row[0] not in agg.db:
                events.append((row[-1], 0, "new", row[0]))
        for rn, fp, ex in con.execute("SELECT rn, fp, a_explain FROM dbs WHERE a_explain IS NOT NULL").fetchall():
            events.append((rn, 1, "explain", (fp, ex)))
        for (rn,) in con.execute("SELECT rn FROM c WHERE rare ORDER BY rn").fetchall():
            events.append((rn, 1, "rare", None))
        events.sort(key=lambda e: (e[0], e[1]))
        loads = orjson.loads
        for rn, _o, what, x in events:
            if what == "new":
                if x not in agg.db:          # statement, operation, system: from the fingerprint's first span
                    attrs = loads(self.line(rn)).get("attrs")
                    if attrs.__class__ is not dict:
                        attrs = {}
                    db = agg.db[x] = DbState(agg.op_cap)
                    db.statement, db.operation, db.system = (attrs.get("statement"), attrs.get("operation"),
                                                             attrs.get("system"))
            elif what == "explain":
                fp, ex = x
                if ex.startswith('"'):        # an EXPLAIN kept as a JSON string: the Python path sees the string
                    ex = loads(ex)
                scans = seq_scans_from_explain(ex, agg.index_min_rows)
                if scans is not None:
                    db = agg.db[fp]
                    db.seq_scans = scans
                    db.explained += 1
            else:
                self._rare(loads(self.line(rn)))
        for fp, vals, errors, nrows, total, n, th_n, th_over, th_txt, _m in per_fp:
            db = agg.db[fp]
            db.res.add_many(vals)
            db.errors += errors
            _fold_budget(db, th_n, th_over, th_txt)
            if nrows is not None:
                db.rows += int(nrows)
            agg.db_count += n
            agg.db_total += total

    def _rare(self, rec: dict) -> None:
        agg = self.agg
        t = rec.get("type")
        ts = rec.get("timestamp")
        if ts.__class__ is not str:
            ts = None
        if t != "span":
            agg._other(rec, t, ts)
            return
        d = rec.get("duration_ms")
        if d.__class__ is not float:
            if d.__class__ is not int:
                return
            d = float(d)
        name = rec.get("name") or "?"
        if rec.get("kind") == "job":
            agg._job(rec, name, d)
        else:                                   # cycle (its operation row and its flow end are done in SQL)
            status = rec.get("status")
            agg._cycle(rec, name, d, status != "success" and status is not None)
