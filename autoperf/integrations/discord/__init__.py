"""discord.py 2.0–2.7: a flow per interaction, prefix command, event and task-loop iteration.

What is wrapped is its row of the integration table (``autoperf/integrations/__init__.py``;
``discord.ext`` rows when those modules are imported); docs/discord.md says what each covers.
Modules: ``state`` (options, per-interaction state, a flow's start / end and response times),
``handlers`` (the flow wrappers), ``rest`` (REST spans, interaction responses, heartbeat, shard
ids), ``yaml_targets`` (YAML targets on commands, task loops and View buttons). This module holds
the options and ``setup`` / ``started`` / ``teardown``.
"""
from __future__ import annotations

# DEV: every wrapper on the gateway parser path (``Interaction.__init__``) guards its own work: an
# exception escaping a parser ends ``bot.run()``. ``Interaction``, ``Ratelimit`` and
# ``InteractionResponse`` use ``__slots__``, so per-interaction state lives in a bounded dict.

import threading

from autoperf import pipeline, targets
from autoperf.config.schema import Bool, Field, Float, Int, List, Obj, Str

from . import handlers, rest, state, yaml_targets  # noqa: F401  (rest: factories named in the table)
from .state import FlowState, _IState  # noqa: F401  (re-exported for tests and tools)

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

_lock = threading.Lock()


def counters() -> dict:
    """Totals since patch(): interactions, deadline misses, unknown interactions, 429s, rate-limit waits."""
    return dict(state.counters_)


def gateway_latency_ms():
    """The last measured heartbeat send → ACK, in ms (None before the first ACK). For the sampler."""
    return state.latency["last_ms"]


def clients() -> list:
    """discord.Client instances that ran an event or command since patch() (weakly held)."""
    return list(state.clients)


def setup(module, options: dict) -> None:
    """Before the wraps (``integrations.patch``): options, the target adapter, the level processor."""
    with _lock:
        opts = state.opts
        opts.clear()
        opts.update({k: f.default_value() for k, f in OPTIONS.fields.items()})
        opts.update({k: v for k, v in (options or {}).items() if v is not None})
        options.update(opts)   # the table's `when:` rows read them (gateway_latency)
        handlers.event_cache.clear()
        state.max_tracked = int(opts.get("max_tracked_interactions", 1024))
        import discord.app_commands  # noqa: F401  (imported by `import discord`; make sure)
        import discord.ui  # noqa: F401
        import discord.webhook.async_  # noqa: F401
        targets.register_adapter(yaml_targets.target_adapter)
        pipeline.add_processor(state.level_processor)


def started(module) -> None:
    yaml_targets.retry_targets()


def teardown(module) -> None:
    """Before ``base.restore`` undoes every wrap and in-place change (``by="discord"``)."""
    with _lock:
        handlers.hooked_classes.clear()
        yaml_targets.fixed_views.clear()
        try:
            pipeline.remove_processor(state.level_processor)
        except Exception:
            pass
        state.by_id.clear()
        state.by_token.clear()
        state._last_client[0] = None
