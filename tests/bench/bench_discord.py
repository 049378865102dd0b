"""Overhead of autoperf on the example ladder bot, as its users see it.

    .venv/bin/python tests/bench/bench_discord.py [--rate 20] [--duration 20] [--repeat 3]
        [--disable NAME ...] [--no-targets] [--inprocess [--options JSON]]

The loopback Discord runs in this process and plays the demo scenario (examples/ladder_bot/
scenario.yaml) at a fixed rate; the bot runs in a subprocess, once as plain ``python`` and once under
``python -m autoperf run`` (top-level autoperf.yaml: every integration and target on), alternating,
``--repeat`` times each, same arrivals per round. The table gives, per mode:

- first-response p50/p95/p99 over every interaction step (what users wait for), pooled over rounds;
- bot CPU per step between the end of warm-up and the end of the scenario (the sim is not counted),
  split into the event-loop (main) thread, the bot's other threads (autoperf's writer and sampler,
  discord.py's keep-alive, executors) and the replay worker processes;
- the other threads' CPU by thread name (autoperf's writer, sampler and loop watchdog; discord.py's and
  the executors' threads), from the names the launcher reports;
- garbage collection in the bot's main thread over the same window (collections per generation,
  pause time, cyclic garbage found) — measured by the launcher through ``gc.callbacks``;
- the ratio of the two modes, and the median of the per-round ratios (robust to a noisy round);
- the simulator's own CPU over the same window (its thread in this process: server + driver), per
  step and as a share of the bot's, with the interactions per second it played: the simulator must
  not be the bottleneck it measures.

Under autoperf, ``records per step`` counts what the run wrote, by record type and span kind.
``--disable`` (repeatable) passes ``autoperf run --disable NAME`` (an integration, a target, or
``stats``/``alerts``/``store``) and ``--no-targets`` runs autoperf.yaml without its targets: together
they attribute the overhead to components.

``--export prometheus`` compares autoperf with ``export: prometheus:`` on (its /metrics fetched every
``--scrape-s`` by this process, as Prometheus would) against autoperf without it: the "plain" column
is then autoperf without export. ``--export otlp`` sends OTLP to a receiver in a child process that
answers 200 and discards; ``--export otlp,prometheus`` both. ``--export none`` runs autoperf without
export in both columns: the noise between identical rounds (an A/A comparison).

``--inprocess`` measures the discord integration alone, without the noise of two processes: see
bench_discord_inprocess.py. ``--minimal`` drives a bot with one slash command that answers at once
instead of the ladder bot: the simulator's worst case relative to the bot it drives.
"""
from __future__ import annotations

import argparse
import collections
import copy
import gc
import glob
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import orjson
import psutil
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from autoperf.discord_sim import start_in_thread  # noqa: E402
from autoperf.discord_sim.report import percentile  # noqa: E402

BOT = os.path.join(ROOT, "examples", "ladder_bot", "bot.py")
SCENARIO = os.path.join(ROOT, "examples", "ladder_bot", "scenario.yaml")
CONFIG = os.path.join(ROOT, "autoperf.yaml")

# --minimal: the least work a bot can do per interaction.
MINIMAL_BOT = """\
import os, discord
from discord import app_commands
client = discord.Client(intents=discord.Intents.default())
tree = app_commands.CommandTree(client)
@tree.command(description="answers at once")
async def ping(interaction: discord.Interaction):
    await interaction.response.send_message("pong")
async def setup_hook():
    await tree.sync()
client.setup_hook = setup_hook
client.run(os.environ["DISCORD_TOKEN"], log_handler=None)
"""

# Runs the bot unchanged; SIGUSR1 starts the measurement window, SIGUSR2 writes the main thread's
# GC statistics for the window to $BENCH_GC_OUT.
LAUNCHER = """\
import gc, json, os, runpy, signal, sys, threading, time
url, bot = sys.argv[1], sys.argv[2]
_main = threading.main_thread().ident
_gc = {"on": False}
def _types():
    counts = {}
    for o in gc.get_objects():
        t = type(o)
        k = f"{getattr(t, '__module__', '?')}.{getattr(t, '__qualname__', '?')}"
        counts[k] = counts.get(k, 0) + 1
    return counts
def _reset(*_):
    _gc.update(on=True, n=[0, 0, 0], pause=[0.0, 0.0, 0.0], max=0.0, collected=[0, 0, 0], t=None, types0=_types())
def _dump(*_):
    types0, types1 = _gc.pop("types0"), _types()
    growth = {k: v - types0.get(k, 0) for k, v in types1.items() if v != types0.get(k, 0)}
    out = dict(_gc, growth=growth, tracked_growth=sum(types1.values()) - sum(types0.values()), on=False,
               threads={str(t.native_id): t.name for t in threading.enumerate()})
    with open(os.environ["BENCH_GC_OUT"], "w") as fh:
        json.dump(out, fh)
    _gc["on"] = False
def _on_gc(phase, info):
    if not _gc["on"] or threading.get_ident() != _main:
        return
    if phase == "start":
        _gc["t"] = time.perf_counter()
    elif _gc["t"] is not None:
        d, g = time.perf_counter() - _gc["t"], info["generation"]
        _gc["n"][g] += 1; _gc["pause"][g] += d; _gc["collected"][g] += info["collected"]
        _gc["max"] = max(_gc["max"], d); _gc["t"] = None
gc.callbacks.append(_on_gc)
signal.signal(signal.SIGUSR1, _reset)
signal.signal(signal.SIGUSR2, _dump)
import discord
from autoperf.discord_sim import point_discord_at
point_discord_at(url)
sys.argv = [bot]
sys.path.insert(0, os.path.dirname(os.path.abspath(bot)))
runpy.run_path(bot, run_name="__main__")
"""


def _cpu(proc: psutil.Process) -> dict:
    """CPU seconds of the bot: its main thread, its other threads (also by thread id), its live children
    (replay workers)."""
    out = {"loop": 0.0, "threads": 0.0, "workers": 0.0, "by_tid": {}}
    try:
        for t in proc.threads():
            out["loop" if t.id == proc.pid else "threads"] += t.user_time + t.system_time
            out["by_tid"][t.id] = t.user_time + t.system_time
        for child in proc.children(recursive=True):
            try:
                c = child.cpu_times()
                out["workers"] += c.user + c.system
            except psutil.Error:
                pass
    except psutil.Error:
        pass
    return out


def _records_by_kind(log_dir: str) -> collections.Counter:
    counts: collections.Counter = collections.Counter()
    for path in glob.glob(os.path.join(log_dir, "*.log")):
        with open(path, "rb") as fh:
            for line in fh:
                try:
                    rec = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                rtype = rec.get("type")
                counts[f"span {rec.get('kind')}" if rtype == "span" else str(rtype)] += 1
    return counts


def _thread_cpu_s(native_id: int) -> float:
    """CPU seconds of one thread of this process (the simulator's)."""
    for t in psutil.Process().threads():
        if t.id == native_id:
            return t.user_time + t.system_time
    return 0.0


def run_once(mode: str, scenario: dict, launcher: str, work: str, extra=(), bot: str = BOT, scrape=None) -> dict:
    """``scrape``: (seconds, {mode: port}) — /metrics of that mode's bot is fetched that often (as
    Prometheus would), so the endpoint's work is in the bot's CPU."""
    ps = None
    end = {}

    def window_end(report) -> None:   # in the simulator's thread, once the scenario is over
        end.update(cpu=_cpu(ps), sim=time.thread_time())

    handle = start_in_thread(scenario, ready_timeout=60, close_clients=False, on_finished=window_end)
    sim_tid = handle._thread.native_id
    log_dir = os.path.join(work, f"logs_{mode}_{scenario['seed']}")
    gc_out = os.path.join(work, f"gc_{mode}_{scenario['seed']}.json")
    env = dict(os.environ, DISCORD_TOKEN="bench.token.value", AUTOPERF_CONSOLE="0", BENCH_GC_OUT=gc_out)
    cmd = [sys.executable, launcher, handle.base_url, bot]
    if isinstance(extra, dict):          # --export: both modes under autoperf, each with its own options
        cmd = [sys.executable, "-m", "autoperf", "run", "--log-dir", log_dir, *extra[mode], *cmd[1:]]
    elif mode == "autoperf":
        cmd = [sys.executable, "-m", "autoperf", "run", "--log-dir", log_dir, *extra, *cmd[1:]]
    stop_scraping = threading.Event()
    if scrape and mode in scrape[1]:
        threading.Thread(target=_scraper, args=(scrape[0], scrape[1][mode], stop_scraping), daemon=True).start()
    # The bot's stderr goes to a file: a pipe nobody reads would block it once full.
    with open(os.path.join(work, f"stderr_{mode}.txt"), "w+") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err)
        ps = psutil.Process(proc.pid)
        while handle.simulation is None or not handle.simulation.server.commands_synced.is_set():
            if proc.poll() is not None:
                err.seek(0)
                raise RuntimeError(f"{mode}: the bot exited early:\n{err.read()[-2000:]}")
            time.sleep(0.05)
        time.sleep(scenario.get("warmup_s", 1.0))
        proc.send_signal(signal.SIGUSR1)
        time.sleep(0.3)   # the launcher counts the bot's objects before the window starts
        cpu0, sim0 = _cpu(ps), _thread_cpu_s(sim_tid)
        report = handle.wait(scenario["duration_s"] + scenario.get("grace_s", 5) + 60)
        cpu1, sim1 = end["cpu"], end["sim"]
        proc.send_signal(signal.SIGUSR2)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    stop_scraping.set()
    if report is None or report.error:
        raise RuntimeError(f"{mode}: {report and report.error}")
    results = [r for r in report.results if r.status != "skipped"]
    try:
        with open(gc_out) as fh:
            gcs = json.load(fh)
    except (OSError, ValueError):
        gcs = None
    return {"first_ms": [r.first_ms for r in results if r.first_ms is not None], "steps": len(results),
            "bad": sum(1 for r in results if r.status in ("timeout", "error")), "sim_cpu": sim1 - sim0,
            "interactions_per_s": sum(1 for r in results if r.interaction_id is not None) / scenario["duration_s"],
            "cpu": {k: cpu1[k] - cpu0[k] for k in ("loop", "threads", "workers")}, "gc": gcs,
            "thread_cpu": _thread_cpu(cpu0["by_tid"], cpu1["by_tid"], proc.pid, (gcs or {}).get("threads") or {}),
            "records": _records_by_kind(log_dir) if mode == "autoperf" else None}


def _thread_cpu(before: dict, after: dict, main_tid: int, names: dict) -> collections.Counter:
    """CPU seconds over the window of the bot's other threads, by thread name (digits folded: a pool's
    threads count together; threads that ended before the window closed are not seen)."""
    out: collections.Counter = collections.Counter()
    for tid, cpu in after.items():
        if tid != main_tid:
            out[re.sub(r"\d+", "N", names.get(str(tid), "?"))] += cpu - before.get(tid, 0.0)
    return out


def _scraper(every_s, port, stop):
    """What Prometheus does: GET /metrics in OpenMetrics, gzip, every ``every_s``."""
    import urllib.request
    req = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers={
        "Accept": "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        "Accept-Encoding": "gzip"})
    while not stop.wait(every_s):
        try:
            urllib.request.urlopen(req, timeout=5).read()
        except OSError:
            pass


DISCARDING_RECEIVER = """
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a):
        pass
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


def _otlp_receiver():
    """An OTLP/HTTP endpoint in a child process that takes every request and discards it: (process, url)."""
    proc = subprocess.Popen([sys.executable, "-c", DISCARDING_RECEIVER], stdout=subprocess.PIPE, text=True)
    return proc, f"http://127.0.0.1:{int(proc.stdout.readline())}"


def _export_configs(work: str, keys, otlp_url=None) -> dict:
    """autoperf.yaml as it is ("plain" in the table: export off) and with ``export:`` keys on ("autoperf")."""
    import socket
    with open(CONFIG) as fh:
        data = yaml.safe_load(fh)
    off = os.path.join(work, "autoperf_export_off.yaml")
    with open(off, "w") as fh:
        yaml.safe_dump(data, fh)
    if "none" in keys:              # A/A: both columns the same configuration
        return {"plain": ["--config", off], "autoperf": ["--config", off]}, None
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    export = {}
    if "prometheus" in keys:
        export["prometheus"] = {"port": port}
    if "otlp" in keys:
        export["otlp"] = {"endpoint": otlp_url}
    data["export"] = export
    on = os.path.join(work, "autoperf_export_on.yaml")
    with open(on, "w") as fh:
        yaml.safe_dump(data, fh)
    return {"plain": ["--config", off], "autoperf": ["--config", on]}, port


def _no_targets_config(work: str) -> str:
    with open(CONFIG) as fh:
        data = yaml.safe_load(fh)
    data["targets"] = []
    path = os.path.join(work, "autoperf_no_targets.yaml")
    with open(path, "w") as fh:
        yaml.safe_dump(data, fh)
    return path


def _summary(runs: list) -> dict:
    firsts = [v for r in runs for v in r["first_ms"]]
    steps = max(1, sum(r["steps"] for r in runs))
    out = {"p50": percentile(firsts, 50), "p95": percentile(firsts, 95), "p99": percentile(firsts, 99),
           "steps": steps, "bad": sum(r["bad"] for r in runs)}
    for key in ("loop", "threads", "workers"):
        out[f"cpu_{key}"] = 1e6 * sum(r["cpu"][key] for r in runs) / steps
    out["cpu_total"] = out["cpu_loop"] + out["cpu_threads"] + out["cpu_workers"]
    out["sim_cpu"] = 1e6 * sum(r["sim_cpu"] for r in runs) / steps
    out["sim_share"] = out["sim_cpu"] / out["cpu_total"] if out["cpu_total"] else 0.0
    out["rate"] = statistics.mean(r["interactions_per_s"] for r in runs)
    by_name: collections.Counter = sum((r["thread_cpu"] for r in runs), collections.Counter())
    out["thread_cpu"] = {k: 1e6 * v / steps for k, v in by_name.items()}
    gcs = [r["gc"] for r in runs if r["gc"]]
    if gcs:
        out["gc_full"] = sum(g["n"][2] for g in gcs)
        out["gc_young"] = sum(g["n"][0] + g["n"][1] for g in gcs)
        out["gc_pause"] = 1e6 * sum(sum(g["pause"]) for g in gcs) / steps
        out["gc_full_ms"] = 1e3 * sum(g["pause"][2] for g in gcs) / max(1, out["gc_full"])
        out["gc_max_ms"] = 1e3 * max(g["max"] for g in gcs)
        out["gc_garbage"] = sum(sum(g["collected"]) for g in gcs) / steps
        out["gc_growth"] = sum(g["tracked_growth"] for g in gcs) / len(gcs)
    return out


ROWS = [
    ("p50", "first response p50 ms", "{:.2f}"), ("p95", "first response p95 ms", "{:.2f}"),
    ("p99", "first response p99 ms", "{:.2f}"),
    ("cpu_total", "bot CPU us / step", "{:.0f}"), ("cpu_loop", "  event-loop thread", "{:.0f}"),
    ("cpu_threads", "  other threads", "{:.0f}"), ("cpu_workers", "  replay workers", "{:.0f}"),
    ("gc_pause", "GC pause us / step", "{:.0f}"), ("gc_young", "gen 0+1 collections", "{:.0f}"),
    ("gc_full", "gen 2 collections", "{:.0f}"), ("gc_full_ms", "mean gen 2 pause ms", "{:.1f}"),
    ("gc_max_ms", "longest GC pause ms", "{:.1f}"), ("gc_garbage", "cyclic garbage / step", "{:.1f}"),
    ("gc_growth", "tracked objects growth", "{:+.0f}"),
    ("steps", "steps measured", "{:.0f}"), ("bad", "timeouts + errors", "{:.0f}"),
    ("rate", "interactions / s played", "{:.1f}"), ("sim_cpu", "simulator CPU us / step", "{:.0f}"),
    ("sim_share", "  simulator / bot CPU", "{:.2f}"),
]
RATIO_KEYS = ("p50", "p95", "p99", "cpu_total", "cpu_loop", "cpu_threads", "cpu_workers", "gc_pause")


def print_table(title: str, results: dict) -> None:
    plain, traced = _summary(results["plain"]), _summary(results["autoperf"])
    rounds = list(zip(results["plain"], results["autoperf"]))
    print(f"\n{title}")
    print(f"{'':<26}{'plain':>11}{'autoperf':>11}{'ratio':>9}{'median':>9}")
    for key, label, fmt in ROWS:
        if key not in plain or key not in traced:
            continue
        a, b = plain[key], traced[key]
        line = f"{label:<26}{fmt.format(a):>11}{fmt.format(b):>11}"
        if key in RATIO_KEYS and a:
            per_round = [_summary([t])[key] / _summary([p])[key] for p, t in rounds if _summary([p])[key]]
            line += f"{b / a:>8.3f}x" + (f"{statistics.median(per_round):>8.3f}x" if per_round else "")
            if per_round and key == "cpu_total":
                line += f"  rounds {min(per_round):.3f}-{max(per_round):.3f}x"
        print(line)
    growth: collections.Counter = collections.Counter()
    for mode, sign in (("autoperf", 1), ("plain", -1)):
        for r in results[mode]:
            for k, v in ((r["gc"] or {}).get("growth") or {}).items():
                growth[k] += sign * v / len(results[mode])
    print("tracked objects growth over the window, autoperf minus plain, by type: "
          + ", ".join(f"{k} {v:+.0f}" for k, v in sorted(growth.items(), key=lambda kv: -abs(kv[1]))[:8]))
    names = sorted(set(plain["thread_cpu"]) | set(traced["thread_cpu"]),
                   key=lambda k: -traced["thread_cpu"].get(k, 0.0))
    print("other threads, CPU us / step, plain -> autoperf: "
          + ", ".join(f"{k} {plain['thread_cpu'].get(k, 0.0):.0f} -> {traced['thread_cpu'].get(k, 0.0):.0f}"
                      for k in names))
    counts: collections.Counter = sum((r["records"] for r in results["autoperf"]), collections.Counter())
    steps = max(1, sum(r["steps"] for r in results["autoperf"]))
    print(f"records per step (whole run incl. start-up): {sum(counts.values()) / steps:.2f} = "
          + ", ".join(f"{k} {v / steps:.2f}" for k, v in counts.most_common()))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=20.0, help="flows started per second")
    ap.add_argument("--duration", type=float, default=20.0, help="seconds of load per run")
    ap.add_argument("--repeat", type=int, default=3, help="runs per mode (alternating)")
    ap.add_argument("--disable", action="append", default=[],
                    help="passed to `autoperf run --disable` (integration, target, stats/alerts/store; repeatable)")
    ap.add_argument("--no-targets", action="store_true", help="autoperf.yaml without its targets")
    ap.add_argument("--inprocess", action="store_true", help="the discord integration alone, in-process")
    ap.add_argument("--options", default="{}", help="--inprocess: discord integration options as JSON")
    ap.add_argument("--minimal", action="store_true", help="a one-command bot that answers at once (not the ladder bot)")
    ap.add_argument("--export", default="", help="compare autoperf with these export: keys on (comma list: otlp, prometheus; none: A/A) "
                                                 "against autoperf without ('plain' column)")
    ap.add_argument("--scrape-s", type=float, default=15.0, help="--export prometheus: seconds between scrapes")
    args = ap.parse_args(argv)
    with open(SCENARIO) as fh:
        base = yaml.safe_load(fh)
    if args.minimal:
        base = {"users": 60, "guilds": base["guilds"], "mix": [{"command": "ping"}]}
    base.update(rate=args.rate, duration_s=args.duration, warmup_s=1.0, grace_s=8)
    if args.inprocess:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import bench_discord_inprocess
        return bench_discord_inprocess.main(args, base)
    work = tempfile.mkdtemp(prefix="bench_discord_")
    launcher = os.path.join(work, "launch_bot.py")
    with open(launcher, "w") as fh:
        fh.write(LAUNCHER)
    bot = BOT
    if args.minimal:
        bot = os.path.join(work, "minimal_bot.py")
        with open(bot, "w") as fh:
            fh.write(MINIMAL_BOT)
    extra = [x for name in args.disable for x in ("--disable", name)]
    if args.no_targets:
        extra += ["--config", _no_targets_config(work)]
    scrape = None
    receiver = None
    if args.export:
        keys = {k for k in args.export.split(",") if k}
        otlp_url = None
        if "otlp" in keys:
            receiver, otlp_url = _otlp_receiver()
        extra, port = _export_configs(work, keys, otlp_url)
        if "prometheus" in keys:
            scrape = (args.scrape_s, {"autoperf": port})
    results = {"plain": [], "autoperf": []}
    for i in range(args.repeat):
        for mode in (("plain", "autoperf") if i % 2 == 0 else ("autoperf", "plain")):
            scenario = copy.deepcopy(base)
            scenario["seed"] = 1000 + i      # same arrivals for both modes of a round
            gc.collect()
            res = run_once(mode, scenario, launcher, work, extra, bot, scrape)
            results[mode].append(res)
            print(f"  round {i + 1} {mode:<8}: {res['steps']} steps, {res['bad']} timeouts/errors, "
                  f"p95 {percentile(res['first_ms'], 95):.1f} ms, CPU {sum(res['cpu'].values()):.2f} s, "
                  f"{1e6 * sum(res['cpu'].values()) / max(1, res['steps']):.0f} us/step, "
                  f"simulator {res['sim_cpu']:.2f} s, {res['interactions_per_s']:.0f} interactions/s",
                  file=sys.stderr)
    if receiver is not None:
        receiver.kill()
    what = " ".join(["autoperf.yaml", *(f"--disable {d}" for d in args.disable)]
                    + (["--no-targets"] if args.no_targets else [])
                    + ([f"plain = export off, autoperf = export {args.export} on (scraped every {args.scrape_s:g} s)"]
                       if args.export and args.export != "none" else [])
                    + (["A/A: export off in both columns"] if args.export == "none" else []))
    print_table(f"{'minimal bot, /ping' if args.minimal else 'ladder bot, demo scenario'} at {args.rate:g} flows/s "
                f"for {args.duration:g} s, "
                f"{args.repeat} run(s) per mode ({what})", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
