"""Read JSON-lines logs as they grow: whole lines only, across the daily file switch and rotation.

Several processes append to one file (``O_APPEND``, whole lines per write); a reader can still catch
a write half done, so an incomplete last line waits for its newline. A followed file that is
truncated is read again from its start; one renamed away (rotated) is read to its end while the
new file at the same path is read from its start; in a directory, a newer ``performance_*.log``
(or ``flows_*.log``: one follower per family) of the next UTC day takes over, and the previous file keeps being read until it has been quiet for
``grace_s`` (processes switch at their next write after midnight).
"""
from __future__ import annotations

import glob
import os
import time

PATTERN = "performance_*.log"
#: the daily files of records a reader shows: performance_ (retained flows and everything else) and
#: flows_ (the flow_complete of flows that were not retained)
RECORD_PATTERNS = (PATTERN, "flows_*.log")


def log_files(directory, pattern=PATTERN):
    """The directory's daily logs of one family, oldest first (their names carry the date)."""
    return sorted(glob.glob(os.path.join(directory, pattern)))


def _line_start(fd, size, block=1 << 16):
    """The offset after the last newline before ``size``: a line being written is read whole later."""
    pos = size
    while pos > 0:
        step = min(block, pos)
        data = os.pread(fd, step, pos - step)
        cut = data.rfind(b"\n")
        if cut >= 0:
            return pos - step + cut + 1
        pos -= step
    return 0


class TrackedFile:
    """One open file, read from ``pos`` to its end."""

    def __init__(self, path, at_end=False):
        self.path = path
        self.fd = os.open(path, os.O_RDONLY)
        st = os.fstat(self.fd)
        self.identity = (st.st_dev, st.st_ino)
        self.pos = _line_start(self.fd, st.st_size) if at_end else 0
        self.partial = b""
        self.last_data = time.monotonic()

    def read_lines(self) -> list[bytes]:
        """The complete lines written since the last call."""
        if os.fstat(self.fd).st_size < self.pos:    # truncated in place (copytruncate): from the start
            self.pos, self.partial = 0, b""
        lines = []
        while True:
            chunk = os.pread(self.fd, 1 << 20, self.pos)
            if not chunk:
                break
            self.pos += len(chunk)
            parts = (self.partial + chunk).split(b"\n")
            self.partial = parts.pop()
            lines.extend(p for p in parts if p.strip())
        if lines:
            self.last_data = time.monotonic()
        return lines

    def replaced(self) -> bool:
        """The path now names another file (rotated: renamed away and created anew)."""
        try:
            st = os.stat(self.path)
        except OSError:
            return False        # gone, not yet recreated: keep reading what is open
        return (st.st_dev, st.st_ino) != self.identity

    def close(self):
        os.close(self.fd)


class Follower:
    """Follows one file, or the newest daily log of one family in a directory (``poll()`` -> new complete lines)."""

    def __init__(self, path, at_end=True, grace_s=5.0, pattern=PATTERN):
        """``at_end``: start after what the file holds now (``current.pos``: where a backlog ends)."""
        self.directory = path if os.path.isdir(path) else None
        self.path = path
        self.pattern = pattern
        self.grace_s = grace_s
        self.current = None
        self.draining: list[TrackedFile] = []
        target = self._newest() if self.directory else path
        if target is not None and os.path.exists(target):
            self.current = TrackedFile(target, at_end=at_end)

    def _newest(self):
        files = log_files(self.directory, self.pattern)
        return files[-1] if files else None

    def poll(self) -> list[bytes]:
        lines = []
        for tracked in self.draining:
            lines.extend(tracked.read_lines())
        if self.current is not None:
            lines.extend(self.current.read_lines())
        if self._switch():
            lines.extend(self.current.read_lines())
        now = time.monotonic()
        for tracked in list(self.draining):
            if now - tracked.last_data > self.grace_s:
                tracked.close()
                self.draining.remove(tracked)
        return lines

    def _switch(self) -> bool:
        """Open what the path or the directory names now (the first file to appear, the rotated file's
        successor, the next day's log); True when a file was opened."""
        if self.current is None:
            target = self._newest() if self.directory else (self.path if os.path.exists(self.path) else None)
            if target is None:
                return False
            self.current = TrackedFile(target)
            return True
        newer = None
        if self.directory:
            newest = self._newest()
            if newest is not None and newest > self.current.path:
                newer = newest
        if newer is None and self.current.replaced():
            newer = self.current.path
        if newer is None:
            return False
        self.draining.append(self.current)
        self.current = TrackedFile(newer)
        return True

    def close(self):
        for tracked in self.draining + ([self.current] if self.current else []):
            tracked.close()


def last_lines(path, n, convert, end=None, block=1 << 16):
    """``convert(line)`` of the last ``n`` lines of ``path`` it returns something (not None) for, read
    backwards from ``end`` (default: the file's size); oldest first."""
    found = []
    with open(path, "rb") as handle:
        pos = os.fstat(handle.fileno()).st_size if end is None else end
        tail = b""
        while pos > 0 and len(found) < n:
            step = min(block, pos)
            pos -= step
            handle.seek(pos)
            data = handle.read(step) + tail
            parts = data.split(b"\n")
            tail = parts.pop(0) if pos > 0 else b""      # may be the end of a line that starts earlier
            for line in reversed(parts):
                value = convert(line) if line.strip() else None
                if value is not None:
                    found.append(value)
                    if len(found) >= n:
                        break
    found.reverse()
    return found
