"""The contract every row of the integration table keeps, each case in a fresh interpreter.

Patching wraps what the row lists, a second patch is refused, unpatch puts back the very objects
found in ``vars(owner)``, patch/unpatch/patch is the same again, and the library imported before or
after the hook is registered (ddtrace's import-order matrix) ends patched alike.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest

from autoperf import integrations

ROWS = [entry.name for entry in integrations.TABLE]

# Runs in a fresh interpreter: argv = integration name, order. Prints one JSON line of findings.
CHILD = textwrap.dedent('''
    import importlib, json, sys
    from autoperf import integrations, posthooks
    from autoperf.config import load_config
    from autoperf.integrations import base

    name, order = sys.argv[1], sys.argv[2]
    entry = integrations.BY_NAME[name]
    options = load_config(None).integration(name)

    def rows():
        """(row, owner, attr) for every row this library version has, modules imported."""
        out = []
        for row in entry.wraps:
            importlib.import_module(row.module)
            found = integrations._owner(row.module, row.qualname)
            if found is not None and (not row.when or options.get(row.when, True)):
                out.append((row, *found))
        return out

    def state(found):
        return [vars(owner)[attr] for _, owner, attr in found]

    report = {}
    if order == "hook_first":       # the library is imported after the hook is registered
        posthooks.register(entry.library, lambda m: report.setdefault("patched", integrations.patch(name, m, options)))
        library = importlib.import_module(entry.library)
        found = rows()
        originals = [base.original(owner, attr) for _, owner, attr in found]
    else:                           # imported first, patched after
        library = importlib.import_module(entry.library)
        found = rows()
        originals = state(found)
        report["patched"] = integrations.patch(name, library, options)
    report["rows"] = len(found)
    report["wrapped"] = sum(now is not was for now, was in zip(state(found), originals))
    report["second_refused"] = integrations.patch(name, library, options) is False
    integrations.unpatch(name)
    report["restored"] = all(now is was for now, was in zip(state(found), originals))
    report["left"] = len(base.changed_by(name))
    report["repatched"] = integrations.patch(name, library, options)
    report["rewrapped"] = sum(now is not was for now, was in zip(state(found), originals))
    integrations.unpatch(name)
    report["restored_again"] = all(now is was for now, was in zip(state(found), originals))
    if name == "resources":
        from autoperf import sampler as resources
        report["sampler_stopped"] = not resources.running()
    print(json.dumps(report))
''')


def _env():
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOPERF_")}
    env["AUTOPERF_CONFIG_CACHE"] = "0"
    return env


def _available(name):
    library = integrations.BY_NAME[name].library
    return importlib.util.find_spec(library.split(".")[0]) is not None


@pytest.mark.parametrize("order", ["import_first", "hook_first"])
@pytest.mark.parametrize("name", ROWS)
def test_every_row_patches_once_and_restores_by_identity(name, order, tmp_path):
    """Each integration wraps every row its library has, refuses a second patch, restores each
    attribute by identity and patches again the same, whichever came first: import or hook."""
    if not _available(name):
        pytest.skip(f"{integrations.BY_NAME[name].library} is not installed")
    result = subprocess.run([sys.executable, "-c", CHILD, name, order], capture_output=True, text=True,
                            timeout=120, cwd=tmp_path, env=_env())
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    entry = integrations.BY_NAME[name]
    assert report["patched"] is True
    assert report["rows"] >= (1 if entry.wraps else 0)
    assert report["wrapped"] == report["rows"], report
    assert report["second_refused"], report
    assert report["restored"] and report["left"] == 0, report
    assert report["repatched"] is True and report["rewrapped"] == report["rows"], report
    assert report["restored_again"], report
    if name == "resources":
        assert report["sampler_stopped"]


def test_a_library_module_imported_after_patching_is_wrapped_then():
    """Rows of a module the program imports only later (discord.ext.tasks) are wrapped at that import,
    and restored by unpatch."""
    if not _available("discord"):
        pytest.skip("discord.py is not installed")
    code = textwrap.dedent('''
        import sys, discord
        from autoperf import integrations
        assert "discord.ext.tasks" not in sys.modules
        assert integrations.patch("discord", discord, {})
        from discord.ext import tasks
        from autoperf.integrations import base
        wrapped = base.is_wrapped(tasks.Loop, "__init__")
        original = base.original(tasks.Loop, "__init__")
        integrations.unpatch("discord")
        print(wrapped, vars(tasks.Loop)["__init__"] is original)
    ''')
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=_env())
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "True"]


def test_a_library_outside_the_version_range_is_not_patched(monkeypatch):
    """A library whose version the row's specifier excludes is left alone, with one warning."""
    import types

    from autoperf import diagnostics

    fake = types.ModuleType("httpx")
    fake.__version__ = "0.1.0"
    warned = []
    monkeypatch.setattr(diagnostics, "warn_once", lambda code, message, **kw: warned.append(code))
    integrations.unpatch("httpx")
    assert integrations.patch("httpx", fake, {}) is False
    assert "httpx" not in integrations.patched_names()
    assert warned == ["integration_version"]
