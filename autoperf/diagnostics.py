"""autoperf's own problems: counted always, reported once each as a ``warning`` record.

Nothing here may raise: these functions are called from inside wrappers and hooks. The pipeline
hands over its ``emit`` when it is imported (``attach``); a warning from before waits for it.
"""
from __future__ import annotations

import os
import threading

_lock = threading.Lock()
_counts: dict = {}
_emit = None               # pipeline.emit, once the pipeline is imported (it imports us, not we it)
_waiting: list = []        # warnings from before that (bounded)


def _after_fork_in_child():
    global _lock
    _lock = threading.Lock()  # a thread of the parent may have held it at fork time


os.register_at_fork(after_in_child=_after_fork_in_child)


def warn_once(code: str, message: str, key=None, **fields) -> bool:
    """Emit one ``warning`` record per (code, key); later occurrences are only counted."""
    ident = (code, key if key is not None else message)
    try:
        with _lock:
            seen = _counts.get(ident, 0)
            _counts[ident] = seen + 1
        if seen:
            return False
        rec = {"type": "warning", "level": "WARNING", "code": code, "message": message}
        rec.update(fields)
        emit = _emit
        if emit is not None:
            emit(rec)
        elif len(_waiting) < 1000:
            _waiting.append(rec)
        return True
    except Exception:  # pragma: no cover - diagnostics must never be the thing that breaks
        return False


def internal_error(where: str, exc: BaseException) -> None:
    """An error inside autoperf: count it, report it once per place and type."""
    from autoperf.redact import mask  # an exception's text may quote a DSN or a URL with a password
    warn_once("internal_error", f"autoperf error in {where}: {type(exc).__name__}: {mask(str(exc))}",
              key=(where, type(exc).__name__), where=where, exception=type(exc).__name__)


def counts() -> dict:
    """How often each problem happened: ``{(code, key): count}``."""
    with _lock:
        return dict(_counts)


def attach(emit) -> None:
    """Send warnings to ``emit`` from now on (the pipeline's, at its import), those waiting first."""
    global _emit
    while _waiting:
        emit(_waiting.pop(0))
    _emit = emit


def reset() -> None:
    with _lock:
        _counts.clear()
