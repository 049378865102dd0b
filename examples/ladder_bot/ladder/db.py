"""The ladder's database: schema, seed data, and the reader / writer used by commands and the matchmaker."""
from __future__ import annotations

import logging
import random

import asyncpg

log = logging.getLogger("ladder.db")

SCHEMA = "evoladder"
SEED_PLAYERS = 300
FIRST_SIM_USER_ID = 800000000000000001   # the loopback Discord numbers its users from here
COUNTRIES = ["Argentina", "Australia", "Austria", "Belgium", "Brazil", "Canada", "Chile", "China", "Denmark",
             "Finland", "France", "Germany", "Greece", "India", "Ireland", "Italy", "Japan", "Korea", "Mexico",
             "Netherlands", "New Zealand", "Norway", "Poland", "Portugal", "Spain", "Sweden", "Switzerland",
             "Taiwan", "Ukraine", "United Kingdom", "United States", "Vietnam"]
RACES = ["Terran", "Zerg", "Protoss", "Random"]
MAPS = ["Alcyone", "Amphion", "Crimson Court", "Dynasty", "Ghost River", "Goldenaura", "Oceanborn", "Post-Youth"]
BETA_CODE = "EVO-BETA-2026"

DDL = f"""
CREATE SCHEMA IF NOT EXISTS {SCHEMA};
CREATE TABLE IF NOT EXISTS {SCHEMA}.players (
    discord_uid   bigint PRIMARY KEY,
    player_name   text NOT NULL,
    country       text,
    mmr           integer NOT NULL DEFAULT 1500,
    games         integer NOT NULL DEFAULT 0,
    wins          integer NOT NULL DEFAULT 0,
    losses        integer NOT NULL DEFAULT 0,
    activated     boolean NOT NULL DEFAULT false,
    accepted_tos  boolean NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS players_mmr_idx ON {SCHEMA}.players (mmr DESC);
CREATE TABLE IF NOT EXISTS {SCHEMA}.preferences_1v1 (
    discord_uid   bigint PRIMARY KEY REFERENCES {SCHEMA}.players,
    race          text NOT NULL DEFAULT 'Random',
    vetoed_maps   text[] NOT NULL DEFAULT '{{}}',
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS {SCHEMA}.matches_1v1 (
    id            bigserial PRIMARY KEY,
    player1_uid   bigint NOT NULL REFERENCES {SCHEMA}.players,
    player2_uid   bigint NOT NULL REFERENCES {SCHEMA}.players,
    player1_mmr   integer NOT NULL,
    player2_mmr   integer NOT NULL,
    map           text NOT NULL,
    winner_uid    bigint,
    mmr_change    integer,
    replay_url    text,
    played_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS matches_p1_idx ON {SCHEMA}.matches_1v1 (player1_uid, played_at DESC);
CREATE INDEX IF NOT EXISTS matches_p2_idx ON {SCHEMA}.matches_1v1 (player2_uid, played_at DESC);
CREATE TABLE IF NOT EXISTS {SCHEMA}.activation_codes (
    code          text PRIMARY KEY,
    uses_left     integer NOT NULL
);
CREATE TABLE IF NOT EXISTS {SCHEMA}.replays (
    id            bigserial PRIMARY KEY,
    uploader_uid  bigint NOT NULL,
    match_id      bigint,
    sha256        text NOT NULL,
    duration_s    integer NOT NULL,
    apm1          integer NOT NULL,
    apm2          integer NOT NULL,
    storage_url   text,
    uploaded_at   timestamptz NOT NULL DEFAULT now()
);
"""


async def create_pool(dsn: str) -> asyncpg.Pool:
    return await asyncpg.create_pool(dsn, min_size=2, max_size=10,
                                     server_settings={"search_path": f"{SCHEMA},public"})


async def ensure_schema(pool: asyncpg.Pool) -> None:
    """Create the schema and seed a few hundred players when the database is empty."""
    async with pool.acquire() as conn:
        await conn.execute(DDL)
        count = await conn.fetchval(f"SELECT count(*) FROM {SCHEMA}.players")
        if count:
            return
        rng = random.Random(2026)
        players = []
        for i in range(SEED_PLAYERS):
            uid = FIRST_SIM_USER_ID + i
            wins, losses = rng.randint(0, 120), rng.randint(0, 120)
            # Every 7th player has never set a country; a few (beyond the first 96) are not activated
            # or have not accepted the ToS.
            newcomer = i >= 96
            players.append((uid, f"user{i + 1}", None if i % 7 == 3 else rng.choice(COUNTRIES),
                            int(rng.gauss(1500, 250)), wins + losses, wins, losses,
                            not (newcomer and i % 5 == 4), not (newcomer and i % 11 == 5)))
        await conn.copy_records_to_table("players", schema_name=SCHEMA, records=players,
                                         columns=["discord_uid", "player_name", "country", "mmr", "games", "wins",
                                                  "losses", "activated", "accepted_tos"])
        prefs = [(FIRST_SIM_USER_ID + i, rng.choice(RACES), rng.sample(MAPS, 2)) for i in range(0, SEED_PLAYERS, 2)]
        await conn.copy_records_to_table("preferences_1v1", schema_name=SCHEMA, records=prefs,
                                         columns=["discord_uid", "race", "vetoed_maps"])
        matches = []
        for _ in range(SEED_PLAYERS * 4):
            a, b = rng.sample(range(SEED_PLAYERS), 2)
            if a % 13 == 0 or b % 13 == 0:
                continue    # a few players have never played
            matches.append((FIRST_SIM_USER_ID + a, FIRST_SIM_USER_ID + b, 1500, 1500, rng.choice(MAPS),
                            FIRST_SIM_USER_ID + rng.choice((a, b)), rng.randint(8, 24)))
        await conn.copy_records_to_table("matches_1v1", schema_name=SCHEMA, records=matches,
                                         columns=["player1_uid", "player2_uid", "player1_mmr", "player2_mmr", "map",
                                                  "winner_uid", "mmr_change"])
        await conn.execute(f"INSERT INTO {SCHEMA}.activation_codes VALUES ($1, 1000000) ON CONFLICT DO NOTHING",
                           BETA_CODE)
        await conn.execute(f"ANALYZE {SCHEMA}.players; ANALYZE {SCHEMA}.matches_1v1")
        log.info("seeded %d players and %d matches", len(players), len(matches))


class DatabaseReader:
    """Read-only queries (seed plan 4.2 budgets in autoperf.yaml)."""

    def __init__(self, pool: asyncpg.Pool):
        self.pool = pool

    async def get_player_by_discord_uid(self, discord_uid: int):
        return await self.pool.fetchrow("SELECT * FROM players WHERE discord_uid = $1", discord_uid)

    async def get_preferences_1v1(self, discord_uid: int):
        return await self.pool.fetchrow("SELECT race, vetoed_maps FROM preferences_1v1 WHERE discord_uid = $1",
                                        discord_uid)

    async def get_leaderboard_data(self, page: int, per_page: int = 10):
        return await self.pool.fetch(
            """SELECT discord_uid, player_name, country, mmr, wins, losses,
                      rank() OVER (ORDER BY mmr DESC) AS rank
                 FROM players WHERE activated ORDER BY mmr DESC LIMIT $1 OFFSET $2""",
            per_page, max(0, page - 1) * per_page)

    async def count_ranked_players(self) -> int:
        return await self.pool.fetchval("SELECT count(*) FROM players WHERE activated")

    async def get_match_1v1(self, match_id: int):
        return await self.pool.fetchrow("SELECT * FROM matches_1v1 WHERE id = $1", match_id)

    async def get_recent_matches(self, discord_uid: int, limit: int = 5):
        return await self.pool.fetch(
            """SELECT id, player1_uid, player2_uid, map, winner_uid, mmr_change, played_at FROM matches_1v1
                WHERE player1_uid = $1 OR player2_uid = $1 ORDER BY played_at DESC LIMIT $2""", discord_uid, limit)

    async def get_last_match_for(self, discord_uid: int):
        return await self.pool.fetchrow(
            """SELECT * FROM matches_1v1 WHERE player1_uid = $1 OR player2_uid = $1
                ORDER BY played_at DESC LIMIT 1""", discord_uid)

    async def search_countries(self, prefix: str, limit: int = 25):
        rows = await self.pool.fetch(
            """SELECT country, count(*) AS n FROM players WHERE country ILIKE $1 || '%'
                GROUP BY country ORDER BY n DESC, country LIMIT $2""", prefix, limit)
        known = [r["country"] for r in rows]
        return known + [c for c in COUNTRIES if c.lower().startswith(prefix.lower()) and c not in known][: limit - len(known)]

    async def get_season_stats(self, cold: bool):
        """Per-map win rates for the season. A cold cache recomputes over the whole history (slow)."""
        if cold:
            await self.pool.execute("SELECT pg_sleep(3.2)")   # stands in for the unindexed full recompute
        return await self.pool.fetch(
            """SELECT map, count(*) AS games, avg(mmr_change)::float AS avg_change
                 FROM matches_1v1 GROUP BY map ORDER BY games DESC""")


class DatabaseWriter:
    """Writes."""

    def __init__(self, pool: asyncpg.Pool):
        self.pool = pool

    async def upsert_preferences_1v1(self, discord_uid: int, race: str, vetoed_maps: list[str]):
        await self.pool.execute(
            """INSERT INTO preferences_1v1 (discord_uid, race, vetoed_maps) VALUES ($1, $2, $3)
               ON CONFLICT (discord_uid) DO UPDATE SET race = excluded.race, vetoed_maps = excluded.vetoed_maps,
                                                       updated_at = now()""", discord_uid, race, vetoed_maps)

    async def set_country(self, discord_uid: int, country: str):
        return await self.pool.execute("UPDATE players SET country = $2 WHERE discord_uid = $1", discord_uid, country)

    async def accept_tos(self, discord_uid: int):
        await self.pool.execute("UPDATE players SET accepted_tos = true WHERE discord_uid = $1", discord_uid)

    async def activate_player(self, discord_uid: int, code: str) -> bool:
        async with self.pool.acquire() as conn:
            async with conn.transaction():
                left = await conn.fetchval(
                    "UPDATE activation_codes SET uses_left = uses_left - 1 WHERE code = $1 AND uses_left > 0 "
                    "RETURNING uses_left", code)
                if left is None:
                    return False
                await conn.execute("UPDATE players SET activated = true WHERE discord_uid = $1", discord_uid)
                return True

    async def insert_match_result(self, p1: int, p2: int, mmr1: int, mmr2: int, map_name: str,
                                  winner: int, change: int) -> int:
        return await self.pool.fetchval(
            """INSERT INTO matches_1v1 (player1_uid, player2_uid, player1_mmr, player2_mmr, map, winner_uid, mmr_change)
               VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id""", p1, p2, mmr1, mmr2, map_name, winner, change)

    async def update_player_mmr(self, discord_uid: int, delta: int, won: bool):
        await self.pool.execute(
            """UPDATE players SET mmr = mmr + $2, games = games + 1,
                      wins = wins + CASE WHEN $3 THEN 1 ELSE 0 END, losses = losses + CASE WHEN $3 THEN 0 ELSE 1 END
                WHERE discord_uid = $1""", discord_uid, delta, won)

    async def insert_replay(self, uploader: int, match_id, sha: str, duration: int, apm1: int, apm2: int, url: str):
        return await self.pool.fetchval(
            """INSERT INTO replays (uploader_uid, match_id, sha256, duration_s, apm1, apm2, storage_url)
               VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id""", uploader, match_id, sha, duration, apm1, apm2, url)
