"""autoperf — a zero-code performance monitor for asyncio Python services.

Run a program under it (``python -m autoperf run bot.py``) and the targets in ``autoperf.yaml``
become flows and spans written as JSON lines; or use the manual API below.
"""
from autoperf.manual import FlowTracker, checkpoint, cycle, emit, flow, measure_time, span

__version__ = "0.1.0"
__all__ = ["measure_time", "FlowTracker", "checkpoint", "flow", "span", "cycle", "emit",
           "install", "uninstall", "flush", "current_span", "stats"]


def install(config=None, **options):
    """Instrument this process from ``config`` (path, Config or None for autoperf.yaml lookup)."""
    from autoperf import bootstrap
    if config is None:
        from autoperf.config import find_config
        config = find_config(None, None)
    return bootstrap.install(config, **options)


def uninstall():
    """Restore every object autoperf patched."""
    from autoperf import bootstrap
    bootstrap.uninstall()


def flush():
    """Write everything recorded so far (normally the writer does this every 250 ms)."""
    from autoperf import pipeline
    pipeline.flush()


def current_span():
    from autoperf import spans
    return spans.current()


def __getattr__(name):
    if name == "stats":  # run-time numbers for the program itself (seed 14)
        from autoperf.analysis import live
        return live
    raise AttributeError(name)
