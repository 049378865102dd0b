"""autoperf's own threads start with the process's asynchronous signals blocked.

The kernel may deliver a process-directed signal (SIGTERM from ``Pool.terminate()``, SIGINT) to any
thread that does not block it, but Python handles it only when the main thread runs bytecode again:
one picked by our thread left a main thread blocked in ``sem_wait`` hung. With the signals blocked in
our threads they reach the program's own threads, as without autoperf. :func:`guard_forks` blocks
them across every fork, so one arriving just after it is delivered once the child is set up (CPython
forgets pending signals at fork).
"""
from __future__ import annotations

# DEV: before the block, about 1 run in 100 of tests/test_cli_run.py's fork test hung in pool.join():
# a worker waiting in sem_wait for its next task never ran autoperf's SIGTERM handler (flush, then
# die as the default would). Before guard_forks, Pool.terminate() right after a worker was forked
# hung too (the SIGTERM that arrived between fork and the child's set-up was dropped).

import signal
import threading

from autoperf.current import mute

__all__ = ["start", "block_async_signals", "restore_signals", "guard_forks"]

# Synchronous signals (a fault in the thread itself) and the uncatchable ones stay unblocked.
_SYNCHRONOUS = {getattr(signal, n) for n in ("SIGSEGV", "SIGBUS", "SIGFPE", "SIGILL", "SIGABRT", "SIGTRAP",
                                             "SIGSYS", "SIGKILL", "SIGSTOP") if hasattr(signal, n)}
try:
    _ASYNC = frozenset(signal.valid_signals()) - _SYNCHRONOUS
except AttributeError:                       # pragma: no cover - not on Unix
    _ASYNC = frozenset()


def block_async_signals():
    """Block the asynchronous signals in the calling thread; returns the previous mask for
    :func:`restore_signals` (None where there are no signal masks)."""
    mask = getattr(signal, "pthread_sigmask", None)
    if mask is None or not _ASYNC:           # pragma: no cover - not on Unix
        return None
    try:
        return mask(signal.SIG_BLOCK, _ASYNC)
    except (OSError, ValueError):            # pragma: no cover
        return None


def restore_signals(old) -> None:
    """Put back the mask :func:`block_async_signals` returned; signals that came meanwhile are
    delivered now."""
    if old is not None:
        try:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        except (OSError, ValueError):        # pragma: no cover
            pass


def start(thread: threading.Thread) -> None:
    """``thread.start()``, the new thread inheriting a mask that blocks the asynchronous signals
    (set around the start in the calling thread, so there is no window before the thread masks itself),
    and running muted: nothing it does (or the tasks and callbacks it starts) is the program's work."""
    # Muted from the thread's first bytecode: threading's own start-up (Event.set -> len) comes before run().
    name = "_bootstrap_inner" if hasattr(thread, "_bootstrap_inner") else "run"
    first = getattr(thread, name)

    def muted():
        mute()
        first()

    setattr(thread, name, muted)
    old = block_async_signals()
    try:
        thread.start()
    finally:
        restore_signals(old)


_fork_masks: dict = {}       # forking thread's ident -> its mask before the fork (the child keeps both)
_guarding = False


def _block_for_fork():
    _fork_masks[threading.get_ident()] = block_async_signals()


def _unblock_after_fork():
    restore_signals(_fork_masks.pop(threading.get_ident(), None))


def guard_forks() -> None:
    """Block the asynchronous signals from just before a fork until the child (and the parent) is set
    up. Called when autoperf installs its SIGTERM handler, after the pipeline and diagnostics registered
    their fork hooks: ``before`` hooks run last-registered first, ``after`` hooks first-registered first,
    so these wrap the hooks that reset the locks a handler needs. Idempotent."""
    global _guarding
    if _guarding or not hasattr(signal, "pthread_sigmask"):
        return
    _guarding = True
    import os
    os.register_at_fork(before=_block_for_fork, after_in_parent=_unblock_after_fork,
                        after_in_child=_unblock_after_fork)
