"""Fault-suite helpers: a size-limited filesystem, and programs run under ``autoperf run``.

``small_fs(size)`` mounts a tmpfs of ``size`` bytes (we run as root here and in CI); where mounting
is not allowed the test that needs it is skipped, saying why. ``Program`` (tests/test_cli_run.py)
runs a script with and without autoperf; ``run_live`` starts one whose phases the test steps
through on stdin.
"""
from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile

import pytest

from tests.test_cli_run import Program, clean_env, read_records  # noqa: F401 - re-exported


@contextlib.contextmanager
def small_fs(size_bytes: int, read_only: bool = False):
    """A tmpfs of ``size_bytes`` mounted on a fresh directory; unmounted afterwards."""
    where = tempfile.mkdtemp(prefix="autoperf_fs_")
    options = f"size={size_bytes}" + (",ro" if read_only else "")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", where],
                          capture_output=True, text=True)
    if done.returncode != 0:
        os.rmdir(where)
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", where], capture_output=True)
        os.rmdir(where)


def fill(directory: str, leave_bytes: int) -> str:
    """Fill the filesystem of ``directory`` up to ``leave_bytes`` free; returns the filler's path."""
    st = os.statvfs(directory)
    free = st.f_bavail * st.f_frsize
    path = os.path.join(directory, "filler")
    with open(path, "wb") as handle:
        handle.write(b"\0" * max(0, free - leave_bytes))
    return path


def run_live(prog: Program, *args, options=(), env=None):
    """Start ``prog`` under autoperf with pipes; the test drives it with ``step``."""
    return subprocess.Popen(prog.autoperf_cmd(*args, options=options), cwd=prog.dir,
                            env=env or clean_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, bufsize=1)


def step(proc, expect: str, timeout: float = 60.0):
    """Wait for the line ``expect`` on the program's stdout, then send it a line to go on."""
    import select
    import time
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"program never printed {expect!r}"
        ready, _, _ = select.select([proc.stdout], [], [], left)
        if ready:
            line = proc.stdout.readline()
            assert line, f"program ended before {expect!r}: {proc.stderr.read()}"
            if line.strip() == expect:
                break
    proc.stdin.write("go\n")
    proc.stdin.flush()
