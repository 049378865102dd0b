"""Instructions per flow (one flow of three child sync spans), counted by callgrind over all threads.

    python tests/bench/bench_instructions.py [--n1 2000] [--n2 12000] [--only autoperf_default,...]

Each variant runs the same program (``flow`` calls ``step_a``, ``step_b``, ``step_c``, all plain
sync functions) at two call counts under ``valgrind --tool=callgrind``; the difference of the
"Collected" totals over the difference of the counts is the cost of one flow with start-up, exit
and import costs cancelled. Deterministic to a fraction of a percent whatever the machine's load:
the figure to decide on (issue 14). Variants: bare calls; ``wrapt.FunctionWrapper`` pass-through;
autoperf (``autoperf run``, the 4 functions as YAML targets, sampler off) unretained (default
retention, sample rate 0; also with ``export: prometheus:`` serving /metrics) and retained
(``retain: {all: true}``); OpenTelemetry SDK
(BatchSpanProcessor, an exporter that discards); ddtrace (``ddtrace.tracer.trace``, writer off);
autoperf with OTLP export on (to a refusing port: requests encoded and spilled, not sent).
A variant whose library is missing is skipped with a message.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FUNCS = """
def step_a(i):
    return i + 1
def step_b(i):
    return i * 2
def step_c(i):
    return i - 1
def flow(i):
    return step_a(i) + step_b(i) + step_c(i)
"""

LOOP = """
import sys
n = int(sys.argv[1])
for i in range(n):
    flow(i)
"""

VARIANTS = {
    "bare": ("python", FUNCS + LOOP, None),
    "wrapt": ("python", FUNCS + """
import wrapt
def _through(wrapped, instance, args, kwargs):
    return wrapped(*args, **kwargs)
step_a = wrapt.FunctionWrapper(step_a, _through)
step_b = wrapt.FunctionWrapper(step_b, _through)
step_c = wrapt.FunctionWrapper(step_c, _through)
flow = wrapt.FunctionWrapper(flow, _through)
""" + LOOP, None),
    "autoperf_unretained": ("autoperf", FUNCS + LOOP, "retain: {all: false, sample_rate: 0}\n"),
    "autoperf_unretained_prometheus": ("autoperf", FUNCS + LOOP,
                                       "retain: {all: false, sample_rate: 0}\nexport: {prometheus: {port: PORT}}\n"),
    "autoperf_default_retention": ("autoperf", FUNCS + LOOP, "retain: {all: false}\n"),
    "autoperf_retained": ("autoperf", FUNCS + LOOP, "retain: {all: true}\n"),
    # OTLP export to a port that refuses (nothing else runs under valgrind): encoded requests are spilled
    "autoperf_unretained_otlp": ("autoperf", FUNCS + LOOP, "retain: {all: false, sample_rate: 0}\n"
                                 "export: {otlp: {endpoint: 'http://127.0.0.1:9', retry_max_s: 3600}}\n"),
    "autoperf_retained_otlp": ("autoperf", FUNCS + LOOP, "retain: {all: true}\n"
                               "export: {otlp: {endpoint: 'http://127.0.0.1:9', retry_max_s: 3600}}\n"),
    "opentelemetry": ("python", """
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
class Discard(SpanExporter):
    def export(self, spans):
        return SpanExportResult.SUCCESS
provider = TracerProvider()
provider.add_span_processor(BatchSpanProcessor(Discard()))
trace.set_tracer_provider(provider)
tracer = trace.get_tracer("bench")
def step_a(i):
    with tracer.start_as_current_span("step_a"):
        return i + 1
def step_b(i):
    with tracer.start_as_current_span("step_b"):
        return i * 2
def step_c(i):
    with tracer.start_as_current_span("step_c"):
        return i - 1
def flow(i):
    with tracer.start_as_current_span("flow"):
        return step_a(i) + step_b(i) + step_c(i)
""" + LOOP + "provider.shutdown()\n", "opentelemetry.sdk"),
    "ddtrace": ("python", """
import os
os.environ.setdefault("DD_TRACE_ENABLED", "true")
from ddtrace.trace import tracer
def step_a(i):
    with tracer.trace("step_a"):
        return i + 1
def step_b(i):
    with tracer.trace("step_b"):
        return i * 2
def step_c(i):
    with tracer.trace("step_c"):
        return i - 1
def flow(i):
    with tracer.trace("flow"):
        return step_a(i) + step_b(i) + step_c(i)
""" + LOOP + "tracer.shutdown()\n", "ddtrace"),
}

CONFIG = """
sampler: {enabled: false}
log: {console: false}
targets:
  - {target: "__main__:flow", kind: flow}
  - {target: "__main__:step_a"}
  - {target: "__main__:step_b"}
  - {target: "__main__:step_c"}
"""


def _free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def available(module):
    if module is None:
        return True
    return subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True).returncode == 0


def collected(how, script, config, n, workdir):
    cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable]
    if how == "autoperf":
        cmd += ["-m", "autoperf", "run", "--config", config, "--log-dir", os.path.join(workdir, "logs"), script]
    else:
        cmd += [script]
    env = dict(os.environ, PYTHONPATH=ROOT, DD_TRACE_AGENT_URL="http://127.0.0.1:9", DD_INSTRUMENTATION_TELEMETRY_ENABLED="false",
               DD_REMOTE_CONFIGURATION_ENABLED="false", DD_TRACE_STARTUP_LOGS="false")
    proc = subprocess.run(cmd + [str(n)], capture_output=True, text=True, cwd=workdir, env=env)
    match = re.search(r"Collected : (\d+)", proc.stderr)
    if proc.returncode != 0 or not match:
        raise RuntimeError(f"{how} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return int(match.group(1))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n1", type=int, default=2000)
    ap.add_argument("--n2", type=int, default=12000)
    ap.add_argument("--only", default="")
    args = ap.parse_args(argv)
    only = {v for v in args.only.split(",") if v}
    results = {}
    with tempfile.TemporaryDirectory() as workdir:
        config = os.path.join(workdir, "autoperf.yaml")
        with open(config, "w") as f:
            f.write(CONFIG)
        for name, (how, source, module) in VARIANTS.items():
            if only and name not in only:
                continue
            if how != "autoperf" and not available(module):   # an autoperf variant's third item is its config
                print(f"{name:28} skipped: {module} is not installed", flush=True)
                continue
            script = os.path.join(workdir, f"v_{name}.py")   # not wrapt.py: it would shadow the module
            with open(script, "w") as f:
                f.write(textwrap.dedent(source))
            if how == "autoperf":
                with open(config, "w") as f:
                    f.write(CONFIG + VARIANTS[name][2].replace("PORT", str(_free_port())))
            collected(how, script, config, 10, workdir)         # .pyc and config caches exist from now on
            low = collected(how, script, config, args.n1, workdir)
            high = collected(how, script, config, args.n2, workdir)
            per_flow = (high - low) / (args.n2 - args.n1)
            results[name] = per_flow
            print(f"{name:28} {per_flow / 1000:8.1f} k instructions per flow", flush=True)
    base = results.get("wrapt")
    otel = results.get("opentelemetry")
    print()
    print("| variant | instructions per flow | × wrapt pass-through | / OpenTelemetry |")
    print("|---|---|---|---|")
    for name, value in results.items():
        x = f"{value / base:.2f}×" if base else "-"
        o = f"{value / otel:.3f}" if otel else "-"
        print(f"| {name} | {value / 1000:.1f} k | {x} | {o} |")


if __name__ == "__main__":
    main()
