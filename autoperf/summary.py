"""A short per-flow summary printed when ``autoperf run --summary`` ends (the quick-start demo).

It keeps this run's records in memory (bounded) through a pipeline processor — the ``metrics``
records, which count every call, and the records of the flows kept whole — and prints them with the
report's terminal renderer when the program ends, followed by autoperf's own warnings (a target
that did not resolve, a capture that failed, …).
"""
from __future__ import annotations

import sys

from autoperf import pipeline

_MAX_RECORDS = 200_000
_MAX_WARNINGS = 20
_records: list = []
_warnings: list = []
_metrics = None             # an Aggregator of this run's metrics records (they cover every call)


def _collect(record):
    kind = record.get("type")
    if kind == "metrics":           # folded as they come: a long run's intervals take no memory
        global _metrics
        if _metrics is None:
            from autoperf.analysis.aggregate import Aggregator
            _metrics = Aggregator()
        _metrics.add(record)
    elif len(_records) < _MAX_RECORDS and kind in ("flow_complete", "span", "resource", "loop_blocked", "warning"):
        if kind != "flow_complete" or record.get("retained", "") is not None:   # unkept flows: in the metrics
            _records.append(record)
    if kind == "warning":
        _warnings.append(f"{record.get('code')}: {record.get('message')}")
    return record


def warning_lines() -> str:
    """autoperf's own warnings of this run, one a line (each is reported once; the first few shown)."""
    if not _warnings:
        return ""
    shown = [f"  {text}\n" for text in _warnings[:_MAX_WARNINGS]]
    if len(_warnings) > _MAX_WARNINGS:
        shown.append(f"  … and {len(_warnings) - _MAX_WARNINGS} more (type \"warning\" in the log)\n")
    return "autoperf warnings:\n" + "".join(shown)


def _observe(records):
    for record in records:
        _collect(record)


def install():
    pipeline.add_observer(_observe)


def print_summary(log_path, stream=None):
    stream = stream or sys.stderr
    pipeline.flush()
    try:
        from autoperf.analysis.aggregate import Aggregator
        from autoperf.analysis.render import render_terminal
        agg = _metrics or Aggregator()          # the metrics first: they say which records they cover
        agg.add_all(_records)
        agg.flush_open()
        text = render_terminal(agg.result(), colour=False)
    except Exception as exc:  # the summary is a courtesy: never fail the run over it
        text = f"(summary unavailable: {type(exc).__name__}: {exc}; the log has every record)"
    stream.write(f"\nautoperf: log written to {log_path}\n{text}\n{warning_lines()}")
    stream.flush()
