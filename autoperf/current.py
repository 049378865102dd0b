"""The current span of each context, and ``MUTED``: what is current while autoperf does its own work.

autoperf's own threads (``threads.start``), its stop paths and drains, import hooks and captures run
with ``MUTED`` current; no span starts under it. So the store's COPYs, alert deliveries and exporters
are never recorded as the program's work, and autoperf never re-enters its own wrappers (a target on
``builtins:len`` or ``os:getpid`` calls straight through when autoperf is the caller). The check is one
identity test on the value the wrappers read anyway. Lowest layer: imports nothing of autoperf.
"""
from __future__ import annotations

from contextvars import ContextVar

__all__ = ["CURRENT_SPAN", "MUTED", "mute", "unmute"]

CURRENT_SPAN: ContextVar = ContextVar("autoperf_current_span", default=None)


class _Muted:
    """Answers like a finished, remote span so that code which missed the check records nothing:
    ``start()`` hands it back instead of a Span, spans made under it have it as their root and the
    writer drops them."""

    __slots__ = ()
    is_remote = True
    children = checkpoints = duration_ns = error = site = None
    span_id = flow_id = start_ns = 0
    name = flow_name = None
    kind = "muted"
    status = "success"

    @property
    def root(self):
        return self

    @property
    def attrs(self):
        return {}           # written to by integrations, thrown away

    def __setattr__(self, name, value):
        pass                # s.status = ..., s.start_ns = ...: nothing to keep

    def set(self, key, value):
        pass

    def fail(self, exc):
        pass

    def finish(self, duration_ns=None):
        pass

    def ref(self):
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def __reduce__(self):
        return "MUTED"

    def __repr__(self):
        return "<autoperf MUTED>"


MUTED = _Muted()
_set = CURRENT_SPAN.set
_reset = CURRENT_SPAN.reset


def mute():
    """Make autoperf's own work in this context unrecorded; returns a token for ``unmute``."""
    return _set(MUTED)


def unmute(token) -> None:
    try:
        _reset(token)
    except ValueError:      # reset in another context than it was set in: that context keeps MUTED
        pass
