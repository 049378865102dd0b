"""A small asyncio service with no monitoring code in it.

``make demo`` runs it under ``python -m autoperf run``; examples/quickstart/autoperf.yaml says what
to measure: ``handle_command`` is a flow per call, ``ProfileStore.fetch_profile`` a DB query,
``score_replay`` a CPU job in a process pool.
"""
import asyncio
import random
import sqlite3
import sys
import tempfile
import os
from concurrent.futures import ProcessPoolExecutor


class ProfileStore:
    """A tiny sqlite3 'database adapter' (a stand-in for asyncpg in the real bot)."""

    def __init__(self, path):
        self.path = path
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE IF NOT EXISTS players (id INTEGER PRIMARY KEY, name TEXT, mmr INTEGER)")
            db.executemany("INSERT OR REPLACE INTO players VALUES (?, ?, ?)",
                           [(i, f"player{i}", 1000 + i * 7 % 400) for i in range(200)])

    def fetch_profile(self, query, params):
        with sqlite3.connect(self.path) as db:
            return db.execute(query, params).fetchone()


def score_replay(seed: int) -> int:
    """CPU work: 'parse' a replay."""
    rng = random.Random(seed)
    return sum(rng.randrange(1000) for _ in range(200_000)) % 997


async def handle_command(user_id: int, store: ProfileStore, pool: ProcessPoolExecutor):
    loop = asyncio.get_running_loop()
    profile = await loop.run_in_executor(None, store.fetch_profile,
                                         "SELECT name, mmr FROM players WHERE id = ?", (user_id,))
    score = await loop.run_in_executor(pool, score_replay, user_id)
    await asyncio.sleep(random.uniform(0.005, 0.03))  # 'send the response'
    return profile, score


async def main(users: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = ProfileStore(os.path.join(tmp, "ladder.db"))
        with ProcessPoolExecutor(max_workers=2) as pool:
            results = await asyncio.gather(*(handle_command(u, store, pool) for u in range(users)))
    print(f"handled {len(results)} commands")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 20))
