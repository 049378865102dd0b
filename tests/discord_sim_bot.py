"""The bot tests/test_discord_sim_journeys.py plays against the loopback Discord (real discord.py 2.0+).

- examples/dm_ladder's cog: a DM-only /queue, pairing after a wave (LADDER_WAVE_S), Confirm buttons in DMs;
- ``Zones``: downloads a timezone table when it loads (aiohttp) and a banner it can do without;
- /weather over httpx (async, and sync in a thread); /flaky and !flaky answer every other call (which
  ones is written to ``TRUTH``); /ignore never answers; /profile (embed + button), /secret
  (ephemeral), /feedback (modal), /challenge (a channel message mentioning the opponent, a DM back).

``python tests/discord_sim_bot.py`` runs it with $DISCORD_TOKEN (e.g. under ``autoperf run --simulate``).
"""
from __future__ import annotations

import asyncio
import itertools
import os
import sys

import aiohttp
import discord
import httpx
from discord import app_commands
from discord.ext import commands

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "dm_ladder"))
from bot import Ladder  # noqa: E402  (examples/dm_ladder/bot.py)

TRUTH: dict = {"flaky": {}, "zones": None, "banner_status": None, "status": None}   # what the bot saw, for the tests


class Zones(commands.Cog):
    """A cog whose data comes from the network when it loads."""

    async def cog_load(self) -> None:
        async with aiohttp.ClientSession() as session:
            async with session.get("https://tz.example.com/v1/zones.json?key=not-a-secret") as resp:
                resp.raise_for_status()
                self.zones = await resp.json()
            async with session.get("https://cdn.example.net/banner.png") as resp:
                TRUTH["banner_status"] = resp.status
            async with session.get("https://status.example.com/") as resp:
                TRUTH["status"] = [resp.status, await resp.text()]
        TRUTH["zones"] = len(self.zones)

    @app_commands.command(description="UTC offset of a time zone")
    async def zone(self, interaction: discord.Interaction, name: str):
        await interaction.response.send_message(f"{name} is UTC{self.zones[name]:+d}")


def _motd() -> str:
    with httpx.Client() as client:
        return client.get("http://static.example.org/motd.txt").text


class Accept(discord.ui.View):
    def __init__(self, challenger: int, opponent: int):
        super().__init__(timeout=60)
        self.challenger, self.opponent = challenger, opponent

    @discord.ui.button(label="Accept")
    async def accept(self, interaction: discord.Interaction, button: discord.ui.Button):
        if interaction.user.id != self.opponent:
            await interaction.response.send_message("Not your challenge.", ephemeral=True)
            return
        await interaction.response.edit_message(
            content=f"<@{self.opponent}> accepted the challenge of <@{self.challenger}>.", view=None)
        challenger = await interaction.client.fetch_user(self.challenger)
        await challenger.send(f"<@{self.opponent}> accepted your challenge.")


class Refresh(discord.ui.View):
    @discord.ui.button(label="Refresh")
    async def refresh(self, interaction: discord.Interaction, button: discord.ui.Button):
        await interaction.response.defer()


class Feedback(discord.ui.Modal, title="Feedback"):
    text = discord.ui.TextInput(label="Text")

    async def on_submit(self, interaction: discord.Interaction):
        await interaction.response.send_message(f"thanks for {self.text.value!r}", ephemeral=True)


class Misc(commands.Cog):
    def __init__(self) -> None:
        self.calls = itertools.count()
        self.messages = itertools.count()

    @app_commands.command(description="the weather, over httpx")
    async def weather(self, interaction: discord.Interaction):
        async with httpx.AsyncClient() as client:
            sky = (await client.get("https://api.weather.example/now")).json()["sky"]
        motd = await asyncio.to_thread(_motd)
        await interaction.response.send_message(f"{sky} / {motd}")

    @app_commands.command(description="answers every other call")
    async def flaky(self, interaction: discord.Interaction):
        answer = next(self.calls) % 2 == 0
        TRUTH["flaky"][str(interaction.id)] = answer
        if answer:
            await interaction.response.send_message("here")

    @commands.command(name="flaky")
    async def flaky_prefix(self, ctx: commands.Context):
        answer = next(self.messages) % 2 == 1
        TRUTH["flaky"][str(ctx.message.id)] = answer
        if answer:
            await ctx.send("here")          # no message_reference: matched by what the bot was handling

    @app_commands.command(description="never answers")
    async def ignore(self, interaction: discord.Interaction):
        pass

    @app_commands.command(description="a profile embed")
    async def profile(self, interaction: discord.Interaction):
        embed = discord.Embed(title=f"Profile of {interaction.user.name}", description="Rank 7, 1650 MMR")
        await interaction.response.send_message(embed=embed, view=Refresh())

    @app_commands.command(description="an ephemeral answer")
    async def secret(self, interaction: discord.Interaction):
        await interaction.response.send_message("only you can see this", ephemeral=True)

    @app_commands.command(description="opens a modal")
    async def feedback(self, interaction: discord.Interaction):
        await interaction.response.send_modal(Feedback())

    @app_commands.command(description="challenge someone in this channel")
    async def challenge(self, interaction: discord.Interaction, opponent: discord.User):
        await interaction.response.send_message("Challenge sent.", ephemeral=True)
        await interaction.channel.send(f"<@{opponent.id}>, <@{interaction.user.id}> challenges you!",
                                       view=Accept(interaction.user.id, opponent.id))


class SimTestBot(commands.Bot):
    def __init__(self) -> None:
        intents = discord.Intents.default()
        intents.message_content = True
        super().__init__(command_prefix="!", intents=intents)

    async def setup_hook(self) -> None:
        await self.add_cog(Ladder(self, float(os.environ.get("LADDER_WAVE_S", "1"))))
        await self.add_cog(Zones())
        await self.add_cog(Misc())
        await self.tree.sync()


if __name__ == "__main__":
    SimTestBot().run(os.environ["DISCORD_TOKEN"], log_handler=None)
