"""The current span lives in a contextvar: right across await, tasks, gather, TaskGroup and threads.

Includes the 1,000-flow proof (concurrent flows never mix their spans) and the writer overflow
accounting (dropped records are counted and reported).
"""
from __future__ import annotations

import asyncio
import collections
import contextvars
import json
import random
import threading

import pytest

import autoperf
from autoperf import pipeline, spans

pytestmark = pytest.mark.usefixtures("autoperf_pipeline")


def _by_name(recs):
    out = collections.defaultdict(list)
    for r in recs:
        if r.get("type") == "span":
            out[r["name"]].append(r)
    return out


def test_current_span_survives_await_and_is_restored(records):
    """A span stays current across awaits and the previous span is current again after it ends."""
    async def main():
        assert spans.current() is None
        with spans.span("outer", "flow") as outer:
            await asyncio.sleep(0)
            assert spans.current() is outer
            with spans.span("inner") as inner:
                await asyncio.sleep(0.001)
                assert spans.current() is inner
            assert spans.current() is outer
        assert spans.current() is None

    asyncio.run(main())
    by = _by_name(records.all())
    assert by["inner"][0]["parent_id"] == by["outer"][0]["span_id"]
    assert by["inner"][0]["flow_id"] == by["outer"][0]["span_id"]
    assert by["inner"][0]["flow_name"] == "outer"


def test_create_task_gather_and_taskgroup_parent_to_the_creator(records):
    """Tasks made by create_task, gather and TaskGroup inherit the span current when they were created."""
    @autoperf.span("child")
    async def child(tag):
        await asyncio.sleep(0)
        spans.current().set("tag", tag)
        await asyncio.sleep(0)
        return spans.current().span_id

    @autoperf.flow("root")
    async def root():
        t = asyncio.create_task(child("task"))
        ids = await asyncio.gather(child("g1"), child("g2"))
        async with asyncio.TaskGroup() as tg:
            a = tg.create_task(child("tg1"))
            b = tg.create_task(child("tg2"))
        ids += [await t, a.result(), b.result()]
        return ids

    ids = asyncio.run(root())
    assert len(set(ids)) == 5  # every task had its own span
    by = _by_name(records.all())
    flow = by["root"][0]
    children = by["child"]
    assert sorted(c["attrs"]["tag"] for c in children) == ["g1", "g2", "task", "tg1", "tg2"]
    for c in children:
        assert c["parent_id"] == flow["span_id"], c  # siblings never nest in each other
        assert c["flow_id"] == flow["span_id"]
        assert c["task"] is not None
    assert len({c["task"] for c in children}) == 5


def test_threads_with_a_copied_context_see_the_span(records):
    """A thread running ``copy_context().run`` (and asyncio.to_thread) parents to the creator's span."""
    @autoperf.span("in_thread")
    def work(tag):
        spans.current().set("tag", tag)
        return threading.current_thread().name

    async def main():
        with spans.span("flow", "flow"):
            ctx = contextvars.copy_context()
            t = threading.Thread(target=ctx.run, args=(work, "copied"), name="copied-thread")
            t.start()
            t.join()
            bare = threading.Thread(target=work, args=("bare",), name="bare-thread")
            bare.start()
            bare.join()
            await asyncio.to_thread(work, "to_thread")

    asyncio.run(main())
    by = _by_name(records.all())
    flow = by["flow"][0]
    got = {r["attrs"]["tag"]: r for r in by["in_thread"]}
    assert got["copied"]["parent_id"] == flow["span_id"]
    assert got["copied"]["thread"] == "copied-thread"
    assert got["to_thread"]["parent_id"] == flow["span_id"]
    assert got["bare"]["parent_id"] is None  # a thread without the context starts its own tree
    assert got["bare"]["flow_id"] == got["bare"]["span_id"]


# -- the 1,000-flow proof ---------------------------------------------------------------------
FLOWS_MOD = '''
import asyncio
import random

PRODUCED = []   # (marker, depth) per step call


def leaf(marker, depth):
    return marker


async def step(marker, depth, seed):
    PRODUCED.append((marker, depth))
    rng = random.Random(seed)
    await asyncio.sleep(0)
    if rng.random() < 0.5:
        leaf(marker, depth + 1)
        PRODUCED.append((marker, depth + 1))
    if depth >= 4:
        return
    fan = rng.randint(0, 3)
    mode = rng.choice(("seq", "gather", "task"))
    seeds = [rng.getrandbits(32) for _ in range(fan)]
    if mode == "seq":
        for s in seeds:
            await step(marker, depth + 1, s)
            await asyncio.sleep(0)
    elif mode == "gather":
        await asyncio.gather(*(step(marker, depth + 1, s) for s in seeds))
    else:
        tasks = [asyncio.create_task(step(marker, depth + 1, s)) for s in seeds]
        await asyncio.sleep(0)
        for t in tasks:
            await t


async def run_flow(marker, seed):
    await asyncio.sleep(0)
    await step(marker, 1, seed)
    return marker
'''


@pytest.fixture
def big_buffer():
    old = pipeline._capacity
    pipeline.configure(pipeline.settings(), capacity=2_000_000)
    yield
    pipeline.configure(pipeline.settings(), capacity=old)


def test_thousand_concurrent_flows_never_mix(make_module, patch, records, big_buffer):
    """1,000 concurrent flows with random nested spans: every span sits in its own flow's tree, none lost."""
    mod = make_module("flows_mod", FLOWS_MOD)
    patch(mod, """
targets:
  - {target: "flows_mod:run_flow", kind: flow, name: flow, capture: {marker: marker}}
  - {target: "flows_mod:step", name: step, capture: {marker: marker, depth: depth}}
  - {target: "flows_mod:leaf", name: leaf, capture: {marker: marker, depth: depth}}
""")
    n_flows = 1000
    seed = random.randrange(1 << 30)

    async def main():
        rng = random.Random(seed)
        return await asyncio.gather(*(mod.run_flow(f"m{i}", rng.getrandbits(32)) for i in range(n_flows)))

    assert asyncio.run(main()) == [f"m{i}" for i in range(n_flows)]
    recs = records.all()
    all_spans = [r for r in recs if r["type"] == "span"]
    flows = {r["attrs"]["marker"]: r for r in all_spans if r["name"] == "flow"}
    assert len(flows) == n_flows, f"seed {seed}"
    assert len([r for r in recs if r["type"] == "flow_complete"]) == n_flows
    assert not [r for r in recs if r["type"] == "dropped"]

    inner = [r for r in all_spans if r["name"] in ("step", "leaf")]
    assert len(inner) == len(mod.PRODUCED), f"seed {seed}: spans lost or invented"
    assert collections.Counter((r["attrs"]["marker"], r["attrs"]["depth"]) for r in inner) == \
        collections.Counter(mod.PRODUCED)
    by_id = {r["span_id"]: r for r in all_spans}
    assert len(by_id) == len(all_spans), "span ids are unique"
    for r in inner:
        flow = flows[r["attrs"]["marker"]]
        assert r["flow_id"] == flow["span_id"], f"seed {seed}: {r} is in another flow"
        assert r["flow_name"] == "flow"
        parent = by_id[r["parent_id"]]
        assert parent["attrs"]["marker"] == r["attrs"]["marker"]
        parent_depth = parent["attrs"].get("depth", 0)   # the flow itself is depth 0
        assert parent_depth == r["attrs"]["depth"] - 1, f"seed {seed}: broken tree at {r}"
        if r["name"] == "leaf":
            assert parent["name"] == "step"
    for flow in flows.values():
        assert flow["parent_id"] is None and flow["flow_id"] == flow["span_id"]


# -- overflow ---------------------------------------------------------------------------------
@pytest.fixture
def tiny_buffer():
    old = pipeline._capacity
    pipeline.flush()
    pipeline.configure(pipeline.settings(), capacity=10)
    yield 10
    pipeline.configure(pipeline.settings(), capacity=old)


def test_overflow_is_counted_and_reported(records, tiny_buffer):
    """With a paused writer and a 10-record buffer, drops are counted and one dropped record says how many."""
    produced = 1000
    with pipeline._process_lock:  # the writer (and flush) cannot drain while we hold this
        while pipeline._process_once():  # start empty (the lock is re-entrant)
            pass
        assert len(pipeline.BUFFER) == 0
        for i in range(produced):
            with spans.span("overflow_probe"):
                pass
        assert len(pipeline.BUFFER) == tiny_buffer
        assert pipeline.dropped_count() == produced - tiny_buffer
    recs = records.all()
    written = [r for r in recs if r["type"] == "span" and r["name"] == "overflow_probe"]
    dropped = [r for r in recs if r["type"] == "dropped"]
    assert len(written) == tiny_buffer
    assert len(dropped) == 1
    assert dropped[0]["count"] == produced - len(written)
    assert dropped[0]["level"] == "WARNING" and dropped[0]["since"].endswith("Z")
    assert pipeline.dropped_count() == 0  # reported, so the counter starts again
    json.dumps(dropped)


def test_a_timer_made_inside_a_span_does_not_keep_the_task_alive(records):
    """A library's long timer (asyncpg's statement-cache expiry runs 300 s) copies the context it is made in,
    and with it the current span. The span must not hold the task it ran in: a finished command's task,
    its coroutine and result would stay alive for the timer's life (full GC collections grow)."""
    import gc
    import weakref

    timers, task_refs = [], []

    @autoperf.span("prepare")
    async def prepare():
        timers.append(asyncio.get_running_loop().call_later(300, lambda: None))

    @autoperf.flow("command")
    async def command(i):
        await prepare()
        return [i] * 100

    async def main():
        for i in range(3):
            t = asyncio.create_task(command(i))
            task_refs.append(weakref.ref(t))
            await t
            del t
        await asyncio.sleep(0)              # asyncio lets go of the last task it woke us for
        pipeline.flush()                    # the writer has made the records
        gc.collect()
        alive = sum(r() is not None for r in task_refs)
        for h in timers:
            h.cancel()
        return alive

    assert asyncio.run(main()) == 0
    recs = [r for r in records.all() if r.get("type") == "span" and r["name"] == "prepare"]
    assert len(recs) == 3 and all(r["task"] and r["task"].startswith("Task-") for r in recs)
