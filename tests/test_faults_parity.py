"""``autoperf run`` against real ``python`` runs: recursion depth, ``__file__``, ``__builtins__``,
death by SIGINT, a child running another interpreter (issue 19, item 7)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from tests.faults import Program, clean_env

PROBE = """
    import json, sys
    def wrapped(n):
        return 0 if n == 0 else 1 + wrapped(n - 1)
    def plain(n):
        return 0 if n == 0 else 1 + plain(n - 1)
    def deepest(fn):
        lo, hi = 1, 20000
        while lo < hi:
            mid = (lo + hi + 1) // 2
            try:
                fn(mid)
                lo = mid
            except RecursionError:
                hi = mid - 1
        return lo
    print(json.dumps({"wrapped": deepest(wrapped), "plain": deepest(plain), "file": __file__,
                      "builtins": type(__builtins__).__name__}))
"""
CONFIG = "targets:\n  - target: '__main__:wrapped'\nsampler: {enabled: false}\n"


def run_both(prog, *, entry):
    """(python's result, autoperf's result) for the script given by its relative path."""
    env = clean_env()
    python = subprocess.run([sys.executable, "prog.py"], cwd=prog.dir, env=env, capture_output=True, text=True)
    cmd = ([sys.executable, "-m", "autoperf"] if entry == "module" else
           [os.path.join(os.path.dirname(sys.executable), "autoperf")])
    ours = subprocess.run([*cmd, "run", "--no-console", "prog.py"], cwd=prog.dir, env=env,
                          capture_output=True, text=True, timeout=120)
    return python, ours


@pytest.mark.parametrize("entry", ["module", "script"])
def test_recursion_file_and_builtins_match_python(tmp_path, entry):
    """Recursion through a targeted function goes as deep as under python (and plain recursion at
    least as deep); ``__file__`` is absolute and ``__builtins__`` the module, as python gives them."""
    prog = Program(tmp_path, PROBE, CONFIG)
    python, ours = run_both(prog, entry=entry)
    assert python.returncode == ours.returncode == 0, ours.stderr
    expected, got = json.loads(python.stdout), json.loads(ours.stdout)
    assert got["file"] == expected["file"] == str(tmp_path / "prog.py")
    assert got["builtins"] == expected["builtins"] == "module"
    assert got["wrapped"] >= expected["wrapped"]
    assert got["plain"] >= expected["plain"]


def test_sigint_kills_by_the_signal_after_flushing(tmp_path):
    """An uncaught KeyboardInterrupt: python prints the traceback and dies by SIGINT (-2 to its
    parent); so does ``autoperf run``, after writing the program's spans."""
    prog = Program(tmp_path, """
        import os, signal
        def work():
            return 1
        for _ in range(100):
            work()
        os.kill(os.getpid(), signal.SIGINT)
        import time
        time.sleep(5)
    """, "targets:\n  - target: '__main__:work'\nsampler: {enabled: false}\nretain: {all: true}\n")   # counts spans
    python = prog.run(plain=True)
    ours = prog.run()
    assert python.returncode == ours.returncode == -signal.SIGINT
    assert ours.stderr.rstrip().endswith("KeyboardInterrupt")
    assert len([r for r in prog.records() if r["type"] == "span"]) == 100


def test_a_child_running_another_interpreter_hears_nothing_from_autoperf(tmp_path):
    """``subprocess.run(["/usr/bin/python3", …])`` where autoperf is not installed: the child's
    stderr is what it would be without autoperf."""
    other = "/usr/bin/python3"
    if not os.path.exists(other) or subprocess.run([other, "-c", "import wrapt"], capture_output=True).returncode == 0:
        pytest.skip("needs an interpreter without autoperf's dependencies at /usr/bin/python3")
    prog = Program(tmp_path, f"""
        import subprocess
        done = subprocess.run([{other!r}, "-c", "print('child ok')"], capture_output=True, text=True)
        print(repr(done.stdout), repr(done.stderr))
    """)
    env = {k: v for k, v in clean_env().items() if k != "PYTHONPATH"}   # autoperf as installed
    python, ours = (subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
                    for cmd in ([sys.executable, str(prog.script)], prog.autoperf_cmd()))
    assert ours.stdout == python.stdout == "'child ok\\n' ''\n", ours.stdout
