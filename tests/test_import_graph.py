"""The import graph of ``autoperf/``: no arrow runs back up and no module imports itself round a circle.

Every import counts, at module level or inside a function, and so does a dotted ``"autoperf.x"``
string handed to ``import_module``/``__import__`` (an arrow a reader cannot follow is still one).
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "autoperf"
_STRING = re.compile(r"^autoperf(\.[A-Za-z_][A-Za-z0-9_]*)+(?=$|:)")   # "autoperf.x" or "autoperf.x:attr"

#: Known debt, if any: the test fails on any new circle or upward arrow, and on a listed one once it is
#: gone, so these lists only shrink.
KNOWN_CIRCLES: set = set()
KNOWN_UPWARD: set = set()

#: (importer prefix, imported prefix): a lower layer must not import the layer that assembles it.
UPWARD = [
    ("autoperf.integrations", "autoperf.bootstrap"),
    ("autoperf.integrations", "autoperf.cli"),
    ("autoperf.config", "autoperf.integrations"),
    ("autoperf.config", "autoperf.alerts"),
    ("autoperf.config", "autoperf.store"),
    ("autoperf.config", "autoperf.analysis"),
    ("autoperf.config", "autoperf.export"),
    ("autoperf.config", "autoperf.bootstrap"),
]


def _module_name(path):
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(importer, is_package, node):
    if node.level == 0:
        return node.module or ""
    base = importer.split(".")
    base = base if is_package else base[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def graph():
    """module -> set of autoperf modules it imports (names resolved to existing modules)."""
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    edges = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text(), str(path))
        is_package = path.name == "__init__.py"
        targets = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                module = _resolve(name, is_package, node)
                targets.add(module)
                targets.update(f"{module}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _STRING.match(node.value):
                targets.add(_STRING.match(node.value).group(0))
        found = set()
        for target in targets:
            while target and target not in files:
                target = target.rpartition(".")[0]   # "pkg.mod.attr" -> "pkg.mod"
            if target and target != name and target.startswith("autoperf"):
                found.add(target)
        edges[name] = found
    return edges


def _without_parents(edges):
    """A package's ``__init__`` runs before its modules: ``pkg.mod -> pkg`` is no arrow of its own."""
    return {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in edges.items()}


def circles(edges):
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(frozenset(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_no_lower_layer_imports_the_layer_above():
    """Integrations never import bootstrap or the CLI; config/ imports no feature."""
    bad = {(m, t) for m, ts in graph().items() for t in ts
           for low, high in UPWARD if m.startswith(low) and t.startswith(high)}
    assert sorted(bad - KNOWN_UPWARD) == []
    assert KNOWN_UPWARD - bad == set(), "a known upward arrow is gone: drop it from KNOWN_UPWARD"


def test_no_import_circles():
    """No module reaches itself through the imports of others (beyond the known, shrinking list)."""
    found = {c for c in circles(_without_parents(graph()))}
    assert found - KNOWN_CIRCLES == set(), sorted(sorted(c) for c in found - KNOWN_CIRCLES)
    assert KNOWN_CIRCLES - found == set(), "a known circle is gone: drop it from KNOWN_CIRCLES"
