"""A scenario's data: who talks to the bot, for how long and how fast, what they do and expect.

``scenario_file.load_scenario`` reads and validates one (a YAML path, YAML text or a dict); every key
is documented in docs/discord_sim.md. A flow is played by one user, or by several *actors* at once
(each with its own steps, e.g. two players of one match); a step may carry an ``expect:``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

__all__ = ["Scenario", "Step", "Flow", "Actor", "Expectation", "HttpRule", "UserSpec", "GuildSpec",
           "ChannelSpec", "AttachmentSpec", "ForcedRateLimit", "ScenarioError", "STEP_KINDS", "DM"]

STEP_KINDS = ("command", "button", "select", "modal", "message", "user_command", "message_command",
              "autocomplete", "wait")
INTERACTION_KINDS = ("command", "button", "select", "modal", "user_command", "message_command", "autocomplete")
COMMAND_KINDS = ("command", "user_command", "message_command", "autocomplete")
DM = "dm"          # as a channel name: the user's direct messages with the bot
ANYWHERE = "any"   # as a wait's place: any channel or DM this user can see


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
class Expectation:
    """What a step's response (or the message a wait looks for) must be. Unset fields are not checked."""
    content: Optional[str] = None                  # contained in the content
    content_matches: Optional[re.Pattern] = None   # re.search on the content
    embed_title: Optional[str] = None
    embed_title_matches: Optional[re.Pattern] = None
    embed_description: Optional[str] = None
    embed_description_matches: Optional[re.Pattern] = None
    components: Optional[List[str]] = None         # labels / custom ids / placeholders present ([] = none)
    mentions: Optional[str] = None                 # "me", a user's or an actor's name: the message mentions them
    ephemeral: Optional[bool] = None
    modal: Any = None                              # True / False, or the modal's title or custom_id
    status: Optional[str] = None                   # ok | timeout | error: how the step must end

    def message_keys(self) -> bool:
        """True when some field is about the content of a message (not the ack / modal / status)."""
        return any(v is not None for v in (
            self.content, self.content_matches, self.embed_title, self.embed_title_matches, self.embed_description,
            self.embed_description_matches, self.components, self.mentions))


@dataclass
class Step:
    kind: str
    target: str = ""                       # command name / button label or custom_id / select / message text / wait place
    options: Dict[str, Any] = field(default_factory=dict)
    values: List[str] = field(default_factory=list)      # select values
    fields: Dict[str, str] = field(default_factory=dict)  # modal field values
    attachments: List[AttachmentSpec] = field(default_factory=list)
    option: Optional[str] = None           # autocomplete: the focused option
    value: Any = None                      # autocomplete: the typed value
    channel: Optional[str] = None          # channel name or "dm" (default: the flow's channel)
    expect_reply: bool = True              # message steps: a missing reply counts as a timeout
    timeout_s: Optional[float] = None      # response deadline (default scenario.step_timeout_s)
    expect: Optional[Expectation] = None   # what the response must be (a wait: what it waits for)
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
class Actor:
    """One user's part of a flow: steps played in order. A one-user flow has a single actor named ""."""
    name: str
    steps: List[Step]


@dataclass
class Flow:
    name: str
    weight: float
    actors: List[Actor]

    @property
    def steps(self) -> List[Step]:
        """Every step of every actor (one-user flows: the flow's steps in order)."""
        return [s for a in self.actors for s in a.steps]


@dataclass
class ForcedRateLimit:
    route: str                 # "POST /channels/{channel_id}/messages" (template, as recorded)
    nth: List[int]             # 1-based call numbers (per route) answered with 429
    retry_after: float = 0.05
    is_global: bool = False


@dataclass
class HttpRule:
    """A static answer for HTTP the bot sends elsewhere than Discord (matched by host, path, method)."""
    host: str                  # exact host, or an fnmatch pattern ("*.example.com"); "host:port" for other ports
    path: str = "*"            # fnmatch pattern on the path (no query string)
    method: Optional[str] = None
    status: int = 200
    body: bytes = b""
    content_type: str = "application/octet-stream"
    headers: Dict[str, str] = field(default_factory=dict)


@dataclass
class Scenario:
    seed: int = 0
    duration_s: float = 10.0
    rate: Optional[float] = None
    think_time_s: Optional[float] = None
    grace_s: float = 5.0
    step_timeout_s: float = 3.0
    final_timeout_s: float = 15.0
    wait_timeout_s: float = 30.0
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
    http: List[HttpRule] = field(default_factory=list)
    bot_id: int = 900000000000000001
    bot_name: str = "autoperf-bot"
    heartbeat_interval_ms: int = 41250
    source: Optional[str] = None

    def user_named(self, name: str) -> Optional[UserSpec]:
        for u in self.users:
            if u.name == name:
                return u
        return None
