"""Who the bot answered: every response, edit and message the bot sends is matched to what caused it.

Interaction responses by token (callbacks, followups, ``@original`` edits) and by the message a
component sat on; messages by ``message_reference``, else by the cause header the bot-side hook adds
(the MESSAGE_CREATE or INTERACTION_CREATE discord.py was handling when the bot sent it); never by
order. Wait steps register a ``Watch`` and are woken by the first bot message that matches.
"""
from __future__ import annotations

import asyncio
from typing import Any, Callable, Dict, List, Optional, Set

from .wire import InteractionState, MessageWait
from .world import World


def _int(value: Any) -> Optional[int]:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def visible_to(msg: Dict[str, Any], user_id: int) -> bool:
    """An ephemeral message is seen only by the user of the interaction it answered."""
    if not int(msg.get("flags") or 0) & 64:
        return True
    return str(((msg.get("interaction") or {}).get("user") or {}).get("id")) == str(user_id)


class Watch:
    """A wait step of ``user_id`` looking for a bot message (in ``channels``, None = any) that ``accept`` takes."""

    __slots__ = ("user_id", "channels", "accept", "future")

    def __init__(self, user_id: int, channels: Optional[Set[int]], accept: Callable[[Dict[str, Any]], bool]):
        self.user_id = user_id
        self.channels = channels
        self.accept = accept
        self.future: asyncio.Future = asyncio.get_running_loop().create_future()

    def offer(self, msg: Dict[str, Any]) -> bool:
        if self.future.done() or (self.channels is not None and int(msg["channel_id"]) not in self.channels):
            return False
        if visible_to(msg, self.user_id) and self.accept(msg):
            self.future.set_result(msg)
            return True
        return False


class ResponseTracker:
    """Interactions and user messages the sim sent, the bot's answers to them, and the waits for bot messages."""

    def __init__(self, world: World):
        self.world = world
        self.interactions: Dict[int, InteractionState] = {}
        self._by_token: Dict[str, InteractionState] = {}
        self._by_message: Dict[int, List[InteractionState]] = {}   # clicked-on / original message -> interactions
        self.waits: Dict[int, MessageWait] = {}                    # user message id -> its replies
        self._watches: List[Watch] = []

    # ------------------------------------------------------------------ what the sim sent
    def add_interaction(self, st: InteractionState) -> None:
        self.interactions[st.id] = st
        self._by_token[st.token] = st
        if st.source_message_id is not None:
            self._by_message.setdefault(st.source_message_id, []).append(st)

    def by_token(self, token: str) -> Optional[InteractionState]:
        return self._by_token.get(token)

    def set_original(self, st: InteractionState, message_id: int) -> None:
        st.original_id = message_id
        sts = self._by_message.setdefault(message_id, [])
        if st not in sts:
            sts.append(st)

    def add_wait(self, wait: MessageWait) -> None:
        self.waits[wait.message_id] = wait

    # ------------------------------------------------------------------ what the bot sent
    def mark_response(self, st: InteractionState, now: float, *, final: bool, message_id: Optional[int] = None) -> None:
        """A response to ``st`` (its callback, a followup, an edit of its message) arrived at ``now``."""
        st.responses += 1
        if message_id is not None:
            if message_id not in st.message_ids:
                st.message_ids.append(message_id)
            msg = self.world.messages.get(message_id)
            if msg is not None:
                if msg.get("components"):
                    st.view_message_id = message_id
                if st.ephemeral is None:
                    st.ephemeral = bool(int(msg.get("flags") or 0) & 64)
                self.offer(msg)
        if final:
            st.t_final = now
            st.final_event.set()
        st.changed.set()

    def bot_message(self, msg: Dict[str, Any], now: float, *, cause: Optional[str] = None,
                    reference: Any = None) -> None:
        """The bot created a channel or DM message (not through an interaction token)."""
        mid = int(msg["id"])
        wait = self.waits.get(_int(reference)) if reference is not None else None
        cause_id = _int(cause)
        if wait is None and cause_id is not None:
            wait = self.waits.get(cause_id)
            st = self.interactions.get(cause_id) if wait is None else None
            if st is not None:
                st.caused.append(mid)
                st.changed.set()
        if wait is not None:
            wait.replied(now, mid)
        self.offer(msg)

    def bot_edit(self, msg: Dict[str, Any], now: float, *, cause: Optional[str] = None) -> None:
        """The bot edited a message: a response of the interactions it belongs to; a later reply to a message."""
        mid = int(msg["id"])
        for st in self._by_message.get(mid, ()):
            if st.t_final is None or st.t_final < now:
                self.mark_response(st, now, final=True, message_id=mid)
        wait = self.waits.get(_int(cause)) if cause is not None else None
        if wait is not None and mid in wait.reply_ids:
            wait.t_final = now
            wait.changed.set()
        self.offer(msg)

    def reaction(self, message_id: Any, now: float) -> None:
        """The bot reacted to a message: a reply to it."""
        wait = self.waits.get(_int(message_id))
        if wait is not None:
            wait.replied(now, None)

    # ------------------------------------------------------------------ waits for bot messages
    def watch(self, user_id: int, channels: Optional[Set[int]], accept: Callable[[Dict[str, Any]], bool]) -> Watch:
        w = Watch(user_id, channels, accept)
        self._watches.append(w)
        return w

    def unwatch(self, w: Watch) -> None:
        if w in self._watches:
            self._watches.remove(w)

    def offer(self, msg: Dict[str, Any]) -> None:
        if self._watches and str(msg.get("author", {}).get("id")) == self.world.bot_user["id"]:
            for w in [w for w in self._watches if w.offer(msg)]:
                self._watches.remove(w)
