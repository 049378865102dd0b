"""Resolve ``module:qualname`` targets from source, without running any of the program's code.

The module's file is found the way the import system would find it (``PathFinder``, parent packages
by their ``__path__`` only: no ``__init__`` runs), parsed with ``ast``, and its names read off the
tree: classes, functions, methods, assignments, imports (``from x import Foo`` is followed into
``x``). ``resolve`` mirrors ``targets.resolve``: wildcards match functions and classes defined in
the module, exact names any binding.
"""
from __future__ import annotations

import ast
import difflib
import fnmatch
import importlib.machinery
import os
import sys

_WILDCARD = set("*?[")
_MAX_IMPORT_HOPS = 4


class SourceError(Exception):
    """The module's source cannot be read (not found, no Python source, a syntax error)."""


class Binding:
    """One name in a module or class body: what statement binds it (``imported``: the
    ``from … import`` statement and the name it imports, for ``kind == "import"``)."""

    __slots__ = ("name", "kind", "node", "scope", "imported")

    def __init__(self, name, kind, node, imported=None):
        self.name, self.kind, self.node, self.imported = name, kind, node, imported
        self.scope = None

    @property
    def line(self):
        return getattr(self.node, "lineno", None)


class Scope:
    """The names a module or class body binds."""

    def __init__(self, module, qualname, node, names):
        self.module = module          # the SourceModule
        self.qualname = qualname      # "" for the module, "Outer.Inner" for a class
        self.node = node              # the ast.Module or ast.ClassDef
        self.names = names            # name -> Binding (the last binding wins, as at run time)
        self.dynamic = False          # the module may create names at run time (__getattr__, globals())


class SourceModule:
    def __init__(self, name, path, tree):
        self.name, self.path, self.tree = name, path, tree
        self.scope = _scope(self, "", tree)
        self.scope.dynamic = _makes_names_at_run_time(tree)


def find_source(name, search_path=None):
    """The path of module ``name``'s source file, found without importing anything."""
    search = list(search_path if search_path is not None else sys.path)
    path = search
    spec = None
    parts = name.split(".")
    for i in range(len(parts)):
        dotted = ".".join(parts[:i + 1])
        if i == 0 and dotted in sys.builtin_module_names:
            raise SourceError(f"{dotted} is built into Python (no source)")
        spec = importlib.machinery.PathFinder.find_spec(dotted, path)
        if spec is None:
            raise SourceError(f"no module named {dotted!r}")
        if i < len(parts) - 1:
            if spec.submodule_search_locations is None:
                raise SourceError(f"{dotted} is not a package")
            path = list(spec.submodule_search_locations)
    origin = spec.origin
    if not origin or origin == "namespace" or spec.submodule_search_locations is not None and not origin:
        raise SourceError(f"{name} is a namespace package (no source)")
    if not origin.endswith(".py"):
        raise SourceError(f"{name} has no Python source ({os.path.basename(origin)})")
    return origin


def load(name, search_path=None, _cache=None):
    """The parsed module ``name`` (SourceError when it cannot be read)."""
    cache = {} if _cache is None else _cache
    if name in cache:
        return cache[name]
    path = find_source(name, search_path)
    try:
        with open(path, "rb") as handle:
            tree = ast.parse(handle.read(), path)
    except (OSError, SyntaxError, ValueError) as exc:
        raise SourceError(f"{path}: {type(exc).__name__}: {exc}") from None
    module = cache[name] = SourceModule(name, path, tree)
    return module


def _targets_of(node):
    """Names bound by an assignment target (``a``, ``a, b``, ``[a, *b]``)."""
    if isinstance(node, ast.Name):
        yield node.id
    elif isinstance(node, (ast.Tuple, ast.List)):
        for elt in node.elts:
            yield from _targets_of(elt)
    elif isinstance(node, ast.Starred):
        yield from _targets_of(node.value)


def _bindings(body):
    """A Binding for each name a body binds, including under if / try / with / for / while."""
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield Binding(node.name, "function", node)
        elif isinstance(node, ast.ClassDef):
            yield Binding(node.name, "class", node)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                for name in _targets_of(target):
                    yield Binding(name, "assignment", node)
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)) and isinstance(node.target, ast.Name):
            if not isinstance(node, ast.AnnAssign) or node.value is not None:
                yield Binding(node.target.id, "assignment", node)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield Binding(alias.asname or alias.name.split(".")[0], "import", node)
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if alias.name != "*":
                    yield Binding(alias.asname or alias.name, "import", node, (node, alias.name))
        elif isinstance(node, (ast.If, ast.Try, ast.With, ast.AsyncWith, ast.For, ast.AsyncFor, ast.While)):
            for field in ("body", "orelse", "finalbody"):
                yield from _bindings(getattr(node, field, ()) or ())
            for handler in getattr(node, "handlers", ()) or ():
                yield from _bindings(handler.body)


def _scope(module, qualname, node):
    names = {binding.name: binding for binding in _bindings(node.body)}
    scope = Scope(module, qualname, node, names)
    for binding in names.values():
        binding.scope = scope
    return scope


def _makes_names_at_run_time(tree):
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == "__getattr__":
            return True
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("globals", "setattr"):
            return True
    return False


def _class_scope(binding, search_path, cache, hops=0):
    """The body of the class a binding names (following ``from x import Foo``), or None."""
    if binding.kind == "class":
        owner = binding.scope.qualname
        return _scope(binding.scope.module, f"{owner}.{binding.name}" if owner else binding.name, binding.node)
    if binding.imported is not None and hops < _MAX_IMPORT_HOPS:
        statement, name = binding.imported
        try:
            module = load(imported_module(binding.scope.module, statement), search_path, cache)
        except SourceError:
            return None
        found = module.scope.names.get(name)
        return None if found is None else _class_scope(found, search_path, cache, hops + 1)
    return None


def imported_module(module, node):
    """The absolute module name of a ``from … import`` in ``module`` (relative imports resolved)."""
    if not node.level:
        return node.module or ""
    package = module.name if os.path.basename(module.path) == "__init__.py" else module.name.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


def _matches(scope, pattern, want_classes):
    """Bindings of ``scope`` matching one qualname part (as ``targets._members``)."""
    if not any(ch in _WILDCARD for ch in pattern):
        found = scope.names.get(pattern)
        return [found] if found is not None else []
    kind = "class" if want_classes else "function"
    return [b for name, b in scope.names.items()
            if not name.startswith("__") and b.kind == kind and fnmatch.fnmatchcase(name, pattern)]


def _nearest(scope, name):
    names = [k for k in scope.names if not k.startswith("__")]
    return difflib.get_close_matches(name, names, n=3, cutoff=0.5)


class Resolution:
    """What a target names in source: ``found`` bindings; else the ``missing`` dotted part and the
    ``nearest`` names there; ``undecided`` says why source alone cannot tell (check with an import)."""

    def __init__(self, found=(), missing=None, nearest=(), undecided=None):
        self.found, self.missing, self.nearest, self.undecided = list(found), missing, list(nearest), undecided


def resolve(module, qualname, search_path=None, cache=None):
    """The Resolution of ``qualname`` in the parsed ``module``."""
    cache = {} if cache is None else cache
    parts = qualname.split(".")
    scopes = [module.scope]
    path = []
    for part in parts[:-1]:
        nxt = []
        opaque = None
        for scope in scopes:
            for binding in _matches(scope, part, want_classes=True):
                inner = _class_scope(binding, search_path, cache)
                if inner is not None:
                    nxt.append(inner)
                else:
                    opaque = binding
        if not nxt:
            here = ".".join(path + [part])
            if opaque is not None:
                return Resolution(missing=here, undecided=f"{here} is bound by {_describe(opaque)}, "
                                                         "not a class statement source can follow")
            return _missing(scopes[0], here, part)
        scopes = nxt
        path.append(part)
    found = [b for scope in scopes for b in _matches(scope, parts[-1], want_classes=False)]
    if not found:
        return _missing(scopes[0], qualname, parts[-1])
    return Resolution(found)


def _missing(scope, dotted, part):
    undecided = None
    if scope.dynamic or scope.module.scope.dynamic:
        undecided = f"{scope.module.name} may create names at run time (__getattr__, globals(), setattr)"
    return Resolution(missing=dotted, nearest=_nearest(scope, part), undecided=undecided)


def _describe(binding):
    line = f" (line {binding.line})" if binding.line else ""
    return f"an {binding.kind}{line}"
