"""Post-import hooks on wrapt's importer: once per import, again when a module's code runs again,
never failing the program's import; wrapt loaded without importlib.metadata and asyncio. Fresh
interpreters."""
from __future__ import annotations

import subprocess
import sys
import textwrap


def _run(tmp_path, code):
    (tmp_path / "hooked.py").write_text("VALUE = 1\n")
    (tmp_path / "broken.py").write_text("raise KeyError('boom')\n")
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_wrapt_is_imported_without_importlib_metadata_and_asyncio_which_load_when_the_program_imports_them(tmp_path):
    """Importing autoperf's wrapt loads neither importlib.metadata nor asyncio; the program's own
    imports load the real modules, and wrapt's references to them forward there."""
    out = _run(tmp_path, """
        import sys
        from autoperf._wrapt import wrapt
        print("importlib.metadata" in sys.modules, "asyncio" in sys.modules)
        import asyncio
        from importlib.metadata import version
        print(type(sys.modules["asyncio"]).__name__, version("wrapt") == wrapt.__version__,
              wrapt.synchronization.asyncio.run is asyncio.run)
    """)
    assert out == ["False", "False", "module", "True", "True"]


def test_a_hook_fires_once_and_an_every_import_hook_again_after_a_fresh_import(tmp_path):
    """A plain hook fires at the import only; an every-import hook also after ``del sys.modules`` and a
    new import, and after ``importlib.reload`` — once each time, whichever finder runs first."""
    out = _run(tmp_path, """
        import importlib, sys
        from autoperf import posthooks
        fired = []
        posthooks.register("hooked", lambda m: fired.append("once"))
        posthooks.register("hooked", lambda m: fired.append("every"), every_import=True)
        import hooked
        del sys.modules["hooked"]
        import hooked
        importlib.reload(hooked)
        print(*fired)
    """)
    assert out == ["once", "every", "every", "every"]


def test_a_raising_hook_does_not_fail_the_import_and_a_raising_import_is_recorded(tmp_path):
    """A hook that raises leaves the program's import intact; a hooked module whose import raised is
    named in ``posthooks.failed`` with its exception type, and its hook never fires."""
    out = _run(tmp_path, """
        from autoperf import posthooks
        fired = []
        posthooks.register("hooked", lambda m: 1 / 0)
        posthooks.register("broken", fired.append, every_import=True)
        import hooked
        try:
            import broken
        except KeyError:
            pass
        print(hooked.VALUE, posthooks.failed, fired)
    """)
    assert out == ["1", "{'broken':", "'KeyError'}", "[]"]


def test_a_hook_for_a_module_whose_code_is_running_waits_for_its_next_run(tmp_path):
    """Registered by the module's own code (as ``install()`` at its top), a hook does not fire on the
    half-made module; an every-import hook fires when its code runs again (reload), once."""
    (tmp_path / "selfhooked.py").write_text(
        "from autoperf import posthooks\n"
        "if 'seen' not in globals():        # the first run only (a reload keeps the globals)\n"
        "    seen = []\n"
        "    posthooks.register(__name__, lambda m: seen.append('once'))\n"
        "    posthooks.register(__name__, lambda m: seen.append(('every', hasattr(m, 'later'))), every_import=True)\n"
        "later = 1\n")
    out = _run(tmp_path, """
        import importlib
        import selfhooked
        first = list(selfhooked.seen)
        importlib.reload(selfhooked)
        print(first, selfhooked.seen)
    """)
    assert out == ["[]", "[('every',", "True)]"]
