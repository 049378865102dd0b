"""discord.py 2.0–2.7: a flow per interaction, prefix command, event and task-loop iteration.

What is wrapped (the one list is ``WRAPS``; the ``discord.ext`` parts are patched when those
modules are imported):

- ``Interaction.__init__`` — stamps the local receive time (keyed by interaction id, bounded);
- ``CommandTree._call`` — one flow per slash command / context menu / autocomplete (the tree
  swallows command errors: status comes from ``interaction.command_failed`` and the exception seen by
  ``Command._invoke_with_namespace`` / ``ContextMenu._invoke`` / ``commands.Command.dispatch_error``);
- ``BaseView._scheduled_task`` (``View`` before 2.6) and ``Modal._scheduled_task`` — components and
  modal submits (errors reach the view's own ``on_error``, which is wrapped on first use per class);
- ``Client._run_event`` — event handlers (``events`` / ``exclude_events`` options);
- ``BotBase.invoke`` — prefix commands; ``tasks.Loop.__init__`` — one ``cycle`` per iteration;
- ``HTTPClient.request`` and ``AsyncWebhookAdapter.request`` — one ``http`` span per REST call with
  the route template; ``json_or_text`` (bound in ``discord.http`` and ``discord.webhook.async_``)
  gives each attempt's status; ``Ratelimit.acquire`` / ``Ratelimit.__aexit__`` the bucket sleeps;
- ``KeepAliveHandler.get_payload`` / ``ack`` — heartbeat send → ACK (``gateway_latency_ms``).

Interaction responses (``/interactions/{id}/{token}/callback``) and followups / edits
(``/webhooks/{app}/{token}...``) are recognised in the webhook adapter, so every way of answering
counts, whichever helper the bot uses.

DEV: every wrapper on the gateway parser path (``Interaction.__init__``) guards its own work: an
exception escaping a parser ends ``bot.run()``. ``Interaction``, ``Ratelimit`` and
``InteractionResponse`` use ``__slots__``, so per-interaction state lives in a bounded dict here.
"""
from __future__ import annotations

import contextvars
import fnmatch
import sys
import threading
import weakref
from time import perf_counter_ns, time_ns

from autoperf import diagnostics, pipeline, spans, targets, wrappers
from autoperf.config.schema import Bool, Field, Float, Int, List, Obj, Str
from autoperf.integrations import base

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
    ("discord.app_commands.commands", "Command._invoke_with_namespace"),
    ("discord.app_commands.commands", "ContextMenu._invoke"),
    ("discord.ui.view", "BaseView._scheduled_task"),      # View._scheduled_task before 2.6
    ("discord.ui.view", "BaseView.__init__"),             # View.__init__ before 2.6
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
    ("discord.ext.commands.bot", "BotBase.invoke"),
    ("discord.ext.commands.core", "Command.dispatch_error"),
    ("discord.ext.commands.hybrid", "HybridAppCommand._invoke_with_namespace"),
    ("discord.ext.tasks", "Loop.__init__"),
]
_EXT_MODULES = ("discord.ext.commands.bot", "discord.ext.commands.core", "discord.ext.commands.hybrid",
                "discord.ext.tasks")

_opts: dict = {}
_generation = 0
_lock = threading.Lock()

# -- per-flow and per-interaction state --------------------------------------------------------
_FLOW: contextvars.ContextVar = contextvars.ContextVar("autoperf_discord_flow", default=None)
_REST: contextvars.ContextVar = contextvars.ContextVar("autoperf_discord_rest", default=None)
_DISCORD_EPOCH_MS = 1420070400000


class _IState:
    """What we know about one interaction (ints and floats only: nothing for the GC to chase)."""

    __slots__ = ("id", "token", "recv_ns", "recv_wall_ms", "first_ns", "final_ns", "first_type",
                 "responses", "unknown", "refused_ns")

    def __init__(self, iid, token):
        self.id = iid
        self.token = token
        self.recv_ns = perf_counter_ns()
        self.recv_wall_ms = time_ns() // 1_000_000
        self.first_ns = None
        self.final_ns = None
        self.first_type = None
        self.responses = 0
        self.unknown = 0
        self.refused_ns = None   # when Discord refused our first response (10062: too late)


class _FlowState:
    __slots__ = ("span", "ist", "error", "status", "adopted")

    def __init__(self, span, ist):
        self.span = span
        self.ist = ist
        self.error = None
        self.status = None
        self.adopted = False


_by_id: dict = {}
_by_token: dict = {}
_max_tracked = 1024
_counters = {"interactions": 0, "answered": 0, "unanswered": 0, "deadline_missed": 0, "slow_first_response": 0,
             "unknown_interaction": 0, "already_acknowledged": 0, "rest_calls": 0, "rest_429": 0,
             "ratelimit_wait_ms": 0.0}
_latency = {"last_ms": None}
_clients: "weakref.WeakSet" = weakref.WeakSet()
_hb_sent: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def counters() -> dict:
    """Totals since patch(): interactions, deadline misses, unknown interactions, 429s, rate-limit waits."""
    return dict(_counters)


def gateway_latency_ms():
    """The last measured heartbeat send → ACK, in ms (None before the first ACK). For the sampler."""
    return _latency["last_ms"]


def clients() -> list:
    """discord.Client instances that ran an event or command since patch() (weakly held)."""
    return list(_clients)


def _track(interaction):
    try:
        iid = interaction.id
        token = interaction.token
        st = _IState(iid, token)
        _by_id[iid] = st
        if token:
            _by_token[token] = st
        while len(_by_id) > _max_tracked:
            old = _by_id.pop(next(iter(_by_id)))
            if old.token:
                _by_token.pop(old.token, None)
        _counters["interactions"] += 1
    except Exception as exc:
        diagnostics.internal_error("discord: tracking an interaction", exc)


def _ist_of(interaction):
    try:
        st = _by_id.get(interaction.id)
        if st is None:
            _track(interaction)
            st = _by_id.get(interaction.id)
        return st
    except Exception:
        return None


# -- flows ---------------------------------------------------------------------------------------
def _begin(name, attrs, ist=None):
    s = spans.start(name, "flow", attrs, parent=None)
    fs = _FlowState(s, ist)
    return fs, _FLOW.set(fs)


def _status_of(exc):
    """(status, exception type to record) for an exception seen by a command."""
    etype = type(exc)
    names = {c.__name__ for c in etype.__mro__}
    if "CommandOnCooldown" in names:
        return "cooldown", etype
    if "CheckFailure" in names or "MissingPermissions" in names:
        return "check_failure", etype
    original = getattr(exc, "original", None)
    if isinstance(original, BaseException) and "CommandInvokeError" in names:
        return _status_of(original) if original is not exc else ("error", type(original))
    cause = exc.__cause__
    if "HybridCommandError" in names and isinstance(cause, BaseException):
        inner = getattr(cause, "original", None)
        return "error", type(inner if isinstance(inner, BaseException) else cause)
    return "error", etype


async def _in_flow(fs, token, awaitable):
    """Await a handler inside the flow ``_begin`` started; the flow ends however the handler leaves."""
    try:
        result = await awaitable
    except BaseException as exc:
        _end(fs, token, exc)
        raise
    _end(fs, token)
    return result


def _end(fs, token, exc=None):
    try:
        _FLOW.reset(token)
    except ValueError:
        pass
    s = fs.span
    try:
        if fs.status is not None and fs.error is None and exc is None:
            s.status = fs.status
        err = fs.error if fs.error is not None else exc
        if err is not None:
            if type(err).__name__ == "CancelledError":
                s.fail(err)
            else:
                status, etype = _status_of(err) if isinstance(err, BaseException) else ("error", err)
                s.status = status
                s.error = etype
        ist = fs.ist
        if ist is not None:
            _response_attrs(s, ist)
            # Done with it: only in-flight interactions stay in memory (no long-lived objects for
            # the GC to walk). A later followup is still an http span, just not attributed.
            if _by_id.get(ist.id) is ist:
                del _by_id[ist.id]
            if ist.token and _by_token.get(ist.token) is ist:
                del _by_token[ist.token]
    except Exception as e:
        diagnostics.internal_error("discord: finishing a flow", e)
    s.finish()


def _response_attrs(s, st):
    attrs = s.attrs
    answered = st.first_ns is not None
    attrs["answered"] = answered
    deadline = _opts.get("deadline_ms", 3000.0)
    if answered:
        first = (st.first_ns - st.recv_ns) / 1e6
        final = ((st.final_ns or st.first_ns) - st.recv_ns) / 1e6
        attrs["first_response_ms"] = round(first, 3)
        attrs["final_response_ms"] = round(final, 3)
        if st.first_type is not None:
            attrs["response_type"] = _RESPONSE_TYPES.get(st.first_type, st.first_type)
        # Discord's clock starts at the interaction's creation (its snowflake), before we received it.
        delay = st.recv_wall_ms - ((st.id >> 22) + _DISCORD_EPOCH_MS)
        if 0 <= delay < 60_000:
            attrs["gateway_delay_ms"] = delay
        else:
            delay = 0
        if first + delay > deadline:
            attrs["deadline_missed"] = True
            if getattr(s, "status", "success") == "success":
                s.status = "timeout"
            _counters["deadline_missed"] += 1
        elif first + delay > _opts.get("warning_ms", 2000.0):
            _counters["slow_first_response"] += 1
        _counters["answered"] += 1
    elif attrs.get("interaction_type") != "autocomplete":
        _counters["unanswered"] += 1
        if st.refused_ns is not None:
            # The bot did answer, too late: Discord refused it. That attempt is the first response.
            attrs["first_response_ms"] = round((st.refused_ns - st.recv_ns) / 1e6, 3)
        waited = (perf_counter_ns() - st.recv_ns) / 1e6
        if waited > deadline:
            attrs["deadline_missed"] = True
            if getattr(s, "status", "success") == "success":
                s.status = "timeout"
            _counters["deadline_missed"] += 1
    if st.unknown:
        attrs["unknown_interaction"] = True


_RESPONSE_TYPES = {1: "pong", 4: "message", 5: "defer_thinking", 6: "defer_update", 7: "update_message",
                   8: "autocomplete", 9: "modal", 10: "premium_required", 12: "launch_activity"}


def _interaction_attrs(interaction, itype):
    attrs = {"interaction_type": itype, "interaction_id": interaction.id}
    try:
        user = interaction.user
        if user is not None:
            attrs["user_id"] = user.id
        attrs["guild_id"] = interaction.guild_id
        attrs["channel_id"] = getattr(interaction, "channel_id", None)
    except Exception:
        pass
    return attrs


def _command_name(data):
    """``("ladder join", [leaf options])`` from an application-command payload."""
    name = data.get("name") or "unknown"
    options = data.get("options") or []
    while options and options[0].get("type") in (1, 2):
        name = f"{name} {options[0].get('name')}"
        options = options[0].get("options") or []
    return name, options


def _note_client(client):
    try:
        if client is not None and client not in _clients:
            _clients.add(client)
    except Exception:
        pass


# -- wrappers: app commands ----------------------------------------------------------------
def _wrap_tree_call(original):
    async def _call(self, interaction):
        if not _opts.get("commands", True):
            return await original(self, interaction)
        try:
            data = interaction.data or {}
            name, options = _command_name(data)
            auto = int(getattr(interaction.type, "value", interaction.type) or 0) == 4
            if auto and not _opts.get("autocomplete", True):
                return await original(self, interaction)
            ctype = data.get("type", 1)
            itype = "autocomplete" if auto else ("application_command" if ctype == 1 else
                                                 ("user_command" if ctype == 2 else "message_command"))
            attrs = _interaction_attrs(interaction, itype)
            attrs["command"] = name
            if ctype == 1:
                attrs["options"] = [o.get("name") for o in options]
                if _opts.get("capture_option_values"):
                    attrs["option_values"] = {o.get("name"): o.get("value") for o in options}
                if auto:
                    focused = next((o.get("name") for o in options if o.get("focused")), None)
                    attrs["focused_option"] = focused
            _note_client(getattr(self, "client", None))
            fs, token = _begin(f"{name} [autocomplete]" if auto else name, attrs, _ist_of(interaction))
        except Exception as exc:
            diagnostics.internal_error("discord: CommandTree._call", exc)
            return await original(self, interaction)
        try:
            result = await original(self, interaction)
        except BaseException as exc:
            _end(fs, token, exc)
            raise
        try:
            if getattr(interaction, "command_failed", False) and fs.error is None:
                fs.status = "check_failure" if fs.status is None else fs.status
        except Exception:
            pass
        _end(fs, token)
        return result
    return _call


def _wrap_invoke_recording(original):
    """Commands' own invoke: remember the exception the tree / bot will swallow."""
    async def _invoke(self, *args, **kwargs):
        try:
            return await original(self, *args, **kwargs)
        except BaseException as exc:
            fs = _FLOW.get()
            if fs is not None and fs.error is None:
                fs.error = exc
            raise
    return _invoke


def _wrap_hybrid_invoke(original):
    async def _invoke(self, interaction, namespace):
        result = await original(self, interaction, namespace)
        fs = _FLOW.get()
        if fs is not None and fs.error is None and getattr(interaction, "command_failed", False):
            fs.status = "error"
        return result
    return _invoke


def _wrap_dispatch_error(original):
    async def dispatch_error(self, ctx, error, /):
        fs = _FLOW.get()
        if fs is not None and fs.error is None:
            fs.error = error
        return await original(self, ctx, error)
    return dispatch_error


# -- wrappers: prefix commands ----------------------------------------------------------------
def _wrap_bot_invoke(original):
    async def invoke(self, ctx, /):
        command = getattr(ctx, "command", None)
        if command is None or not _opts.get("commands", True):
            return await original(self, ctx)
        try:
            attrs = {"interaction_type": "prefix_command", "command": command.qualified_name}
            author = getattr(ctx, "author", None)
            if author is not None:
                attrs["user_id"] = author.id
            guild = getattr(ctx, "guild", None)
            attrs["guild_id"] = guild.id if guild is not None else None
            channel = getattr(ctx, "channel", None)
            attrs["channel_id"] = getattr(channel, "id", None)
            interaction = getattr(ctx, "interaction", None)
            _note_client(self)
            fs, token = _begin(command.qualified_name, attrs, _ist_of(interaction) if interaction else None)
        except Exception as exc:
            diagnostics.internal_error("discord: BotBase.invoke", exc)
            return await original(self, ctx)
        return await _in_flow(fs, token, original(self, ctx))
    return invoke


# -- wrappers: components and modals ----------------------------------------------------------
_hooked_classes: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _record_error_factory(original):
    async def on_error(self, interaction, error, *rest):
        fs = _FLOW.get()
        if fs is not None and fs.error is None:
            fs.error = error
        return await original(self, interaction, error, *rest)
    return on_error


def _record_check_factory(original):
    async def interaction_check(self, interaction, *rest):
        allowed = await original(self, interaction, *rest)
        if not allowed:
            fs = _FLOW.get()
            if fs is not None and fs.status is None:
                fs.status = "check_failure"
        return allowed
    return interaction_check


def _hook_class(cls):
    """Wrap the on_error / interaction_check a view or modal class actually uses (once per class)."""
    if cls in _hooked_classes:
        return
    _hooked_classes[cls] = True
    for attr, factory in (("on_error", _record_error_factory), ("interaction_check", _record_check_factory)):
        for owner in cls.__mro__:
            if attr in vars(owner):
                if getattr(vars(owner)[attr], "_autoperf_discord", False) or base.is_wrapped(owner, attr):
                    break
                def tagged(orig, factory=factory):
                    fn = factory(orig)
                    fn._autoperf_discord = True
                    return fn
                base.wrap(owner, attr, tagged)
                _class_hooks.append((owner, attr))
                break


_class_hooks: list = []


def _item_name(view, item):
    cb = getattr(item, "callback", None)
    func = getattr(cb, "callback", None)  # _ViewCallback / _ItemCallback keep the function
    if func is not None:
        func = getattr(func, "__wrapped__", func)
        return f"{type(view).__name__}.{getattr(func, '__name__', 'callback')}"
    return f"{type(view).__name__}.{type(item).__name__}.callback"


def _wrap_view_task(original):
    async def _scheduled_task(self, item, interaction, *rest):
        if not _opts.get("components", True):
            return await original(self, item, interaction, *rest)
        try:
            _hook_class(type(self))
            attrs = _interaction_attrs(interaction, "component")
            data = interaction.data or {}
            attrs["custom_id"] = data.get("custom_id")
            attrs["component_type"] = _COMPONENT_TYPES.get(data.get("component_type"), data.get("component_type"))
            name = _item_name(self, item)
            attrs["component"] = name
            values = data.get("values")
            if values is not None:
                attrs["values_count"] = len(values)
            fs, token = _begin(name, attrs, _ist_of(interaction))
        except Exception as exc:
            diagnostics.internal_error("discord: View._scheduled_task", exc)
            return await original(self, item, interaction, *rest)
        return await _in_flow(fs, token, original(self, item, interaction, *rest))
    return _scheduled_task


_COMPONENT_TYPES = {2: "button", 3: "string_select", 5: "user_select", 6: "role_select",
                    7: "mentionable_select", 8: "channel_select"}


def _wrap_modal_task(original):
    async def _scheduled_task(self, interaction, *rest):
        if not _opts.get("modals", True):
            return await original(self, interaction, *rest)
        try:
            _hook_class(type(self))
            attrs = _interaction_attrs(interaction, "modal_submit")
            attrs["custom_id"] = (interaction.data or {}).get("custom_id")
            name = f"{type(self).__name__}.on_submit"
            attrs["modal"] = type(self).__name__
            fs, token = _begin(name, attrs, _ist_of(interaction))
        except Exception as exc:
            diagnostics.internal_error("discord: Modal._scheduled_task", exc)
            return await original(self, interaction, *rest)
        return await _in_flow(fs, token, original(self, interaction, *rest))
    return _scheduled_task


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
        setattr(cls, "__view_children_items__", new)
        _class_hooks.append((cls, "__view_children_items__", items))


def _wrap_view_init(original):
    def __init__(self, *args, **kwargs):
        cls = type(self)
        if cls not in _fixed_views:
            try:
                _fixed_views[cls] = True
                _fixup_view_class(cls)
            except Exception as exc:
                diagnostics.internal_error("discord: View target fixup", exc)
        return original(self, *args, **kwargs)
    return __init__


_fixed_views: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


# -- wrappers: events ------------------------------------------------------------------------
_event_cache: dict = {}


def _event_traced(event_name):
    hit = _event_cache.get(event_name)
    if hit is None:
        hit = (any(fnmatch.fnmatchcase(event_name, p) for p in _opts.get("events", ["*"]))
               and not any(fnmatch.fnmatchcase(event_name, p) for p in _opts.get("exclude_events", ())))
        if len(_event_cache) < 1024:
            _event_cache[event_name] = hit
    return hit


def _is_library_handler(coro):
    """discord.py's own default handlers (``Bot.on_message`` → process_commands) are not the bot's
    code: the prefix command they run is its own flow already."""
    func = getattr(coro, "__func__", coro)
    return (getattr(func, "__module__", None) or "").startswith("discord.")


def _wrap_run_event(original):
    async def _run_event(self, coro, event_name, *args, **kwargs):
        if not _event_traced(event_name) or _is_library_handler(coro):
            return await original(self, coro, event_name, *args, **kwargs)
        try:
            _note_client(self)
            attrs = {"interaction_type": "event", "event": event_name}
            if args:
                first = args[0]
                author = getattr(first, "author", None)
                if author is not None:
                    attrs["user_id"] = getattr(author, "id", None)
                    attrs["channel_id"] = getattr(getattr(first, "channel", None), "id", None)
                    attrs["guild_id"] = getattr(getattr(first, "guild", None), "id", None)
            fs, token = _begin(event_name, attrs)
        except Exception as exc:
            diagnostics.internal_error("discord: Client._run_event", exc)
            return await original(self, coro, event_name, *args, **kwargs)

        async def traced(*a, **kw):
            try:
                return await coro(*a, **kw)
            except BaseException as exc:
                if fs.error is None:
                    fs.error = exc
                raise

        return await _in_flow(fs, token, original(self, traced, event_name, *args, **kwargs))
    return _run_event


# -- wrappers: tasks.loop ---------------------------------------------------------------------
def _cycle_wrapper(coro, site):
    name = site.name

    async def cycle(*args, **kwargs):
        s = spans.start(name, "cycle", None, parent=None, site=site)
        if site.arg_hooks:
            site.on_call(s, args, kwargs)
        try:
            result = await coro(*args, **kwargs)
        except BaseException as exc:
            s.fail(exc)
            s.finish()
            raise
        if site.return_hooks:
            site.on_return(s, result)
        s.finish()
        return result
    cycle.__wrapped__ = coro
    for attr in ("__name__", "__qualname__", "__module__", "__doc__"):
        try:
            setattr(cycle, attr, getattr(coro, attr))
        except (AttributeError, TypeError):
            pass
    cycle._autoperf_cycle = site
    return cycle


def _wrap_loop_init(original):
    def __init__(self, coro, *args, **kwargs):
        original(self, coro, *args, **kwargs)
        try:
            if _opts.get("tasks", True) and not hasattr(self.coro, "_autoperf_cycle"):
                fn = self.coro
                site = wrappers.CallSite(getattr(fn, "__qualname__", getattr(fn, "__name__", "loop")), "cycle")
                self.coro = _cycle_wrapper(fn, site)
        except Exception as exc:
            diagnostics.internal_error("discord: tasks.Loop", exc)
    return __init__


# -- wrappers: REST ---------------------------------------------------------------------------
class _Rest:
    __slots__ = ("span", "attempts", "statuses", "wait_ns")

    def __init__(self, span):
        self.span = span
        self.attempts = 0
        self.statuses = None
        self.wait_ns = 0


def _start_rest(route, host):
    method = route.method
    path = route.path
    attrs = {"method": method, "route": path, "host": host, "system": "discord"}
    s = spans.start(f"{method} {path}", "http", attrs)
    rest = _Rest(s)
    return rest, _REST.set(rest)


def _finish_rest(rest, token, exc=None):
    try:
        _REST.reset(token)
    except ValueError:
        pass
    s = rest.span
    try:
        attrs = s.attrs
        attrs["attempts"] = rest.attempts
        if rest.attempts > 1:
            attrs["retries"] = rest.attempts - 1
            attrs["statuses"] = rest.statuses
        if rest.wait_ns:
            wait_ms = round(rest.wait_ns / 1e6, 3)
            attrs["ratelimit_wait_ms"] = wait_ms
            _counters["ratelimit_wait_ms"] += wait_ms
        _counters["rest_calls"] += 1
        if exc is not None:
            s.fail(exc)
            code = getattr(exc, "code", None)
            if code is not None:
                attrs["discord_code"] = code
    except Exception as e:
        diagnostics.internal_error("discord: finishing a REST span", e)
    s.finish()


def _wrap_http_request(original):
    async def request(self, route, **kwargs):
        if not _opts.get("http", True):
            return await original(self, route, **kwargs)
        try:
            rest, token = _start_rest(route, _host_of(route))
        except Exception as exc:
            diagnostics.internal_error("discord: HTTPClient.request", exc)
            return await original(self, route, **kwargs)
        try:
            result = await original(self, route, **kwargs)
        except BaseException as exc:
            _finish_rest(rest, token, exc)
            raise
        _finish_rest(rest, token)
        return result
    return request


_hosts: dict = {}


def _host_of(route):
    try:
        base = route.BASE
        host = _hosts.get(base)
        if host is None:
            host = _hosts[base] = str(base).split("://", 1)[-1].split("/", 1)[0]
        return host
    except Exception:
        return "discord.com"


def _wrap_json_or_text(original):
    async def json_or_text(response):
        data = await original(response)
        rest = _REST.get()
        if rest is not None:
            try:
                status = response.status
                rest.attempts += 1
                attrs = rest.span.attrs
                if rest.attempts > 1:
                    if rest.statuses is None:
                        rest.statuses = [attrs.get("status")]
                    rest.statuses.append(status)
                attrs["status"] = status
                if status == 429:
                    _counters["rest_429"] += 1
                    retry = data.get("retry_after") if isinstance(data, dict) else None
                    if isinstance(retry, (int, float)):
                        rest.wait_ns += int(retry * 1e9)   # discord.py sleeps exactly this before retrying
            except Exception as exc:
                diagnostics.internal_error("discord: json_or_text", exc)
        return data
    return json_or_text


def _wrap_ratelimit(original):
    async def timed(self, *args):
        rest = _REST.get()
        if rest is None:
            return await original(self, *args)
        t0 = perf_counter_ns()
        try:
            return await original(self, *args)
        finally:
            waited = perf_counter_ns() - t0
            if waited > 200_000:   # an uncontended bucket answers in microseconds
                rest.wait_ns += waited
    return timed


def _wrap_webhook_request(original):
    async def request(self, route, *args, **kwargs):
        try:
            path = route.path
            interaction_token = getattr(route, "webhook_token", None)
            st = None
            kind = None
            if path.startswith("/interactions/"):
                st = _by_id.get(_int(getattr(route, "webhook_id", None)))
                kind = "callback"
            elif interaction_token is not None:
                st = _by_token.get(interaction_token)
                kind = "followup" if st is not None else None
            rest, token = _start_rest(route, _host_of(route)) if _opts.get("http", True) else (None, None)
            if rest is not None and kind is not None:
                rest.span.attrs["interaction_response"] = kind
        except Exception as exc:
            diagnostics.internal_error("discord: AsyncWebhookAdapter.request", exc)
            return await original(self, route, *args, **kwargs)
        try:
            result = await original(self, route, *args, **kwargs)
        except BaseException as exc:
            if st is not None:
                _response_failed(st, exc)
            if rest is not None:
                _finish_rest(rest, token, exc)
            raise
        if st is not None:
            _responded(st, kind, kwargs)
        if rest is not None:
            _finish_rest(rest, token)
        return result
    return request


def _int(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _responded(st, kind, kwargs):
    try:
        now = perf_counter_ns()
        st.responses += 1
        if kind == "callback" and st.first_ns is None:
            st.first_ns = now
            payload = kwargs.get("payload")
            if isinstance(payload, dict):
                st.first_type = payload.get("type")
            else:
                for part in kwargs.get("multipart") or ():
                    if part.get("name") == "payload_json":
                        import json
                        st.first_type = json.loads(part.get("value") or "{}").get("type")
                        break
        elif st.first_ns is None:
            st.first_ns = now   # a followup cannot come first, but count it as an answer if it does
        st.final_ns = now
    except Exception as exc:
        diagnostics.internal_error("discord: response timing", exc)


def _response_failed(st, exc):
    code = getattr(exc, "code", None)
    if code == 10062:
        st.unknown += 1
        if st.refused_ns is None and st.first_ns is None:
            st.refused_ns = perf_counter_ns()
        _counters["unknown_interaction"] += 1
    elif code == 40060:
        _counters["already_acknowledged"] += 1


# -- gateway heartbeat ---------------------------------------------------------------------
def _wrap_get_payload(original):
    def get_payload(self):
        try:   # runs in discord.py's keep-alive thread: an exception here would stop the heartbeats
            _hb_sent[self] = perf_counter_ns()
        except Exception as exc:
            diagnostics.internal_error("discord: heartbeat send", exc)
        return original(self)
    return get_payload


def _sampler_running():
    sampler = getattr(sys.modules.get("autoperf.integrations.resources"), "_sampler", None)
    try:
        return sampler is not None and sampler.is_alive()
    except Exception:
        return False


def _wrap_ack(original):
    def ack(self):
        try:
            sent = _hb_sent.pop(self, None)
            if sent is not None:
                ms = round((perf_counter_ns() - sent) / 1e6, 3)
                _latency["last_ms"] = ms
                # The resource sampler reads gateway_latency_ms() every interval; without it, one
                # record per heartbeat ACK.
                if not _sampler_running():
                    pipeline.emit({"type": "resource", "level": "INFO", "gateway_latency_ms": ms,
                                   "discord": counters()})
        except Exception as exc:
            diagnostics.internal_error("discord: heartbeat ack", exc)
        return original(self)
    return ack


# -- interactions ------------------------------------------------------------------------------
def _wrap_interaction_init(original):
    def __init__(self, *args, **kwargs):
        original(self, *args, **kwargs)
        _track(self)   # guarded: this runs inside the gateway parser
    return __init__


# -- YAML targets on discord objects (app commands, prefix commands, task loops) -------------
_ADOPTABLE = frozenset(("command", "component", "modal"))


def _adopting(fn, site, rename=None):
    """A YAML ``kind: flow`` target on a command callback: when the integration already opened a flow
    for this invocation, that flow takes the target's thresholds, captures and (when the target has a
    ``name:``) its name — one flow, not two."""
    fallback = wrappers.instrument(fn, site)
    if rename is None:
        spec = _spec_for(site)
        rename = spec is None or spec.name is not None

    async def adopted(*args, **kwargs):
        fs = _FLOW.get()
        if fs is None or fs.adopted or fs.span.duration_ns is not None or not _ADOPTABLE.intersection(fs.span.attrs or ()):
            return await fallback(*args, **kwargs)
        fs.adopted = True
        s = fs.span
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

    import functools
    functools.update_wrapper(adopted, fn)
    setattr(adopted, wrappers.MARK, site)
    return adopted


def _spec_for(site):
    try:
        from autoperf import bootstrap
        for specs in bootstrap._specs_by_module.values():
            for spec in specs:
                if spec.name == site.name or f"{spec.module}.{spec.qualname}" == site.name:
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


_adapter_changes: list = []   # (object, attribute, original) changed in place by _target_adapter


def _target_adapter(obj, site):
    """targets.register_adapter hook: instrument what discord.py actually calls."""
    if "discord" not in sys.modules:
        return None
    mod = type(obj).__module__ or ""
    if not mod.startswith("discord."):
        return None
    try:
        # discord.ext.tasks.Loop: the coroutine run each iteration
        if hasattr(obj, "coro") and hasattr(obj, "_loop") and mod.startswith("discord.ext.tasks"):
            fn = getattr(obj.coro, "__wrapped__", obj.coro) if hasattr(obj.coro, "_autoperf_cycle") else obj.coro
            _rebind_site(site, fn)
            _adapter_changes.append((obj, "coro", obj.coro))
            if site.kind == "cycle":
                obj.coro = _cycle_wrapper(fn, site)
            else:
                inner = wrappers.instrument(fn, site)
                obj.coro = _cycle_wrapper(inner, wrappers.CallSite(site.name, "cycle")) if _opts.get("tasks", True) else inner
            return obj
        # app_commands.Command / ContextMenu / ext.commands.Command (+ hybrid): the callback
        if hasattr(obj, "_callback") and callable(getattr(obj, "_callback", None)):
            fn = obj._callback
            if wrappers.is_instrumented(fn):
                return obj
            _rebind_site(site, fn)
            wrapped = _adopting(fn, site) if site.kind == "flow" else wrappers.instrument(fn, site)
            _adapter_changes.append((obj, "_callback", fn))
            obj._callback = wrapped
            app = getattr(obj, "app_command", None)   # hybrid command: the slash side has its own copy
            if app is not None and getattr(app, "_callback", None) is fn:
                _adapter_changes.append((app, "_callback", fn))
                app._callback = wrapped
            return obj
    except Exception as exc:
        diagnostics.internal_error("discord: target adapter", exc)
    return None


# -- patch / unpatch ---------------------------------------------------------------------------
_FACTORIES = {
    "Interaction.__init__": _wrap_interaction_init,
    "CommandTree._call": _wrap_tree_call,
    "Command._invoke_with_namespace": _wrap_invoke_recording,
    "ContextMenu._invoke": _wrap_invoke_recording,
    "BaseView._scheduled_task": _wrap_view_task,
    "BaseView.__init__": _wrap_view_init,
    "Modal._scheduled_task": _wrap_modal_task,
    "Client._run_event": _wrap_run_event,
    "HTTPClient.request": _wrap_http_request,
    "json_or_text": _wrap_json_or_text,
    "Ratelimit.acquire": _wrap_ratelimit,
    "Ratelimit.__aexit__": _wrap_ratelimit,
    "AsyncWebhookAdapter.request": _wrap_webhook_request,
    "KeepAliveHandler.get_payload": _wrap_get_payload,
    "KeepAliveHandler.ack": _wrap_ack,
    "BotBase.invoke": _wrap_bot_invoke,
    "Command.dispatch_error": _wrap_dispatch_error,
    "HybridAppCommand._invoke_with_namespace": _wrap_hybrid_invoke,
    "Loop.__init__": _wrap_loop_init,
}


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
        if module_name == "discord.gateway" and not _opts.get("gateway_latency", True):
            continue
        owner, attr = _owner(module_name, qualname)
        if owner is None:
            continue  # not in this discord.py version
        try:
            base.wrap(owner, attr, _FACTORIES[qualname])
        except Exception as exc:
            diagnostics.internal_error(f"discord: wrapping {qualname}", exc)


def _on_ext(module):
    if _generation_at_patch[0] != _generation or not _patched[0]:
        return
    try:
        _apply({module.__name__})
    except Exception as exc:
        diagnostics.internal_error(f"discord: patching {module.__name__}", exc)


_generation_at_patch = [0]
_patched = [False]


def _level_processor(record):
    """Deadline misses are ERROR, slow first responses WARNING (spans and flow_complete)."""
    rtype = record.get("type")
    if rtype == "span":
        attrs = record.get("attrs")
    elif rtype == "flow_complete":
        attrs = record.get("metadata")
    else:
        return record
    if not attrs or "first_response_ms" not in attrs and "deadline_missed" not in attrs:
        return record
    level = record.get("level")
    if attrs.get("deadline_missed"):
        if level not in ("ERROR", "CRITICAL"):
            record["level"] = "ERROR"
    else:
        first = attrs.get("first_response_ms")
        if isinstance(first, (int, float)) and first + (attrs.get("gateway_delay_ms") or 0) > _opts.get("warning_ms", 2000.0) \
                and level in ("TRACE", "DEBUG", "INFO"):
            record["level"] = "WARNING"
    return record


def patch(module, options: dict) -> None:
    global _max_tracked, _generation
    with _lock:
        _opts.clear()
        _opts.update({k: f.default_value() for k, f in OPTIONS.fields.items()})
        _opts.update({k: v for k, v in (options or {}).items() if v is not None})
        _event_cache.clear()
        _max_tracked = int(_opts.get("max_tracked_interactions", 1024))
        _generation += 1
        _generation_at_patch[0] = _generation
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
        targets.register_adapter(_target_adapter)
        pipeline.add_processor(_level_processor)
    _retry_targets()


def _retry_targets():
    """Targets in modules imported before discord was patched found no adapter: try them again.

    A callable discord object (``tasks.Loop``) was wrapped as a plain function then — which breaks
    it (``.start()`` is gone): undo that first. (DEV: disappears once integration hooks run before
    target hooks in bootstrap.install.)"""
    try:
        from autoperf import bootstrap
        for p in targets.patched():
            original = p.original
            if (type(original).__module__ or "").startswith("discord.") and p.replacement is not original:
                p.undo()
                with targets._lock:
                    targets._patches.pop((id(p.owner), p.attr), None)
        for module_name, specs in list(bootstrap._specs_by_module.items()):
            module = sys.modules.get(module_name)
            if module is not None and module_name not in ("__main__", "__mp_main__"):
                targets.patch_module(module, specs)
    except Exception as exc:
        diagnostics.internal_error("discord: retrying targets", exc)


_hooks_registered: set = set()


def _register_hook(name):
    if name in _hooks_registered:
        return
    _hooks_registered.add(name)
    try:
        from autoperf import importhooks
        importhooks.register(name, _guarded_ext_hook)
    except Exception as exc:
        diagnostics.internal_error(f"discord: import hook for {name}", exc)


def _guarded_ext_hook(module):
    try:
        _on_ext(module)
    except Exception as exc:  # an import hook must never fail the program's import
        diagnostics.internal_error("discord: ext import hook", exc)


def unpatch(module) -> None:
    global _generation
    with _lock:
        _generation += 1
        _patched[0] = False
        for module_name, qualname in WRAPS:
            owner, attr = _owner(module_name, qualname)
            if owner is not None:
                base.unwrap(owner, attr)
        while _class_hooks:
            entry = _class_hooks.pop()
            if len(entry) == 2:
                base.unwrap(*entry)
            else:
                cls, attr, old = entry
                setattr(cls, attr, old)
        while _adapter_changes:
            obj, attr, old = _adapter_changes.pop()
            try:
                setattr(obj, attr, old)
            except Exception:
                pass
        _hooked_classes.clear()
        _fixed_views.clear()
        try:
            pipeline.remove_processor(_level_processor)
        except Exception:
            pass
        _by_id.clear()
        _by_token.clear()
