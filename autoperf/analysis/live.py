"""Run-time statistics a program can ask for (``autoperf.stats``): per command, flow and operation.

``install()`` registers a pipeline observer that reads the ``metrics`` records (every finished span,
retained or not) and keeps, per name, the newest intervals (count, errors, sum, max, histogram);
``command(name, minutes)``, ``flow``, ``operation`` and ``commands`` merge the window's intervals under
a lock, without I/O: exact counts, averages, maxima and error rates, percentiles within 0.55 %.
Limits, aliases and unknown names: docs/analysis.md, "Live statistics".
"""
from __future__ import annotations

import collections
import threading
import time
from itertools import compress, repeat

from autoperf.metrics.exphist import ExpHistogram

__all__ = ["LiveStats", "install", "uninstall", "command", "flow", "operation", "commands", "names", "reset",
           "STATS"]

_FLOW_KINDS = ("flow", "cycle")
_READ = frozenset(("metrics", "flow_complete"))


def _empty():
    return {"count": 0, "avg_ms": None, "p50_ms": None, "p95_ms": None, "max_ms": None, "error_rate_pct": None}


def _interval(rec):
    """(count, errors, sum_ms, max_ms, hist dict) of one ``metrics`` record, or None when malformed."""
    count = rec.get("count")
    hist = rec.get("hist")
    if type(count) is not int or count <= 0 or type(hist) is not dict:
        return None
    errors = count if rec.get("status") not in ("success", None) else 0
    return count, errors, float(rec["sum_ms"]), float(rec["max_ms"]), float(rec["min_ms"]), hist


class LiveStats:
    def __init__(self, maxlen: int = 360, max_names: int = 500, clock=time.monotonic):
        self.maxlen = maxlen
        self.max_names = max_names
        self.clock = clock
        self._lock = threading.Lock()
        self._flows: dict[str, collections.deque] = {}
        self._ops: dict[str, collections.deque] = {}
        self._alias: dict[str, str] = {}      # metadata.command -> flow_name
        self.overflow = 0                     # intervals not kept because max_names was reached

    # -- the processor (writer thread) --------------------------------------------------------------
    def process(self, rec):
        try:
            t = rec.get("type")
            if t == "metrics":
                if rec.get("measure", "duration") == "duration":
                    name = rec.get("name")
                    entry = _interval(rec)
                    if name is not None and entry is not None:
                        kind = rec.get("kind")
                        if rec.get("root") and kind in _FLOW_KINDS:     # what flow_complete records count
                            self._add(self._flows, str(name), entry)
                        if kind != "flow":                               # operations: every other span
                            self._add(self._ops, str(name), entry)
            elif t == "flow_complete":
                md = rec.get("metadata")
                cmd = md.get("command") if type(md) is dict else None
                name = rec.get("flow_name")
                if cmd is not None and name is not None and str(cmd) != name and str(cmd) not in self._alias:
                    with self._lock:
                        if len(self._alias) < self.max_names:
                            self._alias.setdefault(str(cmd), str(name))
        except Exception:      # never break the pipeline
            pass
        return rec

    __call__ = process

    def observe(self, records):
        """Pipeline observer (one list a drain step): the ``metrics`` records, and the ``metadata.command``
        aliases of ``flow_complete`` records."""
        try:
            wanted = map(_READ.__contains__, map(dict.get, records, repeat("type")))
            for rec in compress(records, wanted):       # C-level: most records are neither
                if rec["type"] == "metrics" or "command" in (rec.get("metadata") or ()):
                    self.process(rec)
        except Exception:      # never break the pipeline
            pass

    def _add(self, table, name, entry):
        now = self.clock()
        with self._lock:
            ring = table.get(name)
            if ring is None:
                if len(table) >= self.max_names:
                    self.overflow += 1
                    return
                ring = table[name] = collections.deque(maxlen=self.maxlen)
            ring.append((now, entry))

    # -- reads (any thread) --------------------------------------------------------------------------
    def _window(self, table, name, minutes):
        cutoff = self.clock() - minutes * 60.0
        with self._lock:
            ring = table.get(name)
            if ring is None:
                return []
            return [entry for at, entry in ring if at >= cutoff]

    @staticmethod
    def _summ(entries):
        if not entries:
            return _empty()
        hist = ExpHistogram()
        n = errs = 0
        total = 0.0
        top = None
        for count, errors, sum_ms, max_ms, min_ms, data in entries:
            n += count
            errs += errors
            total += sum_ms
            top = max_ms if top is None else max(top, max_ms)
            hist.merge(ExpHistogram.from_dict(data, count=count, sum=sum_ms / 1000, min=min_ms / 1000,
                                              max=max_ms / 1000))
        p50, p95 = hist.percentiles((50, 95))
        # answers to 3 decimals in ms (durations are recorded to the ns), percentages to 2
        return {"count": n, "avg_ms": round(total / n, 3), "p50_ms": round(p50 * 1000, 3),
                "p95_ms": round(p95 * 1000, 3), "max_ms": round(top, 3), "error_rate_pct": round(100.0 * errs / n, 2)}

    def flow(self, name: str, minutes: float = 10) -> dict:
        return self._answer(self._flows, "flow", name, minutes)

    def command(self, name: str, minutes: float = 10) -> dict:
        """By flow name, or by the ``metadata.command`` of the flow (``"queue"`` → ``queue_command``);
        a leading ``/`` is ignored."""
        with self._lock:
            if name not in self._flows:
                key = name.lstrip("/")
                name = self._alias.get(name) or self._alias.get(key) or (key if key in self._flows else name)
        return self.flow(name, minutes)

    def operation(self, name: str, minutes: float = 10) -> dict:
        return self._answer(self._ops, "operation", name, minutes)

    def _answer(self, table, what, name, minutes):
        """The window's numbers; for a name never recorded that no target is named either (a typo, most
        likely) also ``unknown: True`` and the ``nearest`` names, and a warning record once per name."""
        out = self._summ(self._window(table, name, minutes))
        with self._lock:
            recorded = name in table
            names = list(table) + (list(self._alias) if table is self._flows else [])
        if recorded:
            return out
        import fnmatch
        expected = configured_names()
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in expected):
            return out
        import difflib
        from autoperf import diagnostics
        nearest = difflib.get_close_matches(name, sorted(set(names) | expected), n=3, cutoff=0.5)
        out["unknown"] = True
        out["nearest"] = nearest
        hint = f"; nearest: {', '.join(nearest)}" if nearest else ""
        diagnostics.warn_once("stats_unknown_name",
                              f"autoperf.stats: no {what} named {name!r} has been recorded and no target is "
                              f"named so{hint}", key=(what, name), name=name, nearest=nearest)
        return out

    def commands(self, minutes: float = 10) -> dict:
        with self._lock:
            names = list(self._flows)
        return {n: self.flow(n, minutes) for n in names}

    def names(self) -> dict:
        with self._lock:
            return {"flows": sorted(self._flows), "operations": sorted(self._ops), "aliases": dict(self._alias)}

    def reset(self):
        with self._lock:
            self._flows.clear()
            self._ops.clear()
            self._alias.clear()
            self.overflow = 0


def configured_names() -> set:
    """The names records of the configured targets carry (``name``, else ``module.qualname``); for a
    wildcard target the pattern (``repo.*``, ``pkg.mod.Repo.fetch_*``)."""
    specs = _specs
    return {(f"{spec.name}.*" if spec.name and spec.is_wildcard else spec.name) or f"{spec.module}.{spec.qualname}"
            for spec in specs}


STATS = LiveStats()
_installed = False
_specs: tuple = ()     # the configured targets (handed over by install)
_install_lock = threading.Lock()


def install(stats: LiveStats | None = None, specs=None) -> LiveStats:
    """Register the observer with the pipeline (idempotent). Returns the LiveStats in use.
    ``specs``: the configured targets (their names are known even before they are recorded)."""
    global _installed, STATS, _specs
    from autoperf import pipeline
    with _install_lock:
        if specs is not None:
            _specs = tuple(specs)
        if stats is not None and stats is not STATS:
            if _installed:
                pipeline.remove_observer(STATS.observe)
                _installed = False
            STATS = stats
        if not _installed:
            pipeline.add_observer(STATS.observe)
            _installed = True
    return STATS


def uninstall() -> None:
    global _installed
    from autoperf import pipeline
    with _install_lock:
        if _installed:
            pipeline.remove_observer(STATS.observe)
            _installed = False


def command(name: str, minutes: float = 10) -> dict:
    return STATS.command(name, minutes)


def flow(name: str, minutes: float = 10) -> dict:
    return STATS.flow(name, minutes)


def operation(name: str, minutes: float = 10) -> dict:
    return STATS.operation(name, minutes)


def commands(minutes: float = 10) -> dict:
    return STATS.commands(minutes)


def names() -> dict:
    return STATS.names()


def reset() -> None:
    STATS.reset()
