"""The PostgreSQL sink's spill files: records kept on disk while the database is away, replayed after.

While the server is unreachable each batch is appended to ``<log_dir>/pg_spill_<pid>_<time>.log`` (at
most ``max_spill_mb``, then dropped and counted); once it answers, spill files of this process and of
processes that are gone are replayed a batch at a time (idempotently, ``ON CONFLICT DO NOTHING``) and
deleted; records the server will never take go to ``pg_rejected_<pid>.log``. Only files whose first
line carries the HMAC of their name under the log directory's ``.pg_spill_key`` (0600) are replayed:
a forged one is left alone and reported (``store_spill_foreign``).
"""
from __future__ import annotations

import collections
import datetime as _dt
import glob
import hmac
import os

import orjson

from autoperf import pids, spillkey
from autoperf.store import db

__all__ = ["Spill"]

_SPILL_OPTS = orjson.OPT_NON_STR_KEYS


def _line(rec) -> bytes:
    try:
        return orjson.dumps(rec, option=_SPILL_OPTS, default=str) + b"\n"
    except TypeError:   # what orjson cannot write (an int over 64 bits): the standard library can
        import json
        return json.dumps(rec, default=str, ensure_ascii=False).encode("utf-8", "surrogatepass") + b"\n"


_KEY_FILE = ".pg_spill_key"


def _spill_key(log_dir) -> bytes:
    """The log directory's spill key (32 random bytes, created 0600 on first use)."""
    return spillkey.directory_key(log_dir, _KEY_FILE)


def _header(key, path) -> bytes:
    return orjson.dumps({"autoperf_spill": 1, "mac": spillkey.mac(key, os.path.basename(path))}) + b"\n"


class Spill:
    """The spill files of one :class:`~autoperf.store.sink.PostgresSink` (it holds one): append while
    the server is away, replay a batch at a time through the sink's insert once it answers."""

    def __init__(self, log_dir, max_bytes, batch_records, counters, drop):
        self.log_dir = log_dir
        self.max_bytes = max_bytes
        self.batch_records = batch_records
        self.counters = counters          # the sink's: spilled, replayed, spill_bad_lines
        self._drop = drop                 # the sink's drop(n): count lost records and report them
        self.path = None
        self.file = None                  # the spill file being appended to
        self.replaying: list = []         # [path, offset] of the spill file being replayed
        self.pending = True               # look for spill files (ours or of dead processes)

    def _write_lines(self, path, recs):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "ab") as f:
            f.write(b"".join(_line(r) for r in recs))

    def to_new_file(self, path, recs):
        """A spill file of its own for ``recs`` (the sink thread is stuck; ``close`` keeps them)."""
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "xb") as f:
            f.write(_header(_spill_key(self.log_dir), path) + b"".join(_line(r) for r in recs))

    def keep_rejected(self, recs, why):
        """Keep records that will never be stored in pg_rejected_<pid>.log (never silently lost), and say so.
        The caller counts them."""
        try:
            self._write_lines(os.path.join(self.log_dir, f"pg_rejected_{os.getpid()}.log"), recs)
        except Exception:  # noqa: BLE001 - counted by the caller; the warning says where they should be
            pass
        db.report_warning("store_rejected", f"{why}; kept in pg_rejected_*.log")

    def append(self, recs):
        try:
            if self.file is None:
                os.makedirs(self.log_dir, exist_ok=True)
                stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S%f")
                self.path = os.path.join(self.log_dir, f"pg_spill_{os.getpid()}_{stamp}.log")
                self.file = open(self.path, "ab")
                self.file.write(_header(_spill_key(self.log_dir), self.path))
            if self.file.tell() > self.max_bytes:
                self._drop(len(recs))
                db.report_warning("store_spill_full", "PostgreSQL spill file reached max_spill_mb; records dropped")
                return
            self.file.write(b"".join(orjson.dumps(r, option=_SPILL_OPTS, default=str) + b"\n" for r in recs))
            self.file.flush()
            self.counters["spilled"] += len(recs)
            self.pending = True
        except Exception as exc:  # noqa: BLE001 - disk trouble: the records are lost, say so
            self._drop(len(recs))
            db.report_warning("store_spill_failed", f"cannot write PostgreSQL spill file: {type(exc).__name__}")

    def exists(self) -> bool:
        return bool(self.file is not None or self._claimable())

    def close(self):
        if self.file is not None:
            self.file.close()
            self.file = None

    def _claimable(self) -> list[str]:
        out = []
        for path in sorted(glob.glob(os.path.join(self.log_dir, "pg_spill_*.log"))):
            try:
                pid = int(os.path.basename(path).split("_")[2])
            except (IndexError, ValueError):
                continue
            if (pid == os.getpid() or not pids.alive(pid)) and self._ours(path):
                out.append(path)
        return out

    def _ours(self, path) -> bool:
        """True when ``path`` starts with the header this log directory's key makes for it."""
        try:
            with open(path, "rb") as handle:
                first = handle.readline()
            if hmac.compare_digest(first, _header(_spill_key(self.log_dir), path)):
                return True
        except (OSError, ValueError):
            pass
        db.report_warning("store_spill_foreign",
                          f"{os.path.basename(path)} in {self.log_dir} was not written by this store "
                          f"(no valid header); it is not replayed", path=path)
        return False

    def replay_step(self, insert, lost):
        """Replay at most one batch of spilled records through ``insert(rows, recs, acc)`` (``lost(exc)``
        when the server is gone again); delete a spill file once fully replayed."""
        if not self.replaying:
            self.close()   # stop appending to the current spill file; replay it
            files = self._claimable()
            if not files:
                self.pending = False
                return
            self.replaying = [files[0], 0]
        path, offset = self.replaying
        recs, rows = [], []
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                if offset == 0:
                    f.readline()    # the header
                while len(recs) < self.batch_records:
                    line = f.readline()
                    if not line:
                        break
                    # a torn last line (a crash mid-write) is tried as is: if it does not parse, it is counted
                    offset = f.tell()
                    try:
                        rec = orjson.loads(line)
                        rows.append(db.record_to_row(rec))
                        recs.append(rec)
                    except Exception:  # noqa: BLE001
                        self.counters["spill_bad_lines"] += 1
        except FileNotFoundError:
            self.replaying = []
            return
        if rows:
            acc = collections.Counter()
            try:
                # mostly records that never reached the server (only the batch in flight at the cut may be
                # stored already): the fast path, falling back per batch like any other
                insert(rows, recs, acc)
            except Exception as exc:  # noqa: BLE001 - gone again; resume from the same offset later
                lost(exc)
                return
            finally:
                self.counters.update(acc)
            self.counters["replayed"] += len(rows)
            self.replaying[1] = offset
        else:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            self.replaying = []
