"""Replay storage: a tiny object store over HTTP (stands in for Supabase storage) and its client."""
from __future__ import annotations

import hashlib
import os
import tempfile

import aiohttp
from aiohttp import web


class StorageServer:
    """``PUT /storage/v1/object/replays/{name}`` stores the body; ``GET`` returns it. Loopback only."""

    def __init__(self, latency_s: float = 0.0):
        # removed by stop(), and at interpreter exit when stop() never ran to its end (bot.run() cancels
        # the tasks still running when the bot's main task returns, a close() among them)
        self._dir = tempfile.TemporaryDirectory(prefix="ladder_storage_")
        self.root = self._dir.name
        self.latency_s = latency_s
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        app = web.Application(client_max_size=32 * 1024 * 1024)
        app.router.add_put("/storage/v1/object/replays/{name}", self._put)
        app.router.add_get("/storage/v1/object/replays/{name}", self._get)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        self.base_url = f"http://{host}:{port}"
        return self.base_url

    async def _put(self, request: web.Request) -> web.Response:
        name = os.path.basename(request.match_info["name"])
        body = await request.read()
        if self.latency_s:
            import asyncio
            await asyncio.sleep(self.latency_s)
        with open(os.path.join(self.root, name), "wb") as fh:
            fh.write(body)
        return web.json_response({"Key": f"replays/{name}", "size": len(body)})

    async def _get(self, request: web.Request) -> web.StreamResponse:
        path = os.path.join(self.root, os.path.basename(request.match_info["name"]))
        if not os.path.exists(path):
            raise web.HTTPNotFound()
        return web.FileResponse(path)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._dir.cleanup()


class ReplayStorage:
    """Uploads replays to the store."""

    def __init__(self, base_url: str):
        self.base_url = base_url.rstrip("/")
        self._session: aiohttp.ClientSession | None = None

    async def upload_replay(self, data: bytes, uploader: int) -> str:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        name = f"{uploader}-{hashlib.sha1(data).hexdigest()[:16]}.ladrep"
        url = f"{self.base_url}/storage/v1/object/replays/{name}"
        async with self._session.put(url, data=data, headers={"Content-Type": "application/octet-stream"}) as resp:
            resp.raise_for_status()
            await resp.read()
        return url

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
