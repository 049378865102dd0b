"""The event loop: lag monitor and blocking detection for every running asyncio loop.

Loops are found through ``_set_running_loop`` (every ``run_forever``; uvloop's copy too). A timer
per loop measures lag (``lag_stats()``, read by the sampler) without waking an idle loop. On default
loops ``Handle._run`` notes each callback and reads the clock once when it returns; a watchdog
thread (``loop_watchdog``) samples the stack of a loop busy past ``blocking_threshold_ms`` while it
is still blocked, and a ``loop_blocked`` record follows (``ongoing`` for one that never returns).
Under uvloop blocking is seen from the late lag tick (``detector: lag``). Details and costs:
docs/integrations_runtime.md, "The event loop".
"""
from __future__ import annotations

import contextvars
import os
import threading
import weakref
from threading import get_ident
from time import perf_counter_ns

from autoperf import diagnostics, threads
from autoperf.current import mute
from autoperf.config.schema import Field, Float, Obj
from autoperf.integrations import base, loop_blocked, loop_watchdog

OPTIONS = Obj({
    "lag_interval_ms": Field(Float(min=0, min_exclusive=True), default=None,
                             doc="How often loop lag is probed (default: `loop.lag_interval_ms`, 100)."),
    "blocking_threshold_ms": Field(Float(min=0, min_exclusive=True), default=None,
                                   doc="A callback holding the loop longer than this gives a `loop_blocked` record "
                                       "(default: `loop.blocking_threshold_ms`, 100)."),
}, doc="Event-loop lag monitor and blocking detection.")

DEFAULT_LAG_INTERVAL_MS = 100.0
DEFAULT_BLOCKING_THRESHOLD_MS = 100.0
MAX_LAG_SAMPLES = 4096  # per loop between two lag_stats() calls (a ring beyond that)

_settings = {"interval_s": 0.1, "threshold_ns": 100_000_000}
_LOOP_ATTR = "_autoperf_loop_state"   # on a watched default loop: its _LoopState (read per callback)
_slots: dict = {}                       # thread ident -> _LoopState of the loop running there
_slots_get = _slots.get
_keep: dict = {}                        # id(loop) -> _LoopState (forgotten once the loop is gone)
_watchdog = None
_active = False


class _LoopState:
    """One running loop: its lag samples, its heartbeat and its "running since" slot."""

    __slots__ = ("loop", "tid", "since", "handle", "sampled", "sample", "ongoing_reported",
                 "timer", "expected", "lags", "nlags", "heartbeat", "hb_sampled", "handles",
                 "selector", "context", "interval_s", "io", "quiet", "asleep", "idle_ticks", "__weakref__")

    def __init__(self, loop):
        self.loop = weakref.ref(loop)
        self.tid = get_ident()
        self.since = 0          # perf_counter_ns the running step started (~ the previous ended); 0 = idle
        self.handle = None      # the running asyncio Handle (the last one between steps)
        self.sampled = 0        # `since` of the block whose stack is in `sample`
        self.sample = None
        self.ongoing_reported = 0
        self.timer = None
        self.expected = 0.0
        self.lags = []
        self.nlags = 0
        self.heartbeat = 0      # perf_counter_ns of the last lag tick
        self.hb_sampled = 0
        self.handles = False    # Handle._run is timed on this loop (its selector is hooked)
        self.selector = None
        # The tick's own empty context: it never sees the program's spans. Only this loop's thread
        # enters it, one tick at a time (a loop runs in one thread at once).
        self.context = contextvars.Context()
        self.context.run(mute)  # and it is autoperf's work: nothing it calls is a span
        self.interval_s = 0.1
        self.io = False         # the selector returned events since the watchdog last looked
        self.quiet = 0          # watchdog looks in a row that found the loop idle without I/O
        self.asleep = False     # the watchdog sleeps past this loop's next I/O: ring it then
        self.idle_ticks = 0     # ticks not run because the loop slept through them (lag 0 each)

    # -- lag monitor (runs on the loop) -------------------------------------------------------
    def start(self, loop):
        self.interval_s = _settings["interval_s"]
        self.heartbeat = self.since = perf_counter_ns()
        self.handles = self._hook(loop)
        self._schedule(loop, loop.time())

    def _schedule(self, loop, now):
        self.expected = now + self.interval_s
        self.timer = loop.call_at(self.expected, self.tick, context=self.context)

    def _hook(self, loop):
        """Hook this loop's selector and point the loop at this state (True), or leave the loop to
        the lag detector (False: uvloop, a loop without a Python selector)."""
        import asyncio
        selector = getattr(loop, "_selector", None)  # BaseSelectorEventLoop
        if selector is None:
            selector = getattr(loop, "_proactor", None)  # Windows: the proactor has select() too
        real = getattr(selector, "select", None)
        if real is None or not isinstance(loop, asyncio.BaseEventLoop):
            return False
        real = getattr(real, "_autoperf_real", real)  # a hook left by an earlier state (fork)
        try:
            selector.select = _select_hook(self, real)  # instance attribute: this loop only
            setattr(loop, _LOOP_ATTR, self)
        except (AttributeError, TypeError):
            self.selector = selector
            self._unhook()
            return False
        self.selector = selector
        return True

    def _unhook(self):
        # getattr/delattr only: vars() would turn the loop's (and selector's) inline attribute
        # values into a dict for good, slowing every attribute read of the loop (~+500 ns per
        # callback measured on 3.11).
        selector, self.selector = self.selector, None
        if selector is not None and getattr(getattr(selector, "select", None), "_autoperf_real", None):
            try:
                del selector.select
            except AttributeError:
                pass
        loop = self.loop()
        if loop is not None and getattr(loop, _LOOP_ATTR, None) is self:
            try:
                delattr(loop, _LOOP_ATTR)
            except AttributeError:
                pass

    def tick(self):
        loop = self.loop()
        if loop is None or not _active:
            return
        now = loop.time()
        lag_ms = max(0.0, (now - self.expected) * 1e3)
        previous_beat = self.heartbeat
        self.heartbeat = perf_counter_ns()
        lags = self.lags
        if len(lags) < MAX_LAG_SAMPLES:
            lags.append(lag_ms)
        else:
            lags[self.nlags % MAX_LAG_SAMPLES] = lag_ms
        self.nlags += 1
        if not self.handles and lag_ms * 1e6 >= _settings["threshold_ns"]:
            self._lag_blocked(lag_ms, previous_beat)
        self._schedule(loop, now)

    def slept_through_tick(self, loop):
        """The selector slept past the tick's due time (nothing else to do, see ``_select_hook``):
        every tick due meanwhile would have run at once (lag 0). The one due now measures from the
        wake-up, so it sees only this iteration's callbacks, not the sleep."""
        now = loop.time()
        if now > self.expected:
            self.idle_ticks += int((now - self.expected) / self.interval_s)
            self.expected = now

    def next_timer_but_tick(self, loop):
        """``loop.time()`` at which the loop's next timer other than the lag tick is due, or None."""
        heap = loop._scheduled  # noqa: SLF001 - the loop's timer heap: heap[0] is the next timer
        # the second-smallest of a binary heap is a child of the root
        nxt = heap[1:3] if heap and heap[0] is self.timer else heap[:1]
        return min((h._when for h in nxt), default=None)  # noqa: SLF001

    def stop(self):
        timer, self.timer = self.timer, None
        if timer is not None:
            timer.cancel()
        self._unhook()
        self.handles = False
        self.since = 0
        self.handle = None

    def _lag_blocked(self, lag_ms, previous_beat):
        sample = self.sample if self.hb_sampled == previous_beat else None
        _emit_blocked(lag_ms, sample, None, detector="lag")



# -- finding loops -----------------------------------------------------------------------------
def _loop_started(loop):
    tid = get_ident()
    state = _keep.get(id(loop))
    if state is None or state.loop() is not loop:
        if len(_keep) >= 64:
            _forget_dead_loops()
        state = _LoopState(loop)
        _keep[id(loop)] = state
    state.stop()  # a timer left from an earlier run of this loop
    state.tid = tid
    _slots[tid] = state
    state.start(loop)
    _ensure_watchdog()
    _ring_watchdog()  # it may sleep long: a new loop is busy from its first step


def _loop_stopped():
    state = _slots.pop(get_ident(), None)
    if state is not None:
        state.stop()


def _forget_dead_loops():
    for key, state in list(_keep.items()):
        if state.loop() is None:
            _keep.pop(key, None)


def _set_running_loop_factory(original):
    def _set_running_loop(loop):
        if loop is None:
            try:
                _loop_stopped()
            except Exception as exc:
                diagnostics.internal_error("event_loop stop", exc)
            return original(loop)
        original(loop)
        try:
            _loop_started(loop)
        except Exception as exc:
            diagnostics.internal_error("event_loop start", exc)
    return _set_running_loop


def _select_hook(state, real):
    """The loop's ``selector.select``: idle while it waits, busy (``since``) from its return.

    ``select(0)`` between busy iterations leaves the loop busy (it never waited). Events coming
    in while the watchdog sleeps long (see ``loop_watchdog.Watchdog.check``) ring it: a step started by I/O is
    then watched from its first threshold on."""
    now = perf_counter_ns

    def select(timeout=None):
        if timeout == 0:
            return real(0)
        state.since = 0
        loop = None
        if timeout is not None:
            # The loop goes to sleep until its next timer. When that is the lag tick, waking up for
            # it would only measure an idle loop (lag 0) and costs a wake-up (~0.1-0.2 ms of CPU
            # on a VM): sleep until the next other timer or I/O instead (slept_through_tick).
            loop = state.loop()
            try:
                heap = loop._scheduled  # noqa: SLF001
                if heap and heap[0] is state.timer:
                    when = state.next_timer_but_tick(loop)
                    timeout = None if when is None else min(max(0.0, when - loop.time()), 86400.0)
                else:
                    loop = None
            except (AttributeError, TypeError, ValueError):
                loop = None
        try:
            ready = real(timeout)
        finally:
            state.since = now()
        if loop is not None:
            state.slept_through_tick(loop)
        if ready:
            state.io = True
            if state.asleep:  # written by the watchdog before it read `since`: one of us sees the other
                state.asleep = False
                _ring_watchdog()
        return ready
    select._autoperf_real = real
    return select


def _handle_run_factory(original):
    now = perf_counter_ns
    threshold = _settings["threshold_ns"]  # set by patch() before wrapping

    def _run(self):
        try:
            state = self._loop._autoperf_loop_state  # None (class default): a loop we do not time
        except AttributeError:  # a loop that is no BaseEventLoop
            return original(self)
        if state is None:
            return original(self)
        state.handle = self
        try:
            return original(self)
        finally:
            # One clock read per callback: this step ends now and the next one starts about now
            # (the loop's bookkeeping between two handles is well under a microsecond).
            end = now()
            start = state.since
            state.since = end
            if end - start >= threshold and start:
                _handle_blocked(state, self, start, end)
    return _run



# -- reporting ---------------------------------------------------------------------------------
def _handle_blocked(state, handle, start, end):
    try:
        state.handle = None
        sample = state.sample if state.sampled == start else None
        if sample is None:
            sample = loop_blocked.handle_sample(handle)
        # reported while ongoing: this record replaces that one (same block_id)
        _emit_blocked((end - start) / 1e6, sample, handle, block=start if state.ongoing_reported == start else None)
    except Exception as exc:
        diagnostics.internal_error("event_loop blocked", exc)


def _emit_blocked(duration_ms, sample, handle, detector="handle", ongoing=False, block=None):
    loop_blocked.emit(duration_ms, sample, _settings["threshold_ns"], detector, ongoing, block)


# -- the watchdog thread (loop_watchdog.py) ----------------------------------------------------
def _ring_watchdog():
    dog = _watchdog
    if dog is not None:
        dog.ring()


def _after_fork_in_child():
    # The child has one thread and no running loop of ours; a loop it starts is watched afresh.
    global _watchdog
    _slots.clear()
    _keep.clear()
    _watchdog = None


os.register_at_fork(after_in_child=_after_fork_in_child)


def _ensure_watchdog():
    global _watchdog
    if _watchdog is not None and _watchdog.is_alive():
        return
    _watchdog = loop_watchdog.Watchdog(_slots, _settings, _emit_blocked)
    threads.start(_watchdog)


def _stop_watchdog():
    global _watchdog
    dog, _watchdog = _watchdog, None
    if dog is not None:
        dog.stop()
        if dog is not threading.current_thread():
            dog.join(timeout=2)


# -- lag statistics for the sampler ------------------------------------------------------------
def lag_stats():
    """Loop lag in ms since the previous call, over all loops: ``{avg, p50, p95, max, count}`` or
    None when no loop ran a tick."""
    values = []
    for state in list(_keep.values()):
        lags, state.lags = state.lags, []
        idle, state.idle_ticks = state.idle_ticks, 0
        state.nlags = 0
        values.extend(lags)
        values.extend([0.0] * min(idle, MAX_LAG_SAMPLES))
    _forget_dead_loops()
    if not values:
        return None
    values.sort()
    n = len(values)

    def pct(p):
        return round(values[min(n - 1, int(p * n))], 3)

    return {"avg": round(sum(values) / n, 3), "p50": pct(0.5), "p95": pct(0.95),
            "max": round(values[-1], 3), "count": n}


def monitored_loops():
    """The loops being watched now (running)."""
    return [s.loop() for s in list(_slots.values()) if s.loop() is not None]


# -- patch / unpatch ---------------------------------------------------------------------------
def _configure(options):
    loop_cfg = options.get("loop") or {}   # the `loop:` section (its table row's `sections`)
    interval = options.get("lag_interval_ms") or loop_cfg.get("lag_interval_ms") or DEFAULT_LAG_INTERVAL_MS
    threshold = (options.get("blocking_threshold_ms") or loop_cfg.get("blocking_threshold_ms")
                 or DEFAULT_BLOCKING_THRESHOLD_MS)
    _settings["interval_s"] = float(interval) / 1e3
    _settings["threshold_ns"] = int(float(threshold) * 1e6)


def setup(module, options):
    global _active
    _configure(options)
    _active = True
    # Class default read by Handle._run on loops not (yet) watched, e.g. one already running in
    # another thread: a None check instead of an AttributeError per callback (undone by base.restore).
    base.replace(module.BaseEventLoop, _LOOP_ATTR, None, by="asyncio")


def started(module):
    """After the wraps (``integrations.patch``)."""
    running = module.events._get_running_loop()
    if running is not None:  # patched from inside a running loop: watch it from now on
        running.call_soon_threadsafe(_loop_started, running)


def teardown(module):
    """Before the wraps are undone (``integrations.unpatch``)."""
    global _active
    _active = False
    for tid, state in list(_slots.items()):
        loop = state.loop()
        _slots.pop(tid, None)
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(state.stop)
            except RuntimeError:
                pass
    _keep.clear()
    _stop_watchdog()
