"""Reading a scenario's ``mix:``: flows, their actors and steps, attachments and expectations."""
from __future__ import annotations

import os
from typing import Any, List, Optional

from . import expectations
from .scenario import ANYWHERE, DM, STEP_KINDS, Actor, AttachmentSpec, Flow, ScenarioError, Step

_STEP_COMMON = {"weight", "name", "channel", "timeout_s", "expect"}
_STEP_EXTRA = {
    "command": {"options"}, "select": {"values"}, "modal": {"fields"}, "message": {"attachments", "expect_reply"},
    "autocomplete": {"option", "value", "options"}, "message_command": {"target"}, "user_command": {"target"},
    "wait": {"match"},
}


def num(data: dict, key: str, default: Any, where: str, *, minimum: float = 0.0, integer: bool = False) -> Any:
    """data[key] as a number (default when absent), at least ``minimum``; ScenarioError names the key."""
    value = data.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ScenarioError(f"{where}{key}: expected a number, got {value!r}")
    if value < minimum:
        raise ScenarioError(f"{where}{key}: must be >= {minimum}, got {value!r}")
    if integer:
        if int(value) != value:
            raise ScenarioError(f"{where}{key}: expected an integer, got {value!r}")
        return int(value)
    return float(value)


def read_file(path: Any, where: str) -> bytes:
    try:
        with open(os.path.expanduser(str(path)), "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise ScenarioError(f"{where}: {exc}") from None


def _attachments(raw: Any, where: str) -> List[AttachmentSpec]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ScenarioError(f"{where}attachments: expected a list")
    out = []
    for i, a in enumerate(raw):
        if isinstance(a, str):
            a = {"filename": a}
        if not isinstance(a, dict) or "filename" not in a:
            raise ScenarioError(f"{where}attachments[{i}]: expected {{filename, size | content | path}}")
        unknown = set(a) - {"filename", "size", "content", "path", "content_type"}
        if unknown:
            raise ScenarioError(f"{where}attachments[{i}]: unknown keys {sorted(unknown)}")
        content = None
        if "path" in a:
            content = read_file(a["path"], f"{where}attachments[{i}].path")
        elif "content" in a:
            content = a["content"].encode() if isinstance(a["content"], str) else bytes(a["content"])
        size = num(a, "size", len(content) if content is not None else 1024, f"{where}attachments[{i}].",
                   integer=True)
        out.append(AttachmentSpec(filename=str(a["filename"]), size=size, content=content,
                                  content_type=a.get("content_type")))
    return out


def _target(step: Step, kind: str, value: Any, raw: dict, where: str) -> None:
    """The step's main value: a command name, a label, a message's text, a wait's place ..."""
    if kind == "modal":
        if isinstance(value, dict):
            step.fields = {str(k): str(v) for k, v in value.items()}
        elif value not in (None, True, ""):
            step.target = str(value)
        if "fields" in raw:
            if not isinstance(raw["fields"], dict):
                raise ScenarioError(f"{where}.fields: expected a mapping")
            step.fields.update({str(k): str(v) for k, v in raw["fields"].items()})
    elif kind == "select":
        if isinstance(value, dict):
            step.target = str(value.get("custom_id", value.get("placeholder", "")))
            step.values = [str(v) for v in value.get("values", [])]
        else:
            step.target = "" if value in (None, True) else str(value)
        if "values" in raw:
            vals = raw["values"]
            step.values = [str(v) for v in (vals if isinstance(vals, list) else [vals])]
    elif kind == "wait":
        if not isinstance(value, str) or not value.strip():
            raise ScenarioError(f"{where}.wait: expected where to wait: dm, any or a channel name")
        step.target = value.strip().lstrip("#")
    else:
        if not isinstance(value, str) or (not value.strip() and kind != "message"):
            raise ScenarioError(f"{where}.{kind}: expected a non-empty string")
        step.target = value.strip() if kind != "message" else value
        if kind in ("command", "autocomplete"):
            step.target = " ".join(value.strip().lstrip("/").split())
            if len(step.target.split()) > 3:
                raise ScenarioError(f"{where}.{kind}: at most 'group subgroup subcommand'")


def parse_step(raw: Any, where: str) -> Step:
    if isinstance(raw, str):
        raw = {"command": raw}
    if not isinstance(raw, dict):
        raise ScenarioError(f"{where}: expected a mapping")
    kinds = [k for k in STEP_KINDS if k in raw]
    if len(kinds) != 1:
        raise ScenarioError(f"{where}: exactly one of {', '.join(STEP_KINDS)} is required, got {kinds or 'none'}")
    kind = kinds[0]
    allowed = _STEP_COMMON | {kind} | _STEP_EXTRA.get(kind, set())
    if kind == "wait":
        allowed -= {"expect", "channel"}
    unknown = set(raw) - allowed
    if unknown:
        raise ScenarioError(f"{where}: unknown keys {sorted(unknown)} for a {kind} step")
    step = Step(kind=kind)
    _target(step, kind, raw[kind], raw, where)
    if "options" in raw:
        if not isinstance(raw["options"], dict):
            raise ScenarioError(f"{where}.options: expected a mapping")
        step.options = dict(raw["options"])
    if kind == "autocomplete":
        if "option" not in raw:
            raise ScenarioError(f"{where}: autocomplete needs option: (the focused option name)")
        step.option = str(raw["option"])
        step.value = raw.get("value", "")
    if kind in ("user_command", "message_command") and "target" in raw:
        step.options = {"target": raw["target"]}
    step.attachments = _attachments(raw.get("attachments"), where + ".")
    if "expect_reply" in raw:
        step.expect_reply = bool(raw["expect_reply"])
    if "channel" in raw:
        step.channel = str(raw["channel"]).lstrip("#")
    if "timeout_s" in raw:
        step.timeout_s = num(raw, "timeout_s", None, where + ".", minimum=0.01)
    if "expect" in raw:
        step.expect = expectations.parse(raw["expect"], where + ".expect")
        if kind == "message" and not step.expect_reply and step.expect.status is None:
            raise ScenarioError(f"{where}: expect: needs a reply (expect_reply: false says none comes)")
    if kind == "wait":
        step.expect = expectations.parse(raw["match"], where + ".match", wait=True) if "match" in raw else None
    if "name" in raw:
        step.name = str(raw["name"])
    step.default_name()
    return step


def _steps(raw: Any, where: str, channel: Optional[str]) -> List[Step]:
    if not isinstance(raw, list) or not raw:
        raise ScenarioError(f"{where}: expected a non-empty list of steps")
    steps = [parse_step(s, f"{where}[{j}]") for j, s in enumerate(raw)]
    for j, s in enumerate(steps):
        if channel and s.kind != "wait":
            s.channel = s.channel or channel
        if s.kind in ("button", "select", "modal") and j == 0:
            raise ScenarioError(f"{where}[0]: a {s.kind} step needs a previous step (a command, or a wait "
                                "for the message that carries it)")
    return steps


def parse_mix(raw: Any) -> List[Flow]:
    if not isinstance(raw, list) or not raw:
        raise ScenarioError("mix: expected a non-empty list of steps or flows")
    flows = []
    for i, item in enumerate(raw):
        where = f"mix[{i}]"
        if isinstance(item, dict) and ("steps" in item or "actors" in item):
            unknown = set(item) - {"steps", "actors", "weight", "name", "channel"}
            if unknown or ("steps" in item and "actors" in item):
                raise ScenarioError(f"{where}: a flow has steps: or actors: (not both), weight, name, channel; "
                                    f"got {sorted(item)}")
            channel = str(item["channel"]).lstrip("#") if item.get("channel") else None
            if "steps" in item:
                actors = [Actor("", _steps(item["steps"], f"{where}.steps", channel))]
            else:
                if not isinstance(item["actors"], dict) or not item["actors"]:
                    raise ScenarioError(f"{where}.actors: expected a mapping of actor name -> steps")
                actors = [Actor(str(name), _steps(steps, f"{where}.actors.{name}", channel))
                          for name, steps in item["actors"].items()]
            steps = [s for a in actors for s in a.steps]
            name = str(item.get("name") or " > ".join(s.name for s in steps))
        else:
            step = parse_step(item, where)
            if step.kind in ("button", "select", "modal", "wait"):
                raise ScenarioError(f"{where}: a {step.kind} step needs a previous step: put both in a flow's steps:")
            actors, name = [Actor("", [step])], step.name
        weight = num(item if isinstance(item, dict) else {}, "weight", 1, where + ".")
        if weight <= 0:
            raise ScenarioError(f"{where}.weight: must be > 0")
        flows.append(Flow(name=name, weight=weight, actors=actors))
    return flows


def check_places(flows: List[Flow], channel_names: set, user_names: set) -> None:
    """Every channel a step names exists (or is dm); every wait's place too; mentions name known users."""
    for flow in flows:
        actor_names = {a.name for a in flow.actors}
        for s in flow.steps:
            if s.channel and s.channel != DM and s.channel not in channel_names:
                raise ScenarioError(f"flow {flow.name!r}: unknown channel {s.channel!r}")
            if s.kind == "wait" and s.target not in (DM, ANYWHERE) and s.target not in channel_names:
                raise ScenarioError(f"flow {flow.name!r}: wait: unknown place {s.target!r} (dm, any or a channel)")
            mention = s.expect.mentions if s.expect is not None else None
            if mention is not None and mention not in ("me", "bot") and mention not in actor_names | user_names:
                raise ScenarioError(f"flow {flow.name!r}: mentions: {mention!r} is not me, bot, an actor or a user")
