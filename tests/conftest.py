"""Shared fixtures for the in-process tests of autoperf's spine.

- ``autoperf_pipeline``: the in-process pipeline writes into a temporary directory, never
  ``./logs``, and the console sink is off;
- ``records``: a live view of the records produced during the test (flushes on read);
- ``make_specs``: TargetSpecs from an ``autoperf.yaml`` text, through ``load_config``;
- ``make_module``: write a module file into ``tmp_path``, make it importable (``sys.path`` and
  ``PYTHONPATH`` for spawned workers) and import it; removed from ``sys.modules`` afterwards;
- ``patch``: patch a module's targets with ``autoperf.targets`` and restore everything afterwards;
- ``run_script``: run a Python script in a fresh interpreter (for process-global install tests).
"""
from __future__ import annotations

import atexit
import importlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import asyncio

import pytest

from autoperf import integrations

#: The programs the tests run keep the real default (tail-based retention); a test that reads every
#: child span says so in its config (``retain: {all: true}``). A developer's AUTOPERF_RETAIN_ALL
#: would turn retention off under the tests of it.
os.environ.pop("AUTOPERF_RETAIN_ALL", None)
#: Programs the tests run keep their config cache in a directory of this session, not the user's
#: ~/.cache (state no test made): XDG_CACHE_HOME, which clean_env passes on (it drops AUTOPERF_*).
_CACHE_HOME = tempfile.mkdtemp(prefix="autoperf-tests-cache-")
os.environ["XDG_CACHE_HOME"] = _CACHE_HOME
atexit.register(shutil.rmtree, _CACHE_HOME, True)
#: The programs the tests start import autoperf from its bytecode as an installed autoperf does: with
#: PYTHONDONTWRITEBYTECODE (set in some environments) every one of them compiled all of autoperf
#: first (~75 ms each; the suite starts hundreds).
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)

REPO = Path(__file__).resolve().parent.parent

#: install(..., disable=NO_EXTRAS) keeps a test about targets free of integrations and extras.
NO_EXTRAS = ("stats", "alerts", "store", *(entry.name for entry in integrations.TABLE))


@pytest.fixture(scope="session")
def autoperf_pipeline(tmp_path_factory):
    """Start this process's pipeline once, writing into a temporary directory (never ./logs).

    Not autouse (other test files may want to start it their own way): the spine test modules
    request it with ``pytestmark = pytest.mark.usefixtures("autoperf_pipeline")``.
    Every span's record is written (``retain: all``): these tests are about records, not retention.
    Returns the log directory.
    """
    from autoperf import bootstrap

    directory = tmp_path_factory.mktemp("autoperf-logs")
    bootstrap.ensure_pipeline(log_dir=str(directory), console=False, data={"retain": {"all": True}})
    return directory


@pytest.fixture
def records(autoperf_pipeline):
    """Records produced during the test (``records.all()``, ``.spans(name)``, ``.warnings(code)``)."""
    from autoperf import diagnostics, pipeline
    from autoperf.metrics.retention import RetainSettings
    from autoperf.testing import Recorder

    diagnostics.reset()  # "reported once" is per test
    pipeline.configure_metrics(RetainSettings(all=True))   # as the session's: an install() may have changed it
    rec = Recorder()
    try:
        yield rec
    finally:
        rec.close()
        diagnostics.reset()


@pytest.fixture
def make_specs(tmp_path):
    """``make_specs(yaml_text) -> [TargetSpec]`` through a real autoperf.yaml and ``load_config``."""
    from autoperf.config import load_config

    counter = iter(range(1000))

    def make(text):
        path = tmp_path / f"autoperf_{next(counter)}.yaml"
        path.write_text(textwrap.dedent(text))
        return load_config(path).targets
    return make


@pytest.fixture
def make_module(tmp_path, monkeypatch):
    """``make_module(name, source) -> module``: an importable module file in ``tmp_path``."""
    made = []
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        p for p in (str(tmp_path), os.environ.get("PYTHONPATH")) if p))

    def make(name, source, import_it=True):
        path = tmp_path / (name.replace(".", "/") + ".py")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
        made.append(name)
        importlib.invalidate_caches()
        return importlib.import_module(name) if import_it else path

    yield make
    for name in made:
        sys.modules.pop(name, None)


@pytest.fixture
def patch(make_specs):
    """``patch(module, yaml_text) -> count``: wrap the module's targets; unpatched at teardown."""
    from autoperf import targets

    def do(module, text):
        specs = [s for s in make_specs(text) if s.module == module.__name__]
        assert specs, "the yaml names no target in this module"
        return targets.patch_module(module, specs)

    yield do
    targets.unpatch_all()


@pytest.fixture
def run_script(tmp_path):
    """Run ``source`` in a fresh interpreter (cwd ``tmp_path``); returns (CompletedProcess, records).

    ``records`` are the JSON lines the script's pipeline wrote into ``tmp_path/logs`` (performance_*.log,
    then flows_*.log: the flow_complete of flows that were not retained).
    """
    def run(source, *, timeout=60, check=True, env=None):
        script = tmp_path / "script_main.py"
        script.write_text(textwrap.dedent(source))
        logs = tmp_path / "logs"
        full_env = dict(os.environ, AUTOPERF_LOG_DIR=str(logs), AUTOPERF_CONSOLE="0",
                        PYTHONPATH=os.pathsep.join([str(tmp_path), str(REPO)]))
        full_env.update(env or {})
        proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=full_env,
                              capture_output=True, text=True, timeout=timeout)
        if check:
            assert proc.returncode == 0, f"script failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        recs = []
        if logs.is_dir():
            for path in sorted(logs.glob("performance_*.log")) + sorted(logs.glob("flows_*.log")):
                recs.extend(json.loads(line) for line in path.read_text().splitlines() if line)
        return proc, recs
    return run


# -- asyncpg against a real PostgreSQL (tests/test_integration_asyncpg*.py) ------------------------
@pytest.fixture(scope="module")
def dsn():
    """A fresh database with a ``players`` table of 20 rows (dropped after the module)."""
    asyncpg = pytest.importorskip("asyncpg")
    from tests.pgserver import create_fresh_db, pg_dsn

    fresh, drop = create_fresh_db(pg_dsn())

    async def setup():
        conn = await asyncpg.connect(fresh)
        try:
            await conn.execute("CREATE TABLE players (id serial PRIMARY KEY, name text UNIQUE, mmr int)")
            await conn.execute("INSERT INTO players (name, mmr) SELECT 'p' || g, g FROM generate_series(1, 20) g")
        finally:
            await conn.close()

    asyncio.run(setup())
    yield fresh
    drop()


@pytest.fixture
def patch_pg():
    """Patch asyncpg with the given options (default options when called without); unpatch after."""
    asyncpg = pytest.importorskip("asyncpg")
    from autoperf.integrations import asyncpg as apg

    integrations.unpatch("asyncpg")

    def do(**options):
        integrations.unpatch("asyncpg")
        assert integrations.patch("asyncpg", asyncpg, options)
        apg.reset_explain_memory()

    yield do
    integrations.unpatch("asyncpg")


def db_spans(records):
    return [r for r in records if r.get("type") == "span" and r["kind"] == "db"]
