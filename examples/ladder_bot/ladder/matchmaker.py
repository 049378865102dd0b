"""Matchmaking: players wait in a queue; every few seconds a cycle pairs them by MMR and records matches."""
from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, field

log = logging.getLogger("ladder.matchmaker")


@dataclass
class QueueEntry:
    discord_uid: int
    mmr: int
    race: str
    channel_id: int | None
    joined_at: float = field(default_factory=time.monotonic)


@dataclass
class Match:
    match_id: int
    player1: int
    player2: int
    map: str
    winner: int
    mmr_change: int


class Matchmaker:
    """``run_cycle()`` pairs queued players whose MMR differs by at most a window that widens with waiting."""

    BASE_WINDOW = 150
    WINDOW_GROWTH_PER_S = 50

    def __init__(self, reader, writer, notify=None, interval_s: float = 2.0, seed: int = 7):
        self.reader, self.writer = reader, writer
        self.notify = notify          # async callable(match, entry1, entry2)
        self.interval_s = interval_s
        self.queue: dict[int, QueueEntry] = {}
        self.rng = random.Random(seed)
        self.is_running = False
        self._task: asyncio.Task | None = None
        self.matches_total = 0

    def enqueue(self, entry: QueueEntry) -> bool:
        if entry.discord_uid in self.queue:
            return False
        self.queue[entry.discord_uid] = entry
        return True

    def dequeue(self, discord_uid: int) -> bool:
        return self.queue.pop(discord_uid, None) is not None

    def position(self, discord_uid: int) -> int | None:
        for i, uid in enumerate(self.queue):
            if uid == discord_uid:
                return i + 1
        return None

    def start(self) -> None:
        self.is_running = True
        self._task = asyncio.create_task(self.run(), name="matchmaker")

    async def stop(self) -> None:
        self.is_running = False
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass

    async def run(self) -> None:
        while self.is_running:
            await asyncio.sleep(self.interval_s)
            try:
                await self.run_cycle()
            except Exception:
                log.exception("matchmaking cycle failed")

    def _pairs(self) -> list[tuple[QueueEntry, QueueEntry]]:
        now = time.monotonic()
        waiting = sorted(self.queue.values(), key=lambda e: e.mmr)
        pairs, used = [], set()
        for a, b in zip(waiting, waiting[1:]):
            if a.discord_uid in used or b.discord_uid in used:
                continue
            waited = now - min(a.joined_at, b.joined_at)
            if abs(a.mmr - b.mmr) <= self.BASE_WINDOW + self.WINDOW_GROWTH_PER_S * waited:
                pairs.append((a, b))
                used.update((a.discord_uid, b.discord_uid))
        return pairs

    async def run_cycle(self) -> list[Match]:
        """One matchmaking pass: returns the matches it made."""
        from ladder.db import MAPS

        made = []
        for a, b in self._pairs():
            self.queue.pop(a.discord_uid, None)
            self.queue.pop(b.discord_uid, None)
            # expected score from MMR; the "played" result is drawn from it
            expected = 1 / (1 + 10 ** ((b.mmr - a.mmr) / 400))
            a_wins = self.rng.random() < expected
            change = max(4, int(round(32 * ((1 - expected) if a_wins else expected))))
            winner = a.discord_uid if a_wins else b.discord_uid
            map_name = self.rng.choice(MAPS)
            match_id = await self.writer.insert_match_result(a.discord_uid, b.discord_uid, a.mmr, b.mmr, map_name,
                                                             winner, change)
            await self.writer.update_player_mmr(a.discord_uid, change if a_wins else -change, a_wins)
            await self.writer.update_player_mmr(b.discord_uid, -change if a_wins else change, not a_wins)
            match = Match(match_id, a.discord_uid, b.discord_uid, map_name, winner, change)
            made.append(match)
            if self.notify is not None:
                try:
                    await self.notify(match, a, b)
                except Exception:
                    log.exception("could not announce match %s", match_id)
        self.matches_total += len(made)
        return made
