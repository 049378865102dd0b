"""Loading a scenario (YAML path, YAML text, dict): top-level keys, users, guilds, rate limits, HTTP answers.

    seed: 42
    duration_s: 10          # start flows for this long
    rate: 5                 # flows started per second overall   (or: think_time_s: 2 per user)
    users: 5                # or a list: [{id: 111, name: alice}, bob, ...]
    mix: [...]              # flows (scenario_steps.py)

See docs/discord_sim.md for every key.
"""
from __future__ import annotations

import os
from typing import Any, List, Union

import orjson

from .scenario import ChannelSpec, ForcedRateLimit, GuildSpec, HttpRule, Scenario, ScenarioError, UserSpec
from .scenario_steps import check_places, num, parse_mix, read_file

__all__ = ["load_scenario"]

_TOP_KEYS = {
    "seed", "duration_s", "rate", "think_time_s", "grace_s", "step_timeout_s", "final_timeout_s", "warmup_s",
    "sync_timeout_s", "step_gap_s", "late_window_s", "max_flows", "mix_order", "users", "guilds", "mix",
    "rate_limits", "bot", "heartbeat_interval_ms", "http", "wait_timeout_s",
}


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
        if any(c.name == "dm" for c in chans):
            raise ScenarioError(f"guilds[{i}].channels: 'dm' is reserved for direct messages")
        out.append(GuildSpec(id=gid, name=str(g.get("name", f"guild{i + 1}")), channels=chans))
    return out


def _rate_limits(raw: Any, scn: Scenario) -> None:
    if raw is None:
        return
    if not isinstance(raw, dict):
        raise ScenarioError("rate_limits: expected a mapping")
    unknown = set(raw) - {"limit", "window_s", "force_429"}
    if unknown:
        raise ScenarioError(f"rate_limits: unknown keys {sorted(unknown)}")
    scn.ratelimit_limit = num(raw, "limit", 50, "rate_limits.", minimum=1, integer=True)
    scn.ratelimit_window_s = num(raw, "window_s", 1.0, "rate_limits.", minimum=0.001)
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
            retry_after=num(f, "retry_after", 0.05, where), is_global=bool(f.get("global", False))))


def _http(raw: Any) -> List[HttpRule]:
    """``http:`` rules: static answers for the bot's HTTP to other hosts (everything else gets a 404)."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ScenarioError("http: expected a list of {host, path, status, json | body | file}")
    rules = []
    for i, r in enumerate(raw):
        where = f"http[{i}]"
        if not isinstance(r, dict) or not r.get("host"):
            raise ScenarioError(f"{where}: expected a mapping with host:")
        unknown = set(r) - {"host", "path", "method", "status", "json", "body", "file", "content_type", "headers"}
        if unknown:
            raise ScenarioError(f"{where}: unknown keys {sorted(unknown)}")
        given = [k for k in ("json", "body", "file") if k in r]
        if len(given) > 1:
            raise ScenarioError(f"{where}: give one of json, body, file (got {given})")
        rule = HttpRule(host=str(r["host"]).lower(), path=str(r.get("path", "*")),
                        method=str(r["method"]).upper() if r.get("method") else None,
                        status=num(r, "status", 200, where + ".", minimum=100, integer=True))
        if "json" in r:
            rule.body, rule.content_type = orjson.dumps(r["json"]), "application/json"
        elif "body" in r:
            rule.body, rule.content_type = str(r["body"]).encode(), "text/plain; charset=utf-8"
        elif "file" in r:
            rule.body = read_file(r["file"], where + ".file")
        rule.content_type = str(r.get("content_type", rule.content_type))
        headers = r.get("headers") or {}
        if not isinstance(headers, dict):
            raise ScenarioError(f"{where}.headers: expected a mapping")
        rule.headers = {str(k): str(v) for k, v in headers.items()}
        rules.append(rule)
    return rules


def _read(source: Union[str, os.PathLike, dict]) -> tuple:
    if isinstance(source, dict):
        return source, None
    import yaml

    path = None
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
    return data, path


def load_scenario(source: Union[str, os.PathLike, dict, Scenario]) -> Scenario:
    """Load and validate a scenario from a YAML file path, a YAML string, a dict or a Scenario."""
    if isinstance(source, Scenario):
        return source
    data, path = _read(source)
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise ScenarioError(f"unknown top-level keys {sorted(unknown)}")
    scn = Scenario(source=path)
    scn.seed = num(data, "seed", 0, "", minimum=-(2 ** 63), integer=True)
    scn.duration_s = num(data, "duration_s", 10.0, "", minimum=0.0)
    scn.rate = num(data, "rate", None, "", minimum=0.0)
    scn.think_time_s = num(data, "think_time_s", None, "", minimum=0.0)
    if scn.rate is None and scn.think_time_s is None:
        scn.rate = 1.0
    if scn.rate is not None and scn.think_time_s is not None:
        raise ScenarioError("rate and think_time_s are exclusive: give one")
    if scn.rate is not None and scn.rate <= 0:
        raise ScenarioError("rate: must be > 0")
    scn.grace_s = num(data, "grace_s", 5.0, "")
    scn.step_timeout_s = num(data, "step_timeout_s", 3.0, "", minimum=0.01)
    scn.final_timeout_s = num(data, "final_timeout_s", 15.0, "", minimum=0.01)
    scn.wait_timeout_s = num(data, "wait_timeout_s", 30.0, "", minimum=0.01)
    scn.warmup_s = num(data, "warmup_s", 2.5, "")
    scn.sync_timeout_s = num(data, "sync_timeout_s", 10.0, "")
    scn.step_gap_s = num(data, "step_gap_s", 0.25, "")
    scn.late_window_s = num(data, "late_window_s", 1.0, "")
    scn.mix_order = str(data.get("mix_order", "random"))
    if scn.mix_order not in ("random", "round_robin"):
        raise ScenarioError("mix_order: expected random or round_robin")
    scn.max_flows = num(data, "max_flows", None, "", minimum=1, integer=True)
    scn.heartbeat_interval_ms = num(data, "heartbeat_interval_ms", 41250, "", minimum=100, integer=True)
    scn.users = _users(data.get("users"))
    scn.guilds = _guilds(data.get("guilds"))
    scn.mix = parse_mix(data.get("mix"))
    _rate_limits(data.get("rate_limits"), scn)
    scn.http = _http(data.get("http"))
    bot = data.get("bot") or {}
    if not isinstance(bot, dict) or set(bot) - {"id", "name"}:
        raise ScenarioError("bot: expected a mapping with id/name")
    if "id" in bot:
        scn.bot_id = num(bot, "id", scn.bot_id, "bot.", minimum=1, integer=True)
    scn.bot_name = str(bot.get("name", scn.bot_name))
    check_places(scn.mix, {c.name for g in scn.guilds for c in g.channels}, {u.name for u in scn.users})
    for flow in scn.mix:
        if len(flow.actors) > len(scn.users):
            raise ScenarioError(f"flow {flow.name!r}: {len(flow.actors)} actors but only {len(scn.users)} users")
    return scn
