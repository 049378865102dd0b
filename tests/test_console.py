"""The console view under ``autoperf run``: when it appears (``log.console``, ``auto`` on a terminal)."""
from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import textwrap
import time

from test_cli_run import clean_env

PROGRAM = """
    def command():
        return 1
    command()
    print("out")
"""
CONFIG = "log: {{console: {console}}}\ntargets:\n  - target: '__main__:command'\n    kind: flow\n"


def _files(tmp_path, console):
    script = tmp_path / "prog.py"
    script.write_text(textwrap.dedent(PROGRAM))
    config = tmp_path / "autoperf.yaml"
    config.write_text(CONFIG.format(console=console))
    return script, config


def _cmd(tmp_path, script, config):
    return [sys.executable, "-m", "autoperf", "run", "--config", str(config), "--log-dir", str(tmp_path / "logs"),
            str(script)]


def _read_until_exit(master, proc, timeout=60):
    """Everything written to the pseudo-terminal until the process exits."""
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:     # EIO: the slave side closed (the program ended)
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    proc.wait(timeout=10)
    return out.decode("utf-8", "replace")


def _on_a_terminal(tmp_path, console, stderr_on_terminal=True):
    """Run the program with stdin and stdout (and stderr, unless told) on a pseudo-terminal:
    ``(exit code, what the terminal showed, stderr when it was a pipe)``."""
    script, config = _files(tmp_path, console)
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(_cmd(tmp_path, script, config), cwd=tmp_path, env=clean_env(), stdin=slave,
                                stdout=slave, stderr=slave if stderr_on_terminal else subprocess.PIPE)
        os.close(slave)
        text = _read_until_exit(master, proc)
        err = "" if stderr_on_terminal else proc.stderr.read().decode()
    finally:
        os.close(master)
    return proc.returncode, text, err


def test_auto_console_appears_on_a_terminal(tmp_path):
    """With ``console: auto`` and the program run on a terminal, flows are shown on it (coloured)."""
    code, text, _ = _on_a_terminal(tmp_path, "auto")
    assert code == 0, text
    assert "out" in text
    assert "flow  __main__.command" in text
    assert "\x1b[32m" in text            # INFO in colour: the console writes to a terminal


def test_auto_console_follows_stderr(tmp_path):
    """``auto`` follows stderr, where the console writes: stdout on a terminal, stderr to a pipe → no view."""
    code, text, err = _on_a_terminal(tmp_path, "auto", stderr_on_terminal=False)
    assert code == 0, err
    assert "out" in text and "flow  " not in text
    assert "flow  " not in err


def test_console_true_in_the_config_shows_flows_without_a_terminal(tmp_path):
    """``log.console: true`` shows the view on stderr even when nothing is a terminal (plain, no colour)."""
    script, config = _files(tmp_path, "true")
    proc = subprocess.run(_cmd(tmp_path, script, config), cwd=tmp_path, env=clean_env(),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "out\n"
    assert "flow  __main__.command" in proc.stderr and "\x1b[" not in proc.stderr


def test_console_false_and_no_console_option(tmp_path):
    """``log.console: false`` on a terminal shows nothing; ``--console`` overrides it."""
    code, text, _ = _on_a_terminal(tmp_path, "false")
    assert code == 0 and "out" in text and "flow  " not in text
    cmd = _cmd(tmp_path, tmp_path / "prog.py", tmp_path / "autoperf.yaml")
    cmd.insert(4, "--console")
    forced = subprocess.run(cmd, cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=60)
    assert "flow  __main__.command" in forced.stderr


def test_child_processes_do_not_print_a_second_console(tmp_path):
    """A child Python process of the program (instrumented through sitecustomize) leaves the console to the parent."""
    script = tmp_path / "prog.py"
    script.write_text(textwrap.dedent("""
        import subprocess, sys
        def command():
            return 1
        if len(sys.argv) > 1:
            command()
        else:
            command()
            subprocess.run([sys.executable, __file__, "child"], check=True)
    """))
    config = tmp_path / "autoperf.yaml"
    config.write_text(CONFIG.format(console="true"))
    proc = subprocess.run(_cmd(tmp_path, script, config), cwd=tmp_path, env=clean_env(),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("flow  __main__.command") == 1, proc.stderr
