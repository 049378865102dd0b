"""The process's pipeline and its stop paths: the writer started once with its file and console
sinks; everything flushed at exit, ``os._exit`` and SIGTERM.

``ensure_pipeline`` is where the sinks a record is written to are set up (the manual API, workers
and ``install`` call it); ``stop`` runs what others registered with ``at_stop`` and flushes.
Below bootstrap (which assembles config, integrations, targets and features): integrations use this.
"""
from __future__ import annotations

import os
import signal
import sys
import threading

from autoperf import current, diagnostics, pipeline, posthooks, records, sigwake, sinks, threads
from autoperf._wrapt import wrapt

ENV_LOG_DIR = "AUTOPERF_LOG_DIR"
ENV_RETAIN_ALL = "AUTOPERF_RETAIN_ALL"
ENV_CONSOLE = "AUTOPERF_CONSOLE"

_lock = threading.RLock()
_generation = 0          # bumped by bootstrap's uninstall(): hooks of an older install do nothing
_file_sink = None
_console_sink = None
_previous_sigterm = None
_pipeline_ready = False
_before_flush: list = []   # at_stop: reports made before the last flush (bootstrap's exit report)
_after_flush: list = []    # at_stop(after_flush=True): deliver what the flush produced (alerts)


def log_path():
    """The file records go to today (None before anything was set up)."""
    return _file_sink.current_path() if _file_sink is not None else None


def log_dir():
    return _file_sink.directory if _file_sink is not None else None


# -- the pipeline and its sinks (also the manual API's, without ``autoperf run``) ---------------------------------
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
            hook("asyncio", _on_asyncio)
            hook("multiprocessing.util", pipeline.register_mp_finalizer)
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
    retain = RetainSettings.from_config(data)
    if os.environ.get(ENV_RETAIN_ALL, "").strip().lower() in ("1", "true", "yes"):
        retain.all = True           # every span written, whatever retain.all says (debugging a run)
    pipeline.configure_metrics(retain)
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
            pipeline.final_flush()
            # A sink sending from a thread of its own (OTLP) sends what it holds, as closing it would.
            for sink in pipeline.sinks():
                if hasattr(sink, "at_exit"):
                    try:
                        sink.at_exit()
                    except Exception as exc:
                        diagnostics.internal_error(f"{type(sink).__name__}.at_exit", exc)
        except BaseException:
            pass
        original(status)

    _exit.__autoperf__ = True
    _exit.__wrapped__ = original
    _exit.__doc__ = original.__doc__
    wrapt.apply_patch(os, "_exit", _exit)


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
def hook(module_name, fn, every_import=False):
    """A post-import hook that can never fail the program's import and dies with ``new_generation()``
    (bootstrap's uninstall)."""
    generation = _generation

    def hook(module):
        if generation != _generation:
            return
        token = current.mute()      # patching is autoperf's work: what it calls is no span
        try:
            fn(module)
        except Exception as exc:
            diagnostics.internal_error(f"import hook for {module_name}", exc)
        finally:
            current.unmute(token)

    posthooks.register(module_name, hook, every_import)


def new_generation():
    """Hooks registered before now do nothing from now on."""
    global _generation
    _generation += 1


# -- stop ----------------------------------------------------------------------------------
def at_stop(fn, after_flush=False):
    """Run ``fn()`` at every stop (exit, SIGTERM, ``stop()``): before the final flush, or after it."""
    steps = _after_flush if after_flush else _before_flush
    if fn not in steps:
        steps.append(fn)


def stop():
    """The process is stopping (exit, signals): write everything recorded up to now; spans that finish
    afterwards are not recorded (pipeline.final_flush). Muted: autoperf's own work. Idempotent."""
    token = current.mute()
    try:
        _stop()
    finally:
        current.unmute(token)


def _stop():
    for fn in list(_before_flush):
        try:
            fn()
        except Exception as exc:
            diagnostics.internal_error("exit report", exc)
    pipeline.final_flush()  # the alert rules see every record up to the stop ...
    for fn in list(_after_flush):
        try:               # ... what is still grouped is delivered (and its baselines saved) ...
            fn()
        except Exception:
            pass
    pipeline.shutdown()     # ... and its `alert` records are written


def restore_default_sigterm():
    """Uninstall: SIGTERM's default action again (main thread only)."""
    if threading.current_thread() is threading.main_thread():
        _restore_default_sigterm()
        sigwake.uninstall()


# -- signals -------------------------------------------------------------------------------
def install_sigterm():
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
    signal.signal(signal.SIGTERM, on_sigterm)
    sigwake.install(signal.SIGTERM, on_sigterm)   # handled now even while the main thread waits
    threads.guard_forks()   # a SIGTERM reaching a child just after its fork must not be forgotten
    hook("multiprocessing.util", _default_sigterm_in_mp_children)


class _SigtermMarker:
    """register_after_fork needs a live, weak-referenceable object."""


_SIGTERM_MARKER = _SigtermMarker()


def _default_sigterm_in_mp_children(mp_util):
    """multiprocessing stops its children with SIGTERM (``Process.terminate()``, ``Pool.terminate()``)
    and counts on the default action. A Python handler only runs when the main thread next runs
    bytecode: one that arrives just before a worker blocks in ``sem_wait`` for its next task is never
    handled, and ``Pool.terminate()`` waits for that worker forever. So a forked multiprocessing child
    (fork, forkserver: the callback runs in ``Process._bootstrap``) gets the default back, and a spawned
    one never gets the handler (``install_sigterm``); their records were flushed after each job
    (process_pool) and at their exit (the finalizer)."""
    mp_util.register_after_fork(_SIGTERM_MARKER, _restore_default_sigterm)


def _restore_default_sigterm(_marker=None):
    try:
        if signal.getsignal(signal.SIGTERM) is on_sigterm:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
    except (ValueError, OSError):   # not the main thread: nothing to undo here
        pass


def on_sigterm(signum, frame):
    sigwake.handled()
    if pipeline.draining_in_this_thread():
        # The signal interrupted a flush on this thread: finishing that batch comes first.
        pipeline.after_drain(lambda: on_sigterm(signum, frame))
        return
    try:
        stop()
    finally:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
