"""The .ladrep replay format and its parser (CPU-bound: runs in a ProcessPoolExecutor).

A replay is UTF-8 text::

    LADREP 1
    map Goldenaura
    player 1 800000000000000001 Terran
    player 2 800000000000000002 Zerg
    duration 742
    e <tick> <player> <action> <x> <y>        (one line per game event, thousands of them)
    ...
    checksum <sha256 hex of every line above>

Parsing checks the checksum, replays every event through a small economy/army simulation to
work out APM, supply and the winner, and returns a plain dict (picklable).

    python -m ladder.replays gen OUT.ladrep [--events N] [--seed S]   # write a sample replay
"""
from __future__ import annotations

import hashlib
import random
import sys

ACTIONS = ("move", "attack", "build", "train", "research", "gather", "ability")
ACTION_COST = {"build": 150, "train": 50, "research": 100}


class ReplayError(ValueError):
    """The file is not a valid .ladrep replay."""


def parse_replay(data: bytes) -> dict:
    """Parse and simulate a replay; raises ReplayError for a damaged file."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ReplayError(f"not UTF-8: {exc}") from None
    lines = text.splitlines()
    if not lines or lines[0] != "LADREP 1":
        raise ReplayError("missing LADREP 1 header")
    if not lines[-1].startswith("checksum "):
        raise ReplayError("missing checksum")
    body = "\n".join(lines[:-1]).encode()
    digest = hashlib.sha256(body).hexdigest()
    if digest != lines[-1].split(" ", 1)[1].strip():
        raise ReplayError("checksum mismatch")
    header = {"players": {}}
    events = []
    for line in lines[1:-1]:
        kind, _, rest = line.partition(" ")
        if kind == "e":
            tick, player, action, x, y = rest.split(" ")
            events.append((int(tick), int(player), action, int(x), int(y)))
        elif kind == "player":
            slot, uid, race = rest.split(" ")
            header["players"][int(slot)] = {"uid": int(uid), "race": race}
        elif kind == "map":
            header["map"] = rest
        elif kind == "duration":
            header["duration_s"] = int(rest)
    if len(header["players"]) != 2:
        raise ReplayError("a 1v1 replay has two players")
    return _simulate(header, events, digest)


def _simulate(header: dict, events: list, digest: str) -> dict:
    # Each player's economy and army on a 64x64 grid: real work per event.
    minerals = {1: 50, 2: 50}
    supply = {1: 12, 2: 12}
    army = {1: 0, 2: 0}
    actions = {1: 0, 2: 0}
    heat = [[0] * 64 for _ in range(64)]
    for tick, player, action, x, y in events:
        actions[player] += 1
        cx, cy = x % 64, y % 64
        row = heat[cy]
        row[cx] += 1
        if action == "gather":
            minerals[player] += 5 + (row[cx] & 3)
        elif action in ACTION_COST and minerals[player] >= ACTION_COST[action]:
            minerals[player] -= ACTION_COST[action]
            if action == "train":
                supply[player] += 2
                army[player] += 1
        elif action == "attack":
            # resolve the fight around the target square
            other = 3 - player
            pressure = sum(heat[(cy + dy) % 64][(cx + dx) % 64] for dy in (-1, 0, 1) for dx in (-1, 0, 1))
            if army[player] * 3 + (pressure & 7) > army[other] * 3 and army[other] > 0:
                army[other] -= 1
                supply[other] -= 2
    duration = max(1, header.get("duration_s") or (events[-1][0] // 22 if events else 1))
    apm = {p: int(actions[p] * 60 / duration) for p in (1, 2)}
    winner_slot = 1 if (army[1], supply[1], minerals[1]) >= (army[2], supply[2], minerals[2]) else 2
    return {
        "sha256": digest,
        "map": header.get("map", "unknown"),
        "duration_s": duration,
        "players": header["players"],
        "apm": apm,
        "winner_uid": header["players"][winner_slot]["uid"],
        "events": len(events),
    }


def generate(events: int = 20000, seed: int = 1, p1: int = 800000000000000001, p2: int = 800000000000000002,
             map_name: str = "Goldenaura") -> bytes:
    rng = random.Random(seed)
    lines = ["LADREP 1", f"map {map_name}", f"player 1 {p1} Terran", f"player 2 {p2} Zerg",
             f"duration {events // 25}"]
    tick = 0
    weights = (30, 15, 5, 10, 3, 30, 7)
    for _ in range(events):
        tick += rng.randint(0, 3)
        lines.append(f"e {tick} {rng.randint(1, 2)} {rng.choices(ACTIONS, weights)[0]} "
                     f"{rng.randint(0, 255)} {rng.randint(0, 255)}")
    body = "\n".join(lines)
    return (body + "\nchecksum " + hashlib.sha256(body.encode()).hexdigest() + "\n").encode()


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "gen":
        n = int(sys.argv[sys.argv.index("--events") + 1]) if "--events" in sys.argv else 20000
        s = int(sys.argv[sys.argv.index("--seed") + 1]) if "--seed" in sys.argv else 1
        with open(sys.argv[2], "wb") as fh:
            fh.write(generate(n, s))
    else:
        sys.exit("usage: python -m ladder.replays gen OUT.ladrep [--events N] [--seed S]")
