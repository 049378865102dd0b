"""Real runs for the tests of answers: a program under ``python -m autoperf run``, then the CLI over its logs.

    from tests.runs import Run
    run = Run(tmp_path, source, config)     # writes prog.py and autoperf.yaml
    run.start()                             # autoperf run (asserts exit 0); records in run.log_dir
    code, out = run.cli("check", "--json")  # autoperf check over those logs, with that config
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]


def clean_env(**extra):
    """The test's environment without AUTOPERF_* variables, autoperf importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOPERF_")}
    env["PYTHONPATH"] = str(ROOT)
    env["NO_COLOR"] = "1"
    env.update(extra)
    return env


class Run:
    def __init__(self, directory: Path, source: str, config: str, name: str = "prog.py"):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.script = self.dir / name
        self.script.write_text(textwrap.dedent(source))
        self.config = self.dir / "autoperf.yaml"
        self.config.write_text(textwrap.dedent(config))
        self.log_dir = self.dir / "logs"

    def start(self, *args, options=(), env=None, timeout=120, check=True):
        cmd = [sys.executable, "-m", "autoperf", "run", "--config", str(self.config), "--log-dir",
               str(self.log_dir), "--no-console", *options, str(self.script), *args]
        proc = subprocess.run(cmd, cwd=self.dir, env=clean_env(**(env or {})), capture_output=True, text=True,
                              timeout=timeout)
        if check:
            assert proc.returncode == 0, f"autoperf run failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        return proc

    def records(self, type=None):
        """The records of performance_*.log and flows_*.log (unretained flows' flow_complete)."""
        out = []
        for path in sorted(self.log_dir.glob("performance_*.log")) + sorted(self.log_dir.glob("flows_*.log")):
            out.extend(orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip())
        return out if type is None else [r for r in out if r.get("type") == type]

    def cli(self, command, *args, config=None, engine="python", env=None, timeout=300):
        """``autoperf COMMAND --log-dir logs --config autoperf.yaml ARGS`` -> (exit code, stdout)."""
        cmd = [sys.executable, "-m", "autoperf", command, "--log-dir", str(self.log_dir),
               "--config", str(config or self.config), *args]
        if engine:
            cmd += ["--engine", engine]
        proc = subprocess.run(cmd, cwd=self.dir, env=clean_env(**(env or {})), capture_output=True, text=True,
                              timeout=timeout)
        assert proc.returncode in (0, 1), f"autoperf {command} failed ({proc.returncode}):\n{proc.stderr}"
        return proc.returncode, proc.stdout

    def check(self, config=None, engine="python"):
        """``autoperf check --json`` -> (exit code, {objective name [scope]: check})."""
        code, out = self.cli("check", "--json", config=config, engine=engine)
        res = json.loads(out)
        return code, {c["name"] + (f" [{c['scope']}]" if c.get("scope") else ""): c for c in res["checks"]}

    def suggest(self, config=None, engine="python"):
        code, out = self.cli("suggest", "--format", "json", config=config, engine=engine)
        assert code == 0
        return json.loads(out)

    def config_variant(self, name: str, text: str) -> Path:
        path = self.dir / name
        path.write_text(textwrap.dedent(text))
        return path
