"""The discord integration alone, in one process (``bench_discord.py --inprocess``; running this
file directly does the same: ``python tests/bench/bench_discord_inprocess.py --repeat 3``).

The bot runs in this process's main thread (the loopback Discord in a thread), plain and with only the
discord integration patched (file sink, no targets), alternating. Reported per step: CPU time of the
bot's event-loop thread (the integration's wrappers run there) and of autoperf's writer thread
(turning records into JSON lines), the loop thread's GC pauses, and the autoperf objects still alive
(gc-tracked) when the scenario ends — what its buffers keep across interactions.
"""
from __future__ import annotations

import collections
import copy
import gc
import importlib
import json
import logging
import os
import statistics
import sys
import tempfile
import threading
import time

from bench_discord import BOT, ROOT

from autoperf.discord_sim import start_in_thread


def _thread_cpu(ident) -> float:
    try:
        return time.clock_gettime(time.pthread_getcpuclockid(ident))
    except (OSError, AttributeError, TypeError):
        return 0.0


def _writer_ident():
    return next((t.ident for t in threading.enumerate() if t.name == "autoperf-writer"), None)


def _autoperf_objects() -> collections.Counter:
    """gc-tracked objects whose type lives in autoperf (spans, per-interaction state...), not
    counting the loopback Discord's own (it runs in this process too)."""
    found = collections.Counter()
    for o in gc.get_objects():
        module = getattr(type(o), "__module__", None)   # some extension types have none
        if isinstance(module, str) and module.startswith("autoperf.") \
                and not module.startswith("autoperf.discord_sim"):
            found[type(o).__qualname__] += 1
    return found


def inprocess_once(patched: bool, scenario: dict, log_dir: str, options=None) -> dict:
    import discord

    from autoperf import bootstrap, integrations
    from autoperf.discord_sim import point_discord_at

    if patched:
        bootstrap.ensure_pipeline(log_dir=log_dir, console=False)
        integrations.patch("discord", discord, dict(options or {}))
    sys.path.insert(0, os.path.dirname(BOT))
    botmod = importlib.import_module("bot")
    main_ident = threading.main_thread().ident
    marks: dict = {}
    gc_stats = {"n": [0, 0, 0], "pause": 0.0, "max": 0.0, "collected": 0}
    gc_t0: dict = {}

    def on_finished(report):
        marks["loop1"] = _thread_cpu(main_ident)
        marks["w1"] = _thread_cpu(_writer_ident()) if _writer_ident() else 0.0
        marks["objects"] = _autoperf_objects()

    def mark_start():
        while handle.simulation is None or not handle.simulation.server.commands_synced.is_set():
            time.sleep(0.02)
        time.sleep(scenario.get("warmup_s", 1.0))
        marks["loop0"] = _thread_cpu(main_ident)
        marks["w0"] = _thread_cpu(_writer_ident()) if _writer_ident() else 0.0

    def on_gc(phase, info):
        if threading.get_ident() != main_ident or "loop0" not in marks or "loop1" in marks:
            return
        if phase == "start":
            gc_t0["t"] = time.perf_counter()
        elif "t" in gc_t0:
            d = time.perf_counter() - gc_t0.pop("t")
            gc_stats["pause"] += d
            gc_stats["max"] = max(gc_stats["max"], d)
            gc_stats["n"][info["generation"]] += 1
            gc_stats["collected"] += info["collected"]

    handle = start_in_thread(scenario, ready_timeout=60, on_finished=on_finished)
    point_discord_at(handle.base_url)
    threading.Thread(target=mark_start, daemon=True).start()
    gc.callbacks.append(on_gc)
    bot = botmod.LadderBot()
    try:
        bot.run("bench.token.value", log_handler=None)
    finally:
        gc.callbacks.remove(on_gc)
    report = handle.wait(60)
    if bot.embedded_pg is not None:
        bot.embedded_pg.stop()
    if patched:
        from autoperf import pipeline
        pipeline.flush()
        integrations.unpatch("discord")
    return {"steps": sum(1 for r in report.results if r.status != "skipped"),
            "loop_s": marks["loop1"] - marks["loop0"], "writer_s": marks["w1"] - marks["w0"],
            "gc_pause_s": gc_stats["pause"], "gc_max_s": gc_stats["max"], "gc_n": gc_stats["n"],
            "gc_collected": gc_stats["collected"], "objects": marks.get("objects", collections.Counter())}


def main(args, base) -> int:
    os.chdir(ROOT)
    logging.disable(logging.CRITICAL)   # the example's deliberate failures log tracebacks
    tmp = tempfile.mkdtemp(prefix="bench_discord_inproc_")
    res: dict = {False: [], True: []}
    for i in range(args.repeat):
        for patched in ((False, True) if i % 2 == 0 else (True, False)):
            scenario = copy.deepcopy(base)
            scenario["seed"] = 2000 + i
            gc.collect()
            r = inprocess_once(patched, scenario, tmp, json.loads(args.options))
            res[patched].append(r)
            print(f"  in-process round {i + 1} {'discord' if patched else 'plain':<8}: {r['steps']} steps, "
                  f"loop CPU {r['loop_s']:.3f} s, writer CPU {r['writer_s']:.3f} s", file=sys.stderr)

    def per_step(patched, key):
        return 1e6 * sum(r[key] for r in res[patched]) / max(1, sum(r["steps"] for r in res[patched]))

    plain_loop, traced_loop = per_step(False, "loop_s"), per_step(True, "loop_s")
    traced_writer = per_step(True, "writer_s")
    rounds = [(p["loop_s"] / max(1, p["steps"]), t["loop_s"] / max(1, t["steps"])) for p, t in zip(res[False], res[True])]
    print(f"\nin-process, discord integration only ({args.repeat} run(s) per mode)")
    print(f"{'':<34}{'plain':>10}{'discord':>10}{'ratio':>9}{'median':>9}")
    print(f"{'event-loop thread CPU us / step':<34}{plain_loop:>10.0f}{traced_loop:>10.0f}"
          f"{traced_loop / plain_loop:>8.3f}x{statistics.median(t / p for p, t in rounds):>8.3f}x")
    # A full collection (tens of ms) lands in either mode by chance: without GC pauses, less noise.
    plain_nogc = plain_loop - per_step(False, "gc_pause_s")
    traced_nogc = traced_loop - per_step(True, "gc_pause_s")
    def no_gc(r):
        return (r["loop_s"] - r["gc_pause_s"]) / max(1, r["steps"])
    rounds_nogc = [(no_gc(p), no_gc(t)) for p, t in zip(res[False], res[True])]
    print(f"{'  the same without GC pauses':<34}{plain_nogc:>10.0f}{traced_nogc:>10.0f}"
          f"{traced_nogc / plain_nogc:>8.3f}x{statistics.median(t / p for p, t in rounds_nogc):>8.3f}x")
    print(f"{'+ writer thread CPU us / step':<34}{'':>10}{traced_writer:>10.0f}"
          f"{(traced_loop + traced_writer) / plain_loop:>8.3f}x")
    gc_plain, gc_traced = per_step(False, "gc_pause_s"), per_step(True, "gc_pause_s")
    print(f"{'loop-thread GC pause us / step':<34}{gc_plain:>10.0f}{gc_traced:>10.0f}"
          f"{(gc_traced / gc_plain if gc_plain else float('nan')):>8.3f}x")
    for label, fn in (("gen 0 / 1 / 2 collections", lambda rs: "/".join(str(sum(r["gc_n"][g] for r in rs)) for g in range(3))),
                      ("cyclic garbage found / step", lambda rs: f"{sum(r['gc_collected'] for r in rs) / max(1, sum(r['steps'] for r in rs)):.1f}"),
                      ("longest GC pause ms", lambda rs: f"{1000 * max(r['gc_max_s'] for r in rs):.1f}")):
        print(f"{label:<34}{fn(res[False]):>10}{fn(res[True]):>10}")
    alive = sum((r["objects"] for r in res[True]), collections.Counter())
    print("autoperf objects alive at scenario end (sum over runs): "
          + (", ".join(f"{k} {v}" for k, v in alive.most_common(8)) or "none"))
    return 0


if __name__ == "__main__":
    import bench_discord
    sys.exit(bench_discord.main(["--inprocess", *sys.argv[1:]]))
