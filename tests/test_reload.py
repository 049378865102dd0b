"""A module reloaded while the program runs keeps its instrumentation; one unloaded is not "never imported"."""
from __future__ import annotations

import collections
import textwrap

from test_cli_run import Program

WORKER = """
    VERSION = {version}

    def handle(n):
        return n * VERSION

    class Job:
        def run(self):
            return VERSION
"""
CONFIG = """
retain: {all: true}     # counts the spans before and after the reload
targets:
  - target: 'worker:handle'
    kind: flow
    sla_ms: 1000
  - target: 'worker:Job.run'
  - target: 'never_imported:thing'
"""


def test_importlib_reload_keeps_targets_and_unload_is_no_false_warning(tmp_path):
    """After ``importlib.reload`` the new functions and classes are instrumented (records before and after);
    after the module leaves ``sys.modules`` no 'never imported' warning names it — only the module that never was."""
    prog = Program(tmp_path, """
        import importlib, pathlib, sys
        import worker

        source = pathlib.Path(worker.__file__)
        assert worker.handle(2) == 2 and worker.Job().run() == 1
        # a new size: a bytecode cache written this same second is then stale whatever the clock says
        source.write_text(source.read_text().replace("VERSION = 1", "VERSION = 3  # edited"))
        importlib.invalidate_caches()
        importlib.reload(worker)
        assert worker.handle(2) == 6 and worker.Job().run() == 3
        importlib.reload(worker)
        worker.handle(1)
        del sys.modules["worker"]       # unloaded, as discord.py's unload_extension does
    """, CONFIG)
    (tmp_path / "worker.py").write_text(textwrap.dedent(WORKER.format(version=1)))
    proc = prog.run()
    assert proc.returncode == 0, proc.stderr
    records = prog.records()
    flows = [r for r in records if r["type"] == "flow_complete"]
    assert [f["flow_name"] for f in flows] == ["worker.handle"] * 3
    assert all(f["sla_ms"] == 1000 and f["sla_met"] for f in flows)
    runs = collections.Counter(r["name"] for r in records if r["type"] == "span" and r["kind"] == "span")
    assert runs == {"worker.Job.run": 2}
    warned = [r.get("target") for r in records if r["type"] == "warning"]
    assert warned == ["never_imported:thing"], records
