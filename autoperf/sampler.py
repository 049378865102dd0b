"""The resource sampler (core): a ``resource`` record every ``sampler.interval_s`` (default 5 s), from a thread.

Reads process RSS (USS once a minute), CPU %, threads, fds, every child's RSS (through /proc), system
memory and active flows, plus its sources: ``add_source(field, fn)``, which integrations call when
patched for what their table row declares (DB pool use and waits, process-pool queue, loop lag,
gateway latency; ``SHAPED`` fields are aggregated here, any other is written as ``fn()`` returns).
``evaluate`` names the thresholds a record crosses. Started by its table row ``resources`` (which
triggers on ``autoperf``: at install); never in multiprocessing workers (the parent samples them).
"""
from __future__ import annotations

import os
import sys
import threading
import time

from autoperf import diagnostics, lifecycle, pipeline, threads
from autoperf.config.schema import Field, Float, Obj

NAME = "resources"
OPTIONS = Obj({
    "interval_s": Field(Float(min=0, min_exclusive=True), default=None,
                        doc="Seconds between samples (default: `sampler.interval_s`, 5)."),
    "uss_interval_s": Field(Float(min=0), default=60,
                            doc="Seconds between USS readings (0: every sample). RSS is read every sample; "
                                "USS costs 2-10 ms of CPU a reading (the kernel walks the page tables)."),
    "db_pool_warning_pct": Field(Float(min=0), default=80, doc="DB pool utilisation above this -> WARNING."),
    "db_pool_critical_pct": Field(Float(min=0), default=90, doc="DB pool utilisation above this -> CRITICAL."),
    "queue_warning": Field(Float(min=0), default=5, doc="Process-pool jobs waiting above this -> WARNING."),
    "queue_critical": Field(Float(min=0), default=10, doc="Process-pool jobs waiting above this -> CRITICAL."),
    "worker_rss_warning_mb": Field(Float(min=0), default=500, doc="A worker process's RSS above this -> WARNING."),
}, doc="Periodic resource records (process, workers, pools, loop lag).")

DEFAULT_INTERVAL_S = 5.0
# USS comes from /proc/<pid>/smaps_rollup, which the kernel computes by walking the page tables: 2.2 ms of
# CPU on a 120 MB process, 9.5 ms on 1 GB (measured here). RSS (statm) costs ~20 us. USS moves slowly.
DEFAULT_USS_INTERVAL_S = 60.0
THRESHOLD_DEFAULTS = {"db_pool_warning_pct": 80.0, "db_pool_critical_pct": 90.0, "queue_warning": 5.0,
                      "queue_critical": 10.0, "worker_rss_warning_mb": 500.0}
_MB = 1024 * 1024

_sources: dict = {}
_sampler = None
_lock = threading.Lock()


#: Sources whose values the sample shapes (pools aggregated, waits merged into ``db_pool``).
SHAPED = frozenset({"process_pool", "db_pool", "db_pool_waits", "loop_lag_ms", "gateway_latency_ms"})


def add_source(name, fn):
    """Add ``name: fn()`` to every resource record (``fn`` runs in the sampler thread)."""
    _sources[name] = fn


def remove_source(name):
    _sources.pop(name, None)


# -- the pure part: thresholds -----------------------------------------------------------------
_RANK = {"INFO": 20, "WARNING": 30, "CRITICAL": 50}


def evaluate(rec: dict, thresholds: dict | None = None):
    """``(level, alerts)`` for a resource record: which thresholds it crosses."""
    t = dict(THRESHOLD_DEFAULTS)
    t.update({k: v for k, v in (thresholds or {}).items() if v is not None})
    alerts = []

    def alert(metric, value, limit, level):
        alerts.append({"metric": metric, "value": value, "threshold": limit, "level": level})

    for pool in rec.get("db_pools") or ([rec["db_pool"]] if rec.get("db_pool") else []):
        util = pool.get("utilisation_pct")
        if util is None:
            continue
        if util > t["db_pool_critical_pct"]:
            alert("db_pool.utilisation_pct", util, t["db_pool_critical_pct"], "CRITICAL")
        elif util > t["db_pool_warning_pct"]:
            alert("db_pool.utilisation_pct", util, t["db_pool_warning_pct"], "WARNING")
    pending = (rec.get("process_pool") or {}).get("pending")
    if pending is not None:
        if pending > t["queue_critical"]:
            alert("process_pool.pending", pending, t["queue_critical"], "CRITICAL")
        elif pending > t["queue_warning"]:
            alert("process_pool.pending", pending, t["queue_warning"], "WARNING")
    for worker in rec.get("workers") or ():
        if worker.get("rss_mb", 0) > t["worker_rss_warning_mb"]:
            alert(f"worker.{worker['pid']}.rss_mb", worker["rss_mb"], t["worker_rss_warning_mb"], "WARNING")
    level = "INFO"
    for a in alerts:
        if _RANK[a["level"]] > _RANK[level]:
            level = a["level"]
    return level, alerts


def _aggregate_db(pools):
    size = sum(p.get("size") or 0 for p in pools)
    in_use = sum(p.get("in_use") or 0 for p in pools)
    return {"size": size, "in_use": in_use, "idle": sum(p.get("idle") or 0 for p in pools),
            "waiters": sum(p.get("waiters") or 0 for p in pools),
            # the hottest pool decides: one saturated pool is the problem even if another idles
            "utilisation_pct": max((p.get("utilisation_pct") or 0) for p in pools)}


def _aggregate_process_pools(pools):
    return {"pending": sum(p["pending"] for p in pools), "busy": sum(p["busy"] for p in pools),
            "workers": sum(p["workers"] for p in pools)}


# -- the sampler -------------------------------------------------------------------------------
class Sampler(threading.Thread):
    """Emits one ``resource`` record per interval until ``stop()``."""

    def __init__(self, interval_s=DEFAULT_INTERVAL_S, thresholds=None, uss_interval_s=DEFAULT_USS_INTERVAL_S,
                 clock=time.monotonic):
        super().__init__(name="autoperf-sampler", daemon=True)
        self.clock = clock      # when USS is due (a test's fake clock)
        self.psutil = None  # imported in the sampler's own thread: not on the program's start-up
        self.process = None
        self.interval_s = float(interval_s)
        self.pid = os.getpid()
        self.uss_interval_s = float(uss_interval_s)
        self._uss_at = None     # monotonic time of the last USS reading
        self.thresholds = dict(thresholds or {})
        self.stop_event = threading.Event()
        self._known = {}

    def _init_psutil(self):
        if self.psutil is None:
            import psutil
            self.process = psutil.Process()
            self.process.cpu_percent(None)  # the first reading only primes the counter
            self.psutil = psutil

    def _children(self):
        """Child processes, recursively (forkserver workers are grandchildren).

        Linux: ``/proc/<pid>/task/<tid>/children`` lists each thread's children — a few small
        reads instead of psutil's scan of the whole process table (~2-3 ms on a busy host).
        Process objects are kept between samples (pid reuse is caught by psutil's create time).
        """
        pids = _child_pids(os.getpid()) if _PROC_CHILDREN else None
        if pids is None:
            children = self.process.children(recursive=True)  # one process-table scan per interval
            self._known = {c.pid: c for c in children}
            return children
        known, out = self._known, []
        for pid in pids:
            child = known.get(pid)
            if child is None:
                try:
                    child = known[pid] = self.psutil.Process(pid)
                except self.psutil.Error:
                    continue
            out.append(child)
        for pid in set(known) - set(pids):
            del known[pid]
        return out

    def run(self):
        # psutil loads (and the CPU counter is primed) a moment after start, not while the
        # program itself is starting up.
        if self.stop_event.wait(min(1.0, self.interval_s / 2)):
            return
        try:
            self._init_psutil()
        except ImportError:
            diagnostics.warn_once("integration_version", "resource sampler: psutil is not installed",
                                  key="psutil", integration=NAME)
            return
        while not self.stop_event.wait(self.interval_s):
            try:
                pipeline.emit(self.sample())
            except Exception as exc:
                diagnostics.internal_error("resource sampler", exc)

    def stop(self, timeout=2.0):
        self.stop_event.set()
        if self is not threading.current_thread():
            self.join(timeout)

    def final_sample(self):
        """At the process's stop: one last ``resource`` record, so a run shorter than the interval still
        says what it used (``check``'s memory budget). Only once psutil is up (the run lasted its warm-up)."""
        self.stop()
        if self.psutil is not None:
            pipeline.emit(self.sample())

    def sample(self) -> dict:
        """Read everything once and return the ``resource`` record (also usable directly)."""
        self._init_psutil()
        psutil = self.psutil
        proc = self.process
        rec = {"type": "resource", "timestamp": _now_iso()}
        with proc.oneshot():
            now = self.clock()
            mem = None
            if self._uss_at is None or now - self._uss_at >= self.uss_interval_s:
                try:
                    mem = proc.memory_full_info()
                    rec["uss_mb"] = round(mem.uss / _MB, 2)
                    self._uss_at = now
                except (psutil.AccessDenied, AttributeError):
                    pass
            if mem is None:       # not due (or not readable): null, so a report averages real readings only
                mem = proc.memory_info()
                rec["uss_mb"] = None
            rec["rss_mb"] = round(mem.rss / _MB, 2)
            rec["cpu_percent"] = proc.cpu_percent(None)
            rec["threads"] = proc.num_threads()
            try:
                rec["open_fds"] = proc.num_fds()
            except (AttributeError, psutil.AccessDenied):
                rec["open_fds"] = None
        ppools = _read("process_pool")
        pool_pids = {pid for p in ppools or () for pid in p.get("pids", ())}
        workers = []
        for child in self._children():
            try:
                workers.append({"pid": child.pid, "rss_mb": round(child.memory_info().rss / _MB, 2),
                                "pool_worker": child.pid in pool_pids})
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                self._known.pop(child.pid, None)
        rec["workers"] = workers
        rec["max_worker_rss_mb"] = max((w["rss_mb"] for w in workers), default=None)
        rec["system_memory_percent"] = psutil.virtual_memory().percent
        rec["active_flows"] = _active_flows()
        rec["loop_lag_ms"] = _read("loop_lag_ms")
        pools = _read("db_pool")
        if pools:
            rec["db_pool"] = _aggregate_db(pools)
            waits = _read("db_pool_waits")
            if waits:
                rec["db_pool"].update(waits)
            if len(pools) > 1:
                rec["db_pools"] = pools
        if ppools:
            rec["process_pool"] = _aggregate_process_pools(ppools)
            if len(ppools) > 1:
                rec["process_pools"] = ppools
        latency = _read("gateway_latency_ms")
        if latency is not None:
            rec["gateway_latency_ms"] = latency
        for name, fn in list(_sources.items()):
            if name in SHAPED:
                continue
            try:
                rec[name] = fn()
            except Exception as exc:
                diagnostics.internal_error(f"resource source {name}", exc)
        level, alerts = evaluate(rec, self.thresholds)
        rec["level"] = level
        if alerts:
            rec["alerts"] = alerts
        return rec


def _now_iso():
    wall_ns = time.time_ns()
    sec, rem = divmod(wall_ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + f".{rem // 1_000_000:03d}Z"


_PROC_CHILDREN = os.path.exists(f"/proc/{os.getpid()}/task/{os.getpid()}/children")


def _child_pids(root):
    """All descendants of ``root`` from /proc (None when a read fails: use psutil instead)."""
    out, todo = [], [root]
    try:
        while todo:
            pid = todo.pop()
            for tid in os.listdir(f"/proc/{pid}/task"):
                try:
                    with open(f"/proc/{pid}/task/{tid}/children", "rb") as fh:
                        kids = [int(x) for x in fh.read().split()]
                except FileNotFoundError:
                    continue  # the thread or process ended meanwhile
                out.extend(kids)
                todo.extend(kids)
    except FileNotFoundError:
        if pid == root:
            return None
    except (OSError, ValueError):
        return None
    return out


def _read(field):
    """The value of source ``field`` (added by a patched integration), or None."""
    fn = _sources.get(field)
    if fn is None:
        return None
    try:
        return fn()
    except Exception as exc:
        diagnostics.internal_error(f"resource source {field}", exc)
        return None


def _active_flows():
    spans = sys.modules.get("autoperf.spans")
    fn = getattr(spans, "active_flows", None)
    if fn is None:
        return None
    try:
        return fn()
    except Exception:
        return None


# -- start / stop ------------------------------------------------------------------------------
def _in_worker():
    # A program that never imported multiprocessing is no multiprocessing worker (and importing
    # it here would cost every program's start-up).
    mp = sys.modules.get("multiprocessing")
    try:
        return mp is not None and mp.parent_process() is not None
    except Exception:
        return False


def start(config_data=None, options=None):
    """Start the sampler from the config dict (``sampler:`` section + integration options).
    Returns the Sampler, or None when disabled, already running, in a worker, or without psutil."""
    global _sampler
    config_data = config_data or {}
    options = dict(options or {})
    section = config_data.get("sampler") or {}
    if section.get("enabled", True) is False or _in_worker():
        return None
    with _lock:
        if _sampler is not None and _sampler.is_alive():
            return None
        interval = options.pop("interval_s", None) or section.get("interval_s") or DEFAULT_INTERVAL_S
        uss_interval = options.pop("uss_interval_s", DEFAULT_USS_INTERVAL_S)
        options.pop("enabled", None)
        try:
            sampler = Sampler(interval, options, uss_interval)
        except ImportError:
            diagnostics.warn_once("integration_version", "resource sampler: psutil is not installed",
                                  key="psutil", integration=NAME)
            return None
        threads.start(sampler)
        _sampler = sampler
        lifecycle.at_stop(_final_sample)
        return sampler


def stop():
    global _sampler
    with _lock:
        sampler, _sampler = _sampler, None
    if sampler is not None:
        sampler.stop()


def _final_sample():
    with _lock:
        sampler = _sampler
    if sampler is not None and sampler.pid == os.getpid():    # not in a forked child of the sampled process
        sampler.final_sample()


def running():
    return _sampler is not None and _sampler.is_alive()


def setup(module, options):
    start({"sampler": options.pop("sampler", None) or {}}, options)   # `sampler:`: its row's `sections`


def teardown(module):
    stop()
