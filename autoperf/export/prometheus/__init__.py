"""``export: prometheus:`` — a /metrics endpoint (Prometheus text format, OpenMetrics when asked).

Served from the aggregates every process writes to the log directory's ``metrics_*.log`` (and the
``resource`` samples), by one process per host and log directory (``server``): see
docs/prometheus.md for the scheme, the families and their labels.
"""
from __future__ import annotations

import os
import threading

from autoperf.config.schema import Field, Float, Int, List, Obj, Str

from .fold import DEFAULT_BUCKETS_MS

CONFIG_SCHEMA = Obj({
    "host": Field(Str(), default="127.0.0.1",
                  doc="Address to listen on (`0.0.0.0` for a Prometheus on another machine)."),
    "port": Field(Int(min=1, max=65535), default=9464, doc="Port of /metrics; one per host and log directory."),
    "buckets_ms": Field(List(Float(min=0, min_exclusive=True)), default=list(DEFAULT_BUCKETS_MS),
                        doc="Upper bounds of the classic histogram buckets, in ms (from the exponential histograms)."),
    "retry_s": Field(Float(min=0.1), default=10,
                     doc="A process that found the port taken tries again this often (takes over when the serving one ended)."),
    "stale_s": Field(Float(min=1), default=60,
                     doc="A process's resource gauges are dropped when its last sample is older than this."),
    "max_keys": Field(Int(min=10), default=5000,
                      doc="Most flow keys and span keys (each) served; later ones are counted under the name `_other`."),
}, doc="A /metrics endpoint for Prometheus, one per host (docs/prometheus.md).")

_lock = threading.Lock()
_endpoint = None


def start(section: dict, data: dict, log_dir, child: bool = False):
    """Serve /metrics for ``log_dir`` (or wait to take over); workers (``child``) and a file without
    ``export: prometheus:`` (``section`` empty) do nothing."""
    global _endpoint
    if child or not section:
        return None
    from .server import Endpoint
    with _lock:
        if _endpoint is not None:
            return _endpoint
        _endpoint = Endpoint(log_dir, host=section.get("host") or "127.0.0.1", port=section.get("port") or 9464,
                             buckets_ms=section.get("buckets_ms") or None, stale_s=section.get("stale_s") or 60,
                             retry_s=section.get("retry_s") or 10, max_keys=section.get("max_keys") or 5000)
        _endpoint.serve_or_wait()
        return _endpoint


def endpoint():
    return _endpoint


def stop() -> None:
    global _endpoint
    with _lock:
        if _endpoint is not None:
            _endpoint.stop()
            _endpoint = None


def _after_fork_in_child():
    global _endpoint, _lock
    _lock = threading.Lock()          # it may have been held by another thread at the fork
    if _endpoint is not None:
        _endpoint.after_fork_in_child()
        _endpoint = None


os.register_at_fork(after_in_child=_after_fork_in_child)
