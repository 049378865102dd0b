"""Tail-based retention: which roots (and all their descendants) get full ``span`` records.

A child span waits in its root's pending list (the buffered item itself, no record made) until the
root ends; the root's rules decide then, and the list is converted or dropped. Rules, the first
match names the decision: error, sla, deadline, loop_blocked, slow_child, target, sample (by flow
id, the same in every process: ids count up within a process, so their low 32 bits are spread by a
multiplicative hash before ``< rate * 2**32``; see ``sampled``). Pending memory is bounded: at
most ``max_pending`` children per root (excess counted, dropped) and a root that never ends is
evicted after ``pending_timeout_s`` (counted).
"""
from __future__ import annotations

import calendar
import collections
import math
import time

RULES = ("error", "sla", "deadline", "loop_blocked", "slow_child")
MAX_PENDING_ROOTS = 100_000     # roots waiting at once (the oldest is evicted beyond: counted)
MAX_DECIDED = 10_000            # decisions remembered for children that end after their root
FAILED = ("error", "cancelled")
GOLDEN = 0x9E3779B1     # 2**32 / golden ratio: consecutive ids land evenly over [0, 2**32)


def sampled(flow_id, rate: float) -> bool:
    """The ``sample`` rule for a flow id (an int, or its 16-hex text): any process, any reader."""
    if isinstance(flow_id, str):
        flow_id = int(flow_id[-8:], 16)
    return (flow_id * GOLDEN) & 0xFFFFFFFF < int(rate * 2 ** 32)


class RetainSettings:
    """The ``metrics:`` and ``retain:`` sections of autoperf.yaml."""

    __slots__ = ("all", "sample_rate", "sample_below", "rules", "max_pending", "pending_timeout_s",
                 "interval_s", "exemplars")

    def __init__(self, all=False, sample_rate=0.01, rules=None, max_pending=1000, pending_timeout_s=300.0,
                 interval_s=10.0, exemplars=5):
        self.all = bool(all)
        self.sample_rate = float(sample_rate)
        self.sample_below = int(self.sample_rate * 2 ** 32)
        rules = dict(rules or {})
        self.rules = frozenset(r for r in RULES if rules.get(r, True))
        self.max_pending = int(max_pending)
        self.pending_timeout_s = float(pending_timeout_s)
        self.interval_s = float(interval_s)
        self.exemplars = int(exemplars)

    @classmethod
    def from_config(cls, data: dict) -> "RetainSettings":
        metrics = data.get("metrics") or {}
        retain = data.get("retain") or {}
        return cls(retain.get("all", False), retain.get("sample_rate", 0.01), retain.get("rules"),
                   retain.get("max_pending", 1000), retain.get("pending_timeout_s", 300.0),
                   metrics.get("interval_s", 10.0), metrics.get("exemplars", 5))


class Pending(list):
    """The children of one root that has not ended yet (the list itself), since when it waits
    (``since``, monotonic s) and whether one was slow. A list, so that making one per flow is a
    C-level call (``Pending()``, then the two fields), not a Python ``__init__``."""

    __slots__ = ("since", "slow")


def block_interval(rec: dict):
    """(start, end) wall ns of a ``loop_blocked`` record, or None."""
    try:
        ts = rec["timestamp"]
        start = calendar.timegm(time.strptime(ts[:19], "%Y-%m-%dT%H:%M:%S")) * 1_000_000_000
        start += int(ts[20:23]) * 1_000_000
        return start, start + int(float(rec["duration_ms"]) * 1e6)
    except (KeyError, ValueError, TypeError, IndexError):
        return None


class Tail:
    """Pending roots, recent decisions and recent loop blocks (the writer thread's only)."""

    def __init__(self, settings: RetainSettings):
        self.settings = settings
        self.pending: dict = {}            # root (Span / SpanRef) -> Pending
        self.decided: dict = {}            # root span_id -> rule or None
        self.older: dict = {}              # the previous generation of ``decided``
        self.blocks = collections.deque(maxlen=64)
        self.children_dropped = 0          # over max_pending (not yet reported)
        self.roots_evicted = 0             # never ended within pending_timeout_s (not yet reported)
        self.children_evicted = 0

    def rule(self, dur, status, site, attrs, start_wall, flow_id, warning_ns, pending):
        """The rule that retains a root that has just ended, or None."""
        settings = self.settings
        retain = None if site is None else site.retain
        if retain == "never":
            return None
        rules = settings.rules
        if status in FAILED and "error" in rules:
            return "error"
        if "sla" in rules:
            threshold = warning_ns
            if site is not None:
                if site.sla_ms is not None and dur // 1000 / 1000 > site.sla_ms:
                    return "sla"
                if site.threshold_ms is not None:
                    threshold = math.floor(site.threshold_ms * 1e6)
            if dur > threshold:
                return "sla"
        if attrs and "deadline" in rules and attrs.get("deadline_missed"):
            return "deadline"
        if self.blocks and "loop_blocked" in rules:
            end = start_wall + dur
            for b_start, b_end in self.blocks:
                if b_start < end and b_end > start_wall:
                    return "loop_blocked"
        if pending is not None and pending.slow and "slow_child" in rules:
            return "slow_child"
        if retain == "always":
            return "target"
        if (flow_id * GOLDEN) & 0xFFFFFFFF < settings.sample_below:
            return "sample"
        return None

    def remember(self, root_id, rule):
        decided = self.decided
        decided[root_id] = rule
        if len(decided) > MAX_DECIDED:      # two generations: O(1), where deleting the oldest
            self.older = decided            # key of a dict costs a scan over the deleted slots
            self.decided = {}

    def decision(self, root_id):
        """The rule a root that has ended was decided by (None: not kept); False when unknown."""
        rule = self.decided.get(root_id, False)
        return self.older.get(root_id, False) if rule is False else rule

    def add_block(self, rec):
        interval = block_interval(rec)
        if interval is not None:
            self.blocks.append(interval)

    def evict(self, now):
        """Drop roots waiting longer than pending_timeout_s (and the oldest beyond MAX_PENDING_ROOTS)."""
        pending = self.pending
        cutoff = now - self.settings.pending_timeout_s
        while pending:
            root = next(iter(pending))
            p = pending[root]
            if p.since >= cutoff and len(pending) <= MAX_PENDING_ROOTS:
                break
            del pending[root]
            self.roots_evicted += 1
            self.children_evicted += len(p)
        blocks = self.blocks   # a block older than any pending root overlaps no root still to come
        horizon = (time.time() - self.settings.pending_timeout_s) * 1e9
        while blocks and blocks[0][1] < horizon:
            blocks.popleft()

    def losses(self) -> dict | None:
        """What was dropped since the last call (for a ``warning`` record), or None."""
        if not (self.children_dropped or self.roots_evicted):
            return None
        out = {"children_dropped": self.children_dropped, "roots_evicted": self.roots_evicted,
               "children_evicted": self.children_evicted}
        self.children_dropped = self.roots_evicted = self.children_evicted = 0
        return out

    def clear(self):
        self.pending.clear()
        self.decided.clear()
        self.older.clear()
        self.blocks.clear()
        self.children_dropped = self.roots_evicted = self.children_evicted = 0
