"""The schema of autoperf.yaml, built with the DSL from what the features declare (``autoperf.features``;
their modules are imported lazily)."""
import importlib
import re

from autoperf import features

from .capture import CaptureError, compile_capture
from .schema import Any, Bool, Enum, Field, Float, Int, List, Map, Obj, Str, join, mapping_items

LEVELS = ("TRACE", "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
KINDS = ("flow", "span", "db", "cycle")
#: section -> (module, attribute) of its schema, as the features declare them (autoperf/features.py)
SECTION_PROVIDERS = {name: tuple(ref.split(":")) for name, ref in features.SECTIONS.items()}
_WILD = re.compile(r"[\w*?\[\]!-]+")
_MODULE_DOC = r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*"
_PART_DOC = r"[A-Za-z0-9_*?\[\]!-]+"
TARGET_PATTERN = f"{_MODULE_DOC}:{_PART_DOC}(\\.{_PART_DOC})*"


def parse_target(text):
    """Split ``'pkg.mod:Class.method'`` into ``(module, qualname)``; raises ValueError with the reason.

    The module is dotted identifiers (``__main__`` included); each qualname part is an identifier
    or an fnmatch pattern (``*``, ``?``, ``[...]``), e.g. ``pkg.mod:Class.*`` or ``pkg.mod:get_*``.
    """
    if text.count(":") != 1:
        raise ValueError(f"malformed target {text!r}: expected 'module:qualname', e.g. 'pkg.mod:Class.method'"
                         if ":" not in text else f"malformed target {text!r}: more than one ':'")
    module, qualname = text.split(":")
    if not module:
        raise ValueError(f"malformed target {text!r}: missing module before ':'")
    if not qualname:
        raise ValueError(f"malformed target {text!r}: missing qualname after ':'")
    for part in module.split("."):
        if not part.isidentifier():
            raise ValueError(f"malformed target {text!r}: module {module!r} is not a dotted name ({part!r})")
    for part in qualname.split("."):
        if not part:
            raise ValueError(f"malformed target {text!r}: empty qualname part")
        if any(c in part for c in "*?["):
            if not _WILD.fullmatch(part) or part.count("[") != part.count("]"):
                raise ValueError(f"malformed target {text!r}: {part!r} is not a valid wildcard pattern")
        elif not part.isidentifier():
            raise ValueError(f"malformed target {text!r}: {part!r} is not an identifier or wildcard pattern")
    return module, qualname


def _path_template_problem(text):
    from autoperf.redact import path_template_problem

    return path_template_problem(text)


def _target_problem(text):
    try:
        parse_target(text)
    except ValueError as e:
        return str(e)
    return None


def _capture_problem(text):
    try:
        compile_capture(text)
    except CaptureError as e:
        return f"bad capture path {text!r}: {e}"
    return None


def _db_keys_only_db(target):
    if target.get("kind") in (None, "db"):
        return []
    return [(key, f"only allowed when kind is db (kind is {target.get('kind')!r})")
            for key in ("statement_arg", "system") if target.get(key) is not None]


def _levels_ordered(levels):
    names = ("debug_ms", "warning_ms", "error_ms")
    values = [levels.get(n) for n in names]
    if None in values:
        return []
    return [(b, f"must be >= {a} ({vb} < {va})") for (a, va), (b, vb) in zip(zip(names, values), zip(names[1:], values[1:])) if vb < va]


def _module(name):
    """The imported module ``name``; None when it (or a parent package) does not exist, or when
    importing it fails (reported once as an ``internal_error`` warning: a broken provider must not
    stop the program; its section then accepts any mapping)."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name and (name == e.name or name.startswith(e.name + ".")):
            return None
        error = e
    except Exception as e:
        error = e
    from autoperf import diagnostics

    diagnostics.internal_error(f"config: importing {name}", error)
    return None


def _provided(module, attr):
    """``module:attr`` when it exists and is a schema, else None (the section accepts anything)."""
    schema = getattr(_module(module), attr, None)
    return schema if hasattr(schema, "validate") and hasattr(schema, "json_schema") else None


def integration_options(name, module=None, default=None):
    """The option schema of integration ``name`` with ``enabled`` added (any options when unknown).

    ``enabled`` defaults to the integration table's ``default`` (True for a name not in it).
    """
    if module is None:
        entry = (integration_table() or {}).get(name)
        module, default = (entry.code, entry.default) if entry is not None else (None, default)
    mod = _module(module) if module else None
    options = getattr(mod, "OPTIONS", None)
    if default is None:
        default = True
    enabled = Field(Bool(), default=default is not False, doc="Turn this integration on or off.")
    if not isinstance(options, Obj):
        return Obj({"enabled": enabled}, extra=True, doc=f"Options of the {name} integration.")
    fields = {"enabled": enabled, **{k: v for k, v in options.fields.items() if k != "enabled"}}
    return Obj(fields, extra=options.extra, rules=options.rules, doc=options.doc or f"Options of the {name} integration.")


class _Integrations(Map):
    """Any integration name (no registry yet); each validated with its module's OPTIONS if present."""

    def __init__(self):
        super().__init__(Obj({"enabled": Field(Bool(), default=True)}, extra=True))

    def validate(self, node, path, errors):
        if node is None or node.id != "mapping":
            return super().validate(node, path, errors)
        return {k: integration_options(k).validate(v, join(path, k), errors) for k, _, v in mapping_items(node, path, errors)}


def integration_table():
    """The integration table (name -> row) the features declare, or None when it cannot be imported."""
    module, attr = features.INTEGRATIONS.split(":")
    table = getattr(_module(module), attr, None)
    return table if isinstance(table, dict) else None


def _integrations():
    table = integration_table()
    doc = "Per-integration options, by integration name; each has `enabled` (default true)."
    if not isinstance(table, dict):
        return Field(_Integrations(), default={}, doc=doc)
    fields = {}
    for name, entry in table.items():
        schema = integration_options(name, getattr(entry, "code", entry), getattr(entry, "default", None))
        fields[name] = Field(schema, doc=schema.doc)
    return Field(Obj(fields), doc=doc)


def _section(name):
    schema = _provided(*SECTION_PROVIDERS[name])
    if schema is None:
        return Field(Map(Any()), default={}, doc=f"`{name}` settings (schema provided by {SECTION_PROVIDERS[name][0]}).")
    return Field(schema, doc=getattr(schema, "doc", "") or f"`{name}` settings.")


def target_schema():
    pos = dict(min=0, min_exclusive=True)
    return Obj({
        "target": Field(Str(check=_target_problem, doc_pattern=TARGET_PATTERN), required=True,
                        doc="What to time: `module:qualname`; qualname parts may be fnmatch wildcards (`pkg.mod:Class.*`)."),
        "kind": Field(Enum(*KINDS), default="span", doc="Record kind: flow (root of a tree), span, db, cycle (periodic loop body)."),
        "name": Field(Str(), default=None, doc="Span name (default: `module.qualname`)."),
        "threshold_ms": Field(Float(**pos), default=None, doc="Duration above which the span is logged at WARNING."),
        "sla_ms": Field(Float(**pos), default=None, doc="Target duration; flows report `sla_met`."),
        "capture": Field(Map(Str(check=_capture_problem), keys=Str(r"[A-Za-z_][A-Za-z0-9_.]*")), default={},
                         doc="Attributes to record: name -> capture path (`interaction.user.id`, `len(return)`, `args[0]`)."),
        "capture_runs_code": Field(Bool(), default=False, doc="Let `capture:` paths run the program's code: properties, "
                                   "`__getattr__`, `__getitem__`, `__len__`, `__str__` (by default only plain attributes, "
                                   "slots and built-in containers are read)."),
        "statement_arg": Field(Str(), default=None, doc="kind db only: the argument holding the SQL statement."),
        "system": Field(Str(), default=None, doc="kind db only: the database (`postgresql`, `sqlite`, `mysql`, … as "
                                                 "OpenTelemetry's db.system); default: known from the driver."),
        "enabled": Field(Bool(), default=True, doc="Set false to keep the entry but not instrument it."),
        "retain": Field(Enum("always", "never", "default"), default="default",
                        doc="Full records of its flows: `always`, `never` (aggregates only), or `default` "
                            "(the `retain:` rules)."),
    }, rules=[_db_keys_only_db], doc="One function or method to time.")


def root_schema():
    """The whole-file schema (imports section providers; call it when loading, not at import)."""
    level = Enum(*LEVELS)
    return Obj({
        "version": Field(Enum(1), default=1, doc="Config format version; must be 1."),
        "service": Field(Str(), default=None, doc="Service name, added to every record as `service`."),
        "tags": Field(Map(Str()), default={}, doc="Extra string fields added to every record (e.g. `variant: A` for A/B comparisons)."),
        "log": Field(Obj({
            "dir": Field(Str(), default="logs", doc="Directory of `performance_{YYYY-MM-DD}.log`."),
            "console": Field(Enum("auto", True, False), default="auto", doc="Console output: auto (when stderr is a terminal), true, false."),
            "console_level": Field(level, default="INFO", doc="Lowest level printed on the console."),
            "file_level": Field(level, default="TRACE", doc="Lowest level written to the log file."),
            "buffer_records": Field(Int(min=100), default=100000, doc="Records buffered before new ones are dropped (and counted); also the most a stop writes."),
            "flush_interval_ms": Field(Float(min=0, max=250, min_exclusive=True), default=250, doc="How often the writer thread flushes while records come in numbers (a trickle or nothing: down to once a second)."),
            "max_delay_ms": Field(Float(min=10, max=1000), default=1000, doc="Longest a record waits in memory before it is written (the writer's back-off stops there): about what SIGKILL or an OOM kill can lose. Lower costs CPU: each idle wake-up ~0.1 ms."),
        }), doc="Where and how records are written."),
        "levels": Field(Obj({
            "debug_ms": Field(Float(min=0), default=1, doc="Spans up to this are TRACE, longer ones DEBUG."),
            "warning_ms": Field(Float(min=0), default=500, doc="Spans from this are WARNING."),
            "error_ms": Field(Float(min=0), default=3000, doc="Spans from this are ERROR."),
        }, rules=[_levels_ordered]), doc="Duration thresholds that pick a span's level."),
        "sampler": Field(Obj({
            "enabled": Field(Bool(), default=True, doc="Write periodic `resource` records."),
            "interval_s": Field(Float(min=0, min_exclusive=True), default=5, doc="Seconds between samples."),
        }), doc="Periodic resource sampling."),
        "loop": Field(Obj({
            "lag_interval_ms": Field(Float(min=0, min_exclusive=True), default=100, doc="How often event-loop lag is probed."),
            "blocking_threshold_ms": Field(Float(min=0, min_exclusive=True), default=100, doc="Loop held longer than this -> `loop_blocked` record."),
        }), doc="Event-loop monitoring."),
        "redact": Field(Obj({
            "http_paths": Field(List(Str(check=_path_template_problem)), default=[],
                                doc="Path templates whose `{name}` segments are replaced in `http` spans, e.g. "
                                    "`api.example.com/v1/keys/{key}` or `/internal/{secret}` (any host)."),
        }), doc="Secrets to keep out of records beyond the built-in rules."),
        "metrics": Field(Obj({
            "interval_s": Field(Float(min=0.01, max=3600), default=10,
                                doc="Seconds between `metrics` records (aggregates of every span; also written on every stop)."),
            "exemplars": Field(Int(min=0, max=100), default=5, doc="Slowest spans named per aggregate and interval."),
        }), doc="In-process aggregates of every finished span, written to `metrics_{YYYY-MM-DD}.log`."),
        "retain": Field(Obj({
            "all": Field(Bool(), default=False, doc="Write every span's record (true: debugging, tests), or only those of retained roots (the default)."),
            "sample_rate": Field(Float(min=0, max=1), default=0.01,
                                 doc="Share of roots kept at random (by flow id: the same in every process)."),
            "rules": Field(Obj({rule: Field(Bool(), default=True, doc=doc) for rule, doc in (
                ("error", "Keep a root that failed or was cancelled."),
                ("sla", "Keep a root over its sla_ms, threshold_ms or levels.warning_ms."),
                ("deadline", "Keep a flow that missed its interaction deadline."),
                ("loop_blocked", "Keep a root that overlapped a `loop_blocked`."),
                ("slow_child", "Keep a root with a descendant over its own threshold (or levels.warning_ms)."),
            )}), doc="Which rules retain a root (its span records and all its descendants')."),
            "max_pending": Field(Int(min=1, max=1_000_000), default=1000,
                                 doc="Child spans held per root until it ends (more are counted, then dropped)."),
            "pending_timeout_s": Field(Float(min=1, max=86400), default=300,
                                       doc="A root that has not ended after this is evicted (counted)."),
        }), doc="Tail-based retention: which flows get full `span` records (every flow gets `flow_complete`)."),
        "targets": Field(List(target_schema()), default=[], doc="Functions and methods to instrument."),
        "integrations": _integrations(),
        "slo": _section("slo"),
        "alerts": _section("alerts"),
        "store": _section("store"),
        "export": _section("export"),
    })
