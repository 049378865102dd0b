"""Wrap and unwrap library attributes exactly, for integrations, on wrapt's patching layer.

``wrap(owner, "method", factory)`` replaces ``owner.method`` through ``wrapt.wrap_object`` (which
resolves it with ``resolve_path``: a class's ``vars()`` along its MRO, nothing bound) by
``factory(original)``, autoperf's own wrapper; wrapt keeps no record and has no unregister, so the
original as found in ``vars(owner)`` is kept here and ``unwrap`` restores the very same object (a
staticmethod stays one; an inherited attribute is removed again rather than copied). ``replace``
does the same for a plain value. Changes made ``by=`` an integration are undone together, newest
first, by ``restore(by)``: its one uninstall loop.
"""
from __future__ import annotations

import functools

from autoperf._wrapt import wrapt

_ORIGINALS: dict = {}   # (id(owner), attr) -> (owner, attr, original-or-_ABSENT, replacement, by)
_ABSENT = object()


def wrap(owner, attr, factory, *, keep_metadata=True, by=None):
    """Replace ``owner.attr`` by ``factory(original)``; idempotent per (owner, attr).
    A class is replaced without copying its metadata (a wrapper class has its own)."""
    key = (id(owner), attr)
    if key in _ORIGINALS:
        return _ORIGINALS[key][3]
    raw = vars(owner).get(attr, _ABSENT) if hasattr(owner, "__dict__") else _ABSENT
    replacement = wrapt.wrap_object(owner, attr, _wrapped, (factory, keep_metadata))
    _ORIGINALS[key] = (owner, attr, raw, replacement, by)
    return replacement


def _wrapped(original, factory, keep_metadata):
    """``wrap_object``'s factory: ``factory``'s wrapper of the original (of the function inside a
    staticmethod or classmethod, re-wrapped in its kind)."""
    if isinstance(original, (staticmethod, classmethod)):
        inner = factory(original.__func__)
        if keep_metadata:
            _copy_metadata(inner, original.__func__)
        return type(original)(inner)
    replacement = factory(original)
    if keep_metadata and not isinstance(original, type):
        _copy_metadata(replacement, original)
    return replacement


def replace(obj, attr, value, *, by=None):
    """Set ``obj.attr = value``, remembering the first original so ``restore(by)`` puts it back."""
    key = (id(obj), attr)
    entry = _ORIGINALS.get(key)
    if entry is None:
        raw = vars(obj).get(attr, _ABSENT) if hasattr(obj, "__dict__") else getattr(obj, attr, _ABSENT)
        entry = (obj, attr, raw, value, by)
    wrapt.apply_patch(obj, attr, value)
    _ORIGINALS[key] = entry[:3] + (value, entry[4])


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
    _put_back(entry)
    return True


def _put_back(entry):
    owner, attr, raw = entry[:3]
    if raw is _ABSENT:
        try:
            delattr(owner, attr)
        except AttributeError:
            pass
    else:
        wrapt.apply_patch(owner, attr, raw)


def restore(by, keep=()):
    """Undo every change made ``by=by``, newest first; qualified ``keep`` names
    (``"Class.attr"``) stay as they are."""
    for key, entry in reversed(list(_ORIGINALS.items())):
        if entry[4] != by or _name(entry[0], entry[1]) in keep:
            continue
        if _ORIGINALS.pop(key, None) is not None:
            _put_back(entry)


def _name(owner, attr):
    return f"{getattr(owner, '__qualname__', '')}.{attr}".lstrip(".") if isinstance(owner, type) else attr


def changed_by(by):
    """``[(owner, attr, original)]`` changed ``by=by`` and not restored (the contract tests)."""
    return [(e[0], e[1], e[2]) for e in _ORIGINALS.values() if e[4] == by]


def is_wrapped(owner, attr):
    return (id(owner), attr) in _ORIGINALS


def original(owner, attr):
    entry = _ORIGINALS.get((id(owner), attr))
    if entry is None:
        return getattr(owner, attr)
    raw = entry[2]
    return getattr(owner, attr) if raw is _ABSENT else raw
