"""Room events for the pages: one WebSocket per page, authorised by the page's own token.

`GET /api/rooms/{room}/events?token=…` (browsers cannot set headers on a WebSocket, so the
token comes in the query as for pages; `Authorization: Bearer` works too). On connect the page
gets the room's `state`; then an `event` for every change (lesson started/ended, a source
started/ended, a classroom joined/left) followed by a fresh `state`, and a `state` every
QUALITY_INTERVAL seconds with each classroom's quality.

Pages send: classrooms their quality of experience (`qoe`, from getStats), teachers the lesson's
title, subject and grade (`lesson`) and their uplink health (`uplink`). A bad message gets an
`error` reply naming the problem and changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from relay.context import CTX, Context
from relay.core import model
from relay.errors import BadRequest, KetangError, status_of
from relay.registry import Registry
from relay.runtime import RoomRuntime
from relay.tokens import ROLES, Grant, validate_room, verify

logger = logging.getLogger(__name__)

# Seconds between quality snapshots: often enough for a live list, rare enough to cost nothing.
QUALITY_INTERVAL = 2.0
# Messages waiting for a slow page before it is sent only the newest state instead.
MAX_BACKLOG = 32
# A page's message is a small JSON object; anything larger is a bug or an attack.
MAX_MESSAGE_BYTES = 8192
# Lesson fields are shown on projectors and stored in the library: short text.
MAX_TEXT = 120
# What a classroom may report (W3C webrtc-stats names, summed over its video tracks).
QOE_FIELDS = (
    "freezeCount",
    "totalFreezesDuration",
    "framesPerSecond",
    "frameWidth",
    "frameHeight",
    "packetsLost",
    "packetsReceived",
    "jitterBufferDelay",  # seconds per emitted frame, as the page computes it
    "concealedSamples",
    "totalSamplesReceived",
    "concealmentRatio",
)
UPLINK_FIELDS = ("bitrate", "packetsLost", "fractionLost", "roundTripTime", "framesPerSecond")


@dataclass(slots=True)
class Lesson:
    """What the teacher says the lesson is; shown to classrooms and kept with the recording."""

    title: str = ""
    subject: str = ""
    grade: str = ""
    school: str = ""


@dataclass(slots=True)
class RoomPages:
    """The pages watching one room, and what they told the relay."""

    subscribers: set[asyncio.Queue[str]] = field(default_factory=set)
    lesson: Lesson = field(default_factory=Lesson)
    uplink: dict[str, float] = field(default_factory=dict)


def finite(value: object) -> bool:
    """True for a JSON number that is a real, finite one (true/false are not numbers here)."""
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)


def numbers(raw: object, allowed: tuple[str, ...]) -> dict[str, float]:
    """The allowed finite numeric fields of a JSON object; anything else is a 400."""
    if not isinstance(raw, dict):
        raise BadRequest("stats must be a JSON object")
    values = {}
    for key, value in raw.items():
        if key not in allowed:
            continue
        if not finite(value):
            raise BadRequest(f"stats field {key!r} must be a finite number")
        values[key] = float(value)
    return values


def text(raw: object, name: str) -> str:
    if raw is None:
        return ""
    if not isinstance(raw, str) or len(raw) > MAX_TEXT:
        raise BadRequest(f"{name} must be text of at most {MAX_TEXT} characters")
    return raw.strip()


class EventHub:
    """Fans room events out to the pages watching each room."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.rooms: dict[str, RoomPages] = {}
        registry.listeners.append(self.on_event)

    def pages(self, room: str) -> RoomPages:
        return self.rooms.setdefault(room, RoomPages())

    def lesson(self, room: str) -> Lesson:
        """The lesson's title, subject and grade as the teacher set them (empty if not)."""
        pages = self.rooms.get(room)
        return pages.lesson if pages is not None else Lesson()

    # out

    def on_event(self, event: model.Event) -> None:
        """A room model event: tell that room's pages, then send them the new state."""
        message = describe(event)
        if message is None:
            return
        room = message["room"]
        self.broadcast(room, message)
        self.broadcast(room, self.state(room))

    def broadcast(self, room: str, message: dict[str, Any]) -> None:
        pages = self.rooms.get(room)
        if pages is None:
            return
        data = json.dumps(message)
        for queue in pages.subscribers:
            offer(queue, data)

    def state(self, room: str) -> dict[str, Any]:
        """Everything a page shows about one room, right now."""
        runtime = self.registry.find(room)
        pages = self.rooms.get(room) or RoomPages()
        return {
            "type": "state",
            "room": room,
            "live": bool(runtime and runtime.model.live),
            "lesson": asdict(pages.lesson),
            "sources": sources(runtime) if runtime else [],
            "classrooms": classrooms(runtime) if runtime else [],
            "uplink": pages.uplink,
            "at": time.time(),
        }

    async def tick(self) -> None:
        """Send every watched room its state each QUALITY_INTERVAL; forget idle rooms."""
        while True:
            await asyncio.sleep(QUALITY_INTERVAL)
            for room, pages in list(self.rooms.items()):
                if pages.subscribers:
                    self.broadcast(room, self.state(room))
                elif self.registry.find(room) is None:
                    del self.rooms[room]

    # in

    def receive(self, grant: Grant, room: str, message: object) -> dict[str, Any] | None:
        """Apply one message from a page; returns a reply, if any. Errors are 4xx."""
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            raise BadRequest('a message is a JSON object with a "type"')
        kind = message["type"]
        if kind == "ping":
            return {"type": "pong"}
        if kind == "qoe" and grant.role == "classroom":
            self._qoe(room, grant.name, message)
            return None
        if kind == "lesson" and grant.role == "teacher":
            self._lesson(room, message)
            return None
        if kind == "uplink" and grant.role == "teacher":
            self.pages(room).uplink = numbers(message.get("stats"), UPLINK_FIELDS)
            return None
        raise BadRequest(f"message type {kind!r} is not accepted from a {grant.role}")

    def _qoe(self, room: str, classroom: str, message: dict[str, Any]) -> None:
        """A classroom page's report about its own session (not another school's)."""
        runtime = self.registry.find(room)
        session = message.get("session")
        player = runtime.players.get(session) if runtime and isinstance(session, str) else None
        if player is None or player.name != classroom:
            raise BadRequest(f"no session {session!r} of classroom {classroom!r} in room {room!r}")
        player.qoe = numbers(message.get("stats"), QOE_FIELDS)
        player.qoe_at = time.time()

    def _lesson(self, room: str, message: dict[str, Any]) -> None:
        names = ("title", "subject", "grade", "school")
        fields = {name: text(message.get(name), name) for name in names}
        self.pages(room).lesson = Lesson(**fields)
        self.broadcast(room, self.state(room))


def offer(queue: asyncio.Queue[str], data: str) -> None:
    """Queue a message for one page; a page that fell behind keeps only the newest."""
    if queue.qsize() >= MAX_BACKLOG:
        while not queue.empty():
            queue.get_nowait()
    queue.put_nowait(data)


def describe(event: model.Event) -> dict[str, Any] | None:
    """The page-facing form of a model event; None for internal ones."""
    if isinstance(event, model.LessonStarted | model.LessonEnded):
        name = "lesson-started" if isinstance(event, model.LessonStarted) else "lesson-ended"
        return {"type": "event", "event": name, "room": event.room}
    if isinstance(event, model.SourceStarted | model.SourceEnded):
        name = "source-started" if isinstance(event, model.SourceStarted) else "source-ended"
        return {
            "type": "event",
            "event": name,
            "room": event.room,
            "source": event.source,
            "session": event.session,
        }
    if isinstance(event, model.ClassroomJoined | model.ClassroomLeft):
        name = "classroom-joined" if isinstance(event, model.ClassroomJoined) else "classroom-left"
        return {
            "type": "event",
            "event": name,
            "room": event.room,
            "session": event.session,
            "name": event.name,
        }
    return None


def sources(runtime: RoomRuntime) -> list[dict[str, Any]]:
    return [
        {
            "source": p.source,
            "teacher": p.teacher,
            "kinds": sorted(p.kinds),
            "bitrate": runtime.source_bitrate(p.source),
        }
        for p in runtime.model.publishers.values()
    ]


def classrooms(runtime: RoomRuntime) -> list[dict[str, Any]]:
    now = asyncio.get_running_loop().time()
    out = []
    for session_id, player in runtime.players.items():
        link = player.rate.view(now) if player.rate else None
        out.append({
            "session": session_id,
            "name": player.name,
            "state": player.pc.connectionState,
            "layers": list(link.layers.values()) if link else [],
            "estimate": link.estimate if link else 0.0,
            "loss": link.loss if link else 0.0,
            "rtt": link.rtt if link else 0.0,
            "qoe": player.qoe,
        })  # fmt: skip
    return out


def request_token(request: web.Request) -> str:
    """The token of a page (`?token=`) or of an API client (`Authorization: Bearer`)."""
    token = request.query.get("token", "")
    if not token:
        header = request.headers.get("Authorization", "")
        token = header.partition(" ")[2].strip() if header.lower().startswith("bearer ") else ""
    return token


def grant_for(request: web.Request, room: str) -> Grant:
    """The request's token, valid for this room in any role."""
    ctx: Context = request.app[CTX]
    return verify(ctx.secret, request_token(request), room, ROLES)


async def events_socket(request: web.Request) -> web.StreamResponse:
    """The WebSocket a page keeps open; auth errors are plain HTTP errors before upgrading."""
    room = validate_room(request.match_info["room"])
    grant = grant_for(request, room)
    hub = request.app[HUB]
    ws = web.WebSocketResponse(heartbeat=20, max_msg_size=MAX_MESSAGE_BYTES)
    await ws.prepare(request)
    queue: asyncio.Queue[str] = asyncio.Queue()
    pages = hub.pages(room)
    pages.subscribers.add(queue)
    offer(queue, json.dumps({"type": "hello", "role": grant.role, "name": grant.name}))
    offer(queue, json.dumps(hub.state(room)))
    writer = asyncio.ensure_future(_write(ws, queue))
    try:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                offer(queue, json.dumps(_reply(hub, grant, room, msg.data)))
    finally:
        pages.subscribers.discard(queue)
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer
    return ws


def _reply(hub: EventHub, grant: Grant, room: str, data: str) -> dict[str, Any]:
    """Apply one page message; the reply is an ack, a pong or an error naming the problem."""
    try:
        reply = hub.receive(grant, room, json.loads(data))
    except json.JSONDecodeError:
        return {"type": "error", "error": "message is not JSON"}
    except KetangError as error:
        return {"type": "error", "error": status_of(error)[1]}
    return reply or {"type": "ok"}


async def _write(ws: web.WebSocketResponse, queue: asyncio.Queue[str]) -> None:
    with contextlib.suppress(ConnectionError):
        while not ws.closed:
            await ws.send_str(await queue.get())


HUB = web.AppKey("ketang-events", EventHub)


def add_routes(app: web.Application) -> None:
    """Register the events endpoint; the hub lives on the app."""
    ctx: Context = app[CTX]
    app[HUB] = EventHub(ctx.registry)
    app.router.add_get("/api/rooms/{room}/events", events_socket)
