"""The simulation in its own process (see handles.start_in_process). Internal protocol on stdin/stdout:
length-prefixed pickles. Parent -> child: config dict, then ("stop",) at any time (EOF = stop).
Child -> parent: ("started", base_url) | ("start_failed", repr) , ("report", SimReport), ("done", None)."""
from __future__ import annotations

import asyncio
import pickle
import struct
import sys
import threading
from typing import Any, BinaryIO, Optional


def write_frame(out: BinaryIO, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    out.write(struct.pack(">I", len(data)) + data)
    out.flush()


def read_frame(inp: BinaryIO) -> Optional[Any]:
    head = inp.read(4)
    if len(head) < 4:
        return None
    (n,) = struct.unpack(">I", head)
    data = inp.read(n)
    if len(data) < n:
        return None
    return pickle.loads(data)


async def _amain(cfg: dict, inp: BinaryIO, out: BinaryIO) -> None:
    from autoperf.discord_sim.driver import Simulation

    sim = Simulation(cfg["scenario"], host=cfg["host"], port=cfg["port"], ready_timeout=cfg["ready_timeout"])
    try:
        base = await sim.start()
    except Exception as exc:
        write_frame(out, ("start_failed", f"{type(exc).__name__}: {exc}"))
        return
    loop = asyncio.get_running_loop()
    closed = asyncio.Event()

    def reader() -> None:
        while True:
            try:
                msg = read_frame(inp)
            except Exception:
                msg = None
            if msg is None or msg[0] == "stop":
                try:
                    loop.call_soon_threadsafe(sim.request_stop)
                except RuntimeError:
                    return
                if msg is None:
                    loop.call_soon_threadsafe(closed.set)
                    return
            elif msg[0] == "closed":
                loop.call_soon_threadsafe(closed.set)

    threading.Thread(target=reader, name="autoperf-discord-sim-stdin", daemon=True).start()
    write_frame(out, ("started", base))
    try:
        report = await sim.run()
        write_frame(out, ("report", report))
        try:   # the parent closes the bot's clients, then says so
            await asyncio.wait_for(closed.wait(), 5.0)
        except asyncio.TimeoutError:
            pass
    finally:
        await sim.close()
    write_frame(out, ("done", None))


def main() -> None:
    inp = sys.stdin.buffer
    out = sys.stdout.buffer
    sys.stdout = sys.stderr          # stray prints must not corrupt the protocol
    cfg = read_frame(inp)
    if cfg is None:
        return
    asyncio.run(_amain(cfg, inp, out))


if __name__ == "__main__":
    main()
