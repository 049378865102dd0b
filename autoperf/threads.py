"""autoperf's own threads start with the process's asynchronous signals blocked.

The kernel delivers a signal sent to the process (SIGTERM from ``Pool.terminate()``, SIGINT from a
terminal, SIGCHLD) to any thread that does not block it. Python runs signal handlers only in the main
thread, and only once that thread runs bytecode again or a blocking call there fails with EINTR. When
the kernel picked one of our threads, a main thread blocked in a C-level wait never wakes: a pool
worker waiting in ``sem_wait`` for its next task, with autoperf's SIGTERM handler (which flushes, then
dies as the default would) installed, ignored ``Pool.terminate()`` and the program hung in
``pool.join()`` (about 1 run in 100 of tests/test_cli_run.py's fork test). With the signals blocked in
our threads, delivery goes to the program's own threads, as it would without autoperf.

A fork has the same problem in the child: CPython forgets the signals its C handler caught but the
child's main thread has not yet handled (``_PySignal_AfterFork``). Without a Python handler a SIGTERM
that arrives just after the fork kills the child; with autoperf's it was dropped — ``Pool.terminate()``
right after a worker was forked hung. So :func:`guard_forks` blocks the signals across every fork and
unblocks them once the child is set up: what came in between is delivered then, and handled.
"""
from __future__ import annotations

import signal
import threading

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
    (set around the start in the calling thread, so there is no window before the thread masks itself)."""
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
