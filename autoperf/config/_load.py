"""load(): read, compose, validate autoperf.yaml and build the Config."""
import os

from . import Config, ConfigError
from .schema import Errors


def _compose(text, name):
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        return yaml.compose(text, Loader=loader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{mark.line + 1}:{mark.column + 1}" if mark is not None else "1:1"
        problem = " ".join(p for p in (e.context, e.problem) if p) or str(e)
        raise ConfigError([f"{name}:{where}: <yaml>: syntax error: {problem}"]) from None
    except yaml.YAMLError as e:
        raise ConfigError([f"{name}:1:1: <yaml>: {e}"]) from None


def _target_lines(root):
    """1-based line of each ``targets:`` entry, in order."""
    if root is None or root.id != "mapping":
        return []
    for key, value in root.value:
        if key.id == "scalar" and key.value == "targets" and value.id == "sequence":
            return [item.start_mark.line + 1 for item in value.value]
    return []


def build_targets(entries, lines=()):
    """TargetSpec objects from validated ``targets`` dicts."""
    from .capture import compile_capture
    from .spec import parse_target
    from .targetspec import TargetSpec

    out = []
    for i, t in enumerate(entries):
        module, qualname = parse_target(t["target"])
        out.append(TargetSpec(
            target=t["target"], module=module, qualname=qualname, kind=t["kind"], name=t["name"],
            threshold_ms=t["threshold_ms"], sla_ms=t["sla_ms"],
            capture={k: compile_capture(v) for k, v in t["capture"].items()},
            statement_arg=t["statement_arg"], system=t["system"], enabled=t["enabled"],
            line=lines[i] if i < len(lines) else None,
        ))
    return out


def load(path):
    from pathlib import Path

    text = b""
    if path is not None:
        path = Path(os.fspath(path))
        try:
            text = path.read_bytes()
        except OSError as e:
            raise ConfigError([f"{path}:1:1: <file>: cannot read: {e.strerror or e}"]) from None
    key = _cache.key(text)
    cached = _cache.read(key)
    if cached is not None:
        data, lines = cached
        return Config(data, path, build_targets(data["targets"], lines))
    config = _validate(path, text)
    _cache.write(key, config, _target_lines_of(config))
    return config


def _target_lines_of(config):
    return [t.line for t in config.targets]


def _validate(path, text):
    from .spec import root_schema

    schema = root_schema()
    if path is None:
        return _complete(Config(schema.empty(), None, []))
    name = str(path)
    root = _compose(text, name)
    errors = Errors(name)
    try:
        data = schema.validate(root, "", errors)
    except RecursionError:
        errors.add(root, "", "the document is nested too deeply (a recursive alias?)")
    if len(errors):
        raise ConfigError(errors.messages())
    return _complete(Config(data, path, build_targets(data["targets"], _target_lines(root))))


def _complete(config):
    """Every integration's options in ``data`` (defaults too), so a cached config needs no imports."""
    from autoperf.integrations import REGISTRY

    integrations = dict(config.data.get("integrations") or {})
    for name in REGISTRY:
        if name not in integrations:
            integrations[name] = config.integration(name)
    config.data["integrations"] = integrations
    return config


from . import _cache  # noqa: E402  (after Config/ConfigError are importable)
