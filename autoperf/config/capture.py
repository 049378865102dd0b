"""Capture paths: parsed when the config is loaded, evaluated at call time, never ``eval``'d.

Grammar::

    capture := path | ('len' | 'str' | 'type') '(' path ')'
    path    := root ( '.' ident | '[' int ']' | '[' quoted-string ']' )*
    root    := ident | 'return' | 'args' '[' int ']' | 'kwargs' '[' quoted-string ']'

``ident`` is an argument name (``self`` included) at the root. Attribute names starting with
``_`` are refused. ``type(x)`` gives the type's name.
"""
import re
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


def to_json_value(value):
    """``value`` when it is a JSON scalar (str/int/float/bool/None), else ``str(value)`` cut to 200 chars."""
    if type(value) in _PLAIN:
        return value
    if isinstance(value, bool):
        return bool(value)
    for base in (int, float, str):
        if isinstance(value, base):
            return base(value) if base is not str else str.__str__(value)
    return _truncate(str(value))


class CapturePath:
    """A compiled capture path.

    ``root``: the argument name, or ``"return"``, ``"args"`` (``root_index``: int) or ``"kwargs"``
    (``root_index``: str); ``uses_return`` says whether it needs the return value; ``text`` is the source.
    """

    __slots__ = ("text", "root", "root_index", "func", "steps", "uses_return")

    def __init__(self, text, root, root_index, steps, func):
        self.text, self.root, self.root_index, self.func = text, root, root_index, func
        self.steps = tuple(steps)
        self.uses_return = root == "return"

    def evaluate(self, bound_arguments, return_value=MISSING, args=None, kwargs=None):
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
            for step in self.steps:
                value = step(value)
            if self.func is not None:
                value = self.func(value)
            return to_json_value(value)
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
    func = None
    if len(toks) >= 3 and toks[0][0] == "ident" and toks[1][0] == "open":
        if toks[0][1] not in _FUNCS:
            raise CaptureError(f"unknown function {toks[0][1]!r} (use len, str or type)", toks[0][2])
        if toks[-1][0] != "close":
            raise CaptureError("missing ')'", len(text))
        func, toks = _FUNCS[toks[0][1]], toks[2:-1]
    if not toks or toks[0][0] != "ident":
        pos = toks[0][2] if toks else len(text)
        raise CaptureError("a capture path starts with an argument name, return, args[N] or kwargs['k']", pos)
    root, root_index, i = toks[0][1], None, 1
    if root in ("args", "kwargs") and len(toks) > 1 and toks[1][0] in ("int", "sq", "dq"):
        if (root == "args") != (toks[1][0] == "int"):
            raise CaptureError(f"{root}[...] needs {'an integer' if root == 'args' else 'a quoted key'}", toks[1][2])
        root_index, i = toks[1][1], 2
    steps, attrs = [], []
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
            attrs = []
        steps.append(itemgetter(value))
        i += 1
    if attrs:
        steps.append(attrgetter(".".join(attrs)))
    return CapturePath(text, root, root_index, steps, func)
