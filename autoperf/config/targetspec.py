"""TargetSpec: one validated entry of ``targets:`` (kept apart: ``dataclasses`` is slow to import)."""
from dataclasses import dataclass, field


@dataclass(frozen=True)
class TargetSpec:
    """A target from autoperf.yaml, validated; ``capture`` values are compiled :class:`CapturePath`."""

    target: str                      # "pkg.mod:Class.method" as written
    module: str                      # "pkg.mod"
    qualname: str                    # "Class.method" (may hold fnmatch wildcards)
    kind: str = "span"               # flow | span | db | cycle
    name: "str | None" = None
    threshold_ms: "float | None" = None
    sla_ms: "float | None" = None
    capture: dict = field(default_factory=dict)   # name -> CapturePath
    statement_arg: "str | None" = None
    system: "str | None" = None      # kind db: the database system (OpenTelemetry's db.system)
    capture_runs_code: bool = False  # captures may call properties, __getattr__, __len__, __str__ ...
    enabled: bool = True
    retain: str = "default"          # always | never | default (the retain: rules)
    line: "int | None" = None        # 1-based line of the entry in the file (None when not from a file)

    @property
    def is_wildcard(self):
        """True when the qualname has fnmatch wildcards (``*``, ``?``, ``[``)."""
        return any(c in self.qualname for c in "*?[")
