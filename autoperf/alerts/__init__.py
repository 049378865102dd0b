"""Alerts: rules over records (seed plan 10.1 by default), deduplicated delivery to Discord, Slack,
generic JSON webhooks and email (docs/alerts.md). Light at import: no network modules until install().
"""
from __future__ import annotations

DEFAULTS = {
    "enabled": True,
    "group_wait_s": 1.0,
    "window_s": 300.0,
    "max_attempts": 4,
    "retry_base_s": 1.0,
    "queue_size": 10000,
    "default_rules": True,
    "disable": [],
    "rules": [],
    "channels": [],
    "daily_summary": {},
}

DAILY_DEFAULTS = {"enabled": True, "at": "00:10", "channels": [], "regressions": True, "threshold_pct": 20.0,
                  "baseline_days": 7}

_SEVERITY = ("INFO", "WARNING", "ERROR", "CRITICAL")

from autoperf.config.schema import Any, Bool, Enum, Field, Float, Int, List, Map, Obj, Str, with_defaults

def _rule_needs_condition(rule):
    from autoperf.alerts.rules import DEFAULT_RULES

    known = {r["name"] for r in DEFAULT_RULES}
    if rule.get("name") not in known and rule.get("above") is None and rule.get("baseline_factor") is None:
        return [("above", "a new rule needs `above` and/or `baseline_factor`")]
    return []

def _channel_needs(ch):
    if ch.get("type") in ("discord", "slack", "webhook") and not ch.get("url_env"):
        return [("url_env", "webhook channels need `url_env` (the name of the environment variable "
                            "holding the URL; the URL itself never goes in the config)")]
    if ch.get("type") == "email" and not ch.get("to"):
        return [("to", "email channels need `to`")]
    return []

RULE_SCHEMA = Obj({
    "name": Field(Str(), required=True, doc="Rule name; a default rule's name overrides that rule."),
    "severity": Field(Enum(*_SEVERITY), default=None, doc="Severity of the alert."),
    "match": Field(Map(Any()), default={}, doc="Dotted record paths that must equal a value (or one of a list),"
                   " e.g. {type: span, kind: db}."),
    "field": Field(Str(), default=None, doc="Dotted path of the number to test (default duration_ms)."),
    "above": Field(Float(), default=None, doc="Fire when the value is above this."),
    "baseline_factor": Field(Float(min=1), default=None,
                             doc="Fire when the value is above factor x the rolling median of this key."),
    "baseline_samples": Field(Int(min=3), default=None, doc="Values kept per key for the median (default 100)."),
    "baseline_min_samples": Field(Int(min=1), default=None, doc="Values needed before the baseline is used (default 20)."),
    "min_value": Field(Float(), default=None, doc="Never fire for a value below this (the built-in baseline "
                       "rule: 100 ms — 8 ms against a 2.3 ms median is no incident)."),
    "key": Field(Str(), default=None, doc="Dotted path grouping alerts and baselines (default flow_name)."),
    "channels": Field(List(Str()), default=[], doc="Channel names to use (default: all channels)."),
    "description": Field(Str(), default=None, doc="Text added to the message."),
}, rules=(_rule_needs_condition,))

CHANNEL_SCHEMA = Obj({
    "type": Field(Enum("discord", "slack", "webhook", "email"), required=True, doc="Channel kind."),
    "name": Field(Str(), default=None, doc="Name used in rules and warnings (default: the type)."),
    "min_severity": Field(Enum(*_SEVERITY), default="WARNING", doc="Lowest severity sent to this channel."),
    "rules": Field(List(Str()), default=[], doc="Only these rules (default: all)."),
    "url_env": Field(Str(), default=None, doc="Environment variable holding the webhook URL (a secret)."),
    "timeout_s": Field(Float(min=0.1), default=5.0, doc="Timeout of one delivery attempt."),
    "host": Field(Str(), default="localhost", doc="SMTP server."),
    "port": Field(Int(min=1), default=587, doc="SMTP port."),
    "starttls": Field(Bool(), default=True, doc="Upgrade the SMTP connection with STARTTLS."),
    "ssl": Field(Bool(), default=False, doc="Implicit TLS (SMTPS, usually port 465) instead of STARTTLS."),
    "username": Field(Str(), default=None, doc="SMTP login user."),
    "password_env": Field(Str(), default=None, doc="Environment variable holding the SMTP password (a secret)."),
    "from": Field(Str(), default="autoperf@localhost", doc="Sender address."),
    "to": Field(List(Str()), default=[], doc="Recipient addresses."),
    "ca_file": Field(Str(), default=None, doc="CA bundle to verify the SMTP server's certificate."),
    "verify_tls": Field(Bool(), default=True, doc="Verify the SMTP server's certificate."),
}, rules=(_channel_needs,))

DAILY_SCHEMA = Obj({
    "enabled": Field(Bool(), default=True, doc="Send a summary of each UTC day from the running program, once a day "
                     "(and with `autoperf report --send`); only when a channel receives it."),
    "at": Field(Str(pattern=r"([01][0-9]|2[0-3]):[0-5][0-9]"), default="00:10",
                doc="UTC time of day (HH:MM) at which the summary of the day before is sent."),
    "channels": Field(List(Str()), default=[], doc="Channel names that get the summary (default: every email and "
                      "generic webhook channel; seed 10.2)."),
    "regressions": Field(Bool(), default=True, doc="With the summary, send the day's regressions against the days "
                         "before to the alert channels (seed 7.3; rule name `regression`, severity WARNING)."),
    "threshold_pct": Field(Float(min=0), default=20, doc="A regression is this much slower (%), credibly (seed 7.3: 20)."),
    "baseline_days": Field(Int(min=1), default=7, doc="The days before that make the baseline (seed 7.3: 7)."),
}, doc="The daily summary (seed 7.2 / 10.2) and regressions (7.3).")

CONFIG_SCHEMA = Obj({
    "enabled": Field(Bool(), default=True, doc="Evaluate alert rules."),
    "group_wait_s": Field(Float(min=0), default=1.0, doc="Collect a burst this long before the first message."),
    "window_s": Field(Float(min=0), default=300.0,
                      doc="At most one message per rule and key per window; the next one carries the count."),
    "max_attempts": Field(Int(min=1), default=4, doc="Delivery attempts per message and channel."),
    "retry_base_s": Field(Float(min=0), default=1.0, doc="First retry delay; doubles on each attempt."),
    "queue_size": Field(Int(min=10), default=10000, doc="Alert events waiting for the delivery thread."),
    "default_rules": Field(Bool(), default=True, doc="Include the built-in rules (seed plan table 10.1)."),
    "disable": Field(List(Str()), default=[], doc="Names of rules to turn off."),
    "rules": Field(List(RULE_SCHEMA), default=[], doc="Extra rules, or overrides of built-in ones by name."),
    "channels": Field(List(CHANNEL_SCHEMA), default=[], doc="Where alerts are sent."),
    "daily_summary": Field(DAILY_SCHEMA, doc=DAILY_SCHEMA.doc),
})


def settings(section: dict | None) -> dict:
    """The `alerts:` section with defaults applied."""
    out = with_defaults(DEFAULTS, section)
    out["daily_summary"] = with_defaults(DAILY_DEFAULTS, out.get("daily_summary"))
    return out


_installed: list = []
_schedules: list = []


BASELINES_FILE = ".autoperf-alert-baselines.json"


def install(config_data: dict, emit=None, log_dir=None, config_path=None):
    """Create the alert engine from the config, register it with the pipeline (an observer of every delivered batch), start delivery.

    ``log_dir`` (given for the program's own process, not its workers): the baseline rules' windows are
    kept in ``log_dir/.autoperf-alert-baselines.json`` across restarts, and the daily summary is sent
    from this process (schedule.py; ``config_path`` is the config the summary is made with).
    Returns the engine (``engine.close()`` stops it), or None when alerts are disabled or on error.
    Never raises.
    """
    try:
        cfg = settings((config_data or {}).get("alerts"))
        if not cfg.get("enabled", True):
            return None
        import os

        from autoperf import pipeline
        from autoperf.alerts.engine import AlertEngine

        engine = AlertEngine(cfg, emit=emit, state_path=os.path.join(log_dir, BASELINES_FILE) if log_dir else None)
        pipeline.add_observer(engine.observe)
        _installed.append(engine)
        if log_dir and cfg.get("channels"):
            from autoperf.alerts import schedule
            daily = schedule.start(cfg, log_dir, config_path)
            if daily is not None:
                _schedules.append(daily)
        return engine
    except Exception as exc:  # noqa: BLE001 - never break the host program
        try:
            from autoperf import pipeline

            pipeline.emit({"type": "warning", "level": "WARNING", "code": "alerts_install_failed",
                           "message": f"alerts not installed: {type(exc).__name__}", "count": 1})
        except Exception:  # noqa: BLE001
            pass
        return None


def uninstall() -> None:
    """Remove every installed engine from the pipeline and stop its delivery thread."""
    from autoperf import pipeline

    while _schedules:
        _schedules.pop().stop()
    while _installed:
        engine = _installed.pop()
        try:
            pipeline.remove_observer(engine.observe)
        except Exception:  # noqa: BLE001
            pass
        engine.close()
