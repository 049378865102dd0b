"""Bot-side hooks during a simulation: other HTTP stays off the network, answers carry their cause.

aiohttp (``TCPConnector._create_connection``) and httpx (``HTTPTransport``, ``AsyncHTTPTransport``):
a request to a host that is not a loopback address goes, unchanged, to the sim's port instead, marked
with ``REROUTED_HEADER`` for the sink (no DNS lookup, no proxy); loopback hosts pass and are counted.
Requests to the loopback Discord carry ``CAUSE_HEADER``: the id of the MESSAGE_CREATE or
INTERACTION_CREATE discord.py was parsing when the sending task began (``CAUSE``, a context variable).
``install(base_url)`` is idempotent (a later call moves the target); ``uninstall()`` restores all.
"""
from __future__ import annotations

import asyncio
import ipaddress
import sys
import weakref
from contextvars import ContextVar
from typing import Any, Callable, Dict, List, Optional, Tuple

from autoperf._wrapt import wrapt

from .wire import CAUSE_HEADER, REROUTED_HEADER, internal_error

__all__ = ["install", "uninstall", "trace_causes", "passed_through", "CAUSE"]

CAUSE: ContextVar[Optional[str]] = ContextVar("autoperf_sim_cause", default=None)

_sim: Optional[Tuple[str, int]] = None          # the loopback Discord's (host, port)
_patched: List[Tuple[Any, str, Any]] = []        # (owner, attribute, original)
_passed: Dict[str, int] = {}                    # loopback host[:port] -> requests that passed through
_loopback: Dict[str, bool] = {}
# httpx transports to the sim (no proxies): one for sync clients, one per event loop for async ones
_sync_transport: List[Any] = [None]
_async_transports: "weakref.WeakKeyDictionary[Any, Any]" = weakref.WeakKeyDictionary()
_hooked = {"httpx": False}


def is_loopback(host: Optional[str]) -> bool:
    if not host:
        return False
    known = _loopback.get(host)
    if known is None:
        try:
            known = ipaddress.ip_address(host.strip("[]")).is_loopback
        except ValueError:
            known = host.lower() == "localhost" or host.lower().endswith(".localhost")
        if len(_loopback) < 10_000:
            _loopback[host] = known
    return known


def _note_passed(host: str, port: Optional[int]) -> None:
    key = f"{host}:{port}" if port else host
    _passed[key] = _passed.get(key, 0) + 1


def passed_through() -> List[Dict[str, Any]]:
    """Loopback hosts the bot reached directly since install(), in the report's ``http`` shape."""
    return [{"host": h, "requests": n, "passed_through": True, "static": 0, "statuses": {}, "paths": []}
            for h, n in sorted(_passed.items())]


# ------------------------------------------------------------------ aiohttp
def _aiohttp_connect(wrapped: Callable, instance: Any, args: tuple, kwargs: dict) -> Any:
    req = args[0] if args else kwargs["req"]
    url = req.url
    if _sim is not None:
        if (url.host, url.port) == _sim:
            cause = CAUSE.get()
            if cause is not None:
                req.headers[CAUSE_HEADER] = cause
        elif is_loopback(url.host):
            _note_passed(url.host, url.port)
        else:
            req.headers[REROUTED_HEADER] = url.scheme
    return wrapped(*args, **kwargs)


def _aiohttp_create_connection(wrapped: Callable, instance: Any, args: tuple, kwargs: dict) -> Any:
    req = args[0] if args else kwargs["req"]
    if _sim is None or REROUTED_HEADER not in req.headers:
        return wrapped(*args, **kwargs)
    return _connect_to_sim(instance, _sim)


async def _connect_to_sim(connector: Any, sim: Tuple[str, int]) -> Any:
    # A plain TCP connection to the sim whatever the scheme: the request goes over it as it is.
    _, proto = await connector._loop.create_connection(connector._factory, sim[0], sim[1])
    return proto


# ------------------------------------------------------------------ httpx
def _httpx_target(request: Any) -> Any:
    """The request to send instead (to the sim, marked), or None to send this one."""
    url = request.url
    if _sim is None or (url.host, url.port) == _sim:
        return None
    if is_loopback(url.host):
        _note_passed(url.host, url.port)
        return None
    import httpx

    headers = request.headers.copy()
    headers[REROUTED_HEADER] = url.scheme
    return httpx.Request(request.method, url.copy_with(scheme="http", host=_sim[0], port=_sim[1]),
                         headers=headers, stream=request.stream, extensions=request.extensions)


def _httpx_send(wrapped: Callable, instance: Any, args: tuple, kwargs: dict) -> Any:
    target = _httpx_target(args[0] if args else kwargs["request"])
    if target is None:
        return wrapped(*args, **kwargs)
    if _sync_transport[0] is None:
        import httpx

        _sync_transport[0] = httpx.HTTPTransport()
    return _sync_transport[0].handle_request(target)


def _httpx_send_async(wrapped: Callable, instance: Any, args: tuple, kwargs: dict) -> Any:
    target = _httpx_target(args[0] if args else kwargs["request"])
    if target is None:
        return wrapped(*args, **kwargs)
    loop = asyncio.get_running_loop()          # an async pool's connections belong to one loop
    transport = _async_transports.get(loop)
    if transport is None:
        import httpx

        transport = _async_transports[loop] = httpx.AsyncHTTPTransport()
    return transport.handle_async_request(target)


# ------------------------------------------------------------------ patching
def _wrap(module: Any, path: str, wrapper: Callable) -> None:
    owner_name, attr = path.rsplit(".", 1)
    owner = getattr(module, owner_name)
    _patched.append((owner, attr, vars(owner)[attr]))
    wrapt.wrap_function_wrapper(owner, attr, wrapper)


def _patch_httpx(module: Any) -> None:
    if _sim is None or _hooked["httpx"]:
        return
    _hooked["httpx"] = True
    _wrap(module, "HTTPTransport.handle_request", _httpx_send)
    _wrap(module, "AsyncHTTPTransport.handle_async_request", _httpx_send_async)


def _httpx_hook(module: Any) -> None:
    try:
        _patch_httpx(module)
    except Exception as exc:   # a post-import hook must never fail the bot's import
        internal_error("discord_sim.reroute(httpx)", exc)


def install(base_url: str) -> None:
    """Reroute other HTTP to the sim at ``base_url`` and tag Discord requests with their cause."""
    global _sim
    from yarl import URL

    url = URL(base_url)
    first = _sim is None and not _patched
    if _sim != (url.host, url.port):
        _sim = (url.host, url.port)
        _passed.clear()
    if first:
        import aiohttp.connector as connector

        _wrap(connector, "BaseConnector.connect", _aiohttp_connect)
        _wrap(connector, "TCPConnector._create_connection", _aiohttp_create_connection)
    if "httpx" in sys.modules:
        _patch_httpx(sys.modules["httpx"])
    elif first:
        wrapt.register_post_import_hook(_httpx_hook, "httpx")


def uninstall() -> None:
    global _sim
    _sim = None
    while _patched:
        owner, attr, original = _patched.pop()
        setattr(owner, attr, original)
    _hooked["httpx"] = False
    if _sync_transport[0] is not None:
        _sync_transport[0].close()
        _sync_transport[0] = None
    _async_transports.clear()     # an async transport's connections close with its loop


# ------------------------------------------------------------------ causes
def _with_cause(parse: Callable[[Dict[str, Any]], Any]) -> Callable[[Dict[str, Any]], Any]:
    def parse_with_cause(data: Dict[str, Any]) -> Any:
        token = CAUSE.set(str(data.get("id")))
        try:
            return parse(data)
        finally:
            CAUSE.reset(token)
    parse_with_cause._autoperf_sim_cause = True  # type: ignore[attr-defined]
    return parse_with_cause


def trace_causes(client: Any) -> None:
    """Set CAUSE while ``client`` parses MESSAGE_CREATE and INTERACTION_CREATE (the tasks they start keep it)."""
    parsers = client._connection.parsers
    for event in ("MESSAGE_CREATE", "INTERACTION_CREATE"):
        parse = parsers.get(event)
        if parse is not None and not getattr(parse, "_autoperf_sim_cause", False):
            parsers[event] = _with_cause(parse)

