"""Point an imported discord.py (2.0–2.7) at the loopback Discord.

    point_discord_at("http://127.0.0.1:PORT")   # after `import discord`; safe to call repeatedly

Sets ``Route.BASE`` (REST), ``DiscordWebSocket.DEFAULT_GATEWAY`` and ``Asset.BASE`` (the CDN) to the
sim, wraps ``Client.login`` to remember each client (``close_clients()`` ends ``bot.run()`` when the
scenario is over) and trace what its answers are for, and with ``reroute_http`` installs reroute.py.
``restore()`` undoes all of it. None of these functions raises: a failure is reported once through
autoperf.diagnostics and the function returns False. Details: docs/discord_sim.md.
"""
from __future__ import annotations

import asyncio
import sys
import weakref
from typing import Any, Dict, Optional

from . import reroute
from .wire import internal_error

__all__ = ["point_discord_at", "restore", "close_clients", "tracked_clients"]

_originals: Dict[str, Any] = {}
_clients: "weakref.WeakKeyDictionary[Any, asyncio.AbstractEventLoop]" = weakref.WeakKeyDictionary()


def point_discord_at(base_url: str, discord_module: Optional[Any] = None, *, reroute_http: bool = True) -> bool:
    """Make discord.py talk to the sim at `base_url` ("http://127.0.0.1:PORT"). Returns True on success.

    reroute_http: also keep the bot's other aiohttp / httpx requests off the network (reroute.py)."""
    try:
        discord = discord_module or sys.modules.get("discord")
        if discord is None:
            import discord  # noqa: F811
        import discord.gateway as gateway_mod
        import discord.http as http_mod

        base = base_url.rstrip("/")
        if not base.startswith(("http://", "https://")):
            base = "http://" + base
        ws_url = "ws" + base[len("http"):] + "/gateway"
        route = http_mod.Route
        version = getattr(http_mod, "INTERNAL_API_VERSION", 10)
        _originals.setdefault("Route.BASE", route.BASE)
        route.BASE = f"{base}/api/v{version}"
        dws = gateway_mod.DiscordWebSocket
        old = dws.DEFAULT_GATEWAY
        _originals.setdefault("DEFAULT_GATEWAY", old)
        if isinstance(old, str):
            dws.DEFAULT_GATEWAY = ws_url
        else:  # yarl.URL in 2.1+
            dws.DEFAULT_GATEWAY = type(old)(ws_url)
        try:   # avatars, emojis, ...: the sim serves a 1x1 PNG for any CDN path
            import discord.asset as asset_mod

            _originals.setdefault("Asset.BASE", asset_mod.Asset.BASE)
            asset_mod.Asset.BASE = f"{base}/cdn"
        except Exception:  # pragma: no cover - an Asset without BASE
            pass
        _track_clients(discord)
        if reroute_http:
            reroute.install(base)
        return True
    except Exception as exc:
        internal_error("discord_sim.point_discord_at", exc)
        return False


def _track_clients(discord: Any) -> None:
    client_cls = discord.Client
    login = client_cls.__dict__.get("login")
    if login is None or getattr(login, "_autoperf_sim", False):
        return
    _originals.setdefault("Client.login", login)

    async def tracked_login(self: Any, token: str, *args: Any, **kwargs: Any) -> Any:
        try:
            _clients[self] = asyncio.get_running_loop()
            reroute.trace_causes(self)
        except Exception as exc:  # pragma: no cover
            internal_error("discord_sim.login", exc)
        return await login(self, token, *args, **kwargs)

    tracked_login._autoperf_sim = True  # type: ignore[attr-defined]
    tracked_login.__wrapped__ = login  # type: ignore[attr-defined]
    tracked_login.__doc__ = login.__doc__
    client_cls.login = tracked_login


def tracked_clients() -> list:
    """discord.Client objects that logged in since point_discord_at()."""
    return list(_clients.keys())


def close_clients() -> int:
    """Close every tracked client from any thread (schedules `client.close()` on its loop). Returns the count."""
    n = 0
    for client, loop in list(_clients.items()):
        try:
            if client.is_closed() or loop.is_closed():
                continue
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is loop:
                loop.create_task(client.close())
            else:
                asyncio.run_coroutine_threadsafe(client.close(), loop)
            n += 1
        except Exception as exc:
            internal_error("discord_sim.close_clients", exc)
    return n


def restore() -> bool:
    """Undo point_discord_at()."""
    try:
        reroute.uninstall()
        import discord
        import discord.gateway as gateway_mod
        import discord.http as http_mod

        if "Route.BASE" in _originals:
            http_mod.Route.BASE = _originals.pop("Route.BASE")
        if "DEFAULT_GATEWAY" in _originals:
            gateway_mod.DiscordWebSocket.DEFAULT_GATEWAY = _originals.pop("DEFAULT_GATEWAY")
        if "Asset.BASE" in _originals:
            import discord.asset as asset_mod

            asset_mod.Asset.BASE = _originals.pop("Asset.BASE")
        if "Client.login" in _originals:
            discord.Client.login = _originals.pop("Client.login")
        return True
    except Exception as exc:
        internal_error("discord_sim.restore", exc)
        return False
