"""Post-import hooks: wrapt's importer, plus the two things it leaves out.

``register(name, hook)`` calls ``hook(module)`` once ``name`` is imported (now, if it already is),
through ``wrapt.register_post_import_hook``; a raising hook never fails the program's import. wrapt
fires a hook once: with ``every_import=True`` it fires again whenever the module's code runs again
(``importlib.reload``; a fresh import after ``del sys.modules[name]``, as discord.py's
``reload_extension`` does), and ``failed`` names those modules whose import raised (the exit
report). Both come from ``_Observer``, a finder that looks only at those modules' imports.
"""
from __future__ import annotations

import importlib.util
import os
import sys
import threading

from autoperf._wrapt import wrapt

_lock = threading.RLock()
_every: dict = {}                 # module name -> [_Every]
_resolving = threading.local()    # names _Observer is looking up (its own find_spec re-enters it)
#: Modules hooked with every_import whose import raised: name -> exception type name.
failed: dict = {}


def register(name: str, hook, every_import: bool = False) -> None:
    """Call ``hook(module)`` once ``name`` is imported (now, if it is); with ``every_import`` also
    each time the module's code runs again."""
    hook = _guarded(hook)
    if every_import:
        hook = _Every(hook)
        with _lock:
            _every.setdefault(name, []).append(hook)
            if _observer not in sys.meta_path:
                sys.meta_path.insert(0, _observer)
    module = sys.modules.get(name)
    if module is not None and getattr(getattr(module, "__spec__", None), "_initializing", False):
        # Registered while the module's own code runs (install() at the top of it): wrapt would fire
        # on the half-made module, whose later names do not exist yet. Not now; an every-import
        # hook fires when the module's code runs again.
        if every_import:
            hook.fired = True
        return
    wrapt.register_post_import_hook(hook, name)


def forget(name: str) -> None:
    """Stop firing the every-import hooks of ``name`` (``uninstall``)."""
    with _lock:
        _every.pop(name, None)


def _guarded(hook):
    def guarded(module):
        try:
            hook(module)
        except Exception:  # wrapt would fail the program's import; the hooks report their own errors
            pass
    return guarded


class _Every:
    """An every-import hook; ``fired`` once wrapt has called it for the first import."""
    __slots__ = ("hook", "fired")

    def __init__(self, hook):
        self.hook, self.fired = hook, False

    def __call__(self, module):
        self.fired = True
        self.hook(module)


class _Observer:
    """First on ``sys.meta_path``; chains the loader of every-import modules (see ``_Loader``)."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in _every:
            return None
        names = getattr(_resolving, "names", None)
        if names is None:
            names = _resolving.names = set()
        if fullname in names:
            return None
        names.add(fullname)
        try:
            spec = importlib.util.find_spec(fullname)   # the finders after this one (wrapt's among them)
        except (ImportError, ValueError):
            return None
        finally:
            names.discard(fullname)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return None
        spec.loader = _Loader(spec.loader)
        return spec


class _Loader:
    """Runs the real loader; records an import that raised; after a run of the module's code that is
    not its first, fires the hooks wrapt already fired (those it fires now, for the first time, not)."""

    def __init__(self, loader):
        self._loader = loader

    def __getattr__(self, attr):
        return getattr(self._loader, attr)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        # The real loader goes back to the module before its code runs (importlib.resources, pkgutil).
        module.__loader__ = self._loader
        spec = getattr(module, "__spec__", None)
        if spec is not None:
            spec.loader = self._loader
        name = module.__name__
        with _lock:
            again = [hook for hook in _every.get(name, ()) if hook.fired]
        try:
            self._loader.exec_module(module)
        except BaseException as exc:
            failed[name] = type(exc).__name__
            raise
        for hook in again:
            hook.hook(module)


_observer = _Observer()


def _after_fork_in_child():
    # A thread of the parent may have held a lock at fork time; wrapt's is taken on every import.
    global _lock
    _lock = threading.RLock()
    if hasattr(wrapt.importer, "_post_import_hooks_lock"):
        wrapt.importer._post_import_hooks_lock = threading.RLock()


os.register_at_fork(after_in_child=_after_fork_in_child)
