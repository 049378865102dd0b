"""Turn a callable into an instrumented one that the program cannot tell apart.

The wrapper is a real function (or ``async def``, generator, async generator: the same kind as
the original), with ``functools.update_wrapper`` metadata, so ``inspect.signature``,
``iscoroutinefunction``, ``__name__``/``__qualname__``/``__doc__``/``__annotations__``/
``__wrapped__`` all answer as before, methods bind as before, and it pickles by reference.
(A ``wrapt.FunctionWrapper`` would refuse pickling and costs ~0.4 µs per call in binding
look-ups; a closure costs one frame.)
"""
from __future__ import annotations

import functools
import types

from autoperf import diagnostics
from autoperf.current import mute as _mute, unmute as _unmute
from autoperf.records import Site
from autoperf.spans import CURRENT, MUTED, Span, activate, deactivate, get_current, start_detached


#: marks our wrappers: ``fn.__autoperf__`` is the Site.
MARK = "__autoperf__"


class CallSite(Site):
    """A Site that also knows how to read attributes from arguments and the return value."""

    __slots__ = ("name", "kind", "arg_hooks", "return_hooks")

    def __init__(self, name, kind, threshold_ms=None, sla_ms=None):
        super().__init__(threshold_ms, sla_ms)
        self.name = name
        self.kind = kind
        self.arg_hooks = ()      # callables (span, args, kwargs) -> None
        self.return_hooks = ()   # callables (span, result) -> None

    # Captures are autoperf's own work: muted, so what they call is never a span of the program.
    def on_call(self, span, args, kwargs):
        if not self.arg_hooks:
            return
        token = _mute()
        try:
            for hook in self.arg_hooks:
                try:
                    hook(span, args, kwargs)
                except Exception as exc:
                    diagnostics.warn_once("capture_failed", f"{self.name}: {type(exc).__name__}: {exc}",
                                          key=(self.name, "args", type(exc).__name__), target=self.name)
        finally:
            _unmute(token)

    def on_return(self, span, result):
        if not self.return_hooks:
            return
        token = _mute()
        try:
            for hook in self.return_hooks:
                try:
                    hook(span, result)
                except Exception as exc:
                    diagnostics.warn_once("capture_failed", f"{self.name}: {type(exc).__name__}: {exc}",
                                          key=(self.name, "return", type(exc).__name__), target=self.name)
        finally:
            _unmute(token)


def is_instrumented(obj) -> bool:
    return getattr(obj, MARK, None) is not None


def _finish(fn, wrapper, site):
    functools.update_wrapper(wrapper, fn)
    setattr(wrapper, MARK, site)
    return wrapper


def instrument(fn, site: CallSite):
    """Return the instrumented twin of ``fn`` (a function, bound method or callable)."""
    import inspect
    if is_instrumented(fn):
        return fn
    if inspect.isasyncgenfunction(fn):
        return _finish(fn, _async_gen_wrapper(fn, site), site)
    if inspect.iscoroutinefunction(fn):
        return _finish(fn, _coroutine_wrapper(fn, site), site)
    if inspect.isgeneratorfunction(fn):
        return _finish(fn, _generator_wrapper(fn, site), site)
    # A sync function that hands back an awaitable or a (async) generator (a sync decorator
    # around an ``async def`` or a generator function): the span covers the await / iteration.
    inner = inspect.unwrap(fn)
    if (inspect.iscoroutinefunction(inner) or inspect.isasyncgenfunction(inner)
            or inspect.isgeneratorfunction(inner)):
        return _finish(fn, _returns_awaitable_wrapper(fn, site), site)
    return _finish(fn, _sync_wrapper(fn, site), site)


# The call wrappers come in twins written out in full, on purpose (``duplicates`` lists them): a
# plain and an ``async def`` body cannot share code, and a shared helper for the with/without
# captures variants would cost one more call per span on the hot path.
def _sync_wrapper(fn, site):
    name, kind = site.name, site.kind
    if site.arg_hooks or site.return_hooks:
        def wrapper(*args, **kwargs):
            parent = get_current()
            if parent is MUTED:        # autoperf's own call (or a re-entry): straight through
                return fn(*args, **kwargs)
            s = Span(name, kind, None, parent, site, True)   # entered: current until finish()
            site.on_call(s, args, kwargs)
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                s.fail(exc)
                s.finish()
                raise
            site.on_return(s, result)
            s.finish()
            return result
    else:
        def wrapper(*args, **kwargs):
            parent = get_current()
            if parent is MUTED:        # autoperf's own call (or a re-entry): straight through
                return fn(*args, **kwargs)
            s = Span(name, kind, None, parent, site, True)   # entered: current until finish()
            try:
                return fn(*args, **kwargs)
            except BaseException as exc:
                s.fail(exc)
                raise
            finally:
                s.finish()
    return wrapper


def _coroutine_wrapper(fn, site):
    name, kind = site.name, site.kind
    if site.arg_hooks or site.return_hooks:
        async def wrapper(*args, **kwargs):
            parent = get_current()
            if parent is MUTED:
                return await fn(*args, **kwargs)
            s = Span(name, kind, None, parent, site, True)   # entered: current until finish()
            site.on_call(s, args, kwargs)
            try:
                result = await fn(*args, **kwargs)
            except BaseException as exc:
                s.fail(exc)
                s.finish()
                raise
            site.on_return(s, result)
            s.finish()
            return result
    else:
        async def wrapper(*args, **kwargs):
            parent = get_current()
            if parent is MUTED:
                return await fn(*args, **kwargs)
            s = Span(name, kind, None, parent, site, True)   # entered: current until finish()
            try:
                return await fn(*args, **kwargs)
            except BaseException as exc:
                s.fail(exc)
                raise
            finally:
                s.finish()
    return wrapper


async def _await_in_span(awaitable, s, site):
    token = activate(s)
    try:
        result = await awaitable
    except BaseException as exc:
        s.fail(exc)
        raise
    else:
        site.on_return(s, result)
        return result
    finally:
        deactivate(token)
        s.finish()


def _returns_awaitable_wrapper(fn, site):
    from inspect import isawaitable
    name, kind = site.name, site.kind

    def wrapper(*args, **kwargs):
        s = start_detached(name, kind, None, CURRENT, site)
        site.on_call(s, args, kwargs)
        token = activate(s)
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            s.fail(exc)
            s.finish()
            raise
        finally:
            deactivate(token)
        if isinstance(result, types.CoroutineType) or isawaitable(result):
            return _await_in_span(result, s, site)
        if isinstance(result, types.GeneratorType):
            return _generator_driver(lambda args, kwargs: (result, s), site)()
        if isinstance(result, types.AsyncGeneratorType):
            return _async_generator_driver(lambda args, kwargs: (result, s), site)()
        site.on_return(s, result)
        s.finish()
        return result
    return wrapper


def _generator_wrapper(fn, site):
    return _generator_driver(_generator_start(fn, site), site)


def _async_gen_wrapper(fn, site):
    return _async_generator_driver(_generator_start(fn, site), site)


def _generator_start(fn, site):
    """``start(args, kwargs) -> (inner generator, span)`` for a generator function's wrapper: its
    span starts at the first ``next()``, when the wrapper's own body first runs."""
    name, kind = site.name, site.kind

    def start(args, kwargs):
        s = start_detached(name, kind, None, CURRENT, site)
        site.on_call(s, args, kwargs)
        try:
            return fn(*args, **kwargs), s
        except BaseException as exc:
            s.fail(exc)
            s.finish()
            raise
    return start


# The one driver of each generator kind (the async one repeats the sync one's steps: an async
# generator cannot delegate with ``yield from``). The span lives until the inner generator is
# exhausted or closed; it is current only while the generator's own code runs, never in the
# consumer between items.
def _generator_driver(start, site):
    """A generator function that drives the generator ``start(args, kwargs)`` returns, in its span."""
    def wrapper(*args, **kwargs):
        inner, s = start(args, kwargs)
        try:
            token = activate(s)
            try:
                item = next(inner)
            finally:
                deactivate(token)
            while True:
                try:
                    sent = yield item
                except GeneratorExit:
                    inner.close()
                    raise
                except BaseException as exc:
                    token = activate(s)
                    try:
                        item = inner.throw(exc)
                    finally:
                        deactivate(token)
                else:
                    token = activate(s)
                    try:
                        item = inner.send(sent)
                    finally:
                        deactivate(token)
        except StopIteration as stop:
            site.on_return(s, stop.value)
            return stop.value
        except GeneratorExit:
            raise
        except BaseException as exc:
            s.fail(exc)
            raise
        finally:
            s.finish()
    return wrapper


def _async_generator_driver(start, site):
    """Async twin of ``_generator_driver``."""
    async def wrapper(*args, **kwargs):
        inner, s = start(args, kwargs)
        try:
            token = activate(s)
            try:
                item = await inner.__anext__()
            finally:
                deactivate(token)
            while True:
                try:
                    sent = yield item
                except GeneratorExit:
                    await inner.aclose()
                    raise
                except BaseException as exc:
                    token = activate(s)
                    try:
                        item = await inner.athrow(exc)
                    finally:
                        deactivate(token)
                else:
                    token = activate(s)
                    try:
                        item = await inner.asend(sent)
                    finally:
                        deactivate(token)
        except StopAsyncIteration:
            return
        except GeneratorExit:
            raise
        except BaseException as exc:
            s.fail(exc)
            raise
        finally:
            s.finish()
    return wrapper
