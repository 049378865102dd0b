"""load(): read, compose, validate autoperf.yaml and build the Config."""
import os

from . import Config, ConfigError
from .schema import Errors


#: Bounds on what a config may cost to read: its size, and its size once YAML aliases are
#: expanded (a "billion laughs" file is a few hundred bytes that expand without end).
MAX_BYTES = 1 << 20
MAX_NODES = 100_000


def _compose(text, name):
    import yaml

    errors = Errors(name)
    if len(text) > MAX_BYTES:
        errors.add_at(1, 1, "<file>", f"the file is {len(text):,} bytes; a config may have at most {MAX_BYTES:,}")
        raise ConfigError(errors.messages())
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        return yaml.compose(text, Loader=loader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        problem = " ".join(p for p in (e.context, e.problem) if p) or str(e)
        errors.add_at(line, col, "<yaml>", f"syntax error: {problem}")
    except yaml.reader.ReaderError as e:
        line, col = _position(text, e.position, isinstance(e.character, int))
        what = (f" (byte 0x{e.character:02x})" if isinstance(e.character, int) and e.character >= 0
                else f" ({e.character!r})" if isinstance(e.character, str) else "")
        errors.add_at(line, col, "<file>", f"cannot read the file: {e.reason}{what}; "
                                           f"a config is UTF-8 (or UTF-16 with a byte order mark) text")
    except yaml.YAMLError as e:
        errors.add_at(1, 1, "<yaml>", str(e))
    except RecursionError:
        errors.add_at(1, 1, "<yaml>", "the document is nested too deeply")
    raise ConfigError(errors.messages()) from None


def _position(text, offset, in_bytes):
    """1-based line and column of ``offset`` (a byte offset, or a character offset in the text
    decoded as UTF-8)."""
    if not in_bytes:
        text = text.decode("utf-8", "replace")
    offset = max(0, min(offset, len(text)))
    head = text[:offset]
    newline = b"\n" if in_bytes else "\n"
    return head.count(newline) + 1, offset - (head.rfind(newline) + 1) + 1


def _expanded_size(root, errors):
    """Nodes the document has once aliases are expanded (a shared node counts at each use),
    without expanding anything; adds an error past ``MAX_NODES`` or for a recursive alias."""
    sizes, on_path, stack = {}, set(), [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            children = _children(node)
            sizes[key] = 1 + sum(sizes[id(c)] for c in children)
            if sizes[key] > MAX_NODES:
                errors.add(node, "<yaml>", f"the document expands to more than {MAX_NODES:,} values "
                                           f"(YAML aliases repeat this part too often)")
                return False
            continue
        if key in sizes:
            continue
        if key in on_path:
            errors.add(node, "<yaml>", "a YAML alias refers to a node that contains it (recursive)")
            return False
        on_path.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if id(c) not in sizes)
    return True


def _children(node):
    if node.id == "mapping":
        return [n for pair in node.value for n in pair]
    if node.id == "sequence":
        return node.value
    return ()


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
            capture_runs_code=t.get("capture_runs_code", False), retain=t.get("retain") or "default",
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
    if not _cache.cacheable(text):
        return _validate(path, text)
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
    if root is not None and not _expanded_size(root, errors):
        raise ConfigError(errors.messages())
    try:
        data = schema.validate(root, "", errors)
    except RecursionError:
        errors.add(root, "", "the document is nested too deeply")
    if len(errors):
        raise ConfigError(errors.messages())
    return _complete(Config(data, path, build_targets(data["targets"], _target_lines(root))))


def _complete(config):
    """Every integration's options in ``data`` (defaults too), so a cached config needs no imports."""
    from .spec import integration_table

    integrations = dict(config.data.get("integrations") or {})
    for name in integration_table() or ():
        if name not in integrations:
            integrations[name] = config.integration(name)
    config.data["integrations"] = integrations
    return config


from . import _cache  # noqa: E402  (after Config/ConfigError are importable)
