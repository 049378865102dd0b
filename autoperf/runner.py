"""Run a script or module exactly as ``python script.py`` / ``python -m module`` would.

``sys.argv``, ``sys.path[0]``, ``__main__`` (so the ``if __name__ == "__main__":`` block runs),
``__file__``, exit codes and tracebacks match plain Python. The one difference is invisible: the
script's code is compiled with a call inserted after each top-level ``def``/``class`` that a
``__main__:…`` target names, so those functions are wrapped the moment they exist — before the
script's own main block calls them.
"""
from __future__ import annotations

import builtins
import fnmatch
import os
import sys
import traceback
import types

from autoperf.current import CURRENT_SPAN, unmute

_HOOK = "__autoperf_main_hook__"
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def script_module_name(script):
    """The module name a script's file would have if imported (``app`` for ``app.py``), or None: the
    name people write in targets for the functions of the script they run."""
    if not script:
        return None
    stem, ext = os.path.splitext(os.path.basename(script))
    return stem if ext == ".py" and stem.isidentifier() else None


def _first_component(spec):
    return spec.qualname.split(".", 1)[0]


def _instrumented_code(source, filename, specs):
    """Compile ``source``; after each matching top-level definition, call the patch hook."""
    import ast
    tree = ast.parse(source, filename)
    if specs:
        patterns = {_first_component(s) for s in specs}
        body = []
        swept = False
        for node in tree.body:
            if not swept and isinstance(node, ast.If) and _is_main_guard(node):
                body.append(_hook_call(node, None))  # sweep before the main block runs
                swept = True
            body.append(node)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and any(
                    fnmatch.fnmatchcase(node.name, p) for p in patterns):
                body.append(_hook_call(node, node.name, after=True))
        body.append(_hook_call(tree.body[-1] if tree.body else tree, None, after=True))
        tree.body = body
    return compile(tree, filename, "exec", dont_inherit=True)


def _hook_call(node, name, after=False):
    import ast
    call = ast.Expr(ast.Call(ast.Name(_HOOK, ast.Load()), [ast.Constant(name)], []))
    ast.copy_location(call, node)
    if after and hasattr(node, "end_lineno"):
        call.lineno = call.end_lineno = node.end_lineno or node.lineno
    ast.fix_missing_locations(call)
    return call


def _main_hook(module, specs):
    from autoperf import diagnostics, targets

    def hook(name):
        # name=None is the sweep (before the main block and at the end): it wraps whatever
        # exists and reports the targets that don't; the registry skips what is wrapped already.
        try:
            chosen = specs if name is None else [
                s for s in specs if fnmatch.fnmatchcase(name, _first_component(s))]
            if chosen:
                targets.patch_module(module, chosen)
        except Exception as exc:
            diagnostics.internal_error("patching __main__", exc)
    return hook


def _is_main_guard(node):
    """``if __name__ == "__main__":``"""
    import ast
    test = node.test
    return (isinstance(test, ast.Compare) and isinstance(test.left, ast.Name)
            and test.left.id == "__name__" and len(test.comparators) == 1
            and isinstance(test.comparators[0], ast.Constant) and test.comparators[0].value == "__main__")


def _new_main(filename, spec=None, loader=None):
    module = types.ModuleType("__main__")
    module.__dict__.update({
        "__file__": filename,
        "__cached__": getattr(spec, "cached", None),
        "__loader__": loader,
        "__package__": spec.parent if spec is not None else None,
        "__spec__": spec,
        "__builtins__": builtins,            # the module, as python gives __main__
    })
    return module


#: Set by ``autoperf run`` when targets are configured: each call of a wrapped function is one more
#: Python frame, so recursion through it would fail at half python's depth; the limit is doubled.
wrapped_targets = False

#: True once the program ended with an uncaught KeyboardInterrupt: ``autoperf run`` then dies by
#: SIGINT after the exit handlers, as python does (a parent sees -2, not 130).
interrupted = False


def _frames_below():
    """Frames (and C-level evaluation entries) between the interpreter's start and the program's
    main frame that plain python does not have: ``autoperf run`` compensates the recursion limit."""
    depth, frame = 1, sys._getframe(1)     # 1: exec() of the program enters a new evaluation loop
    while frame is not None:
        depth += 1
        if frame.f_code.co_name == "<module>" and frame.f_back is not None:
            depth += 1                         # a module exec'd from below (runpy): another entry
        frame = frame.f_back
    return depth


def _execute(module, code, specs):
    """Run ``code`` as ``__main__``; return the exit code Python would have returned."""
    global interrupted
    sys.modules["__main__"] = module
    if specs:
        module.__dict__[_HOOK] = _main_hook(module, specs)
    extra = _frames_below() + (sys.getrecursionlimit() if wrapped_targets else 0)
    limit = sys.getrecursionlimit() + extra
    sys.setrecursionlimit(limit)
    program_context = CURRENT_SPAN.set(None)   # autoperf run is muted around the program, not in it
    try:
        exec(code, module.__dict__)
        return 0
    except SystemExit as exc:
        return _exit_code(exc)
    except KeyboardInterrupt:
        _print_exception()
        interrupted = True
        return 130
    except BaseException:
        _print_exception()
        return 1
    finally:
        unmute(program_context)
        module.__dict__.pop(_HOOK, None)
        if sys.getrecursionlimit() == limit:    # the program did not set its own
            sys.setrecursionlimit(limit - extra)


def _exit_code(exc: SystemExit) -> int:
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    try:
        sys.stderr.write(f"{code}\n")
        sys.stderr.flush()
    except Exception:
        pass
    return 1


def _print_exception():
    """The traceback Python would print: our own frames trimmed, the program's excepthook used."""
    etype, value, tb = sys.exc_info()
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        tb = tb.tb_next
    if value is not None:
        value.__traceback__ = tb
    try:
        sys.excepthook(etype, value, tb)
    except Exception:
        traceback.print_exception(etype, value, tb)


def run_path(script: str, args: list[str], specs=()) -> int:
    """``python script args…``."""
    from importlib.machinery import SourceFileLoader

    # python >= 3.9 gives __main__ an absolute __file__: the cwd joined to the path as typed
    filename = script if os.path.isabs(script) else os.path.join(os.getcwd(), script)
    sys.argv[:] = [script, *args]
    sys.path[0] = os.path.dirname(os.path.realpath(script))
    try:
        with open(script, "rb") as handle:
            source = handle.read()
    except OSError as exc:
        sys.stderr.write(f"{sys.executable}: can't open file {os.path.abspath(script)!r}: "
                         f"[Errno {exc.errno}] {exc.strerror}\n")
        return 2
    loader = SourceFileLoader("__main__", filename)
    try:
        code = _instrumented_code(source, filename, list(specs))
    except SyntaxError:
        _print_exception()
        return 1
    return _execute(_new_main(filename, None, loader), code, list(specs))


def run_module(name: str, args: list[str], specs_for=lambda module_name: ()) -> int:
    """``python -m name args…``."""
    import importlib.util

    sys.argv[:] = [name, *args]
    sys.path[0] = os.getcwd()
    try:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations is not None:
            spec = importlib.util.find_spec(f"{name}.__main__")  # a package: run its __main__
    except (ImportError, ValueError) as exc:
        sys.stderr.write(f"{sys.executable}: Error while finding module specification for "
                         f"{name!r} ({type(exc).__name__}: {exc})\n")
        return 1
    if spec is None or spec.loader is None:
        sys.stderr.write(f"{sys.executable}: No module named {name}\n")
        return 1
    filename = spec.origin
    sys.argv[0] = filename
    specs = list(specs_for(spec.name))
    try:
        source = spec.loader.get_source(spec.name)
    except Exception:
        source = None
    try:
        if source is None or not specs:
            code = spec.loader.get_code(spec.name)
        else:
            code = _instrumented_code(source, filename, specs)
    except SyntaxError:
        _print_exception()
        return 1
    return _execute(_new_main(filename, spec, spec.loader), code, specs)
