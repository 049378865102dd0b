"""The OTLP exporter's spill: encoded requests kept on disk while the receiver is away, sent in order after.

``<log_dir>/otlp_spill_<pid>_<time>.bin``: a header line (an HMAC of the file name under the log
directory's 0600 key ``.otlp_spill_key``, so a file someone else dropped there is never sent),
then frames ``signal (1 byte) | length (4 bytes, big-endian) | body``. Bounded by ``max_bytes``
(beyond it requests are refused and the caller counts their records). Files of processes that are
gone are claimed (renamed, so one process sends them) and sent before this process's own.
"""
from __future__ import annotations

import datetime as _dt
import glob
import hmac
import os
import struct
import time

from autoperf import pids, spillkey

_KEY_FILE = ".otlp_spill_key"
_FRAME = struct.Struct(">cI")
OTHERS_CHECK_S = 60.0


def _key(log_dir) -> bytes:
    return spillkey.directory_key(log_dir, _KEY_FILE)


def _header(key, name) -> bytes:
    return b"autoperf-otlp-spill " + spillkey.mac(key, name).encode() + b"\n"


def _original_name(path) -> str:
    """``otlp_spill_…bin`` (a claimed file's name without its ``otlp_claimed_<pid>_`` prefixes)."""
    name = os.path.basename(path)
    while name.startswith("otlp_claimed_"):
        name = name.split("_", 3)[3]
    return name


class Spill:
    """Append frames; read them back oldest first (one reader: the exporter thread)."""

    def __init__(self, log_dir, max_bytes):
        self.log_dir = os.path.abspath(os.fspath(log_dir))
        self.max_bytes = int(max_bytes)
        self._out = None          # (path, file) being appended to
        self._reading = None      # [path, offset, size]
        self._check_others = True   # look for files of processes that are gone (at start, then each minute)
        self._next_check = 0.0
        self.foreign = 0

    # -- writing
    def append(self, signal: bytes, body: bytes) -> bool:
        """Keep one request; False when the spill is full or the disk refuses (the caller counts)."""
        try:
            if self._out is None:
                os.makedirs(self.log_dir, exist_ok=True)
                stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S%f")
                name = f"otlp_spill_{os.getpid()}_{stamp}.bin"
                path = os.path.join(self.log_dir, name)
                handle = open(path, "xb")
                handle.write(_header(_key(self.log_dir), name))
                self._out = (path, handle)
            handle = self._out[1]
            if handle.tell() + len(body) > self.max_bytes:
                return False
            handle.write(_FRAME.pack(signal, len(body)) + body)
            handle.flush()
            return True
        except (OSError, ValueError):
            return False

    def pending(self) -> bool:
        if self._out is not None or self._reading is not None:
            return True
        if self._check_others or time.monotonic() >= self._next_check:
            self._next_check = time.monotonic() + OTHERS_CHECK_S
            self._check_others = bool(self._claimable())
        return self._check_others

    # -- reading
    def peek(self):
        """``(signal, body)`` of the oldest frame not yet sent, or None."""
        while True:
            if self._reading is None and not self._open_next():
                return None
            path, offset = self._reading
            try:
                with open(path, "rb") as handle:
                    handle.seek(offset)
                    head = handle.read(_FRAME.size)
                    if len(head) == _FRAME.size:
                        signal, length = _FRAME.unpack(head)
                        body = handle.read(length)
                        if len(body) == length:
                            self._next_offset = offset + _FRAME.size + length
                            return signal, body
            except OSError:
                pass
            self._finish_file()    # read to its end (a torn last frame is dropped with it)

    def advance(self):
        """The frame ``peek`` returned was sent."""
        if self._reading is not None:
            self._reading[1] = self._next_offset

    def _open_next(self) -> bool:
        claimed = self._claimable() if self._check_others else []
        self._check_others = False
        if claimed:
            path = self._claim(claimed[0])
            if path is not None:
                self._reading = [path, self._data_start(path)]
                self._check_others = True      # more may follow
                return True
        if self._out is not None:
            path, handle = self._out
            handle.close()
            self._out = None
            self._reading = [path, self._data_start(path)]
            return True
        return False

    def _data_start(self, path) -> int:
        with open(path, "rb") as handle:
            handle.readline()
            return handle.tell()

    def _finish_file(self):
        path = self._reading[0]
        self._reading = None
        try:
            os.unlink(path)
        except OSError:
            pass

    # -- files of processes that are gone
    def _claimable(self) -> list:
        out = []
        paths = glob.glob(os.path.join(self.log_dir, "otlp_spill_*.bin"))
        paths += glob.glob(os.path.join(self.log_dir, "otlp_claimed_*.bin"))   # a claimant that died
        for path in sorted(paths, key=_original_name):
            try:
                pid = int(os.path.basename(path).split("_")[2])
            except (IndexError, ValueError):
                continue
            if pid != os.getpid() and not pids.alive(pid):
                out.append(path)
        return out

    def _claim(self, path):
        """Rename a dead process's file to ours (one claimant wins) once its header proves it ours."""
        name = _original_name(path)
        try:
            with open(path, "rb") as handle:
                first = handle.readline()
            if not hmac.compare_digest(first, _header(_key(self.log_dir), name)):
                self.foreign += 1
                os.rename(path, path + ".foreign")
                from autoperf import diagnostics
                diagnostics.warn_once("otlp_spill_foreign", f"{name} in {self.log_dir} was not written by this "
                                      f"log directory's exporter (no valid header); renamed to .foreign, not sent",
                                      key=name, path=path)
                return None
            claimed = os.path.join(self.log_dir, f"otlp_claimed_{os.getpid()}_{name}")
            os.rename(path, claimed)
            return claimed
        except (OSError, ValueError):
            return None

    def close(self):
        if self._out is not None:
            try:
                self._out[1].close()
            except OSError:
                pass
            self._out = None
