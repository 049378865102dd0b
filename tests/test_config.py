import json
import pickle
import subprocess
import sys
import textwrap
import types

import pytest

import autoperf.config as config
from autoperf.config import ConfigError, compile_capture, CaptureError, find_config, load_config
from autoperf.config.capture import MISSING


@pytest.fixture(autouse=True)
def _no_config_cache(monkeypatch):
    # These tests swap schema providers in sys.modules; the validated-config cache is tested below.
    monkeypatch.setenv("AUTOPERF_CONFIG_CACHE", "0")
from autoperf.config.schema import Any, Bool, Enum, Errors, Field, Float, Int, List, Map, Obj, OneOf, Str

EXAMPLE = """\
version: 1
service: ladder-bot
tags: {variant: A}
log:
  dir: logs
  console: auto
  console_level: INFO
  file_level: TRACE
  buffer_records: 100000
  flush_interval_ms: 250
levels: {debug_ms: 1, warning_ms: 500, error_ms: 3000}
sampler: {enabled: true, interval_s: 5}
loop: {lag_interval_ms: 100, blocking_threshold_ms: 100}
targets:
  - target: "pkg.mod:Class.method"
    kind: span
    name: queue_command
    threshold_ms: 300
    sla_ms: 300
    capture: {user_id: interaction.user.id, matches_made: len(return)}
    enabled: true
  - target: "pkg.db:Repo.fetch_*"
    kind: db
    statement_arg: query
integrations:
  asyncpg: {enabled: true}
"""


def write(tmp_path, text, name="autoperf.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def load(tmp_path, text):
    return load_config(write(tmp_path, text))


def errors_of(tmp_path, text):
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    return info.value.errors


def one_error(tmp_path, text):
    errors = errors_of(tmp_path, text)
    assert len(errors) == 1, errors
    return errors[0]


# --- bad files ------------------------------------------------------------------------------

def test_yaml_syntax_error_is_one_located_error(tmp_path):
    """A YAML syntax error becomes exactly one error carrying the file, line and column."""
    err = one_error(tmp_path, "service: ok\nlog:\n  dir: [a, b\n  console: auto\n")
    assert err.startswith(f"{tmp_path / 'autoperf.yaml'}:4:10: ")
    assert "syntax error" in err


def test_unknown_top_level_key(tmp_path):
    """An unknown top-level key is reported at its own line and column, with its name as path."""
    err = one_error(tmp_path, "service: x\nservise: y\n")
    assert err.endswith("autoperf.yaml:2:1: servise: unknown key 'servise' (did you mean 'service'?)")


def test_unknown_nested_key(tmp_path):
    """An unknown nested key is reported with its full dotted path and position."""
    err = one_error(tmp_path, "log:\n  dir: logs\n  consle_level: INFO\n")
    assert err.endswith("autoperf.yaml:3:3: log.consle_level: unknown key 'consle_level' (did you mean 'console_level'?)")


def test_unknown_key_inside_target(tmp_path):
    """An unknown key inside a target entry names the entry's index."""
    err = one_error(tmp_path, "targets:\n  - target: a:b\n    knd: span\n")
    assert ":3:5: targets[0].knd: unknown key 'knd'" in err


@pytest.mark.parametrize("text, where, message", [
    ("log:\n  buffer_records: many\n", "2:19: log.buffer_records", "expected an integer, got 'many'"),
    ("log:\n  buffer_records: 50\n", "2:19: log.buffer_records", "must be >= 100, got 50"),
    ("log:\n  flush_interval_ms: 0\n", "2:22: log.flush_interval_ms", "must be > 0, got 0.0"),
    ("log:\n  flush_interval_ms: 251\n", "2:22: log.flush_interval_ms", "must be <= 250, got 251.0"),
    ("service: 12\n", "1:10: service", "expected a string, got 12 (quote it)"),
    ("tags: [a, b]\n", "1:7: tags", "expected a mapping, got a list"),
    ("sampler: {enabled: 3}\n", "1:20: sampler.enabled", "expected a boolean, got 3"),
    ("targets: {target: a:b}\n", "1:10: targets", "expected a list, got a mapping"),
    ("levels: {debug_ms: -1}\n", "1:20: levels.debug_ms", "must be >= 0, got -1.0"),
    ("log:\n  buffer_records: true\n", "2:19: log.buffer_records", "expected an integer, got true"),
    ("version: 2\n", "1:10: version", "expected one of 1, got 2"),
    ("log: {console_level: info}\n", "1:22: log.console_level", "expected one of TRACE, DEBUG, INFO, WARNING, ERROR, CRITICAL, got 'info'"),
    ("log: {console: maybe}\n", "1:16: log.console", "expected one of auto, true, false, got 'maybe'"),
])
def test_wrong_types_and_values(tmp_path, text, where, message):
    """A value of the wrong type or out of range gives one error with position, path and reason."""
    assert one_error(tmp_path, text).endswith(f"autoperf.yaml:{where}: {message}")


def test_bad_enum_message_matches_issue(tmp_path):
    """A misspelt target kind gives the exact message format from the issue."""
    text = "targets:\n" + "".join(f"  - target: m:f{i}\n" for i in range(2)) + "  - target: m:g\n    kind: flo\n"
    err = one_error(tmp_path, text)
    assert err == f"{tmp_path / 'autoperf.yaml'}:5:11: targets[2].kind: expected one of flow, span, db, cycle, got 'flo'"


@pytest.mark.parametrize("target, reason", [
    ("pkg.mod", "expected 'module:qualname'"),
    ("pkg.mod:", "missing qualname after ':'"),
    (":func", "missing module before ':'"),
    ("pkg mod:f", "module 'pkg mod' is not a dotted name"),
    ("pkg.mod:1abc", "'1abc' is not an identifier or wildcard pattern"),
    ("pkg.mod:a:b", "more than one ':'"),
    ("pkg..mod:f", "is not a dotted name"),
    ("pkg.mod:Class..m", "empty qualname part"),
    ("pkg.mod:get_[ab", "is not a valid wildcard pattern"),
])
def test_malformed_target_strings(tmp_path, target, reason):
    """Each malformed target string is one error located at the string, naming the problem."""
    err = one_error(tmp_path, f'targets:\n  - kind: span\n    target: "{target}"\n')
    assert f"autoperf.yaml:3:13: targets[0].target: malformed target {target!r}: " in err
    assert reason in err


def test_statement_arg_only_for_db(tmp_path):
    """statement_arg on a non-db target is an error at the statement_arg key; on a db target it is kept."""
    err = one_error(tmp_path, "targets:\n  - target: m:f\n    kind: span\n    statement_arg: query\n")
    assert err.endswith(":4:5: targets[0].statement_arg: only allowed when kind is db (kind is 'span')")
    cfg = load(tmp_path, "targets:\n  - target: m:f\n    kind: db\n    statement_arg: query\n")
    assert cfg.targets[0].statement_arg == "query"


def test_missing_env_var_is_located_error(tmp_path, monkeypatch):
    """A ${VAR} without default whose variable is unset is an error with position and path."""
    monkeypatch.delenv("AUTOPERF_TEST_UNSET", raising=False)
    err = one_error(tmp_path, "log:\n  dir: ${AUTOPERF_TEST_UNSET}\n")
    assert err.endswith(":2:8: log.dir: environment variable AUTOPERF_TEST_UNSET is not set "
                        "(write ${AUTOPERF_TEST_UNSET:-default} for a default)")


def test_missing_required_target_key(tmp_path):
    """A target entry without `target` is reported at the entry."""
    err = one_error(tmp_path, "targets:\n  - kind: flow\n")
    assert err.endswith(":2:5: targets[0]: missing required key 'target'")


def test_duplicate_keys_are_errors(tmp_path):
    """A key given twice in one mapping is an error pointing at the second one."""
    err = one_error(tmp_path, "service: a\nlog: {dir: x}\nservice: b\n")
    assert err.endswith(":3:1: service: duplicate key (first defined at line 1)")


def test_several_errors_reported_together_in_file_order(tmp_path):
    """All problems of a file are reported at once, sorted by position, not just the first."""
    errors = errors_of(tmp_path, """\
        bogus: 1
        log:
          buffer_records: 1
        targets:
          - target: pkg.mod
            kind: flo
          - target: "pkg.mod:f"
            capture: {x: a._b}
        """)
    assert [e.split(": ")[0].split("autoperf.yaml:")[1] + " " + e.split(": ")[1] for e in errors] == [
        "1:1 bogus", "3:19 log.buffer_records", "5:13 targets[0].target", "6:11 targets[0].kind",
        "8:18 targets[1].capture.x",
    ]


def test_capture_syntax_error_rejected_at_load(tmp_path):
    """A capture path that does not parse is a load-time error located at the path string."""
    err = one_error(tmp_path, "targets:\n  - target: m:f\n    capture:\n      uid: interaction..user\n")
    assert ":4:12: targets[0].capture.uid: bad capture path 'interaction..user'" in err


def test_private_capture_attribute_rejected_at_load(tmp_path):
    """A capture path reaching a _private attribute is refused when the config is loaded."""
    err = one_error(tmp_path, "targets:\n  - target: m:f\n    capture: {x: self._secret}\n")
    assert "targets[0].capture.x: bad capture path 'self._secret': attribute '_secret' is private" in err


def test_top_level_must_be_mapping(tmp_path):
    """A file whose document is a list is one error at its start."""
    assert one_error(tmp_path, "- a\n- b\n").endswith(":1:1: <root>: expected a mapping, got a list")


def test_missing_file_is_config_error(tmp_path):
    """An unreadable config file is a ConfigError naming the file."""
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.yaml")
    assert "nope.yaml" in info.value.errors[0] and "cannot read" in info.value.errors[0]


# --- good files -----------------------------------------------------------------------------

def test_env_interpolation_defaults_and_types(tmp_path, monkeypatch):
    """${VAR:-default} is expanded before type conversion, so numbers and booleans get their types."""
    monkeypatch.delenv("AP_BUF", raising=False)
    monkeypatch.setenv("AP_SAMPLER", "false")
    monkeypatch.setenv("AP_SERVICE", "123")
    monkeypatch.setenv("AP_EMPTY", "")
    cfg = load(tmp_path, """\
        service: ${AP_SERVICE}
        log:
          buffer_records: ${AP_BUF:-5432}
          dir: "${AP_EMPTY:-logs}/x-$${literal}"
          flush_interval_ms: "${AP_BUF:-12.5}"
        sampler: {enabled: "${AP_SAMPLER}"}
        tags: {host: "${AP_SERVICE}-${AP_BUF:-b}"}
        """)
    assert cfg.data["log"]["buffer_records"] == 5432 and type(cfg.data["log"]["buffer_records"]) is int
    assert cfg.data["log"]["flush_interval_ms"] == 12.5
    assert cfg.data["log"]["dir"] == "logs/x-${literal}"
    assert cfg.data["sampler"]["enabled"] is False
    assert cfg.data["service"] == "123"   # a string field keeps the text
    assert cfg.data["tags"] == {"host": "123-b"}
    monkeypatch.setenv("AP_BUF", "2000")
    assert load(tmp_path, "log: {buffer_records: '${AP_BUF:-5432}'}\n").data["log"]["buffer_records"] == 2000


def test_env_value_of_wrong_type_is_error(tmp_path, monkeypatch):
    """An expanded value is checked like a literal one; the message names the variable, never its value."""
    monkeypatch.setenv("AP_BUF", "lots")
    assert one_error(tmp_path, "log: {buffer_records: '${AP_BUF}'}\n").endswith(
        ":1:23: log.buffer_records: expected an integer, got '${AP_BUF}' (the environment's value is not shown)")


def test_defaults_filled(tmp_path):
    """Missing sections and keys get their defaults, both with no file and with a partial one."""
    for cfg in (load_config(None), load(tmp_path, "log: {dir: out}\n"), load(tmp_path, "")):
        d = cfg.data
        assert d["version"] == 1 and d["service"] is None and d["tags"] == {} and d["targets"] == []
        assert d["log"]["console"] == "auto" and d["log"]["console_level"] == "INFO"
        assert d["log"]["file_level"] == "TRACE" and d["log"]["buffer_records"] == 100000
        assert d["log"]["flush_interval_ms"] == 250.0
        assert d["levels"] == {"debug_ms": 1.0, "warning_ms": 500.0, "error_ms": 3000.0}
        assert d["sampler"] == {"enabled": True, "interval_s": 5.0}
        assert d["loop"] == {"lag_interval_ms": 100.0, "blocking_threshold_ms": 100.0}
        assert isinstance(d["slo"], dict) and isinstance(d["alerts"], dict) and isinstance(d["store"], dict)
        assert cfg.integration("asyncpg")["enabled"] is True
    assert load_config(None).path is None
    assert load(tmp_path, "log: {dir: out}\n").data["log"]["dir"] == "out"
    assert config.DEFAULTS == load_config(None).data


def test_yaml_booleans_for_console(tmp_path):
    """log.console accepts YAML booleans as well as auto."""
    assert load(tmp_path, "log: {console: no}\n").data["log"]["console"] is False
    assert load(tmp_path, "log: {console: true}\n").data["log"]["console"] is True


def test_example_file_loads_into_target_specs(tmp_path):
    """The documented example loads; targets become TargetSpec objects with compiled captures and lines."""
    cfg = load(tmp_path, EXAMPLE)
    assert cfg.path == tmp_path / "autoperf.yaml"
    assert cfg.data["service"] == "ladder-bot" and cfg.data["tags"] == {"variant": "A"}
    first, second = cfg.targets
    assert isinstance(first, config.TargetSpec)
    assert (first.target, first.module, first.qualname, first.kind, first.name) == (
        "pkg.mod:Class.method", "pkg.mod", "Class.method", "span", "queue_command")
    assert first.threshold_ms == 300.0 and first.sla_ms == 300.0 and first.enabled and first.line == 15
    assert set(first.capture) == {"user_id", "matches_made"}
    assert first.capture["matches_made"].uses_return and first.capture["user_id"].root == "interaction"
    assert (second.kind, second.statement_arg, second.qualname, second.line) == ("db", "query", "Repo.fetch_*", 22)
    assert second.is_wildcard and not first.is_wildcard
    with pytest.raises(Exception):
        first.kind = "flow"   # frozen


@pytest.mark.parametrize("target, module, qualname", [
    ("pkg.mod:Class.*", "pkg.mod", "Class.*"),
    ("pkg.mod:get_*", "pkg.mod", "get_*"),
    ("pkg.mod:Cls.[gs]et_?", "pkg.mod", "Cls.[gs]et_?"),
    ("__main__:main", "__main__", "main"),
    ("a:*.run", "a", "*.run"),
])
def test_wildcard_targets_accepted(tmp_path, target, module, qualname):
    """Targets whose qualname parts are fnmatch wildcards are accepted and split correctly."""
    spec = load(tmp_path, f'targets:\n  - target: "{target}"\n').targets[0]
    assert (spec.module, spec.qualname) == (module, qualname)


def test_anchors_and_merge_keys(tmp_path):
    """YAML anchors and << merge keys work, explicit keys overriding merged ones."""
    cfg = load(tmp_path, """\
        targets:
          - &base {target: "m:f", kind: flow, sla_ms: 100}
          - <<: *base
            target: "m:g"
        """)
    assert [(t.target, t.kind, t.sla_ms) for t in cfg.targets] == [("m:f", "flow", 100.0), ("m:g", "flow", 100.0)]


def test_integrations_null_entry_and_options(tmp_path, monkeypatch):
    """An integration's OPTIONS schema validates its options; a bare entry takes the defaults (the table's `default`)."""
    import autoperf.integrations as integrations

    fake = types.ModuleType("ap_fake_integration")
    fake.OPTIONS = Obj({"slow_ms": Field(Float(min=0), default=100, doc="slow")})
    monkeypatch.setitem(sys.modules, "ap_fake_integration", fake)
    monkeypatch.setitem(integrations.BY_NAME, "fake",
                        integrations.Integration("fake", "ap_fake_integration", "ap_fake", None, "", False, ()))
    cfg = load(tmp_path, "integrations:\n  fake:\n  asyncpg: {enabled: false}\n")
    assert cfg.integration("fake") == {"enabled": False, "slow_ms": 100.0}
    assert load(tmp_path, "integrations: {fake: {enabled: yes, slow_ms: 5}}").integration("fake") == {"enabled": True, "slow_ms": 5.0}
    assert cfg.integration("asyncpg")["enabled"] is False
    assert load_config(None).integration("fake") == {"enabled": False, "slow_ms": 100.0}
    err = one_error(tmp_path, "integrations:\n  fake: {slow_ms: -1, enabled: true}\n")
    assert err.endswith(":2:19: integrations.fake.slow_ms: must be >= 0, got -1.0")
    assert "integrations.nosuch: unknown key 'nosuch'" in one_error(tmp_path, "integrations:\n  nosuch: {}\n")


def test_section_provider_and_fallback(tmp_path, monkeypatch):
    """A section validates against its provider's CONFIG_SCHEMA, and accepts any mapping when there is none."""
    slo = types.ModuleType("autoperf.analysis.slo")
    slo.CONFIG_SCHEMA = Obj({"objective_pct": Field(Float(min=0, max=100), default=99.0, doc="target")})
    monkeypatch.setitem(sys.modules, "autoperf.analysis.slo", slo)
    assert load_config(None).data["slo"] == {"objective_pct": 99.0}
    assert one_error(tmp_path, "slo: {objective: 5}\n").endswith(":1:7: slo.objective: unknown key 'objective' (did you mean 'objective_pct'?)")
    monkeypatch.setitem(sys.modules, "autoperf.analysis.slo", types.ModuleType("autoperf.analysis.slo"))
    assert load(tmp_path, "slo: {anything: [1, {b: c}]}\n").data["slo"] == {"anything": [1, {"b": "c"}]}
    assert one_error(tmp_path, "slo: [1]\n").endswith(":1:6: slo: expected a mapping, got a list")


def test_find_config_order(tmp_path, monkeypatch):
    """find_config prefers the explicit path, then AUTOPERF_CONFIG, then ./autoperf.yaml, then the script's folder."""
    work, scripts = tmp_path / "work", tmp_path / "scripts"
    work.mkdir(), scripts.mkdir()
    (scripts / "autoperf.yaml").write_text("")
    monkeypatch.chdir(work)
    monkeypatch.delenv("AUTOPERF_CONFIG", raising=False)
    script = str(scripts / "bot.py")
    assert find_config(None, None) is None
    assert find_config(None, script) == scripts / "autoperf.yaml"
    (work / "autoperf.yaml").write_text("")
    assert find_config(None, script).resolve() == work / "autoperf.yaml"
    monkeypatch.setenv("AUTOPERF_CONFIG", str(tmp_path / "env.yaml"))
    assert find_config(None, script) == tmp_path / "env.yaml"
    assert find_config(str(tmp_path / "x.yaml"), script) == tmp_path / "x.yaml"


# --- capture paths --------------------------------------------------------------------------

class _User:
    def __init__(self):
        self.id = 42
        self._secret = "s"
        self.roles = ["admin", "dev"]
        self.meta = {"k": {"deep": 1.5}}


class _Interaction:
    user = _User()


def test_capture_attribute_chain_and_indexes():
    """Attribute chains, integer and quoted indexes evaluate against the bound arguments."""
    bound = {"self": object(), "interaction": _Interaction(), "n": 3}
    assert compile_capture("interaction.user.id").evaluate(bound) == 42
    assert compile_capture("interaction.user.roles[1]").evaluate(bound) == "dev"
    assert compile_capture("interaction.user.roles[-1]").evaluate(bound) == "dev"
    assert compile_capture("interaction.user.meta['k'][\"deep\"]").evaluate(bound) == 1.5
    assert compile_capture("n").evaluate(bound) == 3


def test_capture_functions_and_return():
    """len(), str() and type() apply to the path, and `return` reads the return value."""
    assert compile_capture("len(return)").evaluate({}, [1, 2, 3]) == 3
    assert compile_capture("type(x)").evaluate({"x": 1.5}) == "float"
    assert compile_capture("str( x.id )").evaluate({"x": _User()}) == "42"
    assert compile_capture("return.id").evaluate({}, return_value=_User()) == 42
    with pytest.raises(CaptureError, match="return value is not available"):
        compile_capture("len(return)").evaluate({}, MISSING)


def test_capture_args_and_kwargs_roots():
    """args[N] and kwargs['k'] read the call's arguments, falling back to the bound arguments."""
    path = compile_capture("args[1].id")
    assert (path.root, path.root_index) == ("args", 1)
    assert path.evaluate({"self": None, "user": _User()}) == 42
    assert path.evaluate({}, args=(None, _User())) == 42
    assert path.evaluate({"args": (None, _User())}) == 42
    kw = compile_capture("kwargs['user_id']")
    assert (kw.root, kw.root_index) == ("kwargs", "user_id")
    assert kw.evaluate({}, kwargs={"user_id": 7}) == 7
    assert kw.evaluate({"user_id": 8}) == 8
    assert kw.evaluate({"kwargs": {"user_id": 9}}) == 9


def test_capture_private_and_bad_syntax_refused():
    """_private attributes and malformed paths fail at compile time with a position."""
    for bad in ("x._secret", "x.__class__", "x..y", "x[", "x[1", "x.", "1x", "len(x", "eval(x)", "x + 1",
                "x[a]", "args['a']", "kwargs[0]", "", "x y"):
        with pytest.raises(CaptureError) as info:
            compile_capture(bad)
        assert info.value.position is not None, bad


def test_capture_evaluation_failure_raises_capture_error():
    """A missing argument, attribute or index raises CaptureError, never another exception."""
    with pytest.raises(CaptureError, match="no argument named 'nope'"):
        compile_capture("nope").evaluate({"x": 1})
    with pytest.raises(CaptureError, match="AttributeError"):
        compile_capture("x.missing").evaluate({"x": _User()})
    with pytest.raises(CaptureError, match="IndexError"):
        compile_capture("x.roles[5]").evaluate({"x": _User()})
    with pytest.raises(CaptureError, match="TypeError"):
        compile_capture("len(x)").evaluate({"x": 5})


def test_captured_values_are_json_friendly():
    """JSON scalars pass through, other objects become str() cut to 200 characters."""
    class Big:
        def __str__(self):
            return "z" * 500

    import enum

    class Color(enum.IntEnum):
        RED = 1

    path = compile_capture("x")
    for plain in (1, 2.5, "s", True, None):
        assert path.evaluate({"x": plain}) is plain
    assert path.evaluate({"x": Color.RED}) == 1 and type(path.evaluate({"x": Color.RED})) is int
    assert len(path.evaluate({"x": Big()}, run_code=True)) == 200
    assert path.evaluate({"x": Big()}) == "<Big>"          # by default its __str__ is not run
    assert path.evaluate({"x": (1, 2)}) == "(1, 2)"
    json.dumps(path.evaluate({"x": object()}))


def test_capture_path_pickles():
    """A compiled capture path survives pickling (it may be sent to worker processes)."""
    path = pickle.loads(pickle.dumps(compile_capture("interaction.user.roles[0]")))
    assert path.evaluate({"interaction": _Interaction()}) == "admin"


# --- the DSL and the JSON schema ------------------------------------------------------------

def _nodes(text):
    import yaml
    return yaml.compose(text, Loader=yaml.SafeLoader)


def test_dsl_validate_and_json_schema():
    """The DSL converts values, fills defaults and describes itself as JSON Schema."""
    schema = Obj({
        "n": Field(Int(min=1, max=3), default=2, doc="count"),
        "x": Field(Float(), doc="ratio"),
        "mode": Field(OneOf(Enum("auto"), Bool())),
        "names": Field(List(Str(pattern="[a-z]+"))),
        "opts": Field(Map(Any()), default={}),
        "req": Field(Str(), required=True),
    })
    errors = Errors("f.yaml")
    value = schema.validate(_nodes("x: 1\nmode: off\nnames: [ab]\nreq: r\n"), "", errors)
    assert not len(errors)
    assert value == {"n": 2, "x": 1.0, "mode": False, "names": ["ab"], "opts": {}, "req": "r"}
    schema.validate(_nodes("n: 4\nmode: sometimes\nnames: [A1]\n"), "", errors)
    assert errors.messages() == [
        "f.yaml:1:1: <root>: missing required key 'req'",
        "f.yaml:1:4: n: must be <= 3, got 4",
        "f.yaml:2:7: mode: expected one of auto or a boolean, got 'sometimes'",
        "f.yaml:3:9: names[0]: 'A1' does not match [a-z]+",
    ]
    js = schema.json_schema()
    assert js["additionalProperties"] is False and js["required"] == ["req"]
    assert js["properties"]["n"]["description"] == "count" and js["properties"]["n"]["default"] == 2


def test_enum_compares_types():
    """Enum(1) does not accept true, and Enum(True) does not accept 1."""
    errors = Errors()
    Enum(1).validate(_nodes("true"), "v", errors)
    Enum(True).validate(_nodes("1"), "w", errors)
    assert len(errors) == 2


def test_json_schema_is_valid_and_accepts_the_example(monkeypatch):
    """json_schema() is valid draft 2020-12 JSON Schema, accepts valid files and rejects unknown keys."""
    jsonschema = pytest.importorskip("jsonschema")
    import yaml

    schema = json.loads(json.dumps(config.json_schema()))
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema" and schema["title"] == "autoperf.yaml"
    validator = jsonschema.Draft202012Validator(schema)
    jsonschema.Draft202012Validator.check_schema(schema)
    from pathlib import Path

    doc_example = (Path(__file__).parent.parent / "docs" / "config.md").read_text().split("```yaml\n", 1)[1].split("```")[0]
    for text in (EXAMPLE, doc_example, "", "log: {console: false, buffer_records: '${BUF:-500}'}\n", "integrations:\n  asyncpg:\n"):
        validator.validate(yaml.safe_load(text))
    assert not validator.is_valid({"bogus": 1})
    assert not validator.is_valid({"targets": [{"target": "pkg.mod"}]})
    assert not validator.is_valid({"targets": [{"kind": "span"}]})
    log = schema["properties"]["log"]
    assert log["additionalProperties"] is False and log["description"]
    assert log["properties"]["buffer_records"]["default"] == 100000


def test_import_stays_light():
    """Importing autoperf.config and loading a file imports neither pydantic nor jsonschema, and import alone skips yaml."""
    code = ("import sys, autoperf.config as c; a = {m for m in ('yaml', 'dataclasses', 'pydantic', 'jsonschema') if m in sys.modules};"
            "c.load_config(None); b = {m for m in ('pydantic', 'jsonschema') if m in sys.modules}; print(sorted(a), sorted(b))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["[]", "[]"]


def test_docs_cover_every_key_and_example_loads(tmp_path, monkeypatch):
    """docs/config.md names every key of the file's own sections and its example loads without errors."""
    from pathlib import Path
    from autoperf.config.spec import root_schema

    doc = (Path(__file__).parent.parent / "docs" / "config.md").read_text()
    schema = root_schema()
    for section, field in schema.fields.items():
        assert f"`{section}`" in doc, section
        if section in ("log", "levels", "sampler", "loop"):
            for key in field.schema.fields:
                assert f"| `{key}` |" in doc, f"{section}.{key}"
    for key in schema.fields["targets"].schema.item.fields:
        assert f"| `{key}` |" in doc, f"targets.{key}"
    example = doc.split("```yaml\n", 1)[1].split("```", 1)[0]
    monkeypatch.delenv("AUTOPERF_DSN", raising=False)
    cfg = load(tmp_path, example)
    assert [t.kind for t in cfg.targets] == ["flow", "cycle", "db"]
    assert cfg.integration("discord")["enabled"] is False


def test_broken_provider_falls_back_and_is_reported(tmp_path, monkeypatch):
    """A section provider that fails to import does not stop loading: the section accepts any mapping and the error is counted."""
    from autoperf import diagnostics
    from autoperf.config import spec

    monkeypatch.setitem(spec.SECTION_PROVIDERS, "alerts", ("ap_broken_provider", "CONFIG_SCHEMA"))
    (tmp_path / "ap_broken_provider.py").write_text("raise RuntimeError('boom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = load(tmp_path, "alerts: {anything: 1}\n")
    assert cfg.data["alerts"] == {"anything": 1}
    assert any(key[0] == "internal_error" and "ap_broken_provider" in str(key[1]) for key in diagnostics.counts())


class TestConfigCache:
    """The validated-config cache (autoperf run and its children skip YAML and validation)."""

    @pytest.fixture(autouse=True)
    def _cache_on(self, monkeypatch, tmp_path):
        monkeypatch.setenv("AUTOPERF_CONFIG_CACHE", "1")
        monkeypatch.setenv("AUTOPERF_CACHE_DIR", str(tmp_path / "cache"))

    def test_second_load_comes_from_the_cache_and_equals_the_first(self, tmp_path, monkeypatch):
        """A second load of an unchanged file is served from the cache without importing PyYAML."""
        path = tmp_path / "autoperf.yaml"
        path.write_text("service: s\ntargets:\n  - target: 'm:f'\n    kind: flow\n    capture: {u: user.id}\n")
        first = load_config(path)
        assert list((tmp_path / "cache").glob("config-*.marshal"))
        import autoperf.config._load as loader
        monkeypatch.setattr(loader, "_compose", lambda *a: pytest.fail("YAML parsed again"))
        second = load_config(path)
        assert second.data == first.data
        assert [(t.target, t.kind, t.line, t.capture["u"].text) for t in second.targets] == \
               [(t.target, t.kind, t.line, t.capture["u"].text) for t in first.targets]

    def test_file_and_environment_changes_miss_the_cache(self, tmp_path, monkeypatch):
        """Editing the file or changing an interpolated variable gives the new values."""
        path = tmp_path / "autoperf.yaml"
        monkeypatch.setenv("AP_SERVICE", "one")
        path.write_text("service: ${AP_SERVICE}\n")
        assert load_config(path).data["service"] == "one"
        monkeypatch.setenv("AP_SERVICE", "two")
        assert load_config(path).data["service"] == "two"
        path.write_text("service: three\n")
        assert load_config(path).data["service"] == "three"

    def test_invalid_files_are_never_cached(self, tmp_path):
        """A bad file raises every time (errors are not cached away)."""
        path = tmp_path / "autoperf.yaml"
        path.write_text("bogus: 1\n")
        for _ in range(2):
            with pytest.raises(ConfigError):
                load_config(path)
