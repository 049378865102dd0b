"""The ``export: otlp:`` keys, and the standard ``OTEL_*`` variables for the keys the file leaves out.

A key written in the file wins; a key left out (None) is read from the environment, as the
OpenTelemetry SDKs do: ``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_EXPORTER_OTLP_{TRACES,METRICS}_ENDPOINT``,
``OTEL_EXPORTER_OTLP_HEADERS``, ``OTEL_EXPORTER_OTLP_PROTOCOL``, ``OTEL_EXPORTER_OTLP_COMPRESSION``,
``OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE``, ``OTEL_BSP_SCHEDULE_DELAY``, ``OTEL_SERVICE_NAME``,
``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_SDK_DISABLED``. No endpoint anywhere: no export.
"""
from __future__ import annotations

import os
from urllib.parse import unquote

from autoperf.config.schema import Bool, Enum, Field, Float, Int, Map, Obj, Str

CONFIG_SCHEMA = Obj({
    "enabled": Field(Bool(), default=None, doc="Export over OTLP; unset: on when an endpoint is known "
                     "(here or OTEL_EXPORTER_OTLP_ENDPOINT) and OTEL_SDK_DISABLED is not true."),
    "endpoint": Field(Str(), default=None, doc="Base URL of the OTLP/HTTP receiver (`/v1/traces`, `/v1/metrics` "
                      "appended), e.g. `http://127.0.0.1:4318`. Unset: OTEL_EXPORTER_OTLP_ENDPOINT."),
    "traces_endpoint": Field(Str(), default=None, doc="Full URL for traces (unset: endpoint + /v1/traces, "
                             "or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)."),
    "metrics_endpoint": Field(Str(), default=None, doc="Full URL for metrics (unset: endpoint + /v1/metrics, "
                              "or OTEL_EXPORTER_OTLP_METRICS_ENDPOINT)."),
    "headers": Field(Map(Str()), default=None, doc="HTTP headers of every request (an API key: write "
                     "`${VAR}`; never printed). Unset: OTEL_EXPORTER_OTLP_HEADERS."),
    "encoding": Field(Enum("protobuf", "json"), default=None, doc="OTLP/HTTP body: protobuf (default) or json."),
    "compression": Field(Enum("gzip", "none"), default=None, doc="Body compression (default gzip)."),
    "traces": Field(Bool(), default=True, doc="Export the `span` records written (under retention: the retained flows)."),
    "metrics": Field(Bool(), default=True, doc="Export the `metrics` records (histograms, counters) and `resource` gauges."),
    "temporality": Field(Enum("cumulative", "delta"), default=None,
                         doc="Metric temporality (default cumulative, what Prometheus-style backends expect)."),
    "metrics_interval_s": Field(Float(min=0, max=3600), default=None,
                                doc="Seconds between metric exports: each key's point (its total, or with delta "
                                "temporality its change) once per export, at most this often, and at every stop. "
                                "0: every `metrics` interval as written. Unset: OTEL_METRIC_EXPORT_INTERVAL (ms), "
                                "else 60 (the OpenTelemetry SDKs' default)."),
    "resource": Field(Map(Str()), default={}, doc="Extra resource attributes (over OTEL_RESOURCE_ATTRIBUTES), "
                      "e.g. `service.version: 1.4.2`, `deployment.environment.name: prod`."),
    "timeout_s": Field(Float(min=0.1, max=300), default=10.0, doc="Longest wait for one request's answer."),
    "batch_records": Field(Int(min=1, max=100000), default=2000, doc="Most records encoded into one request."),
    "flush_interval_ms": Field(Float(min=10, max=60000), default=None, doc="Longest a record waits before its "
                               "request is sent (a stop or sync sends at once). Unset: OTEL_BSP_SCHEDULE_DELAY (ms), "
                               "else 5000 (the OpenTelemetry SDKs' batch span processor default): one request "
                               "per 5 s costs a fifth of the exporter's CPU of one per second."),
    "max_queue_records": Field(Int(min=100), default=50000,
                               doc="Records held in memory for the exporter; beyond that they are dropped and counted."),
    "retry_max_s": Field(Float(min=0.1, max=3600), default=30.0, doc="Longest pause between attempts while the "
                         "receiver is away (Retry-After of a 429/503 is honoured up to 300 s)."),
    "exit_timeout_s": Field(Float(min=0, max=300), default=5.0, doc="Longest the program's exit (and a pool "
                            "worker's) waits for the exporter to send what is queued; the rest is spilled."),
    "max_spill_mb": Field(Float(min=1), default=256, doc="Largest spill file (requests kept on disk while the "
                          "receiver is unreachable, sent in order once it answers)."),
}, doc="OTLP/HTTP export of traces and metrics (docs/export.md).")

DEFAULT_SCHEME_PORT = "http://localhost:4318"
DEFAULT_METRICS_INTERVAL_S = 60.0
DEFAULT_FLUSH_INTERVAL_MS = 5000.0      # OTEL_BSP_SCHEDULE_DELAY's default


def _env_ms(env, name, default_ms) -> float:
    """Milliseconds from the variable ``name`` (the OpenTelemetry SDKs' unit); unset, unreadable or
    negative: ``default_ms``."""
    try:
        value = float(env.get(name, ""))
    except ValueError:
        return default_ms
    return value if value >= 0 else default_ms


def _flush_interval_ms(explicit, env) -> float:
    """The file's ``flush_interval_ms``, else OTEL_BSP_SCHEDULE_DELAY (clamped to the schema's range), else 5000."""
    if explicit:
        return float(explicit)
    return min(max(_env_ms(env, "OTEL_BSP_SCHEDULE_DELAY", DEFAULT_FLUSH_INTERVAL_MS), 10.0), 60000.0)


def _truthy(text) -> bool:
    return str(text or "").strip().lower() in ("true", "1", "yes", "on")


def parse_pairs(text: str | None) -> dict:
    """``k1=v1,k2=v2`` (W3C baggage-like, percent-encoded), as OTEL_EXPORTER_OTLP_HEADERS and
    OTEL_RESOURCE_ATTRIBUTES are written; malformed items are skipped."""
    out = {}
    for item in (text or "").split(","):
        key, sep, value = item.partition("=")
        key = key.strip()
        if sep and key:
            out[unquote(key)] = unquote(value.strip())
    return out


def _signal_url(explicit, env_specific, base, path):
    if explicit:
        return explicit
    if env_specific:
        return env_specific      # a signal-specific variable is used as is (the spec says so)
    if base:
        return base.rstrip("/") + path
    return None


def resolve(section: dict | None, data: dict | None = None, environ=None) -> dict | None:
    """The exporter's settings (section keys, env for what the file leaves out), or None: no export."""
    env = os.environ if environ is None else environ
    s = {k: v for k, v in (section or {}).items()}
    enabled = s.get("enabled")
    if enabled is False or (enabled is None and _truthy(env.get("OTEL_SDK_DISABLED"))):
        return None
    base = s.get("endpoint") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    traces = _signal_url(s.get("traces_endpoint"), env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"), base, "/v1/traces")
    metrics = _signal_url(s.get("metrics_endpoint"), env.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"), base, "/v1/metrics")
    if enabled and not (traces or metrics):    # asked for explicitly: the SDKs' default receiver
        traces, metrics = DEFAULT_SCHEME_PORT + "/v1/traces", DEFAULT_SCHEME_PORT + "/v1/metrics"
    if not (traces or metrics):
        return None
    headers = s.get("headers")
    if headers is None:
        headers = parse_pairs(env.get("OTEL_EXPORTER_OTLP_HEADERS"))
    encoding = s.get("encoding")
    if encoding is None:
        encoding = "json" if env.get("OTEL_EXPORTER_OTLP_PROTOCOL", "").strip() == "http/json" else "protobuf"
    compression = s.get("compression") or (env.get("OTEL_EXPORTER_OTLP_COMPRESSION", "").strip() or "gzip")
    temporality = s.get("temporality") or (
        "delta" if env.get("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "").strip().lower() == "delta"
        else "cumulative")
    interval = s.get("metrics_interval_s")
    if interval is None:
        interval = _env_ms(env, "OTEL_METRIC_EXPORT_INTERVAL", DEFAULT_METRICS_INTERVAL_S * 1000.0) / 1000.0
    resource = parse_pairs(env.get("OTEL_RESOURCE_ATTRIBUTES"))
    service = (data or {}).get("service") or env.get("OTEL_SERVICE_NAME") or resource.get("service.name")
    resource.update(s.get("resource") or {})
    if service:
        resource["service.name"] = service
    return {
        "traces_url": traces if s.get("traces", True) else None,
        "metrics_url": metrics if s.get("metrics", True) else None,
        "headers": dict(headers),
        "encoding": encoding,
        "gzip": compression == "gzip",
        "temporality": temporality,
        "metrics_interval_s": float(interval),
        "resource": resource,
        "timeout_s": float(s.get("timeout_s") or 10.0),
        "batch_records": int(s.get("batch_records") or 2000),
        "flush_interval_s": _flush_interval_ms(s.get("flush_interval_ms"), env) / 1000.0,
        "max_queue_records": int(s.get("max_queue_records") or 50000),
        "retry_max_s": float(s.get("retry_max_s") or 30.0),
        "exit_timeout_s": 5.0 if s.get("exit_timeout_s") is None else float(s["exit_timeout_s"]),
        "max_spill_bytes": int(float(s.get("max_spill_mb") or 256) * 1024 * 1024),
    }
