"""A small declarative schema DSL that validates PyYAML nodes.

Every schema node has ``validate(node, path, errors) -> value`` (``node`` is a node from
``yaml.compose``, or ``None`` when the key is absent) and ``json_schema() -> dict``.
Problems are added to ``errors`` (an :class:`Errors`) with the node's line and column; all of
them are collected, validation never stops at the first. ``${ENV}`` / ``${ENV:-default}`` in
scalar values is expanded before type conversion (see :mod:`autoperf.config.nodes`). PyYAML is
only imported when there is a node to convert.
"""
import re

from .nodes import BAD, Errors, describe_node, expand, from_environment, is_null, join, mapping_items, scalar, show

MISSING = type("Missing", (), {"__repr__": lambda self: "MISSING", "__bool__": lambda self: False})()
_ENV_REF = {"type": "string", "pattern": r"\$\{[A-Za-z_][A-Za-z0-9_]*(:-([^}$]|\$(?!\{))*)?\}"}


class Schema:
    """Base class: a scalar schema implements ``check(value, node, path, errors)``."""

    def validate(self, node, path, errors):
        if node is None:
            return self.empty()
        if node.id != "scalar":
            errors.add(node, path, f"expected {self.describe()}, got {describe_node(node)}")
            return None
        value = scalar(node, path, errors)
        return None if value is BAD else self.check(value, node, path, errors)

    def wrong(self, value, node, path, errors):
        errors.add(node, path, f"expected {self.describe()}, got {show(value, node)}")

    def empty(self):
        return None

    def describe(self):
        return "a value"

    def json_schema(self):
        return {}


class Any(Schema):
    """Any YAML value, converted to plain Python (dict / list / scalar)."""

    def validate(self, node, path, errors):
        if node is None:
            return None
        if node.id == "mapping":
            return {k: self.validate(v, join(path, k), errors) for k, _, v in mapping_items(node, path, errors)}
        if node.id == "sequence":
            return [self.validate(v, join(path, i), errors) for i, v in enumerate(node.value)]
        value = scalar(node, path, errors)
        return None if value is BAD else value


class Str(Schema):
    """A string; ``pattern`` must match it whole; ``check(value) -> message | None`` adds a custom test."""

    def __init__(self, pattern=None, check=None, doc_pattern=None):
        self.pattern, self.check_fn = pattern, check
        self._re = re.compile(pattern) if pattern else None
        self.doc_pattern = doc_pattern or pattern

    def validate(self, node, path, errors):
        if node is not None and node.id == "scalar" and "${" in node.value:  # a string field takes the text as is
            text = expand(node, path, errors)
            return None if text is BAD else self.check(text, node, path, errors)
        return super().validate(node, path, errors)

    def check(self, value, node, path, errors):
        if not isinstance(value, str):
            errors.add(node, path, f"expected a string, got {show(value)}" + (" (quote it)" if value is not None else ""))
            return None
        if self._re is not None and not self._re.fullmatch(value):
            errors.add(node, path, f"{show(value, node)} does not match {self.pattern}")
        elif self.check_fn is not None:
            problem = self.check_fn(value)
            if problem:
                if from_environment(node):  # the problem quotes the value: name the reference instead
                    problem = problem.replace(repr(value), show(value, node))
                errors.add(node, path, problem)
        return value

    def describe(self):
        return "a string"

    def json_schema(self):
        out = {"type": "string"}
        if self.doc_pattern:
            out["pattern"] = f"^(?:{self.doc_pattern})$"
        return out


class _Number(Schema):
    """Every number is bounded: ``max`` (default ``LIMIT``) and ``min`` (default ``-LIMIT``)."""

    types, name, json_type = (int,), "an integer", "integer"
    LIMIT = 2**31 - 1

    def __init__(self, min=None, max=None, min_exclusive=False):
        self.min, self.max, self.min_exclusive = min, max, min_exclusive

    def check(self, value, node, path, errors):
        if isinstance(value, bool) or not isinstance(value, self.types) or value != value:
            self.wrong(value, node, path, errors)
            return None
        low = -self.LIMIT if self.min is None else self.min
        high = self.LIMIT if self.max is None else self.max
        try:
            value = self.types[0](value)
        except OverflowError:  # an integer too big for a float: out of range below
            pass
        if low < value if self.min_exclusive else low <= value:
            if value <= high:
                return value
            errors.add(node, path, f"must be <= {high}, got {show(value, node)}")
        else:
            errors.add(node, path, f"must be {'>' if self.min_exclusive else '>='} {low}, got {show(value, node)}")
        return None

    def describe(self):
        return self.name

    def json_schema(self):
        out = {"type": self.json_type}
        out["exclusiveMinimum" if self.min_exclusive else "minimum"] = -self.LIMIT if self.min is None else self.min
        out["maximum"] = self.LIMIT if self.max is None else self.max
        return {"anyOf": [out, _ENV_REF]}


class Int(_Number):
    """An integer (not a bool), optionally bounded: ``min <= value <= max``."""


class Float(_Number):
    """A number (ints accepted, returned as float); ``min_exclusive=True`` makes ``min`` strict."""

    types, name, json_type = (float, int), "a number", "number"
    LIMIT = 1e9


class Bool(Schema):
    """A YAML boolean (true/false/yes/no/on/off)."""

    def check(self, value, node, path, errors):
        if not isinstance(value, bool):
            return self.wrong(value, node, path, errors)
        return value

    def describe(self):
        return "a boolean"

    def json_schema(self):
        return {"anyOf": [{"type": "boolean"}, _ENV_REF]}


class Enum(Schema):
    """One of ``values`` (compared with their type, so ``true`` never equals ``1``)."""

    def __init__(self, *values):
        self.values = values

    def check(self, value, node, path, errors):
        for v in self.values:
            if type(v) is type(value) and v == value:
                return value
        errors.add(node, path, f"expected {self.describe()}, got {show(value, node)}")
        return None

    def describe(self):
        return "one of " + ", ".join(v if isinstance(v, str) else show(v) for v in self.values)

    def json_schema(self):
        return {"anyOf": [{"enum": list(self.values)}, _ENV_REF]}


class OneOf(Schema):
    """The first of ``schemas`` that accepts the value without errors."""

    def __init__(self, *schemas):
        self.schemas = schemas

    def validate(self, node, path, errors):
        for schema in self.schemas:
            trial = Errors(errors.file)
            value = schema.validate(node, path, trial)
            if not len(trial):
                return value
        errors.add(node, path, f"expected {self.describe()}, got {describe_node(node)}")
        return None

    def describe(self):
        return " or ".join(s.describe() for s in self.schemas)

    def json_schema(self):
        return {"anyOf": [s.json_schema() for s in self.schemas]}


class List(Schema):
    """A list of ``item`` (null counts as empty)."""


    def __init__(self, item):
        self.item = item

    def validate(self, node, path, errors):
        if is_null(node):
            return []
        if node.id != "sequence":
            errors.add(node, path, f"expected a list, got {describe_node(node)}")
            return []
        return [self.item.validate(v, join(path, i), errors) for i, v in enumerate(node.value)]

    def empty(self):
        return []

    def describe(self):
        return "a list"

    def json_schema(self):
        return {"type": ["array", "null"], "items": self.item.json_schema()}


class Map(Schema):
    """A mapping of string keys (optionally checked by ``keys``, a :class:`Str`) to ``value``."""


    def __init__(self, value, keys=None):
        self.value, self.keys = value, keys

    def validate(self, node, path, errors):
        if is_null(node):
            return {}
        if node.id != "mapping":
            errors.add(node, path, f"expected a mapping, got {describe_node(node)}")
            return {}
        out = {}
        for key, knode, vnode in mapping_items(node, path, errors):
            if self.keys is not None:
                self.keys.check(key, knode, join(path, key), errors)
            out[key] = self.value.validate(vnode, join(path, key), errors)
        return out

    def empty(self):
        return {}

    def describe(self):
        return "a mapping"

    def json_schema(self):
        out = {"type": ["object", "null"], "additionalProperties": self.value.json_schema()}
        if self.keys is not None:
            out["propertyNames"] = self.keys.json_schema()
        return out


class Field:
    """A key of an :class:`Obj`: its schema, default (``MISSING``: the schema's empty value) and doc."""

    def __init__(self, schema, default=MISSING, required=False, doc=""):
        if isinstance(schema, Float) and type(default) is int:
            default = float(default)
        self.schema, self.default, self.required, self.doc = schema, default, required, doc

    def default_value(self):
        if self.default is MISSING:
            return self.schema.empty()
        return _copy(self.default)

    def json_schema(self):
        out = dict(self.schema.json_schema())
        if self.doc:
            out["description"] = self.doc
        if self.default is not MISSING and self.default is not None:
            out["default"] = self.default
        return out


class Obj(Schema):
    """A mapping with known keys. Unknown keys are errors unless ``extra`` (then kept as :class:`Any`).

    ``rules``: functions ``rule(value_dict) -> [(key, message)]`` run on the converted mapping, for
    checks across keys; the error points at ``key`` when present in the file, else at the mapping.
    """


    def __init__(self, fields, extra=False, rules=(), doc=""):
        self.fields, self.extra, self.rules, self.doc = dict(fields), extra, tuple(rules), doc

    def validate(self, node, path, errors):
        if not is_null(node) and node.id != "mapping":
            errors.add(node, path, f"expected a mapping, got {describe_node(node)}")
            return self.empty()
        given, found, extra = {}, {}, {}
        for key, knode, vnode in () if is_null(node) else mapping_items(node, path, errors):
            field = self.fields.get(key)
            if field is not None:
                found[key] = knode
                given[key] = field.schema.validate(vnode, join(path, key), errors)
            elif self.extra:
                extra[key] = Any().validate(vnode, join(path, key), errors)
            else:
                errors.add(knode, join(path, key), self._unknown(key))
        out = {}
        for name, field in self.fields.items():
            if name in given:
                out[name] = given[name]
            else:
                if field.required:
                    errors.add(node, path, f"missing required key {name!r}")
                out[name] = field.default_value()
        out.update(extra)
        for rule in self.rules:
            for key, message in rule(out):
                errors.add(found.get(key, node), join(path, key) if key in found else path, message)
        return out

    def _unknown(self, key):
        import difflib

        close = difflib.get_close_matches(key, list(self.fields), n=1)
        hint = f"did you mean {close[0]!r}?" if close else "expected one of " + ", ".join(self.fields)
        return f"unknown key {key!r} ({hint})"

    def empty(self):
        return {name: field.default_value() for name, field in self.fields.items()}

    def describe(self):
        return "a mapping"

    def json_schema(self):
        out = {
            "type": ["object", "null"],
            "properties": {name: field.json_schema() for name, field in self.fields.items()},
            "additionalProperties": bool(self.extra),
        }
        required = [name for name, field in self.fields.items() if field.required]
        if required:
            out["required"] = required
        if self.doc:
            out["description"] = self.doc
        return out


def _copy(value):
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


__all__ = ["Obj", "Field", "Str", "Int", "Float", "Bool", "Enum", "List", "Map", "Any", "OneOf",
           "Schema", "Errors", "MISSING"]


def with_defaults(defaults: dict, section: dict | None) -> dict:
    """``section`` over ``defaults``, ignoring keys set to None (for sections read outside load_config)."""
    out = dict(defaults)
    for key, value in (section or {}).items():
        if value is not None:
            out[key] = value
    return out
