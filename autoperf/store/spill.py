"""The PostgreSQL sink's spill files: records kept on disk while the database is away, replayed after.

While the server is unreachable each batch is appended to ``<log_dir>/pg_spill_<pid>_<time>.log``
(bounded by ``max_spill_mb``: beyond it records are dropped and counted). Once it answers, spill files
of this process and of processes that are gone are replayed a batch at a time — idempotently, through
``INSERT … ON CONFLICT DO NOTHING`` (a record maps to the same primary key every time) — and deleted.
Records the server will never take go to ``pg_rejected_<pid>.log``.

A spill file is replayed only when it is ours: its first line carries an HMAC of its name under a
random key kept in ``<log_dir>/.pg_spill_key`` (0600, made once). A file dropped into the log
directory by anyone who cannot read that key (a forged ``pg_spill_<deadpid>_*.log``) is left alone
and reported once (``store_spill_foreign``).
"""
from __future__ import annotations

import collections
import datetime as _dt
import glob
import hashlib
import hmac
import os

import orjson

from autoperf import pids
from autoperf.store import db

__all__ = ["Spilling"]

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
    path = os.path.join(log_dir, _KEY_FILE)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        with open(path, "rb") as handle:
            key = handle.read()
        if len(key) == 32:
            return key
        raise ValueError(f"{path} is not a spill key") from None
    with os.fdopen(fd, "wb") as handle:
        key = os.urandom(32)
        handle.write(key)
    return key


def _header(key, path) -> bytes:
    mac = hmac.new(key, os.path.basename(path).encode(), hashlib.sha256).hexdigest()
    return orjson.dumps({"autoperf_spill": 1, "mac": mac}) + b"\n"


class Spilling:
    """Spill and replay for :class:`~autoperf.store.sink.PostgresSink` (a mixin: it uses the sink's
    ``log_dir``, ``counters``, ``batch_records``, ``max_spill_bytes``, connection and insert path)."""

    def _write_lines(self, path, recs):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "ab") as f:
            f.write(b"".join(_line(r) for r in recs))

    def _spill_to_new_file(self, path, recs):
        """A spill file of its own for ``recs`` (the sink thread is stuck; ``close`` keeps them)."""
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "xb") as f:
            f.write(_header(_spill_key(self.log_dir), path) + b"".join(_line(r) for r in recs))

    def _keep_rejected(self, recs, why):
        """Keep records that will never be stored in pg_rejected_<pid>.log (never silently lost), and say so.
        The caller counts them."""
        try:
            self._write_lines(os.path.join(self.log_dir, f"pg_rejected_{os.getpid()}.log"), recs)
        except Exception:  # noqa: BLE001 - counted by the caller; the warning says where they should be
            pass
        db.report_warning("store_rejected", f"{why}; kept in pg_rejected_*.log")

    def _spill(self, recs):
        try:
            if self._spill_file is None:
                os.makedirs(self.log_dir, exist_ok=True)
                stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S%f")
                self._spill_path = os.path.join(self.log_dir, f"pg_spill_{os.getpid()}_{stamp}.log")
                self._spill_file = open(self._spill_path, "ab")
                self._spill_file.write(_header(_spill_key(self.log_dir), self._spill_path))
            if self._spill_file.tell() > self.max_spill_bytes:
                self._drop(len(recs))
                db.report_warning("store_spill_full", "PostgreSQL spill file reached max_spill_mb; records dropped")
                return
            self._spill_file.write(b"".join(orjson.dumps(r, option=_SPILL_OPTS, default=str) + b"\n" for r in recs))
            self._spill_file.flush()
            self.counters["spilled"] += len(recs)
            self._replay_pending = True
        except Exception as exc:  # noqa: BLE001 - disk trouble: the records are lost, say so
            self._drop(len(recs))
            db.report_warning("store_spill_failed", f"cannot write PostgreSQL spill file: {type(exc).__name__}")

    def _spill_exists(self) -> bool:
        return bool(self._spill_file is not None or self._claimable())

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

    def _replay_step(self):
        """Replay at most one batch of spilled records; delete a spill file once fully replayed."""
        if not self._replay:
            if self._spill_file is not None:  # stop appending to the current spill file; replay it
                self._spill_file.close()
                self._spill_file = None
            files = self._claimable()
            if not files:
                self._replay_pending = False
                return
            self._replay = [files[0], 0]
        path, offset = self._replay
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
            self._replay = []
            return
        if rows:
            acc = collections.Counter()
            try:
                # mostly records that never reached the server (only the batch in flight at the cut may be
                # stored already): the fast path, falling back per batch like any other
                self._run_coro(self._insert_bisect(rows, recs, acc, self._conn))
            except Exception as exc:  # noqa: BLE001 - gone again; resume from the same offset later
                self._lost(exc)
                return
            finally:
                self.counters.update(acc)
            self.counters["replayed"] += len(rows)
            self._replay[1] = offset
        else:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            self._replay = []
