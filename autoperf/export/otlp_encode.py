"""Records -> OTLP request messages (``opentelemetry-proto``): spans as traces, plus the shared pieces.

Runs in the exporter's thread only. One flow is one trace (``autoperf.tracecontext``); a span's
parent is its record's ``parent_id`` (across threads and pool processes alike), a flow that adopted
a remote ``traceparent`` hangs under that remote span. A root flow's manual checkpoints (from its
``flow_complete`` record in the same batch) become span events.
"""
from __future__ import annotations

import calendar
import os
import socket
import time
import uuid

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from autoperf import tracecontext
from autoperf.export import otlp_semconv, otlp_wire

def _scope():
    try:
        from importlib.metadata import version
        v = version("autoperf")
    except Exception:  # noqa: BLE001
        v = ""
    return InstrumentationScope(name="autoperf", version=v)


SCOPE = _scope()
_INSTANCE = [os.getpid(), str(uuid.uuid4())]


def instance_id() -> str:
    """This process's ``service.instance.id`` (a fresh one after a fork)."""
    if _INSTANCE[0] != os.getpid():
        _INSTANCE[:] = [os.getpid(), str(uuid.uuid4())]
    return _INSTANCE[1]


# -- values ---------------------------------------------------------------------------------------
def any_value(value) -> AnyValue | None:
    t = type(value)
    if t is str:
        return AnyValue(string_value=value)
    if t is bool:
        return AnyValue(bool_value=value)
    if t is int:
        if -(1 << 63) <= value < (1 << 63):
            return AnyValue(int_value=value)
        return AnyValue(string_value=str(value))
    if t is float:
        return AnyValue(double_value=value)
    if t in (list, tuple):
        items = [v for v in (any_value(x) for x in value[:128]) if v is not None]
        return AnyValue(array_value=ArrayValue(values=items))
    if value is None:
        return None
    if t is dict:
        import orjson
        return AnyValue(string_value=orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()[:4096])
    return AnyValue(string_value=str(value)[:4096])


def key_values(attrs: dict) -> list:
    out = []
    for key, value in attrs.items():
        v = any_value(value)
        if v is not None:
            out.append(KeyValue(key=str(key), value=v))
    return out


_sec_cache: dict = {}


def iso_to_ns(text) -> int:
    """``2025-01-20T15:30:45.123Z`` -> Unix ns (the seconds part cached)."""
    if not text:
        return time.time_ns()
    head = text[:19]
    sec = _sec_cache.get(head)
    if sec is None:
        if len(_sec_cache) > 10_000:
            _sec_cache.clear()
        sec = _sec_cache[head] = calendar.timegm(time.strptime(head, "%Y-%m-%dT%H:%M:%S"))
    frac = text[20:-1] if len(text) > 20 else ""
    ns = int(frac.ljust(9, "0")[:9]) if frac.isdigit() else 0
    return sec * 1_000_000_000 + ns


# -- resource -------------------------------------------------------------------------------------
_HOST = socket.gethostname()


def resource_attributes(rec: dict, extra: dict) -> dict:
    """The resource of the process that wrote ``rec`` (fleet fields of the record win when present)."""
    attrs = {"service.name": rec.get("service") or extra.get("service.name") or "unknown_service:python",
             "host.name": rec.get("host") or _HOST,
             "service.instance.id": rec.get("instance_id") or instance_id(),
             "process.pid": rec.get("pid") or os.getpid(),
             "telemetry.sdk.name": "autoperf", "telemetry.sdk.language": "python"}
    for key, value in extra.items():
        if key != "service.name" or not rec.get("service"):
            attrs[key] = value
    shards = rec.get("shard_ids")
    if shards is None and rec.get("shard_id") is not None:
        shards = [rec["shard_id"]]
    if shards is not None:
        attrs["discord.shard.ids"] = list(shards) if isinstance(shards, (list, tuple)) else [shards]
    return attrs


def resource_key(rec: dict):
    shards = rec.get("shard_ids", rec.get("shard_id"))
    return (rec.get("service"), rec.get("pid"), rec.get("host"), rec.get("instance_id"),
            tuple(shards) if isinstance(shards, list) else shards)


# -- spans ----------------------------------------------------------------------------------------
def _bytes8(hex_text) -> bytes:
    return bytes.fromhex(hex_text) if hex_text else b""


def _events_and_status(rec, start, checkpoints) -> bytes:
    """Encoded events (a root flow's manual checkpoints) and status (errors only): rare, official classes."""
    out = b""
    if checkpoints:
        for entry in checkpoints:
            if entry.get("kind") != "checkpoint":
                continue
            event = Span.Event(name=str(entry.get("name")),
                               time_unix_nano=start + int(round((entry.get("offset_ms") or 0.0) * 1e6)))
            if entry.get("metadata"):
                event.attributes.extend(key_values(entry["metadata"]))
            out += otlp_wire.field(11, event.SerializeToString())
    if rec.get("status") == "error":
        status = Status(code=Status.STATUS_CODE_ERROR, message=str(rec.get("error") or "error"))
        out += otlp_wire.field(15, status.SerializeToString())
    return out


def span_bytes(rec: dict, checkpoints=None) -> bytes:
    """One ``span`` record as the bytes of an OTLP Span."""
    flow_id = int(rec["flow_id"], 16)
    attrs = rec.get("attrs") or {}
    start = iso_to_ns(rec.get("timestamp"))
    end = start + int(round((rec.get("duration_ms") or 0.0) * 1e6))
    name, attributes = otlp_semconv.name_and_attributes(rec)
    parent = rec.get("parent_id")
    if parent:
        parent_bytes = _bytes8(parent)
        trace_id = tracecontext.trace_id_of(flow_id)
    elif attrs.get("trace_id"):    # adopted a remote traceparent (written on the root itself)
        trace_id = bytes.fromhex(attrs["trace_id"])
        parent_bytes = _bytes8(attrs.get("parent_span_id"))
    else:
        trace_id = tracecontext.trace_id_of(flow_id)
        remote = tracecontext.remote_parent(flow_id)
        parent_bytes = remote.to_bytes(8, "big") if remote else b""
    span_id = _bytes8(rec["span_id"])
    if len(trace_id) != 16 or len(span_id) != 8 or len(parent_bytes) not in (0, 8):
        raise ValueError("malformed ids")
    extra = _events_and_status(rec, start, checkpoints) if checkpoints or rec.get("status") == "error" else b""
    return otlp_wire.span(trace_id, span_id, parent_bytes, str(name), otlp_semconv.kind_number(rec), start, end,
                          attributes, extra)


_SCOPE_BYTES = SCOPE.SerializeToString()
_resources: dict = {}


def _resource_bytes(rec, extra) -> bytes:
    key = (resource_key(rec), tuple(sorted(extra.items())))
    hit = _resources.get(key)
    if hit is None:
        if len(_resources) > 1000:
            _resources.clear()
        hit = _resources[key] = Resource(attributes=key_values(resource_attributes(rec, extra))).SerializeToString()
    return hit


def traces_request(records, resource_extra: dict) -> bytes | None:
    """The protobuf bytes of one ExportTraceServiceRequest for the ``span`` records among ``records``
    (None when there are none)."""
    marks = {r.get("flow_id"): r.get("checkpoints") for r in records
             if r.get("type") == "flow_complete" and r.get("checkpoints")}
    groups: dict = {}
    for rec in records:
        if rec.get("type") != "span":
            continue
        try:
            encoded = span_bytes(rec, marks.get(rec["flow_id"]) if rec.get("parent_id") is None and marks else None)
        except (KeyError, ValueError, TypeError, AttributeError):
            continue    # a record without usable ids (hand-made): nothing to link it to
        key = resource_key(rec)
        group = groups.get(key)
        if group is None:
            group = groups[key] = (_resource_bytes(rec, resource_extra), _SCOPE_BYTES, [])
        group[2].append(encoded)
    if not groups:
        return None
    return otlp_wire.traces_request(groups.values())


# -- JSON encoding (OTLP/HTTP JSON: ids as hex, enums as numbers) ------------------------------------
_ID_KEYS = ("traceId", "spanId", "parentSpanId")


def to_json(message) -> bytes:
    """OTLP/JSON of a message (or of ExportTraceServiceRequest bytes)."""
    import base64

    import orjson
    from google.protobuf.json_format import MessageToDict

    if isinstance(message, bytes):
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
        message = ExportTraceServiceRequest.FromString(message)
    data = MessageToDict(message, use_integers_for_enums=True)

    def fix(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key in _ID_KEYS and isinstance(value, str):
                    node[key] = base64.b64decode(value).hex()
                else:
                    fix(value)
        elif isinstance(node, list):
            for item in node:
                fix(item)
    fix(data)
    return orjson.dumps(data)
