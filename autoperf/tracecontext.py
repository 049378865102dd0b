"""W3C trace context for autoperf's flows: one 128-bit trace id per flow, ``traceparent`` in and out.

A flow's trace id is derived from its 64-bit flow id alone (a hash of it, then the id itself), so
every process computes the same one with no coordination: a pool job's spans, a log line and an
OTLP span agree. A flow started by a request that carried ``traceparent`` joins that trace
instead: ``adopt`` remembers (bounded) the remote trace id and parent for the flow, in this process;
a ``SpanRef`` of the flow pickled for another process (a pool job) carries it there (``adopted``).
"""
from __future__ import annotations

import collections
import re

try:  # the C blake2 module alone; `hashlib` also loads OpenSSL (~1.3 ms of start-up after asyncio, ~6 without)
    from _blake2 import blake2b
except ImportError:  # pragma: no cover
    from hashlib import blake2b

__all__ = ["trace_id_of", "trace_hex", "parse_traceparent", "traceparent_of", "adopt", "adopted", "remote_parent"]

_MAX_REMOTE = 10_000
_MAX_DERIVED = 4096
_remote: "collections.OrderedDict[int, tuple]" = collections.OrderedDict()  # flow id -> (trace id, parent id)
_derived: dict = {}
_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")


def _derive(flow_id: int) -> bytes:
    raw = flow_id.to_bytes(8, "big")
    return blake2b(raw, digest_size=8, person=b"autoperf-trace").digest() + raw


def trace_id_of(flow_id: int) -> bytes:
    """The 16-byte trace id of the flow ``flow_id`` (its remote trace when it adopted one)."""
    remote = _remote.get(flow_id)
    if remote is not None:
        return remote[0]
    tid = _derived.get(flow_id)
    if tid is None:
        if len(_derived) >= _MAX_DERIVED:
            _derived.clear()
        tid = _derived[flow_id] = _derive(flow_id)
    return tid


def trace_hex(flow_id: int) -> str:
    return trace_id_of(flow_id).hex()


def adopted(flow_id: int):
    """``(trace id bytes, remote parent span id)`` the flow adopted in this process, or None."""
    return _remote.get(flow_id)


def remote_parent(flow_id: int):
    """The span id (int) of the remote parent the flow adopted, or None."""
    remote = _remote.get(flow_id)
    return None if remote is None else remote[1]


def parse_traceparent(value) -> tuple | None:
    """``(trace_id bytes, parent span id int, flags int)`` of a valid ``traceparent`` header, else None."""
    if not value or len(value) < 55:
        return None
    m = _TRACEPARENT.match(value.strip().lower())
    if m is None or m.group(1) == "ff" or (m.group(1) == "00" and m.group(5)):
        return None
    trace, parent = m.group(2), m.group(3)
    if trace == "0" * 32 or parent == "0" * 16:
        return None
    return bytes.fromhex(trace), int(parent, 16), int(m.group(4), 16)


def adopt(flow_id: int, trace_id: bytes, parent_id: int) -> None:
    """The flow ``flow_id`` continues the remote trace ``trace_id`` (its parent: ``parent_id``)."""
    _remote[flow_id] = (trace_id, parent_id)
    if len(_remote) > _MAX_REMOTE:
        _remote.popitem(last=False)


def traceparent_of(span) -> str:
    """The ``traceparent`` header value naming ``span`` as the parent (sampled)."""
    return f"00-{trace_id_of(span.flow_id).hex()}-{span.span_id:016x}-01"
