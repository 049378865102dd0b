"""aiohttp client: one ``http`` span per request (``ClientSession._request``, behind get/post/...).

Span name ``"{METHOD} {path template}"`` (``GET /orders/{id}``); attributes ``method``, ``host``,
templated ``path`` (``autoperf.redact``), ``status``, ``bytes``; never headers, cookies, query
strings, userinfo or bodies. The span ends when status and headers are in (reading the body is the
caller's time). No generic span inside a more specific ``http`` span (discord's REST span) or under
``suppress()``. A request carries a W3C ``traceparent`` naming its span unless the program set one,
``traceparent: false`` or the host is Discord's. The same helpers serve the httpx integration;
details: docs/integrations_db_http.md.
"""
from __future__ import annotations

import contextlib
from contextvars import ContextVar

from autoperf import diagnostics, spans, tracecontext
from autoperf.config.schema import Bool, Field, Obj
from autoperf.redact import http_path as template_path
from autoperf.spans import get_current, set_current

TRACEPARENT = Field(Bool(), default=True, doc="Send a W3C `traceparent` header naming the request's span "
                    "(never to Discord's API, never over one the program set).")
OPTIONS = Obj({"traceparent": TRACEPARENT}, doc="aiohttp client requests (http spans).")


_suppressed: ContextVar = ContextVar("autoperf_http_suppressed", default=False)

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
#: Hosts that never get ``traceparent`` (and their subdomains).
DISCORD_HOSTS = ("discord.com", "discordapp.com", "discord.gg", "discordapp.net", "discord.media")
_options = {"traceparent": True}


_to_discord: dict = {}   # host -> is it Discord's (hosts are few; bounded anyway)


def _is_discord(host) -> bool:
    hit = _to_discord.get(host)
    if hit is None:
        name = (host or "").lower().rstrip(".")
        hit = any(name == d or name.endswith("." + d) for d in DISCORD_HOSTS)
        if len(_to_discord) < 1024:
            _to_discord[host] = hit
    return hit


def traceparent_for(s, host) -> str | None:
    """The ``traceparent`` value for a request to ``host`` timed by ``s``, or None (Discord)."""
    if _is_discord(host):
        return None
    return tracecontext.traceparent_of(s)


def host_of(host, port, scheme) -> str:
    host = host or ""
    if port and _DEFAULT_PORTS.get((scheme or "").lower()) != port:
        return f"{host}:{port}"
    return host


def should_record() -> bool:
    """False when a more specific ``http`` span is current or ``suppress()`` is active."""
    cur = get_current()
    if cur is not None and getattr(cur, "kind", None) == "http":
        return False
    return not _suppressed.get()


@contextlib.contextmanager
def suppress():
    """No generic aiohttp/httpx spans inside this block (the caller records its own)."""
    token = _suppressed.set(True)
    try:
        yield
    finally:
        _suppressed.reset(token)


def start_http_span(method, url_host, url_port, scheme, path):
    """Start (and make current) an ``http`` span with the request's safe attributes."""
    method = str(method).upper()
    host = host_of(url_host, url_port, scheme)
    path = template_path(path, url_host)
    return spans.start(f"{method} {path}", "http", {"method": method, "host": host, "path": path})


def end_http_span(s, status, size):
    if status is not None:
        s.attrs["status"] = status
        if status >= 500:
            s.status = "error"
    if size is not None:
        s.attrs["bytes"] = size


def _url(session, str_or_url):
    build = getattr(session, "_build_url", None)
    if build is not None:
        return build(str_or_url)
    from yarl import URL
    return URL(str_or_url)


def _request_factory(original):
    async def _request(self, method, str_or_url, **kwargs):
        if not should_record():
            return await original(self, method, str_or_url, **kwargs)
        try:
            url = _url(self, str_or_url)
            s = start_http_span(method, url.host, url.port, url.scheme, url.raw_path)
        except Exception:
            # an unusable URL: aiohttp raises its own error for it; nothing to time
            return await original(self, method, str_or_url, **kwargs)
        try:
            value = traceparent_for(s, url.host) if _options["traceparent"] else None
            if value is not None:
                kwargs["headers"] = _with_traceparent(kwargs.get("headers"), value)
        except Exception as exc:
            diagnostics.internal_error("aiohttp traceparent", exc)
        try:
            resp = await original(self, method, str_or_url, **kwargs)
        except BaseException as exc:
            status = getattr(exc, "status", None)
            if isinstance(status, int):
                s.attrs["status"] = status
            s.fail(exc)
            s.finish()
            raise
        try:
            end_http_span(s, resp.status, resp.content_length)
        except Exception as exc:
            diagnostics.internal_error("aiohttp response attributes", exc)
        s.finish()
        return resp
    return _request


def _with_traceparent(headers, value):
    """The request's headers plus ``traceparent`` (a copy; one the program set is kept)."""
    from multidict import CIMultiDict

    out = CIMultiDict(headers or ())
    if "traceparent" not in out:
        out["traceparent"] = value
    return out


def setup(module, options: dict) -> None:
    _options["traceparent"] = bool(options.get("traceparent", True))
