"""The loopback Discord's wire vocabulary: constants, what it records, request bodies, JSON responses."""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Dict, List, Optional, Tuple

import orjson
from aiohttp import web

log = logging.getLogger("autoperf.discord_sim")

DISCORD_EPOCH_MS = 1420070400000
INTERACTION_DEADLINE_S = 3.0          # Discord: the first callback must arrive within 3 s
ATTACHMENT_SIZE_LIMIT = 25 * 1024 * 1024
ALL_PERMISSIONS = str((1 << 47) - 1)

# gateway opcodes
OP_DISPATCH, OP_HEARTBEAT, OP_IDENTIFY, OP_PRESENCE, OP_VOICE, OP_RESUME, OP_RECONNECT = 0, 1, 2, 3, 4, 6, 7
OP_REQUEST_MEMBERS, OP_INVALID_SESSION, OP_HELLO, OP_HEARTBEAT_ACK = 8, 9, 10, 11

# headers the bot-side hooks (reroute.py) add: what the bot was handling when it sent a request, and
# the scheme of a request to another host that was rerouted to the sim's sink
CAUSE_HEADER = "X-Autoperf-Sim-Cause"
REROUTED_HEADER = "X-Autoperf-Sim-Rerouted"

INTENT_GUILD_MESSAGES = 1 << 9
INTENT_DIRECT_MESSAGES = 1 << 12
INTENT_MESSAGE_CONTENT = 1 << 15

# interaction callback types
CB_PONG, CB_MESSAGE, CB_DEFERRED_MESSAGE, CB_DEFERRED_UPDATE, CB_UPDATE, CB_AUTOCOMPLETE, CB_MODAL = 1, 4, 5, 6, 7, 8, 9
CALLBACK_TYPES = {1, 4, 5, 6, 7, 8, 9, 10, 12}
FINAL_CALLBACKS = {CB_MESSAGE, CB_UPDATE, CB_AUTOCOMPLETE, CB_MODAL, CB_DEFERRED_UPDATE, 10, 12}


def internal_error(where: str, exc: BaseException) -> None:
    """Report a failure of the sim's own code in the bot's process once, never raising."""
    try:
        from autoperf import diagnostics

        diagnostics.internal_error(where, exc)
    except Exception:
        log.warning("autoperf discord_sim: %s failed: %s: %s", where, type(exc).__name__, exc)


def _iso(ts: Optional[float] = None) -> str:
    dt = datetime.fromtimestamp(ts if ts is not None else time.time(), timezone.utc)
    return dt.isoformat(timespec="milliseconds")


def _dumps(data: Any) -> bytes:
    return orjson.dumps(data)


@dataclass
class RecordedCall:
    """One REST request the bot made."""
    t: float                       # loop.time() when it arrived
    method: str
    route: str                     # "POST /channels/{channel_id}/messages" (template, no /api/vN prefix)
    path: str                      # the actual path, no /api/vN prefix
    status: int = 0
    json: Any = None               # parsed JSON body (payload_json for multipart)
    files: List[Dict[str, Any]] = field(default_factory=list)   # [{filename, size}]
    query: Dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.method} {self.route.split(' ', 1)[1]}" if " " in self.route else self.route

    def to_dict(self) -> Dict[str, Any]:
        return {"t": self.t, "method": self.method, "route": self.route, "path": self.path, "status": self.status,
                "json": self.json, "files": self.files, "query": self.query}


@dataclass
class InteractionState:
    """Timing and outcome of one interaction the sim dispatched."""
    id: int
    token: str
    type: int                      # 2 command, 3 component, 4 autocomplete, 5 modal submit
    step: str
    user_id: int
    channel_id: int
    guild_id: Optional[int]
    t_dispatch: float
    source_message_id: Optional[int] = None      # component/modal: the message the user clicked on
    name: str = ""
    t_first: Optional[float] = None
    t_late: Optional[float] = None               # a callback that came after the 3 s deadline (rejected)
    first_type: Optional[int] = None
    t_final: Optional[float] = None
    original_id: Optional[int] = None            # message of the interaction response
    original_filled: bool = False
    message_ids: List[int] = field(default_factory=list)   # every message this interaction produced/edited
    caused: List[int] = field(default_factory=list)        # messages the bot sent elsewhere while handling it
    view_message_id: Optional[int] = None        # last message with components
    ephemeral: Optional[bool] = None             # the first response message's ephemeral flag
    modal: Optional[Dict[str, Any]] = None       # callback type 9 data
    choices: Optional[List[Dict[str, Any]]] = None
    errors: List[str] = field(default_factory=list)
    responses: int = 0
    first_event: asyncio.Event = field(default_factory=asyncio.Event)
    final_event: asyncio.Event = field(default_factory=asyncio.Event)
    changed: asyncio.Event = field(default_factory=asyncio.Event)   # set on every response (expectations)

    def first_ms(self) -> Optional[float]:
        return None if self.t_first is None else (self.t_first - self.t_dispatch) * 1000.0

    def final_ms(self) -> Optional[float]:
        return None if self.t_final is None else (self.t_final - self.t_dispatch) * 1000.0


@dataclass
class MessageWait:
    """A MESSAGE_CREATE the sim sent and the bot's replies to it (by message_reference, or sent while
    the bot handled it)."""
    message_id: int
    channel_id: int
    step: str
    t_dispatch: float
    t_first: Optional[float] = None
    t_final: Optional[float] = None
    replies: int = 0
    reply_ids: List[int] = field(default_factory=list)
    errors: List[str] = field(default_factory=list)
    first_event: asyncio.Event = field(default_factory=asyncio.Event)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def replied(self, now: float, message_id: Optional[int]) -> None:
        self.replies += 1
        if message_id is not None and message_id not in self.reply_ids:
            self.reply_ids.append(message_id)
        if self.t_first is None:
            self.t_first = now
            self.first_event.set()
        self.t_final = now
        self.changed.set()


class _ApiError(Exception):
    def __init__(self, status: int, code: int, message: str, errors: Optional[dict] = None):
        super().__init__(message)
        self.status, self.code, self.message, self.errors = status, code, message, errors


def _json_response(data: Any, status: int = 200, headers: Optional[Dict[str, str]] = None) -> web.Response:
    h = {"Content-Type": "application/json"}
    if headers:
        h.update(headers)
    return web.Response(body=_dumps(data), status=status, headers=h)


_RequestKey = getattr(web, "RequestKey", None)
_CALL_KEY: Any = _RequestKey("autoperf_sim_call", object) if _RequestKey else "autoperf_sim_call"
_BODY_KEY: Any = _RequestKey("autoperf_sim_body", object) if _RequestKey else "autoperf_sim_body"


async def read_body(request: web.Request, call: Optional[RecordedCall] = None) -> Tuple[Any, List[Dict[str, Any]]]:
    """(JSON body or payload_json, uploaded files) of a REST request, read once and noted on its call."""
    if _BODY_KEY in request:
        return request[_BODY_KEY]
    call = call or request.get(_CALL_KEY)
    body: Any = None
    files: List[Dict[str, Any]] = []
    if request.body_exists:
        if (request.content_type or "").startswith("multipart/"):
            reader = await request.multipart()
            while True:
                part = await reader.next()
                if part is None:
                    break
                data = await part.read()
                if part.name == "payload_json":
                    body = _parse_json(data)
                else:
                    files.append({"name": part.name, "filename": part.filename or part.name, "size": len(data),
                                  "content_type": part.headers.get("Content-Type"), "data": bytes(data)})
        else:
            raw = await request.read()
            if raw:
                body = _parse_json(raw)
    if call is not None:
        call.json = body
        call.files = [{"filename": f["filename"], "size": f["size"]} for f in files]
    request[_BODY_KEY] = (body, files)
    return body, files


def _parse_json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise _ApiError(400, 50109, "The request body contains invalid JSON.") from None


def _png_1x1() -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 6, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00\x00\x00\x00\x00"))
            + chunk(b"IEND", b""))


_PNG_1X1 = _png_1x1()


def _no_content() -> web.Response:
    # no Content-Type: discord.py 2.0 parses any "application/json" body, even an empty one
    return web.Response(status=204)


def _guess_type(filename: str) -> str:
    import mimetypes

    return mimetypes.guess_type(filename)[0] or "application/octet-stream"
