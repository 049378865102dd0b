"""Targets resolve and wrap; the wrapped objects are indistinguishable from the originals.

In-process tests patch temp modules with ``autoperf.targets`` (undone after each test); the tests
of ``bootstrap.install`` (process-global import hooks, ``stop()``) run in a fresh interpreter.
"""
from __future__ import annotations

import asyncio
import inspect
import json
import multiprocessing
import os
import pickle
import sys
from concurrent.futures import ProcessPoolExecutor

import pytest
from pathlib import Path

import autoperf
from autoperf import pipeline, targets, wrappers

pytestmark = pytest.mark.usefixtures("autoperf_pipeline")

SAMPLE = '''
"""A module with one of everything."""
import asyncio
import functools
from os.path import join as get_joined      # imported: never matched by get_*
from sample_helpers import get_helper, logged, alogged

import autoperf


def add(a: int, b: int = 1, *rest, scale: float = 1.0, **extra) -> int:
    """Add two numbers."""
    return (a + b) * scale


async def fetch(x: int) -> int:
    """Fetch x after a pause."""
    await asyncio.sleep(0)
    return x * 10


def echo(n):
    """Yield 0..n-1; send() adds to a total; KeyError thrown in is answered with 'caught'."""
    total = 0
    try:
        for i in range(n):
            INSIDE.append(autoperf.current_span())
            try:
                got = yield i
            except KeyError as exc:
                got = yield ("caught", exc.args)
            if got is not None:
                total += got
    finally:
        CLOSED.append(("echo", total))
    return total


async def aecho(n):
    """Async twin of echo."""
    total = 0
    try:
        for i in range(n):
            INSIDE.append(autoperf.current_span())
            await asyncio.sleep(0)
            try:
                got = yield i
            except KeyError as exc:
                got = yield ("caught", exc.args)
            if got is not None:
                total += got
    finally:
        CLOSED.append(("aecho", total))


CLOSED = []
INSIDE = []


class Repo:
    """A repository."""

    created = 0

    def __init__(self, name="repo"):
        self.name = name

    def get(self, key):
        """Get a key."""
        return (self.name, key)

    @classmethod
    def make(cls, name):
        """Make one."""
        return cls(name)

    @staticmethod
    def util(x):
        """Double x."""
        return x * 2

    async def aget(self, key):
        await asyncio.sleep(0)
        return (self.name, key, "async")

    @property
    def size(self):
        return 3


class SubRepo(Repo):
    pass


def get_user(user_id):
    return {"id": user_id}


def get_guild(guild_id):
    return {"guild": guild_id}


def other():
    return "other"


@logged
def decorated_sync(x):
    """A sync function behind a sync decorator."""
    return x + 1


@logged
async def decorated_async(delay):
    """An async function behind a *sync* functools.wraps decorator."""
    inner = autoperf.current_span()
    await asyncio.sleep(delay)
    return inner


@logged
def decorated_gen(n):
    """A generator behind a sync decorator."""
    yield from echo(n)


@logged
async def decorated_agen(n):
    """An async generator behind a sync decorator."""
    async for item in aecho(n):
        yield item


@alogged
async def decorated_async2(x):
    """An async function behind an async decorator."""
    await asyncio.sleep(0)
    return x * 3
'''

HELPERS = '''
import functools


def get_helper():
    return "helper"


def logged(fn):
    @functools.wraps(fn)
    def inner(*args, **kwargs):
        return fn(*args, **kwargs)
    return inner


def alogged(fn):
    @functools.wraps(fn)
    async def inner(*args, **kwargs):
        return await fn(*args, **kwargs)
    return inner
'''


@pytest.fixture
def sample(make_module):
    make_module("sample_helpers", HELPERS)
    return make_module("sample_mod", SAMPLE)


def _yaml(*entries):
    lines = ["targets:"]
    for entry in entries:
        if isinstance(entry, str):
            entry = {"target": entry}
        lines.append(f"  - {json.dumps(entry)}")
    return "\n".join(lines) + "\n"


# -- functions of every kind ------------------------------------------------------------------
def test_plain_function_is_wrapped_and_timed(sample, patch, records):
    """A plain function target becomes a span named module.qualname, returning what it returned."""
    original = sample.add
    assert patch(sample, _yaml("sample_mod:add")) == 1
    assert sample.add is not original and wrappers.is_instrumented(sample.add)
    assert sample.add(2, 3, scale=2) == 10
    rec = records.one_span("sample_mod.add")
    assert rec["kind"] == "span" and rec["status"] == "success" and rec["parent_id"] is None
    assert rec["flow_id"] == rec["span_id"]


def test_exception_propagates_unchanged_and_marks_error(sample, patch, records):
    """An exception leaves the wrapper as the very same object and the span says error + type."""
    patch(sample, _yaml("sample_mod:add"))
    with pytest.raises(TypeError) as info:
        sample.add("x", 1)
    assert info.value.__traceback__ is not None
    rec = records.one_span("sample_mod.add")
    assert rec["status"] == "error" and rec["error"] == "TypeError"


def test_coroutine_function_span_covers_the_await(sample, patch, records):
    """An async target stays a coroutine function and its span ends after the awaited body."""
    patch(sample, _yaml({"target": "sample_mod:fetch", "name": "fetch"}))
    assert inspect.iscoroutinefunction(sample.fetch)
    assert asyncio.run(sample.fetch(4)) == 40
    rec = records.one_span("fetch")
    assert rec["status"] == "success" and rec["task"] is not None


def _drive_sync(gen, ops):
    out = []
    for op, *arg in ops:
        try:
            if op == "next":
                out.append(("yield", next(gen)))
            elif op == "send":
                out.append(("yield", gen.send(arg[0])))
            elif op == "throw":
                out.append(("yield", gen.throw(arg[0])))
            elif op == "close":
                out.append(("closed", gen.close()))
        except StopIteration as stop:
            out.append(("stop", stop.value))
        except Exception as exc:  # what the consumer sees
            out.append(("raise", type(exc).__name__, exc.args))
    return out


async def _drive_async(agen, ops):
    out = []
    for op, *arg in ops:
        try:
            if op == "next":
                out.append(("yield", await agen.__anext__()))
            elif op == "send":
                out.append(("yield", await agen.asend(arg[0])))
            elif op == "throw":
                out.append(("yield", await agen.athrow(arg[0])))
            elif op == "close":
                out.append(("closed", await agen.aclose()))
        except StopAsyncIteration:
            out.append(("stop", None))
        except Exception as exc:
            out.append(("raise", type(exc).__name__, exc.args))
    return out


GEN_SCENARIOS = {
    "exhausted": [("next",), ("send", 5), ("send", 7), ("next",)],
    "closed_early": [("next",), ("send", 2), ("close",), ("next",)],
    "throw_caught": [("next",), ("throw", KeyError("k")), ("send", 1), ("next",), ("next",)],
    "throw_uncaught": [("next",), ("throw", ValueError("boom")), ("next",)],
    "empty": [("next",)],
}


@pytest.mark.parametrize("scenario", list(GEN_SCENARIOS))
def test_sync_generator_behaves_exactly_as_without_autoperf(sample, patch, records, scenario):
    """next/send/throw/close on a wrapped generator give the same results as on the original."""
    ops = GEN_SCENARIOS[scenario]
    n = 0 if scenario == "empty" else 3
    expected = _drive_sync(sample.echo(n), ops)
    expected_closed = list(sample.CLOSED)
    sample.CLOSED.clear()
    patch(sample, _yaml({"target": "sample_mod:echo", "name": "echo"}))
    assert inspect.isgeneratorfunction(sample.echo)
    got = _drive_sync(sample.echo(n), ops)
    assert got == expected
    assert sample.CLOSED == expected_closed
    rec = records.one_span("echo")  # ended exactly once: exhausted, closed or failed
    assert rec["status"] == ("error" if scenario == "throw_uncaught" else "success")
    assert rec["error"] == ("ValueError" if scenario == "throw_uncaught" else None)


def test_sync_generator_span_lasts_until_exhausted_or_closed(sample, patch, records):
    """The generator span is open while items are pending and current only inside its code."""
    patch(sample, _yaml({"target": "sample_mod:echo", "name": "echo"}))
    sample.INSIDE.clear()
    gen = sample.echo(3)
    assert next(gen) == 0
    assert autoperf.current_span() is None  # not current in the consumer between items
    assert next(gen) == 1
    assert records.spans("echo") == []       # still running
    gen.close()
    rec = records.one_span("echo")
    assert rec["status"] == "success"
    inside = [s for s in sample.INSIDE if s is not None]
    assert inside and all(s.name == "echo" for s in inside)
    assert f"{inside[0].span_id:016x}" == rec["span_id"]


@pytest.mark.parametrize("scenario", list(GEN_SCENARIOS))
def test_async_generator_behaves_exactly_as_without_autoperf(sample, patch, records, scenario):
    """asend/athrow/aclose on a wrapped async generator give the same results as on the original."""
    ops = GEN_SCENARIOS[scenario]
    n = 0 if scenario == "empty" else 3
    expected = asyncio.run(_drive_async(sample.aecho(n), ops))
    expected_closed = list(sample.CLOSED)
    sample.CLOSED.clear()
    patch(sample, _yaml({"target": "sample_mod:aecho", "name": "aecho"}))
    assert inspect.isasyncgenfunction(sample.aecho)
    got = asyncio.run(_drive_async(sample.aecho(n), ops))
    assert got == expected
    assert sample.CLOSED == expected_closed
    rec = records.one_span("aecho")
    assert rec["status"] == ("error" if scenario == "throw_uncaught" else "success")


def test_async_generator_span_ends_when_closed_early(sample, patch, records):
    """An async generator left after two items and closed ends its span; it is current inside."""
    patch(sample, _yaml({"target": "sample_mod:aecho", "name": "aecho"}))
    sample.INSIDE.clear()

    async def main():
        agen = sample.aecho(5)
        seen = []
        async for item in agen:
            seen.append(item)
            assert autoperf.current_span() is None
            if item == 1:
                break
        pending = records.spans("aecho")
        await agen.aclose()
        return seen, pending

    seen, pending = asyncio.run(main())
    assert seen == [0, 1] and pending == []
    rec = records.one_span("aecho")
    assert rec["status"] == "success"
    assert {s.name for s in sample.INSIDE} == {"aecho"}


# -- methods ----------------------------------------------------------------------------------
def test_methods_bind_like_the_originals(sample, patch, records):
    """Instance, class and static methods keep their binding; a staticmethod stays static."""
    raw = dict(vars(sample.Repo))
    assert patch(sample, _yaml("sample_mod:Repo.get", "sample_mod:Repo.make",
                               "sample_mod:Repo.util", "sample_mod:Repo.aget")) == 4
    Repo, SubRepo = sample.Repo, sample.SubRepo
    assert isinstance(vars(Repo)["util"], staticmethod)
    assert isinstance(vars(Repo)["make"], classmethod)
    assert vars(Repo)["get"] is not raw["get"]
    r = Repo("a")
    assert r.get("k") == ("a", "k")
    assert Repo.get(r, "k2") == ("a", "k2")
    made = SubRepo.make("b")
    assert type(made) is SubRepo and made.name == "b"   # cls is the class it was called on
    assert Repo.util(4) == 8 and r.util(5) == 10         # no self sneaks in
    assert asyncio.run(r.aget("z")) == ("a", "z", "async")
    names = {rec["name"] for rec in records.spans()}
    assert {"sample_mod.Repo.get", "sample_mod.Repo.make", "sample_mod.Repo.util",
            "sample_mod.Repo.aget"} <= names
    assert len(records.spans("sample_mod.Repo.util")) == 2


NON_BINDING = '''
import functools


class Caller:
    def __call__(self, *args):
        return ("called", args)


def add(a, b):
    return a + b


class Holder:
    length = len                         # builtins do not bind to instances
    part = functools.partial(add, 10)    # nor do partials
    obj = Caller()                       # nor callable objects
    bound = Caller().__call__            # nor bound methods
'''


def test_class_attributes_that_do_not_bind_stay_unbound(make_module, patch, records):
    """A builtin, partial, callable object or bound method stored on a class is not bound after wrapping."""
    mod = make_module("nonbinding_mod", NON_BINDING)
    raw = dict(vars(mod.Holder))
    assert patch(mod, _yaml(*(f"nonbinding_mod:Holder.{a}" for a in ("length", "part", "obj", "bound")))) == 4
    h = mod.Holder()
    assert h.length([1, 2]) == 2 and mod.Holder.length("abc") == 3
    assert h.part(5) == 15
    assert h.obj(1) == ("called", (1,))
    assert h.bound(2) == ("called", (2,))
    assert len(records.spans()) == 5
    targets.unpatch_all()
    assert all(vars(mod.Holder)[k] is raw[k] for k in ("length", "part", "obj", "bound"))


def test_class_wildcard_wraps_every_method(sample, patch, records):
    """``mod:Class.*`` wraps the class's own functions (static and class methods too), not properties."""
    count = patch(sample, _yaml({"target": "sample_mod:Repo.*", "name": "repo"}))
    assert count == 4
    wrapped = {p.attr for p in targets.patched()}
    assert wrapped == {"get", "make", "util", "aget"}
    assert isinstance(vars(sample.Repo)["size"], property)
    sample.Repo("x").get(1)
    sample.Repo.util(1)
    assert {r["name"] for r in records.spans()} == {"repo.get", "repo.util"}


def test_module_wildcard_only_matches_functions_defined_there(sample, patch):
    """``mod:get_*`` wraps get_user/get_guild but never a function imported from elsewhere."""
    import os.path as osp

    import sample_helpers

    assert patch(sample, _yaml("sample_mod:get_*")) == 2
    assert {p.attr for p in targets.patched()} == {"get_user", "get_guild"}
    assert sample.get_joined is osp.join
    assert sample.get_helper is sample_helpers.get_helper
    assert not wrappers.is_instrumented(sample.other)
    assert sample.get_user(7) == {"id": 7}


# -- decorated functions ----------------------------------------------------------------------
def test_sync_decorator_around_async_function_span_covers_the_await(sample, patch, records):
    """A sync functools.wraps decorator around an async def: the span lasts until the await ends."""
    patch(sample, _yaml({"target": "sample_mod:decorated_async", "name": "deco"}))
    assert not inspect.iscoroutinefunction(sample.decorated_async)  # as before: the decorator is sync
    inner = asyncio.run(sample.decorated_async(0.05))
    rec = records.one_span("deco")
    assert rec["duration_ms"] >= 45
    assert inner is not None and inner.name == "deco"   # current inside the awaited body


@pytest.mark.parametrize("scenario", list(GEN_SCENARIOS))
def test_sync_decorator_around_generators_span_covers_iteration(sample, patch, records, scenario):
    """A sync decorator around a (async) generator: same results, and the span lasts until it ends."""
    ops = GEN_SCENARIOS[scenario]
    n = 0 if scenario == "empty" else 3
    expected = _drive_sync(sample.decorated_gen(n), ops)
    expected_async = asyncio.run(_drive_async(sample.decorated_agen(n), ops))
    patch(sample, _yaml({"target": "sample_mod:decorated_gen", "name": "dgen"},
                        {"target": "sample_mod:decorated_agen", "name": "dagen"}))
    assert not inspect.isgeneratorfunction(sample.decorated_gen)  # as before: the decorator is sync
    gen = sample.decorated_gen(n)
    assert records.spans("dgen") == [] or scenario == "empty"
    assert _drive_sync(gen, ops) == expected
    assert asyncio.run(_drive_async(sample.decorated_agen(n), ops)) == expected_async
    # ``async for ... yield`` does not pass athrow() on (``yield from`` does): the original fails there
    for name, outcome in (("dgen", expected), ("dagen", expected_async)):
        failed = any(step[0] == "raise" for step in outcome)
        assert records.one_span(name)["status"] == ("error" if failed else "success"), (name, outcome)
    assert any(step[0] == "raise" for step in expected) == (scenario == "throw_uncaught")


def test_sync_decorator_around_generator_times_the_iteration(sample, patch, records):
    """The span of a decorated generator includes the time spent between items."""
    import time

    patch(sample, _yaml({"target": "sample_mod:decorated_gen", "name": "dgen"}))
    sample.INSIDE.clear()
    for _ in sample.decorated_gen(3):
        time.sleep(0.01)
    assert records.one_span("dgen")["duration_ms"] >= 25
    assert {s.name for s in sample.INSIDE} == {"dgen"}


def test_decorated_functions_are_wrapped(sample, patch, records):
    """Sync and async functools.wraps-decorated targets are timed and return the same values."""
    patch(sample, _yaml({"target": "sample_mod:decorated_sync", "name": "ds"},
                        {"target": "sample_mod:decorated_async2", "name": "da"}))
    assert sample.decorated_sync(1) == 2
    assert asyncio.run(sample.decorated_async2(2)) == 6
    assert inspect.iscoroutinefunction(sample.decorated_async2)
    assert len(records.spans("ds")) == 1 and len(records.spans("da")) == 1


# -- indistinguishable ------------------------------------------------------------------------
@pytest.mark.parametrize("attr", ["add", "fetch", "echo", "aecho", "decorated_sync", "decorated_async"])
def test_wrapped_function_is_indistinguishable(sample, patch, attr):
    """signature, kind predicates, name/qualname/doc/annotations/module and __wrapped__ answer as before."""
    original = getattr(sample, attr)
    patch(sample, _yaml(f"sample_mod:{attr}"))
    wrapped = getattr(sample, attr)
    assert wrapped is not original
    assert inspect.signature(wrapped) == inspect.signature(original)
    for predicate in (inspect.iscoroutinefunction, inspect.isgeneratorfunction,
                      inspect.isasyncgenfunction, inspect.isfunction, callable):
        assert predicate(wrapped) == predicate(original), predicate.__name__
    for name in ("__name__", "__qualname__", "__doc__", "__annotations__", "__module__"):
        assert getattr(wrapped, name) == getattr(original, name), name
    assert wrapped.__wrapped__ is original
    assert inspect.unwrap(wrapped) is inspect.unwrap(original)
    assert pickle.loads(pickle.dumps(wrapped)) is wrapped


def test_methods_are_indistinguishable(sample, patch):
    """Wrapped methods keep signature (self/cls dropped when bound), names and pickling by reference."""
    before = {name: getattr(sample.Repo, name) for name in ("get", "make", "util")}
    patch(sample, _yaml("sample_mod:Repo.*"))
    for name, original in before.items():
        wrapped = getattr(sample.Repo, name)
        assert inspect.signature(wrapped) == inspect.signature(original)
        assert wrapped.__qualname__ == original.__qualname__ == f"Repo.{name}"
        assert wrapped.__doc__ == original.__doc__
    assert inspect.signature(sample.Repo("x").get) == inspect.signature(before["get"].__get__(sample.Repo("x")))
    assert pickle.loads(pickle.dumps(sample.Repo.util)) is sample.Repo.util
    assert pickle.loads(pickle.dumps(sample.Repo.make)).__func__ is vars(sample.Repo)["make"].__func__


POOL_MOD = '''
import os


def square(x):
    """Square x."""
    return x * x, os.getpid()
'''


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_wrapped_function_runs_in_a_process_pool(make_module, patch, records, method, log_dir_of_pipeline):
    """A wrapped function pickles by reference and runs in fork and spawn ProcessPoolExecutors."""
    mod = make_module(f"pool_mod_{method}", POOL_MOD)
    patch(mod, _yaml({"target": f"pool_mod_{method}:square", "name": f"square_{method}"}))
    assert wrappers.is_instrumented(mod.square)
    ctx = multiprocessing.get_context(method)
    with ProcessPoolExecutor(max_workers=2, mp_context=ctx) as pool:
        results = list(pool.map(mod.square, range(6)))
    assert [r[0] for r in results] == [x * x for x in range(6)]
    worker_pids = {r[1] for r in results}
    assert os.getpid() not in worker_pids
    if method == "fork":
        # the forked workers run the wrapped function and write their spans to the same log file
        pipeline.flush()
        lines = []
        for path in log_dir_of_pipeline.glob("performance_*.log"):
            lines.extend(json.loads(line) for line in path.read_text().splitlines() if line)
        spans = [r for r in lines if r.get("type") == "span" and r.get("name") == "square_fork"
                 and r.get("pid") in worker_pids]  # the directory may hold earlier runs' spans
        assert len(spans) == 6
        assert {r["pid"] for r in spans} == worker_pids


@pytest.fixture
def log_dir_of_pipeline(autoperf_pipeline):
    # Where the file sink writes now (an in-process install() elsewhere may have moved it).
    from autoperf import bootstrap
    return Path(bootstrap.log_path()).parent


# -- captures and internal failures -----------------------------------------------------------
HANDLER = '''
class User:
    def __init__(self, id):
        self.id = id


class Interaction:
    def __init__(self, user_id):
        self.user = User(user_id)


async def queue_command(interaction, mode="solo"):
    return ["m1", "m2", "m3"]


def pick(items):
    return None
'''


def test_captures_are_recorded(make_module, patch, records):
    """``capture: {user_id: interaction.user.id, n: len(return)}`` lands in the span and flow_complete."""
    mod = make_module("handler_mod", HANDLER)
    patch(mod, _yaml({"target": "handler_mod:queue_command", "kind": "flow", "name": "queue",
                      "capture": {"user_id": "interaction.user.id", "n": "len(return)", "mode": "mode"}}))
    assert asyncio.run(mod.queue_command(mod.Interaction(42))) == ["m1", "m2", "m3"]
    assert asyncio.run(mod.queue_command(interaction=mod.Interaction(43), mode="duo")) == ["m1", "m2", "m3"]
    spans = records.spans("queue")
    assert [s["attrs"] for s in spans] == [{"user_id": 42, "n": 3, "mode": "solo"},
                                           {"user_id": 43, "n": 3, "mode": "duo"}]
    flows = records.all("flow_complete")
    assert [f["user_id"] for f in flows] == [42, 43]
    assert flows[0]["metadata"]["n"] == 3


def test_captures_of_var_positional_and_var_keyword_parameters(make_module, patch, records):
    """``*rows`` and ``**options`` can be captured by name (the extra arguments / keywords)."""
    mod = make_module("varargs_mod", '''
class Repo:
    def insert(self, table, *rows, mode="fast", **options):
        return len(rows)
''')
    patch(mod, _yaml({"target": "varargs_mod:Repo.insert", "name": "insert",
                      "capture": {"n": "len(rows)", "opts": "len(options)", "table": "table", "mode": "mode"}}))
    assert mod.Repo().insert("players", 1, 2, 3, mode="slow", retry=True) == 3
    assert mod.Repo().insert("guilds") == 0
    assert [s["attrs"] for s in records.spans("insert")] == [
        {"n": 3, "opts": 1, "table": "players", "mode": "slow"},
        {"n": 0, "opts": 0, "table": "guilds", "mode": "fast"}]
    assert records.warnings("capture_failed") == []


def test_capture_of_a_parameter_named_args(make_module, patch, records):
    """A bare ``args``/``kwargs`` capture is the parameter of that name; ``args[N]`` is the call's N-th argument."""
    mod = make_module("argsname_mod", '''
class Conn:
    async def execute(self, query, *args, **kwargs):
        return "OK"
''')
    patch(mod, _yaml({"target": "argsname_mod:Conn.execute", "name": "execute",
                      "capture": {"n": "len(args)", "k": "len(kwargs)", "q": "args[1]"}}))
    assert asyncio.run(mod.Conn().execute("SELECT $1, $2", 1, 2, timeout=3)) == "OK"
    assert records.one_span("execute")["attrs"] == {"n": 2, "k": 1, "q": "SELECT $1, $2"}


def test_failing_capture_warns_once_and_changes_nothing(make_module, patch, records):
    """A capture that raises gives one capture_failed warning; the return value is unchanged."""
    mod = make_module("handler_mod2", HANDLER)
    patch(mod, _yaml({"target": "handler_mod2:pick", "name": "pick",
                      "capture": {"n": "len(return)", "first": "items.missing"}}))
    for _ in range(3):
        assert mod.pick([1, 2]) is None
    warnings = records.warnings("capture_failed")
    assert len(warnings) == 2  # one per failing capture, not one per call
    assert all(w["target"] == "pick" for w in warnings)
    assert any("len(return)" in w["message"] for w in warnings)
    assert len(records.spans("pick")) == 3
    assert records.spans("pick")[0]["status"] == "success"


class _BrokenSink:
    def __init__(self):
        self.calls = 0

    def write(self, batch):
        self.calls += 1
        raise RuntimeError("disk on fire")

    def flush(self):
        pass

    def close(self):
        pass


def test_broken_sink_and_processor_do_not_touch_the_program(sample, patch, records):
    """A sink and a processor that raise leave results unchanged and are reported once each."""
    patch(sample, _yaml({"target": "sample_mod:add", "name": "add"}))
    sink = _BrokenSink()

    def bad_processor(rec):
        raise ValueError("bad processor")

    pipeline.add_sink(sink)
    pipeline.add_processor(bad_processor)
    try:
        results = []
        for i in range(20):
            results.append(sample.add(i, 1))
            if i % 5 == 0:
                pipeline.flush()
        assert results == [i + 1 for i in range(20)]
        recs = records.all()
    finally:
        pipeline.remove_processor(bad_processor)
        pipeline.remove_sink(sink)
    assert sink.calls >= 2
    internal = [r for r in recs if r.get("type") == "warning" and r.get("code") == "internal_error"]
    wheres = sorted(r["where"] for r in internal)
    assert len(internal) == 2, internal
    assert wheres[0].startswith("processor") and wheres[1] == "sink _BrokenSink"
    # a broken processor loses nothing
    assert len([r for r in recs if r.get("type") == "span" and r["name"] == "add"]) == 20


def test_db_kind_records_normalised_sql_never_params(make_module, patch, records):
    """``kind: db`` + ``statement_arg`` records the normalised statement and never the parameters."""
    pytest.importorskip("autoperf.sql", reason="autoperf/sql.py (SQL normalisation) is not written yet")
    mod = make_module("db_mod", '''
def execute(conn, query, *params):
    return "OK"
''')
    patch(mod, _yaml({"target": "db_mod:execute", "kind": "db", "name": "db.execute",
                      "statement_arg": "query"}))
    statement = "SELECT * FROM users WHERE id = 4242 AND name = 'bobsecret'"
    assert mod.execute(None, statement, 777123, "hunter2") == "OK"
    assert mod.execute(None, query="SELECT * FROM users WHERE id = $1") == "OK"
    spans = records.spans("db.execute")
    assert len(spans) == 2 and all(s["kind"] == "db" for s in spans)
    attrs = spans[0]["attrs"]
    assert attrs["statement"].upper().startswith("SELECT")
    assert "4242" not in attrs["statement"] and "bobsecret" not in attrs["statement"]
    dumped = json.dumps(records.all())
    for secret in ("bobsecret", "777123", "hunter2", "4242"):
        assert secret not in dumped


# -- bootstrap.install: import order, warnings, uninstall (fresh interpreters) -------------------
TARGET_MOD = '''
def work(x):
    """Double x."""
    return x * 2


class Box:
    def get(self):
        return "box"

    @staticmethod
    def util():
        return "util"

    @classmethod
    def make(cls):
        return cls()
'''

CONSUMER_MOD = '''
from target_mod import work
'''

PRELUDE = '''
import sys
from autoperf import bootstrap, wrappers
from autoperf.config import load_config
NO_EXTRAS = {no_extras!r}


def install(text):
    with open("autoperf.yaml", "w") as f:
        f.write(text)
    assert bootstrap.install(load_config("autoperf.yaml"), disable=NO_EXTRAS, console=False)
'''


@pytest.fixture
def script(tmp_path, run_script):
    from conftest import NO_EXTRAS

    (tmp_path / "target_mod.py").write_text(TARGET_MOD)
    (tmp_path / "consumer_mod.py").write_text(CONSUMER_MOD)
    (tmp_path / "late_mod.py").write_text(TARGET_MOD)

    def run(body, **kwargs):
        import textwrap
        return run_script(PRELUDE.format(no_extras=NO_EXTRAS) + textwrap.dedent(body), **kwargs)
    return run


CONFIG = '''retain: {all: true}     # the tests count the spans of plain calls (roots)
targets:
  - {target: "target_mod:work", name: work}
  - {target: "target_mod:Box.*", name: box}
  - {target: "late_mod:work", name: late}
  - {target: "never_mod:func"}
  - {target: "target_mod:wrok"}
'''


def test_install_wraps_a_module_imported_before(script):
    """A target module imported before install() is wrapped at install; uninstall restores identity."""
    proc, recs = script(f'''
import target_mod
original = target_mod.work
raw = dict(vars(target_mod.Box))
install({CONFIG!r})
assert target_mod.work is not original and target_mod.work.__wrapped__ is original
assert target_mod.work(21) == 42
assert target_mod.Box.util() == "util" and isinstance(target_mod.Box.make(), target_mod.Box)
bootstrap.uninstall()
assert target_mod.work is original
for key in ("get", "util", "make"):
    assert vars(target_mod.Box)[key] is raw[key], key
assert target_mod.work(1) == 2
import late_mod                      # listed, but imported after uninstall: not patched
assert not wrappers.is_instrumented(late_mod.work)
print("ok")
''')
    assert proc.stdout.strip() == "ok"
    names = [r["name"] for r in recs if r["type"] == "span"]
    assert names.count("work") == 1                        # the call after uninstall is not timed
    assert {"box.util", "box.make"} <= set(names)
    assert "late" not in names


def test_install_wraps_a_module_imported_after(script):
    """A target module imported after install() is wrapped as it finishes importing (from-imports too)."""
    proc, recs = script(f'''
install({CONFIG!r})
assert "target_mod" not in sys.modules
import consumer_mod                  # does `from target_mod import work`
import target_mod
assert consumer_mod.work is target_mod.work
assert wrappers.is_instrumented(consumer_mod.work)
assert consumer_mod.work(5) == 10
bootstrap.stop()
print("ok")
''')
    assert proc.stdout.strip() == "ok"
    spans = [r for r in recs if r["type"] == "span" and r["name"] == "work"]
    assert len(spans) == 1 and spans[0]["status"] == "success"


def test_never_imported_and_missing_targets_warn_once(script):
    """A never-imported module warns once at stop(); a missing attribute warns once with nearest names."""
    proc, recs = script(f'''
install({CONFIG!r})
import target_mod
assert target_mod.work(2) == 4       # the program runs on
bootstrap.stop()
bootstrap.stop()
print("ran on")
''')
    assert proc.stdout.strip() == "ran on"
    warnings = [r for r in recs if r["type"] == "warning"]
    never = [w for w in warnings if w["code"] == "target_module_not_imported"]
    assert sorted(w["target"] for w in never) == ["late_mod:work", "never_mod:func"]  # once each
    assert any("never_mod" in w["message"] for w in never)
    missing = [w for w in warnings if w["code"] == "target_not_found"]
    assert len(missing) == 1 and missing[0]["target"] == "target_mod:wrok"
    assert "'wrok'" in missing[0]["message"] and "work" in missing[0]["nearest"]
    assert "work" in missing[0]["message"]


def test_uninstall_stops_patching_later_imports(script):
    """After uninstall(), importing a listed module leaves it untouched and nothing is recorded."""
    proc, recs = script(f'''
install({CONFIG!r})
bootstrap.uninstall()
import target_mod
assert not wrappers.is_instrumented(target_mod.work)
assert not wrappers.is_instrumented(vars(target_mod.Box)["util"].__func__)
target_mod.work(1)
bootstrap.stop()
print("ok")
''')
    assert proc.stdout.strip() == "ok"
    assert not [r for r in recs if r["type"] == "span"]


def test_submodule_imported_by_its_package_is_wrapped_before_the_package_binds_it(script, tmp_path):
    """A target in ``pkg.sub`` that ``pkg/__init__`` re-exports is wrapped before the package binds the name."""
    pkg = tmp_path / "tpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from .sub import handler\nfrom . import sub as _sub\n")
    (pkg / "sub.py").write_text("async def handler(x):\n    return x + 1\n")
    proc, recs = script('''
install("targets:\\n  - {target: 'tpkg.sub:handler', kind: flow, name: handler}\\n")
import asyncio
import tpkg
from tpkg.sub import handler
assert tpkg.handler is handler is sys.modules["tpkg.sub"].handler
assert wrappers.is_instrumented(tpkg.handler)
assert asyncio.run(tpkg.handler(1)) == 2
bootstrap.stop()
print("ok")
''')
    assert proc.stdout.strip() == "ok"
    assert [r["flow_name"] for r in recs if r["type"] == "flow_complete"] == ["handler"]
