"""Fuzz the config validator: hostile and mutated autoperf.yaml files through ``load_config``.

``python -m tests.fuzz_config --files N --seed S`` writes N files (mutations of the reference
autoperf.yaml and of hostile snippets: huge numbers, alias bombs, bad encodings, broken ``${…}``,
deep nesting, floods of keys), loads each in this process under a memory limit and a per-file
time limit (CPU seconds), and prints JSON totals: files, valid, exit-2 errors all formatted as
``file:line:col: path: message``, badly formatted errors, tracebacks (any other exception),
hangs, the longest time and the most error output for one file.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import signal
import sys
import tempfile
import time
from pathlib import Path

REFERENCE = Path(__file__).resolve().parents[1] / "autoperf.yaml"
LINE = re.compile(r"^.+:\d+:\d+: \S[^\n]*: .+$")
PER_FILE_S = 5.0
MEMORY_BYTES = 2 << 30

HOSTILE_VALUES = [
    "1" + "0" * 400, "-" + "9" * 400, "1e400", "-1e400", ".inf", "-.inf", ".nan", "0x" + "f" * 300,
    "${A", "${X:-${HOME}}", "${UNSET_AUTOPERF_FUZZ}", "${1BAD}", "${X:=y}", "${X:?e}", "$${X}", "${}",
    "!!binary AAAA", "!!python/object:os.system x", "!!set {a, b}", "~", "[]", "{}", "''", "'" + "x" * 100000 + "'",
    "&a x", "*nope", "2026-01-01", "0o777", "1_000", "yes", "\"\\x00\"", "\"\\uD800\"",
]
HOSTILE_DOCS = [
    # billion laughs under alerts.rules[].match (the reported case) and at the top level
    "a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
    "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n"
    "g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\nalerts:\n  rules:\n    - name: x\n      match: {z: *g}\n",
    "x: &x {a: 1}\ny: &y {<<: [*x, *x], b: *x}\n",
    "r: &r [*r]\n",
    "[" * 3000 + "]" * 3000 + "\n",
    "{a: " * 3000 + "1" + "}" * 3000 + "\n",
    "".join(f"k{i}: {i}\n" for i in range(20000)),
    "targets:\n" + "".join(f"  - target: 'm{i}'\n" for i in range(5000)),
    "service: \"" + "\\u0041" * 50000 + "\"\n",
    "\ufeffservice: bom\n",
    "--- \nservice: a\n--- \nservice: b\n",
    "%YAML 1.1\n%TAG ! tag:x,2002:\n--- !foo\nservice: a\n",
]


def mutate(rng: random.Random, base: bytes) -> bytes:
    choice = rng.randrange(9)
    if choice == 0:                       # flip bytes
        data = bytearray(base)
        for _ in range(rng.randint(1, 20)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data)
    if choice == 1:                       # truncate
        return base[:rng.randrange(len(base))]
    if choice == 2:                       # a hostile value in place of a scalar
        lines = base.decode().splitlines()
        spots = [i for i, line in enumerate(lines) if re.match(r"^\s*[\w-]+:\s*\S", line) and "#" not in line]
        i = rng.choice(spots)
        key = lines[i].split(":", 1)[0]
        lines[i] = f"{key}: {rng.choice(HOSTILE_VALUES)}"
        return ("\n".join(lines) + "\n").encode()
    if choice == 3:                       # a hostile document
        return rng.choice(HOSTILE_DOCS).encode("utf-8", "surrogatepass")
    if choice == 4:                       # another encoding
        return base.decode().encode(rng.choice(["utf-16-le", "utf-32", "latin-1", "cp1252"]), "replace")
    if choice == 5:                       # random bytes
        return rng.randbytes(rng.randint(1, 4000))
    if choice == 6:                       # splice two random halves
        a, b = rng.randrange(len(base)), rng.randrange(len(base))
        return base[:a] + base[b:]
    if choice == 7:                       # duplicate a random line block (duplicate keys)
        lines = base.splitlines(keepends=True)
        i = rng.randrange(len(lines))
        return b"".join(lines[:i + 1] + lines[i:i + rng.randint(1, 8)] + lines[i + 1:])
    hostile = rng.choice(HOSTILE_VALUES)  # a hostile value in every number field of one section
    return (f"log:\n  buffer_records: {hostile}\n  flush_interval_ms: {hostile}\n"
            f"store:\n  batch_records: {hostile}\n  connect_timeout_s: {hostile}\n"
            f"sampler: {{interval_s: {hostile}}}\n").encode()


def _alarm(signum, frame):
    raise TimeoutError


def _classify(load_config, ConfigError, path):
    """(outcome, detail) of loading ``path``; the per-file timer runs through all of it."""
    try:
        load_config(path)
        return "valid", None
    except ConfigError as exc:
        if exc.errors and all(LINE.match(line) and line.startswith(path) for line in exc.errors):
            return "exit_2_formatted", sum(len(line) + 1 for line in exc.errors)
        return "exit_2_unformatted", [line[:200] for line in exc.errors[:3]]
    except TimeoutError:
        raise
    except BaseException as exc:  # noqa: BLE001 - what we are counting
        return "tracebacks", f"{type(exc).__name__}: {str(exc)[:200]}"


def run(files: int, seed: int, keep: str | None = None) -> dict:
    from autoperf.config import ConfigError, load_config

    os.environ["AUTOPERF_CONFIG_CACHE"] = "0"
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_BYTES, MEMORY_BYTES))
    # The per-file limit is CPU time (ITIMER_PROF): a wall-clock limit counted a 1.6-s parse as a
    # hang, or cut it inside a library's except clause (a "traceback"), on a loaded machine.
    signal.signal(signal.SIGPROF, _alarm)
    rng = random.Random(seed)
    base = REFERENCE.read_bytes()
    totals = {"files": 0, "valid": 0, "exit_2_formatted": 0, "exit_2_unformatted": 0,
              "tracebacks": 0, "hangs": 0, "slowest_s": 0.0, "most_error_bytes": 0, "examples": []}
    directory = keep or tempfile.mkdtemp(prefix="autoperf_fuzz_")
    for n in range(files):
        path = os.path.join(directory, f"fuzz_{n:05d}.yaml")
        with open(path, "wb") as handle:
            handle.write(base if n == 0 else mutate(rng, base))
        totals["files"] += 1
        start = time.process_time()
        signal.setitimer(signal.ITIMER_PROF, PER_FILE_S)
        try:
            outcome, detail = _classify(load_config, ConfigError, path)
        except TimeoutError:
            outcome, detail = "hangs", "hang"
        finally:
            signal.setitimer(signal.ITIMER_PROF, 0)
        totals[outcome] += 1
        if outcome == "exit_2_formatted":
            totals["most_error_bytes"] = max(totals["most_error_bytes"], detail)
        elif outcome != "valid":
            totals["examples"].append([path, detail])
        totals["slowest_s"] = round(max(totals["slowest_s"], time.process_time() - start), 3)
    totals["examples"] = totals["examples"][:10]
    return totals


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=400)
    parser.add_argument("--seed", type=int, default=19)
    parser.add_argument("--keep", help="write the files into this directory (kept)")
    args = parser.parse_args(argv)
    print(json.dumps(run(args.files, args.seed, args.keep)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
