"""Reading PyYAML nodes: located errors, ``${ENV}`` expansion, scalar types, mapping keys.

Used by the schema DSL (:mod:`autoperf.config.schema`); PyYAML itself is imported on first use.
"""
import os
import re

BAD = object()  # a value that failed to convert (the error is already reported)
#: ``${NAME}`` or ``${NAME:-default}``; a default is literal text without ``}`` or ``${``.
_REF = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>(?:[^}$]|\$(?!\{))*))?\}")
_T = "tag:yaml.org,2002:"
#: Messages are cut to this many characters; at most MAX_ERRORS problems are listed.
MAX_MESSAGE = 300
MAX_ERRORS = 50


class Errors:
    """Collects ``file:line:col: path: message`` strings; ``messages()`` sorts them by position."""

    def __init__(self, file="<config>"):
        self.file, self._items = file, []

    def add(self, node, path, message):
        mark = getattr(node, "start_mark", None)
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        self.add_at(line, col, path, message)

    def add_at(self, line, col, path, message):
        text = f"{path or '<root>'}: {message}".replace("\n", " ").replace("\r", " ")
        if len(text) > MAX_MESSAGE:
            text = text[:MAX_MESSAGE - 1] + "…"
        self._items.append((line, col, len(self._items), f"{self.file}:{line}:{col}: {text}"))

    def messages(self):
        """One line per problem, by position; past ``MAX_ERRORS`` a last line counts the rest."""
        items = sorted(self._items)
        out = [item[3] for item in items[:MAX_ERRORS]]
        if len(items) > MAX_ERRORS:
            line, col = items[MAX_ERRORS][:2]
            out.append(f"{self.file}:{line}:{col}: <root>: {len(items) - MAX_ERRORS} more problems not shown")
        return out

    def __len__(self):
        return len(self._items)


def join(path, key):
    return f"{path}[{key}]" if isinstance(key, int) else (f"{path}.{key}" if path else str(key))


def show(value, node=None):
    """How a value is named in messages: 'flo', 1.5, true, null. A value that came from the
    environment is named by its reference (``'${D}'``), never shown: it may be a secret."""
    if node is not None and from_environment(node):
        return f"{_cut(repr(node.value))} (the environment's value is not shown)"
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    return _cut(repr(value))


def _cut(text, limit=80):
    return text if len(text) <= limit else text[:limit - 4] + "…" + text[-3:]


def from_environment(node):
    return getattr(node, "id", None) == "scalar" and "${" in node.value


def expand(node, path, errors):
    """``node.value`` with ``${NAME}`` / ``${NAME:-default}`` replaced and ``$${`` made ``${``;
    anything else that starts with ``${`` is an error (nested references, other shell forms)."""
    text, out, pos, before = node.value, [], 0, len(errors)
    while True:
        at = text.find("$", pos)
        if at < 0:
            out.append(text[pos:])
            break
        out.append(text[pos:at])
        if text.startswith("$${", at):
            out.append("${")
            pos = at + 3
            continue
        if not text.startswith("${", at):
            out.append("$")
            pos = at + 1
            continue
        m = _REF.match(text, at)
        if m is None:
            end = text.find("}", at)
            shown = _cut(repr(text[at:] if end < 0 else text[at:end + 1]), 60)
            errors.add(node, path, f"malformed environment reference {shown}: write ${{NAME}} or "
                                   f"${{NAME:-default}} (a default cannot hold '${{' or '}}'; $${{ is a literal ${{)"
                       if end >= 0 else f"unterminated environment reference {shown}: missing '}}'")
            break
        name, default = m.group("name"), m.group("default")
        value = os.environ.get(name)
        if value is None or (value == "" and default is not None):
            if default is None:
                errors.add(node, path, f"environment variable {name} is not set (write ${{{name}:-default}} for a default)")
            value = default or ""
        out.append(value)
        pos = m.end()
    return BAD if len(errors) > before else "".join(out)


_yaml = None  # (SafeConstructor(), Resolver(), ScalarNode, ConstructorError), made on first use


def scalar(node, path, errors):
    """The Python value of a scalar node (env expanded, YAML 1.1 types) or ``BAD``."""
    global _yaml
    if _yaml is None:
        from yaml.constructor import ConstructorError, SafeConstructor
        from yaml.nodes import ScalarNode
        from yaml.resolver import Resolver

        _yaml = (SafeConstructor(), Resolver(), ScalarNode, ConstructorError)
    constructor, resolver, ScalarNode, ConstructorError = _yaml
    text, tag = node.value, node.tag
    if "${" in text:
        text = expand(node, path, errors)
        if text is BAD:
            return BAD
        tag = resolver.resolve(ScalarNode, text, (True, False))  # the expanded text decides the type
    if tag in (_T + "str", _T + "timestamp"):
        return text
    kind = {_T + "null": "null", _T + "bool": "bool", _T + "int": "int", _T + "float": "float"}.get(tag)
    if kind is None:
        errors.add(node, path, f"unsupported YAML tag {tag}")
        return BAD
    try:
        return getattr(constructor, "construct_yaml_" + kind)(ScalarNode(tag, text, node.start_mark))
    except (ConstructorError, ValueError, OverflowError) as e:
        errors.add(node, path, f"cannot read {show(text, node)}: {type(e).__name__}")
        return BAD


def describe_node(node):
    if node.id == "mapping":
        return "a mapping"
    if node.id == "sequence":
        return "a list"
    if from_environment(node):
        return show(None, node)
    value = scalar(node, "", Errors())
    return _cut(repr(node.value)) if value is BAD else show(value)


def mapping_items(node, path, errors):
    """[(key, key_node, value_node)] in file order; reports duplicate and non-string keys; applies ``<<`` merges."""
    items, seen, merges = [], {}, []
    for knode, vnode in node.value:
        if knode.tag == _T + "merge":
            merges.extend(vnode.value if vnode.id == "sequence" else [vnode])
        elif knode.id != "scalar":
            errors.add(knode, path, "mapping keys must be strings")
        elif knode.value in seen:
            errors.add(knode, join(path, knode.value), f"duplicate key (first defined at line {seen[knode.value].start_mark.line + 1})")
        else:
            seen[knode.value] = knode
            items.append((knode.value, knode, vnode))
    for merged in merges:
        if merged.id != "mapping":
            errors.add(merged, path, "'<<' expects a mapping or a list of mappings")
            continue
        for key, knode, vnode in mapping_items(merged, path, Errors()):
            if key not in seen:
                seen[key] = knode
                items.append((key, knode, vnode))
    return items


def is_null(node):
    return node is None or (node.id == "scalar" and node.tag == _T + "null")
