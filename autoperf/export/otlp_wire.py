"""Protobuf wire encoding of OTLP spans, by hand: the span path's cost is building messages, not bytes.

Building a ``Span`` through the official Python classes cost ~65 us per span (every ``KeyValue`` and
``AnyValue`` is an object); writing the same bytes here costs a fraction of that, and an attribute
(key, value) pair — mostly the same few per endpoint — is encoded once and cached. Field numbers are
those of opentelemetry/proto/trace/v1/trace.proto and common.proto; the tests decode every request
with the official classes. Rare parts (events, status, resource, scope) are official messages
serialised and embedded.
"""
from __future__ import annotations

import struct

_pack_q = struct.Struct("<Q").pack
_pack_d = struct.Struct("<d").pack
_MASK64 = (1 << 64) - 1
_kv_cache: dict = {}
_MAX_CACHE = 50_000
_MAX_CACHED_TEXT = 256


def varint(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def field(num: int, data: bytes) -> bytes:
    """A length-delimited field (bytes, string, embedded message)."""
    return varint((num << 3) | 2) + varint(len(data)) + data


def _any_value(value) -> bytes | None:
    t = type(value)
    if t is str:
        return field(1, value.encode("utf-8", "surrogatepass"))
    if t is bool:
        return b"\x10" + (b"\x01" if value else b"\x00")
    if t is int:
        if -(1 << 63) <= value < (1 << 63):
            return b"\x18" + varint(value & _MASK64)
        return field(1, str(value).encode())
    if t is float:
        return b"\x21" + _pack_d(value)
    if t in (list, tuple):
        items = b"".join(field(1, v) for v in (_any_value(x) for x in value[:128]) if v is not None)
        return field(5, items)
    if value is None:
        return None
    if t is dict:
        import orjson
        text = orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()[:4096]
    else:
        text = str(value)[:4096]
    return field(1, text.encode("utf-8", "surrogatepass"))


def key_value(key: str, value) -> bytes | None:
    """The bytes of one ``KeyValue`` attribute (field 9 of a Span included), cached for repeated pairs."""
    t = type(value)
    cacheable = t is bool or t is int or (t is str and len(value) <= _MAX_CACHED_TEXT)
    if cacheable:
        hit = _kv_cache.get((key, t, value))
        if hit is not None:
            return hit
    encoded = _any_value(value)
    if encoded is None:
        return None
    out = field(9, field(1, key.encode("utf-8", "surrogatepass")) + field(2, encoded))
    if cacheable:
        if len(_kv_cache) >= _MAX_CACHE:
            _kv_cache.clear()
        _kv_cache[(key, t, value)] = out
    return out


def span(trace_id: bytes, span_id: bytes, parent_id: bytes, name: str, kind: int, start_ns: int, end_ns: int,
         attributes: dict, extra: bytes = b"") -> bytes:
    """One Span message's bytes; ``extra`` holds already-encoded events (field 11) and status (field 15)."""
    parts = [b"\x0a\x10", trace_id, b"\x12\x08", span_id]
    if parent_id:
        parts.append(b"\x22\x08")
        parts.append(parent_id)
    parts.append(field(5, name.encode("utf-8", "surrogatepass")))
    parts.append(b"\x30" + varint(kind))
    parts.append(b"\x39" + _pack_q(start_ns))
    parts.append(b"\x41" + _pack_q(end_ns))
    for key, value in attributes.items():
        kv = key_value(key, value)
        if kv is not None:
            parts.append(kv)
    if extra:
        parts.append(extra)
    return b"".join(parts)


def traces_request(groups) -> bytes:
    """An ExportTraceServiceRequest from ``[(resource bytes, scope bytes, [span bytes, …]), …]``."""
    out = []
    for resource, scope, spans in groups:
        scope_spans = field(1, scope) + b"".join(field(2, s) for s in spans)
        out.append(field(1, field(1, resource) + field(2, scope_spans)))
    return b"".join(out)
