"""Install autoperf into this process: the pipeline (``lifecycle``), integrations, targets, features.

``install()`` is what ``autoperf run`` (and the child-process sitecustomize) calls; it never
raises into the program except for a bad config, which ``autoperf run`` reports before start.
It hands each integration its options and each feature (``FEATURES``) the config; nothing below
imports this module.
"""
from __future__ import annotations

import atexit
import os
import sys
import threading

from autoperf import current, diagnostics, lifecycle, pipeline, posthooks, targets
from autoperf.lifecycle import ENV_CONSOLE, ENV_LOG_DIR, ensure_pipeline, log_path, stop  # noqa: F401  (the public names)

ENV_CONFIG = "AUTOPERF_CONFIG"
ENV_DISABLE = "AUTOPERF_DISABLE"
ENV_CHILD = "AUTOPERF_CHILD"      # set for child processes: instrument them on start
BOOTSTRAP_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_bootstrap")

_lock = threading.RLock()
_installed = False
_config = None
_specs_by_module = targets.configured     # module name -> its target specs (targets.py owns them)
_imported: set = set()       # target modules whose import hook fired (a later unload is no "never imported")
_main_names = targets.main_names          # module names whose targets were applied to the program's __main__
_child = False  # installed by the sitecustomize of a child process
#: The parent samples its workers (psutil children); workers need no sampler of their own.
_PARENT_ONLY = frozenset({"resources"})


def installed() -> bool:
    return _installed


def config():
    return _config


_hook = lifecycle.hook


def _patch_targets(module):
    specs = _specs_by_module.get(module.__name__, ())
    if specs:
        _imported.add(module.__name__)
        targets.patch_module(module, specs)


def main_specs(*module_names):
    """Target specs that apply to the program's ``__main__``: ``__main__:f``, and those written with the
    name the script or module would have when imported (``app:f`` for ``app.py``, ``pkg.cli:f`` for
    ``-m pkg.cli``)."""
    out = list(_specs_by_module.get("__main__", ()))
    for name in module_names:
        if name and name != "__main__":
            _main_names.add(name)
            out.extend(_specs_by_module.get(name, ()))
    return out


# -- install / uninstall -------------------------------------------------------------------
def install(cfg=None, *, log_dir=None, console=None, disable=(), child=False):
    """Instrument this process according to ``cfg`` (a loaded Config, a path, or None)."""
    token = current.mute()          # what installing calls (targets are patched meanwhile) is no span
    try:
        return _install(cfg, log_dir, console, disable, child)
    finally:
        current.unmute(token)


def _install(cfg, log_dir, console, disable, child):
    global _installed, _config, _child
    with _lock:
        if _installed:
            return False
        _child = child
        if cfg is None or isinstance(cfg, (str, os.PathLike)):
            from autoperf.config import load_config
            cfg = load_config(cfg)
        _config = cfg
        data = cfg.data
        disabled = set(disable) | {d for d in os.environ.get(ENV_DISABLE, "").split(",") if d}
        ensure_pipeline(log_dir=log_dir, console=console, data=data)
        from autoperf import redact
        redact.configure(data.get("redact"))

        from autoperf import integrations
        for name, entry in integrations.BY_NAME.items():
            # its options, and the config sections its row names (loop:, sampler:)
            options = {**cfg.integration(name), **{s: data.get(s) or {} for s in entry.sections}}
            if name in disabled or not options.get("enabled", True):
                continue
            if child and name in _PARENT_ONLY:
                continue
            try:
                module_name = integrations.target_module(name)
            except Exception as exc:
                diagnostics.internal_error(f"integration {name}", exc)
                continue
            _hook(module_name, lambda module, name=name, options=options:
                  integrations.patch(name, module, options))
        # Targets after integrations: an integration may register adapters (discord commands,
        # task loops) that targets in already-imported modules need.
        _specs_by_module.clear()
        _imported.clear()
        _main_names.clear()
        for spec in cfg.targets:
            if not spec.enabled or spec.name in disabled or spec.target in disabled:
                continue
            _specs_by_module.setdefault(spec.module, []).append(spec)
        for module_name in _specs_by_module:
            if module_name not in ("__main__", "__mp_main__"):
                _hook(module_name, _patch_targets, every_import=True)   # again after a reload
        # A spawned multiprocessing child re-runs the main script as __mp_main__ (its targets may be
        # written `__main__:f` or with the script's module name: known once the child has its path).
        _hook("multiprocessing.spawn", _patch_spawn_main)

        _start_features(data, disabled)
        lifecycle.at_stop(_exit_report)
        lifecycle.install_sigterm()
        atexit.register(lifecycle.stop)
        _installed = True
        return True


# -- features: each started from the config, in this order; `--disable <name>` skips one ----------
def _start_stats(data, log_dir):
    from autoperf.analysis import live
    live.install(specs=_config.targets)


def _start_alerts(data, log_dir):
    from autoperf import alerts
    # the program's process keeps its baselines (and sends daily outputs) in log_dir
    alerts.install(data, log_dir=None if _child else log_dir, config_path=getattr(_config, "path", None))
    lifecycle.at_stop(alerts.uninstall, after_flush=True)   # deliver what is still grouped


def _start_store(data, log_dir):
    from autoperf import store
    store.start_from_config(data, log_dir)


def _start_export(data, log_dir):
    from autoperf import export
    # child: a worker (it serves no /metrics: the program's process reads its records)
    export.start_from_config(data, log_dir, child=_child)


FEATURES = (("stats", _start_stats), ("alerts", _start_alerts), ("store", _start_store),
            ("export", _start_export))


def _start_features(data, disabled):
    log_dir = lifecycle.log_dir() or "logs"
    for name, start in FEATURES:
        if name in disabled:
            continue
        try:
            start(data, log_dir)
        except ImportError:
            continue        # a feature whose package is not installed
        except Exception as exc:
            diagnostics.internal_error(f"starting {name}", exc)


def _patch_spawn_main(spawn_module):
    from autoperf.integrations import base

    def factory(original):
        def _fixup_main_from_path(main_path):
            original(main_path)
            module = sys.modules.get("__mp_main__")
            from autoperf.runner import script_module_name
            specs = main_specs(script_module_name(main_path))
            if module is not None and specs:
                targets.patch_module(module, specs)
        return _fixup_main_from_path

    if hasattr(spawn_module, "_fixup_main_from_path"):
        base.wrap(spawn_module, "_fixup_main_from_path", factory)


def _exit_report():
    """Name targets whose module was never imported (run by ``lifecycle.stop`` before its flush)."""
    # Only the program itself says which targets never loaded: its workers import less.
    for module_name, specs in ({} if _child else _specs_by_module).items():
        if (module_name in ("__main__", "__mp_main__") or module_name in sys.modules
                or module_name in _imported or module_name in _main_names):
            continue
        raised = posthooks.failed.get(module_name)
        for spec in specs:
            if raised:
                diagnostics.warn_once("target_module_import_failed",
                                      f"target {spec.target!r}: importing module {module_name} raised {raised}",
                                      key=spec.target, target=spec.target, exception=raised)
                continue
            diagnostics.warn_once("target_module_not_imported",
                                  f"target {spec.target!r}: module {module_name} was never imported",
                                  key=spec.target, target=spec.target)


def uninstall():
    """Restore every patched object and stop instrumenting new imports."""
    global _installed
    with _lock:
        lifecycle.new_generation()
        targets.unpatch_all()
        from autoperf import integrations
        integrations.unpatch_all()
        from autoperf.integrations import base
        try:
            base.unwrap(sys.modules["multiprocessing.spawn"], "_fixup_main_from_path")
        except KeyError:
            pass
        for module_name in _specs_by_module:
            posthooks.forget(module_name)
        _specs_by_module.clear()
        lifecycle.restore_default_sigterm()
        try:
            atexit.unregister(lifecycle.stop)
        except Exception:
            pass
        _installed = False
    pipeline.flush()
