"""Built-in integrations: one module each, patched when (and only when) its library is imported.

Each module declares ``NAME``, ``MODULE`` (the import that triggers it), ``REQUIRES``
(``"asyncpg >= 0.27"``), ``DEFAULT_ENABLED``, ``OPTIONS`` (config schema), ``WRAPS`` (the one list
of what it wraps) and ``patch(module, options)`` / ``unpatch(module)``. This package does the shared
work: refuse twice, check the version, guard errors, remember what is patched.
"""
from __future__ import annotations

import importlib
import sys
import threading

from autoperf import diagnostics

#: name -> module path. Patch code is imported only when its target library is.
REGISTRY = {
    "asyncio": "autoperf.integrations.event_loop",
    "asyncpg": "autoperf.integrations.asyncpg",
    "process_pool": "autoperf.integrations.process_pool",
    "multiprocessing_pool": "autoperf.integrations.multiprocessing_pool",
    "thread_pool": "autoperf.integrations.thread_pool",
    "resources": "autoperf.integrations.resources",
    "aiohttp": "autoperf.integrations.aiohttp",
    "httpx": "autoperf.integrations.httpx",
    "discord": "autoperf.integrations.discord",
}

#: name -> the library import that triggers it (kept here so start-up imports no patch code).
LIBRARIES = {
    "asyncio": "asyncio",
    "asyncpg": "asyncpg",
    "process_pool": "concurrent.futures.process",
    "multiprocessing_pool": "multiprocessing.pool",
    "thread_pool": "concurrent.futures.thread",
    "resources": "autoperf",
    "aiohttp": "aiohttp",
    "httpx": "httpx",
    "discord": "discord",
}

_lock = threading.Lock()
_patched: dict = {}   # name -> (integration module, target module)


def load(name):
    return importlib.import_module(REGISTRY[name])


def _version_ok(integration, module):
    """Check ``REQUIRES`` (``"dist >= X.Y"``) against the imported library's version."""
    requires = getattr(integration, "REQUIRES", None)
    if not requires:
        return True
    dist, _, minimum = (part.strip() for part in requires.partition(">="))
    version = getattr(module, "__version__", None)
    if version is None:
        try:
            from importlib.metadata import version as dist_version
            version = dist_version(dist)
        except Exception:
            return True  # cannot tell: try, patch() is guarded anyway
    try:
        have = tuple(int(x) for x in str(version).split("+")[0].split(".")[:3] if x.isdigit())
        need = tuple(int(x) for x in minimum.split("."))
    except ValueError:
        return True
    if have < need:
        diagnostics.warn_once("integration_version",
                              f"integration {integration.NAME}: {dist} {version} is older than {minimum}; not patched",
                              key=integration.NAME, integration=integration.NAME)
        return False
    return True


def patch(name, module, options=None):
    """Patch integration ``name`` into the imported ``module``. Never raises."""
    with _lock:
        if name in _patched:
            return False
        try:
            integration = load(name)
            if not _version_ok(integration, module):
                return False
            integration.patch(module, dict(options or {}))
        except Exception as exc:
            diagnostics.internal_error(f"integration {name}.patch", exc)
            return False
        _patched[name] = (integration, module)
        return True


def unpatch(name):
    with _lock:
        entry = _patched.pop(name, None)
    if entry is None:
        return False
    integration, module = entry
    try:
        integration.unpatch(module)
    except Exception as exc:
        diagnostics.internal_error(f"integration {name}.unpatch", exc)
    return True


def unpatch_all():
    for name in list(_patched)[::-1]:
        unpatch(name)


def patched_names():
    return list(_patched)


def target_module(name):
    return LIBRARIES.get(name) or load(name).MODULE


def imported(name):
    return target_module(name) in sys.modules
