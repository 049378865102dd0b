"""What plugs into autoperf.yaml, declared in one place: config/ (the schema language and the loader)
names no feature and reads this module instead.

Each entry is a ``"module:attribute"`` string, imported only when a config is validated (a cached
config imports none): the section schemas features declare, and the integration table whose rows
name the modules holding each integration's ``OPTIONS``. Features start from ``bootstrap.FEATURES``.
"""
from __future__ import annotations

#: config section -> its schema (an ``Obj`` of ``autoperf.config.schema``)
SECTIONS = {
    "slo": "autoperf.analysis.slo:CONFIG_SCHEMA",
    "alerts": "autoperf.alerts:CONFIG_SCHEMA",
    "store": "autoperf.store:CONFIG_SCHEMA",
    "export": "autoperf.export:CONFIG_SCHEMA",
}
#: the integration table (``integrations.<name>``: each row's ``code`` module holds its ``OPTIONS``)
INTEGRATIONS = "autoperf.integrations:BY_NAME"
