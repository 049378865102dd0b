"""Alert rules: pure evaluation of one record against threshold / baseline rules (no I/O).

A rule matches records whose dotted-path fields equal the `match` values, reads a numeric `field`
and fires when it is `above` a threshold and/or above `baseline_factor` × the rolling median of the
last `baseline_samples` values of the same key (once `baseline_min_samples` are known), never for a
value below `min_value`. The baselines can be saved and restored (engine: they survive a restart).
"""
from __future__ import annotations

import collections
from bisect import bisect_left, insort
from itertools import repeat

SEVERITIES = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}
_FLOAT = {float}
MAX_KEYS = 10000          # baselines kept per rule (oldest key evicted beyond that)

# Seed plan table 10.1
DEFAULT_RULES = [
    {"name": "command_slow", "severity": "CRITICAL", "match": {"type": "flow_complete", "flow_kind": "flow"},
     "field": "duration_ms", "above": 3000.0, "key": "flow_name",
     "description": "a command took longer than 3000 ms (interaction timeout risk)"},
    {"name": "command_baseline", "severity": "WARNING", "match": {"type": "flow_complete", "flow_kind": "flow"},
     "field": "duration_ms", "baseline_factor": 2.0, "baseline_samples": 100, "baseline_min_samples": 20,
     "min_value": 100.0, "key": "flow_name",
     "description": "a command took more than 2x its recent median (and at least 100 ms)"},
    {"name": "db_query_slow", "severity": "WARNING", "match": {"type": "span", "kind": "db"},
     "field": "duration_ms", "above": 500.0, "key": "attrs.fingerprint",
     "description": "a database query took longer than 500 ms"},
    {"name": "db_pool_saturated", "severity": "CRITICAL", "match": {"type": "resource"},
     "field": "db_pool.utilisation_pct", "above": 90.0, "key": "",
     "description": "database connection pool more than 90% in use"},
    {"name": "process_pool_queue", "severity": "WARNING", "match": {"type": "resource"},
     "field": "process_pool.pending", "above": 10.0, "key": "",
     "description": "more than 10 jobs waiting for the process pool"},
]


def compile_path(path: str):
    """A getter for ``record['a']['b']`` given ``'a.b'`` (None when a step is missing), split once."""
    parts = tuple(path.split(".")) if path else ()
    if not parts:
        return lambda record: None
    if len(parts) == 1:
        key = parts[0]
        return lambda record: record.get(key) if isinstance(record, dict) else None

    def get(record):
        cur = record
        for part in parts:
            if not isinstance(cur, dict):
                return None
            cur = cur.get(part)
            if cur is None:
                return None
        return cur
    return get


class _Window:
    """The last ``size`` values in arrival order plus the same values sorted: a median per record
    costs a bisect and a small memmove instead of sorting the window."""

    __slots__ = ("order", "ordered")

    def __init__(self, size: int):
        self.order = collections.deque(maxlen=size)
        self.ordered: list = []

    def __len__(self):
        return len(self.order)

    def median(self):
        ordered = self.ordered
        n = len(ordered)
        mid = n // 2
        return ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2

    def append(self, value):
        order = self.order
        if len(order) == order.maxlen:
            del self.ordered[bisect_left(self.ordered, order[0])]
        order.append(value)
        insort(self.ordered, value)

    def extend(self, values):
        """``append`` each value, in order (the same window): many at once are sorted once."""
        if len(values) * 8 < self.order.maxlen:
            for value in values:
                self.append(value)
            return
        self.order.extend(values)
        self.ordered = sorted(self.order)


def _column(columns, rows, records, name):
    """``[r.get(name) for r in rows]`` (C-level), kept in ``columns`` while ``rows`` is all of ``records``."""
    if rows is not records:
        return list(map(dict.get, rows, repeat(name)))
    col = columns.get(name)
    if col is None:
        col = columns[name] = list(map(dict.get, rows, repeat(name)))
    return col


def _number(v):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if v == v else None


class Rule:
    """One compiled rule; :meth:`check` returns an event dict or None."""

    def __init__(self, spec: dict):
        self.name = str(spec["name"])
        self.severity = str(spec.get("severity") or "WARNING").upper()
        self.field = spec.get("field") or "duration_ms"
        self.above = _number(spec.get("above"))
        self.factor = _number(spec.get("baseline_factor"))
        self.samples = int(spec.get("baseline_samples") or 100)
        self.min_samples = int(spec.get("baseline_min_samples") or 20)
        self.min_value = _number(spec.get("min_value"))
        self.updates = 0        # values added to the baselines (persistence: save when it moved)
        self.key_path = spec.get("key")
        if self.key_path is None:
            self.key_path = "flow_name"
        self.description = spec.get("description") or ""
        self.channels = list(spec.get("channels") or [])
        self.match = []
        #: The record types this rule can match (None: any); the engine checks only these rules.
        self.types = None
        self._paths = []
        for path, want in (spec.get("match") or {}).items():
            allowed = tuple(want) if isinstance(want, (list, tuple)) else (want,)
            self.match.append((compile_path(path), allowed))
            self._paths.append((path, allowed))
            if path == "type":
                self.types = allowed
        self._flat = tuple((path, allowed) for path, allowed in self._paths if "." not in path)
        self._nested = tuple((compile_path(path), allowed) for path, allowed in self._paths if "." in path)
        self._get_value = compile_path(self.field)
        self._get_key = compile_path(self.key_path)
        # check_many's fast form: one-part paths only (the default rules): filters other than the
        # record type, the value's and the key's field names
        self._plain = None
        one_part_key = self.key_path and "." not in self.key_path     # a baseline groups by it there
        if not self._nested and "." not in self.field and (self.factor is None or one_part_key):
            self._plain = (tuple((k, a) for k, a in self._flat if k != "type"), self.field, self.key_path)
        self._hist: collections.OrderedDict = collections.OrderedDict()
        if self.above is None and self.factor is None:
            raise ValueError(f"alert rule {self.name!r} needs `above` or `baseline_factor`")

    def check(self, record: dict):
        for key, allowed in self._flat:          # one-part paths (most): a dict read each
            if record.get(key) not in allowed:
                return None
        for get, allowed in self._nested:
            if get(record) not in allowed:
                return None
        value = self._get_value(record)
        if type(value) is not float or value != value:
            value = _number(value)
        if value is None:
            return None
        key = self._get_key(record)
        if key is None and self.key_path == "attrs.fingerprint":
            key = record.get("name")
        key = "" if key is None else str(key)
        return self._judge(record, key, value)

    def check_many(self, records, out: list, columns: dict | None = None) -> None:
        """``check`` over ``records`` (all of one type the rule matches), events appended to ``out``:
        the same events and baselines as one ``check`` per record in turn. The fields are read a
        column at a time (``columns``: shared by the rules of one drain); a key's run of values below
        ``min_value`` (only remembered by a baseline) goes into its window at once."""
        plain = self._plain
        if plain is None:
            return self._check_each(records, out)
        filters, field, key_path = plain
        if columns is None:
            columns = {}
        try:
            rows = records
            for name, allowed in filters:
                col = _column(columns, rows, records, name)
                if not set(col) <= set(allowed):
                    rows = [r for r, v in zip(rows, col) if v in allowed]
            if not rows:
                return None
            values = _column(columns, rows, records, field)
            total = sum(values) if set(map(type, values)) == _FLOAT else None
        except TypeError:           # a record that is no dict, an unhashable value
            total = None
        if total is None or total != total:     # not all floats, or a NaN: record by record
            return self._check_each(rows, out)
        if self.factor is None:             # no state: only the values over the threshold matter
            if self.above is not None and max(values) > self.above:
                self._check_each([r for r, v in zip(rows, values) if v > self.above], out)
            return None
        keys = _column(columns, rows, records, key_path)
        if len(set(keys)) == 1:
            groups = {keys[0]: (values, rows)}
        else:
            groups = {}
            for key, value, record in zip(keys, values, rows):
                group = groups.get(key)
                if group is None:
                    group = groups[key] = ([], [])
                group[0].append(value)
                group[1].append(record)
        low = self.min_value
        for key, (vals, recs) in groups.items():
            key = "" if key is None else str(key)
            if low is not None and max(vals) < low:
                self._window(key).extend(vals)
                self.updates += len(vals)
                continue
            run = []                        # values only remembered, waiting to go in at once
            for value, record in zip(vals, recs):
                if low is not None and value < low:
                    run.append(value)
                    continue
                if run:
                    self._window(key).extend(run)
                    self.updates += len(run)
                    run = []
                event = self._judge(record, key, value)
                if event is not None:
                    out.append(event)
            if run:
                self._window(key).extend(run)
                self.updates += len(run)
        return None

    def _check_each(self, records, out):
        for record in records:
            event = self.check(record)
            if event is not None:
                out.append(event)

    def _judge(self, record, key, value):
        """The event (or None) for ``value`` of ``record`` under ``key``; the baseline learns it."""
        event = None
        if self.min_value is not None and value < self.min_value:
            if self.factor is not None:
                self._remember(key, value)
            return None
        if self.above is not None and value > self.above:
            event = self._event(record, key, value, self.above, None)
        if self.factor is not None:
            hist = self._window(key)
            if event is None and len(hist) >= self.min_samples:
                median = hist.median()
                if median > 0 and value > self.factor * median:
                    event = self._event(record, key, value, self.factor * median, median)
            hist.append(value)
            self.updates += 1
        return event

    def _window(self, key):
        hist = self._hist.get(key)
        if hist is None:
            hist = self._hist[key] = _Window(self.samples)
            if len(self._hist) > MAX_KEYS:
                self._hist.popitem(last=False)
        return hist

    def _remember(self, key, value):
        self._window(key).append(value)
        self.updates += 1

    def baselines(self) -> dict:
        """{key: [values, oldest first]}: a copy of the baseline windows (safe from another thread: the
        copies are single C-level calls under the GIL)."""
        for _ in range(3):
            try:
                return {k: list(w.order) for k, w in list(self._hist.items())}
            except RuntimeError:        # resized while copying (free-threaded builds): try again
                continue
        return {}

    def restore(self, windows: dict) -> None:
        """Start the baselines from saved windows (values oldest first; a restart keeps its baseline)."""
        for key, values in list(windows.items())[-MAX_KEYS:]:
            hist = self._window(str(key))
            for v in values[-self.samples:]:
                v = _number(v)
                if v is not None:
                    hist.append(v)

    def _event(self, record, key, value, threshold, baseline):
        ev = {
            "rule": self.name, "severity": self.severity, "key": key, "field": self.field,
            "value": round(value, 3), "threshold": round(threshold, 3),
            "record_type": record.get("type"), "timestamp": record.get("timestamp"),
            "description": self.description,
        }
        if baseline is not None:
            ev["baseline"] = round(baseline, 3)
        for extra in ("flow_name", "flow_id", "name", "service"):
            if record.get(extra) is not None:
                ev[extra] = record[extra]
        return ev


def build_rules(cfg: dict) -> list[Rule]:
    """Default rules (unless `default_rules: false`), overridden/extended by name by `rules`, minus `disable`."""
    specs: dict = {}
    if cfg.get("default_rules", True):
        for r in DEFAULT_RULES:
            specs[r["name"]] = dict(r)
    for r in cfg.get("rules") or []:
        base = specs.get(r["name"], {})
        merged = dict(base)
        merged.update({k: v for k, v in r.items() if v is not None and v != [] and v != {}})
        if r.get("match"):
            merged["match"] = r["match"]
        specs[r["name"]] = merged
    for name in cfg.get("disable") or []:
        specs.pop(name, None)
    return [Rule(s) for s in specs.values()]
