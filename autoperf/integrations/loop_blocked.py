"""What a ``loop_blocked`` record says: when, how long, the blocked step's flow and task, and the
stack — sampled from the blocked thread while the block goes on, or read from the handle after it.

Used by ``event_loop`` (its watchdog thread and its ``Handle._run`` wrapper).
"""
from __future__ import annotations

import os
import sys
import threading
import time

from autoperf import pipeline, spans
from autoperf.current import CURRENT_SPAN

MAX_STACK = 40          # frames kept in a loop_blocked record (innermost ones)


def _iso_ago(duration_ms):
    """ISO-8601 UTC of the moment ``duration_ms`` ago (the block's start)."""
    wall_ns = time.time_ns() - int(duration_ms * 1e6)
    sec, rem = divmod(wall_ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + f".{rem // 1_000_000:03d}Z"


def emit(duration_ms, sample, threshold_ns, detector="handle", ongoing=False, block=None):
    """One ``loop_blocked`` record. ``block`` (the step's start, perf_counter ns) is given for a block the
    watchdog reported while ongoing, on both records: readers count the block once (``block_id``)."""
    sample = sample or {}
    settings = pipeline.settings()
    rec = {
        "timestamp": _iso_ago(duration_ms),
        "type": "loop_blocked",
        "level": "ERROR" if duration_ms * 1e6 > settings.error_ns else "WARNING",
        "duration_ms": round(duration_ms, 3),
        "threshold_ms": threshold_ns / 1e6,
        "flow_id": sample.get("flow_id"),
        "flow_name": sample.get("flow_name"),
        "span_id": sample.get("span_id"),
        "span_name": sample.get("span_name"),
        "task": sample.get("task"),
        "location": sample.get("location"),
        "stack": sample.get("stack", []),
        "sampled": bool(sample.get("sampled")),
        "detector": detector,
        "thread": threading.current_thread().name if not ongoing else sample.get("thread"),
    }
    if ongoing:
        rec["ongoing"] = True
    if block is not None:
        rec["block_id"] = f"{block:x}"
    if sample.get("flows_started", spans.flows_started()) == 0:
        rec["startup"] = True     # no flow had started in this process when it was seen: nobody waited on it
    pipeline.emit(rec)


def _span_facts(span):
    if span is None:
        return {}
    return {"flow_id": f"{span.flow_id:016x}", "flow_name": span.flow_name,
            "span_id": f"{span.span_id:016x}", "span_name": getattr(span, "name", None)}


def _task_of(handle):
    owner = getattr(getattr(handle, "_callback", None), "__self__", None)
    get_name = getattr(owner, "get_name", None)
    if get_name is not None and hasattr(owner, "get_coro"):
        return owner
    return None


def handle_sample(handle):
    """After the fact (the watchdog missed it): the flow from the context, the callback's place."""
    out = {"sampled": False}
    try:
        out.update(_span_facts(handle._context.get(CURRENT_SPAN)))
    except Exception:
        pass
    task = _task_of(handle)
    code = line = None
    if task is not None:
        out["task"] = task.get_name()
        coro = task.get_coro()
        frame = getattr(coro, "cr_frame", None)
        if frame is not None:
            code, line = frame.f_code, frame.f_lineno
        else:
            code = getattr(coro, "cr_code", None)
            line = code.co_firstlineno if code else None
    else:
        fn = getattr(handle, "_callback", None)
        fn = getattr(fn, "__func__", fn)
        code = getattr(fn, "__code__", None)
        line = code.co_firstlineno if code else None
    if code is not None:
        out["location"] = f"{_short(code.co_filename)}:{line} in {code.co_name}"
        out["stack"] = [out["location"]]
    else:
        out["location"] = _callback_name(handle)
    return out


# -- stacks ------------------------------------------------------------------------------------
_AUTOPERF_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
_lib_dirs = None   # (stdlib dirs, site-packages dirs): from sysconfig at the first stack sample, not at start-up
_ASYNCIO_DIR = os.path.dirname(os.path.abspath(threading.__file__)) + os.sep + "asyncio" + os.sep
_CWD = os.getcwd() + os.sep
#: asyncio functions that run the loop itself (runners, base_events, events.Handle._run)
_DRIVERS = frozenset(("run", "run_until_complete", "run_forever", "_run_once", "_run"))


def _short(filename):
    return filename[len(_CWD):] if filename.startswith(_CWD) else filename


def _dirs():
    global _lib_dirs
    if _lib_dirs is None:
        import sysconfig
        paths = sysconfig.get_paths()

        def dirs(*keys):
            return tuple({os.path.abspath(paths[k]) + os.sep for k in keys if paths.get(k)})
        _lib_dirs = (dirs("stdlib", "platstdlib"), dirs("purelib", "platlib"))
    return _lib_dirs


def _frame_kind(filename):
    if filename.startswith(_AUTOPERF_DIR):
        return 3
    stdlib, libs = _lib_dirs or _dirs()
    if filename.startswith(libs):
        return 1
    if filename.startswith(_ASYNCIO_DIR):
        return 3
    if filename.startswith(stdlib) or filename.startswith("<frozen"):
        return 2
    return 0  # the program's own code


def _callback_name(handle):
    """``callback time.sleep``: what a handle runs, when it has no Python frame to point at."""
    fn = getattr(handle, "_callback", None)
    if fn is None:
        return None
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or type(fn).__name__
    module = getattr(fn, "__module__", None)
    return f"callback {module}.{name}" if module else f"callback {name}"


def stack_sample(tid, handle):
    """The blocked thread's stack right now, its innermost program line, and the flow."""
    frame = sys._current_frames().get(tid)
    frames = []
    while frame is not None and len(frames) < 200:
        frames.append(frame)
        frame = frame.f_back
    frames.reverse()  # outermost first, innermost last
    # The frames that run the loop (the script's `asyncio.run(...)` line and the loop's own) are not
    # where it is blocked: the location is looked for in the running callback only.
    inside = 0
    for i, f in enumerate(frames):
        if f.f_code.co_name in _DRIVERS and f.f_code.co_filename.startswith(_ASYNCIO_DIR):
            inside = i + 1
    entries, location, best = [], None, 4
    for i, f in enumerate(frames):
        filename = f.f_code.co_filename
        kind = _frame_kind(filename)
        if kind == 3 and filename.startswith(_AUTOPERF_DIR):
            continue
        text = f"{_short(filename)}:{f.f_lineno} in {f.f_code.co_name}"
        entries.append(text)
        if i >= inside and kind <= best:  # innermost frame of the most "user" kind (program < library < stdlib)
            best, location = kind, text
    if location is None:        # a callback without Python frames (a C function such as time.sleep)
        location = _callback_name(handle)
    out = {"sampled": True, "stack": entries[-MAX_STACK:], "location": location,
           "flows_started": spans.flows_started()}
    if handle is not None:
        try:
            out.update(_span_facts(handle._context.get(CURRENT_SPAN)))
        except Exception:
            pass
        task = _task_of(handle)
        if task is not None:
            out["task"] = task.get_name()
    thread = threading._active.get(tid)  # noqa: SLF001 - plain dict read
    out["thread"] = thread.name if thread is not None else str(tid)
    return out
