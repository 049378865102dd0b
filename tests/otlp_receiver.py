"""An OTLP/HTTP receiver on 127.0.0.1 for the tests: decodes every request with ``opentelemetry-proto``.

    with Receiver() as rx:                     # listens on a free port (rx.endpoint)
        rx.answers = [(429, {"Retry-After": "2"})]   # the next answers, then 200
        ... rx.spans(), rx.metrics(), rx.requests
"""
from __future__ import annotations

import base64
import gzip
import json
import http.server
import socket
import threading
import time

from google.protobuf.json_format import ParseDict
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Receiver:
    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.requests = []          # (monotonic time, path, decoded message, headers)
        self.answers = []           # (status, headers) to give before answering 200
        self.refused = []           # (monotonic time, status) of the answers that were not 200
        self.stall_s = 0.0          # keep each request this long before answering (after recording it)
        self.lock = threading.Lock()
        self._server = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def start(self):
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.lock:
                    answer = receiver.answers.pop(0) if receiver.answers else None
                    if answer is not None:
                        receiver.refused.append((time.monotonic(), answer[0]))
                if answer is not None:
                    self.send_response(answer[0])
                    for key, value in answer[1].items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                cls = ExportTraceServiceRequest if self.path.endswith("/v1/traces") else ExportMetricsServiceRequest
                msg = cls()
                if self.headers.get("Content-Type") == "application/json":
                    ParseDict(_ids_to_base64(json.loads(body)), msg)
                else:
                    msg.ParseFromString(body)
                with receiver.lock:
                    receiver.requests.append((time.monotonic(), self.path, msg, dict(self.headers)))
                if receiver.stall_s:
                    time.sleep(receiver.stall_s)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self):
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def spans(self):
        """Every span received: (span message, resource attributes dict)."""
        out = []
        with self.lock:
            for _, path, msg, _ in self.requests:
                if path.endswith("/v1/traces"):
                    for rs in msg.resource_spans:
                        res = {kv.key: value_of(kv.value) for kv in rs.resource.attributes}
                        for ss in rs.scope_spans:
                            out.extend((span, res) for span in ss.spans)
        return out

    def metrics(self):
        """Every metric received: (metric message, resource attributes dict)."""
        out = []
        with self.lock:
            for _, path, msg, _ in self.requests:
                if path.endswith("/v1/metrics"):
                    for rm in msg.resource_metrics:
                        res = {kv.key: value_of(kv.value) for kv in rm.resource.attributes}
                        for sm in rm.scope_metrics:
                            out.extend((m, res) for m in sm.metrics)
        return out


def value_of(value):
    which = value.WhichOneof("value")
    if which == "array_value":
        return [value_of(v) for v in value.array_value.values]
    return getattr(value, which) if which else None


def attributes(message) -> dict:
    return {kv.key: value_of(kv.value) for kv in message.attributes}


def _ids_to_base64(node):
    """OTLP/JSON writes ids as hex; protobuf's JSON reader wants base64."""
    if isinstance(node, dict):
        return {k: (base64.b64encode(bytes.fromhex(v)).decode() if k in ("traceId", "spanId", "parentSpanId")
                    and isinstance(v, str) else _ids_to_base64(v)) for k, v in node.items()}
    if isinstance(node, list):
        return [_ids_to_base64(v) for v in node]
    return node
