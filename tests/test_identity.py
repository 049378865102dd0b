"""Every record names its host and process start (``instance_id``), across forked and spawned workers."""
from __future__ import annotations

import collections
import socket

import orjson

from tests.runs import Run

PROGRAM = """
import asyncio, multiprocessing, sys
from concurrent.futures import ProcessPoolExecutor
from jobs import work

async def handle(pool, n):
    return await asyncio.get_running_loop().run_in_executor(pool, work, n)

async def main():
    ctx = multiprocessing.get_context(sys.argv[1])
    with ProcessPoolExecutor(2, mp_context=ctx) as pool:
        for n in range(6):
            await handle(pool, 10_000 + n)

if __name__ == "__main__":
    asyncio.run(main())
"""
CONFIG = """
targets:
  - {target: "prog:handle", kind: flow}
  - {target: "jobs:work"}
"""


def _instances(records):
    by_pid = collections.defaultdict(set)
    for rec in records:
        by_pid[rec["pid"]].add(rec["instance_id"])
    return by_pid


def test_forked_and_spawned_workers_have_their_own_instance_id(tmp_path):
    """Each process (the program, its forked or spawned workers) has one instance id of its own; all name the host."""
    for method in ("fork", "spawn"):
        run = Run(tmp_path / method, PROGRAM, CONFIG)
        (run.dir / "jobs.py").write_text("def work(n):\n    return sum(range(n))\n")
        run.start(method)
        # every file of the directory: under tail retention a worker may write only metrics records
        records = [orjson.loads(line) for path in sorted(run.log_dir.glob("*.log"))
                   for line in path.read_bytes().splitlines() if line.strip()]
        assert records and all(r["host"] == socket.gethostname() for r in records)
        by_pid = _instances(records)
        assert len(by_pid) >= 2, (method, by_pid)          # the program and at least one worker wrote
        assert all(len(ids) == 1 for ids in by_pid.values()), (method, by_pid)
        ids = [next(iter(v)) for v in by_pid.values()]
        assert len(set(ids)) == len(ids) and all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
        assert not any("shard_ids" in r for r in records)   # no Discord gateway: no shard
