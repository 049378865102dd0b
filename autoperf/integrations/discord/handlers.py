"""Flows: slash commands, context menus, autocomplete, prefix commands, components, modals, events,
and a ``cycle`` per ``tasks.loop`` iteration.

Each wrapper is one coroutine around discord.py's own: a synchronous ``_start_*`` reads what the
flow records, then the same try / end block. DEV: that block is written out in every wrapper on
purpose — a shared ``async`` helper would add a second coroutine frame that every resumption of
the handler (each query, each REST call) passes through.
"""
from __future__ import annotations

import fnmatch

from autoperf import diagnostics, spans, wrappers
from autoperf.integrations import base

from . import state
from .state import FLOW, begin, end, interaction_attrs, ist_of, note_client

opts = state.opts


# -- app commands ------------------------------------------------------------------------------
def _command_name(data):
    """``("ladder join", [leaf options])`` from an application-command payload."""
    name = data.get("name") or "unknown"
    options = data.get("options") or []
    while options and options[0].get("type") in (1, 2):
        name = f"{name} {options[0].get('name')}"
        options = options[0].get("options") or []
    return name, options


_COMMAND_TYPES = {1: "application_command", 2: "user_command", 3: "message_command"}


def _start_app_command(tree, interaction):
    """The flow for one ``CommandTree._call`` (None when not traced)."""
    data = interaction.data or {}
    name, options = _command_name(data)
    itype = interaction.type
    auto = int(getattr(itype, "value", itype) or 0) == 4
    if auto and not opts.get("autocomplete", True):
        return None
    ctype = data.get("type", 1)
    attrs = interaction_attrs(interaction, "autocomplete" if auto else _COMMAND_TYPES.get(ctype, "message_command"))
    attrs["command"] = name
    if ctype == 1:
        attrs["options"] = [o.get("name") for o in options]
        if opts.get("capture_option_values", False):
            attrs["option_values"] = {o.get("name"): o.get("value") for o in options}
        if auto:
            attrs["focused_option"] = next((o.get("name") for o in options if o.get("focused")), None)
    note_client(getattr(tree, "client", None))
    return begin(f"{name} [autocomplete]" if auto else name, attrs, ist_of(interaction))


def wrap_tree_call(original):
    async def _call(self, interaction):
        started = None
        if opts.get("commands", True):
            try:
                started = _start_app_command(self, interaction)
            except Exception as exc:
                diagnostics.internal_error("discord: CommandTree._call", exc)
        if started is None:
            return await original(self, interaction)
        fs, token = started
        try:
            result = await original(self, interaction)
        except BaseException as exc:
            end(fs, token, exc)
            raise
        try:   # the tree swallows command errors: a failed command that raised nothing was a check
            if fs.error is None and fs.status is None and getattr(interaction, "command_failed", False):
                fs.status = "check_failure"
        except Exception:
            pass
        end(fs, token)
        return result
    return _call


def wrap_record_error(original):
    """An error handler discord.py calls with the exception the tree / view will swallow: remember it.
    (``Command._invoke_error_handlers`` runs only on errors: nothing on the success path.)"""
    async def record_error(self, interaction, error, *rest):
        fs = FLOW.get()
        if fs is not None and fs.error is None:
            fs.error = error
        return await original(self, interaction, error, *rest)
    return record_error


def wrap_invoke_recording(original):
    """``ContextMenu._invoke``: remember the exception the tree will swallow."""
    async def _invoke(self, *args, **kwargs):
        try:
            return await original(self, *args, **kwargs)
        except BaseException as exc:
            fs = FLOW.get()
            if fs is not None and fs.error is None:
                fs.error = exc
            raise
    return _invoke


def wrap_hybrid_invoke(original):
    async def _invoke(self, interaction, namespace):
        result = await original(self, interaction, namespace)
        fs = FLOW.get()
        if fs is not None and fs.error is None and getattr(interaction, "command_failed", False):
            fs.status = "error"
        return result
    return _invoke


def wrap_dispatch_error(original):
    async def dispatch_error(self, ctx, error, /):
        fs = FLOW.get()
        if fs is not None and fs.error is None:
            fs.error = error
        return await original(self, ctx, error)
    return dispatch_error


# -- prefix commands ---------------------------------------------------------------------------
def _start_prefix_command(bot, ctx, command):
    attrs = {"interaction_type": "prefix_command", "command": command.qualified_name}
    author = getattr(ctx, "author", None)
    if author is not None:
        attrs["user_id"] = author.id
    guild = getattr(ctx, "guild", None)
    attrs["guild_id"] = guild.id if guild is not None else None
    attrs["channel_id"] = getattr(getattr(ctx, "channel", None), "id", None)
    interaction = getattr(ctx, "interaction", None)
    note_client(bot)
    return begin(command.qualified_name, attrs, ist_of(interaction) if interaction else None)


def _flow_handler(option, start, where):
    """Wrapper factory for a discord.py method that runs one handler as one flow.

    ``start(self, *args)`` returns ``(FlowState, token)``, or None to run the call untraced. The
    wrapper is a single coroutine: a shared helper coroutine would add a frame to every resumption.
    """
    def factory(original):
        async def handler(self, *args):
            started = None
            if opts.get(option, True):
                try:
                    started = start(self, *args)
                except Exception as exc:
                    diagnostics.internal_error(where, exc)
            if started is None:
                return await original(self, *args)
            fs, token = started
            try:
                result = await original(self, *args)
            except BaseException as exc:
                end(fs, token, exc)
                raise
            end(fs, token)
            return result
        return handler
    return factory


def _invoked_command(ctx, command):
    """The command a prefix message runs: for a group, the subcommand its next word names (``!tag create``
    runs ``tag create``). discord.py reads that word only later, in ``Group.invoke``; peek at it the same
    way and put the view back. A group with parameters of its own parses them first (unless
    ``invoke_without_command``): the word cannot be known here, and the group names the flow."""
    view = getattr(ctx, "view", None)
    if view is None:
        return command
    index, previous = view.index, view.previous
    try:
        while getattr(command, "all_commands", None):
            if not getattr(command, "invoke_without_command", False) and getattr(command, "clean_params", None):
                break
            view.skip_ws()
            sub = command.all_commands.get(view.get_word())
            if sub is None:
                break
            command = sub
    finally:
        view.index, view.previous = index, previous
    return command


def _start_bot_invoke(bot, ctx):
    command = getattr(ctx, "command", None)
    return None if command is None else _start_prefix_command(bot, ctx, _invoked_command(ctx, command))


wrap_bot_invoke = _flow_handler("commands", _start_bot_invoke, "discord: BotBase.invoke")


# -- components and modals ---------------------------------------------------------------------
# View / modal classes whose on_error / interaction_check are wrapped (classes live as long as the
# program; a plain dict is a single lookup, a WeakKeyDictionary makes a weakref per check).
hooked_classes: dict = {}


def _record_check_factory(original):
    async def interaction_check(self, interaction, *rest):
        allowed = await original(self, interaction, *rest)
        if not allowed:
            fs = FLOW.get()
            if fs is not None and fs.status is None:
                fs.status = "check_failure"
        return allowed
    return interaction_check


def _hook_class(cls):
    """Wrap the on_error / interaction_check a view or modal class actually uses (once per class)."""
    hooked_classes[cls] = True
    for attr, factory in (("on_error", wrap_record_error), ("interaction_check", _record_check_factory)):
        for owner in cls.__mro__:
            if attr in vars(owner):
                if getattr(vars(owner)[attr], "_autoperf_discord", False) or base.is_wrapped(owner, attr):
                    break

                def tagged(orig, factory=factory):
                    fn = factory(orig)
                    fn._autoperf_discord = True
                    return fn
                base.wrap(owner, attr, tagged, by="discord")   # undone by unpatch
                break


def _item_name(view, item):
    cb = getattr(item, "callback", None)
    func = getattr(cb, "callback", None)  # _ViewCallback / _ItemCallback keep the function
    if func is not None:
        func = getattr(func, "__wrapped__", func)
        return f"{type(view).__name__}.{getattr(func, '__name__', 'callback')}"
    return f"{type(view).__name__}.{type(item).__name__}.callback"


_COMPONENT_TYPES = {2: "button", 3: "string_select", 5: "user_select", 6: "role_select",
                    7: "mentionable_select", 8: "channel_select"}


def _start_component(view, item, interaction, *_rest):
    if type(view) not in hooked_classes:
        _hook_class(type(view))
    attrs = interaction_attrs(interaction, "component")
    data = interaction.data or {}
    attrs["custom_id"] = data.get("custom_id")
    ctype = data.get("component_type")
    attrs["component_type"] = _COMPONENT_TYPES.get(ctype, ctype)
    name = _item_name(view, item)
    attrs["component"] = name
    values = data.get("values")
    if values is not None:
        attrs["values_count"] = len(values)
    return begin(name, attrs, ist_of(interaction), (item, view))


wrap_view_task = _flow_handler("components", _start_component, "discord: View._scheduled_task")


_current_span = getattr(spans, "_current", None)   # spans' context variable (the current span)


def wrap_view_listen(original):
    """``BaseView._start_listening_from_store`` starts the view's timeout task (180 s by default) from
    inside the flow that sent the view: that task would copy the flow's context and keep the finished
    flow span — and the interaction task it names — alive until the view times out. Start it with
    autoperf's context variables cleared (the bot's own variables are kept)."""
    def _start_listening_from_store(self, store):
        span_token = None
        if _current_span is not None and _current_span.get() is not None:
            span_token = _current_span.set(None)
        flow_token = FLOW.set(None) if FLOW.get() is not None else None
        try:
            return original(self, store)
        finally:
            if flow_token is not None:
                FLOW.reset(flow_token)
            if span_token is not None:
                _current_span.reset(span_token)
    return _start_listening_from_store


def _start_modal(modal, interaction, *_rest):
    cls = type(modal)
    if cls not in hooked_classes:
        _hook_class(cls)
    attrs = interaction_attrs(interaction, "modal_submit")
    attrs["custom_id"] = (interaction.data or {}).get("custom_id")
    attrs["modal"] = cls.__name__
    return begin(f"{cls.__name__}.on_submit", attrs, ist_of(interaction), (modal,))


wrap_modal_task = _flow_handler("modals", _start_modal, "discord: Modal._scheduled_task")


# -- events ------------------------------------------------------------------------------------
event_cache: dict = {}


def _event_traced(event_name):
    hit = event_cache.get(event_name)
    if hit is None:
        hit = (any(fnmatch.fnmatchcase(event_name, p) for p in opts.get("events", ["*"]))
               and not any(fnmatch.fnmatchcase(event_name, p) for p in opts.get("exclude_events", ())))
        if len(event_cache) < 1024:
            event_cache[event_name] = hit
    return hit


def _is_library_handler(coro):
    """discord.py's own default handlers (``Bot.on_message`` → process_commands) are not the bot's
    code: the prefix command they run is its own flow already."""
    func = getattr(coro, "__func__", coro)
    return (getattr(func, "__module__", None) or "").startswith("discord.")


def _start_event(client, event_name, args, handler=None):
    note_client(client)
    attrs = {"interaction_type": "event", "event": event_name}
    if args:
        first = args[0]
        author = getattr(first, "author", None)
        if author is not None:
            attrs["user_id"] = getattr(author, "id", None)
            attrs["channel_id"] = getattr(getattr(first, "channel", None), "id", None)
            attrs["guild_id"] = getattr(getattr(first, "guild", None), "id", None)
    owner = getattr(handler, "__self__", None)     # the bot or cog whose method handles the event
    return begin(event_name, attrs, None, () if owner is None else (owner,))


def wrap_run_event(original):
    async def _run_event(self, coro, event_name, *args, **kwargs):
        if not _event_traced(event_name) or _is_library_handler(coro):
            return await original(self, coro, event_name, *args, **kwargs)
        try:
            fs, token = _start_event(self, event_name, args, coro)
        except Exception as exc:
            diagnostics.internal_error("discord: Client._run_event", exc)
            return await original(self, coro, event_name, *args, **kwargs)

        async def traced(*a, **kw):   # _run_event swallows the handler's exception: see it first
            try:
                return await coro(*a, **kw)
            except BaseException as exc:
                if fs.error is None:
                    fs.error = exc
                raise

        # _flow_handler's closing steps, inline for its reason: no helper coroutine frame per resumption
        try:
            result = await original(self, traced, event_name, *args, **kwargs)
        except BaseException as exc:
            end(fs, token, exc)
            raise
        end(fs, token)
        return result
    return _run_event


# -- tasks.loop --------------------------------------------------------------------------------
def cycle_wrapper(coro, site):
    # wrappers._coroutine_wrapper's steps, but the span is always a root ``cycle`` (parent=None: a
    # loop's iteration never belongs to the flow that started the loop, nor links to it).
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


def wrap_loop_init(original):
    def __init__(self, coro, *args, **kwargs):
        original(self, coro, *args, **kwargs)
        try:
            if opts.get("tasks", True) and not hasattr(self.coro, "_autoperf_cycle"):
                fn = self.coro
                site = wrappers.CallSite(getattr(fn, "__qualname__", getattr(fn, "__name__", "loop")), "cycle")
                self.coro = cycle_wrapper(fn, site)
        except Exception as exc:
            diagnostics.internal_error("discord: tasks.Loop", exc)
    return __init__

