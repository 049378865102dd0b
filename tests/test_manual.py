"""The manual API: measure_time, FlowTracker, checkpoint, @flow, @span, capture_records (seed plan 9.1)."""
from __future__ import annotations

import asyncio
import time

import pytest

import autoperf
from autoperf import spans
from autoperf.testing import capture_records, spans_by_name

pytestmark = pytest.mark.usefixtures("autoperf_pipeline")


# -- seed plan 9.1 ----------------------------------------------------------------------------
def test_measure_time_seed():
    """``with measure_time(...) as timer: time.sleep(0.1)`` gives ``timer.duration_ms >= 100``."""
    with autoperf.measure_time("test_operation") as timer:
        time.sleep(0.1)
    assert 100 <= timer.duration_ms < 1000


def test_flow_tracker_seed():
    """Two checkpoints are kept in order; the later one is further from the flow start."""
    flow = autoperf.FlowTracker("test_flow", 123)
    flow.checkpoint("step1")
    time.sleep(0.05)
    flow.checkpoint("step2")
    flow.complete()
    assert len(flow.checkpoints) == 2
    assert flow.checkpoints[1].duration_ms > flow.checkpoints[0].duration_ms
    assert flow.checkpoints[1].duration_ms - flow.checkpoints[0].duration_ms >= 45
    assert [c.name for c in flow.checkpoints] == ["step1", "step2"]


# -- records ----------------------------------------------------------------------------------
def test_flow_complete_record_has_the_seed_format(records):
    """A FlowTracker writes a span and a flow_complete record in the seed's 5.2 format."""
    flow = autoperf.FlowTracker("queue_command", 123, metadata={"command": "queue", "guild_id": 9}, sla_ms=5000)
    flow.checkpoint("guards", {"ok": True})
    time.sleep(0.02)
    flow.checkpoint("db_done")
    with autoperf.measure_time("db.query", {"table": "players"}):
        time.sleep(0.01)
    flow.complete()
    done = records.all("flow_complete")
    assert len(done) == 1
    rec = done[0]
    for key in ("timestamp", "level", "flow_name", "flow_id", "user_id", "duration_ms", "checkpoints",
                "status", "error", "metadata", "pid"):
        assert key in rec, key
    assert rec["flow_name"] == "queue_command" and rec["user_id"] == 123
    assert rec["status"] == "success" and rec["error"] is None and rec["level"] == "INFO"
    assert rec["metadata"] == {"command": "queue", "guild_id": 9, "user_id": 123}
    assert rec["sla_ms"] == 5000 and rec["sla_met"] is True
    assert rec["timestamp"].endswith("Z") and len(rec["timestamp"]) == 24
    assert [c["name"] for c in rec["checkpoints"]] == ["guards", "db_done", "db.query"]
    assert [c["kind"] for c in rec["checkpoints"]] == ["checkpoint", "checkpoint", "span"]
    assert rec["checkpoints"][0]["metadata"] == {"ok": True}
    assert rec["checkpoints"][1]["duration_ms"] >= 15            # since the previous checkpoint
    assert rec["checkpoints"][2]["duration_ms"] >= 8             # the child span's own duration
    offsets = [c["offset_ms"] for c in rec["checkpoints"]]
    assert offsets == sorted(offsets)
    assert rec["duration_ms"] >= 25
    flow_span = records.one_span("queue_command")
    assert flow_span["kind"] == "flow" and flow_span["span_id"] == rec["flow_id"]
    child = records.one_span("db.query")
    assert child["parent_id"] == rec["flow_id"] and child["attrs"] == {"table": "players"}
    assert child["flow_name"] == "queue_command"


def test_flow_tracker_keeps_attributes_set_on_its_span(records):
    """Attributes set on a FlowTracker's span while it runs survive complete() next to its metadata."""
    flow = autoperf.FlowTracker("attrs_flow", 5, metadata={"command": "queue"})
    autoperf.current_span().set("guild_id", 77)
    flow.span.set("command", "overridden")
    flow.metadata["mode"] = "solo"
    flow.complete()
    rec = records.all("flow_complete")[0]
    assert rec["metadata"] == {"guild_id": 77, "command": "queue", "mode": "solo", "user_id": 5}
    assert records.one_span("attrs_flow")["attrs"] == rec["metadata"]


def test_async_with_measure_time(records):
    """``async with measure_time(...)`` times the awaited block and nests under the current span."""
    async def main():
        with spans.span("outer", "flow"):
            async with autoperf.measure_time("awaited", {"k": 1}) as timer:
                assert spans.current().name == "awaited"
                await asyncio.sleep(0.03)
            assert spans.current().name == "outer"
        return timer

    timer = asyncio.run(main())
    assert 25 <= timer.duration_ms < 1000
    rec = records.one_span("awaited")
    assert rec["attrs"] == {"k": 1} and rec["parent_id"] == records.one_span("outer")["span_id"]
    assert abs(rec["duration_ms"] - timer.duration_ms) < 0.01


def test_measure_time_records_an_exception(records):
    """An exception in a measured block propagates unchanged and the span says error."""
    boom = KeyError("k")
    with pytest.raises(KeyError) as info:
        with autoperf.measure_time("failing"):
            raise boom
    assert info.value is boom
    rec = records.one_span("failing")
    assert rec["status"] == "error" and rec["error"] == "KeyError"


def test_checkpoint_inside_and_outside_a_flow(records):
    """``autoperf.checkpoint()`` marks the current flow (also from a nested span) and is None outside."""
    assert autoperf.checkpoint("nowhere") is None

    @autoperf.flow("cp_flow")
    def run():
        first = autoperf.checkpoint("start")
        with autoperf.measure_time("nested"):
            time.sleep(0.01)
            nested = autoperf.checkpoint("in_nested", {"rows": 3})
        return first, nested

    first, nested = run()
    assert first is not None and nested is not None
    assert nested.duration_ms > first.duration_ms and nested.metadata == {"rows": 3}
    assert autoperf.checkpoint("after") is None
    rec = records.all("flow_complete")[0]
    names = [c["name"] for c in rec["checkpoints"] if c["kind"] == "checkpoint"]
    assert names == ["start", "in_nested"]


def test_checkpoint_without_a_flow_root_is_none(records):
    """Inside a plain span (no flow anywhere) or a span whose parent is in another process, it is None."""
    with autoperf.measure_time("not_a_flow"):
        assert autoperf.checkpoint("x") is None
    remote = spans.SpanRef(0x1234, 0x1234, "remote_flow")
    s = spans.start("job", "job", parent=remote)
    try:
        assert autoperf.checkpoint("in_worker") is None
    finally:
        s.finish()
    job = records.one_span("job")
    assert job["flow_id"] == f"{0x1234:016x}" and job["flow_name"] == "remote_flow"


# -- decorators -------------------------------------------------------------------------------
def test_flow_and_span_decorators_sync_and_async(records):
    """@flow, @flow("name", sla_ms=...) and @span time sync and async functions and keep their kind."""
    @autoperf.span
    def helper(x):
        return x + 1

    @autoperf.span("named_async_span")
    async def ahelper(x):
        await asyncio.sleep(0)
        return x * 2

    @autoperf.flow
    def sync_flow(x):
        """Doc kept."""
        return helper(x)

    @autoperf.flow("queue_command", sla_ms=0.000001)
    async def async_flow(x):
        return await ahelper(x) + helper(x)

    assert sync_flow.__doc__ == "Doc kept." and sync_flow.__name__ == "sync_flow"
    assert asyncio.iscoroutinefunction(async_flow) and not asyncio.iscoroutinefunction(sync_flow)
    assert sync_flow(1) == 2
    assert asyncio.run(async_flow(3)) == 10
    by = spans_by_name(records.all())
    sync_name = f"{__name__}.test_flow_and_span_decorators_sync_and_async.<locals>.sync_flow"
    assert by[sync_name][0]["kind"] == "flow"
    flow = by["queue_command"][0]
    assert flow["kind"] == "flow" and flow["sla_ms"] == 0.000001
    assert by["named_async_span"][0]["parent_id"] == flow["span_id"]
    helper_name = f"{__name__}.test_flow_and_span_decorators_sync_and_async.<locals>.helper"
    assert {r["flow_name"] for r in by[helper_name]} == {sync_name, "queue_command"}
    done = {r["flow_name"]: r for r in records.all("flow_complete")}
    assert done["queue_command"]["sla_met"] is False
    assert [c["name"] for c in done["queue_command"]["checkpoints"]] == ["named_async_span", helper_name]


def test_decorators_on_methods_in_either_order(records):
    """@span/@flow work on methods, above or below @staticmethod/@classmethod, and bind as before."""
    class Cog:
        @autoperf.span
        @staticmethod
        def static_below(x):
            return x

        @staticmethod
        @autoperf.span("static_above")
        def static_above(x):
            return x

        @autoperf.flow("cls_below")
        @classmethod
        def cls_below(cls, x):
            return cls, x

        @autoperf.span
        async def method(self, x):
            return self, x

    cog = Cog()
    assert cog.static_below(1) == 1 and Cog.static_below(2) == 2 and cog.static_above(3) == 3
    assert Cog.cls_below(4) == (Cog, 4) and cog.cls_below(5) == (Cog, 5)
    assert asyncio.run(cog.method(6)) == (cog, 6)
    assert isinstance(vars(Cog)["static_below"], staticmethod)
    assert isinstance(vars(Cog)["cls_below"], classmethod)
    by = spans_by_name(records.all())
    assert len(by["static_above"]) == 1 and len(by["cls_below"]) == 2
    assert by["cls_below"][0]["kind"] == "flow"
    assert sum(len(v) for v in by.values()) == 6


def test_exception_in_a_flow_is_recorded_and_reraised(records):
    """An exception inside a flow gives status error with the exception type and is re-raised as is."""
    class RankError(Exception):
        pass

    err = RankError("no rank")

    @autoperf.flow("failing_flow")
    async def failing():
        await asyncio.sleep(0)
        raise err

    with pytest.raises(RankError) as info:
        asyncio.run(failing())
    assert info.value is err

    with pytest.raises(ValueError):
        with autoperf.FlowTracker("tracked_failing", 7):
            raise ValueError("bad")

    done = {r["flow_name"]: r for r in records.all("flow_complete")}
    assert done["failing_flow"]["status"] == "error"
    assert done["failing_flow"]["error"].endswith("RankError")
    assert done["failing_flow"]["level"] == "ERROR"
    assert done["tracked_failing"]["status"] == "error" and done["tracked_failing"]["error"] == "ValueError"
    assert done["tracked_failing"]["user_id"] == 7


def test_capture_records_collects_only_the_block(autoperf_pipeline):
    """``capture_records()`` holds the records made inside the block and nothing from before or after."""
    with autoperf.measure_time("before_block"):
        pass
    with capture_records() as recs:
        with autoperf.measure_time("inside_block"):
            pass
        autoperf.emit({"type": "custom", "value": 1})
    with autoperf.measure_time("after_block"):
        pass
    autoperf.flush()
    names = [r.get("name") for r in recs if r["type"] == "span"]
    assert names == ["inside_block"]
    assert [r for r in recs if r["type"] == "custom"][0]["value"] == 1
    with capture_records(types=["flow_complete"]) as only_flows:
        with autoperf.FlowTracker("f"):
            with autoperf.measure_time("s"):
                pass
    assert [r["type"] for r in only_flows] == ["flow_complete"]
