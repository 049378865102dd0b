"""A 1v1 ladder played in DMs — the two-player journey of docs/discord_sim.md.

/queue (in DMs only) queues you; every LADDER_WAVE_S seconds (default 2) the matchmaker pairs the
queued players and DMs both "Match #N found" with a Confirm button; once both confirmed, both get
"Match #N is on"; a player then reports with `!result win` (or loss), the replay attached.

    python -m autoperf run --simulate examples/dm_ladder/scenario.yaml examples/dm_ladder/bot.py
"""
from __future__ import annotations

import itertools
import os

import discord
from discord import app_commands
from discord.ext import commands, tasks


class ConfirmView(discord.ui.View):
    def __init__(self, ladder: "Ladder", match_id: int):
        super().__init__(timeout=120)
        self.ladder, self.match_id = ladder, match_id

    @discord.ui.button(label="Confirm", style=discord.ButtonStyle.green)
    async def confirm(self, interaction: discord.Interaction, button: discord.ui.Button):
        await interaction.response.edit_message(content=f"Match #{self.match_id}: confirmed, waiting for your "
                                                        "opponent.", view=None)
        await self.ladder.confirmed(self.match_id, interaction.user.id)


class Ladder(commands.Cog):
    def __init__(self, bot: commands.Bot, wave_s: float):
        self.bot = bot
        self.queue: list[int] = []
        self.matches: dict[int, dict] = {}        # match id -> {"players": (a, b), "confirmed": set()}
        self.playing: dict[int, int] = {}         # player -> their confirmed match
        self.ids = itertools.count(1)
        self.pair_players.change_interval(seconds=wave_s)

    async def cog_load(self) -> None:
        self.pair_players.start()

    async def cog_unload(self) -> None:
        self.pair_players.cancel()

    @app_commands.command(description="Queue for a ranked 1v1 (in your DMs with the bot)")
    async def queue(self, interaction: discord.Interaction):
        if interaction.guild is not None:
            await interaction.response.send_message("Use /queue in your DMs with me.", ephemeral=True)
            return
        if interaction.user.id not in self.queue:
            self.queue.append(interaction.user.id)
        await interaction.response.send_message(f"You are in the queue ({len(self.queue)} waiting).")

    @tasks.loop(seconds=2)
    async def pair_players(self) -> None:
        while len(self.queue) >= 2:
            a, b = self.queue.pop(0), self.queue.pop(0)
            match_id = next(self.ids)
            self.matches[match_id] = {"players": (a, b), "confirmed": set()}
            for me, other in ((a, b), (b, a)):
                user = await self.bot.fetch_user(me)
                await user.send(f"Match #{match_id} found: you vs <@{other}>. Confirm to play.",
                                view=ConfirmView(self, match_id))

    async def confirmed(self, match_id: int, player: int) -> None:
        match = self.matches[match_id]
        match["confirmed"].add(player)
        if len(match["confirmed"]) == 2:
            for p in match["players"]:
                self.playing[p] = match_id
                user = await self.bot.fetch_user(p)
                await user.send(f"Match #{match_id} is on. Report with `!result win` or `!result loss`, "
                                "the replay attached.")

    @commands.command()
    @commands.dm_only()
    async def result(self, ctx: commands.Context, outcome: str):
        match_id = self.playing.pop(ctx.author.id, None)
        if match_id is None or outcome not in ("win", "loss") or not ctx.message.attachments:
            await ctx.reply("No match to report (or no replay attached).")
            return
        replay = await ctx.message.attachments[0].read()
        await ctx.reply(f"Result recorded: match #{match_id}, {outcome}, replay of {len(replay)} bytes.")


class LadderBot(commands.Bot):
    def __init__(self):
        intents = discord.Intents.default()
        intents.message_content = True
        super().__init__(command_prefix="!", intents=intents)

    async def setup_hook(self) -> None:
        await self.add_cog(Ladder(self, float(os.environ.get("LADDER_WAVE_S", "2"))))
        await self.tree.sync()


if __name__ == "__main__":
    LadderBot().run(os.environ["DISCORD_TOKEN"])
