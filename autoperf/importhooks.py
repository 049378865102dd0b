"""Post-import hooks: run a function the moment a module finishes importing.

wrapt's design (``wrapt.importer``): hooks per module name behind a lock, a meta-path finder that
chains the real loader and notifies after ``exec_module``, a hook for an imported module fires at
once, hooks run outside the lock (a hook importing another hooked module must not deadlock). Beyond
wrapt: a raising hook never fails the import, ``every_import=True`` hooks fire again on reload or a
fresh import after ``del sys.modules[name]`` (discord.py's ``reload_extension``), and ``failed``
names hooked modules whose import raised. (Importing wrapt here would also load importlib.metadata
at start-up: docs/performance.md.)
"""
from __future__ import annotations

import importlib.util
import os
import sys
import threading

_lock = threading.RLock()
_hooks: dict[str, list] = {}          # fire once, at the next import
_every: dict[str, list] = {}          # fire after every execution of the module's code
_resolving = threading.local()
#: Hooked modules whose import raised: name -> exception type name (the exit report says so).
failed: dict = {}


def _after_fork_in_child():
    global _lock
    _lock = threading.RLock()  # a thread of the parent may have held it at fork time


os.register_at_fork(after_in_child=_after_fork_in_child)


def register(name: str, hook, every_import: bool = False) -> None:
    """Call ``hook(module)`` once ``name`` is imported (now, if it already is); with ``every_import``
    also whenever the module is reloaded or imported anew."""
    with _lock:
        module = sys.modules.get(name)
        if every_import:
            _every.setdefault(name, []).append(hook)
            _install_finder()
        if module is None or _initialising(module):
            if not every_import:
                _hooks.setdefault(name, []).append(hook)
                _install_finder()
            return
    _fire([hook], module)


def _initialising(module) -> bool:
    spec = getattr(module, "__spec__", None)
    return bool(getattr(spec, "_initializing", False))


def _fire(hooks, module):
    for hook in hooks:
        try:
            hook(module)
        except Exception:  # the callers' hooks report their own errors; never break an import
            pass


def _notify(name):
    with _lock:
        hooks = _hooks.pop(name, []) + _every.get(name, [])
    module = sys.modules.get(name)
    if hooks and module is not None:
        _fire(hooks, module)


class _NotifyingLoader:
    """Delegates to the real loader; fires the module's hooks after it has executed."""

    def __init__(self, loader):
        self._loader = loader

    def __getattr__(self, attr):
        return getattr(self._loader, attr)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        # Hand the real loader back to the module before its code runs (importlib.resources,
        # pkgutil and friends inspect it).
        module.__loader__ = self._loader
        spec = getattr(module, "__spec__", None)
        if spec is not None:
            spec.loader = self._loader
        try:
            self._loader.exec_module(module)
        except BaseException as exc:
            failed[module.__name__] = type(exc).__name__
            raise
        _notify(module.__name__)


class _Finder:
    """First on ``sys.meta_path``; only looks at modules someone registered a hook for."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in _hooks and fullname not in _every:
            return None
        pending = getattr(_resolving, "names", None)
        if pending is None:
            pending = _resolving.names = set()
        if fullname in pending:
            return None
        pending.add(fullname)
        try:
            spec = importlib.util.find_spec(fullname)
        except (ImportError, ValueError):
            return None
        finally:
            pending.discard(fullname)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return None
        spec.loader = _NotifyingLoader(spec.loader)
        return spec


_finder = _Finder()


def _install_finder():
    if _finder not in sys.meta_path:
        sys.meta_path.insert(0, _finder)


def pending() -> list[str]:
    """Modules with hooks still waiting for their import."""
    with _lock:
        return sorted(_hooks)


def forget(name: str) -> None:
    """Drop the every-import hooks of ``name`` (``uninstall``)."""
    with _lock:
        _every.pop(name, None)
