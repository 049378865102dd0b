"""Export to the engines operators already run: the ``export:`` section of autoperf.yaml.

Each exporter is a key of the section (``otlp``, ``prometheus``) with a schema and a
``start(section, data, log_dir, child=False)`` that starts it (``child``: this process is a worker
of the program). Nothing here imports an exporter's dependencies until its key asks for it.
"""
from __future__ import annotations

from autoperf.config.schema import Field, Obj
from autoperf.export import otlp_config
from autoperf.export import prometheus as _prometheus

def _otlp_asked(section, data):
    return otlp_config.resolve(section, data) is not None


#: key -> (module, its start function, whether the config asks for it or None: asked first, so an
#: exporter that is off costs no import of its module; otlp_sink's http.client and ssl are ~15 ms).
EXPORTERS = {
    "otlp": ("autoperf.export.otlp_sink", "start", _otlp_asked),
    "prometheus": ("autoperf.export.prometheus", "start", None),
}

CONFIG_SCHEMA = Obj({
    "otlp": Field(otlp_config.CONFIG_SCHEMA, doc=otlp_config.CONFIG_SCHEMA.doc),
    # absent: no endpoint (the key's presence turns it on)
    "prometheus": Field(_prometheus.CONFIG_SCHEMA, default=None, doc=_prometheus.CONFIG_SCHEMA.doc),
}, doc="Export to OpenTelemetry (OTLP/HTTP), Prometheus (/metrics) (docs/export.md, docs/prometheus.md).")


def start_from_config(config_data: dict, log_dir, child: bool = False) -> list:
    """Start every exporter the config (or, for OTLP, the standard environment) asks for; never raises."""
    import importlib

    started = []
    section = (config_data or {}).get("export") or {}
    for key, (path, fn, asked) in EXPORTERS.items():
        try:
            if asked is not None and not asked(section.get(key) or {}, config_data or {}):
                continue
            sink = getattr(importlib.import_module(path), fn)(section.get(key) or {}, config_data or {}, log_dir,
                                                              child=child)
        except Exception as exc:  # noqa: BLE001 - never break the host program
            from autoperf import diagnostics
            diagnostics.internal_error(f"export {key}", exc)
            continue
        if sink is not None:
            started.append(sink)
    return started
