"""A short per-flow summary printed when ``autoperf run --summary`` ends (the quick-start demo).

It keeps flow and span durations from this run in memory (bounded) through a pipeline processor
and prints them with the report's terminal renderer when the program ends.
"""
from __future__ import annotations

import sys

from autoperf import pipeline

_MAX_RECORDS = 200_000
_records: list = []


def _collect(record):
    if len(_records) < _MAX_RECORDS and record.get("type") in ("flow_complete", "span", "resource", "loop_blocked"):
        _records.append(record)
    return record


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
    stream.write(f"\nautoperf: log written to {log_path}\n{text}\n")
    stream.flush()
