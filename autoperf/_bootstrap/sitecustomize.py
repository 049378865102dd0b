"""Instrument child Python processes of ``autoperf run`` (this folder is first on PYTHONPATH).

Runs once per interpreter start, installs autoperf with the parent's config (never twice in one
process: a forked child inherits the installed state), then runs the sitecustomize this file
shadows, if there is one. Any failure is reported on stderr and the program starts regardless.
"""
import os
import sys


def _install():
    if os.environ.get("AUTOPERF_CHILD") != "1":
        return
    from autoperf import bootstrap
    if bootstrap.installed():
        return
    bootstrap.install(os.environ.get("AUTOPERF_CONFIG") or None, child=True)


def _chain():
    """Run the next ``sitecustomize`` on sys.path, the one this file hides."""
    import importlib.machinery
    import importlib.util

    here = os.path.dirname(os.path.abspath(__file__))
    path = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", path)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    sys.modules["_autoperf_chained_sitecustomize"] = module
    spec.loader.exec_module(module)


try:
    _install()
except ModuleNotFoundError as exc:
    # Another interpreter (a child running /usr/bin/python3) without autoperf installed: not ours
    # to instrument, and nothing to say on the program's stderr.
    if exc.name not in ("autoperf", "wrapt", "orjson", "yaml", "psutil"):
        sys.stderr.write(f"autoperf: not instrumenting this process: {type(exc).__name__}: {exc}\n")
except Exception as exc:  # never stop the program from starting
    sys.stderr.write(f"autoperf: not instrumenting this process: {type(exc).__name__}: {exc}\n")
_chain()
