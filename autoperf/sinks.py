"""Where records go: the JSON-lines file (daily, UTC) and the coloured console view."""
from __future__ import annotations

import os
import time


from autoperf.records import LEVELS

# orjson loads on the first write, in the writer thread: its import (datetime, uuid, …) is not
# the program's start-up cost.
_orjson = None
# Lines per orjson call (see ``encode_lines``): ~60 kB of output, below glibc's mmap threshold.
_CHUNK = 128


def _default(obj):
    # Attributes are plain values already; anything odd is shown, never a crash.
    return str(obj)[:200]


def _load():
    global _orjson, _LINE_OPTS, _SEPARATOR
    if _orjson is None:
        import orjson
        _LINE_OPTS = orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS
        _SEPARATOR = orjson.Fragment(b"\n")
        _orjson = orjson
    return _orjson


def dumps(record: dict) -> bytes:
    """One JSON line (orjson, newline appended)."""
    return _load().dumps(record, default=_default, option=_LINE_OPTS)


def encode_lines(records, errors=None) -> bytes:
    r"""``b"".join(dumps(r) for r in records)``, in one orjson call.

    One ``dumps`` per record costs ~3x more than the serialising itself: every call allocates a
    fresh output buffer and, with hundreds of results alive until the join, each lands on new
    heap pages. So the chunk is serialised as one list with a raw newline between the records
    (``[r1,\n,r2,\n,r3]``); orjson escapes newlines inside strings, so ``,\n,`` only occurs
    between records: split there and joined with line breaks. Non-string keys
    (``OPT_NON_STR_KEYS`` costs ~40 %) and values orjson refuses take the slow path, record by
    record, which skips only the records that cannot be encoded at all; their errors go to
    ``errors`` (a list) or are raised.
    """
    orjson = _load()
    n = len(records)
    if n == 0:
        return b""
    seq = [_SEPARATOR] * (2 * n - 1)
    seq[::2] = records
    try:
        lines = orjson.dumps(seq, _default).split(b",\n,")
    except orjson.JSONEncodeError:
        return _encode_one_by_one(records, errors)
    lines[0] = lines[0][1:]       # "["
    lines[-1] = lines[-1][:-1]    # "]"
    lines.append(b"")
    return b"\n".join(lines)


class UnencodableRecords(ValueError):
    """Some records could not be serialised; the others were (the writer reports this once)."""

    def __init__(self, count, first):
        super().__init__(f"{count} record(s) could not be serialised: {first}")
        self.count = count


def _encode_one_by_one(records, errors):
    orjson = _load()
    parts, failed, first = [], 0, None
    for rec in records:
        try:
            parts.append(orjson.dumps(rec, default=_default, option=_LINE_OPTS))
        except orjson.JSONEncodeError as exc:
            failed += 1
            first = first or exc
    if failed:
        error = UnencodableRecords(failed, first)
        if errors is None:
            raise error
        errors.append(error)
    return b"".join(parts)


_LOWEST = min(LEVELS.values())
METRICS_PREFIX = "metrics_"
_SAID: set = set()      # (directory, failure) already said on stderr by one of its files
FLOWS_PREFIX = "flows_"


def _offset_after_lines(data: bytes, lines: int) -> int:
    """Bytes of ``data`` up to and with its ``lines``-th newline."""
    end = 0
    for _ in range(lines):
        end = data.index(b"\n", end) + 1
    return end


class JsonLinesFile:
    """``{dir}/performance_{YYYY-MM-DD}.log``, appended (O_APPEND: whole lines from many processes).

    A write that fails (a read-only or missing directory, a full disk, a path through a file) never
    raises into the pipeline and never leaves half a record: a short write is cut back to its last
    whole line (or, when another process appended meanwhile, the fragment is ended with a newline so
    it stays a line of its own). Records that could not be written are counted; the failure is said
    once on stderr and as a ``log_write_failed`` warning (other sinks still work), and once writing
    works again a ``log_records_lost`` warning line says how many were lost since when. A file that
    was deleted or rotated away (another inode at the path) is reopened: checked at most once per
    ``CHECK_INTERVAL_S``, not per record.
    """

    CHECK_INTERVAL_S = 1.0

    def __init__(self, directory, prefix="performance_", min_level="TRACE"):
        self.directory = os.path.abspath(os.fspath(directory))
        self.prefix = prefix
        self.level_name = min_level
        self.min_level = LEVELS.get(min_level, 0)
        self._fd = None
        self._day = None
        self._identity = None       # (st_dev, st_ino) of the open file
        self._next_check = 0.0
        self._torn = False          # a fragment we could not cut back: start with a newline
        self.lost = 0               # records not written since the failure began
        self._lost_since = None
        self._failure = None        # text of the current failure (None: writing works)
        self.path = None
        self._others = {}           # prefix -> the metrics_ / flows_ file beside this one

    def _day_now(self):
        return time.strftime("%Y-%m-%d", time.gmtime())

    def _open(self, day):
        self._close_fd()
        path = os.path.join(self.directory, f"{self.prefix}{day}.log")
        os.makedirs(self.directory, exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        stat = os.fstat(self._fd)
        self._identity = (stat.st_dev, stat.st_ino)
        self.path = path
        self._day = day
        self._next_check = time.monotonic() + self.CHECK_INTERVAL_S

    def _close_fd(self):
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None
            self._day = None

    def _still_there(self):
        """False when the path no longer names the file we hold open (deleted, rotated)."""
        now = time.monotonic()
        if now < self._next_check:
            return True
        self._next_check = now + self.CHECK_INTERVAL_S
        try:
            stat = os.stat(self.path)
        except OSError:
            return False
        return (stat.st_dev, stat.st_ino) == self._identity

    def current_path(self):
        return os.path.join(self.directory, f"{self.prefix}{self._day_now()}.log")

    def write(self, records):
        # Beside this file (same directory, same UTC day rule): ``metrics`` records in metrics_*.log
        # (readers find the aggregates without scanning every span) and the flow_complete records of
        # unretained flows in flows_*.log (counted in the metrics already: readers skip that file).
        if self.prefix == "performance_":
            main, metrics, flows = [], [], []
            for rec in records:
                kind = rec.get("type")
                if kind == "metrics":
                    metrics.append(rec)
                elif kind == "flow_complete" and rec.get("retained", "") is None:
                    flows.append(rec)
                else:
                    main.append(rec)
            try:
                self._write(main)       # first: a failing directory is said by the main file
            finally:
                if metrics:
                    self._beside(METRICS_PREFIX).write(metrics)
                if flows:
                    self._beside(FLOWS_PREFIX).write(flows)
            return
        self._write(records)

    def write_flows(self, records):
        """Unretained flows' ``flow_complete`` records (the pipeline keeps them apart): flows_*.log."""
        if self.prefix == "performance_":
            self._beside(FLOWS_PREFIX).write(records)
        else:
            self._write(records)

    def _beside(self, prefix):
        sink = self._others.get(prefix)
        if sink is None:
            level = "TRACE" if prefix == METRICS_PREFIX else self.level_name   # aggregates always
            sink = self._others[prefix] = JsonLinesFile(self.directory, prefix, level)
        return sink

    def _write(self, records):
        min_level = self.min_level
        if min_level > _LOWEST:     # TRACE keeps every record: no pass over them
            records = [r for r in records if LEVELS.get(r.get("level"), 20) >= min_level]
        if not records:
            return
        errors = []
        done = 0
        try:
            day = self._day_now()
            if day != self._day or self._fd is None or not self._still_there():
                self._open(day)
            recovering = self._failure is not None or self._torn
            for done in range(0, len(records), _CHUNK):
                data = encode_lines(records[done:done + _CHUNK], errors)
                if recovering:
                    recovering = False
                    self._write_recovering(data)
                else:
                    self._write_whole(data)
            done = len(records)
        except OSError as exc:
            self._failed(exc, len(records) - done - getattr(exc, "autoperf_lines_kept", 0))
        if errors:
            raise errors[0]  # the pipeline reports it; the encodable records are written

    def _write_whole(self, data):
        """Write ``data`` (whole lines); on a failure leave no partial line behind. The OSError
        raised says how many whole lines did go out (``autoperf_lines_kept``)."""
        fd = self._fd
        view = memoryview(data)
        done = 0
        while done < len(data):
            try:
                done += os.write(fd, view[done:])
            except OSError as exc:
                if done:
                    self._cut_back(fd, data, done)
                exc.autoperf_lines_kept = data.count(b"\n", 0, done)
                raise

    def _cut_back(self, fd, data, done):
        """``done`` bytes of ``data`` went out and the rest failed: remove the partial last line."""
        fragment = done - (data.rfind(b"\n", 0, done) + 1)
        if not fragment:
            return
        try:
            end = os.lseek(fd, 0, os.SEEK_CUR)     # O_APPEND: just after what we wrote
            if os.fstat(fd).st_size == end:        # nobody appended after us
                os.ftruncate(fd, end - fragment)
                return
        except OSError:
            pass
        self._torn = True

    def _failed(self, exc, lost):
        if lost > 0:
            if self._lost_since is None:
                self._lost_since = time.time_ns()
            self.lost += lost
        self._close_fd()  # reopened (and the directory made again) on the next write
        if self._failure is not None:
            return
        self._failure = f"{type(exc).__name__}: {exc.strerror or exc}"
        if (self.directory, self._failure) in _SAID:
            return      # the performance_ / metrics_ / flows_ files of a directory fail together: said once
        _SAID.add((self.directory, self._failure))
        where = self.path or self.directory
        message = (f"cannot write the log file {where}: {self._failure}; records are counted "
                   f"and lost until it can be written again")
        try:
            os.write(2, f"autoperf: {message}\n".encode("utf-8", "replace"))
        except OSError:
            pass
        from autoperf import diagnostics  # the other sinks (console, store) still take records
        diagnostics.warn_once("log_write_failed", message, key=(where, self._failure), path=where,
                              error=self._failure)

    def _recovery_head(self) -> bytes:
        """What a recovered file writes first: the end of a torn fragment, then what was lost."""
        head = b"\n" if self._torn else b""
        if self.lost:
            from autoperf import records as model
            head += dumps(model.fill_record({
                "type": "warning", "level": "WARNING", "code": "log_records_lost", "count": self.lost,
                "since": model.iso_from_wall_ns(self._lost_since), "error": self._failure,
                "message": f"{self.lost} records could not be written to this file ({self._failure})"},
                _settings()))
        return head

    def _write_recovering(self, data):
        """The first write after a failure: the recovery head and ``data`` go out whole or not at all (what
        did go out is cut back), so a disk with room for a few lines is no recovery: no second "lost"
        record, nothing said twice while the disk stays full."""
        head, lost_lines = self._recovery_head(), 1 if self.lost else 0
        payload = head + data
        start = os.fstat(self._fd).st_size
        try:
            self._write_whole(payload)
        except OSError as exc:
            kept = exc.autoperf_lines_kept
            if self._truncate_back(start, _offset_after_lines(payload, kept)):
                exc.autoperf_lines_kept = 0     # nothing of it stays: the same failure goes on
                raise
            if self._torn and kept:             # it stays: the torn fragment has its end now
                self._torn, kept = False, kept - 1
            if self._torn or kept < lost_lines:
                exc.autoperf_lines_kept = 0
                raise
            exc.autoperf_lines_kept = kept - lost_lines
            self._recovered()                   # the lost record is out: what fails now is news
            raise
        self._recovered()

    def _truncate_back(self, size, written) -> bool:
        try:
            if os.fstat(self._fd).st_size == size + written:     # nobody appended after us
                os.ftruncate(self._fd, size)
                return True
        except OSError:
            pass
        return False

    def _recovered(self):
        _SAID.discard((self.directory, self._failure))
        self.lost, self._lost_since, self._failure, self._torn = 0, None, None, False

    def flush(self):
        pass  # os.write goes straight to the kernel

    def close(self):
        self._close_fd()
        for other in self._others.values():
            other.close()

    def after_fork(self):
        # Keep appending to the same file, through a descriptor of our own; the parent's losses
        # are the parent's to report.
        self._close_fd()
        for other in self._others.values():
            other.after_fork()
        self.lost, self._lost_since, self._failure, self._torn = 0, None, None, False


def _settings():
    from autoperf import pipeline
    return pipeline.settings()


_COLOURS = {"TRACE": "\x1b[2m", "DEBUG": "\x1b[36m", "INFO": "\x1b[32m", "WARNING": "\x1b[33m",
            "ERROR": "\x1b[31m", "CRITICAL": "\x1b[1;41m"}
_RESET = "\x1b[0m"


class Console:
    """A human-readable view on stderr (the program's stdout stays untouched)."""

    def __init__(self, min_level="INFO", colour=None, fd=2):
        self.min_level = LEVELS.get(min_level, 20)
        self.fd = fd
        self.colour = os.isatty(fd) if colour is None else colour

    def format(self, rec: dict) -> str | None:
        level = rec.get("level", "INFO")
        kind = rec.get("type")
        ts = rec.get("timestamp", "")[11:23]
        if kind == "metrics":
            return None     # aggregates are for readers, not for the eye
        if kind == "span":
            if rec.get("parent_id") is None and rec.get("kind") in ("flow", "cycle"):
                return None  # the flow_complete line says it better
            text = f"{rec['kind']:<5} {rec['name']} {rec['duration_ms']:.2f}ms"
            if rec.get("status") != "success":
                text += f" {rec.get('status')} {rec.get('error') or ''}".rstrip()
            if rec.get("flow_name"):
                text += f"  (in {rec['flow_name']})"
        elif kind == "flow_complete":
            steps = " ".join(f"{c['name']}={c['duration_ms']:.1f}" for c in rec.get("checkpoints", [])[:8])
            text = f"flow  {rec['flow_name']} {rec['duration_ms']:.2f}ms {rec['status']}"
            if rec.get("user_id") is not None:
                text += f" user={rec['user_id']}"
            if steps:
                text += f"  [{steps}]"
        elif kind == "resource":
            text = "resource " + " ".join(
                f"{k}={v}" for k, v in rec.items()
                if k in ("rss_mb", "cpu_percent", "active_flows") and v is not None)
        else:
            text = f"{kind} {rec.get('message') or rec.get('location') or rec.get('step') or rec.get('statement') or ''}"
            if rec.get("duration_ms") is not None:
                text += f" {rec['duration_ms']:.1f}ms"
        if self.colour:
            return f"{_COLOURS.get(level, '')}{ts} {level:<8}{_RESET} {text}\n"
        return f"{ts} {level:<8} {text}\n"

    def write(self, records):
        min_level = self.min_level
        lines = []
        for rec in records:
            if LEVELS.get(rec.get("level"), 20) < min_level:
                continue
            line = self.format(rec)
            if line:
                lines.append(line)
        if lines:
            data = "".join(lines).encode("utf-8", "replace")
            try:
                os.write(self.fd, data)
            except OSError:
                pass

    def flush(self):
        pass

    def close(self):
        pass


class Memory:
    """Keeps records in a list (``autoperf.testing.capture_records``)."""

    def __init__(self):
        self.records = []

    def write(self, records):
        self.records.extend(records)

    def flush(self):
        pass

    def close(self):
        pass
