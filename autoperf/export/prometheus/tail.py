"""Follow the log directory's files: every process on the host appends its records there.

``metrics_*.log`` is read whole (one line per key and interval). ``performance_*.log`` is only
searched for ``resource`` records (a byte search over new data, no JSON parse of other lines).
Files present when following starts are read from their end: the endpoint's counters start at 0
with it, as a Prometheus counter should; files that appear later are read from the start.
"""
from __future__ import annotations

import glob
import os

import orjson

_RESOURCE = b'"type":"resource"'
_READ = 4 << 20          # bytes read at a time


class _File:
    __slots__ = ("offset", "ino")

    def __init__(self, offset, ino):
        self.offset, self.ino = offset, ino


class LogTail:
    def __init__(self, directory, on_record, on_bad_line=None):
        self.directory = str(directory)
        self.on_record = on_record
        self.on_bad_line = on_bad_line or (lambda: None)
        self.files: dict = {}
        self._started = False

    def poll(self) -> None:
        """Read what was appended since the last poll."""
        first = not self._started
        self._started = True
        seen = set()
        for pattern, everything in (("metrics_*.log", True), ("performance_*.log", False)):
            for path in sorted(glob.glob(os.path.join(self.directory, pattern))):
                seen.add(path)
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                state = self.files.get(path)
                if state is None:
                    state = self.files[path] = _File(st.st_size if first else 0, st.st_ino)
                elif state.ino != st.st_ino or st.st_size < state.offset:   # replaced or truncated
                    state.offset, state.ino = 0, st.st_ino
                if st.st_size > state.offset:
                    self._read(path, state, st.st_size, everything)
        for path in [p for p in self.files if p not in seen]:
            del self.files[path]

    def _read(self, path, state, size, everything):
        try:
            with open(path, "rb") as fh:
                fh.seek(state.offset)
                while state.offset < size:
                    data = fh.read(min(_READ, size - state.offset))
                    if not data:
                        break
                    end = data.rfind(b"\n") + 1          # whole lines only; the rest is read next time
                    if end == 0:
                        if len(data) == _READ:           # one line longer than a read: skip it
                            state.offset += len(data)
                            continue
                        break
                    self._lines(data, end, everything)
                    state.offset += end
                    fh.seek(state.offset)
        except OSError:
            pass

    def _lines(self, data, end, everything):
        if everything:
            for line in data[:end].splitlines():
                self._parse(line)
            return
        at = data.find(_RESOURCE, 0, end)
        while at >= 0:
            start = data.rfind(b"\n", 0, at) + 1
            stop = data.find(b"\n", at, end)
            self._parse(data[start:stop])
            at = data.find(_RESOURCE, stop, end)

    def _parse(self, line):
        if not line.strip():
            return
        try:
            rec = orjson.loads(line)
        except orjson.JSONDecodeError:
            self.on_bad_line()
            return
        if type(rec) is dict:
            self.on_record(rec)
