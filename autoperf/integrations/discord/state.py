"""Options, per-interaction bookkeeping and the life of one flow (start, status, response times).

DEV: ``Interaction`` uses ``__slots__``: what we know about an interaction lives in ``by_id`` /
``by_token`` here (bounded, and emptied as each flow ends: nothing for the GC to keep).
"""
from __future__ import annotations

import contextvars
import weakref
from time import perf_counter_ns, time_ns

from autoperf import diagnostics, spans

#: The discord integration's options (OPTIONS' defaults + the config), set by patch().
opts: dict = {}
max_tracked = 1024

#: The flow the current task is in (``FlowState``) and the REST call it is making (``rest.Rest``).
FLOW: contextvars.ContextVar = contextvars.ContextVar("autoperf_discord_flow", default=None)
REST: contextvars.ContextVar = contextvars.ContextVar("autoperf_discord_rest", default=None)
_DISCORD_EPOCH_MS = 1420070400000

counters_ = {"interactions": 0, "answered": 0, "unanswered": 0, "deadline_missed": 0, "slow_first_response": 0,
             "unknown_interaction": 0, "already_acknowledged": 0, "rest_calls": 0, "rest_429": 0,
             "ratelimit_wait_ms": 0.0}
latency = {"last_ms": None}
clients: "weakref.WeakSet" = weakref.WeakSet()
_last_client = [None]   # weakref to the client seen last: one call instead of a WeakSet lookup


class _IState:
    """What we know about one interaction (ints and strings only: nothing for the GC to chase)."""

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


class FlowState:
    __slots__ = ("span", "ist", "error", "status", "adopted", "handlers")

    def __init__(self, span, ist, handlers=()):
        self.span = span
        self.ist = ist
        self.error = None
        self.status = None
        self.adopted = False
        self.handlers = handlers   # the objects whose method discord.py runs as this flow (item, view, modal)


by_id: dict = {}
by_token: dict = {}


def track(interaction):
    """Remember an interaction's receive time (runs inside the gateway parser: never raises)."""
    try:
        iid = interaction.id
        token = interaction.token
        st = _IState(iid, token)
        by_id[iid] = st
        if token:
            by_token[token] = st
        while len(by_id) > max_tracked:
            old = by_id.pop(next(iter(by_id)))
            if old.token:
                by_token.pop(old.token, None)
        counters_["interactions"] += 1
    except Exception as exc:
        diagnostics.internal_error("discord: tracking an interaction", exc)


def ist_of(interaction):
    try:
        st = by_id.get(interaction.id)
        if st is None:
            track(interaction)
            st = by_id.get(interaction.id)
        return st
    except Exception:
        return None


def note_client(client):
    last = _last_client[0]
    if client is None or (last is not None and last() is client):
        return
    try:
        clients.add(client)
        _last_client[0] = weakref.ref(client)
    except Exception:
        pass


# -- one flow ------------------------------------------------------------------------------------
def begin(name, attrs, ist=None, handlers=()):
    """Start a root flow and make it this task's discord flow; ``end(fs, token[, exc])`` ends it."""
    fs = FlowState(spans.start(name, "flow", attrs, parent=None), ist, handlers)
    return fs, FLOW.set(fs)


def status_of(exc):
    """(status, exception type to record) for an exception seen by a command."""
    etype = type(exc)
    names = {c.__name__ for c in etype.__mro__}
    if "CommandOnCooldown" in names:
        return "cooldown", etype
    if "CheckFailure" in names or "MissingPermissions" in names:
        return "check_failure", etype
    original = getattr(exc, "original", None)
    if isinstance(original, BaseException) and "CommandInvokeError" in names:
        return status_of(original) if original is not exc else ("error", type(original))
    cause = exc.__cause__
    if "HybridCommandError" in names and isinstance(cause, BaseException):
        inner = getattr(cause, "original", None)
        return "error", type(inner if isinstance(inner, BaseException) else cause)
    return "error", etype


def end(fs, token, exc=None):
    try:
        FLOW.reset(token)
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
                status, etype = status_of(err) if isinstance(err, BaseException) else ("error", err)
                s.status = status
                s.error = etype
        ist = fs.ist
        if ist is not None:
            response_attrs(s, ist)
            # Done with it: only in-flight interactions stay in memory. A later followup is still
            # an http span, just not attributed.
            if by_id.get(ist.id) is ist:
                del by_id[ist.id]
            if ist.token and by_token.get(ist.token) is ist:
                del by_token[ist.token]
        # Keep what outlives the flow small: the FlowState stays reachable from every context copied
        # during the flow (a library's timer or socket handle), and the exception's traceback would
        # keep the command's frames, its interaction, members and views alive with it.
        fs.span = fs.ist = fs.error = None
        fs.handlers = ()
    except Exception as e:
        diagnostics.internal_error("discord: finishing a flow", e)
    s.finish()


RESPONSE_TYPES = {1: "pong", 4: "message", 5: "defer_thinking", 6: "defer_update", 7: "update_message",
                  8: "autocomplete", 9: "modal", 10: "premium_required", 12: "launch_activity"}


def _ms3(ns):
    """Nanoseconds as milliseconds with 3 decimals (``round(ns / 1e6, 3)`` but for exact .5 µs
    ties, at an eighth of its cost: float ``round`` goes through a decimal conversion)."""
    return ((ns + 500) // 1000) / 1000


def response_attrs(s, st):
    attrs = s.attrs
    answered = st.first_ns is not None
    attrs["answered"] = answered
    deadline = opts.get("deadline_ms", 3000.0)
    if answered:
        first_ns = st.first_ns - st.recv_ns
        first = first_ns / 1e6
        attrs["first_response_ms"] = _ms3(first_ns)
        attrs["final_response_ms"] = _ms3((st.final_ns or st.first_ns) - st.recv_ns)
        if st.first_type is not None:
            attrs["response_type"] = RESPONSE_TYPES.get(st.first_type, st.first_type)
        # Discord's clock starts at the interaction's creation (its snowflake), before we received it.
        delay = st.recv_wall_ms - ((st.id >> 22) + _DISCORD_EPOCH_MS)
        if 0 <= delay < 60_000:
            attrs["gateway_delay_ms"] = delay
        else:
            delay = 0
        if first + delay > deadline:
            attrs["deadline_missed"] = True
            if s.status == "success":
                s.status = "timeout"
            counters_["deadline_missed"] += 1
        elif first + delay > opts.get("warning_ms", 2000.0):
            counters_["slow_first_response"] += 1
        counters_["answered"] += 1
    elif attrs.get("interaction_type") != "autocomplete":
        counters_["unanswered"] += 1
        if st.refused_ns is not None:
            # The bot did answer, too late: Discord refused it. That attempt is the first response.
            attrs["first_response_ms"] = _ms3(st.refused_ns - st.recv_ns)
        waited = (perf_counter_ns() - st.recv_ns) / 1e6
        if waited > deadline:
            attrs["deadline_missed"] = True
            if s.status == "success":
                s.status = "timeout"
            counters_["deadline_missed"] += 1
    if st.unknown:
        attrs["unknown_interaction"] = True


def interaction_attrs(interaction, itype):
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


def level_processor(record):
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
        if isinstance(first, (int, float)) and first + (attrs.get("gateway_delay_ms") or 0) > opts.get("warning_ms", 2000.0) \
                and level in ("TRACE", "DEBUG", "INFO"):
            record["level"] = "WARNING"
    return record
