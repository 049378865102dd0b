"""Small faults of issue 19, item 11: a target module whose import raised is named as such."""
from __future__ import annotations

from tests.faults import Program


def test_a_target_module_that_raised_on_import_is_reported_as_raising(tmp_path):
    """A target whose module was imported and raised gets ``target_module_import_failed`` naming the
    exception, not ``target_module_not_imported``."""
    (tmp_path / "brokenmod.py").write_text("def f():\n    pass\nraise RuntimeError('boom')\n")
    prog = Program(tmp_path, """
        try:
            import brokenmod
        except RuntimeError:
            pass
    """, "targets:\n  - target: 'brokenmod:f'\n  - target: 'nevermod:g'\nsampler: {enabled: false}\n")
    done = prog.run()
    assert done.returncode == 0, done.stderr
    warnings = {r["code"]: r for r in prog.records() if r["type"] == "warning"}
    assert warnings["target_module_import_failed"]["target"] == "brokenmod:f"
    assert "RuntimeError" in warnings["target_module_import_failed"]["message"]
    assert warnings["target_module_not_imported"]["target"] == "nevermod:g"
