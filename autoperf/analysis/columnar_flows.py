"""Per-flow suggestion state (flowtrack.py) computed with SQL over one chunk of the columnar reader.

The Python path holds a flow's db/http spans until the flow ends (its flow_complete, or its own span for
a cycle), then counts N+1 repeats, distinct flows per fingerprint and sibling I/O that never overlapped.
Here every such span is matched to the *next* end of its flow (an ASOF join on row order), which is the
same grouping; spans whose flow has not ended by the chunk's end go back to ``Aggregator.open`` and
re-enter the next chunk (so a Python-path chunk, ``flush_open`` and the cap on open flows all work on
the same state). Flows still open beyond ``open_flows_cap`` are ended (unnamed) after the chunk, not
at the record that overflowed it, as the Python path does.
"""
from __future__ import annotations

import orjson

from .state import OpenFlow, transaction_marker

__all__ = ["FlowChunks"]

_MAX_ITEMS = 500           # spans kept per open flow (flowtrack: `if len(items) < 500`)


class FlowChunks:
    def __init__(self, reader):
        self.reader = reader
        self.con = reader.con
        self.agg = reader.agg
        self.base = 0

    def fold(self, base: int) -> None:
        """Fold the chunk in view ``c`` (row order ``rn``; global row number ``base + rn``)."""
        agg, con = self.agg, self.con
        con.execute(f"""CREATE OR REPLACE TEMP TABLE fin AS
            SELECT {base} + rn AS seq, fh,
                   CASE WHEN type = 'flow_complete' THEN coalesce(nullif(flow_name, ''), '?') ELSE name END AS fname
            FROM c WHERE has_fid AND d IS NOT NULL AND (
                (type = 'flow_complete' AND (flow_kind IS NULL OR flow_kind = 'flow'))
                OR (type = 'span' AND kind = 'cycle' AND is_root))""")
        fc = agg.flow_counts
        for fname, n, _m in con.execute("SELECT fname, count(*), min(seq) m FROM fin GROUP BY fname ORDER BY m").fetchall():
            fc[fname] = fc.get(fname, 0) + n
        if not agg.track_flows:
            return
        self.base = base
        self._carry_in(base)
        # each span belongs to the next end of its flow (none yet: still open). Nearly always a flow ends once
        # in a chunk, after its spans: a hash join on the first end; the rare span after an end of a flow that
        # ends again in the chunk gets its next end by an ASOF join.
        con.execute("CREATE OR REPLACE TEMP TABLE f1 AS SELECT fh, min(seq) AS s, count(*) AS k, "
                    "arg_min(fname, seq) AS fname FROM fin GROUP BY fh")
        con.execute(f"""CREATE OR REPLACE TEMP TABLE asg AS
            SELECT it.*, CASE WHEN it.seq < f1.s THEN f1.s END AS fin_seq,
                   CASE WHEN it.seq < f1.s THEN f1.fname END AS fname, coalesce(it.seq > f1.s AND f1.k > 1, FALSE) AS later
            FROM (
                SELECT {base} + rn AS seq, NULL::VARCHAR AS cfid, NULL::VARCHAR AS cparent, fh, parent, ts, d,
                       name, kind, fp, flow_name AS oname
                FROM c WHERE type = 'span' AND kind IN ('db', 'http') AND d IS NOT NULL AND has_fid AND NOT is_root
                UNION ALL SELECT * FROM carry) it
            LEFT JOIN f1 ON it.fh = f1.fh""")
        if con.execute("SELECT count(*) FROM asg WHERE later").fetchone()[0]:
            con.execute("""UPDATE asg SET fin_seq = x.fs, fname = x.fn FROM (
                SELECT a.seq AS s, fin.seq AS fs, fin.fname AS fn
                FROM (SELECT seq, fh FROM asg WHERE later) a ASOF LEFT JOIN fin ON a.fh = fin.fh AND a.seq < fin.seq) x
                WHERE asg.seq = x.s""")
        # per flow and fingerprint (fp NULL: the http spans): what the fingerprint, N+1 and gather rules need
        con.execute("""CREATE OR REPLACE TEMP TABLE ifp AS
            SELECT fh, fin_seq, fp, any_value(fname) AS fname, count(*) AS n, sum(d) AS ms
            FROM asg GROUP BY fh, fin_seq, fp""")
        con.execute("CREATE OR REPLACE TEMP TABLE inst AS SELECT fh, fin_seq, sum(n) AS n_items, "
                    "count(fp) AS n_fps FROM ifp GROUP BY fh, fin_seq")
        if (con.execute("SELECT max(n_items) FROM inst").fetchone()[0] or 0) > _MAX_ITEMS:
            # the Python path keeps the first 500 spans of a flow
            con.execute(f"""CREATE OR REPLACE TEMP TABLE asg AS SELECT * EXCLUDE (k) FROM (
                SELECT *, row_number() OVER (PARTITION BY fh, fin_seq ORDER BY seq) AS k FROM asg) WHERE k <= {_MAX_ITEMS}""")
            con.execute("""CREATE OR REPLACE TEMP TABLE ifp AS
                SELECT fh, fin_seq, fp, any_value(fname) AS fname, count(*) AS n, sum(d) AS ms
                FROM asg GROUP BY fh, fin_seq, fp""")
            con.execute("CREATE OR REPLACE TEMP TABLE inst AS SELECT fh, fin_seq, sum(n) AS n_items, "
                        "count(fp) AS n_fps FROM ifp GROUP BY fh, fin_seq")
        self._carry_out()
        con.execute("CREATE OR REPLACE TEMP VIEW done AS SELECT * FROM asg WHERE fin_seq IS NOT NULL")
        self._fingerprints()
        self._n_plus_one()
        self._sequential_io()

    def _carry_in(self, base: int) -> None:
        """Spans of flows still open (from earlier chunks or the Python path) join this chunk's spans."""
        agg, con = self.agg, self.con
        con.execute("CREATE OR REPLACE TEMP TABLE carry (seq BIGINT, cfid VARCHAR, cparent VARCHAR, fh UBIGINT, "
                    "parent UBIGINT, ts VARCHAR, d DOUBLE, name VARCHAR, kind VARCHAR, fp VARCHAR, oname VARCHAR)")
        if not agg.open:
            return
        rows = []
        for fid, of in agg.open.items():
            for (parent, ts, d, name, kind, fp) in of.items:
                rows.append([fid, parent, ts, d, name, kind, fp, of.name])
        start = base - len(rows)
        cols = [list(range(start, base))] + [list(c) for c in zip(*rows)]
        # the ids as the lines hold them; hashed here exactly as the chunk's own rows are
        con.execute("""INSERT INTO carry SELECT seq, cfid, cparent, hash(cfid), hash(cparent), ts, d, name, kind, fp,
                                                oname FROM (
                           SELECT unnest($1::BIGINT[]) AS seq, unnest($2::VARCHAR[]) AS cfid,
                                  unnest($3::VARCHAR[]) AS cparent, unnest($4::VARCHAR[]) AS ts,
                                  unnest($5::DOUBLE[]) AS d, unnest($6::VARCHAR[]) AS name,
                                  unnest($7::VARCHAR[]) AS kind, unnest($8::VARCHAR[]) AS fp,
                                  unnest($9::VARCHAR[]) AS oname)""", cols)
        agg.open = {}

    def _carry_out(self) -> None:
        """Spans of flows not ended in this chunk back to ``Aggregator.open``, with their ids as in the line
        (so the Python path can continue them)."""
        agg = self.agg
        opened = agg.open
        fids = {}
        for seq, cfid, cparent, fh, oname, ts, d, name, kind, fp in self.con.execute(
                "SELECT seq, cfid, cparent, fh, oname, ts, d, name, kind, fp FROM asg WHERE fin_seq IS NULL "
                "ORDER BY seq").fetchall():
            if cfid is None:                    # a span of this chunk: its ids from its line
                rec = orjson.loads(self.reader.line(seq - self.base))
                fid, parent = fids.setdefault(fh, rec["flow_id"]), rec.get("parent_id")
            else:
                fid, parent = fids.setdefault(fh, cfid), cparent
            of = opened.get(fid)
            if of is None:
                of = opened[fid] = OpenFlow(oname)
            of.items.append((parent, ts, d, name, kind, fp))
        while len(opened) > agg.open_flows_cap:
            agg.evicted_open += 1
            agg._finish_flow(next(iter(opened)), None)

    def _fingerprints(self) -> None:
        """Distinct flows per fingerprint, and in which flows (cache candidates)."""
        dbs = self.agg.db
        for fp, fname, n, _m in self.con.execute(
                "SELECT fp, fname, count(*), min(fin_seq) m FROM ifp WHERE fin_seq IS NOT NULL AND fp IS NOT NULL "
                "GROUP BY fp, fname ORDER BY m").fetchall():
            db = dbs.get(fp)
            if db is not None:
                db.flows += n
                fn = db.flow_names
                if fname in fn or len(fn) < 50:
                    fn[fname] += n

    def _n_plus_one(self) -> None:
        agg = self.agg
        for fname, fp, hits, sum_n, max_n, sum_ms, _m in self.con.execute(f"""
                SELECT x.fname, x.fp, count(*), sum(x.n), max(x.n), sum(x.ms), min(x.fin_seq) m
                FROM ifp x JOIN inst i ON i.fh = x.fh AND i.fin_seq = x.fin_seq
                WHERE x.fp IS NOT NULL AND x.n >= {int(agg.n_plus_one_min)} AND i.n_items > 1
                GROUP BY x.fname, x.fp ORDER BY m""").fetchall():
            s = agg.n_plus_one.get((fname, fp))
            if s is None:
                s = agg.n_plus_one[(fname, fp)] = [0, 0, 0, 0.0]
            s[0] += hits
            s[1] += int(sum_n)
            if max_n > s[2]:
                s[2] = max_n
            s[3] += sum_ms

    def _sequential_io(self) -> None:
        """Sibling spans (same parent) that ran back to back: awaits a gather could have overlapped.
        Per group of siblings, sorted by (start, duration, name, fingerprint) as flowtrack sorts them."""
        agg = self.agg
        tol = float(agg.io_tol)
        order = "x.st, x.d, x.name, x.fp"
        # transactions' BEGIN / COMMIT fingerprints (+1 / -1): siblings of one transaction are left out, as
        # flowtrack._outside_transactions does (depth = starts minus ends among the earlier siblings)
        markers = [(fp, m) for fp, db in agg.db.items()
                   if (m := transaction_marker(db.operation, db.statement))]
        self.con.execute("CREATE OR REPLACE TEMP TABLE txfp (fp VARCHAR, m INTEGER)")
        if markers:
            self.con.executemany("INSERT INTO txfp VALUES (?, ?)", markers)
        for fname, names, n, sum_saving, sum_total, max_saving, _m in self.con.execute(f"""
                WITH x0 AS (
                    SELECT done.*, coalesce(txfp.m, 0) AS m, TRY_CAST(substr(ts, 15, 2) AS INTEGER) * 60000
                              + TRY_CAST(substr(ts, 18, 6) AS DOUBLE) * 1000.0 AS st
                    FROM done LEFT JOIN txfp ON done.fp = txfp.fp),
                x AS (
                    SELECT * FROM (
                        SELECT *, coalesce(sum(m) OVER (PARTITION BY fh, fin_seq, parent ORDER BY st, d, name, fp
                                                        ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS depth
                        FROM x0) WHERE m = 0 AND depth <= 0),
                cand AS (       -- back to back needs last start - first start + tolerances >= total - longest
                    SELECT fh, fin_seq, parent FROM x GROUP BY fh, fin_seq, parent
                    HAVING count(*) >= 2 AND bool_and(st IS NOT NULL) AND max(st) - min(st)
                           + (count(*) - 1) * {tol!r} + 1e-6 * (abs(sum(d)) + 1.0) >= sum(d) - greatest(max(d), 0.0)),
                grp AS (
                    SELECT x.fh, x.fin_seq, any_value(x.fname) AS fname, count(*) AS g_n,
                           list({{'st': x.st, 'd': x.d}} ORDER BY {order}) AS l, list(x.name ORDER BY {order}) AS names,
                           first(x.fp ORDER BY x.seq) AS fp0, count(x.fp) AS n_fp, count(DISTINCT x.fp) AS n_dfp,
                           sum(x.d) AS total, greatest(max(x.d), 0.0) AS mx
                    FROM x JOIN cand USING (fh, fin_seq, parent) GROUP BY x.fh, x.fin_seq, x.parent),
                ok AS (
                    SELECT g.fname, g.names, g.total, g.mx, g.fin_seq FROM grp g
                    JOIN inst i ON i.fh = g.fh AND i.fin_seq = g.fin_seq
                    WHERE NOT (i.n_fps = 1 AND g.g_n = i.n_items AND g.fp0 IS NOT NULL)
                      AND NOT (g.n_fp = g.g_n AND g.n_dfp = 1)
                      AND list_aggregate(list_transform(range(1, g.g_n),
                              lambda j: g.l[j + 1].st + {tol!r} >= g.l[j].st + g.l[j].d), 'bool_and'))
                SELECT fname, names, count(*), sum(total - mx), sum(total), max(total - mx), min(fin_seq) m
                FROM ok GROUP BY fname, names ORDER BY m""").fetchall():
            agg._add_seq_io(agg._seq_io_key(fname, tuple(names)), n, sum_saving, sum_total, max_saving)
