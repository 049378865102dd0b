"""Install autoperf into this process: pipeline, sinks, import hooks, integrations, signals.

``install()`` is what ``autoperf run`` (and the child-process sitecustomize) calls; it never
raises into the program except for a bad config, which ``autoperf run`` reports before start.
"""
from __future__ import annotations

import atexit
import os
import signal
import sys
import threading

from autoperf import diagnostics, importhooks, pipeline, records, sinks, targets, threads

ENV_CONFIG = "AUTOPERF_CONFIG"
ENV_LOG_DIR = "AUTOPERF_LOG_DIR"
ENV_CONSOLE = "AUTOPERF_CONSOLE"
ENV_DISABLE = "AUTOPERF_DISABLE"
ENV_CHILD = "AUTOPERF_CHILD"      # set for child processes: instrument them on start
BOOTSTRAP_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_bootstrap")

_lock = threading.RLock()
_generation = 0          # bumped by uninstall(): hooks of an older install do nothing
_installed = False
_config = None
_specs_by_module: dict = {}
_imported: set = set()       # target modules whose import hook fired (a later unload is no "never imported")
_main_names: set = set()     # module names whose targets were applied to the program's __main__
_file_sink = None
_console_sink = None
_previous_sigterm = None
_pipeline_ready = False
_child = False  # installed by the sitecustomize of a child process
#: The parent samples its workers (psutil children); workers need no sampler of their own.
_PARENT_ONLY = frozenset({"resources"})


def installed() -> bool:
    return _installed


def config():
    return _config


def log_path():
    """The file records go to today (None before anything was set up)."""
    return _file_sink.current_path() if _file_sink is not None else None


# -- the pipeline alone (manual API without ``autoperf run``) ---------------------------------
def ensure_pipeline(log_dir=None, console=None, data=None):
    """Start the writer with a file sink, once. Used by the manual API and by install().

    Called again with a config (``install`` after the manual API already started it), the
    config's log settings replace the defaults.
    """
    global _pipeline_ready
    with _lock:
        if _pipeline_ready and data is None:
            return
        _apply_log_settings(data or {}, log_dir, console)
        if not _pipeline_ready:
            _hook("asyncio", _on_asyncio)
            _hook("multiprocessing.util", pipeline.register_mp_finalizer)
            _flush_before_os_exit()
            pipeline.ensure_started()
            _pipeline_ready = True


def _apply_log_settings(data, log_dir, console):
    global _file_sink, _console_sink
    log = data.get("log") or {}
    max_delay = log.get("max_delay_ms") or 1000.0
    flush_interval = log.get("flush_interval_ms")
    pipeline.configure(records.Settings.from_config(data), log.get("buffer_records"),
                       min(flush_interval, max_delay) if flush_interval else None)
    pipeline.IDLE_WAIT_S = max_delay / 1000.0   # the writer's longest back-off
    from autoperf.metrics.retention import RetainSettings
    pipeline.configure_metrics(RetainSettings.from_config(data))
    directory = os.path.abspath(log_dir or os.environ.get(ENV_LOG_DIR) or log.get("dir") or "logs")
    file_level = log.get("file_level", "TRACE")
    if _file_sink is None or _file_sink.directory != directory or _file_sink.level_name != file_level:
        if _file_sink is not None:
            pipeline.remove_sink(_file_sink)
            _file_sink.close()
        _file_sink = sinks.JsonLinesFile(directory, min_level=file_level)
        pipeline.add_sink(_file_sink)
    if console is None:
        console = _console_wanted(os.environ.get(ENV_CONSOLE, log.get("console", "auto")))
    if _console_sink is not None:
        pipeline.remove_sink(_console_sink)
        _console_sink = None
    if console:
        _console_sink = sinks.Console(log.get("console_level", "INFO"))
        pipeline.add_sink(_console_sink)


def _flush_before_os_exit():
    """Forked children often leave through os._exit(), which skips atexit: flush first."""
    original = os._exit
    if getattr(original, "__autoperf__", False):
        return

    def _exit(status):
        try:
            pipeline.flush()
        except BaseException:
            pass
        original(status)

    _exit.__autoperf__ = True
    _exit.__wrapped__ = original
    _exit.__doc__ = original.__doc__
    os._exit = _exit


def _console_wanted(setting):
    if setting in (True, "1", "true", "yes", "on"):
        return True
    if setting in (False, "0", "false", "no", "off"):
        return False
    try:
        return os.isatty(2)   # auto: the console writes to stderr, so it follows stderr
    except Exception:
        return False


def _on_asyncio(module):
    from autoperf import spans  # spans learn their asyncio task from now on
    spans.use_asyncio()


# -- import hooks --------------------------------------------------------------------------
def _hook(module_name, fn, every_import=False):
    """A post-import hook that can never fail the program's import and dies with uninstall()."""
    generation = _generation

    def hook(module):
        if generation != _generation:
            return
        try:
            fn(module)
        except Exception as exc:
            diagnostics.internal_error(f"import hook for {module_name}", exc)

    importhooks.register(module_name, hook, every_import)


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
    global _installed, _config, _specs_by_module, _child
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
        for name in integrations.BY_NAME:
            options = cfg.integration(name)
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
        _specs_by_module = {}
        _imported.clear()
        _main_names.clear()
        for spec in cfg.targets:
            if not spec.enabled or spec.name in disabled or spec.target in disabled:
                continue
            _specs_by_module.setdefault(spec.module, []).append(spec)
        for module_name in _specs_by_module:
            if module_name not in ("__main__", "__mp_main__"):
                _hook(module_name, _patch_targets, every_import=True)   # again after a reload
        # A spawned multiprocessing child re-runs the main script as __mp_main__.
        if not child or _specs_by_module.get("__main__"):
            _hook("multiprocessing.spawn", _patch_spawn_main)

        _start_extras(data, disabled)
        _install_sigterm()
        atexit.register(_before_exit)
        _installed = True
        return True


def _start_extras(data, disabled):
    """Live stats, alerts, the PostgreSQL store and exports, when those packages are present."""
    for name, path, fn in (("stats", "autoperf.analysis.live", "install"),
                           ("alerts", "autoperf.alerts", "install"),
                           ("store", "autoperf.store", "start_from_config"),
                           ("export", "autoperf.export", "start_from_config")):
        if name in disabled:
            continue
        try:
            module = __import__(path, fromlist=[fn])
        except ImportError:
            continue
        try:
            log_dir = _file_sink.directory if _file_sink else "logs"
            if name == "stats":
                getattr(module, fn)()
            elif name == "store":
                getattr(module, fn)(data, log_dir)
            elif name == "export":    # child: a worker (it serves no /metrics: the program's process reads its records)
                getattr(module, fn)(data, log_dir, child=_child)
            else:       # alerts: the program's process keeps its baselines (and sends daily outputs) in log_dir
                getattr(module, fn)(data, log_dir=None if _child else log_dir,
                                    config_path=getattr(_config, "path", None))
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


def _before_exit():
    """Name targets whose module was never imported, then flush everything."""
    try:
        # Only the program itself says which targets never loaded: its workers import less.
        for module_name, specs in ({} if _child else _specs_by_module).items():
            if (module_name in ("__main__", "__mp_main__") or module_name in sys.modules
                    or module_name in _imported or module_name in _main_names):
                continue
            raised = importhooks.failed.get(module_name)
            for spec in specs:
                if raised:
                    diagnostics.warn_once("target_module_import_failed",
                                          f"target {spec.target!r}: importing module {module_name} raised {raised}",
                                          key=spec.target, target=spec.target, exception=raised)
                    continue
                diagnostics.warn_once("target_module_not_imported",
                                      f"target {spec.target!r}: module {module_name} was never imported",
                                      key=spec.target, target=spec.target)
    except Exception as exc:
        diagnostics.internal_error("exit report", exc)
    pipeline.flush()        # the alert rules see every record ...
    alerts = sys.modules.get("autoperf.alerts")
    if alerts is not None:  # ... what is still grouped is delivered (and its baselines saved) ...
        try:
            alerts.uninstall()
        except Exception:
            pass
    pipeline.shutdown()     # ... and its `alert` records are written


def stop():
    """Flush everything now (signals, the runner). Idempotent."""
    _before_exit()


# -- signals -------------------------------------------------------------------------------
def _install_sigterm():
    """Python's default SIGTERM skips atexit: flush first, then do what the default would."""
    global _previous_sigterm
    if threading.current_thread() is not threading.main_thread():
        return
    try:
        current = signal.getsignal(signal.SIGTERM)
    except (ValueError, OSError):
        return
    if current not in (signal.SIG_DFL, None):
        return  # the program (or a parent) handles SIGTERM itself; atexit will flush
    if sys.argv[1:2] == ["--multiprocessing-fork"]:
        return  # a spawned multiprocessing child keeps the default: see _default_sigterm_in_mp_children
    _previous_sigterm = current
    signal.signal(signal.SIGTERM, _on_sigterm)
    threads.guard_forks()   # a SIGTERM reaching a child just after its fork must not be forgotten
    _hook("multiprocessing.util", _default_sigterm_in_mp_children)


class _SigtermMarker:
    """register_after_fork needs a live, weak-referenceable object."""


_SIGTERM_MARKER = _SigtermMarker()


def _default_sigterm_in_mp_children(mp_util):
    """multiprocessing stops its children with SIGTERM (``Process.terminate()``, ``Pool.terminate()``)
    and counts on the default action. A Python handler only runs when the main thread next runs
    bytecode: one that arrives just before a worker blocks in ``sem_wait`` for its next task is never
    handled, and ``Pool.terminate()`` waits for that worker forever. So a forked multiprocessing child
    (fork, forkserver: the callback runs in ``Process._bootstrap``) gets the default back, and a spawned
    one never gets the handler (``_install_sigterm``); their records were flushed after each job
    (process_pool) and at their exit (the finalizer)."""
    mp_util.register_after_fork(_SIGTERM_MARKER, _restore_default_sigterm)


def _restore_default_sigterm(_marker=None):
    try:
        if signal.getsignal(signal.SIGTERM) is _on_sigterm:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
    except (ValueError, OSError):   # not the main thread: nothing to undo here
        pass


def _on_sigterm(signum, frame):
    if pipeline.draining_in_this_thread():
        # The signal interrupted a flush on this thread: finishing that batch comes first.
        pipeline.after_drain(lambda: _on_sigterm(signum, frame))
        return
    try:
        stop()
    finally:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


def uninstall():
    """Restore every patched object and stop instrumenting new imports."""
    global _installed, _generation, _specs_by_module
    with _lock:
        _generation += 1
        targets.unpatch_all()
        from autoperf import integrations
        integrations.unpatch_all()
        from autoperf.integrations import base
        try:
            base.unwrap(sys.modules["multiprocessing.spawn"], "_fixup_main_from_path")
        except KeyError:
            pass
        for module_name in _specs_by_module:
            importhooks.forget(module_name)
        _specs_by_module = {}
        if threading.current_thread() is threading.main_thread():
            try:
                if signal.getsignal(signal.SIGTERM) is _on_sigterm:
                    signal.signal(signal.SIGTERM, signal.SIG_DFL)
            except (ValueError, OSError):
                pass
        try:
            atexit.unregister(_before_exit)
        except Exception:
            pass
        _installed = False
    pipeline.flush()
