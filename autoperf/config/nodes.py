"""Reading PyYAML nodes: located errors, ``${ENV}`` expansion, scalar types, mapping keys.

Used by the schema DSL (:mod:`autoperf.config.schema`); PyYAML itself is imported on first use.
"""
import os
import re

BAD = object()  # a value that failed to convert (the error is already reported)
_ENV = re.compile(r"\$\$\{|\$\{([^}]*)\}")
_ENV_NAME = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?", re.S)
_T = "tag:yaml.org,2002:"


class Errors:
    """Collects ``file:line:col: path: message`` strings; ``messages()`` sorts them by position."""

    def __init__(self, file="<config>"):
        self.file, self._items = file, []

    def add(self, node, path, message):
        mark = getattr(node, "start_mark", None)
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        self._items.append((line, col, len(self._items), f"{self.file}:{line}:{col}: {path or '<root>'}: {message}"))

    def messages(self):
        return [item[3] for item in sorted(self._items)]

    def __len__(self):
        return len(self._items)


def join(path, key):
    return f"{path}[{key}]" if isinstance(key, int) else (f"{path}.{key}" if path else str(key))


def show(value):
    """How a value is named in messages: 'flo', 1.5, true, null."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    return repr(value)


def expand(node, path, errors):
    def repl(m):
        if m.group(0) == "$${":
            return "${"
        ref = _ENV_NAME.fullmatch(m.group(1))
        if ref is None:
            errors.add(node, path, f"malformed environment reference {m.group(0)!r}")
            return ""
        value = os.environ.get(ref.group(1))
        if value is None or (value == "" and ref.group(2) is not None):
            if ref.group(2) is None:
                errors.add(node, path, f"environment variable {ref.group(1)} is not set (write ${{{ref.group(1)}:-default}} for a default)")
                return ""
            value = ref.group(2)
        return value

    before = len(errors)
    text = _ENV.sub(repl, node.value)
    return BAD if len(errors) > before else text


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
    except (ConstructorError, ValueError) as e:
        errors.add(node, path, f"cannot read {text!r}: {e}")
        return BAD


def describe_node(node):
    if node.id == "mapping":
        return "a mapping"
    if node.id == "sequence":
        return "a list"
    value = scalar(node, "", Errors())
    return repr(node.value) if value is BAD else show(value)


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
