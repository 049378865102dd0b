"""discord.py 2.0–2.7: a flow per interaction, prefix command, event and task-loop iteration.

What is wrapped (the one list is ``WRAPS``; the ``discord.ext`` parts are patched when those
modules are imported):

- ``Interaction.__init__`` — stamps the local receive time (keyed by interaction id, bounded);
- ``CommandTree._call`` — one flow per slash command / context menu / autocomplete (the tree
  swallows command errors: status comes from ``interaction.command_failed`` and the exception given
  to ``Command._invoke_error_handlers`` / raised by ``ContextMenu._invoke`` / passed to
  ``commands.Command.dispatch_error``);
- ``BaseView._scheduled_task`` (``View`` before 2.6) and ``Modal._scheduled_task`` — components and
  modal submits (errors reach the view's own ``on_error``, which is wrapped on first use per class);
  ``BaseView._start_listening_from_store`` — a view's timeout task does not inherit the flow (it
  would keep the finished flow's span alive for the view's whole timeout);
- ``Client._run_event`` — event handlers (``events`` / ``exclude_events`` options);
- ``BotBase.invoke`` — prefix commands; ``tasks.Loop.__init__`` — one ``cycle`` per iteration;
- ``HTTPClient.request`` and ``AsyncWebhookAdapter.request`` — one ``http`` span per REST call with
  the route template; ``json_or_text`` (bound in ``discord.http`` and ``discord.webhook.async_``)
  gives each attempt's status; ``Ratelimit.acquire`` / ``Ratelimit.__aexit__`` the bucket sleeps;
- ``KeepAliveHandler.get_payload`` / ``ack`` — heartbeat send → ACK (``gateway_latency_ms``);
  ``DiscordWebSocket.identify`` — the shard ids this process runs (``shard_ids`` on every record).

Modules: ``state`` (options, per-interaction state, a flow's start / end and response times),
``handlers`` (the flow wrappers), ``rest`` (REST spans, interaction responses, heartbeat),
``yaml_targets`` (YAML targets on commands, task loops and View buttons).

DEV: every wrapper on the gateway parser path (``Interaction.__init__``) guards its own work: an
exception escaping a parser ends ``bot.run()``. ``Interaction``, ``Ratelimit`` and
``InteractionResponse`` use ``__slots__``, so per-interaction state lives in a bounded dict.
"""
from __future__ import annotations

import sys
import threading

from autoperf import diagnostics, pipeline, targets
from autoperf.config.schema import Bool, Field, Float, Int, List, Obj, Str
from autoperf.integrations import base

from . import handlers, rest, state, yaml_targets
from .state import FlowState, _IState  # noqa: F401  (re-exported for tests and tools)

NAME = "discord"
MODULE = "discord"
REQUIRES = "discord.py >= 2.0"
DEFAULT_ENABLED = True

DEFAULT_EXCLUDED_EVENTS = [
    "on_typing", "on_presence_update", "on_raw_*", "on_socket_*", "on_interaction",
    "on_voice_state_update", "on_member_update", "on_user_update", "on_audit_log_entry_create",
]

OPTIONS = Obj({
    "commands": Field(Bool(), default=True, doc="A flow per slash command, context menu and prefix command."),
    "autocomplete": Field(Bool(), default=True, doc="A flow per autocomplete request (`<command> [autocomplete]`)."),
    "components": Field(Bool(), default=True, doc="A flow per button / select callback."),
    "modals": Field(Bool(), default=True, doc="A flow per modal submit."),
    "events": Field(List(Str()), default=["*"], doc="Event handlers that get a flow (fnmatch patterns, e.g. on_message)."),
    "exclude_events": Field(List(Str()), default=list(DEFAULT_EXCLUDED_EVENTS),
                            doc="Event handlers never traced (very high-rate gateway events by default)."),
    "tasks": Field(Bool(), default=True, doc="A `cycle` per `discord.ext.tasks.loop` iteration."),
    "http": Field(Bool(), default=True, doc="An `http` span per Discord REST call (route template, attempts, rate-limit waits)."),
    "gateway_latency": Field(Bool(), default=True, doc="Measure heartbeat send → ACK; written as `gateway_latency_ms` resource records."),
    "capture_option_values": Field(Bool(), default=False,
                                   doc="Record slash-command option values (user text!) as `option_values`; names are always recorded."),
    "deadline_ms": Field(Float(min=0, min_exclusive=True), default=3000,
                         doc="Discord's interaction deadline: a later first response is status `timeout`, level ERROR."),
    "warning_ms": Field(Float(min=0, min_exclusive=True), default=2000,
                        doc="First response later than this is logged at WARNING."),
    "max_tracked_interactions": Field(Int(min=16), default=1024,
                                      doc="In-flight interactions remembered (received, flow not finished; oldest forgotten first)."),
}, doc="discord.py: flows per interaction / command / event / task loop, REST spans, response times.")

WRAPS = [
    ("discord.interactions", "Interaction.__init__"),
    ("discord.app_commands.tree", "CommandTree._call"),
    ("discord.app_commands.commands", "Command._invoke_error_handlers"),
    ("discord.app_commands.commands", "ContextMenu._invoke"),
    ("discord.ui.view", "BaseView._scheduled_task"),      # View._scheduled_task before 2.6
    ("discord.ui.view", "BaseView.__init__"),             # View.__init__ before 2.6
    ("discord.ui.view", "BaseView._start_listening_from_store"),
    ("discord.ui.modal", "Modal._scheduled_task"),
    ("discord.client", "Client._run_event"),
    ("discord.http", "HTTPClient.request"),
    ("discord.http", "json_or_text"),
    ("discord.http", "Ratelimit.acquire"),
    ("discord.http", "Ratelimit.__aexit__"),
    ("discord.webhook.async_", "AsyncWebhookAdapter.request"),
    ("discord.webhook.async_", "json_or_text"),
    ("discord.gateway", "KeepAliveHandler.get_payload"),
    ("discord.gateway", "KeepAliveHandler.ack"),
    ("discord.gateway", "DiscordWebSocket.identify"),
    ("discord.ext.commands.bot", "BotBase.invoke"),
    ("discord.ext.commands.core", "Command.dispatch_error"),
    ("discord.ext.commands.hybrid", "HybridAppCommand._invoke_with_namespace"),
    ("discord.ext.tasks", "Loop.__init__"),
]
_EXT_MODULES = ("discord.ext.commands.bot", "discord.ext.commands.core", "discord.ext.commands.hybrid",
                "discord.ext.tasks")

_FACTORIES = {
    "Interaction.__init__": rest.wrap_interaction_init,
    "CommandTree._call": handlers.wrap_tree_call,
    "Command._invoke_error_handlers": handlers.wrap_record_error,
    "ContextMenu._invoke": handlers.wrap_invoke_recording,
    "BaseView._scheduled_task": handlers.wrap_view_task,
    "BaseView.__init__": yaml_targets.wrap_view_init,
    "BaseView._start_listening_from_store": handlers.wrap_view_listen,
    "Modal._scheduled_task": handlers.wrap_modal_task,
    "Client._run_event": handlers.wrap_run_event,
    "HTTPClient.request": rest.wrap_http_request,
    "json_or_text": rest.wrap_json_or_text,
    "Ratelimit.acquire": rest.wrap_ratelimit,
    "Ratelimit.__aexit__": rest.wrap_ratelimit,
    "AsyncWebhookAdapter.request": rest.wrap_webhook_request,
    "KeepAliveHandler.get_payload": rest.wrap_get_payload,
    "KeepAliveHandler.ack": rest.wrap_ack,
    "DiscordWebSocket.identify": rest.wrap_identify,
    "BotBase.invoke": handlers.wrap_bot_invoke,
    "Command.dispatch_error": handlers.wrap_dispatch_error,
    "HybridAppCommand._invoke_with_namespace": handlers.wrap_hybrid_invoke,
    "Loop.__init__": handlers.wrap_loop_init,
}

_lock = threading.Lock()
_patched = [False]
_hooks_registered: set = set()


def counters() -> dict:
    """Totals since patch(): interactions, deadline misses, unknown interactions, 429s, rate-limit waits."""
    return dict(state.counters_)


def gateway_latency_ms():
    """The last measured heartbeat send → ACK, in ms (None before the first ACK). For the sampler."""
    return state.latency["last_ms"]


def clients() -> list:
    """discord.Client instances that ran an event or command since patch() (weakly held)."""
    return list(state.clients)


def _owner(module_name, qualname):
    """(owner, attr) in an imported module; ``BaseView`` falls back to ``View`` (discord.py < 2.6)."""
    module = sys.modules.get(module_name)
    if module is None:
        return None, None
    *path, attr = qualname.split(".")
    owner = module
    for part in path:
        nxt = vars(owner).get(part) if hasattr(owner, "__dict__") else None
        if nxt is None and part == "BaseView":
            nxt = vars(owner).get("View")
        if nxt is None:
            return None, None
        owner = nxt
    if attr not in vars(owner):
        return None, None
    return owner, attr


def _apply(module_names):
    for module_name, qualname in WRAPS:
        if module_name not in module_names:
            continue
        if qualname.startswith("KeepAliveHandler.") and not state.opts.get("gateway_latency", True):
            continue
        owner, attr = _owner(module_name, qualname)
        if owner is None:
            continue  # not in this discord.py version
        try:
            base.wrap(owner, attr, _FACTORIES[qualname])
        except Exception as exc:
            diagnostics.internal_error(f"discord: wrapping {qualname}", exc)


def _guarded_ext_hook(module):
    """Post-import hook for the ``discord.ext`` modules (an import hook must never fail the import)."""
    try:
        if _patched[0]:
            _apply({module.__name__})
    except Exception as exc:
        diagnostics.internal_error(f"discord: patching {getattr(module, '__name__', module)}", exc)


def _register_hook(name):
    if name in _hooks_registered:
        return
    _hooks_registered.add(name)
    try:
        from autoperf import importhooks
        importhooks.register(name, _guarded_ext_hook)
    except Exception as exc:
        diagnostics.internal_error(f"discord: import hook for {name}", exc)


def patch(module, options: dict) -> None:
    with _lock:
        opts = state.opts
        opts.clear()
        opts.update({k: f.default_value() for k, f in OPTIONS.fields.items()})
        opts.update({k: v for k, v in (options or {}).items() if v is not None})
        handlers.event_cache.clear()
        state.max_tracked = int(opts.get("max_tracked_interactions", 1024))
        _patched[0] = True
        import discord.app_commands  # noqa: F401  (imported by `import discord`; make sure)
        import discord.ui  # noqa: F401
        import discord.webhook.async_  # noqa: F401
        _apply({m for m, _ in WRAPS if m not in _EXT_MODULES})
        loaded = {m for m in _EXT_MODULES if m in sys.modules}
        if loaded:
            _apply(loaded)
        for name in _EXT_MODULES:
            if name not in sys.modules:
                _register_hook(name)
        targets.register_adapter(yaml_targets.target_adapter)
        pipeline.add_processor(state.level_processor)
    yaml_targets.retry_targets()


def unpatch(module) -> None:
    with _lock:
        _patched[0] = False
        for module_name, qualname in WRAPS:
            owner, attr = _owner(module_name, qualname)
            if owner is not None:
                base.unwrap(owner, attr)
        class_hooks = handlers.class_hooks
        while class_hooks:
            entry = class_hooks.pop()
            if len(entry) == 2:
                base.unwrap(*entry)
            else:
                cls, attr, old = entry
                setattr(cls, attr, old)
        changes = yaml_targets.adapter_changes
        while changes:
            obj, attr, old = changes.pop()
            try:
                setattr(obj, attr, old)
            except Exception:
                pass
        handlers.hooked_classes.clear()
        yaml_targets.fixed_views.clear()
        try:
            pipeline.remove_processor(state.level_processor)
        except Exception:
            pass
        state.by_id.clear()
        state.by_token.clear()
        state._last_client[0] = None
