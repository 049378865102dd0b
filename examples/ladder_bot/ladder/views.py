"""Discord UI: the /setup wizard, the queue buttons, leaderboard pages, the activation modal, the ToS."""
from __future__ import annotations

import discord

from ladder.db import COUNTRIES, MAPS, RACES
from ladder.matchmaker import QueueEntry


def leaderboard_embed(rows, page: int, pages: int) -> discord.Embed:
    embed = discord.Embed(title="EvoLadder — 1v1 leaderboard", colour=discord.Colour.gold())
    lines = [f"`#{r['rank']:>3}` **{r['player_name']}** {r['country'] or '—'} · {r['mmr']} MMR "
             f"({r['wins']}W/{r['losses']}L)" for r in rows]
    embed.description = "\n".join(lines) or "Nobody is ranked yet."
    embed.set_footer(text=f"Page {page}/{pages}")
    return embed


class SetupView(discord.ui.View):
    """Step 1: country, step 2: race, step 3: map vetoes, then Confirm.

    No fixed custom_ids on these per-user views: discord.py then generates one per instance, so two
    players running /setup at the same time can never reach each other's view."""

    def __init__(self, bot, owner_id: int, player):
        super().__init__(timeout=300)
        self.bot, self.owner_id = bot, owner_id
        self.country = player["country"] if player else None
        self.race = "Random"
        self.vetoes: list[str] = []

    def summary(self) -> str:
        return (f"**Country:** {self.country or 'not set'}\n**Race:** {self.race}\n"
                f"**Vetoed maps:** {', '.join(self.vetoes) or 'none'}")

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        if interaction.user.id != self.owner_id:
            await interaction.response.send_message("This setup belongs to someone else.", ephemeral=True)
            return False
        return True

    @discord.ui.select(placeholder="Choose your country",
                       options=[discord.SelectOption(label=c, value=c) for c in COUNTRIES[:25]])
    async def choose_country(self, interaction: discord.Interaction, select: discord.ui.Select):
        self.country = select.values[0]
        await interaction.response.edit_message(content=self.summary(), view=self)

    @discord.ui.select(placeholder="Choose your race",
                       options=[discord.SelectOption(label=r, value=r) for r in RACES])
    async def choose_race(self, interaction: discord.Interaction, select: discord.ui.Select):
        self.race = select.values[0]
        await interaction.response.edit_message(content=self.summary(), view=self)

    @discord.ui.select(placeholder="Veto up to two maps", min_values=0, max_values=2,
                       options=[discord.SelectOption(label=m, value=m) for m in MAPS])
    async def choose_vetoes(self, interaction: discord.Interaction, select: discord.ui.Select):
        self.vetoes = list(select.values)
        await interaction.response.edit_message(content=self.summary(), view=self)

    @discord.ui.button(label="Confirm", style=discord.ButtonStyle.success)
    async def confirm(self, interaction: discord.Interaction, button: discord.ui.Button):
        await self.bot.writer.upsert_preferences_1v1(interaction.user.id, self.race, self.vetoes)
        if self.country:
            await self.bot.writer.set_country(interaction.user.id, self.country)
        self.stop()
        await interaction.response.edit_message(content="Setup complete.\n" + self.summary(), view=None)

    @discord.ui.button(label="Cancel", style=discord.ButtonStyle.secondary)
    async def cancel(self, interaction: discord.Interaction, button: discord.ui.Button):
        self.stop()
        await interaction.response.edit_message(content="Setup cancelled.", view=None)


class QueueView(discord.ui.View):
    def __init__(self, bot, player, preferences):
        super().__init__(timeout=600)
        self.bot, self.player, self.preferences = bot, player, preferences

    @discord.ui.button(label="Join queue", style=discord.ButtonStyle.primary)
    async def join(self, interaction: discord.Interaction, button: discord.ui.Button):
        mm = self.bot.matchmaker
        race = self.preferences["race"] if self.preferences else "Random"
        added = mm.enqueue(QueueEntry(interaction.user.id, self.player["mmr"], race, interaction.channel_id))
        pos = mm.position(interaction.user.id)
        text = f"You are in the 1v1 queue as {race} (position {pos})." if added else f"Already queued (position {pos})."
        await interaction.response.edit_message(content=text, view=self)

    @discord.ui.button(label="Leave queue", style=discord.ButtonStyle.danger)
    async def leave(self, interaction: discord.Interaction, button: discord.ui.Button):
        left = self.bot.matchmaker.dequeue(interaction.user.id)
        await interaction.response.edit_message(content="You left the queue." if left else "You were not queued.",
                                                view=None)


class LeaderboardView(discord.ui.View):
    def __init__(self, bot, page: int, pages: int):
        super().__init__(timeout=300)
        self.bot, self.page, self.pages = bot, page, pages

    async def _show(self, interaction: discord.Interaction):
        rows = await self.bot.reader.get_leaderboard_data(self.page)
        await interaction.response.edit_message(embed=leaderboard_embed(rows, self.page, self.pages), view=self)

    @discord.ui.button(label="Previous")
    async def previous(self, interaction: discord.Interaction, button: discord.ui.Button):
        self.page = max(1, self.page - 1)
        await self._show(interaction)

    @discord.ui.button(label="Next")
    async def next(self, interaction: discord.Interaction, button: discord.ui.Button):
        self.page = min(self.pages, self.page + 1)
        await self._show(interaction)


class ActivateModal(discord.ui.Modal, title="Activate your ladder account"):
    code = discord.ui.TextInput(label="Activation code", custom_id="activate:code", min_length=4, max_length=32)

    def __init__(self, bot):
        super().__init__()
        self.bot = bot

    async def on_submit(self, interaction: discord.Interaction):
        ok = await self.bot.writer.activate_player(interaction.user.id, self.code.value.strip().upper())
        text = "Your account is activated — welcome to the ladder!" if ok else "That code is not valid."
        await interaction.response.send_message(text, ephemeral=True)


class TosView(discord.ui.View):
    def __init__(self, bot):
        super().__init__(timeout=300)
        self.bot = bot

    @discord.ui.button(label="I accept", style=discord.ButtonStyle.success)
    async def accept(self, interaction: discord.Interaction, button: discord.ui.Button):
        await self.bot.writer.accept_tos(interaction.user.id)
        await interaction.response.edit_message(content="Thanks — you accepted the terms of service.", view=None)
