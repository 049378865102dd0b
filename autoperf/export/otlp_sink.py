"""`OtlpSink`: the pipeline sink that sends records to an OTLP/HTTP receiver from its own thread.

``write()`` (the writer thread) only filters and appends to a bounded queue; beyond
``max_queue_records`` records are dropped and counted. The exporter thread takes batches, encodes
them (``otlp_encode``, ``otlp_metrics``) and POSTs them (gzip). A 429/502/503/504 or a connection
failure puts the request, and every later one, in the spill (``otlp_spill``) until the receiver
answers again — after ``Retry-After`` when it sent one, else a doubling back-off up to
``retry_max_s`` — and the spill is sent in order before anything newer. Other 4xx answers reject
the request (counted). Losses are said with their count in an ``otlp_records_lost`` warning.
"""
from __future__ import annotations

import collections
import email.utils
import gzip
import http.client
import os
import threading
import time
import urllib.parse

from autoperf import diagnostics, threads
from autoperf.losses import Losses

_TYPES = frozenset(("span", "metrics", "resource"))


def _wanted(rec) -> bool:
    """Spans, metrics, resource samples, and the flow_complete of a written flow with manual
    checkpoints (its span's events); an unretained flow's flow_complete costs one lookup here."""
    kind = rec.get("type")
    if kind in _TYPES:
        return True
    if kind != "flow_complete" or rec.get("retained", True) is None:
        return False
    return any(entry.get("kind") == "checkpoint" for entry in rec.get("checkpoints") or ())
_RETRYABLE = frozenset((429, 502, 503, 504))
_RETRY_AFTER_CAP_S = 300.0
_SIGNALS = {b"T": "traces", b"M": "metrics"}
_CONTENT = {"protobuf": "application/x-protobuf", "json": "application/json"}


def start(section: dict, data: dict, log_dir, child: bool = False):
    """The sink for ``export: otlp:`` (and OTEL_*), registered with the pipeline; None when not asked for.
    Workers (``child``) export their own records too."""
    from autoperf.export import otlp_config

    settings = otlp_config.resolve(section, data)
    if settings is None:
        return None
    try:
        import opentelemetry.proto  # noqa: F401 - the message definitions are an extra
    except ImportError:
        diagnostics.warn_once("otlp_unavailable", "export: otlp needs the opentelemetry-proto package "
                              "(pip install 'autoperf[otlp]'); nothing is exported")
        return None
    sink = OtlpSink(settings, log_dir)
    from autoperf import pipeline, posthooks
    pipeline.add_sink(sink)
    posthooks.register("multiprocessing.util", sink.register_mp_finalizer)
    return sink


def retry_after_s(value) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class OtlpSink:
    """Pipeline sink exporting over OTLP/HTTP (module docstring; docs/export.md)."""

    def __init__(self, settings: dict, log_dir="logs", start: bool = True):
        self.settings = settings
        self.log_dir = os.fspath(log_dir)
        self.counters = collections.Counter()
        self._init_state()
        if start:
            self.start()

    def _init_state(self):
        from autoperf.export.otlp_spill import Spill

        s = self.settings
        self._pid = os.getpid()
        self._exit_done = False
        self._q = collections.deque()
        self._cond = threading.Condition()
        self._stop = False
        self._flush_req = False
        self._busy = False
        self._thread = None
        self._spill = Spill(self.log_dir, s["max_spill_bytes"])
        self._next_attempt = 0.0         # the receiver is away until then (monotonic)
        self._backoff = 0.5
        self._down = False
        self._conns: dict = {}
        self._metrics = None
        self._losses = Losses("otlp_records_lost")      # records lost and not yet reported
        self._sending = None             # (signal, body, records) of the request in flight
        self._last_send = time.monotonic()

    # ------------------------------------------------------------ pipeline interface
    def start(self):
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="autoperf-otlp", daemon=True)
            threads.start(self._thread)

    def write_flows(self, records):
        """Unretained flows' flow_complete records: never exported (see ``_wanted``)."""

    def write(self, records):
        """Queue the records OTLP carries; never blocks, never raises."""
        if os.getpid() != self._pid:
            self.after_fork()
        keep = [r for r in records if _wanted(r)]
        if not keep:
            return
        with self._cond:
            room = self.settings["max_queue_records"] - len(self._q)
            if len(keep) > room:
                self._count_lost(len(keep) - max(room, 0))
                keep = keep[:max(room, 0)]
            idle = not self._q
            self._q.extend(keep)
            if idle or len(self._q) >= self.settings["batch_records"]:
                self._cond.notify_all()     # the first record starts the flush interval

    def flush(self):
        pass   # the thread sends every flush_interval_ms; sync() waits for it

    def sync(self, timeout: float = 30.0) -> bool:
        """Wait until what is queued is sent (or spilled) and a reachable receiver has the spill."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._flush_req = True
            self._cond.notify_all()
            while self._q or self._busy or self._flush_req or (self._spill.pending() and not self._down):
                left = deadline - time.monotonic()
                if left <= 0 or not (self._thread and self._thread.is_alive()):
                    return False
                self._cond.wait(min(left, 0.05))
        return True

    def close(self, timeout: float | None = None):
        """Send (or spill) what is queued and stop the thread (waiting at most ``exit_timeout_s``)."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        thread = self._thread
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join(self.settings["exit_timeout_s"] if timeout is None else timeout)
            if thread.is_alive():       # stuck on the receiver: keep what is still queued on disk
                self._spill_rest()

    def _spill_rest(self):
        """From the closing thread, into a spill file of its own (the next start sends it)."""
        from autoperf.export.otlp_spill import Spill

        with self._cond:
            rest = list(self._q)
            self._q.clear()
        sending, self._sending = self._sending, None
        if not rest and sending is None and not (self._metrics is not None and self._metrics.pending()):
            return
        spill = Spill(self.log_dir, self.settings["max_spill_bytes"])
        try:
            # the request in flight too: the receiver may never have it (or have it twice)
            for signal, body, n_records in ([sending] if sending else []) + list(self._requests(rest, True)):
                if not spill.append(signal, body):
                    self.counters["lost_records"] += n_records
        except Exception as exc:  # noqa: BLE001 - at exit: say it, lose nothing else
            diagnostics.internal_error("OTLP exporter at exit", exc)
        finally:
            spill.close()

    def register_mp_finalizer(self, mp_util):
        """multiprocessing children leave through os._exit() after their finalizers: the pipeline's
        flush runs at priority -100, then this one sends (or spills) what it queued."""
        mp_util.Finalize(None, self.at_exit, exitpriority=-101)
        mp_util.register_after_fork(self, lambda sink: mp_util.Finalize(None, sink.at_exit, exitpriority=-101))

    def at_exit(self):
        """The process leaves without closing its sinks (``os._exit``, a multiprocessing worker's end):
        send what is queued, or spill it, within ``exit_timeout_s``."""
        if os.getpid() != self._pid:
            return
        with self._cond:
            if self._exit_done and not self._q:
                return          # a worker's finalizer did it, then os._exit: do not wait twice
            self._exit_done = True
        if not self.sync(self.settings["exit_timeout_s"]):
            self._spill_rest()

    def after_fork(self):
        # A forked child exports its own records through its own thread and spill file.
        self.counters = collections.Counter()
        self._init_state()
        self.start()

    def stats(self) -> dict:
        with self._cond:
            out = dict(self.counters)
            out["queued"] = len(self._q)
        out["down"] = self._down
        return out

    # ------------------------------------------------------------ the exporter thread
    def _run(self):
        try:    # the encoders (and protobuf) load here, at start, in this thread: not on a first export
            from autoperf.export import otlp_encode, otlp_metrics  # noqa: F401
        except Exception as exc:  # noqa: BLE001 - each export reports its own failure
            diagnostics.internal_error("OTLP exporter start", exc)
        interval = self.settings["flush_interval_s"]
        batch_n = self.settings["batch_records"]
        while True:
            with self._cond:
                while not (self._stop or self._flush_req or len(self._q) >= batch_n):
                    spill = self._spill.pending()
                    metrics_due = self._metrics.due_in() if self._metrics is not None else None
                    if not self._q and not spill and metrics_due is None:
                        self._cond.wait()      # idle: no wake-ups until a record comes (write rings)
                        continue
                    now = time.monotonic()
                    retry = max(self._next_attempt - now, 0.05) if spill else None   # the next replay
                    waits = [w for w in (self._last_send + interval - now if self._q else None, retry,
                                         metrics_due) if w is not None]
                    wait = min(waits)
                    if wait <= 0 or not self._cond.wait(wait):
                        break
                batch = [self._q.popleft() for _ in range(min(len(self._q), batch_n))]
                stopping = self._stop and not self._q
                flushing = self._flush_req and not self._q
                self._busy = True
            try:
                if batch:
                    self._last_send = time.monotonic()
                if batch or (self._metrics is not None and self._metrics.pending()):
                    # at a stop or a sync the metrics points still waiting for their export go too
                    self._export(batch, final=stopping or flushing)
                self._replay(final=stopping)
                self._report_losses()
            except Exception as exc:  # noqa: BLE001 - never let the thread die
                diagnostics.internal_error("OTLP exporter", exc)
            finally:
                with self._cond:
                    self._busy = False
                    if flushing and not self._q:
                        self._flush_req = False
                    self._cond.notify_all()
            if stopping:
                break
        self._shutdown()

    def _export(self, batch, final=False):
        for signal, body, n_records in self._requests(batch, final):
            self._deliver(signal, body, n_records)

    def _requests(self, batch, final=False):
        """``(signal, encoded request, records in it)`` for a batch: traces, then metrics (``final``:
        with the points that wait for their export interval)."""
        s = self.settings
        if s["traces_url"] and batch:
            from autoperf.export import otlp_encode
            request = otlp_encode.traces_request(batch, s["resource"])
            if request is not None:
                yield b"T", self._encode(request), sum(1 for r in batch if r.get("type") == "span")
        if s["metrics_url"]:
            if self._metrics is None:
                from autoperf.export.otlp_metrics import MetricsEncoder
                self._metrics = MetricsEncoder(s["temporality"], s["resource"], s.get("metrics_interval_s", 0.0))
            request = self._metrics.request(batch, final)
            if request is not None:
                yield b"M", self._encode(request), self._metrics.covered

    def _encode(self, message) -> bytes:
        """Protobuf or OTLP/JSON bytes of a request (a message, or traces already as protobuf bytes)."""
        if self.settings["encoding"] == "json":
            from autoperf.export.otlp_encode import to_json
            return to_json(message)
        return message if isinstance(message, bytes) else message.SerializeToString()

    def _deliver(self, signal, body, n_records):
        """Send now, or spill when the receiver is away or older requests still wait on disk."""
        if self._spill.pending() or self._down:
            self._keep(signal, body, n_records)
            return
        self._sending = (signal, body, n_records)
        outcome = self._post(signal, body)
        self._sending = None
        if outcome == "retry":
            self._keep(signal, body, n_records)
        elif outcome == "rejected":
            self.counters["rejected_records"] += n_records
        else:
            self.counters[f"sent_{_SIGNALS[signal]}"] += n_records

    def _keep(self, signal, body, n_records):
        if self._spill.append(signal, body):
            self.counters["spilled_requests"] += 1
        else:
            self._count_lost(n_records)

    def _replay(self, final=False):
        """Send spilled requests in order while the receiver takes them (when its pause is over)."""
        if final and self._down:
            # leaving while it is away: wait for a pause that ends soon (a Retry-After), else the
            # spill waits for the next start on this log directory
            pause = self._next_attempt - time.monotonic()
            if pause > self.settings["exit_timeout_s"] - 1.0:
                return
            time.sleep(max(pause, 0.0))
        sent = 0
        while time.monotonic() >= self._next_attempt and (final or sent < 64 or not self._q):
            frame = self._spill.peek()
            if frame is None:
                self._down = False
                return
            outcome = self._post(*frame)
            if outcome == "retry":
                return
            self._spill.advance()
            sent += 1
            self.counters["replayed_requests" if outcome == "ok" else "rejected_requests"] += 1

    # ------------------------------------------------------------ HTTP
    def _post(self, signal, body) -> str:
        """``ok``, ``rejected`` (do not send again) or ``retry`` (the receiver is away or busy)."""
        s = self.settings
        url = s["traces_url"] if signal == b"T" else s["metrics_url"]
        if not url:
            return "rejected"
        headers = {"Content-Type": _CONTENT[s["encoding"]], "User-Agent": "autoperf-otlp"}
        for key, value in s["headers"].items():
            headers[key] = value
        if s["gzip"]:
            body = gzip.compress(body, compresslevel=5)
            headers["Content-Encoding"] = "gzip"
        try:
            status, retry_after, partial = self._request(url, body, headers)
        except (OSError, http.client.HTTPException) as exc:
            self._away(f"{type(exc).__name__}", None)
            return "retry"
        if 200 <= status < 300:
            self._back()
            if partial:
                self.counters["partially_rejected"] += 1
            return "ok"
        if status in _RETRYABLE:
            self._away(f"HTTP {status}", retry_after_s(retry_after) if status in (429, 503) else None)
            return "retry"
        self._back()
        diagnostics.warn_once("otlp_rejected", f"the OTLP receiver refused a {_SIGNALS[signal]} request "
                              f"(HTTP {status}); its records are not sent again", key=status, status=status)
        return "rejected"

    def _request(self, url, body, headers):
        parts = urllib.parse.urlsplit(url)
        key = (parts.scheme, parts.netloc)
        conn = self._conns.get(key)
        if conn is None:
            cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
            conn = self._conns[key] = cls(parts.hostname, parts.port, timeout=self.settings["timeout_s"])
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            conn.request("POST", path, body=body, headers=headers)
            resp = conn.getresponse()
            payload = resp.read()
        except BaseException:
            conn.close()
            self._conns.pop(key, None)
            raise
        if resp.getheader("Connection", "").lower() == "close":
            conn.close()
            self._conns.pop(key, None)
        return resp.status, resp.getheader("Retry-After"), _partial(payload)

    def _away(self, why, retry_after):
        if retry_after is not None:
            pause = min(retry_after, _RETRY_AFTER_CAP_S)
        else:
            pause = self._backoff
            self._backoff = min(self._backoff * 2, self.settings["retry_max_s"])
        self._next_attempt = time.monotonic() + pause
        self.counters["retries"] += 1
        if not self._down:
            self._down = True
            self.counters["outages"] += 1
            diagnostics.warn_once("otlp_unavailable", f"the OTLP receiver is unavailable ({why}); requests "
                                  f"are kept in {self.log_dir}/otlp_spill_*.bin and sent in order when it answers",
                                  key=why)

    def _back(self):
        self._backoff = 0.5
        self._next_attempt = 0.0
        if not self._spill.pending():
            self._down = False

    # ------------------------------------------------------------ losses, shutdown
    def _count_lost(self, n):
        self.counters["lost_records"] += n
        self._losses.add(n)

    def _report_losses(self):
        self._losses.report("{n} records could not be exported over OTLP nor kept in the spill (queue or "
                            "spill full)")

    def _shutdown(self):
        self._spill.close()
        for conn in self._conns.values():
            try:
                conn.close()
            except Exception:  # noqa: BLE001
                pass
        self._conns.clear()


def _partial(payload) -> bool:
    """True when a 2xx answer carries a non-empty partial_success (some records rejected)."""
    return bool(payload) and len(payload) > 2
