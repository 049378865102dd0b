"""EvoLadder bot: a 1v1 ladder for Discord (slash commands, PostgreSQL, matchmaking, replay parsing).

    DISCORD_TOKEN=... python bot.py

Under autoperf against the loopback Discord (no token needed):

    python -m autoperf run --simulate scenario.yaml bot.py
"""
from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor

import discord
from discord.ext import commands, tasks

from ladder.commands import Ladder
from ladder.db import DatabaseReader, DatabaseWriter, create_pool, ensure_schema
from ladder.matchmaker import Matchmaker
from ladder.pg import resolve_dsn
from ladder.storage import ReplayStorage, StorageServer

log = logging.getLogger("ladder")


def _warm() -> int:
    return os.getpid()


class LadderBot(commands.Bot):
    def __init__(self):
        intents = discord.Intents.default()
        intents.message_content = True     # `!report` reads attachments
        super().__init__(command_prefix="!", intents=intents, help_command=None)
        self.pool = None
        self.embedded_pg = None
        self.reader: DatabaseReader | None = None
        self.writer: DatabaseWriter | None = None
        self.matchmaker: Matchmaker | None = None
        self.replay_pool: ProcessPoolExecutor | None = None
        self.storage_server: StorageServer | None = None
        self.storage: ReplayStorage | None = None
        self.leaderboard_count = 0

    async def setup_hook(self) -> None:
        dsn, self.embedded_pg = await resolve_dsn()
        self.pool = await create_pool(dsn)
        await ensure_schema(self.pool)
        self.reader, self.writer = DatabaseReader(self.pool), DatabaseWriter(self.pool)
        self.storage_server = StorageServer()
        self.storage = ReplayStorage(await self.storage_server.start())
        self.replay_pool = ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn"))
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(self.replay_pool, _warm) for _ in range(2)))
        self.matchmaker = Matchmaker(self.reader, self.writer, notify=self.announce_match,
                                     interval_s=float(os.environ.get("LADDER_MATCHMAKING_INTERVAL_S", "2")))
        self.matchmaker.start()
        await self.add_cog(Ladder(self))
        await self.tree.sync()
        self.refresh_leaderboard_cache.start()

    async def announce_match(self, match, a, b) -> None:
        channel_id = a.channel_id or b.channel_id
        if channel_id is None:
            return
        channel = self.get_channel(channel_id) or await self.fetch_channel(channel_id)
        await channel.send(f"Match #{match.match_id} found: <@{a.discord_uid}> ({a.race}) vs "
                           f"<@{b.discord_uid}> ({b.race}) on **{match.map}**. GL HF!")

    @tasks.loop(seconds=5)
    async def refresh_leaderboard_cache(self) -> None:
        self.leaderboard_count = await self.reader.count_ranked_players()

    async def on_ready(self) -> None:
        log.info("logged in as %s (%s guilds)", self.user, len(self.guilds))

    async def close(self) -> None:
        self.refresh_leaderboard_cache.cancel()
        if self.matchmaker is not None:
            await self.matchmaker.stop()
        await super().close()
        if self.storage is not None:
            await self.storage.close()
        if self.storage_server is not None:
            await self.storage_server.stop()
        if self.pool is not None:
            await self.pool.close()
        if self.replay_pool is not None:
            self.replay_pool.shutdown(wait=True, cancel_futures=True)


def main() -> int:
    token = os.environ.get("DISCORD_TOKEN")
    if not token:
        print("set DISCORD_TOKEN (or run under `python -m autoperf run --simulate scenario.yaml bot.py`)",
              file=sys.stderr)
        return 2
    bot = LadderBot()
    try:
        bot.run(token, log_level=logging.WARNING)
    finally:
        if bot.embedded_pg is not None:
            bot.embedded_pg.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
