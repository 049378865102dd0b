"""The writer's output: JSON lines exactly as one ``orjson.dumps`` per record would write them,
nothing lost to one bad record, and finished spans freed without the cyclic GC."""
from __future__ import annotations

import gc
import json
import os
import weakref

import orjson
import pytest

from autoperf import pipeline, sinks, spans

pytestmark = pytest.mark.usefixtures("autoperf_pipeline")

TRICKY = [
    {"type": "t", "text": "a,\n,b", "nested": {"list": [1, 2.5, None, True], "u": "é\u2028"}},
    {"type": "t", "text": "},{", "back": "\\n,"},
    {"type": "t", "empty": {}, "odd": object},            # a class: shown through default=str
    {"type": "t", "int_key": {1: "one"}},                  # non-string key: the slow path
]


def _lines(directory, prefix):
    paths = [p for p in os.listdir(directory) if p.startswith(prefix)]
    assert len(paths) == 1
    with open(os.path.join(directory, paths[0]), "rb") as fh:
        return fh.read()


class TestJsonLinesFile:
    def test_lines_are_byte_for_byte_one_dumps_per_record(self, tmp_path):
        """The batched encoding writes exactly what one orjson.dumps per record writes."""
        sink = sinks.JsonLinesFile(tmp_path, prefix="t_")
        sink.write(TRICKY * 100)
        sink.close()
        expected = b"".join(orjson.dumps(r, default=lambda o: str(o)[:200],
                                         option=orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS)
                            for r in TRICKY * 100)
        data = _lines(tmp_path, "t_")
        assert data == expected
        assert [json.loads(line)["type"] for line in data.splitlines()] == ["t"] * 400

    def test_an_unencodable_record_costs_only_itself(self, tmp_path):
        """A record orjson refuses is skipped and reported; the rest of its batch is written."""
        sink = sinks.JsonLinesFile(tmp_path, prefix="bad_")
        batch = [{"n": i} for i in range(300)]
        batch[150] = {"n": 2 ** 70}   # beyond 64 bits: orjson raises
        with pytest.raises(sinks.UnencodableRecords) as err:
            sink.write(batch)
        sink.close()
        assert err.value.count == 1
        written = [json.loads(line)["n"] for line in _lines(tmp_path, "bad_").splitlines()]
        assert written == [i for i in range(300) if i != 150]


class TestSpanLifetime:
    def test_written_spans_are_freed_without_the_cyclic_gc(self, records):
        """Once written, a flow and its child spans are freed by reference counting alone."""
        gc.disable()
        try:
            flow = spans.start("lifetime_flow", "flow")
            children = []
            for i in range(3):
                child = spans.start(f"lifetime_child_{i}", "db")
                child.finish()
                children.append(weakref.ref(child))
            root_only = spans.start_detached("lifetime_root", "span", parent=None)
            root_only.finish()
            refs = [weakref.ref(flow), weakref.ref(root_only)] + children
            flow.finish()
            del flow, child, root_only
            assert [r["flow_name"] for r in records.all("flow_complete")] == ["lifetime_flow"]
            assert [r() for r in refs] == [None] * len(refs)
        finally:
            gc.enable()

    def test_flow_ids_of_roots_children_and_remote_parents(self, records):
        """A root is its own flow; children carry the root's id and name, also under a SpanRef."""
        with spans.span("ids_flow", "flow") as flow:
            with spans.span("ids_child", "db") as child:
                pass
        assert (flow.flow_id, flow.flow_name) == (flow.span_id, "ids_flow")
        assert (child.flow_id, child.flow_name) == (flow.span_id, "ids_flow")
        remote = spans.start_detached("ids_remote_child", "job", parent=flow.ref())
        remote.finish()
        plain = spans.start_detached("ids_plain_root", "span", parent=None)
        plain.finish()
        by_name = {r["name"]: r for r in records.spans()}
        flow_hex = f"{flow.span_id:016x}"
        assert by_name["ids_flow"]["flow_id"] == flow_hex and by_name["ids_flow"]["parent_id"] is None
        assert by_name["ids_child"]["flow_id"] == flow_hex and by_name["ids_child"]["parent_id"] == flow_hex
        assert by_name["ids_remote_child"]["flow_id"] == flow_hex
        assert by_name["ids_remote_child"]["flow_name"] == "ids_flow"
        assert by_name["ids_plain_root"]["flow_id"] == by_name["ids_plain_root"]["span_id"]
        assert by_name["ids_plain_root"]["flow_name"] is None


class TestDrain:
    def test_a_backlog_larger_than_a_chunk_keeps_its_order(self, records):
        """A drain of several chunks delivers every record once, in the order they were made."""
        n = pipeline.CHUNK * 3 + 7
        for i in range(n):
            pipeline.emit({"type": "drain_order", "i": i})
        got = [r["i"] for r in records.all("drain_order")]
        assert got == list(range(n))


class TestRecordFinished:
    def test_a_compact_span_is_recorded_like_a_span(self, records):
        """record_finished writes the same record a Span would, attrs merged, under its flow."""
        with spans.span("compact_flow", "flow") as flow:
            shared = {"statement": "SELECT 1"}
            spans.record_finished("compact_a", "db", shared, spans.current(), None, flow.start_ns + 1000,
                                  2_500_000, extra={"rows": 3})
            spans.record_finished("compact_b", "db", None, spans.current(), None, flow.start_ns + 2000,
                                  1000, "error", ValueError, {"sqlstate": "XX000"})
            spans.record_finished("compact_c", "db", None, spans.current(), None, flow.start_ns + 3000, 1000)
        by_name = {r["name"]: r for r in records.spans()}
        a, b, c = by_name["compact_a"], by_name["compact_b"], by_name["compact_c"]
        assert a["attrs"] == {"statement": "SELECT 1", "rows": 3} and shared == {"statement": "SELECT 1"}
        assert (a["duration_ms"], a["level"], a["status"]) == (2.5, "DEBUG", "success")
        assert (b["status"], b["error"], b["level"], b["attrs"]) == ("error", "ValueError", "WARNING", {"sqlstate": "XX000"})
        assert c["attrs"] == {}
        flow_hex = f"{flow.span_id:016x}"
        assert all(r["parent_id"] == flow_hex and r["flow_name"] == "compact_flow" for r in (a, b, c))
        (complete,) = records.all("flow_complete")
        assert [(cp["name"], cp["status"]) for cp in complete["checkpoints"]] == [
            ("compact_a", "success"), ("compact_b", "error"), ("compact_c", "success")]

    def test_a_full_buffer_drops_and_counts_compact_spans(self, records):
        """Above capacity record_finished drops and counts, like every producer."""
        old = pipeline._capacity
        try:
            with pipeline._process_lock:   # nothing drains meanwhile
                pipeline.configure(pipeline.settings(), capacity=len(pipeline.BUFFER) + 10)
                for i in range(25):
                    spans.record_finished("compact_drop", "db", None, None, None, 0, 1)
                assert pipeline.dropped_count() >= 15
        finally:
            pipeline.configure(pipeline.settings(), capacity=old)
        assert len(records.spans("compact_drop")) == 10
        assert sum(r["count"] for r in records.all("dropped")) >= 15
