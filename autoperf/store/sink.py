"""`PostgresSink`: batches records into PostgreSQL from its own thread, event loop and connection.

``write()`` (pipeline writer thread) only appends to a bounded in-memory queue. The sink thread
takes batches and COPYs them straight into the day partitions of ``performance_metrics`` (a batch the
primary key refuses, and every spill replay, goes through ``INSERT … ON CONFLICT DO NOTHING``). While
the database is unreachable every batch goes to a JSON-lines spill file
``<log_dir>/pg_spill_<pid>_<time>.log``; once it answers again the spill files are replayed
(idempotently: a record maps to the same primary key every time) and deleted (spill.py).
Opening a connection, and telling a lost server from bad data: connection.py.
"""
from __future__ import annotations

import asyncio
import collections
import datetime as _dt
import os
import threading
import time

from autoperf import threads
from autoperf.losses import Losses
from autoperf.store import db
from autoperf.store.connection import is_transient, open_connection
from autoperf.redact import url_dsn
from autoperf.store.spill import Spill


class PostgresSink:
    """Pipeline sink writing records to PostgreSQL (see module docstring and docs/store.md); it holds a
    :class:`~autoperf.store.spill.Spill` for the records the server cannot take now."""

    def __init__(self, dsn: str, log_dir="logs", *, batch_records: int = 10000, flush_interval_ms: float = 1000,
                 max_buffer_records: int = 200000, rollup: bool = True, connect_timeout_s: float = 5.0,
                 retry_max_s: float = 10.0, max_spill_mb: float = 1024, command_timeout_s: float = 30.0,
                 keepalive_s: float = 10.0, connections: int = 2, start: bool = True):
        self._dsn = url_dsn(dsn)                # a libpq key=value DSN too
        self.where = db.describe_dsn(dsn)       # host:port/db — the only form ever shown
        self.log_dir = os.fspath(log_dir)
        self.batch_records = max(1, int(batch_records))
        self.flush_interval = max(0.01, float(flush_interval_ms) / 1000.0)
        self.max_buffer = max(1, int(max_buffer_records))
        self.rollup_enabled = bool(rollup)
        self.connect_timeout = float(connect_timeout_s)
        self.retry_max = float(retry_max_s)
        self.max_spill_bytes = int(max_spill_mb * 1024 * 1024)
        self.command_timeout = float(command_timeout_s)
        self.keepalive = float(keepalive_s)
        self.connections = max(1, int(connections))
        self.counters = collections.Counter()
        self._init_state()
        if start:
            self.start()

    def _init_state(self):
        self._pid = os.getpid()
        self._q: collections.deque = collections.deque()
        self._cond = threading.Condition()
        self._in_flight = 0
        self._flush_req = False
        self._stop = False
        self._thread = None
        self._loop = None
        self._io = None
        self._pending = None              # (future, records, counters) of the batch being inserted
        self._conn = None                 # primary connection (migrations, replay, rollup, inserts)
        self._extra: list = []            # further connections: a big batch is split across all of them
        self._known_days: set = set()
        self._next_connect = 0.0
        self._backoff = 0.25
        self._down_since = None
        self.spill = Spill(self.log_dir, self.max_spill_bytes, self.batch_records, self.counters, self._drop)
        self._last_batch = time.monotonic()
        self._rolled_day = None
        self._losses = Losses("store_records_lost")     # records dropped and not yet reported

    # ------------------------------------------------------------ pipeline interface (any thread)

    def start(self):
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="autoperf-pg-sink", daemon=True)
            threads.start(self._thread)

    def write(self, records) -> None:
        """Enqueue records; never blocks on I/O, never raises. Beyond `max_buffer_records` they are dropped."""
        if os.getpid() != self._pid:  # forked child: fresh queue, thread and connection
            self._init_state()
            self.start()
        with self._cond:
            room = self.max_buffer - len(self._q)
            n = len(records)
            if n > room:
                self._drop(n - max(room, 0))
                records = records[:max(room, 0)]
            self._q.extend(records)
            self.counters["enqueued"] += len(records)
            if len(self._q) >= self.batch_records:
                self._cond.notify_all()
        if n > room:
            db.report_warning("store_dropped", "PostgreSQL sink buffer full; records dropped (counted in sink stats)")

    def flush(self) -> None:
        """Ask the sink thread to write what is queued now (does not wait: the writer calls this often)."""
        with self._cond:
            if self._q:
                self._flush_req = True
                self._cond.notify_all()

    def sync(self, timeout: float = 30.0) -> bool:
        """Wait until everything queued so far is written or spilled and spills are replayed when possible."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._flush_req = True
            self._cond.notify_all()
            while self._q or self._in_flight or (self._conn is not None and (self.spill.replaying or self.spill.pending
                                                                                and self.spill.exists())):
                left = deadline - time.monotonic()
                if left <= 0 or not (self._thread and self._thread.is_alive()):
                    return False
                self._cond.wait(min(left, 0.05))
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Write (or spill) what is queued, stop the thread, close the connection."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        t = self._thread
        if t is not None and t.is_alive() and t is not threading.current_thread():
            t.join(timeout)
            if t.is_alive():  # stuck on the server: keep what is still queued on disk
                with self._cond:
                    rest = list(self._q)
                    self._q.clear()
                if rest:
                    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S%f")
                    try:
                        self.spill.to_new_file(os.path.join(self.log_dir, f"pg_spill_{os.getpid()}_{stamp}_close.log"), rest)
                        self.counters["spilled"] += len(rest)
                    except Exception:  # noqa: BLE001
                        self._drop(len(rest))

    def stats(self) -> dict:
        with self._cond:
            out = dict(self.counters)
            out["queued"] = len(self._q)
        out["connected"] = self._conn is not None and not self._conn.is_closed()
        return out

    # ------------------------------------------------------------ sink thread

    def _run(self):
        # The connection lives on a private event loop in a second thread ("autoperf-pg-io"): while it
        # waits for PostgreSQL, this thread converts the next batch (pipelining).
        self._loop = asyncio.new_event_loop()
        self._io = threading.Thread(target=self._loop.run_forever, name="autoperf-pg-io", daemon=True)
        threads.start(self._io)
        next_housekeeping = 0.0
        try:
            while True:
                with self._cond:
                    take = True
                    while not self._ready():
                        if self._q:
                            timeout = self._last_batch + self.flush_interval - time.monotonic()
                        else:
                            timeout = self.flush_interval
                        if timeout <= 0:
                            break  # flush interval elapsed: write what is queued
                        if self._pending is not None:
                            take = False  # no full batch yet: first collect the one in flight
                            break
                        if not self._cond.wait(timeout):
                            break  # idle wake-up: housekeeping
                    n = min(len(self._q), self.batch_records) if take else 0
                    batch = [self._q.popleft() for _ in range(n)]
                    self._in_flight = n + self._pending_n()
                    if not self._q:
                        self._flush_req = False
                    stopping = self._stop and not self._q
                try:
                    if batch:
                        self._last_batch = time.monotonic()
                        self._process(batch)
                    else:
                        self._finish_pending()
                    if self._pending is None or time.monotonic() >= next_housekeeping or stopping:
                        self._finish_pending()
                        self._housekeeping()
                        next_housekeeping = time.monotonic() + min(self.flush_interval, 1.0)
                except Exception as exc:  # noqa: BLE001 - never let the thread die
                    self.counters["internal_errors"] += 1
                    db.report_warning("internal_error",
                                      f"PostgreSQL sink: {type(exc).__name__}: {self._safe(str(exc))[:200]}")
                finally:
                    with self._cond:
                        self._in_flight = self._pending_n()
                        self._cond.notify_all()
                if stopping:
                    break
        finally:
            self._shutdown()

    def _safe(self, text: str) -> str:
        """``text`` without the DSN or its password (exception texts can quote them)."""
        from autoperf.redact import mask

        return mask(text, self._dsn)

    def _drop(self, n):
        """Records the store lost (buffer or spill full, disk trouble): counted, and said with the
        count in a ``store_records_lost`` record (``_report_losses``)."""
        self.counters["dropped"] += n
        self._losses.add(n)

    def _report_losses(self):
        try:
            self._losses.report(f"{{n}} records could not be stored in PostgreSQL {self.where} nor kept "
                                f"in a spill file")
        except Exception:  # noqa: BLE001
            pass

    def _pending_n(self) -> int:
        return len(self._pending[1]) if self._pending is not None else 0

    def _finish_pending(self):
        """Wait for the batch in flight; on a connection failure spill it."""
        if self._pending is None:
            return
        fut, recs, acc = self._pending
        self._pending = None
        try:
            self._wait(fut)
            self.counters["batches"] += 1
        except Exception as exc:  # noqa: BLE001 - server went away: keep the batch on disk
            self._lost(exc)
            self.spill.append(recs)
        finally:
            self.counters.update(acc)

    def _wait(self, fut):
        """The result of ``fut`` (a coroutine on the io loop); meanwhile what the queue cannot hold
        goes to the spill file, so a stalled server costs disk, not records. Past ``command_timeout``
        the connection counts as stalled (asyncpg's own timeout covers one command, not a batch)."""
        import concurrent.futures

        deadline = time.monotonic() + self.command_timeout
        while True:
            try:
                return fut.result(timeout=0.25)
            except concurrent.futures.TimeoutError:
                pass
            with self._cond:
                over = len(self._q) - self.max_buffer // 2
                spill = [self._q.popleft() for _ in range(over)] if over > 0 else []
            if spill:
                self.spill.append(spill)
            if time.monotonic() > deadline:
                fut.cancel()
                self.counters["stalls"] += 1
                db.report_warning("store_stalled", f"PostgreSQL store {self.where} did not answer within "
                                                   f"{self.command_timeout:g} s; reconnecting, records spill meanwhile")
                raise TimeoutError("PostgreSQL did not answer within command_timeout_s")

    def _ready(self) -> bool:
        return bool(self._stop or self._flush_req or len(self._q) >= self.batch_records
                    or (self._conn is not None and (self.spill.replaying or self.spill.pending)))

    def _run_coro(self, coro):
        return self._wait(asyncio.run_coroutine_threadsafe(coro, self._loop))

    def _connect(self) -> bool:
        if self._conn is not None and not self._conn.is_closed():
            return True
        now = time.monotonic()
        if now < self._next_connect:
            return False
        try:
            self._conn = self._run_coro(self._open(migrate=True))
        except Exception as exc:  # noqa: BLE001
            self._conn = None
            self._note_down(exc)
            return False
        self._extra = []
        for _ in range(self.connections - 1):
            try:
                self._extra.append(self._run_coro(self._open(migrate=False)))
            except Exception:  # noqa: BLE001 - fewer connections still work
                break
        self._known_days = set()
        self._backoff = 0.25
        self.spill.pending = True
        if self._down_since is not None:
            self.counters["reconnects"] += 1
            self._down_since = None
        return True

    def _open(self, migrate):
        """The coroutine opening one connection with this sink's settings (connection.py)."""
        return open_connection(self._dsn, connect_timeout=self.connect_timeout, command_timeout=self.command_timeout,
                               keepalive=self.keepalive, migrate=migrate)

    def _note_down(self, exc):
        self.counters["connect_failures"] += 1
        if self._down_since is None:
            self._down_since = time.monotonic()
            db.report_warning("store_unavailable",
                              f"PostgreSQL store {self.where} unavailable ({type(exc).__name__}); "
                              f"records spill to {self.log_dir}/pg_spill_*.log and are replayed when it returns")
        self._next_connect = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, self.retry_max)

    def _lost(self, exc):
        conns = [self._conn, *self._extra]
        self._conn, self._extra = None, []
        for conn in conns:
            if conn is not None:
                try:
                    self._loop.call_soon_threadsafe(conn.terminate)
                except Exception:  # noqa: BLE001
                    pass
        self._next_connect = 0.0
        self._note_down(exc)

    def _process(self, batch):
        to_row = db.record_to_row
        try:
            rows, recs = [to_row(rec) for rec in batch], batch
        except Exception:  # noqa: BLE001 - an unconvertible record: again one by one (to_row is repeatable)
            rows, recs, bad = [], [], []
            for rec in batch:
                try:
                    rows.append(to_row(rec))
                    recs.append(rec)
                except Exception:  # noqa: BLE001
                    bad.append(rec)
            if bad:
                self.counters["rejected"] += len(bad)
                self.spill.keep_rejected(bad, "PostgreSQL sink: a record it cannot store (e.g. an integer over 64 bits)")
        self._finish_pending()           # the previous batch ran while this one was converted
        if not rows:
            return
        if self._connect():
            acc = collections.Counter()
            fut = asyncio.run_coroutine_threadsafe(self._insert_parallel(rows, recs, acc), self._loop)
            self._pending = (fut, recs, acc)
            return
        self.spill.append(recs)

    async def _insert_parallel(self, rows, recs, acc):
        """Split a big batch by record id across the open connections and insert the parts concurrently.

        The same id always goes to the same connection, so the parts never wait on each other's keys.
        Any failure fails the whole batch (it is spilled and replayed; committed parts are skipped then).
        """
        conns = [self._conn] + [c for c in self._extra if not c.is_closed()]
        if len(conns) == 1 or len(rows) < 2000:
            return await self._insert_bisect(rows, recs, acc, self._conn)
        await db.ensure_partitions(self._conn, {r[1].date() for r in rows}, self._known_days)
        k = len(conns)
        parts = [([], []) for _ in conns]
        for row, rec in zip(rows, recs):
            part = parts[hash(row[0]) % k]
            part[0].append(row)
            part[1].append(rec)
        results = await asyncio.gather(
            *(self._insert_bisect(pr, pc, acc, c) for (pr, pc), c in zip(parts, conns) if pr),
            return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r

    async def _insert_bisect(self, rows, recs, acc, conn):
        """Insert (on the io loop); a data error splits the batch to isolate bad records. Counts go to ``acc``."""
        try:
            n = await db.insert_rows(conn, rows, self._known_days, counts=acc)
            acc["inserted"] += n
            acc["duplicates"] += len(rows) - n
        except Exception as exc:  # noqa: BLE001
            if is_transient(exc, conn):
                raise
            if len(rows) == 1:
                acc["rejected"] += 1
                self.spill.keep_rejected(recs, f"PostgreSQL refused a record ({type(exc).__name__})")
                return
            mid = len(rows) // 2
            await self._insert_bisect(rows[:mid], recs[:mid], acc, conn)
            await self._insert_bisect(rows[mid:], recs[mid:], acc, conn)

    def _insert_replayed(self, rows, recs, acc):
        """Spill replay's insert: on the primary connection, bisecting like any batch."""
        self._run_coro(self._insert_bisect(rows, recs, acc, self._conn))

    # ------------------------------------------------------------ housekeeping

    def _housekeeping(self):
        self._report_losses()
        if self._conn is None:
            if self._q or self.spill.pending:
                self._connect()
            if self._conn is None:
                return
        if self.spill.replaying or self.spill.pending:
            self.spill.replay_step(self._insert_replayed, self._lost)
        if self.rollup_enabled and self._conn is not None:
            self._maybe_rollup()

    def _maybe_rollup(self):
        now = _dt.datetime.now(_dt.timezone.utc)
        today = now.date()
        if self._rolled_day == today or now.time() < _dt.time(0, 5):
            return
        self._rolled_day = today
        day = today - _dt.timedelta(days=1)
        done_after = _dt.datetime.combine(today, _dt.time(0, 4), _dt.timezone.utc)

        async def run():
            fresh = await self._conn.fetchval(
                "SELECT 1 FROM performance_stats WHERE date = $1 AND computed_at >= $2 LIMIT 1", day, done_after)
            if not fresh:
                await db.rollup(self._conn, day)

        try:
            self._run_coro(run())
            self.counters["rollups"] += 1
        except Exception as exc:  # noqa: BLE001
            if is_transient(exc, self._conn):
                self._lost(exc)
                self._rolled_day = None
            else:
                db.report_warning("store_rollup_failed", f"daily rollup failed: {type(exc).__name__}")

    def _shutdown(self):
        # last chance: anything still queued goes to the database or the spill file
        try:
            with self._cond:
                rest = list(self._q)
                self._q.clear()
            if rest:
                self._process(rest)
            self._finish_pending()
        except Exception:  # noqa: BLE001
            pass
        try:
            self.spill.close()
        except Exception:  # noqa: BLE001
            pass
        for conn in [self._conn, *self._extra]:
            try:
                if conn is not None:
                    self._run_coro(conn.close(timeout=2))
            except Exception:  # noqa: BLE001
                pass
        self._conn, self._extra = None, []
        try:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._io.join(5)
            if not self._io.is_alive():
                self._loop.close()
        except Exception:  # noqa: BLE001
            pass
