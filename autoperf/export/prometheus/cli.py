"""``autoperf serve-metrics``: the /metrics endpoint as a process of its own, beside the program.

The same endpoint ``export: prometheus:`` starts inside the program, run instead as a sidecar (a
systemd unit, a container next to the bot's): the program's processes only write their logs.
"""
from __future__ import annotations

import os
import signal
import sys
import threading


def register(sub) -> None:
    parser = sub.add_parser(
        "serve-metrics", help="serve /metrics for Prometheus from a log directory (a sidecar)",
        description="Serve /metrics (Prometheus text, OpenMetrics when asked) from the metrics_ and "
                    "performance_ files of a log directory until SIGINT or SIGTERM; counters start at 0 "
                    "(files are read from their end on).")
    parser.add_argument("--log-dir", default=None, help="the directory (default: log.dir of the config, else logs)")
    parser.add_argument("--config", default=None, help="autoperf.yaml whose export.prometheus (and log.dir) to use")
    parser.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (default 9464)")
    parser.set_defaults(handler=cmd_serve_metrics)


def cmd_serve_metrics(opts) -> int:
    from autoperf.config import load_config

    from .server import Endpoint
    data = load_config(opts.config).data if opts.config or os.path.exists("autoperf.yaml") else {}
    section = ((data.get("export") or {}).get("prometheus") or {})
    log_dir = opts.log_dir or (data.get("log") or {}).get("dir") or "logs"
    endpoint = Endpoint(os.path.abspath(log_dir), host=opts.host or section.get("host") or "127.0.0.1",
                        port=opts.port or section.get("port") or 9464, buckets_ms=section.get("buckets_ms") or None,
                        stale_s=section.get("stale_s") or 60, max_keys=section.get("max_keys") or 5000)
    if not endpoint.try_serve():
        print(f"autoperf serve-metrics: port {endpoint.port} is taken (another process serves it?)", file=sys.stderr)
        return 1
    print(f"autoperf: serving http://{endpoint.host}:{endpoint.port}/metrics for {os.path.abspath(log_dir)}",
          file=sys.stderr, flush=True)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    while not done.wait(3600):
        pass
    endpoint.stop()
    return 0
