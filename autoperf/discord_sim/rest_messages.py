"""REST handlers for what the bot answers: interaction callbacks, followups and webhook edits (by
token), channel and DM messages, edits and reactions. Each answer is timed and attributed by the
``ResponseTracker`` to the interaction or message that caused it."""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple

from aiohttp import web

from .rest_model import channel_id
from .tracker import ResponseTracker
from .wire import (
    CALLBACK_TYPES, CAUSE_HEADER, CB_AUTOCOMPLETE, CB_DEFERRED_MESSAGE, CB_DEFERRED_UPDATE, CB_MESSAGE, CB_MODAL,
    CB_UPDATE, FINAL_CALLBACKS, INTERACTION_DEADLINE_S, InteractionState, _ApiError, _iso, _json_response,
    _no_content, read_body,
)
from .world import World

_LOADING = 1 << 7     # message flag of a "thinking" defer's placeholder


def _wants_body(request: web.Request, key: str) -> bool:
    return request.query.get(key) in ("1", "true", "True")


class MessageRoutes:
    """Handlers for the bot's responses and messages; ``routes()`` is their part of the table."""

    def __init__(self, world: World, tracker: ResponseTracker, now: Callable[[], float]):
        self.world, self.tracker, self.now = world, tracker, now

    def routes(self) -> List[Tuple[str, str, Any]]:
        return [
            ("POST", "/interactions/{interaction_id}/{token}/callback", self.callback),
            ("POST", "/webhooks/{app_id}/{token}", self.followup),
            *[(method, f"/webhooks/{{app_id}}/{{token}}/messages/{mid}", self.webhook_message)
              for mid in ("@original", "{message_id}") for method in ("GET", "PATCH", "DELETE")],
            ("POST", "/channels/{channel_id}/messages", self.channel_message),
            ("GET", "/channels/{channel_id}/messages/{message_id}", self.message),
            ("PATCH", "/channels/{channel_id}/messages/{message_id}", self.message),
            ("DELETE", "/channels/{channel_id}/messages/{message_id}", self.message),
            ("POST", "/channels/{channel_id}/messages/bulk-delete", self.no_content),
            ("POST", "/channels/{channel_id}/typing", self.no_content),
            ("PUT", "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me", self.reaction),
            ("DELETE", "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me", self.no_content),
        ]

    async def no_content(self, request: web.Request) -> web.Response:
        return _no_content()

    def _interaction(self, request: web.Request) -> InteractionState:
        st = self.tracker.by_token(request.match_info["token"])
        if st is None:
            raise _ApiError(404, 10015, "Unknown Webhook")
        return st

    def _bot_message(self, cid: int, body: Dict[str, Any], files: List[Dict[str, Any]],
                     st: Optional[InteractionState] = None) -> Dict[str, Any]:
        mtype = 20 if st is not None and st.type == 2 else 0
        return self.world.new_message(cid, self.world.bot_user, body, mtype=mtype, interaction=st, files=files)

    # ------------------------------------------------------------------ interaction responses
    async def callback(self, request: web.Request) -> web.Response:
        now = self.now()
        body, files = await read_body(request)
        st = self.tracker.by_token(request.match_info["token"])
        if st is None or str(st.id) != request.match_info["interaction_id"]:
            raise _ApiError(404, 10062, "Unknown interaction")
        if st.t_first is not None:
            st.errors.append("callback: interaction already acknowledged (40060)")
            raise _ApiError(400, 40060, "Interaction has already been acknowledged.")
        if now - st.t_dispatch > INTERACTION_DEADLINE_S:
            st.t_late = now
            st.errors.append(f"callback after {now - st.t_dispatch:.2f}s: Unknown interaction (10062)")
            raise _ApiError(404, 10062, "Unknown interaction")
        if not isinstance(body, dict) or body.get("type") not in CALLBACK_TYPES:
            st.errors.append(f"callback: invalid type {body.get('type') if isinstance(body, dict) else body!r}")
            raise _ApiError(400, 50035, "Invalid Form Body", {"type": "Value must be one of (1, 4, 5, 6, 7, 8, 9)."})
        cb_type = body["type"]
        try:
            message = self._callback_message(st, cb_type, body.get("data") or {}, files)
        except _ApiError as exc:
            st.errors.append(f"callback: {exc.code} {exc.message}")
            raise
        st.t_first = now
        st.first_type = cb_type
        self.tracker.mark_response(st, now, final=cb_type in FINAL_CALLBACKS,
                                   message_id=int(message["id"]) if message else None)
        st.first_event.set()
        if not _wants_body(request, "with_response"):
            return _no_content()
        inter: Dict[str, Any] = {"id": str(st.id), "type": st.type}
        resource: Dict[str, Any] = {"type": cb_type}
        if message is not None:
            inter["response_message_id"] = message["id"]
            inter["response_message_loading"] = cb_type == CB_DEFERRED_MESSAGE
            inter["response_message_ephemeral"] = bool(int(message.get("flags") or 0) & 64)
            resource["message"] = message
        return _json_response({"interaction": inter, "resource": resource})

    def _callback_message(self, st: InteractionState, cb_type: int, data: Dict[str, Any],
                          files: List[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
        """Apply one callback to the model; the message it created or changed, if any."""
        if cb_type == CB_MESSAGE:
            self.world.validate_message(data, files)
            message = self._bot_message(st.channel_id, data, files, st)
            st.original_filled = True
        elif cb_type == CB_DEFERRED_MESSAGE:
            message = self._bot_message(st.channel_id, {"flags": data.get("flags", 0)}, [], st)
            message["flags"] = int(message.get("flags") or 0) | _LOADING
        elif cb_type in (CB_DEFERRED_UPDATE, CB_UPDATE):
            message = self.world.messages.get(st.source_message_id) if st.source_message_id is not None else None
            if message is None:
                raise _ApiError(400, 50035, "Invalid Form Body", {"type": "update needs a component message"})
            if cb_type == CB_UPDATE:
                self.world.validate_message(data, files, allow_empty=True)
                self.world.apply_edit(message, data, files)
                message["edited_timestamp"] = _iso()
                self.world.edited(int(message["id"]))
            st.original_filled = True
        else:
            if cb_type == CB_AUTOCOMPLETE:
                choices = data.get("choices")
                if not isinstance(choices, list) or len(choices) > 25:
                    raise _ApiError(400, 50035, "Invalid Form Body", {"choices": "Must be 25 or fewer in length."})
                st.choices = choices
            elif cb_type == CB_MODAL:
                if not data.get("custom_id") or not data.get("components"):
                    raise _ApiError(400, 50035, "Invalid Form Body", {"data": "a modal needs custom_id and components"})
                st.modal = data
            return None
        self.tracker.set_original(st, int(message["id"]))
        return message

    async def followup(self, request: web.Request) -> web.Response:
        now = self.now()
        st = self._interaction(request)
        body, files = await read_body(request)
        if st.t_first is None:
            st.errors.append("followup before the interaction was acknowledged")
            raise _ApiError(404, 10015, "Unknown Webhook")
        try:
            self.world.validate_message(body, files)
        except _ApiError as exc:
            st.errors.append(f"followup: {exc.code} {exc.message}")
            raise
        if st.first_type == CB_DEFERRED_MESSAGE and not st.original_filled and st.original_id in self.world.messages:
            # the first followup after a "thinking" defer replaces the loading message
            msg = self.world.messages[st.original_id]
            msg["flags"] = int(msg.get("flags") or 0) & ~_LOADING
            self.world.apply_edit(msg, body, files)
            self.world.edited(st.original_id)
            st.original_filled = True
        else:
            msg = self._bot_message(st.channel_id, body, files, st)
            msg["type"] = 0 if st.type != 2 else 20
        self.tracker.mark_response(st, now, final=True, message_id=int(msg["id"]))
        return _json_response(msg) if _wants_body(request, "wait") else _no_content()

    async def webhook_message(self, request: web.Request) -> web.Response:
        now = self.now()
        st = self._interaction(request)
        raw_mid = request.match_info.get("message_id", "@original")
        if raw_mid == "@original":
            if st.original_id is None:
                st.errors.append(f"{request.method} @original before a message response")
                raise _ApiError(404, 10008, "Unknown Message")
            mid = st.original_id
        else:
            try:
                mid = int(raw_mid)
            except ValueError:
                raise _ApiError(404, 10008, "Unknown Message") from None
        msg = self.world.messages.get(mid)
        if msg is None:
            raise _ApiError(404, 10008, "Unknown Message")
        if request.method == "GET":
            return _json_response(msg)
        if request.method == "DELETE":
            self.world.forget(mid)
            self.tracker.mark_response(st, now, final=True)
            return _no_content()
        body, files = await read_body(request)
        try:
            self.world.validate_message(body, files, allow_empty=True)
        except _ApiError as exc:
            st.errors.append(f"edit: {exc.code} {exc.message}")
            raise
        self.world.apply_edit(msg, body or {}, files)
        msg["edited_timestamp"] = _iso()
        if mid == st.original_id:
            msg["flags"] = int(msg.get("flags") or 0) & ~_LOADING
            st.original_filled = True
        self.world.edited(mid)
        self.tracker.mark_response(st, now, final=True, message_id=mid)
        return _json_response(msg)

    # ------------------------------------------------------------------ channel and DM messages
    async def channel_message(self, request: web.Request) -> web.Response:
        now = self.now()
        cid = channel_id(self.world, request)
        body, files = await read_body(request)
        self.world.validate_message(body, files)
        msg = self._bot_message(cid, body, files)
        ref = (body or {}).get("message_reference") or {}
        if ref.get("message_id"):
            msg["message_reference"] = {"message_id": str(ref["message_id"]), "channel_id": str(cid)}
            if "guild_id" in msg:
                msg["message_reference"]["guild_id"] = msg["guild_id"]
            msg["type"] = 19
        self.tracker.bot_message(msg, now, cause=request.headers.get(CAUSE_HEADER), reference=ref.get("message_id"))
        return _json_response(msg)

    async def reaction(self, request: web.Request) -> web.Response:
        channel_id(self.world, request)
        self.tracker.reaction(request.match_info["message_id"], self.now())
        return _no_content()

    async def message(self, request: web.Request) -> web.Response:
        now = self.now()
        cid = channel_id(self.world, request)
        try:
            mid = int(request.match_info["message_id"])
        except ValueError:
            raise _ApiError(404, 10008, "Unknown Message") from None
        msg = self.world.messages.get(mid)
        if msg is None or msg.get("channel_id") != str(cid):
            raise _ApiError(404, 10008, "Unknown Message")
        if request.method == "GET":
            return _json_response(msg)
        if request.method == "DELETE":
            self.world.forget(mid)
            return _no_content()
        body, files = await read_body(request)
        self.world.validate_message(body, files, allow_empty=True)
        self.world.apply_edit(msg, body or {}, files)
        msg["edited_timestamp"] = _iso()
        self.world.edited(mid)
        self.tracker.bot_edit(msg, now, cause=request.headers.get(CAUSE_HEADER))
        return _json_response(msg)
