"""Record fields -> OpenTelemetry semantic-convention attributes and span names (docs/export.md).

Pure functions over one ``span`` record. The JSON log keeps its own field names; only what leaves
for an OTLP receiver is renamed here. Values are what the record holds: ``statement`` is already
normalised SQL (never a parameter), ``path`` already a template.
"""
from __future__ import annotations

import re

#: span kind in the records -> OTLP SpanKind number (1 internal, 2 server, 3 client)
KIND_NUMBER = {"db": 3, "http": 3, "wait": 1, "job": 1, "cycle": 1, "span": 1}
_COLLECTION = re.compile(r'\b(?:FROM|INTO|UPDATE|JOIN|TABLE)\s+((?:"[^"]+"|[A-Za-z_][\w$]*)(?:\.(?:"[^"]+"|[A-Za-z_][\w$]*))?)',
                         re.IGNORECASE)
_collections: dict = {}

# Attributes renamed (or consumed) per record kind; everything else keeps its name.
_DB = {"system": "db.system.name", "statement": "db.query.text", "operation": "db.operation.name",
       "rows": "db.response.returned_rows", "sqlstate": "db.response.status_code",
       "batch": "db.operation.batch.size", "fingerprint": "autoperf.db.fingerprint"}
_HTTP = {"method": "http.request.method", "path": "url.template", "route": "url.template",
         "status": "http.response.status_code", "bytes": "http.response.body.size"}
_CONSUMED = frozenset(("server", "trace_id", "parent_span_id"))   # said by the span's kind, ids and parent
_SERVER = {"method": "http.request.method", "route": "http.route", "status": "http.response.status_code"}


def collection_of(statement) -> str | None:
    """The first table a normalised statement names (``SELECT … FROM players`` -> ``players``)."""
    if not statement:
        return None
    hit = _collections.get(statement)
    if hit is None:
        m = _COLLECTION.search(statement)
        hit = m.group(1).replace('"', "") if m else ""
        if len(_collections) < 4096:
            _collections[statement] = hit
    return hit or None


def is_server(rec) -> bool:
    """An incoming request's flow (aiohttp.web, ASGI): a SERVER span."""
    return rec.get("kind") == "flow" and "server" in (rec.get("attrs") or {})


def kind_number(rec) -> int:
    kind = rec.get("kind")
    if kind == "flow":
        return 2 if rec.get("parent_id") is None else 1
    return KIND_NUMBER.get(kind, 1)


def name_and_attributes(rec) -> tuple[str, dict]:
    """``(span name, {attribute: value})`` for one ``span`` record."""
    kind = rec.get("kind")
    attrs = rec.get("attrs") or {}
    name = rec.get("name") or kind or "span"
    out = {}
    if kind == "db":
        table = _DB
        collection = collection_of(attrs.get("statement"))
        if collection:
            out["db.collection.name"] = collection
        op = attrs.get("operation")
        if op:
            name = f"{op} {collection}" if collection else str(op)
        elif attrs.get("system"):
            name = str(attrs["system"])
    elif kind == "http":
        table = _HTTP
        host = attrs.get("host")
        if host:
            address, _, port = str(host).rpartition(":") if ":" in str(host) else (host, "", "")
            out["server.address"] = address
            if port.isdigit():
                out["server.port"] = int(port)
        attempts = attrs.get("attempts")
        if isinstance(attempts, int) and attempts > 1:
            out["http.request.resend_count"] = attempts - 1
    elif is_server(rec):
        table = _SERVER
        if attrs.get("method") and attrs.get("route"):
            name = f"{attrs['method']} {attrs['route']}"
    else:
        table = {}
    for key, value in attrs.items():
        if value is None or key in _CONSUMED or (kind == "http" and key == "host"):
            continue
        out[table.get(key, key)] = value
    if kind == "http" and attrs.get("system") == "discord":
        out.pop("system", None)
        out["autoperf.http.system"] = "discord"
    out["autoperf.kind"] = kind
    if rec.get("thread"):
        out["thread.name"] = rec["thread"]
    if rec.get("task"):
        out["autoperf.task"] = rec["task"]
    if rec.get("flow_name"):
        out["autoperf.flow.name"] = rec["flow_name"]
    if rec.get("error"):
        out["error.type"] = rec["error"]
    if rec.get("status") not in (None, "success"):
        out["autoperf.status"] = rec["status"]
    for key in ("sla_ms", "threshold_ms", "retained"):
        if rec.get(key) is not None:
            out[f"autoperf.{key}"] = rec[key]
    return name, out
