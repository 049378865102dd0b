"""Run-time statistics a program can ask for (seed plan 14: user-facing performance metrics).

``install()`` registers a pipeline processor that sees every record in the writer thread and keeps,
per flow name (and per ``metadata.command`` alias) and per operation name, a bounded ring buffer of
``(monotonic arrival time, duration_ms, error)``. Reads are thread-safe and never touch I/O::

    from autoperf.analysis import live            # exposed as autoperf.stats by the lead
    live.install()
    live.command("queue", minutes=10)   # {"count", "avg_ms", "p50_ms", "p95_ms", "max_ms", "error_rate_pct"}

Memory: at most ``max_names`` names × ``maxlen`` entries per kind (defaults 500 × 10 000), each entry
17 bytes in flat arrays (a full ring: 170 KB per name; a tuple of two floats was ~110 bytes an entry,
35 MB for 30 busy names); older entries fall off the ring. Percentiles are exact over the window.
"""
from __future__ import annotations

import threading
import time
from array import array

from .stats import percentile

__all__ = ["LiveStats", "install", "uninstall", "command", "flow", "operation", "commands", "names", "reset",
           "STATS"]


def _empty():
    return {"count": 0, "avg_ms": None, "p50_ms": None, "p95_ms": None, "max_ms": None, "error_rate_pct": None}


class _Ring:
    """The newest ``maxlen`` (arrival time, duration_ms, error) entries of one name (filled by
    ``LiveStats._add``: entry ``n`` goes to index ``n % maxlen``)."""

    __slots__ = ("t", "d", "e", "n", "maxlen")

    def __init__(self, maxlen: int):
        self.t = array("d")
        self.d = array("d")
        self.e = bytearray()
        self.n = 0                  # entries ever appended
        self.maxlen = maxlen

    def newest_first(self):
        size, n = len(self.t), self.n
        t, d, e = self.t, self.d, self.e
        for k in range(1, size + 1):
            i = (n - k) % size
            yield t[i], d[i], e[i]


class LiveStats:
    def __init__(self, maxlen: int = 10_000, max_names: int = 500, clock=time.monotonic):
        self.maxlen = maxlen
        self.max_names = max_names
        self.clock = clock
        self._lock = threading.Lock()
        self._flows: dict[str, _Ring] = {}
        self._ops: dict[str, _Ring] = {}
        self._alias: dict[str, str] = {}      # metadata.command -> flow_name
        self.overflow = 0                     # records not kept because max_names was reached

    # -- the processor (writer thread) --------------------------------------------------------------
    def process(self, rec):
        try:
            t = rec.get("type")
            if t == "flow_complete":
                d = rec.get("duration_ms")
                name = rec.get("flow_name")
                if name is not None and (type(d) is float or type(d) is int):
                    err = rec.get("status") not in ("success", None)
                    md = rec.get("metadata")
                    cmd = md.get("command") if type(md) is dict else None
                    self._add(self._flows, str(name), float(d), err)
                    if cmd is not None and str(cmd) != name:
                        with self._lock:
                            if len(self._alias) < self.max_names:
                                self._alias.setdefault(str(cmd), str(name))
            elif t == "span" and rec.get("kind") != "flow":
                d = rec.get("duration_ms")
                name = rec.get("name")
                if name is not None and (type(d) is float or type(d) is int):
                    self._add(self._ops, str(name), float(d), rec.get("status") not in ("success", None))
        except Exception:      # never break the pipeline
            pass
        return rec

    __call__ = process

    def _add(self, table, name, duration_ms, err):
        now = self.clock()
        with self._lock:
            ring = table.get(name)
            if ring is None:
                if len(table) >= self.max_names:
                    self.overflow += 1
                    return
                ring = table[name] = _Ring(self.maxlen)
            n = ring.n                  # _Ring.append, inlined: this runs for every record
            if n < ring.maxlen:
                ring.t.append(now)
                ring.d.append(duration_ms)
                ring.e.append(err)
            else:
                i = n % ring.maxlen
                ring.t[i] = now
                ring.d[i] = duration_ms
                ring.e[i] = err
            ring.n = n + 1

    # -- reads (any thread) --------------------------------------------------------------------------
    def _window(self, table, name, minutes):
        cutoff = self.clock() - minutes * 60.0
        with self._lock:
            ring = table.get(name)
            if ring is None:
                return []
            out = []
            for item in ring.newest_first():
                if item[0] < cutoff:
                    break
                out.append(item)
        return out

    @staticmethod
    def _summ(items):
        if not items:
            return _empty()
        durs = sorted(i[1] for i in items)
        errs = sum(1 for i in items if i[2])
        n = len(durs)
        # durations are recorded to the µs: answers to 3 decimals in ms, percentages to 2
        return {"count": n, "avg_ms": round(sum(durs) / n, 3), "p50_ms": round(percentile(durs, 50), 3),
                "p95_ms": round(percentile(durs, 95), 3), "max_ms": durs[-1],
                "error_rate_pct": round(100.0 * errs / n, 2)}

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
    """Register the processor with the pipeline (idempotent). Returns the LiveStats in use.
    ``specs``: the configured targets (their names are known even before they are recorded)."""
    global _installed, STATS, _specs
    from autoperf import pipeline
    with _install_lock:
        if specs is not None:
            _specs = tuple(specs)
        if stats is not None and stats is not STATS:
            if _installed:
                pipeline.remove_processor(STATS.process)
                _installed = False
            STATS = stats
        if not _installed:
            pipeline.add_processor(STATS.process)
            _installed = True
    return STATS


def uninstall() -> None:
    global _installed
    from autoperf import pipeline
    with _install_lock:
        if _installed:
            pipeline.remove_processor(STATS.process)
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
