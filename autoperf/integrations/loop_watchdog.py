"""The blocking watchdog: a thread that samples a loop's stack while a callback still holds it.

``event_loop`` times every callback and task step on the loop thread; this thread looks at the
running step from outside, so that a block is seen (and the culprit line sampled with
``sys._current_frames()``) while it is going on, even if it never returns. It wakes when the next
block could cross the threshold, not on a fixed fast tick (see :class:`Watchdog`).
"""
from __future__ import annotations

import threading
from time import perf_counter_ns

from autoperf import diagnostics
from autoperf.integrations import loop_blocked

QUIET_LOOKS = 3        # idle looks without I/O before the watchdog sleeps past the loop's timers
LONG_SLEEP_S = 1.0     # the longest the watchdog sleeps (a step started some other way is seen by then)


class Watchdog(threading.Thread):
    """Wakes when the next block could cross the threshold — not on a fixed fast tick.

    While a loop is busy, the running step is looked at right when it could cross the threshold.
    While it is idle in its selector, a step can only start from I/O or from a timer: after a
    few quiet looks the watchdog sleeps until the loop's next timer other than the lag tick (+ the
    threshold), at most ``LONG_SLEEP_S``, and the selector rings it when events come in. An idle
    program's watchdog thus wakes about once a second instead of once per threshold."""

    def __init__(self, slots: dict, settings: dict, emit_blocked):
        super().__init__(name="autoperf-loop-watchdog", daemon=True)
        self.slots = slots                  # thread ident -> _LoopState (event_loop owns and fills it)
        self.settings = settings            # event_loop's live settings (threshold_ns, interval_s)
        self.emit_blocked = emit_blocked
        self._stopping = False
        self.looks = 0  # wake-ups so far (tests and benchmarks read it)
        self._bell = threading.Lock()
        self._bell.acquire()  # released by ring()/stop(): a C-level timed wait, cheaper than an Event

    def ring(self):
        try:
            self._bell.release()
        except RuntimeError:  # rung already and not yet heard
            pass

    def stop(self):
        self._stopping = True
        self.ring()

    def run(self):
        wait = self._bell.acquire
        delay = 0.01
        while True:
            wait(True, delay)
            if self._stopping:
                return
            self.looks += 1
            try:
                delay = self.check(perf_counter_ns())
            except Exception as exc:
                diagnostics.internal_error("event_loop watchdog", exc)
                delay = 0.5

    def check(self, now):
        """Sample what is blocked now; return the seconds until the next possible crossing."""
        settings, slots = self.settings, self.slots
        threshold = settings["threshold_ns"]
        ongoing_after = max(1_000_000_000, 5 * threshold)
        interval_ns = int(settings["interval_s"] * 1e9)
        if not slots:
            return 0.5
        poll = now + threshold
        next_at = now + int(LONG_SLEEP_S * 1e9)
        for tid, state in list(slots.items()):
            if not state.handles:  # uvloop: the lag tick's heartbeat tells
                beat = state.heartbeat
                due = beat + interval_ns + threshold
                if not beat or state.hb_sampled == beat:
                    next_at = min(next_at, poll)
                elif now >= due:
                    state.sample, state.hb_sampled = loop_blocked.stack_sample(tid, None), beat
                    next_at = min(next_at, poll)
                else:
                    next_at = min(next_at, due)
                continue
            state.asleep = False
            since = state.since
            if not since:  # idle in the selector
                wake = _idle_wake_at(state, now, threshold)
                if wake is None:
                    next_at = min(next_at, poll)
                    continue
                state.asleep = True  # from here the selector rings on I/O ...
                if state.since:      # ... unless it woke before it could see that
                    state.asleep = False
                    next_at = min(next_at, poll)
                else:
                    next_at = min(next_at, wake)
                continue
            state.quiet = 0
            if now - since < threshold:
                next_at = min(next_at, since + threshold)
                continue
            next_at = min(next_at, poll)
            handle = state.handle
            if state.sampled != since:
                sample = loop_blocked.stack_sample(tid, handle)
                if state.since != since:
                    continue  # it ended while we looked: the callback reports it
                state.sample, state.sampled = sample, since
            if state.ongoing_reported != since:
                if now - since >= ongoing_after:
                    state.ongoing_reported = since
                    self.emit_blocked((now - since) / 1e6, state.sample, handle, ongoing=True, block=since)
                else:
                    next_at = min(next_at, since + ongoing_after)
        return min(max((next_at - now) / 1e9, 0.002), LONG_SLEEP_S)


def _idle_wake_at(state, now, threshold):
    """For a loop idle in its selector: when the watchdog must look again if no I/O comes (its
    next timer other than the lag tick, + threshold), or None to keep polling every threshold
    (I/O came lately, fewer than QUIET_LOOKS idle looks yet, or callbacks wait to run)."""
    if state.io:
        state.io = False
        state.quiet = 0
        return None
    if state.quiet < QUIET_LOOKS:
        state.quiet += 1
        return None
    loop = state.loop()
    try:
        if loop is None or loop._ready:  # noqa: SLF001 - handles waiting (call_soon from a thread)
            return None
        when = state.next_timer_but_tick(loop)  # the loop sleeps now: its heap holds still
        if when is None:
            return now + int(LONG_SLEEP_S * 1e9)
        return now + max(0, int((when - loop.time()) * 1e9)) + threshold
    except (AttributeError, IndexError, TypeError, ValueError):
        return None
