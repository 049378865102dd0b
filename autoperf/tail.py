"""``autoperf tail [-f] [LOG|DIR]``: the log as the console view shows it, filtered, optionally followed.

Records are rendered by the console sink's own formatter (``sinks.Console.format``): a flow is one
line with its checkpoints (from its ``flow_complete`` record, in ``flows_*.log`` for a flow that was
not retained), spans show when the log has them (retained flows), levels are coloured on a terminal. Lines of several processes in one file are read whole and, once a
second process shows up, prefixed with their pid. Record types the view does not know (newer
writers' types) and lines that are not JSON are skipped.
"""
from __future__ import annotations

import fnmatch
import heapq
import os
import sys
import time

from autoperf import logfollow
from autoperf.records import LEVELS

#: The record types the console view renders.
KNOWN_TYPES = frozenset(("span", "flow_complete", "resource", "loop_blocked", "warning", "dropped", "alert",
                         "explain", "sim_step"))
POLL_S = 0.2


def register(sub):
    parser = sub.add_parser(
        "tail", help="show the log as the console does (filters; -f follows it)",
        description="Show the last records of a log as autoperf's console view renders them; -f keeps "
                    "following it (the next UTC day's file in a directory, rotated or truncated files).")
    parser.add_argument("source", nargs="?", metavar="LOG|DIR",
                        help="a log file or a directory of performance_*.log and flows_*.log (default: log.dir of "
                             "./autoperf.yaml, else logs)")
    parser.add_argument("-f", "--follow", action="store_true", help="keep printing records as they are written")
    parser.add_argument("-n", "--lines", type=int, default=10, metavar="N",
                        help="how many of the last matching records to show first (default 10)")
    parser.add_argument("--flow", action="append", metavar="NAME", help="records of this flow (fnmatch pattern)")
    parser.add_argument("--name", action="append", metavar="NAME",
                        help="spans / flows of this name (fnmatch pattern)")
    parser.add_argument("--kind", action="append", metavar="KIND",
                        help="span kind (flow, span, db, http, cycle, job), or a record type (loop_blocked, ...)")
    parser.add_argument("--level", default="INFO", type=str.upper, choices=list(LEVELS),
                        help="lowest level shown (default INFO; TRACE shows every span)")
    parser.add_argument("--min-ms", type=float, default=None, metavar="MS",
                        help="only records that lasted at least this long")
    parser.add_argument("--status", action="append", metavar="STATUS",
                        help="only this status (success, error, timeout, cancelled, check_failure, ...)")
    parser.add_argument("--colour", "--color", choices=["auto", "always", "never"], default="auto",
                        help="colour the levels (default: when stdout is a terminal)")
    parser.set_defaults(handler=cmd_tail)


class Filter:
    """Which records to show (every condition given must hold)."""

    def __init__(self, flows=None, names=None, kinds=None, level="INFO", min_ms=None, statuses=None):
        self.flows, self.names, self.kinds = flows or (), names or (), set(kinds or ())
        self.min_level = LEVELS[level]
        self.min_ms = min_ms
        self.statuses = set(statuses or ())

    def __call__(self, rec) -> bool:
        kind = rec.get("type")
        if kind not in KNOWN_TYPES or LEVELS.get(rec.get("level"), 20) < self.min_level:
            return False
        if self.flows and not _matches(rec.get("flow_name"), self.flows):
            return False
        if self.names and not _matches(rec.get("flow_name") if kind == "flow_complete" else rec.get("name"),
                                       self.names):
            return False
        if self.kinds:
            shown = rec.get("kind") if kind == "span" else rec.get("flow_kind") if kind == "flow_complete" else kind
            if shown not in self.kinds:
                return False
        if self.min_ms is not None:
            d = rec.get("duration_ms")
            if not isinstance(d, (int, float)) or d < self.min_ms:
                return False
        return not self.statuses or rec.get("status") in self.statuses


def _matches(value, patterns):
    return isinstance(value, str) and any(fnmatch.fnmatchcase(value, p) for p in patterns)


class Printer:
    """Renders records with the console's formatter; the pid goes in front once two processes show up."""

    def __init__(self, colour, stream):
        from autoperf.sinks import Console
        self.console = Console("TRACE", colour=colour)
        self.stream = stream
        self.pids = set()

    def render(self, rec):
        """The console's line for ``rec``, or None (a flow's own span: its flow_complete line says it
        better; a record missing what its type should have)."""
        try:
            return self.console.format(rec)
        except Exception:
            return None

    def show(self, rec, line=None):
        line = line or self.render(rec)
        if line:
            self.pids.add(rec.get("pid"))
            self.stream.write(f"{rec.get('pid')!s:>7} {line}" if len(self.pids) > 1 else line)


def parse(line, accept):
    """The record on a line when it is one ``accept`` takes, else None (not JSON: skipped)."""
    import orjson
    try:
        rec = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return rec if type(rec) is dict and accept(rec) else None


def _default_source():
    from autoperf.config import ConfigError, find_config, load_config
    path = find_config(None, None)
    if path is not None:
        try:
            return load_config(path).data.get("log", {}).get("dir") or "logs"
        except ConfigError:
            pass
    return "logs"


def cmd_tail(opts) -> int:
    source = opts.source or _default_source()
    if not os.path.exists(source):
        print(f"autoperf tail: no such file or directory: {source}", file=sys.stderr)
        if not opts.follow:
            return 2
    accept = Filter(opts.flow, opts.name, opts.kind, opts.level, opts.min_ms, opts.status)
    colour = opts.colour == "always" or (opts.colour == "auto" and sys.stdout.isatty()
                                         and os.environ.get("NO_COLOR") is None)
    printer = Printer(colour, sys.stdout)

    def shown(line):
        rec = parse(line, accept)
        text = printer.render(rec) if rec is not None else None
        return (rec, text) if text else None

    patterns = logfollow.RECORD_PATTERNS if os.path.isdir(source) else (logfollow.PATTERN,)
    followers = [logfollow.Follower(source, pattern=p) for p in patterns] if opts.follow else []
    try:
        earlier = backlog(source, opts.lines, shown, followers)
        printer.pids.update(rec.get("pid") for rec, _ in earlier)
        for rec, text in earlier:
            printer.show(rec, text)
        sys.stdout.flush()
        while followers:
            time.sleep(POLL_S)
            for follower in followers:
                for line in follower.poll():
                    item = shown(line)
                    if item is not None:
                        printer.show(*item)
            sys.stdout.flush()
    except KeyboardInterrupt:
        return 130
    finally:
        for follower in followers:
            follower.close()
    return 0


def backlog(source, n, convert, followers=()):
    """The last ``n`` lines ``convert`` makes a ``(record, text)`` of (not None): from the file, or the
    newest logs of each family of the directory (older days when the newest has fewer) merged by
    timestamp, up to where each family's follower starts."""
    if n <= 0 or not os.path.exists(source):
        return []
    if not os.path.isdir(source):
        return _last_of([source], n, convert, followers[0] if followers else None)
    families = []
    for i, pattern in enumerate(logfollow.RECORD_PATTERNS):
        follower = followers[i] if i < len(followers) else None
        families.append(_last_of(logfollow.log_files(source, pattern), n, convert, follower))
    # A file is in write order (a span before the flow it ends in, whose timestamp is its earlier
    # start): keep that order and only interleave the families by timestamp.
    found = list(heapq.merge(*families, key=lambda item: item[0].get("timestamp") or ""))
    return found[-n:]


def _last_of(files, n, convert, follower):
    current = follower.current if follower is not None else None
    found = []
    for path in reversed(files):
        end = current.pos if current is not None and os.path.samefile(current.path, path) else None
        found[:0] = logfollow.last_lines(path, n - len(found), convert, end)
        if len(found) >= n:
            break
    return found
