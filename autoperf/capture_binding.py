"""Bind a target's ``capture:`` paths and ``statement_arg`` to a function's parameters.

Parameter positions are worked out once, at patch time, so a call only indexes ``args``.
"""
from __future__ import annotations


_MISSING = object()
_SQL_PARAM_NAMES = ("query", "sql", "statement", "stmt", "command", "operation")
#: Driver packages -> OpenTelemetry's ``db.system``: a ``kind: db`` target in one of them, or called
#: with one of their connections / cursors as its first argument, knows its database.
DRIVER_SYSTEMS = {"sqlite3": "sqlite", "aiosqlite": "sqlite", "psycopg2": "postgresql", "psycopg": "postgresql",
                  "asyncpg": "postgresql", "pg8000": "postgresql", "aiopg": "postgresql", "pymysql": "mysql",
                  "MySQLdb": "mysql", "mysql": "mysql", "aiomysql": "mysql", "asyncmy": "mysql",
                  "oracledb": "oracle", "cx_Oracle": "oracle", "duckdb": "duckdb"}
#: Results whose length is the number of rows (the exact built-in types: len() of a subclass could run
#: the program's code).
_SIZED = (list, tuple, dict, set, frozenset)
_system_by_type: dict = {}


def _parameters(fn):
    import inspect
    try:
        return list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return None


def _getter(params, root, indexed=True):
    """A function ``(args, kwargs) -> value | _MISSING`` for a capture root.

    ``args[N]`` / ``kwargs['k']`` (``indexed``) read the call's arguments; a bare ``args`` or
    ``kwargs`` is the parameter of that name when the function has one (``def f(self, *args)``).
    """
    import inspect
    named = params is not None and any(p.name == root for p in params)
    if root == "args" and (indexed or not named):
        return lambda args, kwargs: args
    if root == "kwargs" and (indexed or not named):
        return lambda args, kwargs: kwargs
    if params is None:
        return None
    for index, param in enumerate(params):
        if param.name != root:
            continue
        default = param.default if param.default is not inspect.Parameter.empty else _MISSING
        if param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
            def get(args, kwargs, index=index, name=root, default=default):
                if name in kwargs:
                    return kwargs[name]
                return args[index] if index < len(args) else default
            return get
        if param.kind is param.KEYWORD_ONLY:
            return lambda args, kwargs, name=root, default=default: kwargs.get(name, default)
        if param.kind is param.VAR_POSITIONAL:  # *rows: the extra positional arguments
            return lambda args, kwargs, index=index: tuple(args[index:])
        if param.kind is param.VAR_KEYWORD:     # **options: the keywords no parameter takes
            named = frozenset(p.name for p in params
                              if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
            return lambda args, kwargs, named=named: {k: v for k, v in kwargs.items() if k not in named}
    if root == "self" and params and params[0].kind in (
            inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
        return lambda args, kwargs: args[0] if args else _MISSING
    return None


def build_hooks(spec, fn, bound=False):
    """``(arg_hooks, return_hooks)`` for a CallSite from a TargetSpec."""
    from autoperf import diagnostics

    params = _parameters(fn)
    arg_hooks, return_hooks = [], []
    run_code = spec.capture_runs_code
    for key, path in (spec.capture or {}).items():
        root = path.root
        if root == "return":
            def on_return(span, result, key=key, path=path):
                span.set(key, path.evaluate({}, result, run_code=run_code))
            return_hooks.append(on_return)
            continue
        get = _getter(params, root, indexed=path.root_index is not None)
        if get is None:
            diagnostics.warn_once("capture_failed",
                                  f"target {spec.target!r}: capture {key}: no parameter named {root!r}",
                                  key=(spec.target, key), target=spec.target)
            continue

        def on_call(span, args, kwargs, key=key, path=path, get=get, root=root):
            value = get(args, kwargs)
            if value is not _MISSING:
                span.set(key, path.evaluate({root: value}, run_code=run_code))
        arg_hooks.append(on_call)

    if spec.kind == "db":
        hook = _statement_hook(spec, params)
        if hook is not None:
            arg_hooks.insert(0, hook)
        return_hooks.insert(0, _rows)    # first: a capture of the program's own named `rows` wins
    return tuple(arg_hooks), tuple(return_hooks)


def _rows(span, result):
    if type(result) in _SIZED:
        span.set("rows", len(result))


def _system_of(value):
    """The database of a driver's object (a connection, a cursor), or None."""
    cls = type(value)
    try:
        return _system_by_type[cls]
    except KeyError:
        pass
    system = DRIVER_SYSTEMS.get((getattr(cls, "__module__", None) or "").partition(".")[0])
    if len(_system_by_type) < 256:
        _system_by_type[cls] = system
    return system


def _statement_hook(spec, params):
    from autoperf import diagnostics, sql

    names = [spec.statement_arg] if spec.statement_arg else list(_SQL_PARAM_NAMES)
    get = None
    for name in names:
        get = _getter(params, name)
        if get is not None:
            break
    if get is None and not spec.statement_arg and params:
        # No conventional name: the first parameter after self/cls.
        first = 1 if params[0].name in ("self", "cls") else 0
        if len(params) > first:
            get = _getter(params, params[first].name)
    if get is None:
        diagnostics.warn_once("capture_failed",
                              f"target {spec.target!r}: no SQL argument {spec.statement_arg or ''!r}",
                              key=(spec.target, "statement_arg"), target=spec.target)
        return None

    known = spec.system or DRIVER_SYSTEMS.get(spec.module.partition(".")[0])

    def on_call(span, args, kwargs):
        system = known or (_system_of(args[0]) if args else None)
        text = get(args, kwargs)
        if isinstance(text, (str, bytes)):
            # the dialect of a known system; else whatever any dialect could read as a literal goes
            attrs = sql.describe(text if isinstance(text, str) else text.decode("utf-8", "replace"),
                                 dialect=system if system in sql.DIALECTS else None)
            if span.attrs is None:
                span.attrs = dict(attrs)
            else:
                span.attrs.update(attrs)
        if system is not None:
            span.set("system", system)
    return on_call
