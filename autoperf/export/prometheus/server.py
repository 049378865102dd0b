"""One /metrics endpoint per host and log directory: the first process to bind the port serves.

The serving process reads every process's records from the log directory (``tail``), so workers
and shard processes need no port of their own. A program's own process that found the port taken
tries again every ``retry_s`` and takes over when the serving one has ended (its counters then
start again at 0: a counter reset, which ``rate()`` and ``increase()`` handle). Workers
(``child``) never serve. A forked child closes the listening socket it inherited.
"""
from __future__ import annotations

import os
import socket
import threading
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

from autoperf import threads

from .collector import FoldCollector
from .fold import Fold
from .tail import LogTail


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args):     # the program's stderr is not ours to write access logs to
        pass


class _Server(WSGIServer):
    daemon_threads = True

    def process_request(self, request, client_address):
        # one thread per scrape (a slow scraper holds no other), our signal mask inherited
        thread = threading.Thread(target=self._handle, args=(request, client_address), daemon=True,
                                  name="autoperf-prometheus-request")
        thread.start()

    def _handle(self, request, client_address):
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)

    def handle_error(self, request, client_address):
        pass


class Endpoint:
    def __init__(self, directory, host="127.0.0.1", port=9464, buckets_ms=None, stale_s=60.0, retry_s=10.0):
        kwargs = {"stale_s": stale_s} if buckets_ms is None else {"buckets_ms": buckets_ms, "stale_s": stale_s}
        self.fold = Fold(**kwargs)
        self.tail = LogTail(directory, self.fold.add, self._bad_line)
        self.host, self.port, self.retry_s = host, int(port), float(retry_s)
        self._lock = threading.Lock()
        registry = CollectorRegistry(auto_describe=False)
        registry.register(FoldCollector(self.fold, self._refresh, self._lock))
        self.app = make_wsgi_app(registry)
        self.httpd = None
        self._stop = threading.Event()
        self._retrier = None

    def _bad_line(self):
        self.fold.unreadable += 1

    def _refresh(self):
        self.tail.poll()

    @property
    def serving(self) -> bool:
        return self.httpd is not None

    def try_serve(self) -> bool:
        """Bind and serve; False when the port is taken (another process serves)."""
        try:
            _Server.address_family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
            httpd = make_server(self.host, self.port, self.app, _Server, handler_class=_Quiet)
        except OSError:
            return False
        with self._lock:
            self.tail.poll()          # files already there are read from their end on
        self.httpd = httpd
        thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.5},
                                  name="autoperf-prometheus", daemon=True)
        threads.start(thread)
        return True

    def serve_or_wait(self) -> None:
        """Serve now, or try again every ``retry_s`` in a daemon thread until this process can."""
        if self.try_serve():
            return
        self._retrier = threading.Thread(target=self._retry, name="autoperf-prometheus-retry", daemon=True)
        threads.start(self._retrier)

    def _retry(self):
        while not self._stop.wait(self.retry_s):
            if self.try_serve():
                return

    def stop(self) -> None:
        self._stop.set()
        httpd, self.httpd = self.httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()

    def after_fork_in_child(self) -> None:
        """The child is a worker: it neither serves nor holds the parent's socket open."""
        self._stop.set()
        httpd, self.httpd = self.httpd, None
        if httpd is not None:
            try:
                os.close(httpd.socket.fileno())
            except OSError:
                pass
