"""One /metrics endpoint per host and log directory: the first process to bind the port serves.

The serving process reads every process's records from the log directory (``tail``), so workers
and shard processes need no port of their own. A program's own process that found the port taken
tries again every ``retry_s`` and takes over when the serving one has ended (its counters then
start again at 0: a counter reset, which ``rate()`` and ``increase()`` handle). Workers
(``child``) never serve. A forked child closes the listening socket it inherited.
"""
from __future__ import annotations

import gzip
import os
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

from autoperf import threads
from autoperf.current import mute

from . import render
from .fold import Fold
from .tail import LogTail


class _Handler(BaseHTTPRequestHandler):
    endpoint = None      # set on the subclass made per Endpoint
    timeout = 10         # a client that connects and sends nothing does not keep its thread

    def do_GET(self):  # noqa: N802 - http.server's name
        if self.path.split("?", 1)[0] not in ("/metrics", "/"):
            self.send_error(404)
            return
        openmetrics = render.wants_openmetrics(self.headers.get("Accept"))
        body = self.endpoint.body(openmetrics)
        gzipped = "gzip" in (self.headers.get("Accept-Encoding") or "")
        if gzipped:
            body = gzip.compress(body, compresslevel=1)
        self.send_response(200)
        self.send_header("Content-Type", render.OPENMETRICS if openmetrics else render.TEXT)
        if gzipped:
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):     # the program's stderr is not ours to write access logs to
        pass


class _Server(HTTPServer):
    def process_request(self, request, client_address):
        # one thread per scrape (a slow scraper holds no other); it inherits our signal mask
        threading.Thread(target=self._handle, args=(request, client_address), daemon=True,
                         name="autoperf-prometheus-request").start()

    def _handle(self, request, client_address):
        mute()                        # a scrape is autoperf's work, never a span of the program
        try:
            self.finish_request(request, client_address)
        except Exception:
            pass
        finally:
            self.shutdown_request(request)

    def handle_error(self, request, client_address):
        pass


class Endpoint:
    def __init__(self, directory, host="127.0.0.1", port=9464, buckets_ms=None, stale_s=60.0, retry_s=10.0,
                 max_keys=5000):
        kwargs = {"stale_s": stale_s, "max_keys": max_keys}
        if buckets_ms is not None:
            kwargs["buckets_ms"] = buckets_ms
        self.fold = Fold(**kwargs)
        self.tail = LogTail(directory, self.fold.add, self._bad_line)
        self.host, self.port, self.retry_s = host, int(port), float(retry_s)
        self._lock = threading.Lock()
        self._handler = type("Handler", (_Handler,), {"endpoint": self})
        self.httpd = None
        self._stop = threading.Event()
        self._retrier = None

    def _bad_line(self):
        self.fold.unreadable += 1

    def body(self, openmetrics=False) -> bytes:
        """Read what the log directory gained, then render (one scrape at a time)."""
        with self._lock:
            self.tail.poll()
            return render.render(self.fold, openmetrics)

    @property
    def serving(self) -> bool:
        return self.httpd is not None

    def try_serve(self) -> bool:
        """Bind and serve; False when the port is taken (another process serves)."""
        try:
            server_class = type("Server", (_Server,), {
                "address_family": socket.AF_INET6 if ":" in self.host else socket.AF_INET})
            httpd = server_class((self.host, self.port), self._handler)
        except OSError:
            return False
        with self._lock:
            self.tail.poll()          # files already there are read from their end on
        self.httpd = httpd
        # An idle endpoint sleeps in select(): a short poll interval would wake it (~0.1 ms of CPU
        # each on this VM) only to check for stop(), which wakes it by connecting instead.
        thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 3600},
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
            waiter = threading.Thread(target=httpd.shutdown, daemon=True)   # returns once serve_forever has
            waiter.start()
            try:                                                         # ... seen the flag: wake its select()
                host, port = httpd.server_address[:2]
                socket.create_connection(("127.0.0.1" if host in ("0.0.0.0", "") else
                                          "::1" if host == "::" else host, port), timeout=1).close()
            except OSError:
                pass
            waiter.join(5)
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
