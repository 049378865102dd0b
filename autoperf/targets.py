"""Resolve ``module:qualname`` targets in a module and patch them, keeping every original.

Resolution walks ``vars()`` (never ``getattr``; wildcards match names there) so nothing is bound or
triggered by accident; the wrapper is autoperf's own (``wrappers.instrument``: a function of the
same kind, pickled by reference), set with ``wrapt.apply_patch``; each patch remembers the exact
object it replaced so ``unpatch_all()`` restores it.
"""
from __future__ import annotations

import fnmatch
import threading

from autoperf import diagnostics, wrappers
from autoperf._wrapt import wrapt
from autoperf.capture_binding import build_hooks

_WILDCARD = set("*?[")

_lock = threading.Lock()
#: (id(owner), attr) -> Patch ; owners are modules and classes
_patches: dict = {}
#: object adapters for targets that are not plain functions (e.g. discord.py commands)
_adapters: list = []
#: The configured targets, module name -> specs (filled by bootstrap.install; read by adapters).
configured: dict = {}
#: Module names whose targets were applied to the program's ``__main__`` (``app:f`` for app.py).
main_names: set = set()


class Patch:
    __slots__ = ("owner", "attr", "original", "replacement", "target")

    def __init__(self, owner, attr, original, replacement, target):
        self.owner, self.attr, self.original = owner, attr, original
        self.replacement, self.target = replacement, target

    def undo(self):
        current = vars(self.owner).get(self.attr)
        if current is self.replacement:
            wrapt.apply_patch(self.owner, self.attr, self.original)


def register_adapter(adapter):
    """``adapter(obj, site) -> replacement | None``: an integration instruments what it knows better
    (commands, task loops: callables that are not functions; a handler function it runs as a flow).

    An adapter may also instrument the object in place and return it unchanged.
    """
    if adapter not in _adapters:
        _adapters.append(adapter)


def _has_wildcard(part):
    return any(ch in _WILDCARD for ch in part)


def _members(owner, pattern, want_classes=False, module_name=None):
    """Names in ``vars(owner)`` matching ``pattern``."""
    import inspect
    space = vars(owner)
    if not _has_wildcard(pattern):
        return [pattern] if pattern in space else []
    out = []
    for key, value in list(space.items()):
        if key.startswith("__") or not fnmatch.fnmatchcase(key, pattern):
            continue
        raw = value.__func__ if isinstance(value, (classmethod, staticmethod)) else value
        if want_classes:
            if isinstance(value, type) and (module_name is None or value.__module__ == module_name):
                out.append(key)
        elif inspect.isfunction(raw) and (module_name is None or raw.__module__ == module_name
                                          or inspect.isclass(owner)):
            out.append(key)
    return out


def _nearest(owner, name):
    names = [k for k in vars(owner) if not k.startswith("__")]
    import difflib  # only when a target is missing

    return difflib.get_close_matches(name, names, n=3, cutoff=0.5)


def resolve(module, qualname):
    """``[(owner, attr)]`` matching the qualname in ``module``; ``(None, missing, near)`` when not."""
    parts = qualname.split(".")
    owners = [module]
    path = []
    for part in parts[:-1]:
        nxt = []
        for owner in owners:
            for key in _members(owner, part, want_classes=True,
                                module_name=module.__name__ if owner is module else None):
                value = vars(owner)[key]
                if isinstance(value, type):
                    nxt.append(value)
        if not nxt:
            near = _nearest(owners[0], part) if owners else []
            return [], ".".join(path + [part]), near
        owners = nxt
        path.append(part)
    last = parts[-1]
    found = []
    for owner in owners:
        module_name = module.__name__ if owner is module else None
        for key in _members(owner, last, module_name=module_name):
            found.append((owner, key))
    if not found:
        near = _nearest(owners[0], last) if owners else []
        return [], qualname, near
    return found, None, []


def _instrument_value(value, site):
    """The replacement for a class/module attribute, or None when it cannot be instrumented."""
    import inspect
    if isinstance(value, staticmethod):
        inner = _instrument_value(value.__func__, site)
        return None if inner is None else staticmethod(inner)
    if isinstance(value, classmethod):
        inner = _instrument_value(value.__func__, site)
        return None if inner is None else classmethod(inner)
    for adapter in _adapters:
        replacement = adapter(value, site)
        if replacement is not None:
            return replacement
    if inspect.isfunction(value) or inspect.ismethod(value) or inspect.isbuiltin(value):
        return wrappers.instrument(value, site)
    if callable(value) and not isinstance(value, type):
        return wrappers.instrument(value, site)
    return None


def site_name(spec, owner, attr):
    """The name records of ``owner.attr`` carry: the target's ``name`` (``name.attr`` per match of a
    wildcard), else ``module.qualname`` of the attribute."""
    import inspect
    if spec.name:
        return f"{spec.name}.{attr}" if _has_wildcard(spec.qualname) else spec.name
    if inspect.ismodule(owner):
        return f"{_program_name(owner.__name__)}.{attr}"
    module = _program_name(getattr(owner, '__module__', None) or owner.__name__)
    return f"{module}.{getattr(owner, '__qualname__', '')}.{attr}"


def _program_name(module_name):
    # A spawned multiprocessing worker runs the program's script as __mp_main__: its records carry the
    # names the program's own process gives them.
    return "__main__" if module_name == "__mp_main__" else module_name


def make_site(spec, owner, attr, value):
    import inspect
    site = wrappers.CallSite(site_name(spec, owner, attr), spec.kind, spec.threshold_ms, spec.sla_ms)
    if spec.retain != "default":
        site.retain = spec.retain
    raw = value.__func__ if isinstance(value, (classmethod, staticmethod)) else value
    callback = getattr(raw, "callback", None)
    if not inspect.isfunction(raw) and inspect.isfunction(callback):
        raw = callback  # a command object (discord.py): captures bind to what it calls
    site.arg_hooks, site.return_hooks = build_hooks(spec, raw, bound=isinstance(value, classmethod))
    return site


def patch_module(module, specs, module_label=None):
    """Patch every spec whose module is this one. Returns the number of objects wrapped.

    Called again after the module's code ran again (a reload), it patches the new objects and
    forgets the patches of the objects the module no longer holds."""
    _forget_replaced(module)
    count = 0
    for spec in specs:
        try:
            count += _patch_one(module, spec)
        except Exception as exc:
            diagnostics.internal_error(f"patching {spec.target}", exc)
    return count


def _patch_one(module, spec):
    import inspect
    found, missing, near = resolve(module, spec.qualname)
    if not found:
        hint = f"; nearest names: {', '.join(near)}" if near else ""
        diagnostics.warn_once("target_not_found",
                              f"target {spec.target!r}: {missing!r} not found in module {module.__name__}{hint}",
                              key=spec.target, target=spec.target, nearest=near)
        return 0
    count = 0
    for owner, attr in found:
        key = (id(owner), attr)
        with _lock:
            value = vars(owner)[attr]
            known = _patches.get(key)
            if known is not None and known.owner is owner and known.replacement is value:
                continue   # patched already (a module's code that ran again re-binds its names: patched anew)
            if wrappers.is_instrumented(getattr(value, "__func__", value)):
                continue
            site = make_site(spec, owner, attr, value)
            replacement = _instrument_value(value, site)
            if replacement is None:
                diagnostics.warn_once("target_not_callable",
                                      f"target {spec.target!r}: {attr} is {type(value).__name__}, not callable",
                                      key=(spec.target, attr), target=spec.target)
                continue
            if (inspect.isclass(owner) and inspect.isfunction(replacement)
                    and not hasattr(type(value), "__get__")):
                # The original does not bind to instances (a builtin, a partial, a callable
                # object, a bound method): the function wrapper must not bind either.
                replacement = staticmethod(replacement)
            if replacement is not value:
                wrapt.apply_patch(owner, attr, replacement)
            _patches[key] = Patch(owner, attr, value, replacement, spec.target)
            count += 1
    return count


def _forget_replaced(module):
    """Patches of objects this module's code made before it ran again: the old module object
    (``reload_extension`` imports a new one) and the classes it defined that it no longer holds."""
    import inspect
    name = module.__name__
    with _lock:
        for key, p in list(_patches.items()):
            owner = p.owner
            if owner is module:
                continue
            if inspect.ismodule(owner):
                stale = owner.__name__ == name
            else:
                stale = getattr(owner, "__module__", None) == name and not _held_by(module, owner)
            if stale:
                del _patches[key]


def _held_by(module, cls):
    """Whether ``module`` still holds ``cls`` at its qualified name (``vars`` only: nothing runs)."""
    owner = module
    for part in getattr(cls, "__qualname__", "").split("."):
        try:
            owner = vars(owner)[part]
        except (KeyError, TypeError):
            return False
    return owner is cls


def patched():
    with _lock:
        return list(_patches.values())


def forget(patch):
    """Undo one patch and forget it (an adapter that arrived later instruments it better)."""
    patch.undo()
    with _lock:
        _patches.pop((id(patch.owner), patch.attr), None)


def repatch_imported():
    """Patch the configured targets of every imported module again (an adapter registered late)."""
    import sys
    for module_name, specs in list(configured.items()):
        module = sys.modules.get(module_name)
        if module is not None and module_name not in ("__main__", "__mp_main__"):
            patch_module(module, specs)


def unpatch_all():
    """Restore every original object patched by targets."""
    with _lock:
        items = list(_patches.values())
        _patches.clear()
    for patch in reversed(items):
        try:
            patch.undo()
        except Exception as exc:
            diagnostics.internal_error(f"unpatching {patch.target}", exc)
