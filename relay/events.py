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
from dataclasses import asdict
from typing import Any

from aiohttp import WSMsgType, web

from relay.auth import Auth
from relay.core import model
from relay.core.errors import BadRequest, KetangError, status_of
from relay.core.snapshot import Lesson, RoomSnapshot
from relay.registry import Registry
from relay.runtime import Clock
from relay.tokens import ROLES, Grant, validate_room

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
LESSON_FIELDS = ("title", "subject", "grade", "school")


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
    """Fans room events out to the pages watching each room; pages' reports go to the room."""

    def __init__(self, registry: Registry, clock: Clock, wall: Clock) -> None:
        self.registry = registry
        self._clock = clock
        self._wall = wall
        self.pages: dict[str, set[asyncio.Queue[str]]] = {}

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
        queues = self.pages.get(room)
        if not queues:
            return
        data = json.dumps(message)
        for queue in queues:
            offer(queue, data)

    def state(self, room: str) -> dict[str, Any]:
        """Everything a page shows about one room, right now."""
        runtime = self.registry.find(room)
        if runtime is None:
            return state_message(RoomSnapshot(room, False, Lesson(), (), (), 0), self._wall())
        return state_message(runtime.snapshot(self._clock()), self._wall())

    async def tick(self) -> None:
        """Send every watched room its state each QUALITY_INTERVAL."""
        while True:
            await asyncio.sleep(QUALITY_INTERVAL)
            for room, queues in list(self.pages.items()):
                if queues:
                    self.broadcast(room, self.state(room))

    def join(self, room: str, queue: asyncio.Queue[str]) -> None:
        """A page's queue starts getting the room's messages; the room is kept while it does."""
        self.registry.watch(room)
        self.pages.setdefault(room, set()).add(queue)

    def leave(self, room: str, queue: asyncio.Queue[str]) -> None:
        queues = self.pages.get(room, set())
        queues.discard(queue)
        if not queues:
            self.pages.pop(room, None)
        self.registry.unwatch(room)

    # in

    def receive(self, grant: Grant, room: str, message: object) -> dict[str, Any] | None:
        """Apply one message from a page; returns a reply, if any. Errors are 4xx."""
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            raise BadRequest('a message is a JSON object with a "type"')
        kind = message["type"]
        if kind == "ping":
            return {"type": "pong"}
        runtime = self.registry.get(room)
        if kind == "qoe" and grant.role == "classroom":
            session = message.get("session")
            stats = numbers(message.get("stats"), QOE_FIELDS)
            runtime.report_qoe(session if isinstance(session, str) else "", grant.name, stats)
            return None
        if kind == "lesson" and grant.role == "teacher":
            fields = {name: text(message.get(name), name) for name in LESSON_FIELDS}
            runtime.set_lesson(Lesson(**fields))
            self.broadcast(room, self.state(room))
            return None
        if kind == "uplink" and grant.role == "teacher":
            runtime.report_uplink(numbers(message.get("stats"), UPLINK_FIELDS))
            return None
        raise BadRequest(f"message type {kind!r} is not accepted from a {grant.role}")


def state_message(snapshot: RoomSnapshot, at: float) -> dict[str, Any]:
    """The page-facing `state` of one room."""
    return {
        "type": "state",
        "room": snapshot.room,
        "live": snapshot.live,
        "lesson": asdict(snapshot.lesson),
        "sources": [
            {"source": s.source, "teacher": s.teacher, "kinds": list(s.kinds), "bitrate": s.bitrate}
            for s in snapshot.sources
        ],
        "classrooms": [
            {
                "session": c.session,
                "name": c.name,
                "state": c.state,
                "layers": list(c.layers.values()),
                "estimate": c.estimate,
                "loss": c.loss,
                "rtt": c.rtt,
                "qoe": dict(c.qoe),
            }
            for c in snapshot.classrooms
        ],
        "uplink": dict(snapshot.uplink),
        "at": at,
    }


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


class EventsApi:
    """The WebSocket endpoint pages keep open."""

    def __init__(self, hub: EventHub, auth: Auth) -> None:
        self._hub = hub
        self._auth = auth

    async def socket(self, request: web.Request) -> web.StreamResponse:
        """Auth errors are plain HTTP errors before upgrading."""
        room = validate_room(request.match_info["room"])
        grant = self._auth.room(request, room, ROLES)
        hub = self._hub
        ws = web.WebSocketResponse(heartbeat=20, max_msg_size=MAX_MESSAGE_BYTES)
        await ws.prepare(request)
        queue: asyncio.Queue[str] = asyncio.Queue()
        hub.join(room, queue)
        offer(queue, json.dumps({"type": "hello", "role": grant.role, "name": grant.name}))
        offer(queue, json.dumps(hub.state(room)))
        writer = asyncio.ensure_future(_write(ws, queue))
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    offer(queue, json.dumps(_reply(hub, grant, room, msg.data)))
        finally:
            hub.leave(room, queue)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
        return ws

    def routes(self) -> list[web.AbstractRouteDef]:
        return [web.get("/api/rooms/{room}/events", self.socket)]


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
