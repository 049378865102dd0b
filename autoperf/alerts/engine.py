"""AlertEngine: a pipeline processor that evaluates rules and a delivery thread that sends messages.

* :meth:`AlertEngine.observe` runs in the pipeline's writer thread over each delivered batch (each rule
  over the records of its types at once; ``process`` does the same for one record): it evaluates the
  rules and only enqueues events (bounded queue, overflow counted). It never blocks and never raises.
* The delivery thread groups events per (rule, key): the first message waits `group_wait_s` to
  collect a burst, then at most one message per (rule, key) per `window_s`; occurrences in between
  are counted and reported by the next message (`count`). Each message becomes an `alert` record and
  is sent to every channel that wants it, retried with exponential backoff; a delivery that fails for
  good becomes a `warning` record (`alert_delivery_failed`). Nothing here raises into the program.
"""
from __future__ import annotations

import collections
import heapq
import itertools
import json
import operator
import os
import queue
import threading
import time

from autoperf import threads
from autoperf.alerts.channels import DeliveryError, build_channel, scrub
from autoperf.alerts.rules import build_rules


def _default_emit(record: dict) -> None:
    from autoperf import pipeline

    pipeline.emit(record)


class _Group:
    __slots__ = ("due", "window_end", "count", "last", "max_value", "first_ts")

    def __init__(self, now, group_wait, event):
        self.due = now + group_wait
        self.window_end = None
        self.count = 1
        self.last = event
        self.max_value = event["value"]
        self.first_ts = event.get("timestamp")


IDLE_WAKEUP_S = 30.0
#: forks seen by this process: a record's fork check is a list read, not a getpid() system call
_forks = [0]


def _forked():
    _forks[0] += 1


os.register_at_fork(after_in_child=_forked)


BASELINE_SAVE_S = 60.0      # how often changed baselines are written (and at close)


class AlertEngine:
    """``state_path``: a JSON file the baseline rules' windows are restored from and saved to (the
    program's process only), so a restart keeps its baselines."""

    def __init__(self, cfg: dict, emit=None, start: bool = True, state_path: str | None = None):
        self.cfg = cfg
        self.emit = emit or _default_emit
        self.rules = build_rules(cfg)
        self.state_path = state_path
        self._saved_updates = 0
        self._next_save = time.monotonic() + BASELINE_SAVE_S
        self._rules_for_type: dict = {}   # record type -> the rules that can match it
        self.channels = [build_channel(c) for c in cfg.get("channels") or []]
        self._awaiting: dict = {}   # id(alert) -> [its alert record, channels yet to answer]
        self.group_wait = float(cfg.get("group_wait_s", 1.0))
        self.window = float(cfg.get("window_s", 300.0))
        self.max_attempts = max(1, int(cfg.get("max_attempts", 4)))
        self.retry_base = float(cfg.get("retry_base_s", 1.0))
        self.counters = collections.Counter()
        self._secrets = [s for ch in self.channels for s in ch.secrets() if s]
        self._q: queue.Queue = queue.Queue(maxsize=int(cfg.get("queue_size", 10000)))
        self._groups: dict = {}
        self._retries: list = []
        self._seq = itertools.count()
        self._stop = threading.Event()
        self._idle = threading.Condition()
        self._thread = None
        self._pid = os.getpid()
        self._forks = _forks[0]
        for ch in self.channels:
            if ch.problem:
                self._warn("alert_channel_disabled", f"alert channel {ch.name!r} ({ch.kind}) disabled: {ch.problem}",
                           channel=ch.name)
        if state_path:
            self._load_baselines()
        if start:
            self.start()

    # ------------------------------------------------------------ writer thread side

    def process(self, record: dict) -> dict:
        """Pipeline processor: evaluate the rules on ``record``, enqueue events, return the record unchanged."""
        try:
            if _forks[0] != self._forks and self._pid != os.getpid():  # forked child: fresh locks,
                self._after_fork()                                       # queue and delivery thread
            rtype = record.get("type")
            rules = self._rules_for_type.get(rtype)
            if rules is None:
                rules = self._rules_for(rtype)
            for rule in rules:
                ev = rule.check(record)
                if ev is not None:
                    self._enqueue(ev)
        except Exception:  # noqa: BLE001 - alerting must never hurt the pipeline
            self.counters["internal_errors"] += 1
        return record

    def observe(self, records: list) -> None:
        """Pipeline observer: the rules over one delivered batch at once, each rule over the records of
        the types it matches (``Rule.check_many``: the same events as ``process`` on each record)."""
        try:
            if _forks[0] != self._forks and self._pid != os.getpid():
                self._after_fork()
            try:
                types = list(map(dict.get, records, itertools.repeat("type")))
                kinds = set(types)
            except TypeError:       # a record that is no dict, a type that is no text: one by one
                for record in records:
                    self.process(record)
                return
            events: list = []
            for rtype in kinds:
                rules = self._rules_for_type.get(rtype)
                if rules is None:
                    rules = self._rules_for(rtype)
                if not rules:
                    continue
                if len(kinds) == 1:
                    rows, columns = records, {"type": types}
                else:               # this type's records, picked at C level
                    rows = list(itertools.compress(records, map(operator.eq, types, itertools.repeat(rtype))))
                    columns = {}
                for rule in rules:
                    rule.check_many(rows, events, columns)
            for ev in events:
                self._enqueue(ev)
        except Exception:  # noqa: BLE001 - alerting must never hurt the pipeline
            self.counters["internal_errors"] += 1

    def _enqueue(self, ev):
        try:
            self._q.put_nowait(ev)
            self.counters["events"] += 1
        except queue.Full:
            self.counters["events_dropped"] += 1

    def _rules_for(self, rtype):
        if rtype in ("alert", "warning", "dropped") or not isinstance(rtype, str):
            rules = ()
        else:
            rules = tuple(r for r in self.rules if r.types is None or rtype in r.types)
        if len(self._rules_for_type) < 64:   # record types are few; never grow without bound
            self._rules_for_type[rtype] = rules
        return rules

    # ------------------------------------------------------------ lifecycle

    def _after_fork(self):
        self._forks = _forks[0]
        # The parent's delivery thread may have held the queue's lock at fork time: never reuse it.
        self._pid = os.getpid()
        self.state_path = None      # the parent's baselines file is the parent's to write
        self._q = queue.Queue(maxsize=self._q.maxsize)
        self._groups = {}
        self._retries = []
        self._stop = threading.Event()
        self._thread = None
        self.start()

    def start(self):
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="autoperf-alerts", daemon=True)
            threads.start(self._thread)

    def close(self, timeout: float = 5.0):
        """Send what is grouped now (one attempt each within ``timeout``) and stop the thread."""
        self._stop.set()
        try:
            self._q.put_nowait(None)
        except queue.Full:
            pass
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def idle(self, timeout: float = 10.0) -> bool:
        """Wait until no event is queued, grouped-and-due or awaiting a retry (for tests and shutdown)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._q.empty() and not self._retries and all(g.count == 0 for g in list(self._groups.values())):
                return True
            time.sleep(0.02)
        return False

    # ------------------------------------------------------------ delivery thread

    def _run(self):
        while True:
            timeout = self._next_wakeup()
            try:
                ev = self._q.get(timeout=timeout)
                if ev is not None:
                    self._ingest(ev)
                while True:  # drain the burst
                    ev = self._q.get_nowait()
                    if ev is not None:
                        self._ingest(ev)
            except queue.Empty:
                pass
            try:
                stopping = self._stop.is_set()
                self._tick(final=stopping)
                self._deliver_due(final=stopping)
                if stopping or time.monotonic() >= self._next_save:
                    self._save_baselines()
            except Exception as exc:  # noqa: BLE001
                self.counters["internal_errors"] += 1
                self._warn("internal_error", f"alert delivery thread: {type(exc).__name__}")
            if self._stop.is_set():
                return

    # ------------------------------------------------------------ baselines across restarts

    def _load_baselines(self):
        try:
            with open(self.state_path, "rb") as f:
                saved = json.load(f).get("baselines") or {}
        except FileNotFoundError:
            return
        except (OSError, ValueError, AttributeError) as exc:
            self._warn("alert_state_unreadable", f"alert baselines not restored: {type(exc).__name__}")
            return
        for rule in self.rules:
            windows = saved.get(rule.name)
            if rule.factor is not None and isinstance(windows, dict):
                rule.restore(windows)
        self._saved_updates = self._updates()

    def _updates(self):
        return sum(r.updates for r in self.rules if r.factor is not None)

    def _save_baselines(self):
        """Write the baseline windows when they changed (delivery thread; a temp file, then a rename)."""
        self._next_save = time.monotonic() + BASELINE_SAVE_S
        if not self.state_path or self._pid != os.getpid():
            return
        updates = self._updates()
        if updates == self._saved_updates:
            return
        data = {"version": 1, "baselines": {r.name: r.baselines() for r in self.rules if r.factor is not None}}
        tmp = f"{self.state_path}.{os.getpid()}.tmp"
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(data, f, separators=(",", ":"))
            os.replace(tmp, self.state_path)
            self._saved_updates = updates
        except OSError as exc:
            self._warn("alert_state_unwritable", f"alert baselines not saved: {type(exc).__name__}")

    def _next_wakeup(self) -> float:
        # Events and stop() wake the thread through the queue; otherwise it only has to wake for
        # what is due. The cap is a safety net (an idle wake-up costs ~0.2 ms of CPU on a VM).
        now = time.monotonic()
        t = now + IDLE_WAKEUP_S
        for g in self._groups.values():
            if g.count and g.due is not None:
                t = min(t, g.due)
            elif g.window_end is not None:
                t = min(t, g.window_end)
        if self._retries:
            t = min(t, self._retries[0][0])
        return max(0.0, t - now)

    def _ingest(self, ev: dict):
        k = (ev["rule"], ev["key"])
        g = self._groups.get(k)
        now = time.monotonic()
        if g is None:
            self._groups[k] = _Group(now, self.group_wait, ev)
            if len(self._groups) > 10000:  # bound memory: forget the oldest idle group
                for kk, gg in list(self._groups.items()):
                    if gg.count == 0:
                        del self._groups[kk]
                        break
            return
        if g.count == 0:
            g.first_ts = ev.get("timestamp")
        g.count += 1
        g.last = ev
        g.max_value = max(g.max_value, ev["value"]) if g.count > 1 else ev["value"]

    def _tick(self, final=False):
        now = time.monotonic()
        for k, g in list(self._groups.items()):
            if g.count and (final or (g.due is not None and now >= g.due)):
                self._send_group(g)
                g.due = None
                g.window_end = now + self.window
            elif g.window_end is not None and now >= g.window_end:
                if g.count:
                    self._send_group(g)
                    g.window_end = now + self.window
                else:
                    del self._groups[k]

    def _send_group(self, g: _Group):
        alert = dict(g.last)
        alert["count"] = g.count
        alert["max_value"] = g.max_value
        alert["first_timestamp"] = g.first_ts
        alert["window_s"] = self.window
        g.count = 0
        self.counters["messages"] += 1
        try:
            from autoperf.alerts.channels import format_text

            text = format_text(alert)
        except Exception:  # noqa: BLE001
            text = f"{alert['rule']} {alert.get('key', '')}"
        rec = {"type": "alert", "level": alert["severity"], "rule": alert["rule"], "severity": alert["severity"],
               "key": alert["key"], "count": alert["count"], "value": alert["value"], "max_value": alert["max_value"],
               "threshold": alert["threshold"], "message": text}
        if alert.get("baseline") is not None:
            rec["baseline"] = alert["baseline"]
        if alert.get("flow_name"):
            rec["flow_name"] = alert["flow_name"]
        # The record is written once every channel has answered: ``channels`` lists those the
        # message reached, ``failed`` those it could not (after the retries).
        rec["channels"], rec["failed"] = [], []
        wanted = [ch for ch in self.channels if ch.wants(alert)]
        self._awaiting[id(alert)] = [rec, len(wanted)]
        if not wanted:
            self._emit(rec)
        now = time.monotonic()
        for ch in wanted:
            heapq.heappush(self._retries, (now, next(self._seq), ch, alert, 1))

    def _answered(self, alert, channel, delivered):
        entry = self._awaiting[id(alert)]   # the alert dict stays alive in the retry heap till here
        entry[0]["channels" if delivered else "failed"].append(channel.name)
        entry[1] -= 1
        if entry[1] == 0:
            del self._awaiting[id(alert)]
            self._emit(entry[0])

    def _deliver_due(self, final=False):
        deadline = time.monotonic() + 5.0
        while self._retries and (self._retries[0][0] <= time.monotonic() or final):
            if final and time.monotonic() > deadline:    # out of time at exit: the rest failed
                for _, _, ch, alert, _ in sorted(self._retries):
                    self._answered(alert, ch, delivered=False)
                self._retries.clear()
                break
            _, _, ch, alert, attempt = heapq.heappop(self._retries)
            self.counters["attempts"] += 1
            try:
                ch.send(alert)
                self.counters["delivered"] += 1
                self._answered(alert, ch, delivered=True)
                continue
            except DeliveryError as exc:
                reason, retryable = exc.reason, exc.retryable
            except Exception as exc:  # noqa: BLE001 - a channel bug must not stop delivery
                reason, retryable = type(exc).__name__, False
            if retryable and attempt < self.max_attempts and not final:
                delay = self.retry_base * (2 ** (attempt - 1))
                heapq.heappush(self._retries, (time.monotonic() + delay, next(self._seq), ch, alert, attempt + 1))
                self.counters["retries"] += 1
                continue
            self.counters["failed"] += 1
            self._answered(alert, ch, delivered=False)
            self._emit({
                "type": "warning", "level": "WARNING", "code": "alert_delivery_failed",
                "message": scrub(f"alert {alert['rule']!r} could not be delivered to channel {ch.name!r} "
                                 f"({ch.kind}) after {attempt} attempt{'s' if attempt > 1 else ''}: {reason}",
                                 self._secrets),
                "channel": ch.name, "rule": alert["rule"], "attempts": attempt, "count": 1,
            })

    # ------------------------------------------------------------ output

    def _emit(self, record: dict):
        try:
            self.emit(record)
        except Exception:  # noqa: BLE001
            self.counters["emit_errors"] += 1

    def _warn(self, code, message, **fields):
        self._emit({"type": "warning", "level": "WARNING", "code": code, "message": scrub(message, self._secrets),
                    "count": 1, **fields})
