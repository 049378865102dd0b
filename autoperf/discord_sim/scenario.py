"""Scenario files for the loopback Discord simulator.

A scenario says who talks to the bot (users, guilds, channels), for how long and how fast, and what
they do (a weighted mix of flows; a flow is one step or a list of steps played in order by one user).

    seed: 42
    duration_s: 10          # start flows for this long
    rate: 5                 # flows started per second overall   (or: think_time_s: 2 per user)
    users: 5                # or a list: [{id: 111, name: alice}, ...]
    guilds:
      - name: ladder
        channels: [general, matches]
    mix:
      - command: leaderboard
        options: {page: 2}
        weight: 3
      - weight: 1
        steps:
          - command: ladder join          # "group sub" or "group subgroup sub"
          - button: Accept                # label or custom_id on the view the previous step sent
          - select: map
            values: [dust2]
          - modal: {reason: gg}           # field values (by custom_id or label) for the modal it opened
      - message: "!report"
        attachments: [{filename: replay.txt, size: 2048}]
      - user_command: Show stats
      - message_command: Quote
      - autocomplete: leaderboard
        option: player
        value: ab

See docs/discord_sim.md for every key.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Union

__all__ = ["Scenario", "Step", "Flow", "UserSpec", "GuildSpec", "ForcedRateLimit", "ScenarioError", "load_scenario"]

STEP_KINDS = ("command", "button", "select", "modal", "message", "user_command", "message_command", "autocomplete")


class ScenarioError(ValueError):
    """The scenario file is invalid; the message names the offending key."""


@dataclass
class UserSpec:
    id: int
    name: str


@dataclass
class ChannelSpec:
    id: int
    name: str


@dataclass
class GuildSpec:
    id: int
    name: str
    channels: List[ChannelSpec]


@dataclass
class AttachmentSpec:
    filename: str
    size: int = 1024
    content: Optional[bytes] = None
    content_type: Optional[str] = None

    def data(self, seed: int = 0) -> bytes:
        if self.content is not None:
            return self.content
        pattern = f"autoperf-discord-sim {self.filename} {seed}\n".encode()
        reps = self.size // len(pattern) + 1
        return (pattern * reps)[: self.size]


@dataclass
class Step:
    kind: str
    target: str = ""                       # command name / button label or custom_id / select / message text
    options: Dict[str, Any] = field(default_factory=dict)
    values: List[str] = field(default_factory=list)      # select values
    fields: Dict[str, str] = field(default_factory=dict)  # modal field values
    attachments: List[AttachmentSpec] = field(default_factory=list)
    option: Optional[str] = None           # autocomplete: the focused option
    value: Any = None                      # autocomplete: the typed value
    channel: Optional[str] = None          # channel name (default: the flow's channel)
    expect_reply: bool = True              # message steps: a missing reply counts as a timeout
    timeout_s: Optional[float] = None      # first response deadline (default scenario.step_timeout_s)
    name: str = ""                         # report key

    def default_name(self) -> None:
        if not self.name:
            if self.kind == "command":
                self.name = "/" + self.target
            elif self.kind == "message":
                text = self.target.split()[0] if self.target.split() else "message"
                self.name = "message:" + text[:40]
            else:
                self.name = f"{self.kind}:{self.target}" if self.target else self.kind


@dataclass
class Flow:
    name: str
    weight: float
    steps: List[Step]


@dataclass
class ForcedRateLimit:
    route: str                 # "POST /channels/{channel_id}/messages" (template, as recorded)
    nth: List[int]             # 1-based call numbers (per route) answered with 429
    retry_after: float = 0.05
    is_global: bool = False


@dataclass
class Scenario:
    seed: int = 0
    duration_s: float = 10.0
    rate: Optional[float] = None
    think_time_s: Optional[float] = None
    grace_s: float = 5.0
    step_timeout_s: float = 3.0
    final_timeout_s: float = 15.0
    warmup_s: float = 2.5
    step_gap_s: float = 0.25
    late_window_s: float = 1.0
    sync_timeout_s: float = 10.0
    max_flows: Optional[int] = None
    mix_order: str = "random"             # random (weighted) | round_robin (each flow in turn)
    users: List[UserSpec] = field(default_factory=list)
    guilds: List[GuildSpec] = field(default_factory=list)
    mix: List[Flow] = field(default_factory=list)
    ratelimit_limit: int = 50
    ratelimit_window_s: float = 1.0
    force_429: List[ForcedRateLimit] = field(default_factory=list)
    bot_id: int = 900000000000000001
    bot_name: str = "autoperf-bot"
    heartbeat_interval_ms: int = 41250
    source: Optional[str] = None


_TOP_KEYS = {
    "seed", "duration_s", "rate", "think_time_s", "grace_s", "step_timeout_s", "final_timeout_s", "warmup_s",
    "sync_timeout_s", "step_gap_s", "late_window_s", "max_flows", "mix_order", "users", "guilds", "mix", "rate_limits", "bot", "heartbeat_interval_ms",
}


def _num(data: dict, key: str, default: Any, where: str, *, minimum: float = 0.0, integer: bool = False) -> Any:
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


def _users(raw: Any) -> List[UserSpec]:
    if raw is None:
        raw = 3
    if isinstance(raw, bool):
        raise ScenarioError("users: expected a count or a list")
    if isinstance(raw, int):
        if raw < 1 or raw > 100000:
            raise ScenarioError("users: count must be between 1 and 100000")
        return [UserSpec(id=800000000000000000 + i + 1, name=f"user{i + 1}") for i in range(raw)]
    if not isinstance(raw, list) or not raw:
        raise ScenarioError("users: expected a count or a non-empty list")
    out = []
    for i, item in enumerate(raw):
        if isinstance(item, str):
            out.append(UserSpec(id=800000000000000000 + i + 1, name=item))
        elif isinstance(item, dict):
            unknown = set(item) - {"id", "name"}
            if unknown:
                raise ScenarioError(f"users[{i}]: unknown keys {sorted(unknown)}")
            uid = item.get("id", 800000000000000000 + i + 1)
            if isinstance(uid, bool) or not isinstance(uid, int) or uid <= 0:
                raise ScenarioError(f"users[{i}].id: expected a positive integer")
            out.append(UserSpec(id=uid, name=str(item.get("name", f"user{i + 1}"))))
        else:
            raise ScenarioError(f"users[{i}]: expected a name or a mapping with id/name")
    ids = [u.id for u in out]
    if len(set(ids)) != len(ids):
        raise ScenarioError("users: duplicate ids")
    return out


def _guilds(raw: Any) -> List[GuildSpec]:
    if raw is None:
        raw = [{"name": "sim-guild", "channels": ["general"]}]
    if not isinstance(raw, list) or not raw:
        raise ScenarioError("guilds: expected a non-empty list")
    out = []
    next_channel = 700000000000000001
    for i, g in enumerate(raw):
        if isinstance(g, str):
            g = {"name": g}
        if not isinstance(g, dict):
            raise ScenarioError(f"guilds[{i}]: expected a mapping")
        unknown = set(g) - {"id", "name", "channels"}
        if unknown:
            raise ScenarioError(f"guilds[{i}]: unknown keys {sorted(unknown)}")
        gid = g.get("id", 600000000000000000 + i + 1)
        if isinstance(gid, bool) or not isinstance(gid, int) or gid <= 0:
            raise ScenarioError(f"guilds[{i}].id: expected a positive integer")
        chans_raw = g.get("channels", ["general"])
        if not isinstance(chans_raw, list) or not chans_raw:
            raise ScenarioError(f"guilds[{i}].channels: expected a non-empty list")
        chans = []
        for j, c in enumerate(chans_raw):
            if isinstance(c, str):
                chans.append(ChannelSpec(id=next_channel, name=c))
                next_channel += 1
            elif isinstance(c, dict) and "name" in c:
                cid = c.get("id")
                if cid is None:
                    cid = next_channel
                    next_channel += 1
                if isinstance(cid, bool) or not isinstance(cid, int) or cid <= 0:
                    raise ScenarioError(f"guilds[{i}].channels[{j}].id: expected a positive integer")
                chans.append(ChannelSpec(id=cid, name=str(c["name"])))
            else:
                raise ScenarioError(f"guilds[{i}].channels[{j}]: expected a name or {{id, name}}")
        out.append(GuildSpec(id=gid, name=str(g.get("name", f"guild{i + 1}")), channels=chans))
    return out


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
            try:
                with open(os.path.expanduser(str(a["path"])), "rb") as fh:
                    content = fh.read()
            except OSError as exc:
                raise ScenarioError(f"{where}attachments[{i}].path: {exc}") from None
        elif "content" in a:
            content = a["content"].encode() if isinstance(a["content"], str) else bytes(a["content"])
        size = _num(a, "size", len(content) if content is not None else 1024, f"{where}attachments[{i}].",
                    integer=True)
        out.append(AttachmentSpec(filename=str(a["filename"]), size=size, content=content,
                                  content_type=a.get("content_type")))
    return out


_STEP_COMMON = {"weight", "name", "channel", "timeout_s"}


def _step(raw: Any, where: str) -> Step:
    if isinstance(raw, str):
        raw = {"command": raw}
    if not isinstance(raw, dict):
        raise ScenarioError(f"{where}: expected a mapping")
    kinds = [k for k in STEP_KINDS if k in raw]
    if len(kinds) != 1:
        raise ScenarioError(f"{where}: exactly one of {', '.join(STEP_KINDS)} is required, got {kinds or 'none'}")
    kind = kinds[0]
    allowed = _STEP_COMMON | {kind}
    if kind == "command":
        allowed |= {"options"}
    elif kind == "select":
        allowed |= {"values"}
    elif kind == "modal":
        allowed |= {"fields"}
    elif kind == "message":
        allowed |= {"attachments", "expect_reply"}
    elif kind == "autocomplete":
        allowed |= {"option", "value", "options"}
    elif kind == "message_command":
        allowed |= {"target"}
    elif kind == "user_command":
        allowed |= {"target"}
    unknown = set(raw) - allowed
    if unknown:
        raise ScenarioError(f"{where}: unknown keys {sorted(unknown)} for a {kind} step")
    value = raw[kind]
    step = Step(kind=kind)
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
    else:
        if not isinstance(value, str) or (not value.strip() and kind != "message"):
            raise ScenarioError(f"{where}.{kind}: expected a non-empty string")
        step.target = value.strip() if kind != "message" else value
        if kind in ("command", "autocomplete"):
            step.target = " ".join(value.strip().lstrip("/").split())
            if len(step.target.split()) > 3:
                raise ScenarioError(f"{where}.{kind}: at most 'group subgroup subcommand'")
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
        step.channel = str(raw["channel"])
    if "timeout_s" in raw:
        step.timeout_s = _num(raw, "timeout_s", None, where + ".", minimum=0.01)
    if "name" in raw:
        step.name = str(raw["name"])
    step.default_name()
    return step


def _mix(raw: Any) -> List[Flow]:
    if not isinstance(raw, list) or not raw:
        raise ScenarioError("mix: expected a non-empty list of steps or flows")
    flows = []
    for i, item in enumerate(raw):
        where = f"mix[{i}]"
        if isinstance(item, dict) and "steps" in item:
            unknown = set(item) - {"steps", "weight", "name", "channel"}
            if unknown:
                raise ScenarioError(f"{where}: unknown keys {sorted(unknown)} for a flow")
            steps_raw = item["steps"]
            if not isinstance(steps_raw, list) or not steps_raw:
                raise ScenarioError(f"{where}.steps: expected a non-empty list")
            steps = [_step(s, f"{where}.steps[{j}]") for j, s in enumerate(steps_raw)]
            if item.get("channel"):
                for s in steps:
                    s.channel = s.channel or str(item["channel"])
            name = str(item.get("name") or " > ".join(s.name for s in steps))
        else:
            step = _step(item, where)
            steps = [step]
            name = step.name
        weight = _num(item if isinstance(item, dict) else {}, "weight", 1, where + ".")
        if weight <= 0:
            raise ScenarioError(f"{where}.weight: must be > 0")
        for j, s in enumerate(steps):
            if s.kind in ("button", "select", "modal") and j == 0:
                raise ScenarioError(f"{where}: a {s.kind} step needs a previous step whose response carries it")
        flows.append(Flow(name=name, weight=weight, steps=steps))
    return flows


def _rate_limits(raw: Any, scn: Scenario) -> None:
    if raw is None:
        return
    if not isinstance(raw, dict):
        raise ScenarioError("rate_limits: expected a mapping")
    unknown = set(raw) - {"limit", "window_s", "force_429"}
    if unknown:
        raise ScenarioError(f"rate_limits: unknown keys {sorted(unknown)}")
    scn.ratelimit_limit = _num(raw, "limit", 50, "rate_limits.", minimum=1, integer=True)
    scn.ratelimit_window_s = _num(raw, "window_s", 1.0, "rate_limits.", minimum=0.001)
    forced = raw.get("force_429", [])
    if not isinstance(forced, list):
        raise ScenarioError("rate_limits.force_429: expected a list")
    for i, f in enumerate(forced):
        where = f"rate_limits.force_429[{i}]."
        if not isinstance(f, dict) or "route" not in f:
            raise ScenarioError(f"{where[:-1]}: expected {{route, nth, retry_after}}")
        unknown = set(f) - {"route", "nth", "retry_after", "global"}
        if unknown:
            raise ScenarioError(f"{where[:-1]}: unknown keys {sorted(unknown)}")
        route = " ".join(str(f["route"]).split())
        if len(route.split(" ")) != 2:
            raise ScenarioError(f"{where}route: expected 'METHOD /path/{{template}}'")
        method, path = route.split(" ")
        nth = f.get("nth", 1)
        nth_list = nth if isinstance(nth, list) else [nth]
        if not nth_list or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in nth_list):
            raise ScenarioError(f"{where}nth: expected a positive integer or a list of them")
        scn.force_429.append(ForcedRateLimit(
            route=f"{method.upper()} {path}", nth=sorted(set(nth_list)),
            retry_after=_num(f, "retry_after", 0.05, where), is_global=bool(f.get("global", False))))


def load_scenario(source: Union[str, os.PathLike, dict, Scenario]) -> Scenario:
    """Load and validate a scenario from a YAML file path, a YAML string, a dict or a Scenario."""
    if isinstance(source, Scenario):
        return source
    path = None
    if isinstance(source, dict):
        data = source
    else:
        import yaml

        text = str(source)
        if isinstance(source, os.PathLike) or ("\n" not in text and os.path.exists(text)):
            path = os.fspath(source)
            with open(path, "r", encoding="utf-8") as fh:
                text = fh.read()
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ScenarioError(f"invalid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ScenarioError("a scenario must be a YAML mapping")
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise ScenarioError(f"unknown top-level keys {sorted(unknown)}")
    scn = Scenario(source=path)
    scn.seed = _num(data, "seed", 0, "", minimum=-(2 ** 63), integer=True)
    scn.duration_s = _num(data, "duration_s", 10.0, "", minimum=0.0)
    scn.rate = _num(data, "rate", None, "", minimum=0.0)
    scn.think_time_s = _num(data, "think_time_s", None, "", minimum=0.0)
    if scn.rate is None and scn.think_time_s is None:
        scn.rate = 1.0
    if scn.rate is not None and scn.think_time_s is not None:
        raise ScenarioError("rate and think_time_s are exclusive: give one")
    if scn.rate is not None and scn.rate <= 0:
        raise ScenarioError("rate: must be > 0")
    scn.grace_s = _num(data, "grace_s", 5.0, "")
    scn.step_timeout_s = _num(data, "step_timeout_s", 3.0, "", minimum=0.01)
    scn.final_timeout_s = _num(data, "final_timeout_s", 15.0, "", minimum=0.01)
    scn.warmup_s = _num(data, "warmup_s", 2.5, "")
    scn.sync_timeout_s = _num(data, "sync_timeout_s", 10.0, "")
    scn.step_gap_s = _num(data, "step_gap_s", 0.25, "")
    scn.late_window_s = _num(data, "late_window_s", 1.0, "")
    scn.mix_order = str(data.get("mix_order", "random"))
    if scn.mix_order not in ("random", "round_robin"):
        raise ScenarioError("mix_order: expected random or round_robin")
    scn.max_flows = _num(data, "max_flows", None, "", minimum=1, integer=True)
    scn.heartbeat_interval_ms = _num(data, "heartbeat_interval_ms", 41250, "", minimum=100, integer=True)
    scn.users = _users(data.get("users"))
    scn.guilds = _guilds(data.get("guilds"))
    scn.mix = _mix(data.get("mix"))
    _rate_limits(data.get("rate_limits"), scn)
    bot = data.get("bot") or {}
    if not isinstance(bot, dict) or set(bot) - {"id", "name"}:
        raise ScenarioError("bot: expected a mapping with id/name")
    if "id" in bot:
        scn.bot_id = _num(bot, "id", scn.bot_id, "bot.", minimum=1, integer=True)
    scn.bot_name = str(bot.get("name", scn.bot_name))
    channel_names = {c.name for g in scn.guilds for c in g.channels}
    for flow in scn.mix:
        for s in flow.steps:
            if s.channel and s.channel not in channel_names:
                raise ScenarioError(f"flow {flow.name!r}: unknown channel {s.channel!r}")
    return scn
