"""autoperf's own threads start with the process's asynchronous signals blocked.

The kernel may deliver a process-directed signal (SIGTERM from ``Pool.terminate()``, SIGINT) to any
thread that does not block it, but Python handles it only when the main thread runs bytecode again:
one picked by our thread left a main thread blocked in ``sem_wait`` hung. With the signals blocked in
our threads they reach the program's own threads, as without autoperf. :func:`guard_forks` blocks
them across every fork, so one arriving just after it is delivered once the child is set up (CPython
forgets pending signals at fork).

A fork while one of our threads imports (the OTLP encoders and protobuf, orjson, asyncpg load in the
thread that first needs them) would leave that module's import lock held in the child by a thread
that does not exist there: the child's next import of it hangs for ever. So a fork first waits, for
a bounded time, until none of our threads is inside an import, and holds the import lock across it.
"""
from __future__ import annotations

# DEV: before the block, about 1 run in 100 of tests/test_cli_run.py's fork test hung in pool.join():
# a worker waiting in sem_wait for its next task never ran autoperf's SIGTERM handler (flush, then
# die as the default would). Before guard_forks, Pool.terminate() right after a worker was forked
# hung too (the SIGTERM that arrived between fork and the child's set-up was dropped).

import os
import signal
import threading
import time

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
        ident = threading.get_ident()
        _ours.add(ident)
        try:
            first()
        finally:
            _ours.discard(ident)

    setattr(thread, name, muted)
    _guard_imports_at_fork()
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
    os.register_at_fork(before=_block_for_fork, after_in_parent=_unblock_after_fork,
                        after_in_child=_unblock_after_fork)


# -- imports across a fork -------------------------------------------------------------------
FORK_IMPORT_WAIT_S = 5.0     # an import of ours still running after this is not waited for
_ours: set = set()           # idents of the running threads started by start()
_holding_import_lock: dict = {}   # forking thread -> True while it holds the import lock
_import_guard = False


def _guard_imports_at_fork() -> None:
    global _import_guard
    if not _import_guard:
        _import_guard = True
        os.register_at_fork(before=_wait_for_our_imports, after_in_parent=_release_import_lock,
                            after_in_child=_after_fork_child)


def _after_fork_child():
    _ours.intersection_update(t.ident for t in threading.enumerate())   # the parent's threads are gone
    _release_import_lock()


def _importing(owners) -> bool:
    """Whether a thread in ``owners`` holds a module's import lock (CPython's importlib internals;
    where they differ, nothing is waited for)."""
    try:
        from importlib import _bootstrap
        refs = list(_bootstrap._module_locks.values())
    except Exception:
        return False
    for ref in refs:
        lock = ref()
        if lock is not None and getattr(lock, "owner", None) in owners and getattr(lock, "count", 0):
            return True
    return False


def _wait_for_our_imports():
    import _imp
    others = _ours - {threading.get_ident()}
    deadline = time.monotonic() + FORK_IMPORT_WAIT_S
    while others:
        # Holding the import lock, no thread can start importing another module until the fork is done.
        _imp.acquire_lock()
        if not _importing(others):
            _holding_import_lock[threading.get_ident()] = True
            return
        _imp.release_lock()
        if time.monotonic() > deadline:
            return
        time.sleep(0.002)           # the import may need the import lock to finish
        others = _ours - {threading.get_ident()}


def _release_import_lock():
    if _holding_import_lock.pop(threading.get_ident(), False):
        import _imp
        try:
            _imp.release_lock()
        except RuntimeError:         # pragma: no cover - the child's lock was re-made unheld
            pass
