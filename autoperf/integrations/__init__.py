"""Built-in integrations, declared once in ``TABLE``; patched when (and only when) their library is imported.

A row names the integration, the module of its patch code, the library import that triggers it and
its version range, whether it is on by default, what it wraps (``Wrap`` rows: module, qualname,
factory name in the patch module) and the resource-sampler sources it adds. ``patch``/``unpatch``
do the shared work from the row: refuse twice, check the version, wrap every row, guard errors, and
undo everything the integration changed in one loop (``base.restore``). To add one: docs/CONTRACT.md.
"""
from __future__ import annotations

import importlib
import sys
import threading
from collections import namedtuple

from autoperf import diagnostics, sampler
from autoperf._wrapt import wrapt
from autoperf.integrations import base


# A row of what an integration wraps: ``module`` (where the owner lives), ``qualname`` ("Class.attr";
# "A|B.attr": the first of A, B the module has), ``factory`` (a name in the patch module,
# "rest.wrap_ack" through a submodule), ``when`` (an option that must be true; empty: always).
Wrap = namedtuple("Wrap", "module qualname factory when", defaults=("",))
# An integration: ``name``; ``code``, the patch module, imported only when ``library`` (the import
# that triggers patching) is; ``dist`` and ``versions``, the distribution and a packaging specifier
# (">=0.27"; empty: any); ``default``, on unless the config says otherwise; ``wraps``, Wrap rows
# (rows absent from a library version are skipped); ``sources``, (resource-record field, function in
# the patch module) pairs the sampler reads; ``sections``, config sections handed to it with its
# options (``options["loop"]``).
Integration = namedtuple("Integration", "name code library dist versions default wraps sources sections",
                         defaults=((), ()))


_I = "autoperf.integrations."
_ASYNCPG = tuple(Wrap(m, q, f) for m, q, f in (
    ("asyncpg.connection", "Connection.execute", "wrap_execute"),
    ("asyncpg.connection", "Connection._execute", "_execute_factory"),
    ("asyncpg.connection", "Connection._executemany", "wrap_executemany"),
    ("asyncpg.connection", "Connection._copy_out", "wrap_copy_stmt"),
    ("asyncpg.connection", "Connection._copy_in", "wrap_copy_stmt"),
    ("asyncpg.connection", "Connection.copy_records_to_table", "wrap_copy_records"),
    ("asyncpg.connection", "Connection.copy_from_query", "wrap_copy_query"),
    ("asyncpg.prepared_stmt", "PreparedStatement._PreparedStatement__bind_execute", "wrap_prepared"),
    ("asyncpg.prepared_stmt", "PreparedStatement.fetchmany", "wrap_prepared_batch"),
    ("asyncpg.prepared_stmt", "PreparedStatement.executemany", "wrap_prepared_batch"),
    ("asyncpg.cursor", "BaseCursor._bind_exec", "wrap_cursor"),
    ("asyncpg.cursor", "BaseCursor._bind", "wrap_cursor"),
    ("asyncpg.cursor", "BaseCursor._exec", "wrap_cursor"),
    ("asyncpg.cursor", "Cursor.forward", "wrap_cursor"),
    ("asyncpg.connection", "Connection.reset", "_reset_factory"),
    ("asyncpg.pool", "Pool._acquire", "_acquire_factory"),
    ("asyncpg.pool", "Pool._async__init__", "_async_init_factory"),
    ("asyncpg.connection", "_StatementCache._set_entry_timeout", "in_empty_context"),
    ("asyncpg.pool", "PoolConnectionHolder._setup_inactive_callback", "in_empty_context"),
))
_DISCORD = tuple(Wrap(*row) for row in (
    ("discord.interactions", "Interaction.__init__", "rest.wrap_interaction_init"),
    ("discord.app_commands.tree", "CommandTree._call", "handlers.wrap_tree_call"),
    ("discord.app_commands.commands", "Command._invoke_error_handlers", "handlers.wrap_record_error"),
    ("discord.app_commands.commands", "ContextMenu._invoke", "handlers.wrap_invoke_recording"),
    ("discord.ui.view", "BaseView|View._scheduled_task", "handlers.wrap_view_task"),   # View before 2.6
    ("discord.ui.view", "BaseView|View.__init__", "yaml_targets.wrap_view_init"),
    ("discord.ui.view", "BaseView|View._start_listening_from_store", "handlers.wrap_view_listen"),
    ("discord.ui.modal", "Modal._scheduled_task", "handlers.wrap_modal_task"),
    ("discord.client", "Client._run_event", "handlers.wrap_run_event"),
    ("discord.http", "HTTPClient.request", "rest.wrap_http_request"),
    ("discord.http", "json_or_text", "rest.wrap_json_or_text"),
    ("discord.http", "Ratelimit.acquire", "rest.wrap_ratelimit"),
    ("discord.http", "Ratelimit.__aexit__", "rest.wrap_ratelimit"),
    ("discord.webhook.async_", "AsyncWebhookAdapter.request", "rest.wrap_webhook_request"),
    ("discord.webhook.async_", "json_or_text", "rest.wrap_json_or_text"),
    ("discord.gateway", "KeepAliveHandler.get_payload", "rest.wrap_get_payload", "gateway_latency"),
    ("discord.gateway", "KeepAliveHandler.ack", "rest.wrap_ack", "gateway_latency"),
    ("discord.gateway", "DiscordWebSocket.identify", "rest.wrap_identify"),    # the shard ids (identity.py)
    # discord.ext: wrapped when (if ever) the program imports it
    ("discord.ext.commands.bot", "BotBase.invoke", "handlers.wrap_bot_invoke"),
    ("discord.ext.commands.core", "Command.dispatch_error", "handlers.wrap_dispatch_error"),
    ("discord.ext.commands.hybrid", "HybridAppCommand._invoke_with_namespace", "handlers.wrap_hybrid_invoke"),
    ("discord.ext.tasks", "Loop.__init__", "handlers.wrap_loop_init"),
))
_PP, _MP = "concurrent.futures.process", "multiprocessing.pool"

#: The one declaration of every integration (read by install, config, the CLI and the tests).
TABLE = (
    Integration("asyncio", _I + "event_loop", "asyncio", None, "", True, (
        Wrap("asyncio.events", "_set_running_loop", "_set_running_loop_factory"),
        Wrap("asyncio", "_set_running_loop", "_set_running_loop_factory"),
        Wrap("asyncio.events", "Handle._run", "_handle_run_factory"),
    ), (("loop_lag_ms", "lag_stats"),), ("loop",)),
    Integration("asyncpg", _I + "asyncpg", "asyncpg", "asyncpg", ">=0.27", True, _ASYNCPG,
                (("db_pool", "pool_stats"), ("db_pool_waits", "wait_stats"))),
    Integration("process_pool", _I + "process_pool", _PP, None, "", True, (
        Wrap(_PP, "ProcessPoolExecutor.submit", "_submit_factory"),
        Wrap(_PP, "_WorkItem", "_work_item_factory"),
    ), (("process_pool", "pool_stats"),)),
    Integration("multiprocessing_pool", _I + "process_pool", _MP, None, "", True, (
        Wrap(_MP, "Pool.apply_async", "_apply_async_factory"),
        Wrap(_MP, "Pool._guarded_task_generation", "_task_generation_factory"),
        Wrap(_MP, "ApplyResult._set", "_set_factory"),
        Wrap(_MP, "MapResult._set", "_set_factory"),
        Wrap(_MP, "IMapIterator._set", "_set_factory"),
        Wrap(_MP, "IMapUnorderedIterator._set", "_set_factory"),
    ), (("process_pool", "pool_stats"),)),
    Integration("thread_pool", _I + "thread_pool", "concurrent.futures.thread", None, "", True, (
        Wrap("concurrent.futures.thread", "ThreadPoolExecutor.submit", "_submit_factory"),
    )),
    # "autoperf" is always imported: the sampler thread starts at install.
    Integration("resources", "autoperf.sampler", "autoperf", None, "", True, (), (), ("sampler",)),
    Integration("aiohttp", _I + "aiohttp", "aiohttp", "aiohttp", ">=3.8", True, (
        Wrap("aiohttp.client", "ClientSession._request", "_request_factory"),
    )),
    Integration("httpx", _I + "httpx", "httpx", "httpx", ">=0.23", True, (
        Wrap("httpx", "Client.send", "_sync_factory"),
        Wrap("httpx", "AsyncClient.send", "_async_factory"),
    )),
    Integration("aiohttp_web", _I + "aiohttp_web", "aiohttp.web", "aiohttp", ">=3.8", True, (
        Wrap("aiohttp.web_app", "Application._handle", "_handle_factory"),
    )),
    Integration("starlette", _I + "asgi", "starlette.applications", "starlette", ">=0.20", True, (
        Wrap("starlette.applications", "Starlette.__call__", "_call_factory"),
    )),
    # "logging" is imported by autoperf itself: the log-record factory is set at install (setup)
    Integration("logging", _I + "log_context", "logging", None, "", True, ()),
    Integration("discord", _I + "discord", "discord", "discord.py", ">=2.0", True, _DISCORD,
                (("gateway_latency_ms", "gateway_latency_ms"),)),
)
BY_NAME = {i.name: i for i in TABLE}

_lock = threading.RLock()
_patched: dict = {}   # name -> (integration row, patch module, options, target module)


def names():
    return list(BY_NAME)


def load(name):
    return importlib.import_module(BY_NAME[name].code)


def _version_ok(entry, module):
    """The imported library's version against the row's specifier (None: cannot tell, try)."""
    if not entry.versions:
        return True
    version = getattr(module, "__version__", None)
    try:
        if version is None:
            from importlib.metadata import version as dist_version
            version = dist_version(entry.dist)
        from packaging.specifiers import SpecifierSet
        ok = SpecifierSet(entry.versions).contains(str(version), prereleases=True)
    except Exception:
        return True  # cannot tell: try, patching is guarded anyway
    if not ok:
        diagnostics.warn_once("integration_version",
                              f"integration {entry.name}: {entry.dist} {version} is not {entry.versions}; not patched",
                              key=entry.name, integration=entry.name)
    return ok


def _owner(module_name, qualname):
    """``(owner, attr)`` found through ``wrapt.resolve_path`` (classes walked through ``vars()``:
    nothing bound by accident), or None when this version of the library lacks it: the attribute
    must be the owner's own (an inherited one is wrapped where it is defined, by its own row)."""
    module = sys.modules.get(module_name)
    if module is None:
        return None
    *path, attr = qualname.split(".")
    for owner_path in _alternatives(path):
        try:
            owner, attr, _ = wrapt.resolve_path(module, ".".join(owner_path + [attr]))
        except (wrapt.PathResolutionError, AttributeError):
            continue
        if attr in getattr(owner, "__dict__", ()):
            return owner, attr
    return None


def _alternatives(path):
    """``["BaseView|View"]`` -> ``[["BaseView"], ["View"]]``: each owner a row may name, in order."""
    out = [[]]
    for part in path:
        out = [prefix + [choice] for prefix in out for choice in part.split("|")]
    return out


def _factory(code, dotted):
    obj = code
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def _apply(name, modules=None):
    """Wrap the rows of ``name`` whose module is imported (only ``modules`` when given)."""
    entry, code, options, _ = _patched[name]
    waiting = set()
    for row in entry.wraps:
        if modules is not None and row.module not in modules:
            continue
        if row.when and not options.get(row.when, True):
            continue
        if row.module not in sys.modules:
            waiting.add(row.module)
            continue
        found = _owner(row.module, row.qualname)
        if found is None:
            continue  # not in this version of the library
        try:
            base.wrap(*found, _factory(code, row.factory), by=name)
        except Exception as exc:
            diagnostics.internal_error(f"integration {name}: wrapping {row.qualname}", exc)
    return waiting


def _on_import(name):
    def hook(module):
        with _lock:
            if name in _patched:
                _apply(name, {module.__name__})
    return hook


def patch(name, module, options=None):
    """Patch integration ``name`` into the imported ``module``. Never raises."""
    with _lock:
        if name in _patched:
            return False
        entry = BY_NAME[name]
        try:
            code = load(name)
            if not _version_ok(entry, module):
                return False
            options = dict(options or {})
            setup = getattr(code, "setup", None)
            if setup is not None:
                setup(module, options)
            _patched[name] = (entry, code, options, module)
            waiting = _apply(name)
            for field, fn in entry.sources:     # what the resource sampler reads from it
                sampler.add_source(field, getattr(code, fn))
        except Exception as exc:
            _patched.pop(name, None)
            base.restore(name)
            diagnostics.internal_error(f"integration {name}.patch", exc)
            return False
    if waiting:
        from autoperf import lifecycle
        for module_name in sorted(waiting):   # outside the lock: a hook may fire at once
            lifecycle.hook(module_name, _on_import(name))
    started = getattr(code, "started", None)
    if started is not None:
        try:
            started(module)
        except Exception as exc:
            diagnostics.internal_error(f"integration {name}.started", exc)
    return True


def unpatch(name):
    """Undo everything integration ``name`` changed, newest first (``base.restore``)."""
    with _lock:
        entry = _patched.pop(name, None)
        if entry is None:
            return False
        _, code, _, module = entry
        keep = ()
        try:
            teardown = getattr(code, "teardown", None)
            if teardown is not None:
                keep = teardown(module) or ()
        except Exception as exc:
            diagnostics.internal_error(f"integration {name}.unpatch", exc)
        base.restore(name, keep=keep)
        still = {field for other, *_ in _patched.values() for field, _ in other.sources}
        for field, _ in entry[0].sources:
            if field not in still:
                sampler.remove_source(field)
    return True


def unpatch_all():
    for name in list(_patched)[::-1]:
        unpatch(name)


def patched_names():
    return list(_patched)


def target_module(name):
    return BY_NAME[name].library


def imported(name):
    return target_module(name) in sys.modules
