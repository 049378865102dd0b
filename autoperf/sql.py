"""SQL normalisation and fingerprints: what a ``db`` span says about its statement.

``describe(sql, dialect=...)`` returns ``{"statement", "fingerprint", "operation"}``: the statement
with comments, literals and value lists reduced to ``?`` (placeholders kept; never a parameter or
literal value), truncated to ``max_length``; a 16-hex blake2b fingerprint of the full normalised
text (the same query shape, the same fingerprint); the statement's verb (the main one after CTEs).
Dialects (postgresql, mysql, sqlite, unknown) differ in what quotes, backslashes and ``#`` mean:
docs/integrations_db_http.md. Results are cached by the raw text (bounded).
"""
from __future__ import annotations

try:  # the C blake2 module alone; `hashlib` also loads OpenSSL (~4 ms of start-up)
    from _blake2 import blake2b
except ImportError:  # pragma: no cover
    from hashlib import blake2b
import re

__all__ = ["describe", "set_max_length", "max_length", "clear_cache", "DIALECTS", "DEFAULT_MAX_LENGTH"]

DEFAULT_MAX_LENGTH = 200
#: Distinct raw statements remembered; the oldest entry goes first when full.
CACHE_SIZE = 4096
#: Raw texts longer than this are normalised every time rather than kept as cache keys
#: (a generated statement with inline values must not pin megabytes of memory).
MAX_CACHED_TEXT = 16384

_max_length = DEFAULT_MAX_LENGTH
_cache: dict = {}   # raw text -> (full normalised, fingerprint, operation, result at _max_length)
_dialect_caches: dict = {}   # dialect -> a cache like _cache (postgresql uses _cache itself)
DIALECTS = ("postgresql", "mysql", "sqlite", None)


class _LazyPattern:
    """A regex compiled on first use: these take ~20 ms to compile, and most processes that
    import this module (every instrumented one, for the config) never describe a statement."""

    def __init__(self, pattern, flags=0):
        self._args = (pattern, flags)

    def __getattr__(self, name):
        compiled = re.compile(*self._args)
        for attr in ("finditer", "sub", "search", "match", "fullmatch", "findall", "split"):
            setattr(self, attr, getattr(compiled, attr))  # later look-ups skip __getattr__
        return getattr(compiled, name)


_TOKEN = _LazyPattern(r"""
    (?P<ws>\s+)
  | (?P<lc>--[^\n]*)
  | (?P<bc>/\*)
  | (?P<dq>\$(?P<tag>[A-Za-z_\x80-\U0010ffff][\w\x80-\U0010ffff]*)?\$)
  | (?P<param>\$\d+)
  | (?P<str>(?:[eE]'(?:[^'\\]|\\.|'')*'|(?:[bBxXnN]|[uU]&)?'(?:[^']|'')*'))
  | (?P<ustr>(?:[eEbBxXnN]|[uU]&)?'.*)
  | (?P<qid>(?:[uU]&)?"(?:[^"]|"")*")
  | (?P<num>(?:0[xX][0-9a-fA-F_]+|0[oO][0-7_]+|0[bB][01_]+|(?:\d[\d_]*(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?))
  | (?P<word>[A-Za-z_\x80-\U0010ffff][\w$\x80-\U0010ffff]*)
  | (?P<op>(?:(?!--|/\*)[+\-*/<>=~!@\#%^&|`?:])+)
  | (?P<other>.)
""", re.S | re.X)
_SPECIAL_OP = set("~!@#%^&|`?")
_VERBS = frozenset(("SELECT", "INSERT", "UPDATE", "DELETE", "MERGE", "VALUES", "TABLE"))
# after these, a "-" before a number is a sign, not a subtraction
_SIGN_CONTEXT_WORDS = frozenset((
    "SELECT", "WHERE", "AND", "OR", "NOT", "THEN", "ELSE", "WHEN", "IN", "VALUES", "BETWEEN",
    "LIMIT", "OFFSET", "RETURN", "IS", "SET", "BY", "AS", "ON", "CASE", "ANY", "ALL", "ARRAY",
))
_ITEM = r"(?:\?|\$\d+)(?:\s*::\s*[\w\"\[\]. ]+?)?"
_IN_LIST = _LazyPattern(r"\b(IN)\s*\(\s*" + _ITEM + r"(?:\s*,\s*" + _ITEM + r")*\s*\)", re.I)
_ARRAY_LIST = _LazyPattern(r"\b(ARRAY)\s*\[\s*" + _ITEM + r"(?:\s*,\s*" + _ITEM + r")*\s*\]", re.I)
_VALUES = _LazyPattern(r"\bVALUES\s*\(", re.I)
_PARAM_NUM = _LazyPattern(r"\$\d+")


def set_max_length(length: int) -> None:
    """Set the default ``max_length`` of ``describe`` (config: ``statement_max_length``)."""
    global _max_length
    length = int(length)
    if length < 8:
        raise ValueError("statement max length must be >= 8")
    if length != _max_length:
        _max_length = length
        clear_cache()


def max_length() -> int:
    return _max_length


def clear_cache() -> None:
    _cache.clear()
    _dialect_caches.clear()


def describe(sql: str, max_length: int | None = None, dialect: str | None = "postgresql") -> dict:
    """``{"statement", "fingerprint", "operation"}`` for ``sql`` (see the module docstring).

    ``max_length`` defaults to the value of ``set_max_length`` (200). Never returns a value
    that was in the SQL text; the caller gets its own dict.
    """
    cache = _cache if dialect == "postgresql" else _dialect_caches.setdefault(dialect, {})
    entry = cache.get(sql)
    if entry is None:
        entry = _entry(sql, dialect, cache)
    if max_length is None or max_length == _max_length:
        return dict(entry[3])
    return _result(entry[0], entry[1], entry[2], max_length)


def _entry(sql, dialect="postgresql", cache=_cache):
    if isinstance(sql, bytes):
        text = sql.decode("utf-8", "replace")
    elif isinstance(sql, str):
        text = sql
    else:
        text = ""  # not SQL text: say nothing rather than str() an object that may hold values
    full, operation = normalise(text, dialect)
    fingerprint = blake2b(full.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()
    entry = (full, fingerprint, operation, _result(full, fingerprint, operation, _max_length))
    if isinstance(sql, str) and len(sql) <= MAX_CACHED_TEXT:
        if len(cache) >= CACHE_SIZE:
            try:
                cache.pop(next(iter(cache)), None)
            except (StopIteration, RuntimeError):  # emptied or changed by another thread
                pass
        cache[sql] = entry
    return entry


def _result(full, fingerprint, operation, max_length):
    statement = full
    if len(statement) > max_length:
        statement = statement[:max_length - 3] + "..." if max_length > 3 else statement[:max_length]
    return {"statement": statement, "fingerprint": fingerprint, "operation": operation}


def _skip_block_comment(text, pos):
    """Index after the ``*/`` closing the (possibly nested) comment opened at ``pos``."""
    depth, i, n = 0, pos, len(text)
    while i < n:
        if text.startswith("/*", i):
            depth += 1
            i += 2
        elif text.startswith("*/", i):
            depth -= 1
            i += 2
            if depth == 0:
                return i
        else:
            i += 1
    return n


def _split_op(op):
    """PostgreSQL's rule: a multi-character operator cannot end in + or - unless it holds ~!@#%^&|`?."""
    if len(op) > 1 and op[-1] in "+-" and not (_SPECIAL_OP & set(op)):
        head = op.rstrip("+-")
        tail = op[len(head):]
        return ([head] if head else []) + list(tail)
    return [op]


_MYSQL_STR = _LazyPattern(r"""(?:[bBxXnN]|_\w+)?(?:'(?:[^'\\]|\\.|'')*'|"(?:[^"\\]|\\.|"")*")""", re.S)


def normalise(text: str, dialect: str | None = "postgresql") -> tuple:
    """``(normalised statement, operation)`` for ``text`` (no caching, no truncation)."""
    postgres = dialect == "postgresql"
    mysql = dialect == "mysql"
    out: list = []
    append = out.append
    space = False            # whitespace or a comment was seen since the last token
    depth = 0
    first_word = None
    main_verb = None
    pos, n = 0, len(text)
    match = _TOKEN.match
    while pos < n:
        m = match(text, pos)
        kind = m.lastgroup
        end = m.end()
        if not postgres:
            if kind == "op" and "#" in m.group(0):       # a "#" comment (MySQL; SQLite has no "#")
                end = text.find("\n", pos + m.group(0).index("#"))
                head = m.group(0)[:m.group(0).index("#")]
                if head:
                    if space and out and out[-1] not in ("(", "["):
                        append(" ")
                    append(head)
                pos = n if end < 0 else end
                space = True
                continue
            if mysql and kind in ("str", "ustr", "qid"):   # backslash escapes, "x" is a string
                literal = _MYSQL_STR.match(text, pos)
                end = n if literal is None else literal.end()
                kind = "str"
            elif kind == "qid":                        # "x" may be a string literal here
                kind = "str"
            elif kind == "str" and "\\" in m.group(0) and m.group(0)[:1] not in "eE":
                # where the string ends depends on the dialect: nothing after its start is kept
                if out and out[-1] not in ("(", "[", " ") and space:
                    append(" ")
                append("?")
                break
        if kind == "ws" or kind == "lc":
            space = True
            pos = end
            continue
        if kind == "bc":
            space = True
            pos = _skip_block_comment(text, pos)
            continue
        if kind == "dq":
            tag = m.group(0)
            close = text.find(tag, end)
            pos = n if close < 0 else close + len(tag)
            token = "?"
        elif kind == "str" or kind == "ustr":
            token = "?"
            pos = end
        elif kind == "num":
            token = "?"
            pos = end
            # a sign belongs to the literal: "= -5" -> "= ?", but "a - 5" stays "a - ?"
            if out and out[-1] == "-":
                i = len(out) - 2
                while i >= 0 and out[i] == " ":
                    i -= 1
                before = out[i] if i >= 0 else None
                if (before is None or before in ("(", ",", "[") or (before[-1] in "=<>+-*/%^|&~!@#")
                        or before.upper() in _SIGN_CONTEXT_WORDS):
                    out.pop()
                    space = False
        elif kind == "op":
            pos = end
            parts = _split_op(m.group(0))
            for part in parts[:-1]:
                if space and out and out[-1] not in ("(", "["):
                    append(" ")
                append(part)
                space = False
            token = parts[-1]
        else:
            token = m.group(0)
            pos = end
            if kind == "word":
                if first_word is None:
                    first_word = token.upper()
                elif main_verb is None and depth == 0 and first_word == "WITH":
                    upper = token.upper()
                    if upper in _VERBS:
                        main_verb = upper
            elif token == "(":
                depth += 1
            elif token == ")":
                depth -= 1
        if out:
            last = out[-1]
            if last == ",":
                if token != ")":
                    append(" ")
            elif space and last not in ("(", "[", " ") and token not in (")", ",", "]", ";"):
                append(" ")
        append(token)
        space = False
    statement = "".join(out)
    if "(" in statement or "[" in statement:
        statement = _collapse_lists(statement)
    operation = first_word or ""
    if operation == "WITH":
        operation = main_verb or "WITH"
    return statement, operation


def _collapse_lists(statement):
    statement = _IN_LIST.sub(lambda m: m.group(1) + " (?)", statement)
    statement = _ARRAY_LIST.sub(lambda m: m.group(1) + "[?]", statement)
    if "VALUES" in statement.upper():
        statement = _collapse_values(statement)
    return statement


def _paren_end(text, start):
    """Index after the ``)`` matching the ``(`` at ``start`` (None when unbalanced)."""
    depth = 0
    for i in range(start, len(text)):
        ch = text[i]
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return i + 1
    return None


def _collapse_values(statement):
    """``VALUES (a), (b), (c)`` -> ``VALUES (a)`` when the tuples have the same shape."""
    pieces = []
    pos = 0
    for m in _VALUES.finditer(statement):
        if m.start() < pos:
            continue
        open_at = m.end() - 1
        end = _paren_end(statement, open_at)
        if end is None:
            break
        first = statement[open_at:end]
        shape = _PARAM_NUM.sub("$", first)
        cursor = end
        while True:
            j = cursor
            while j < len(statement) and statement[j] == " ":
                j += 1
            if j >= len(statement) or statement[j] != ",":
                break
            k = j + 1
            while k < len(statement) and statement[k] == " ":
                k += 1
            if k >= len(statement) or statement[k] != "(":
                break
            nxt_end = _paren_end(statement, k)
            if nxt_end is None or _PARAM_NUM.sub("$", statement[k:nxt_end]) != shape:
                break
            cursor = nxt_end
        pieces.append(statement[pos:end])
        pos = cursor
    pieces.append(statement[pos:])
    return "".join(pieces)
