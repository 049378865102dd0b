"""``python -m autoperf run`` through real subprocesses: parity with plain python, flushing, children."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import orjson
import pytest

ROOT = Path(__file__).resolve().parents[1]


def read_records(log_dir: Path) -> list[dict]:
    """Every record line of the run: performance_*.log, then flows_*.log (unretained flows' flow_complete)."""
    out = []
    log_dir = Path(log_dir)
    for path in sorted(log_dir.glob("performance_*.log")) + sorted(log_dir.glob("flows_*.log")):
        for line in path.read_bytes().splitlines():
            out.append(orjson.loads(line))
    return out


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOPERF_")}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


class Program:
    """A script and its autoperf.yaml in a temp dir, run with and without autoperf."""

    def __init__(self, tmp_path: Path, source: str, config: str = "targets: []\n"):
        self.dir = tmp_path
        self.script = tmp_path / "prog.py"
        self.script.write_text(textwrap.dedent(source))
        self.config = tmp_path / "autoperf.yaml"
        self.config.write_text(textwrap.dedent(config))
        self.log_dir = tmp_path / "logs"

    def autoperf_cmd(self, *args, options=()):
        return [sys.executable, "-m", "autoperf", "run", "--config", str(self.config),
                "--log-dir", str(self.log_dir), "--no-console", *options, str(self.script), *args]

    def run(self, *args, options=(), plain=False, **kwargs):
        cmd = [sys.executable, str(self.script), *args] if plain else self.autoperf_cmd(*args, options=options)
        kwargs.setdefault("timeout", 120)
        return subprocess.run(cmd, cwd=self.dir, env=clean_env(), capture_output=True, text=True, **kwargs)

    def records(self):
        return read_records(self.log_dir)


PARITY = """
    import json, sys
    def main():
        print(json.dumps({"argv": sys.argv, "path0": sys.path[0], "name": __name__,
                          "file": __file__, "main_is_module": sys.modules["__main__"].__dict__ is globals(),
                          "stdin": sys.stdin.read()}))
    if __name__ == "__main__":
        main()
"""


class TestParity:
    def test_script_sees_what_plain_python_shows(self, tmp_path):
        """argv, sys.path[0], __name__, __file__, __main__ and stdin are exactly as under plain python."""
        prog = Program(tmp_path, PARITY, "targets:\n  - target: '__main__:main'\n    kind: flow\n")
        plain = prog.run("a", "--flag", "b c", plain=True, input="hello\n")
        wrapped = prog.run("a", "--flag", "b c", input="hello\n")
        assert plain.returncode == wrapped.returncode == 0, wrapped.stderr
        assert json.loads(wrapped.stdout) == json.loads(plain.stdout)
        flows = [r for r in prog.records() if r["type"] == "flow_complete"]
        assert [f["flow_name"] for f in flows] == ["__main__.main"]

    def test_module_mode_matches_python_dash_m(self, tmp_path):
        """``run -m pkg.mod`` matches ``python -m pkg.mod``, and targets naming the module apply to it."""
        pkg = tmp_path / "pkg"
        pkg.mkdir()
        (pkg / "__init__.py").write_text("")
        (pkg / "mod.py").write_text(textwrap.dedent(PARITY))
        config = tmp_path / "autoperf.yaml"
        config.write_text("targets:\n  - target: 'pkg.mod:main'\n    kind: flow\n    name: modmain\n")
        env = clean_env()
        plain = subprocess.run([sys.executable, "-m", "pkg.mod", "x"], cwd=tmp_path, env=env,
                               capture_output=True, text=True, input="in")
        wrapped = subprocess.run([sys.executable, "-m", "autoperf", "run", "--no-console",
                                  "--log-dir", str(tmp_path / "logs"), "-m", "pkg.mod", "x"],
                                 cwd=tmp_path, env=env, capture_output=True, text=True, input="in")
        assert wrapped.returncode == 0, wrapped.stderr
        a, b = json.loads(plain.stdout), json.loads(wrapped.stdout)
        assert a == b
        names = [r["flow_name"] for r in read_records(tmp_path / "logs") if r["type"] == "flow_complete"]
        assert names == ["modmain"]

    @pytest.mark.parametrize("body, code", [
        ("sys.exit(3)", 3),
        ("sys.exit()", 0),
        ("sys.exit('fatal message')", 1),
        ("raise ValueError('boom')", 1),
        ("raise KeyboardInterrupt", -signal.SIGINT),
    ])
    def test_exit_codes_match(self, tmp_path, body, code):
        """Exit codes and error output are those of plain python."""
        prog = Program(tmp_path, f"import sys\n{body}\n")
        plain = prog.run(plain=True)
        wrapped = prog.run()
        assert wrapped.returncode == plain.returncode == code
        if "ValueError" in body:
            assert "ValueError: boom" in wrapped.stderr
            assert 'prog.py", line 2, in <module>' in wrapped.stderr
            assert "autoperf" not in wrapped.stderr.replace(str(prog.dir), "")
        if "fatal" in body:
            assert "fatal message" in wrapped.stderr

    def test_bad_option_prints_usage_and_exits_2(self, tmp_path):
        """An unknown option is a usage error (exit 2) and the program does not run."""
        prog = Program(tmp_path, "open('ran', 'w').write('x')\n")
        proc = prog.run(options=["--no-such-option"])
        assert proc.returncode == 2
        assert "usage:" in proc.stderr
        assert not (tmp_path / "ran").exists()

    def test_missing_program_is_a_usage_error(self, tmp_path):
        """``autoperf run`` with no script is a usage error."""
        proc = subprocess.run([sys.executable, "-m", "autoperf", "run", "--no-console"], cwd=tmp_path,
                              env=clean_env(), capture_output=True, text=True)
        assert proc.returncode == 2 and "usage:" in proc.stderr


class TestBadConfig:
    @pytest.mark.parametrize("config, where", [
        ("targets:\n  - target: 'mod:f'\n    kind: flo\n", ":3:"),
        ("targets:\n  - target: 'mod'\n", ":2:"),
        ("log:\n  buffer_recordz: 5\n", ":2:"),
        ("targets: [\n", ":"),
        ("levels:\n  warning_ms: fast\n", ":2:"),
    ])
    def test_bad_yaml_stops_before_the_program(self, tmp_path, config, where):
        """Every class of bad YAML exits 2 naming file:line, and the program never starts."""
        prog = Program(tmp_path, "open('ran', 'w').write('x')\n", config)
        proc = prog.run()
        assert proc.returncode == 2, proc.stderr
        assert f"autoperf.yaml{where}" in proc.stderr
        assert "not started" in proc.stderr
        assert not (tmp_path / "ran").exists()

    def test_unknown_disable_name_stops_before_the_program(self, tmp_path):
        """`--disable event_loop` (the integration is `asyncio`) would measure with it on: exit 2 naming it;
        integration, feature and target names (by name or target string) are accepted."""
        prog = Program(tmp_path, "open('ran', 'w').write('x')\n",
                       "targets:\n  - target: '__main__:f'\n    name: fast_path\n")
        proc = prog.run(options=("--disable", "asyncio", "--disable", "event_loop"))
        assert proc.returncode == 2 and "--disable event_loop: no integration" in proc.stderr, proc.stderr
        assert "not started" in proc.stderr and not (tmp_path / "ran").exists()
        for name in ("asyncio", "alerts", "fast_path", "__main__:f"):
            proc = prog.run(options=("--disable", name))
            assert proc.returncode == 0, (name, proc.stderr)
        assert (tmp_path / "ran").exists()

    def test_several_problems_are_all_reported(self, tmp_path):
        """One error line per problem, not just the first."""
        prog = Program(tmp_path, "pass\n", "bogus: 1\nlevels:\n  debug_ms: x\n")
        proc = prog.run()
        assert proc.returncode == 2
        assert "autoperf.yaml:1:" in proc.stderr and "autoperf.yaml:3:" in proc.stderr


FLUSH_PROGRAM = """
    import os, signal, sys, time
    def work(i):
        return i * 2
    def command(i):
        return work(i) + work(i + 1)
    def main(mode):
        for i in range(500):
            command(i)
        print("produced", flush=True)
        if mode == "exit":
            sys.exit(4)
        if mode == "raise":
            raise RuntimeError("unhandled")
        if mode == "wait":
            time.sleep(60)
    if __name__ == "__main__":
        main(sys.argv[1])
"""
FLUSH_CONFIG = """
retain: {all: true}     # every span written: the test counts them
targets:
  - target: "__main__:command"
    kind: flow
  - target: "__main__:work"
"""


class TestLosslessStop:
    def _expect_all(self, prog):
        records = prog.records()
        spans = [r for r in records if r["type"] == "span"]
        flows = [r for r in records if r["type"] == "flow_complete"]
        assert len(flows) == 500
        assert len(spans) == 1500

    @pytest.mark.parametrize("mode, code", [("exit", 4), ("raise", 1), ("normal", 0)])
    def test_exit_paths_flush_every_record(self, tmp_path, mode, code):
        """sys.exit, an unhandled exception and a normal end leave every record on disk."""
        prog = Program(tmp_path, FLUSH_PROGRAM, FLUSH_CONFIG)
        proc = prog.run(mode)
        assert proc.returncode == code, proc.stderr
        self._expect_all(prog)

    @pytest.mark.parametrize("sig, code", [(signal.SIGTERM, -signal.SIGTERM), (signal.SIGINT, -signal.SIGINT)])
    def test_signals_flush_every_record(self, tmp_path, sig, code):
        """SIGTERM and SIGINT flush first, then the process dies by the signal, as under python."""
        prog = Program(tmp_path, FLUSH_PROGRAM, FLUSH_CONFIG)
        proc = subprocess.Popen(prog.autoperf_cmd("wait"), cwd=tmp_path, env=clean_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "produced"
        proc.send_signal(sig)
        proc.wait(timeout=30)
        assert proc.returncode == code, proc.stderr.read()
        self._expect_all(prog)

    def test_autoperf_threads_leave_process_signals_to_the_program(self, tmp_path):
        """autoperf's threads block asynchronous signals (SIGTERM, SIGINT, SIGCHLD) so the kernel delivers them
        to the program's threads: a pool worker's main thread waiting in sem_wait must get Pool.terminate()'s
        SIGTERM. Fault signals stay unblocked everywhere; the program's own threads keep an empty mask."""
        prog = Program(tmp_path, """
            import asyncio, json, signal, threading
            def blocked(tid):
                for line in open(f"/proc/self/task/{tid}/status"):
                    if line.startswith("SigBlk:"):
                        mask = int(line.split()[1], 16)
                        return [bool(mask >> (s - 1) & 1) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD,
                                                                     signal.SIGSEGV)]
            async def main():
                mine = threading.Thread(target=threading.Event().wait, args=(1,), name="program-thread", daemon=True)
                mine.start()
                await asyncio.sleep(0.3)
                print(json.dumps({t.name: blocked(t.native_id) for t in threading.enumerate()}))
            asyncio.run(main())
        """)
        proc = prog.run()
        assert proc.returncode == 0, proc.stderr
        masks = json.loads(proc.stdout)
        assert masks["MainThread"] == masks["program-thread"] == [False] * 4
        ours = {name: m for name, m in masks.items() if name.startswith("autoperf-")}
        assert {"autoperf-writer", "autoperf-sampler", "autoperf-loop-watchdog", "autoperf-signals"} <= set(ours), masks
        assert all(m == [True, True, True, False] for m in ours.values()), ours

    def test_sigterm_right_after_a_fork_still_ends_the_child(self, tmp_path):
        """A SIGTERM sent to a child the moment it is forked (Pool.terminate() just after the pool started a
        worker) ends it, as it would without autoperf: CPython forgets signals caught before its after-fork
        reset, so autoperf blocks them across the fork. Without that, every one of these was lost."""
        prog = Program(tmp_path, """
            import os, signal, time
            def command():
                return 1
            outcomes = []
            for _ in range(3):
                pid = os.fork()
                if pid == 0:
                    command()
                    time.sleep(5)          # a worker waiting for work
                    os._exit(3)
                os.kill(pid, signal.SIGTERM)
                _, status = os.waitpid(pid, 0)
                outcomes.append(os.WTERMSIG(status) if os.WIFSIGNALED(status) else -os.WEXITSTATUS(status))
            print(outcomes)
        """, "targets:\n  - target: '__main__:command'\n")
        started = time.monotonic()
        proc = prog.run()
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == str([int(signal.SIGTERM)] * 3)
        assert time.monotonic() - started < 5

    def test_program_sigterm_handler_still_runs(self, tmp_path):
        """A program that handles SIGTERM itself keeps its handler; records still land at exit."""
        prog = Program(tmp_path, """
            import signal, sys, time
            def command():
                return 1
            def on_term(signum, frame):
                print("graceful", flush=True)
                sys.exit(7)
            signal.signal(signal.SIGTERM, on_term)
            for _ in range(10):
                command()
            print("ready", flush=True)
            time.sleep(60)
        """, "targets:\n  - target: '__main__:command'\n    kind: flow\n")
        proc = subprocess.Popen(prog.autoperf_cmd(), cwd=tmp_path, env=clean_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        assert proc.returncode == 7
        assert proc.stdout.read().strip() == "graceful"
        assert len([r for r in prog.records() if r["type"] == "flow_complete"]) == 10


CHILDREN_PROGRAM = """
    import faulthandler, multiprocessing as mp, os, subprocess, sys
    import worker_mod
    if __name__ == "__main__":
        faulthandler.dump_traceback_later(60, exit=True)  # a hang shows every thread's stack
        ctx = mp.get_context(sys.argv[1])
        with ctx.Pool(2) as pool:
            print(sorted(pool.map(worker_mod.square, range(6))))
        out = subprocess.run([sys.executable, "-c", "import worker_mod; print(worker_mod.square(7))"],
                             capture_output=True, text=True)
        print(out.stdout.strip(), out.stderr.strip())
        pid = os.fork()
        if pid == 0:
            worker_mod.square(100)
            os._exit(0)
        os.waitpid(pid, 0)
"""
ALL_SPANS = "retain: {all: true}\n"     # the tests of children count every span they record
WORKER_MODULE = """
def square(x):
    return x * x
"""


class TestChildren:
    @pytest.mark.parametrize("method", ["spawn", "forkserver", "fork"])
    def test_child_processes_are_instrumented_once(self, tmp_path, method):
        """multiprocessing children, a ``python -c`` subprocess and an os.fork child record their spans once each."""
        (tmp_path / "worker_mod.py").write_text(WORKER_MODULE)
        prog = Program(tmp_path, CHILDREN_PROGRAM, ALL_SPANS + "targets:\n  - target: 'worker_mod:square'\n")
        proc = prog.run(method)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.splitlines()[0] == "[0, 1, 4, 9, 16, 25]"
        assert proc.stdout.splitlines()[1].strip() == "49"
        spans = [r for r in prog.records() if r["type"] == "span" and r["name"] == "worker_mod.square"
                 and r["kind"] == "span"]
        # 6 pool calls + 1 subprocess call + 1 fork child call, each recorded exactly once.
        assert len(spans) == 8, [(s["pid"]) for s in spans]
        parent_pid = {r["pid"] for r in prog.records() if r.get("code") == "internal_error"}
        assert not parent_pid
        assert len({s["pid"] for s in spans}) >= 3

    def test_a_fork_while_an_autoperf_thread_imports_leaves_the_child_free_to_import(self, tmp_path):
        """A fork while one of autoperf's threads is inside an import (its exporter loading protobuf, its writer
        orjson): the child imports that module too and ends. Before, the child inherited the module's import lock
        held by a thread that does not exist there and hung for ever."""
        (tmp_path / "slowmod.py").write_text("import time\ntime.sleep(0.6)\nVALUE = 42\n")
        prog = Program(tmp_path, """
            import os, threading, time
            from autoperf import threads
            def load():
                import slowmod
            threads.start(threading.Thread(target=load, daemon=True))   # as autoperf starts its own threads
            time.sleep(0.2)                                              # load() is inside slowmod's import
            pid = os.fork()
            if pid == 0:
                import slowmod
                os._exit(slowmod.VALUE)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    print(os.waitstatus_to_exitcode(status))
                    break
                time.sleep(0.05)
            else:
                os.kill(pid, 9)
                print("child hung")
        """)
        proc = prog.run()
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == "42"

    @pytest.mark.parametrize("method", ["spawn", "forkserver", "fork"])
    @pytest.mark.parametrize("target", ["__main__:work", "prog:work"])
    def test_a_function_of_the_script_is_recorded_in_workers_under_its_parents_name(self, tmp_path, method, target):
        """A target in the script itself (``__main__:f`` or ``prog:f``) records its calls in pool workers of every
        start method, named as in the program's process (a spawned worker runs the script as __mp_main__)."""
        prog = Program(tmp_path, """
            import concurrent.futures, multiprocessing as mp, sys
            def work(i):
                return i * 2
            if __name__ == "__main__":
                with concurrent.futures.ProcessPoolExecutor(2, mp_context=mp.get_context(sys.argv[1])) as pool:
                    print(sum(pool.map(work, range(10))))
        """, ALL_SPANS + f"targets:\n  - target: '{target}'\n")
        proc = prog.run(method)
        assert proc.returncode == 0 and proc.stdout.strip() == "90", proc.stderr
        spans = [r for r in prog.records() if r["type"] == "span" and r["kind"] == "span"]
        assert [s["name"] for s in spans] == ["__main__.work"] * 10, spans
        assert os.getpid() not in {s["pid"] for s in spans}

    @pytest.mark.parametrize("method", ["spawn", "forkserver", "fork"])
    def test_multiprocessing_children_keep_sigterms_default(self, tmp_path, method):
        """The program's SIGTERM flushes through autoperf's handler; a multiprocessing child gets the default
        action back between jobs (Process/Pool.terminate() count on it: a Python handler can miss a SIGTERM
        that lands just before the worker blocks), autoperf's only while a job runs, and records its job."""
        (tmp_path / "worker_mod.py").write_text(WORKER_MODULE + textwrap.dedent("""
            import signal
            from autoperf import lifecycle
            def handler(_):
                return signal.getsignal(signal.SIGTERM) is lifecycle.on_sigterm
        """))
        prog = Program(tmp_path, """
            import multiprocessing as mp, signal, sys
            import worker_mod
            if __name__ == "__main__":
                with mp.get_context(sys.argv[1]).Pool(1) as pool:
                    print(signal.getsignal(signal.SIGTERM) == signal.SIG_DFL, pool.apply(worker_mod.handler, (0,)),
                          pool.apply(worker_mod.square, (3,)))
        """, ALL_SPANS + "targets:\n  - target: 'worker_mod:square'\n")
        proc = prog.run(method)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.split() == ["False", "True", "9"]
        recs = prog.records()
        done_in_worker = [r for r in recs if r["type"] == "span" and r["kind"] == "span" and r["name"] == "worker_mod.square"]
        jobs = [r for r in recs if r["type"] == "span" and r["kind"] == "job"]
        assert len(done_in_worker) == 1 and len(jobs) == 2 and done_in_worker[0]["pid"] != jobs[0]["pid"]

    def test_existing_sitecustomize_is_chained(self, tmp_path):
        """A sitecustomize already on PYTHONPATH still runs in instrumented children."""
        site = tmp_path / "site"
        site.mkdir()
        (site / "sitecustomize.py").write_text("import os\nos.environ['CHAINED_SITE'] = 'yes'\n")
        (tmp_path / "worker_mod.py").write_text(WORKER_MODULE)
        prog = Program(tmp_path, """
            import subprocess, sys
            code = "import os, worker_mod, autoperf.bootstrap as b; worker_mod.square(3); print(os.environ.get('CHAINED_SITE'), b.installed())"
            print(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip())
        """, ALL_SPANS + "targets:\n  - target: 'worker_mod:square'\n")
        env = clean_env(PYTHONPATH=f"{site}{os.pathsep}{ROOT}")
        proc = subprocess.run(prog.autoperf_cmd(), cwd=tmp_path, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == "yes True"
        assert [r["name"] for r in prog.records() if r["type"] == "span" and r["kind"] == "span"] == ["worker_mod.square"]


class TestTargetsAtRunTime:
    def test_unresolved_targets_warn_and_the_program_runs(self, tmp_path):
        """A missing attribute and a never-imported module each give one warning record; exit code unchanged."""
        (tmp_path / "helpers.py").write_text("def compute():\n    return 41\n")
        prog = Program(tmp_path, """
            import helpers
            print(helpers.compute() + 1)
        """, """
            retain: {all: true}
            targets:
              - target: "helpers:compute"
              - target: "helpers:compute_all"
              - target: "never_imported_mod:f"
        """)
        proc = prog.run()
        assert proc.returncode == 0 and proc.stdout.strip() == "42", proc.stderr
        warnings = {r["code"]: r for r in prog.records() if r["type"] == "warning"}
        assert "compute_all" in warnings["target_not_found"]["message"]
        assert "compute" in warnings["target_not_found"]["nearest"]
        assert warnings["target_module_not_imported"]["target"] == "never_imported_mod:f"
        assert [r["name"] for r in prog.records() if r["type"] == "span"] == ["helpers.compute"]

    def test_main_functions_are_wrapped_before_the_main_block_calls_them(self, tmp_path):
        """``__main__:Class.method`` targets are wrapped as soon as the class exists."""
        prog = Program(tmp_path, """
            import asyncio
            class Bot:
                async def on_command(self, user):
                    await asyncio.sleep(0)
                    return user
            if __name__ == "__main__":
                print(asyncio.run(Bot().on_command(5)))
        """, """
            targets:
              - target: "__main__:Bot.on_command"
                kind: flow
                name: on_command
                capture: {user_id: user}
        """)
        proc = prog.run()
        assert proc.returncode == 0 and proc.stdout.strip() == "5", proc.stderr
        flows = [r for r in prog.records() if r["type"] == "flow_complete"]
        assert len(flows) == 1 and flows[0]["user_id"] == 5


class TestOtherCommands:
    def test_validate_reports_resolution_with_nearest_names(self, tmp_path):
        """``autoperf validate`` says which targets resolve and names the nearest existing names of those that do not."""
        (tmp_path / "svc.py").write_text("def fetch_profile():\n    pass\n")
        (tmp_path / "autoperf.yaml").write_text(
            "targets:\n  - target: 'svc:fetch_profile'\n  - target: 'svc:fetch_profil'\n")
        proc = subprocess.run([sys.executable, "-m", "autoperf", "validate"], cwd=tmp_path,
                              env=clean_env(), capture_output=True, text=True)
        assert proc.returncode == 1, proc.stderr
        assert "✓  svc:fetch_profile" in proc.stdout
        assert "✗  svc:fetch_profil" in proc.stdout and "nearest: fetch_profile" in proc.stdout

    def test_schema_is_json_schema(self, tmp_path):
        """``autoperf schema`` prints a JSON Schema describing the targets list."""
        proc = subprocess.run([sys.executable, "-m", "autoperf", "schema"], cwd=tmp_path,
                              env=clean_env(), capture_output=True, text=True)
        assert proc.returncode == 0
        schema = json.loads(proc.stdout)
        assert "targets" in schema["properties"]


def test_console_view_is_human_readable(tmp_path):
    """``--console`` prints coloured-or-plain lines for flows on stderr, leaving stdout alone."""
    prog = Program(tmp_path, """
        def command():
            return 1
        command()
        print("out")
    """, "targets:\n  - target: '__main__:command'\n    kind: flow\n")
    proc = subprocess.run([sys.executable, "-m", "autoperf", "run", "--config", str(prog.config),
                           "--log-dir", str(prog.log_dir), "--console", str(prog.script)],
                          cwd=tmp_path, env=clean_env(), capture_output=True, text=True)
    assert proc.stdout == "out\n"
    assert "flow  __main__.command" in proc.stderr and "INFO" in proc.stderr
