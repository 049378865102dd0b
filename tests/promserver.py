"""A real Prometheus server for the tests: loopback port, temporary config and data directory.

    with PrometheusServer(tmp_path, targets=["127.0.0.1:9464"]) as prom:
        prom.query("sum(autoperf_flow_duration_seconds_count)")

Debian's ``prometheus`` package (``.ci/run`` installs it); :func:`find` says why when it is missing.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

CANDIDATES = ("prometheus", "/usr/bin/prometheus", "/usr/local/bin/prometheus")


def find():
    """(path, None) or (None, the reason no Prometheus server can be run here)."""
    for name in CANDIDATES:
        path = shutil.which(name) or (name if os.path.isfile(name) and os.access(name, os.X_OK) else None)
        if path:
            return path, None
    return None, "no prometheus binary (apt-get install prometheus; .ci/run does it)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrometheusServer:
    def __init__(self, directory, targets, scrape_interval="1s", features=("exemplar-storage",)):
        self.binary, why = find()
        if self.binary is None:
            raise RuntimeError(why)
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.config = self.dir / "prometheus.yml"
        lines = ["global:", f"  scrape_interval: {scrape_interval}", f"  evaluation_interval: {scrape_interval}",
                 "scrape_configs:", "  - job_name: autoperf", "    static_configs:",
                 f"      - targets: {json.dumps(list(targets))}"]
        self.config.write_text("\n".join(lines) + "\n")
        self.features = list(features)
        self.proc = None

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self):
        self.log = open(self.dir / "prometheus.log", "wb")
        self.proc = subprocess.Popen(
            [self.binary, f"--config.file={self.config}", f"--storage.tsdb.path={self.dir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn",
             *(f"--enable-feature={f}" for f in self.features)],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=self.dir)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited: {(self.dir / 'prometheus.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=1) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("prometheus did not become ready in 30 s")

    def __exit__(self, *exc):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def api(self, path, **params):
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as resp:
            body = json.loads(resp.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr, at=None) -> list:
        """An instant query's result list (``[{"metric": {...}, "value": [ts, "v"]}]``)."""
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        return self.api("query", **params)["result"]

    def query_range(self, expr, start, end, step=1.0) -> list:
        """A range query's result list (``[{"metric": {...}, "values": [[ts, "v"], ...]}]``)."""
        return self.api("query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}", step=str(step))["result"]

    def exemplars(self, expr, start, end) -> list:
        """``[{"seriesLabels": {...}, "exemplars": [{"labels": {...}, "value": "v", "timestamp": t}]}]``."""
        return self.api("query_exemplars", query=expr, start=f"{start:.3f}", end=f"{end:.3f}")

    def scalar(self, expr, at=None):
        """The single value of ``expr`` (None when it returned nothing)."""
        result = self.query(expr, at)
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None

    def targets_up(self) -> bool:
        active = self.api("targets")["activeTargets"]
        return bool(active) and all(t["health"] == "up" for t in active)

    def wait_for(self, predicate, timeout=30.0, what="condition"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.25)
        raise AssertionError(f"prometheus: {what} not met within {timeout} s")
