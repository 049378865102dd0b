"""YAML targets on discord objects: app commands, cog and prefix commands, task loops, View buttons.

These are not plain functions: commands hold their callback (``callback`` is read-only), cogs copy
commands per instance, Views capture button functions when the class is created — so the adapter
instruments what discord.py actually calls.
"""
from __future__ import annotations

import fnmatch
import functools
import inspect
import sys

from autoperf import diagnostics, targets, wrappers
from autoperf.integrations import base

from . import state
from .handlers import cycle_wrapper
from .state import FLOW

_ADOPTABLE = frozenset(("command", "component", "modal", "event"))
fixed_views: dict = {}       # View classes already pointed at instrumented button functions


def _adopting(fn, site, rename=None, handler_method=False):
    """A YAML ``kind: flow`` target on what discord.py runs as a flow's handler (a command's callback, a
    View button's method, a ``Button`` subclass's ``callback``, a modal's ``on_submit``): the flow the
    integration opened for this invocation takes the target's SLA, thresholds, captures and (when the
    target has a ``name:``) its name — one flow, not two. ``handler_method``: ``fn`` is a method; it
    joins only when called on the very item, view or modal the flow runs (``self`` is one of
    ``FlowState.handlers``), so a helper of the same kind called inside the flow stays a step of it."""
    fallback = wrappers.instrument(fn, site)
    if rename is None:
        spec = _spec_for(site)
        rename = spec is None or spec.name is not None

    async def adopted(*args, **kwargs):
        fs = FLOW.get()
        s = None if fs is None or fs.adopted else fs.span
        if (s is None or s.duration_ns is not None or not _ADOPTABLE.intersection(s.attrs or ())
                or handler_method and not (args and any(args[0] is h for h in fs.handlers))):
            return await fallback(*args, **kwargs)
        fs.adopted = True
        try:
            if rename:
                s.name = site.name
            s.site = site
            site.on_call(s, args, kwargs)
        except Exception as exc:
            diagnostics.internal_error("discord: adopting a flow target", exc)
        result = await fn(*args, **kwargs)
        site.on_return(s, result)
        return result

    functools.update_wrapper(adopted, fn)
    setattr(adopted, wrappers.MARK, site)
    return adopted


def _spec_for(site):
    """The target a site was made for: by its name, else by ``module.qualname`` (wildcards matched; the
    script's targets are named ``__main__.…`` also when written ``app:…``)."""
    try:
        for module_name, specs in targets.configured.items():
            modules = {module_name, "__main__"} if module_name in targets.main_names else {module_name}
            for spec in specs:
                if spec.name == site.name or any(fnmatch.fnmatchcase(site.name, f"{m}.{spec.qualname}")
                                                 for m in modules):
                    return spec
    except Exception:
        pass
    return None


def _rebind_site(site, fn):
    """make_site read the captures against the command object; read them against its callback."""
    spec = _spec_for(site)
    if spec is None:
        return site
    from autoperf.capture_binding import build_hooks
    site.arg_hooks, site.return_hooks = build_hooks(spec, fn)
    return site


def target_adapter(obj, site):
    """targets.register_adapter hook: instrument what discord.py actually calls."""
    if "discord" not in sys.modules:
        return None
    if site.kind == "flow" and inspect.iscoroutinefunction(obj):
        return _adopting(obj, site, handler_method=True)   # joins the flow when it is its handler
    mod = type(obj).__module__ or ""
    if not mod.startswith("discord."):
        return None
    try:
        # discord.ext.tasks.Loop: the coroutine run each iteration
        if hasattr(obj, "coro") and hasattr(obj, "_loop") and mod.startswith("discord.ext.tasks"):
            fn = getattr(obj.coro, "__wrapped__", obj.coro) if hasattr(obj.coro, "_autoperf_cycle") else obj.coro
            _rebind_site(site, fn)
            # changed in place (base.replace): the discord unpatch puts the original back
            if site.kind == "cycle":
                coro = cycle_wrapper(fn, site)
            else:
                inner = wrappers.instrument(fn, site)
                coro = cycle_wrapper(inner, wrappers.CallSite(site.name, "cycle")) \
                    if state.opts.get("tasks", True) else inner
            base.replace(obj, "coro", coro, by="discord")
            return obj
        # app_commands.Command / ContextMenu / ext.commands.Command (+ hybrid): the callback
        if hasattr(obj, "_callback") and callable(getattr(obj, "_callback", None)):
            fn = obj._callback
            if wrappers.is_instrumented(fn):
                return obj
            _rebind_site(site, fn)
            wrapped = _adopting(fn, site) if site.kind == "flow" else wrappers.instrument(fn, site)
            base.replace(obj, "_callback", wrapped, by="discord")
            app = getattr(obj, "app_command", None)   # hybrid command: the slash side has its own copy
            if app is not None and getattr(app, "_callback", None) is fn:
                base.replace(app, "_callback", wrapped, by="discord")
            return obj
    except Exception as exc:
        diagnostics.internal_error("discord: target adapter", exc)
    return None


def _fixup_view_class(cls):
    """YAML targets on ``View`` button methods: the class captured the original functions when it was
    created; point its children at the instrumented ones (once per class)."""
    items = vars(cls).get("__view_children_items__")
    if items is None:
        for klass in cls.__mro__:
            if "__view_children_items__" in vars(klass):
                items = vars(klass)["__view_children_items__"]
                break
    if not items:
        return
    entries = list(items.items()) if isinstance(items, dict) else list(enumerate(items))
    changed = []
    for key, func in entries:
        fname = getattr(func, "__name__", None)
        if fname is None or not callable(func):
            continue
        current = None
        for klass in cls.__mro__:
            if fname in vars(klass):
                current = vars(klass)[fname]
                break
        if current is None or current is func or not wrappers.is_instrumented(current):
            continue
        if getattr(current, "__wrapped__", None) is not func:
            continue
        site = getattr(current, wrappers.MARK)
        if getattr(site, "kind", None) == "flow":
            current = _adopting(func, site)
            for attr in ("__discord_ui_model_type__", "__discord_ui_model_kwargs__", "__discord_ui_parent__"):
                if hasattr(func, attr):
                    setattr(current, attr, getattr(func, attr))
        changed.append((key, current))
    if changed:
        new = dict(items) if isinstance(items, dict) else list(items)
        for key, value in changed:
            new[key] = value
        base.replace(cls, "__view_children_items__", new, by="discord")


def wrap_view_init(original):
    def __init__(self, *args, **kwargs):
        cls = type(self)
        if cls not in fixed_views:
            try:
                fixed_views[cls] = True
                _fixup_view_class(cls)
            except Exception as exc:
                diagnostics.internal_error("discord: View target fixup", exc)
        return original(self, *args, **kwargs)
    return __init__


def retry_targets():
    """Targets in modules imported before discord was patched found no adapter: try them again.

    A callable discord object (``tasks.Loop``) was wrapped as a plain function then — which breaks
    it (``.start()`` is gone): undo that first. (DEV: disappears once integration hooks run before
    target hooks in bootstrap.install.)"""
    try:
        for p in targets.patched():
            original = p.original
            if (type(original).__module__ or "").startswith("discord.") and p.replacement is not original:
                targets.forget(p)
        targets.repatch_imported()
    except Exception as exc:
        diagnostics.internal_error("discord: retrying targets", exc)
