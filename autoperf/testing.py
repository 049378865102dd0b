"""Helpers for testing what your program records — like ``structlog.testing.capture_logs``.

    with autoperf.testing.capture_records() as records:
        await queue_command(interaction)
    assert records[-1]["type"] == "flow_complete"
"""
from __future__ import annotations

import contextlib

from autoperf import lifecycle, pipeline, sinks


@contextlib.contextmanager
def capture_records(types=None):
    """Collect every record produced inside the block into a list (processed, in order)."""
    lifecycle.ensure_pipeline()
    pipeline.flush()  # what happened before the block is not ours
    memory = sinks.Memory()
    pipeline.add_sink(memory)
    records: list = []
    try:
        yield records
    finally:
        pipeline.flush()
        pipeline.remove_sink(memory)
        wanted = set(types) if types else None
        records.extend(r for r in memory.records if wanted is None or r.get("type") in wanted)


def spans_by_name(records) -> dict:
    """``{name: [span record, ...]}`` for the span records in ``records``."""
    out: dict = {}
    for rec in records:
        if rec.get("type") == "span":
            out.setdefault(rec["name"], []).append(rec)
    return out
