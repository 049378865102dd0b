"""``autoperf validate``: check autoperf.yaml and say what each target resolves to and the name its records carry.

By default nothing of the program runs: each module's source is read (``autoperf.sourcemap``).
``--import`` imports the modules instead (their import-time code runs) and resolves the objects
exactly as ``autoperf run`` does. Given the script ``autoperf run`` would run, ``__main__:…`` targets
and targets on the script's own module name (``app:handle`` for ``app.py``) are checked against it.
"""
from __future__ import annotations

import ast
import os
import sys

from autoperf import sourcemap
from autoperf.runner import script_module_name

_COMMAND_DECORATORS = {"command", "hybrid_command", "group", "hybrid_group", "context_menu"}
_COMPONENT_DECORATORS = {"button", "select", "user_select", "role_select", "channel_select", "mentionable_select"}


def register(sub):
    parser = sub.add_parser("validate", help="check autoperf.yaml and resolve its targets (without running the program)")
    parser.add_argument("--config")
    parser.add_argument("--import", dest="import_modules", action="store_true",
                        help="import the modules (their import-time code runs) instead of reading their source")
    parser.add_argument("script", nargs="?", help="the script autoperf run would run: checks __main__ targets")
    parser.set_defaults(handler=cmd_validate)


def cmd_validate(opts) -> int:
    from autoperf.config import ConfigError, find_config, load_config

    path = find_config(opts.config, opts.script)
    if path is None:
        print("autoperf: no autoperf.yaml found (use --config)", file=sys.stderr)
        return 2
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        return 2
    how = ("modules imported (their import-time code ran)" if opts.import_modules
           else "resolved from source, nothing imported or run (--import to import the modules)")
    print(f"{path}: valid, {len(cfg.targets)} targets; {how}")
    home = os.path.dirname(os.path.abspath(opts.script)) if opts.script else os.getcwd()
    search = [home] + [p for p in sys.path if p and os.path.abspath(p) != home]
    checker = Checker(cfg, search, opts.script, opts.import_modules)
    missing = 0
    own = own_dependencies()
    for spec in cfg.targets:
        ok, lines = checker.check(spec)
        missing += ok is False
        if spec.module.partition(".")[0] in own:
            lines.append(f"  !  {spec.target}  autoperf itself calls into {spec.module.partition('.')[0]}: its own calls "
                         f"go straight through (never recorded), every call from the program and the libraries it "
                         f"uses is a span (on a hot function the overhead multiplies)")
        print("\n".join(lines))
    return 1 if missing else 0


#: autoperf's modules that run while the program does: the hot path, the writer, sinks, stop paths.
_RUNTIME = ("autoperf.spans", "autoperf.wrappers", "autoperf.current", "autoperf.pipeline", "autoperf.records",
            "autoperf.sinks", "autoperf.threads", "autoperf.bootstrap", "autoperf.lifecycle", "autoperf.targets",
            "autoperf.diagnostics", "autoperf.posthooks")


def own_dependencies() -> frozenset:
    """Top-level modules that autoperf's runtime calls into (read from those modules' globals:
    modules and the functions and classes imported from them), builtins included."""
    import importlib
    import types

    found = {"builtins"}
    for name in _RUNTIME:
        for value in vars(importlib.import_module(name)).values():
            owner = value.__name__ if isinstance(value, types.ModuleType) else getattr(value, "__module__", None)
            if not isinstance(owner, str):
                continue
            top = owner.partition(".")[0]
            if top == "autoperf" or top.startswith("__"):      # ourselves, __future__
                continue
            found.add(top)
            if top[1:] in sys.stdlib_module_names:
                found.add(top[1:])           # _thread, _contextvars: what threading, contextvars re-export
            if top == "posix":
                found.add("os")
    return frozenset(found)


class Checker:
    def __init__(self, cfg, search, script, import_modules):
        self.search = search
        self.script = script
        self.script_module = script_module_name(script)
        self.import_modules = import_modules
        self.discord = cfg.integration("discord").get("enabled", True)
        self.cache = {}
        if import_modules:
            sys.path.insert(0, search[0])

    def check(self, spec):
        """``(True | False | None, lines)``: resolved, not found, or undecided; the lines to print."""
        on_script = spec.module == "__main__" or spec.module == self.script_module
        if spec.module == "__main__" and not self.script:
            return None, [f"  ?  {spec.target}  (the program's __main__: give the script, "
                          f"`autoperf validate script.py`, to check it)"]
        try:
            if on_script:
                module = self._script_source()
            elif self.import_modules:
                return self._check_imported(spec)
            else:
                module = sourcemap.load(spec.module, self.search, self.cache)
        except sourcemap.SourceError as exc:
            return False, [f"  ✗  {spec.target}  module {spec.module}: {exc}"]
        where = " (the script: it runs as __main__)" if on_script else ""
        found = sourcemap.resolve(module, spec.qualname, self.search, self.cache)
        if not found.found:
            hint = f"; nearest: {', '.join(found.nearest)}" if found.nearest else ""
            if found.undecided:
                return None, [f"  ?  {spec.target}  {found.missing!r} not in the source{where}: {found.undecided}; "
                              f"check with --import{hint}"]
            return False, [f"  ✗  {spec.target}  {found.missing!r} not found{where}{hint}"]
        pairs = [(f"{b.scope.qualname + '.' if b.scope.qualname else ''}{b.name}",
                  self._static_name(spec, b)) for b in found.found]
        return True, _resolved(spec, pairs, where)

    def _script_source(self):
        try:
            with open(self.script, "rb") as handle:
                tree = ast.parse(handle.read(), self.script)
        except (OSError, SyntaxError, ValueError) as exc:
            raise sourcemap.SourceError(f"{self.script}: {type(exc).__name__}: {exc}") from None
        return sourcemap.SourceModule("__main__", os.path.abspath(self.script), tree)

    # -- names from source ---------------------------------------------------------------------
    def _static_name(self, spec, binding):
        scope = binding.scope
        owner = f"{scope.module.name}.{scope.qualname}" if scope.qualname else scope.module.name
        name = spec.name and (f"{spec.name}.{binding.name}" if spec.is_wildcard else spec.name)
        if spec.kind != "flow" or spec.name or not self.discord or binding.kind != "function":
            return name or f"{owner}.{binding.name}"
        decorators = [_called_name(d) for d in binding.node.decorator_list]
        if _COMMAND_DECORATORS.intersection(decorators):
            return _command_name(binding)
        cls = scope.qualname.rpartition(".")[2]
        bases = " ".join(ast.unparse(b) for b in getattr(scope.node, "bases", ()))
        if _COMPONENT_DECORATORS.intersection(decorators) or (binding.name == "on_submit" and "Modal" in bases):
            return f"{cls}.{binding.name}"
        if binding.name == "callback" and ("Button" in bases or "Select" in bases):
            return f"<View>.{cls}.callback"
        if binding.name.startswith("on_") and any(b in bases for b in ("Client", "Bot", "Cog")):
            return binding.name             # an event handler: the event's flow
        return f"{owner}.{binding.name}"

    # -- names from the imported objects ---------------------------------------------------------
    def _check_imported(self, spec):
        import importlib

        from autoperf import targets
        try:
            module = importlib.import_module(spec.module)
        except Exception as exc:
            return False, [f"  ✗  {spec.target}  module {spec.module} cannot be imported: {type(exc).__name__}: {exc}"]
        found, gone, near = targets.resolve(module, spec.qualname)
        if not found:
            hint = f"; nearest: {', '.join(near)}" if near else ""
            return False, [f"  ✗  {spec.target}  {gone!r} not found{hint}"]
        pairs = []
        for owner, attr in found:
            label = attr if owner is module else f"{owner.__qualname__}.{attr}"
            pairs.append((label, self._live_name(spec, owner, attr)))
        return True, _resolved(spec, pairs, "")

    def _live_name(self, spec, owner, attr):
        from autoperf import targets
        name = targets.site_name(spec, owner, attr)
        if spec.kind != "flow" or spec.name or not self.discord:
            return name
        value = vars(owner)[attr]
        qualified = getattr(value, "qualified_name", None)
        if isinstance(qualified, str) and (type(value).__module__ or "").startswith("discord."):
            return qualified
        mro = {c.__name__ for c in getattr(owner, "__mro__", ()) if (c.__module__ or "").startswith("discord.")}
        if hasattr(value, "__discord_ui_model_type__") or (attr == "on_submit" and "Modal" in mro):
            return f"{owner.__name__}.{attr}"
        if attr == "callback" and "Item" in mro:
            return f"<View>.{owner.__name__}.callback"
        if attr.startswith("on_") and {"Client", "Cog"} & mro:
            return attr
        return name


def _resolved(spec, pairs, where):
    """The lines of a resolved target: one per match of a wildcard."""
    if len(pairs) == 1:
        return [f"  ✓  {spec.target}  [{spec.kind}] -> {pairs[0][0]}{where}; records named {pairs[0][1]!r}"]
    lines = [f"  ✓  {spec.target}  [{spec.kind}] -> {len(pairs)} matches{where}:"]
    lines.extend(f"       {label}; records named {name!r}" for label, name in sorted(pairs))
    return lines


def _called_name(decorator):
    """``command`` for ``@app_commands.command(...)``, ``@commands.command``, ``@tree.command()``."""
    node = decorator.func if isinstance(decorator, ast.Call) else decorator
    if isinstance(node, ast.Attribute):
        return node.attr
    return node.id if isinstance(node, ast.Name) else None


def _command_name(binding, depth=0):
    """The qualified name discord.py gives a command defined by a decorated function (``tag create``)."""
    node = binding.node
    name, parent = binding.name, None
    for decorator in node.decorator_list:
        called = _called_name(decorator)
        if called not in _COMMAND_DECORATORS:
            continue
        if called == "context_menu":
            name = name.title()
        for keyword in getattr(decorator, "keywords", ()):
            if keyword.arg == "name" and isinstance(keyword.value, ast.Constant) and isinstance(keyword.value.value, str):
                name = keyword.value.value
        func = decorator.func if isinstance(decorator, ast.Call) else decorator
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and depth < 8:
            group = binding.scope.names.get(func.value.id)   # @tag.command(): a subcommand of group `tag`
            if group is not None and group.kind == "function" and any(
                    _called_name(d) in ("group", "hybrid_group") for d in group.node.decorator_list):
                parent = _command_name(group, depth + 1)
    return f"{parent} {name}" if parent else name
