"""Wrap and unwrap library attributes exactly, for integrations.

``wrap(owner, "method", factory)`` replaces ``owner.method`` by ``factory(original)`` and keeps
the original as found in ``vars(owner)`` so ``unwrap`` restores the very same object (a
staticmethod stays a staticmethod; an inherited attribute is removed again rather than copied).
"""
from __future__ import annotations

import functools
import importlib

_ORIGINALS: dict = {}   # (id(owner), attr) -> (owner, attr, original-or-_ABSENT, replacement)
_ABSENT = object()


def resolve(dotted_module, qualname):
    """``("asyncpg.connection", "Connection.execute")`` -> ``(owner_object, "execute")``."""
    owner = importlib.import_module(dotted_module)
    *path, attr = qualname.split(".")
    for part in path:
        owner = getattr(owner, part)
    return owner, attr


def wrap(owner, attr, factory, *, keep_metadata=True):
    """Replace ``owner.attr`` by ``factory(original)``; idempotent per (owner, attr)."""
    key = (id(owner), attr)
    if key in _ORIGINALS:
        return _ORIGINALS[key][3]
    raw = vars(owner).get(attr, _ABSENT) if hasattr(owner, "__dict__") else _ABSENT
    if isinstance(raw, (staticmethod, classmethod)):
        inner = factory(raw.__func__)
        if keep_metadata:
            _copy_metadata(inner, raw.__func__)
        replacement = type(raw)(inner)
    else:
        original = getattr(owner, attr)
        replacement = factory(original)
        if keep_metadata:
            _copy_metadata(replacement, original)
    setattr(owner, attr, replacement)
    _ORIGINALS[key] = (owner, attr, raw, replacement)
    return replacement


def _copy_metadata(replacement, original):
    if callable(replacement) and hasattr(replacement, "__dict__") and replacement is not original:
        try:
            functools.update_wrapper(replacement, original)
        except (AttributeError, TypeError):
            pass


def unwrap(owner, attr):
    entry = _ORIGINALS.pop((id(owner), attr), None)
    if entry is None:
        return False
    _, _, raw, _ = entry
    if raw is _ABSENT:
        try:
            delattr(owner, attr)
        except AttributeError:
            pass
    else:
        setattr(owner, attr, raw)
    return True


def is_wrapped(owner, attr):
    return (id(owner), attr) in _ORIGINALS


def original(owner, attr):
    entry = _ORIGINALS.get((id(owner), attr))
    if entry is None:
        return getattr(owner, attr)
    raw = entry[2]
    return getattr(owner, attr) if raw is _ABSENT else raw


def wrap_all(wraps, factories):
    """Apply ``WRAPS`` — ``[(module, qualname), ...]`` — with ``factories[qualname](original)``."""
    for module, qualname in wraps:
        owner, attr = resolve(module, qualname)
        wrap(owner, attr, factories[qualname])


def unwrap_all(wraps):
    for module, qualname in wraps:
        try:
            owner, attr = resolve(module, qualname)
        except (ImportError, AttributeError):
            continue
        unwrap(owner, attr)
