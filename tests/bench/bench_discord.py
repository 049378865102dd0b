"""Overhead of autoperf on the example ladder bot, as its users see it.

    .venv/bin/python tests/bench/bench_discord.py [--rate 20] [--duration 20] [--repeat 2]

The loopback Discord runs in this process and plays the demo scenario (examples/ladder_bot/
scenario.yaml) at a fixed rate; the bot runs in a subprocess, once as plain ``python`` and once under
``python -m autoperf run`` (top-level autoperf.yaml: every integration and target on), alternating,
``--repeat`` times each. Reported per mode: first-response p50/p95/p99 over every interaction step
(what users wait for) and the bot's CPU time per step (the bot process and its replay workers,
measured with psutil between the end of warm-up and the end of the scenario; the sim is not counted).

``--inprocess`` measures the discord integration alone, without the noise of two processes: the bot
runs in this process's main thread (the sim in a thread), plain and with only the discord integration
patched (file sink, no targets); it reports the CPU time of the bot's event-loop thread per step (the
integration's wrappers) and of autoperf's writer thread per step (turning its records into JSON lines).
"""
from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import psutil
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from autoperf.discord_sim import start_in_thread  # noqa: E402
from autoperf.discord_sim.report import percentile  # noqa: E402

BOT = os.path.join(ROOT, "examples", "ladder_bot", "bot.py")
SCENARIO = os.path.join(ROOT, "examples", "ladder_bot", "scenario.yaml")
LAUNCHER = """\
import os, runpy, sys
url, bot = sys.argv[1], sys.argv[2]
import discord
from autoperf.discord_sim import point_discord_at
point_discord_at(url)
sys.argv = [bot]
sys.path.insert(0, os.path.dirname(os.path.abspath(bot)))
runpy.run_path(bot, run_name="__main__")
"""


def _cpu(proc: psutil.Process) -> float:
    """CPU seconds of the bot process and its live children (replay workers)."""
    total = 0.0
    try:
        t = proc.cpu_times()
        total += t.user + t.system + t.children_user + t.children_system
        for child in proc.children(recursive=True):
            try:
                c = child.cpu_times()
                total += c.user + c.system
            except psutil.Error:
                pass
    except psutil.Error:
        pass
    return total


def run_once(mode: str, scenario: dict, launcher: str, log_dir: str, extra=()) -> dict:
    handle = start_in_thread(scenario, ready_timeout=60, close_clients=False)
    env = dict(os.environ, DISCORD_TOKEN="bench.token.value", AUTOPERF_CONSOLE="0")
    cmd = [sys.executable, launcher, handle.base_url, BOT]
    if mode == "autoperf":
        cmd = [sys.executable, "-m", "autoperf", "run", "--log-dir", log_dir, *extra, launcher, handle.base_url, BOT]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    ps = psutil.Process(proc.pid)
    sim = None
    while sim is None or not sim.server.commands_synced.is_set():
        if proc.poll() is not None:
            raise RuntimeError(f"{mode}: the bot exited early:\n{proc.stderr.read()[-2000:]}")
        sim = handle.simulation
        time.sleep(0.05)
    time.sleep(scenario.get("warmup_s", 1.0))
    cpu0, t0 = _cpu(ps), time.monotonic()
    report = handle.wait(scenario["duration_s"] + scenario.get("grace_s", 5) + 60)
    cpu1, t1 = _cpu(ps), time.monotonic()
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if report is None or report.error:
        raise RuntimeError(f"{mode}: {report and report.error}")
    firsts = [r.first_ms for r in report.results if r.first_ms is not None and r.status != "skipped"]
    steps = sum(1 for r in report.results if r.status != "skipped")
    bad = sum(1 for r in report.results if r.status in ("timeout", "error"))
    return {"mode": mode, "first_ms": firsts, "steps": steps, "bad": bad, "cpu_s": cpu1 - cpu0, "wall_s": t1 - t0}


def _thread_cpu(ident) -> float:
    try:
        return time.clock_gettime(time.pthread_getcpuclockid(ident))
    except (OSError, AttributeError):
        return 0.0


def inprocess_once(patched: bool, scenario: dict, log_dir: str, options=None) -> dict:
    import threading

    import discord
    from autoperf import bootstrap, integrations
    from autoperf.discord_sim import point_discord_at

    if patched:
        bootstrap.ensure_pipeline(log_dir=log_dir, console=False)
        integrations.patch("discord", discord, dict(options or {}))
    sys.path.insert(0, os.path.dirname(BOT))
    import importlib
    botmod = importlib.import_module("bot")
    main_ident = threading.main_thread().ident
    marks = {}

    def writer_ident():
        return next((t.ident for t in threading.enumerate() if t.name == "autoperf-writer"), None)

    def on_finished(report):
        marks["loop1"], marks["w1"] = _thread_cpu(main_ident), _thread_cpu(writer_ident()) if writer_ident() else 0.0

    handle = start_in_thread(scenario, ready_timeout=60, on_finished=on_finished)
    point_discord_at(handle.base_url)

    def mark_start():
        while handle.simulation is None or not handle.simulation.server.commands_synced.is_set():
            time.sleep(0.02)
        time.sleep(scenario.get("warmup_s", 1.0))
        marks["loop0"], marks["w0"] = _thread_cpu(main_ident), _thread_cpu(writer_ident()) if writer_ident() else 0.0

    threading.Thread(target=mark_start, daemon=True).start()
    gc_stats = {"pause": 0.0, "full": 0, "max": 0.0}
    gc_start = {}

    def on_gc(phase, info):
        if threading.get_ident() != main_ident or "loop0" not in marks or "loop1" in marks:
            return
        if phase == "start":
            gc_start["t"] = time.perf_counter()
        elif "t" in gc_start:
            d = time.perf_counter() - gc_start.pop("t")
            gc_stats["pause"] += d
            gc_stats["max"] = max(gc_stats["max"], d)
            gc_stats["full"] += info["generation"] == 2

    gc.callbacks.append(on_gc)
    bot = botmod.LadderBot()
    try:
        bot.run("bench.token.value", log_handler=None)
    finally:
        gc.callbacks.remove(on_gc)
    tracked = len(gc.get_objects())
    report = handle.wait(60)
    if bot.embedded_pg is not None:
        bot.embedded_pg.stop()
    if patched:
        from autoperf import pipeline
        pipeline.flush()
        integrations.unpatch("discord")
    steps = sum(1 for r in report.results if r.status != "skipped")
    return {"steps": steps, "loop_s": marks["loop1"] - marks["loop0"], "writer_s": marks["w1"] - marks["w0"],
            "gc_pause_s": gc_stats["pause"], "gc_max_s": gc_stats["max"], "gc_full": gc_stats["full"],
            "tracked": tracked}


def inprocess_table(args, base) -> None:
    tmp = tempfile.mkdtemp(prefix="bench_discord_inproc_")
    res = {False: [], True: []}
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

    plain_loop, traced_loop, traced_writer = per_step(False, "loop_s"), per_step(True, "loop_s"), per_step(True, "writer_s")
    print(f"\nin-process, discord integration only ({args.repeat} run(s) per mode)")
    print(f"{'':<34}{'plain':>10}{'discord':>10}{'ratio':>9}")
    print(f"{'event-loop thread CPU us / step':<34}{plain_loop:>10.0f}{traced_loop:>10.0f}{traced_loop / plain_loop:>8.3f}x")
    print(f"{'+ writer thread CPU us / step':<34}{'':>10}{traced_writer:>10.0f}"
          f"{(traced_loop + traced_writer) / plain_loop:>8.3f}x")
    gc_plain, gc_traced = per_step(False, "gc_pause_s"), per_step(True, "gc_pause_s")
    print(f"{'loop-thread GC pause us / step':<34}{gc_plain:>10.0f}{gc_traced:>10.0f}"
          f"{(gc_traced / gc_plain if gc_plain else float('nan')):>8.3f}x")
    for key, label in (("gc_full", "full (gen 2) collections"), ("gc_max_s", "longest GC pause ms")):
        a = sum(r[key] for r in res[False]) if key == "gc_full" else 1000 * max(r[key] for r in res[False])
        b = sum(r[key] for r in res[True]) if key == "gc_full" else 1000 * max(r[key] for r in res[True])
        print(f"{label:<34}{a:>10.1f}{b:>10.1f}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=20.0, help="flows started per second")
    ap.add_argument("--duration", type=float, default=20.0, help="seconds of load per run")
    ap.add_argument("--repeat", type=int, default=2, help="runs per mode (alternating)")
    ap.add_argument("--disable", action="append", default=[],
                    help="passed to `autoperf run --disable` (an integration or target name; repeatable)")
    ap.add_argument("--inprocess", action="store_true", help="measure the discord integration alone, in-process")
    ap.add_argument("--options", default="{}", help="--inprocess: discord integration options as JSON")
    args = ap.parse_args(argv)
    with open(SCENARIO) as fh:
        base = yaml.safe_load(fh)
    base.update(rate=args.rate, duration_s=args.duration, warmup_s=1.0, grace_s=8)
    if args.inprocess:
        os.chdir(ROOT)
        inprocess_table(args, base)
        return 0
    tmp = tempfile.mkdtemp(prefix="bench_discord_")
    launcher = os.path.join(tmp, "launch_bot.py")
    with open(launcher, "w") as fh:
        fh.write(LAUNCHER)
    results = {"plain": [], "autoperf": []}
    for i in range(args.repeat):
        for mode in (("plain", "autoperf") if i % 2 == 0 else ("autoperf", "plain")):
            scenario = copy.deepcopy(base)
            scenario["seed"] = 1000 + i      # same arrivals for both modes of a round
            gc.collect()
            extra = [x for name in args.disable for x in ("--disable", name)]
            res = run_once(mode, scenario, launcher, os.path.join(tmp, f"logs_{mode}_{i}"), extra)
            results[mode].append(res)
            print(f"  round {i + 1} {mode:<8}: {res['steps']} steps, {res['bad']} timeouts/errors, "
                  f"p95 {percentile(res['first_ms'], 95):.1f} ms, CPU {res['cpu_s']:.2f} s", file=sys.stderr)

    def summary(mode):
        firsts = [v for r in results[mode] for v in r["first_ms"]]
        steps = sum(r["steps"] for r in results[mode])
        cpu = sum(r["cpu_s"] for r in results[mode])
        return {"p50": percentile(firsts, 50), "p95": percentile(firsts, 95), "p99": percentile(firsts, 99),
                "cpu_ms_per_step": 1000.0 * cpu / max(1, steps), "steps": steps}

    plain, traced = summary("plain"), summary("autoperf")
    print(f"\nladder bot, demo scenario at {args.rate:g} flows/s for {args.duration:g} s, {args.repeat} run(s) per mode")
    print(f"{'':<24}{'plain':>12}{'autoperf':>12}{'ratio':>9}")
    for key, label in (("p50", "first response p50 ms"), ("p95", "first response p95 ms"),
                       ("p99", "first response p99 ms"), ("cpu_ms_per_step", "bot CPU ms / step")):
        ratio = traced[key] / plain[key] if plain[key] else float("nan")
        print(f"{label:<24}{plain[key]:>12.2f}{traced[key]:>12.2f}{ratio:>8.3f}x")
    print(f"{'steps measured':<24}{plain['steps']:>12}{traced['steps']:>12}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
