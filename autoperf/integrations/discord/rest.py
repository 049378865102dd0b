"""REST calls (``http`` spans with the route template, attempts, rate-limit waits), interaction
responses (first / final response times) and the gateway heartbeat (send → ACK).

Interaction responses (``/interactions/{id}/{token}/callback``) and followups / edits
(``/webhooks/{app}/{token}...``) are recognised in the webhook adapter, so every way of answering
counts, whichever helper the bot uses. A gateway's IDENTIFY names the shard the process runs
(``identity.add_shard``; an unsharded client is shard 0).
"""
from __future__ import annotations

import sys
import weakref
from time import perf_counter_ns

from autoperf import diagnostics, identity, pipeline, spans

from . import state
from .state import REST, by_id, by_token, counters_

opts = state.opts


class Rest:
    __slots__ = ("span", "attempts", "statuses", "wait_ns")

    def __init__(self, span):
        self.span = span
        self.attempts = 0
        self.statuses = None
        self.wait_ns = 0


_names: dict = {}   # (method, route template, base URL) -> (span name, host); templates are few


def _start(route):
    method = route.method
    path = route.path
    key = (method, path, getattr(route, "BASE", None))
    named = _names.get(key)
    if named is None:
        named = (f"{method} {path}", _host_of(route))
        if len(_names) < 4096:
            _names[key] = named
    rest = Rest(spans.start(named[0], "http", {"method": method, "route": path, "host": named[1],
                                               "system": "discord"}))
    return rest, REST.set(rest)


def _finish(rest, token, exc=None):
    # opens as state.end does (a reset that tolerates another context), over REST; the rest differs
    try:
        REST.reset(token)
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
            counters_["ratelimit_wait_ms"] += wait_ms
        counters_["rest_calls"] += 1
        if exc is not None:
            s.fail(exc)
            code = getattr(exc, "code", None)
            if code is not None:
                attrs["discord_code"] = code
    except Exception as e:
        diagnostics.internal_error("discord: finishing a REST span", e)
    s.finish()


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


def wrap_http_request(original):
    async def request(self, route, **kwargs):
        if not opts.get("http", True):
            return await original(self, route, **kwargs)
        try:
            rest, token = _start(route)
        except Exception as exc:
            diagnostics.internal_error("discord: HTTPClient.request", exc)
            return await original(self, route, **kwargs)
        # the shape of handlers._flow_handler's wrapper, inline for its reason (no helper coroutine frame)
        try:
            result = await original(self, route, **kwargs)
        except BaseException as exc:
            _finish(rest, token, exc)
            raise
        _finish(rest, token)
        return result
    return request


def wrap_json_or_text(original):
    """Each attempt's status, read before its body is parsed; discord.py's own coroutine is handed
    back as is (no second coroutine per REST response): only a 429 waits for its body."""
    def json_or_text(response):
        rest = REST.get()
        if rest is None:
            return original(response)
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
                counters_["rest_429"] += 1
                return _add_retry_after(original(response), rest)
        except Exception as exc:
            diagnostics.internal_error("discord: json_or_text", exc)
        return original(response)
    return json_or_text


async def _add_retry_after(body, rest):
    data = await body
    try:
        retry = data.get("retry_after") if isinstance(data, dict) else None
        if isinstance(retry, (int, float)):
            rest.wait_ns += int(retry * 1e9)   # discord.py sleeps exactly this before retrying
    except Exception as exc:
        diagnostics.internal_error("discord: json_or_text", exc)
    return data


def wrap_ratelimit(original):
    async def timed(self, *args):
        rest = REST.get()
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


# -- interaction responses -----------------------------------------------------------------------
def _int(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _response_of(route):
    """(interaction state, "callback" | "followup" | None) for a webhook-adapter route."""
    if route.path.startswith("/interactions/"):
        return by_id.get(_int(getattr(route, "webhook_id", None))), "callback"
    interaction_token = getattr(route, "webhook_token", None)
    if interaction_token is not None:
        st = by_token.get(interaction_token)
        return st, ("followup" if st is not None else None)
    return None, None


def wrap_webhook_request(original):
    async def request(self, route, *args, **kwargs):
        try:
            st, kind = _response_of(route)
            rest = token = None
            if opts.get("http", True):
                rest, token = _start(route)
                if kind is not None:
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
                _finish(rest, token, exc)
            raise
        if st is not None:
            _responded(st, kind, kwargs)
        if rest is not None:
            _finish(rest, token)
        return result
    return request


def _callback_type(kwargs):
    """The interaction callback type (4 = message, 5 = defer, 9 = modal, ...) of a response."""
    payload = kwargs.get("payload")
    if isinstance(payload, dict):
        return payload.get("type")
    for part in kwargs.get("multipart") or ():
        if part.get("name") == "payload_json":
            value = part.get("value") or "{}"
            # discord.py writes {"type": N, "data": ...}: read N without parsing the whole message.
            if value.startswith('{"type":'):
                digits = value[8:12].lstrip().split(",", 1)[0].rstrip("} ")
                if digits.isdigit():
                    return int(digits)
            import orjson
            return orjson.loads(value).get("type")
    return None


def _responded(st, kind, kwargs):
    try:
        now = perf_counter_ns()
        st.responses += 1
        if st.first_ns is None:
            st.first_ns = now   # a followup cannot come first, but count it as an answer if it does
            if kind == "callback":
                st.first_type = _callback_type(kwargs)
        st.final_ns = now
    except Exception as exc:
        diagnostics.internal_error("discord: response timing", exc)


def _response_failed(st, exc):
    code = getattr(exc, "code", None)
    if code == 10062:
        st.unknown += 1
        if st.refused_ns is None and st.first_ns is None:
            st.refused_ns = perf_counter_ns()
        counters_["unknown_interaction"] += 1
    elif code == 40060:
        counters_["already_acknowledged"] += 1


# -- interactions and the gateway heartbeat --------------------------------------------------------
def wrap_interaction_init(original):
    def __init__(self, *args, **kwargs):
        original(self, *args, **kwargs)
        state.track(self)   # guarded: this runs inside the gateway parser
    return __init__


hb_sent: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def wrap_get_payload(original):
    def get_payload(self):
        try:   # runs in discord.py's keep-alive thread: an exception here would stop the heartbeats
            hb_sent[self] = perf_counter_ns()
        except Exception as exc:
            diagnostics.internal_error("discord: heartbeat send", exc)
        return original(self)
    return get_payload


def _sampler_running():
    sampler = getattr(sys.modules.get("autoperf.sampler"), "_sampler", None)
    try:
        return sampler is not None and sampler.is_alive()
    except Exception:
        return False


def wrap_ack(original):
    def ack(self):
        try:
            sent = hb_sent.pop(self, None)
            if sent is not None:
                ms = round((perf_counter_ns() - sent) / 1e6, 3)
                state.latency["last_ms"] = ms
                # The resource sampler reads gateway_latency_ms() every interval; without it, one
                # record per heartbeat ACK.
                if not _sampler_running():
                    pipeline.emit({"type": "resource", "level": "INFO", "gateway_latency_ms": ms,
                                   "discord": dict(counters_)})
        except Exception as exc:
            diagnostics.internal_error("discord: heartbeat ack", exc)
        return original(self)
    return ack


def wrap_identify(original):
    async def identify(self):
        try:   # the shard this process runs goes on every record from now on (identity.FIELDS)
            identity.add_shard(getattr(self, "shard_id", None))
        except Exception as exc:
            diagnostics.internal_error("discord: identify", exc)
        return await original(self)
    return identify
