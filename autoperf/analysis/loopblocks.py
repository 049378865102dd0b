"""``loop_blocked`` records grouped by location, each block counted once.

A block the watchdog reported while it was going on has two records with the same ``block_id``: the
early one (``ongoing``) and the final one. The final one replaces the early one, in whichever order
and in whichever part (file, process, chunk) they were read; an early record whose final one never
came (the process died during the block) stands. Blocks marked ``startup`` (no flow had started in
the process) are kept apart: nobody was waiting on them.
"""
from __future__ import annotations

from collections import Counter

__all__ = ["LoopBlocks"]

MAX_LOCATIONS = 2000        # beyond this, new locations are counted as "(other locations)"
MAX_PENDING = 10000         # early reports (or final ones) waiting for their other half


class LoopBlocks:
    def __init__(self):
        self.count = 0
        self.worst = None                   # (duration_ms, location, flow_name)
        self.runtime: dict[str, list] = {}  # location -> [count, total_ms, max_ms, Counter(flow_name)]
        self.startup: dict[str, list] = {}
        self.pending: dict = {}             # (pid, block_id) -> (group, location, duration, flow_name) of an early report
        self.replaced: set = set()          # (pid, block_id) of final records whose early report was not seen yet

    def add(self, rec: dict) -> None:
        d = rec.get("duration_ms")
        if type(d) is not float and type(d) is not int:
            d = 0.0
        bid = rec.get("block_id")
        key = (rec.get("pid"), bid) if bid is not None else None
        if key is not None:
            if rec.get("ongoing") is True:
                if key in self.replaced:        # its final record came first
                    self.replaced.discard(key)
                    return
            else:
                early = self.pending.pop(key, None)
                if early is not None:
                    self._uncount(*early)
                elif len(self.replaced) < MAX_PENDING:
                    self.replaced.add(key)
        group = self.startup if rec.get("startup") is True else self.runtime
        fn = rec.get("flow_name")
        loc = self._count(group, str(rec.get("location") or "?"), d, fn)
        if key is not None and rec.get("ongoing") is True and len(self.pending) < MAX_PENDING:
            self.pending[key] = (group is self.startup, loc, d, fn)
        if self.worst is None or d > self.worst[0]:
            self.worst = (d, rec.get("location"), fn)

    def _count(self, group, loc, d, fn) -> str:
        b = group.get(loc)
        if b is None:
            if len(self.runtime) + len(self.startup) >= MAX_LOCATIONS:
                loc = "(other locations)"
                b = group.get(loc)
            if b is None:
                b = group[loc] = [0, 0.0, 0.0, Counter()]
        self.count += 1
        b[0] += 1
        b[1] += d
        if d > b[2]:
            b[2] = d
        if fn is not None and (len(b[3]) < 20 or fn in b[3]):
            b[3][fn] += 1
        return loc

    def _uncount(self, startup, loc, d, fn) -> None:
        """Take an early report back out (its final record counts instead; its duration is at least as long,
        so the maxima stay right)."""
        b = (self.startup if startup else self.runtime).get(loc)
        if b is None:
            return
        self.count -= 1
        b[0] -= 1
        b[1] -= d
        if fn is not None and b[3].get(fn):
            b[3][fn] -= 1
            if not b[3][fn]:
                del b[3][fn]

    def merge(self, other: "LoopBlocks") -> None:
        for mine, theirs in ((self.runtime, other.runtime), (self.startup, other.startup)):
            for loc, b in theirs.items():
                x = mine.get(loc)
                if x is None:
                    mine[loc] = [b[0], b[1], b[2], Counter(b[3])]
                else:
                    x[0] += b[0]
                    x[1] += b[1]
                    x[2] = max(x[2], b[2])
                    x[3].update(b[3])
        self.count += other.count
        if other.worst is not None and (self.worst is None or other.worst[0] > self.worst[0]):
            self.worst = other.worst
        pending = dict(other.pending)
        for key in list(self.pending):          # my early reports whose final record the other part read
            if key in other.replaced:
                self._uncount(*self.pending.pop(key))
                other.replaced.discard(key)
        for key in list(pending):               # and the other way round
            if key in self.replaced:
                self._uncount(*pending.pop(key))
                self.replaced.discard(key)
        self.pending.update(pending)
        self.replaced |= other.replaced

    def rows(self) -> list[dict]:
        out = []
        for startup, group in ((False, self.runtime), (True, self.startup)):
            for loc, (n, total, mx, flows) in group.items():
                if n:
                    out.append({"location": loc, "count": n, "total_ms": total, "max_ms": mx,
                                "flows": dict(flows.most_common(5)), "startup": startup})
        out.sort(key=lambda r: (-r["total_ms"], r["location"]))
        return out
