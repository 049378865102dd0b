"""A hostile autoperf.yaml: exit 2 with ``file:line:col: path: message`` lines, never a traceback,
a hang or unbounded output (issue 19, item 6)."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from autoperf.config import json_schema
from tests.faults import clean_env
from tests.fuzz_config import HOSTILE_DOCS

LINE = re.compile(r"^(?:autoperf: )?(?P<file>[^:\n]+):(?P<line>\d+):(?P<col>\d+): \S[^\n]*: .+$")


def validate(tmp_path, content: bytes, env=None, command="validate"):
    path = tmp_path / "autoperf.yaml"
    path.write_bytes(content)
    cmd = [sys.executable, "-m", "autoperf", "validate", "--config", str(path)] if command == "validate" else \
        [sys.executable, "-m", "autoperf", "run", "--config", str(path), str(tmp_path / "prog.py")]
    if command == "run":
        (tmp_path / "prog.py").write_text("print('started')\n")
    done = subprocess.run(cmd, env=clean_env(**(env or {})), capture_output=True, timeout=60, cwd=tmp_path)
    return done.returncode, done.stderr.decode("utf-8", "replace").splitlines()


def assert_formatted(code, lines, where=None, contains=None):
    assert code == 2, lines
    lines = [line for line in lines if line != "autoperf: the program was not started"]
    assert lines and all(LINE.match(line) for line in lines), lines
    if where:
        first = LINE.match(lines[0])
        assert f"{first['line']}:{first['col']}" == where, lines[0]
    if contains:
        assert any(contains in line for line in lines), lines


def number_fields(schema=None, path=""):
    """Dotted paths of every number field of the schema (the fuzz targets of item 6)."""
    schema = schema if schema is not None else json_schema()
    for key, sub in (schema.get("properties") or {}).items():
        here = f"{path}.{key}" if path else key
        kinds = [s.get("type") for s in sub.get("anyOf", [sub])]
        if "integer" in kinds or "number" in kinds:
            yield here
        yield from number_fields(sub, here)


def nested(path, value):
    parts = path.split(".")
    return "".join(f"{'  ' * i}{p}:\n" for i, p in enumerate(parts[:-1])) + f"{'  ' * (len(parts) - 1)}{parts[-1]}: {value}\n"


@pytest.mark.parametrize("command", ["validate", "run"])
def test_a_huge_number_in_any_number_field_is_a_formatted_error(tmp_path, command):
    """A 400-digit number, 1e400, .inf and -.inf in every number field of ``log``: exit 2 with one formatted
    line per field, never an OverflowError (every other field: the next test)."""
    fields = list(number_fields())
    assert len(fields) > 20 and "log.buffer_records" in fields
    log = [f.split(".")[1] for f in fields if f.count(".") == 1 and f.startswith("log.")]
    for value in ("1" + "0" * 400, "1e400", ".inf", "-.inf"):
        code, lines = validate(tmp_path, ("log:\n" + "".join(f"  {f}: {value}\n" for f in log)).encode(),
                               command=command)
        assert_formatted(code, lines)
        assert len(lines) - (command == "run") == len(log), lines   # one per field, nothing else


# ``autoperf validate``'s main() once per file, all in one interpreter (a file each: nothing cached).
VALIDATE_EACH = """
import contextlib, io, json, sys
from autoperf import cli
out = {}
for path in sys.argv[1:]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            code = cli.main(["validate", "--config", path])
        except SystemExit as exc:
            code = exc.code
        except BaseException as exc:   # a traceback: the test fails naming it
            code = repr(exc)
    out[path] = [code, err.getvalue().splitlines()]
print(json.dumps(out))
"""


def test_a_huge_number_in_each_number_field_alone_is_a_formatted_error_naming_it(tmp_path):
    """A 400-digit number in each number field on its own: ``autoperf validate`` exits 2 with a formatted
    line naming that field (one interpreter validates the file of each field)."""
    fields = list(number_fields())
    paths = []
    for i, field in enumerate(fields):
        path = tmp_path / f"autoperf-{i}.yaml"
        path.write_text(nested(field, "1" + "0" * 400))
        paths.append(str(path))
    done = subprocess.run([sys.executable, "-c", VALIDATE_EACH, *paths], env=clean_env(), capture_output=True,
                          timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr.decode()
    results = json.loads(done.stdout)
    for field, path in zip(fields, paths):
        code, lines = results[path]
        assert_formatted(code, lines, contains=field)


def test_alias_bomb_is_refused_quickly(tmp_path):
    """A billion-laughs file under ``alerts.rules[].match`` is refused at once (bounded expansion)."""
    code, lines = validate(tmp_path, HOSTILE_DOCS[0].encode())
    assert_formatted(code, lines, contains="expands to more than")
    code, lines = validate(tmp_path, b"a: &r [*r]\n")
    assert code == 2 and all(LINE.match(line) for line in lines), lines


@pytest.mark.parametrize("content, where", [
    (b"service: ok\nlog:\n  dir: ab\x00cd\n", "3:10"),
    (b"service: caf\xe9\n", "1:13"),
    (b"service: ok\n\n\xff\xfe\n", "3:1"),
])
def test_binary_and_misencoded_files_report_the_real_position(tmp_path, content, where):
    """An undecodable byte or a control character is reported at its own line and column, one line."""
    code, lines = validate(tmp_path, content)
    assert_formatted(code, lines, where=where, contains="cannot read the file")
    assert len(lines) == 1


@pytest.mark.parametrize("value, message", [
    ("${A", "unterminated environment reference '${A'"),
    ("${X:-${HOME}}", "malformed environment reference"),
    ("${X:=y}", "malformed environment reference"),
    ("${}", "malformed environment reference"),
])
def test_only_the_stated_env_grammar_is_accepted(tmp_path, value, message):
    """``${NAME}`` and ``${NAME:-default}`` are expanded; anything else starting with ``${`` is an error."""
    code, lines = validate(tmp_path, f"service: \"{value}\"\n".encode(), env={"HOME": "/root"})
    assert_formatted(code, lines, where="1:10", contains=message)


def test_env_grammar_expands_what_it_states(tmp_path):
    """Defaults, escapes and a literal ``$`` come out as documented."""
    from autoperf.config import load_config
    path = tmp_path / "autoperf.yaml"
    path.write_text("service: \"${AP_UNSET:-d$fault}-$${LIT}-${AP_SET}-$5\"\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AP_SET", "v")
        mp.delenv("AP_UNSET", raising=False)
        assert load_config(path).data["service"] == "d$fault-${LIT}-v-$5"


def test_error_output_is_bounded(tmp_path):
    """20,000 bad keys and a 100 kB value give at most 51 lines of at most 300 characters."""
    text = "".join(f"k{i}: {i}\n" for i in range(20000)) + "service: [" + "x" * 100000 + "]\n"
    code, lines = validate(tmp_path, text.encode())
    assert_formatted(code, lines, contains="more problems not shown")
    assert len(lines) == 51
    assert max(len(line) for line in lines) <= 300 + len(str(tmp_path)) + 40


def test_fuzzed_configs_never_trace_back_or_hang(tmp_path):
    """400 mutated and hostile configs: each is valid or exit 2 with formatted lines; no traceback,
    no hang (5 s of CPU per file), error output bounded."""
    done = subprocess.run([sys.executable, "-m", "tests.fuzz_config", "--files", "400", "--seed", "19",
                           "--keep", str(tmp_path)], capture_output=True, text=True, timeout=300,
                          cwd=str(__import__("pathlib").Path(__file__).resolve().parents[1]), env=clean_env())
    assert done.returncode == 0, done.stderr
    totals = json.loads(done.stdout)
    assert totals["files"] == 400
    assert totals["exit_2_unformatted"] == totals["tracebacks"] == totals["hangs"] == 0, totals
    assert totals["exit_2_formatted"] > 200 and totals["valid"] > 0
    assert totals["most_error_bytes"] < 64 * 1024
