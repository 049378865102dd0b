"""Helpers for testing what your program records — like ``structlog.testing.capture_logs``.

    with autoperf.testing.capture_records() as records:
        await queue_command(interaction)
    assert records[-1]["type"] == "flow_complete"
"""
from __future__ import annotations

import contextlib

from autoperf import lifecycle, pipeline, sinks


class Recorder:
    """A live view of the records produced from now on; every read flushes the pipeline first.

    ``all(type)``, ``spans(name)``, ``one_span(name)``, ``warnings(code)``, ``clear()``; ``close()``
    detaches it (``capture_records`` does both for a block).
    """

    def __init__(self):
        lifecycle.ensure_pipeline()
        pipeline.flush()  # what happened before is not ours
        self._memory = sinks.Memory()
        pipeline.add_sink(self._memory)

    def all(self, type=None):
        pipeline.flush()
        recs = list(self._memory.records)
        return recs if type is None else [r for r in recs if r.get("type") == type]

    def spans(self, name=None):
        return [r for r in self.all("span") if name is None or r["name"] == name]

    def one_span(self, name):
        found = self.spans(name)
        assert len(found) == 1, f"expected one span {name!r}, got {len(found)}: {found}"
        return found[0]

    def warnings(self, code=None):
        return [r for r in self.all("warning") if code is None or r.get("code") == code]

    def clear(self):
        pipeline.flush()
        self._memory.records.clear()

    def close(self):
        pipeline.flush()
        pipeline.remove_sink(self._memory)


@contextlib.contextmanager
def capture_records(types=None):
    """Collect every record produced inside the block into a list (processed, in order)."""
    recorder = Recorder()
    records: list = []
    try:
        yield records
    finally:
        recorder.close()
        wanted = set(types) if types else None
        records.extend(r for r in recorder._memory.records if wanted is None or r.get("type") in wanted)


def spans_by_name(records) -> dict:
    """``{name: [span record, ...]}`` for the span records in ``records``."""
    out: dict = {}
    for rec in records:
        if rec.get("type") == "span":
            out.setdefault(rec["name"], []).append(rec)
    return out
