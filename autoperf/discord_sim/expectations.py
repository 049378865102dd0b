"""Expectations: what a step's response must be (``expect:``), or which message a wait looks for (``match:``).

    expect: {content: queued, ephemeral: true}            # the step fails, saying what came instead
    match: {content_matches: "Match #\\d+", components: [Confirm]}

One vocabulary for both; ``parse`` reads it from the scenario, ``unmet`` checks a response and
``matches`` one message. Text keys are case-sensitive; ``*_matches`` are regular expressions (re.search).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional

from .scenario import Expectation, ScenarioError

_TEXT = ("content", "embed_title", "embed_description")
_MESSAGE_KEYS = {*_TEXT, *(k + "_matches" for k in _TEXT), "components", "mentions"}
_STEP_KEYS = _MESSAGE_KEYS | {"ephemeral", "modal", "status"}
STATUSES = ("ok", "timeout", "error")


def parse(raw: Any, where: str, *, wait: bool = False) -> Expectation:
    """An ``expect:`` (or, with wait=True, a ``match:``) mapping -> Expectation; ScenarioError names the key."""
    if isinstance(raw, str):
        raw = {"content": raw}
    if not isinstance(raw, dict) or not raw:
        raise ScenarioError(f"{where}: expected a mapping such as {{content: ...}}")
    allowed = _MESSAGE_KEYS if wait else _STEP_KEYS
    unknown = set(raw) - allowed
    if unknown:
        raise ScenarioError(f"{where}: unknown keys {sorted(unknown)} (known: {sorted(allowed)})")
    exp = Expectation()
    for key in _TEXT:
        if key in raw:
            setattr(exp, key, _text(raw[key], f"{where}.{key}"))
        if key + "_matches" in raw:
            pattern = _text(raw[key + "_matches"], f"{where}.{key}_matches")
            try:
                setattr(exp, key + "_matches", re.compile(pattern))
            except re.error as exc:
                raise ScenarioError(f"{where}.{key}_matches: invalid regular expression: {exc}") from None
    if "components" in raw:
        comps = raw["components"]
        if comps is False or comps == []:
            exp.components = []
        elif isinstance(comps, (str, list)) and comps:
            exp.components = [str(c) for c in (comps if isinstance(comps, list) else [comps])]
        else:
            raise ScenarioError(f"{where}.components: expected a label / custom_id or a list of them (false: none)")
    if "mentions" in raw:
        exp.mentions = _text(raw["mentions"], f"{where}.mentions").lstrip("@")
    if "ephemeral" in raw:
        if not isinstance(raw["ephemeral"], bool):
            raise ScenarioError(f"{where}.ephemeral: expected true or false")
        exp.ephemeral = raw["ephemeral"]
    if "modal" in raw:
        if not isinstance(raw["modal"], (bool, str)):
            raise ScenarioError(f"{where}.modal: expected true / false or the modal's title or custom_id")
        exp.modal = raw["modal"]
    if "status" in raw:
        if raw["status"] not in STATUSES:
            raise ScenarioError(f"{where}.status: expected one of {', '.join(STATUSES)}")
        exp.status = raw["status"]
    return exp


def _text(value: Any, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)) or str(value) == "":
        raise ScenarioError(f"{where}: expected non-empty text")
    return str(value)


@dataclass
class Response:
    """What a step got back, as its user sees it when checked."""
    messages: List[Dict[str, Any]] = field(default_factory=list)   # current state, responses first
    ephemeral: Optional[bool] = None     # the first response message's ephemeral flag
    modal: Optional[Dict[str, Any]] = None


def _embeds(msg: Dict[str, Any]) -> Iterator[Dict[str, Any]]:
    return (e for e in msg.get("embeds") or () if isinstance(e, dict))


def _components(components: Any) -> Iterator[Dict[str, Any]]:
    """Every component of a message, nested rows, sections and labels included."""
    stack = list(components or [])
    while stack:
        c = stack.pop(0)
        if not isinstance(c, dict):
            continue
        yield c
        stack.extend(c.get("components") or [])
        stack.extend(c[key] for key in ("accessory", "component") if isinstance(c.get(key), dict))


def component_names(components: Any) -> List[str]:
    """Labels, custom ids and placeholders of every component in a message: what ``components:`` matches."""
    return [str(c[key]) for c in _components(components) for key in ("label", "custom_id", "placeholder") if c.get(key)]


def _shown_names(components: Any) -> List[str]:
    """One name per component as a user sees it: its label or placeholder (else its custom id)."""
    return [str(c.get("label") or c.get("placeholder") or c["custom_id"]) for c in _components(components)
            if c.get("label") or c.get("placeholder") or c.get("custom_id")]


def _text_ok(text: str, contains: Optional[str], pattern: Optional[re.Pattern]) -> bool:
    return (contains is None or contains in text) and (pattern is None or pattern.search(text) is not None)


def matches(exp: Expectation, msg: Dict[str, Any], mention_id: Optional[int] = None) -> bool:
    """True when the message satisfies every message key of ``exp`` (mention_id: whom ``mentions`` names)."""
    if not _text_ok(msg.get("content") or "", exp.content, exp.content_matches):
        return False
    for key in ("title", "description"):
        contains, pattern = getattr(exp, "embed_" + key), getattr(exp, f"embed_{key}_matches")
        if (contains is not None or pattern is not None) and not any(
                _text_ok(e.get(key) or "", contains, pattern) for e in _embeds(msg)):
            return False
    if exp.components is not None:
        names = component_names(msg.get("components"))
        if (not exp.components and names) or any(c not in names for c in exp.components):
            return False
    if exp.mentions is not None:
        ids = {str(u.get("id")) for u in msg.get("mentions") or () if isinstance(u, dict)}
        if str(mention_id) not in ids and f"<@{mention_id}>" not in (msg.get("content") or ""):
            return False
    return True


def unmet(exp: Expectation, resp: Response, mention_id: Optional[int] = None) -> Optional[str]:
    """None when the response meets ``exp``; else what was expected and what came instead."""
    if exp.modal is not None:
        opened = resp.modal is not None
        if exp.modal is False and opened:
            return f"expected no modal; got modal {resp.modal.get('title')!r}"
        if exp.modal is not False and not opened:
            return f"expected a modal; got {describe_all(resp.messages)}"
        if isinstance(exp.modal, str) and opened and exp.modal not in (resp.modal.get("title"), resp.modal.get("custom_id")):
            return f"expected modal {exp.modal!r}; got modal {resp.modal.get('title')!r} ({resp.modal.get('custom_id')!r})"
    if exp.ephemeral is not None and exp.ephemeral != resp.ephemeral:
        return (f"expected {'an ephemeral' if exp.ephemeral else 'a public'} response; got "
                f"{describe_all(resp.messages)}")
    if exp.message_keys() and not any(matches(exp, m, mention_id) for m in resp.messages):
        return f"expected {wanted(exp)}; got {describe_all(resp.messages)}"
    return None


def wanted(exp: Expectation) -> str:
    """The message keys of an expectation, in words."""
    parts = []
    for key in _TEXT:
        if getattr(exp, key) is not None:
            parts.append(f"{key.replace('_', ' ')} containing {getattr(exp, key)!r}")
        if getattr(exp, key + "_matches") is not None:
            parts.append(f"{key.replace('_', ' ')} matching {getattr(exp, key + '_matches').pattern!r}")
    if exp.components is not None:
        parts.append(f"components {exp.components}" if exp.components else "no components")
    if exp.mentions is not None:
        parts.append(f"a mention of {exp.mentions}")
    return "a message with " + ", ".join(parts) if parts else "a message"


def describe(msg: Dict[str, Any]) -> str:
    """One message in a few words: its content, embeds and components."""
    parts = [repr((msg.get("content") or "")[:120])]
    for e in _embeds(msg):
        parts.append(f"embed {e.get('title') or ''!r}" + (f" / {(e.get('description') or '')[:80]!r}"
                                                          if e.get("description") else ""))
    names = _shown_names(msg.get("components"))
    if names:
        parts.append(f"components {names[:8]}")
    if int(msg.get("flags") or 0) & 64:
        parts.append("ephemeral")
    return " ".join(parts)


def describe_all(messages: List[Dict[str, Any]]) -> str:
    if not messages:
        return "no message"
    text = "; ".join(describe(m) for m in messages[:3])
    return text + (f" (+{len(messages) - 3} more)" if len(messages) > 3 else "")
