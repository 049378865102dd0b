"""``autoperf validate`` resolves targets from source without running the program, says which it did,
and shows the names records will carry; ``autoperf run app.py`` applies ``app:…`` targets to the script."""
from __future__ import annotations

import subprocess
import sys
import textwrap

from test_cli_run import Program, clean_env

SERVICE = """
    import pathlib
    pathlib.Path("IMPORTED").write_text("the module's import-time code ran")
    from shop.base import Base

    def fetch_profile(user_id):
        return user_id

    class Repo(Base):
        def fetch_user(self, query):
            return []

        async def fetch_match(self, query):
            return []

        def close(self):
            pass

    handler = fetch_profile
"""
BASE = """
    class Base:
        def ping(self):
            return True
"""
COGS = """
    from discord import app_commands, ui
    from discord.ext import commands

    class Ladder(commands.Cog):
        @app_commands.command(name="queue", description="join the queue")
        async def queue_cmd(self, interaction):
            pass

        @commands.group()
        async def tag(self, ctx):
            pass

        @tag.command(name="create")
        async def tag_create(self, ctx, name):
            pass

    class JoinView(ui.View):
        @ui.button(label="Join")
        async def join(self, interaction, button):
            pass

    class LeaveButton(ui.Button):
        async def callback(self, interaction):
            pass

    class LadderBot(commands.Bot):
        async def on_message(self, message):
            pass
"""
CONFIG = """
    targets:
      - target: 'shop.service:fetch_profile'
      - target: 'shop.service:fetch_profil'
      - target: 'shop.service:Repo.fetch_*'
        kind: db
      - target: 'shop.service:Repo.fetch_*'
        name: repo
      - target: 'shop.service:handler'
        name: the_handler
      - target: 'shop.service:Base.ping'
      - target: 'shop.cogs:Ladder.queue_cmd'
        kind: flow
      - target: 'shop.cogs:Ladder.tag_create'
        kind: flow
      - target: 'shop.cogs:JoinView.join'
        kind: flow
      - target: 'shop.cogs:LeaveButton.callback'
        kind: flow
      - target: 'shop.cogs:Ladder.queue_cmd'
        kind: flow
        name: queue_command
      - target: 'shop.cogs:LadderBot.on_message'
        kind: flow
"""


def _project(tmp_path):
    pkg = tmp_path / "shop"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("import pathlib\npathlib.Path('PKG_IMPORTED').write_text('ran')\n")
    (pkg / "service.py").write_text(textwrap.dedent(SERVICE))
    (pkg / "base.py").write_text(textwrap.dedent(BASE))
    (pkg / "cogs.py").write_text(textwrap.dedent(COGS))
    (tmp_path / "autoperf.yaml").write_text(textwrap.dedent(CONFIG))


def _validate(tmp_path, *args):
    return subprocess.run([sys.executable, "-m", "autoperf", "validate", *args], cwd=tmp_path, env=clean_env(),
                          capture_output=True, text=True, timeout=60)


def test_validate_reads_source_and_runs_nothing(tmp_path):
    """By default no module of the program is imported (no import-time code runs), and the output says so."""
    _project(tmp_path)
    proc = _validate(tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr        # one target does not resolve
    assert not (tmp_path / "IMPORTED").exists() and not (tmp_path / "PKG_IMPORTED").exists()
    assert "resolved from source, nothing imported or run" in proc.stdout
    assert "✗  shop.service:fetch_profil  'fetch_profil' not found; nearest: fetch_profile" in proc.stdout


def test_validate_shows_the_record_names(tmp_path):
    """Each resolved target shows the name its records carry: module.qualname, the target's name, per wildcard
    match, through an import, and the name the discord integration gives a command or component flow."""
    _project(tmp_path)
    out = _validate(tmp_path).stdout
    assert "shop.service:fetch_profile  [span] -> fetch_profile; records named 'shop.service.fetch_profile'" in out
    assert "Repo.fetch_match; records named 'shop.service.Repo.fetch_match'" in out
    assert "Repo.fetch_user; records named 'shop.service.Repo.fetch_user'" in out
    assert "Repo.fetch_user; records named 'repo.fetch_user'" in out
    assert "Repo.close" not in out
    assert "shop.service:handler  [span] -> handler; records named 'the_handler'" in out
    assert "shop.service:Base.ping  [span] -> Base.ping; records named 'shop.base.Base.ping'" in out
    assert "shop.cogs:Ladder.queue_cmd  [flow] -> Ladder.queue_cmd; records named 'queue'" in out
    assert "shop.cogs:Ladder.tag_create  [flow] -> Ladder.tag_create; records named 'tag create'" in out
    assert "shop.cogs:JoinView.join  [flow] -> JoinView.join; records named 'JoinView.join'" in out
    assert "records named '<View>.LeaveButton.callback'" in out
    assert "records named 'queue_command'" in out
    assert "LadderBot.on_message; records named 'on_message'" in out


def test_validate_import_mode_imports_and_says_so(tmp_path):
    """``--import`` imports the modules (their code runs, as the output says) and resolves the live objects."""
    _project(tmp_path)
    proc = _validate(tmp_path, "--import")
    assert (tmp_path / "IMPORTED").exists()
    assert "modules imported (their import-time code ran)" in proc.stdout
    assert "records named 'shop.service.Repo.fetch_user'" in proc.stdout
    assert "records named 'shop.base.Base.ping'" in proc.stdout
    assert "records named 'queue'" in proc.stdout and "records named 'tag create'" in proc.stdout
    assert "records named 'JoinView.join'" in proc.stdout
    assert "records named '<View>.LeaveButton.callback'" in proc.stdout
    assert "records named 'on_message'" in proc.stdout
    assert "nearest: fetch_profile" in proc.stdout and proc.returncode == 1


def test_validate_checks_the_script_targets(tmp_path):
    """Given the script, ``__main__:f`` and ``app:f`` (the script's own module name) are checked against it."""
    (tmp_path / "app.py").write_text("def handle():\n    return 1\n\nif __name__ == '__main__':\n    handle()\n")
    (tmp_path / "autoperf.yaml").write_text(
        "targets:\n  - target: 'app:handle'\n    kind: flow\n  - target: '__main__:handl'\n")
    proc = _validate(tmp_path, "app.py")
    assert "✓  app:handle  [flow] -> handle (the script: it runs as __main__); records named '__main__.handle'" \
        in proc.stdout
    assert "✗  __main__:handl  'handl' not found (the script: it runs as __main__); nearest: handle" in proc.stdout
    without = _validate(tmp_path).stdout
    assert "?  __main__:handl  (the program's __main__: give the script" in without


def test_run_applies_targets_named_after_the_script(tmp_path):
    """``autoperf run app.py`` with a target ``app:handle`` instruments the script's ``handle`` (it runs as
    ``__main__``), and no 'module app was never imported' warning follows."""
    prog = Program(tmp_path, """
        def handle():
            return 1

        if __name__ == "__main__":
            handle()
            handle()
    """, "targets:\n  - target: 'prog:handle'\n    kind: flow\n    sla_ms: 1000\n")
    proc = prog.run()
    assert proc.returncode == 0, proc.stderr
    records = prog.records()
    flows = [r for r in records if r["type"] == "flow_complete"]
    assert [f["flow_name"] for f in flows] == ["__main__.handle"] * 2 and all(f["sla_met"] for f in flows)
    assert not [r for r in records if r["type"] == "warning"], records
