"""Capture paths: parsed when the config is loaded, evaluated at call time, never ``eval``'d.

Grammar::

    capture := path | ('len' | 'str' | 'type') '(' path ')'
    path    := root ( '.' ident | '[' int ']' | '[' quoted-string ']' )*
    root    := ident | 'return' | 'args' '[' int ']' | 'kwargs' '[' quoted-string ']'

Names starting with ``_`` are refused. By default evaluating runs none of the program's code (no
property, ``__getattr__``, ``__getitem__``, ``__len__``, ``__str__``): docs/config.md, "capture".
"""
import re
import types
from operator import attrgetter, itemgetter

__all__ = ["CaptureError", "CapturePath", "compile_capture", "to_json_value", "MISSING"]


class _Missing:
    def __repr__(self):
        return "MISSING"


MISSING = _Missing()
_TOKEN = re.compile(
    r"\s*(?:(?P<ident>[^\W\d]\w*)|(?P<dot>\.)|\[\s*(?:(?P<int>-?\d+)|'(?P<sq>[^'\\]*)'|\"(?P<dq>[^\"\\]*)\")\s*\]"
    r"|(?P<open>\()|(?P<close>\)))"
)
_FUNCS = {"len": len, "str": lambda v: _truncate(str(v)), "type": lambda v: type(v).__name__}
_PLAIN = (str, int, float, bool, type(None))


class CaptureError(Exception):
    """A capture path that does not parse (``.position``: 0-based offset) or could not be evaluated."""

    def __init__(self, message, position=None):
        super().__init__(message)
        self.position = position


def _truncate(text, limit=200):
    return text if len(text) <= limit else text[: limit - 1] + "…"


def to_json_value(value, run_code=True):
    """``value`` when it is a JSON scalar (str/int/float/bool/None), else ``str(value)`` cut to 200
    chars (without ``run_code``: only a built-in ``str``, else ``<TypeName>``)."""
    if type(value) in _PLAIN:
        return value
    if isinstance(value, bool):
        return bool(value)
    for base in (int, float, str):
        if isinstance(value, base):
            return base(value) if base is not str else str.__str__(value)
    return _truncate(str(value) if run_code else _static_str(value))


# -- reading without running the program's code ----------------------------------------------
_BUILTIN = (types.WrapperDescriptorType, types.MethodDescriptorType, types.BuiltinFunctionType,
            types.ClassMethodDescriptorType, types.MethodWrapperType)
_SLOTS = (types.MemberDescriptorType, types.GetSetDescriptorType)
_NO_VALUE = object()


def _built_in(tp, name):
    """True when ``tp``'s ``name`` method is implemented in C (calling it runs no program code)."""
    for klass in tp.__mro__:
        found = klass.__dict__.get(name, _NO_VALUE)
        if found is not _NO_VALUE:
            return isinstance(found, _BUILTIN)
    return False


def _static_str(value):
    tp = type(value)
    if _built_in(tp, "__str__") and (tp.__str__ is not object.__str__ or _built_in(tp, "__repr__")):
        return str(value)
    return f"<{tp.__name__}>"


def static_attr(obj, name):
    """``obj.name`` from the instance ``__dict__``, a slot or a plain class attribute, without
    calling a property, another descriptor or ``__getattr__``; AttributeError otherwise."""
    tp = type(obj)
    found = _NO_VALUE
    for klass in tp.__mro__:
        found = klass.__dict__.get(name, _NO_VALUE)
        if found is not _NO_VALUE:
            break
    if found is not _NO_VALUE:
        if isinstance(found, _SLOTS):
            return found.__get__(obj, tp)
        kind = type(found)
        if hasattr(kind, "__set__") or hasattr(kind, "__delete__"):
            raise AttributeError(f"{name!r} is a property or descriptor of {tp.__name__} "
                                 f"(reading it runs code; capture_runs_code: true allows it)")
    try:
        instance = object.__getattribute__(obj, "__dict__")
    except AttributeError:
        instance = None
    if isinstance(instance, dict) and name in instance:
        return instance[name]
    if found is not _NO_VALUE:
        if hasattr(type(found), "__get__"):
            raise AttributeError(f"{name!r} of {tp.__name__} is a method or descriptor, not a value")
        return found
    raise AttributeError(f"{tp.__name__} has no plain attribute {name!r} (__getattr__ is not called)")


def static_item(obj, key):
    """``obj[key]`` for a list, tuple, str, bytes or dict (``dict.get``), else TypeError."""
    if isinstance(obj, dict):
        value = dict.get(obj, key, _NO_VALUE)
        if value is _NO_VALUE:
            raise KeyError(key)
        return value
    for base in (list, tuple, str, bytes):
        if isinstance(obj, base):
            return base.__getitem__(obj, key)
    raise TypeError(f"reading an item of a {type(obj).__name__} runs its code (capture_runs_code: true allows it)")


def _static_len(obj):
    if _built_in(type(obj), "__len__"):
        return len(obj)
    raise TypeError(f"len() of a {type(obj).__name__} runs its code (capture_runs_code: true allows it)")


def _static_steps(kinds):
    out = []
    for kind, value in kinds:
        if kind == "attr":
            for name in value.split("."):
                out.append(lambda obj, name=name: static_attr(obj, name))
        else:
            out.append(lambda obj, key=value: static_item(obj, key))
    return tuple(out)


_STATIC_FUNCS = {"len": _static_len, "str": lambda v: _truncate(_static_str(v)), "type": _FUNCS["type"]}


class CapturePath:
    """A compiled capture path.

    ``root``: the argument name, or ``"return"``, ``"args"`` (``root_index``: int) or ``"kwargs"``
    (``root_index``: str); ``uses_return`` says whether it needs the return value; ``text`` is the source.
    """

    __slots__ = ("text", "root", "root_index", "func", "steps", "uses_return", "static_func", "static_steps")

    def __init__(self, text, root, root_index, steps, func, kinds=(), func_name=None):
        self.text, self.root, self.root_index, self.func = text, root, root_index, func
        self.steps = tuple(steps)
        self.static_steps = _static_steps(kinds)
        self.static_func = _STATIC_FUNCS[func_name] if func_name else None
        self.uses_return = root == "return"

    def evaluate(self, bound_arguments, return_value=MISSING, args=None, kwargs=None, run_code=False):
        """The captured, JSON-friendly value; raises :class:`CaptureError` on any failure.

        ``bound_arguments``: argument name -> value (e.g. ``inspect.BoundArguments.arguments``), or
        ``{root: value}`` when the caller already picked the root's value.
        ``args[N]`` reads the ``args`` keyword when given, else ``bound_arguments["args"]`` (the call's
        positional arguments), else the N-th value of ``bound_arguments``. ``kwargs['k']`` reads the
        ``kwargs`` keyword, else ``bound_arguments["kwargs"]`` (a dict), else ``bound_arguments['k']``.
        """
        try:
            root = self.root
            if root == "return":
                if return_value is MISSING:
                    raise CaptureError(f"{self.text}: the return value is not available")
                value = return_value
            elif self.root_index is None:
                try:
                    value = bound_arguments[root]
                except KeyError:
                    raise CaptureError(f"{self.text}: no argument named {root!r}") from None
            elif root == "args":
                if args is None:
                    args = bound_arguments["args"] if "args" in bound_arguments else tuple(bound_arguments.values())
                value = args[self.root_index]
            else:
                if kwargs is None:
                    kwargs = bound_arguments.get("kwargs")
                    kwargs = kwargs if isinstance(kwargs, dict) else bound_arguments
                value = kwargs[self.root_index]
            for step in self.steps if run_code else self.static_steps:
                value = step(value)
            func = self.func if run_code else self.static_func
            if func is not None:
                value = func(value)
            return to_json_value(value, run_code)
        except CaptureError:
            raise
        except Exception as e:
            raise CaptureError(f"{self.text}: {type(e).__name__}: {_truncate(str(e), 100)}") from e

    def __reduce__(self):
        return compile_capture, (self.text,)

    def __eq__(self, other):
        return isinstance(other, CapturePath) and other.text == self.text

    def __hash__(self):
        return hash(self.text)

    def __repr__(self):
        return f"CapturePath({self.text!r})"


def _tokens(text):
    pos, end = 0, len(text.rstrip())
    while pos < end:
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise CaptureError(f"unexpected {text[pos:].strip()[:20]!r} at column {pos + 1}", pos)
        kind = m.lastgroup
        value = m.group(kind)
        yield kind, (int(value) if kind == "int" else value), m.start(kind) if kind else pos
        pos = m.end()


def compile_capture(text):
    """Parse ``text`` into a :class:`CapturePath`; raises :class:`CaptureError` with ``.position``."""
    if not isinstance(text, str) or not text.strip():
        raise CaptureError("empty capture path", 0)
    toks = list(_tokens(text))
    func = func_name = None
    if len(toks) >= 3 and toks[0][0] == "ident" and toks[1][0] == "open":
        if toks[0][1] not in _FUNCS:
            raise CaptureError(f"unknown function {toks[0][1]!r} (use len, str or type)", toks[0][2])
        if toks[-1][0] != "close":
            raise CaptureError("missing ')'", len(text))
        func_name = toks[0][1]
        func, toks = _FUNCS[func_name], toks[2:-1]
    if not toks or toks[0][0] != "ident":
        pos = toks[0][2] if toks else len(text)
        raise CaptureError("a capture path starts with an argument name, return, args[N] or kwargs['k']", pos)
    root, root_index, i = toks[0][1], None, 1
    if root in ("args", "kwargs") and len(toks) > 1 and toks[1][0] in ("int", "sq", "dq"):
        if (root == "args") != (toks[1][0] == "int"):
            raise CaptureError(f"{root}[...] needs {'an integer' if root == 'args' else 'a quoted key'}", toks[1][2])
        root_index, i = toks[1][1], 2
    steps, attrs, kinds = [], [], []
    while i < len(toks):
        kind, value, pos = toks[i]
        if kind == "dot":
            if i + 1 >= len(toks) or toks[i + 1][0] != "ident":
                raise CaptureError("expected an attribute name after '.'", pos + 1)
            name = toks[i + 1][1]
            if name.startswith("_"):
                raise CaptureError(f"attribute {name!r} is private (names starting with '_' are refused)", toks[i + 1][2])
            attrs.append(name)
            i += 2
            continue
        if kind not in ("int", "sq", "dq"):
            raise CaptureError(f"unexpected {value!r} at column {pos + 1}", pos)
        if attrs:
            steps.append(attrgetter(".".join(attrs)))
            kinds.append(("attr", ".".join(attrs)))
            attrs = []
        steps.append(itemgetter(value))
        kinds.append(("item", value))
        i += 1
    if attrs:
        steps.append(attrgetter(".".join(attrs)))
        kinds.append(("attr", ".".join(attrs)))
    return CapturePath(text, root, root_index, steps, func, kinds, func_name)
