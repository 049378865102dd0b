"""A SIGTERM autoperf handles takes effect at once, even while the main thread waits in a blocking call.

Python runs a signal handler in the main thread at its next bytecode. When the kernel gives the signal
to another thread, or it lands just before the main thread enters ``sleep``/``select``, the main thread
first waits out that call: the default action (which autoperf's flush replaces) would have been
immediate. Python's C handler writes the signal's number to the wakeup fd from whichever thread took it;
a watcher thread reads it and, until the handler has run, sends the signal again to the main thread
itself (``pthread_kill`` interrupts its wait). Installed only while nobody else owns the wakeup fd
(an asyncio loop with signal handlers takes it over and wakes its thread itself).
"""
from __future__ import annotations

import os
import signal
import threading

from autoperf import threads

RESEND_AFTER_S = 0.05      # the handler normally runs within microseconds of the signal
_handled = threading.Event()
_fds: tuple | None = None   # (read end, write end) while the wakeup fd is ours
_fork_hook = False


def install(signum, handler) -> None:
    """Watch for ``signum`` while ``handler`` is its handler. Main thread only; once."""
    global _fds, _fork_hook
    if _fds is not None or not hasattr(signal, "pthread_kill"):
        return
    if threading.current_thread() is not threading.main_thread():
        return
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)       # the C handler must never block
    try:
        previous = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    except (ValueError, OSError):
        previous = None
    if previous != -1:                      # somebody else's (or no signals here): leave it to them
        if previous is not None:
            signal.set_wakeup_fd(previous)
        os.close(read_end)
        os.close(write_end)
        return
    _fds = (read_end, write_end)
    if not _fork_hook:
        os.register_at_fork(after_in_child=_forget_in_child)
        _fork_hook = True
    watcher = threading.Thread(target=_watch, args=(read_end, signum, handler, threading.main_thread().ident),
                               name="autoperf-signals", daemon=True)
    threads.start(watcher)


def handled() -> None:
    """The handler runs (called first thing in it): no more re-sending."""
    _handled.set()


def uninstall() -> None:
    """Give the wakeup fd back (if it is still ours); the watcher ends. Main thread only."""
    global _fds
    if _fds is None:
        return
    read_end, write_end = _fds
    _fds = None
    try:
        previous = signal.set_wakeup_fd(-1)
        if previous not in (write_end, -1):
            signal.set_wakeup_fd(previous)   # taken over meanwhile (asyncio): the owner's stays
    except (ValueError, OSError):
        pass
    os.close(write_end)                      # the watcher reads EOF and closes the read end


def _watch(read_end, signum, handler, main_ident):
    try:
        while True:
            data = os.read(read_end, 64)
            if not data:
                return
            if signum not in data:
                continue
            # Re-send only while our handler is the one installed: a handler the program put in
            # afterwards must not be called twice for one signal.
            while not _handled.wait(RESEND_AFTER_S) and signal.getsignal(signum) is handler:
                signal.pthread_kill(main_ident, signum)
    except OSError:
        return
    finally:
        try:
            os.close(read_end)
        except OSError:
            pass


def _forget_in_child():
    """A forked child has no watcher, and the pipe is shared with the parent's: the child's signals must
    not reach the parent's watcher."""
    global _fds
    if _fds is None:
        return
    fds, _fds = _fds, None
    try:
        signal.set_wakeup_fd(-1)
    except (ValueError, OSError):
        pass
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
