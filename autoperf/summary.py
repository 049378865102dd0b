"""A short per-flow summary printed when ``autoperf run --summary`` ends (the quick-start demo).

It keeps flow and span durations from this run in memory (bounded) through a pipeline processor
and prints them with the report's terminal renderer when the program ends, followed by autoperf's
own warnings (a target that did not resolve, a capture that failed, …).
"""
from __future__ import annotations

import sys

from autoperf import pipeline

_MAX_RECORDS = 200_000
_MAX_WARNINGS = 20
_records: list = []
_warnings: list = []


def _collect(record):
    kind = record.get("type")
    if len(_records) < _MAX_RECORDS and kind in ("flow_complete", "span", "resource", "loop_blocked", "warning"):
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


def install():
    pipeline.add_processor(_collect)


def print_summary(log_path, stream=None):
    stream = stream or sys.stderr
    pipeline.flush()
    try:
        from autoperf.analysis.aggregate import aggregate
        from autoperf.analysis.render import render_terminal
        text = render_terminal(aggregate(_records), colour=False)
    except Exception as exc:  # the summary is a courtesy: never fail the run over it
        text = f"(summary unavailable: {type(exc).__name__}: {exc}; the log has every record)"
    stream.write(f"\nautoperf: log written to {log_path}\n{text}\n{warning_lines()}")
    stream.flush()
