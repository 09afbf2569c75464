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
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from aiohttp import WSCloseCode, WSMsgType, web

from monitoring import metrics
from relay.auth import Auth
from relay.config import LimitsConfig
from relay.core import model
from relay.core.errors import BadRequest, KetangError, TooManyRequests, status_of
from relay.core.limits import Bucket
from relay.core.snapshot import Lesson, RoomSnapshot
from relay.registry import Registry
from relay.runtime import Clock
from relay.tokens import Grant, validate_room

logger = logging.getLogger(__name__)

# Seconds between quality snapshots: often enough for a live list, rare enough to cost nothing.
QUALITY_INTERVAL = 2.0
# Seconds a state change waits for others to go out with it (a flood of lesson messages or
# fifty joins at once then cost one state message per page, not fifty).
STATE_DELAY = 0.1
# Messages over the rate in a row after which the page's socket is closed (a script flooding).
MAX_REFUSED = 50
# Who may follow a room's events; a node pulls media, not pages' events.
PAGE_ROLES = frozenset({"teacher", "classroom", "admin"})
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


@dataclass(eq=False, slots=True)
class Page:
    """One open event socket: who it is, its outgoing queue, and its message allowance."""

    grant: Grant
    queue: asyncio.Queue[str]
    bucket: Bucket
    refused: int = 0  # messages refused in a row for going over the rate

    @property
    def school(self) -> str | None:
        """The classroom whose sessions alone this page may see; None sees every one."""
        return self.grant.name if self.grant.role == "classroom" else None


class EventHub:
    """Fans room events out to the pages watching each room; pages' reports go to the room.

    Room state goes out at most every STATE_DELAY seconds however many changes or page
    messages cause it, so one room's flood costs its own pages a few messages, not the
    event loop (and so the other rooms' media) a stall. A classroom's page sees its own
    sessions only: another school's session ids are none of its business."""

    def __init__(self, registry: Registry, limits: LimitsConfig, clock: Clock, wall: Clock) -> None:
        self.registry = registry
        self._limits = limits
        self._clock = clock
        self._wall = wall
        self.pages: dict[str, set[Page]] = {}
        self._sockets: Counter[str] = Counter()  # token id -> open sockets
        self._dirty: set[str] = set()
        self._flush: asyncio.TimerHandle | None = None
        self.remote: RemoteViews | None = None  # the other nodes' rooms, on a cluster node

    # out

    def on_event(self, event: model.Event) -> None:
        """A room model event: tell that room's pages, then soon the new state."""
        message = describe(event)
        if message is None:
            return
        self.broadcast(message["room"], message)
        self.changed(message["room"])

    def changed(self, room: str) -> None:
        """The room's state changed: its pages get it within STATE_DELAY."""
        self._dirty.add(room)
        if self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(STATE_DELAY, self._send_states)

    def _send_states(self) -> None:
        self._flush = None
        rooms, self._dirty = self._dirty, set()
        for room in rooms:
            self.broadcast(room, self.state(room))

    def broadcast(self, room: str, message: dict[str, Any]) -> None:
        """Queue a message for the room's pages, each seeing what it may."""
        pages = self.pages.get(room)
        if not pages:
            return
        views: dict[str | None, str | None] = {None: json.dumps(message)}
        for page in pages:
            if page.school not in views:
                seen = visible(message, page.school)
                views[page.school] = None if seen is None else json.dumps(seen)
            data = views[page.school]
            if data is not None:
                offer(page.queue, data)

    def local_state(self, room: str) -> dict[str, Any]:
        """What this process knows of one room, right now."""
        runtime = self.registry.find(room)
        if runtime is None:
            return state_message(RoomSnapshot(room, False, Lesson(), (), (), 0), self._wall())
        return state_message(runtime.snapshot(self._clock()), self._wall())

    def state(self, room: str) -> dict[str, Any]:
        """Everything a page shows about one room, right now: on a node of a cluster, with
        the classrooms of the other nodes and the lesson as its origin describes it."""
        local = self.local_state(room)
        if self.remote is None:
            return local
        runtime = self.registry.find(room)
        teaching = runtime is not None and runtime.teaching
        return merge([(teaching, local), *self.remote.views(room)])

    async def tick(self) -> None:
        """Send every watched room its state each QUALITY_INTERVAL."""
        while True:
            await asyncio.sleep(QUALITY_INTERVAL)
            for room, pages in list(self.pages.items()):
                if pages:
                    self.broadcast(room, self.state(room))

    def join(self, room: str, grant: Grant) -> Page:
        """A page starts getting the room's messages; the room is kept while it does.
        429 when this token already holds its share of sockets."""
        if self._sockets[grant.id] >= self._limits.sockets_per_token:
            limit = self._limits.sockets_per_token
            raise TooManyRequests(
                f"this token already has {limit} event sockets open", 10, "sockets_per_token"
            )
        rate = self._limits.page_messages_per_second
        page = Page(grant, asyncio.Queue(), Bucket(rate, 3 * rate))
        self._sockets[grant.id] += 1
        self.registry.watch(room)
        self.pages.setdefault(room, set()).add(page)
        return page

    def leave(self, room: str, page: Page) -> None:
        pages = self.pages.get(room, set())
        pages.discard(page)
        if not pages:
            self.pages.pop(room, None)
        self._sockets[page.grant.id] -= 1
        if self._sockets[page.grant.id] <= 0:
            del self._sockets[page.grant.id]
        self.registry.unwatch(room)

    # in

    def take_turn(self, page: Page) -> None:
        """A page may send one more message now; 429 when it is over its rate (checked
        before the message is even parsed, so a flood costs little)."""
        if not page.bucket.take(self._clock()):
            page.refused += 1
            metrics.count_limited("page_messages")
            raise TooManyRequests(
                f"too many messages: at most {self._limits.page_messages_per_second:g} a second"
            )
        page.refused = 0

    def receive(self, page: Page, room: str, message: object) -> dict[str, Any] | None:
        """Apply one message from a page (whose turn it is); returns a reply, if any. Errors
        are 4xx."""
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            raise BadRequest('a message is a JSON object with a "type"')
        grant, kind = page.grant, message["type"]
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
            self.changed(room)
            return None
        if kind == "uplink" and grant.role == "teacher":
            runtime.report_uplink(numbers(message.get("stats"), UPLINK_FIELDS))
            return None
        raise BadRequest(f"message type {kind!r} is not accepted from a {grant.role}")


def visible(message: dict[str, Any], school: str | None) -> dict[str, Any] | None:
    """What of a message a page may see: everything, or for a classroom's page only its own
    sessions (None: not this message at all)."""
    if school is None:
        return message
    if message.get("type") == "state":
        mine = [c for c in message["classrooms"] if c["name"] == school]
        return {**message, "classrooms": mine}
    if "name" in message and message.get("event", "").startswith("classroom-"):
        return message if message["name"] == school else None
    return message


class RemoteViews(Protocol):
    """What the other nodes of a cluster last said about their rooms."""

    def views(self, room: str) -> list[tuple[bool, dict[str, Any]]]:
        """(that node teaches the room, its state of the room), one per node serving it."""

    def rooms(self) -> set[str]:
        """Rooms some other node serves."""


def merge(views: list[tuple[bool, dict[str, Any]]]) -> dict[str, Any]:
    """One room's state across nodes: every node's classrooms, and the lesson, sources,
    uplink and recording as the origin (the node the teacher publishes to) has them."""
    primary = next((state for teaching, state in views if teaching), views[0][1])
    classrooms = [c for _, state in views for c in state["classrooms"]]
    live = any(state["live"] for _, state in views)
    return {**primary, "classrooms": classrooms, "live": live}


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
        "recording": asdict(snapshot.recording),
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
        """Auth errors and the socket limit are plain HTTP errors before upgrading."""
        room = validate_room(request.match_info["room"])
        grant = self._auth.room(request, room, PAGE_ROLES)
        hub = self._hub
        page = hub.join(room, grant)
        try:
            ws = web.WebSocketResponse(heartbeat=20, max_msg_size=MAX_MESSAGE_BYTES)
            await ws.prepare(request)
            await self._serve(ws, page, room)
        finally:
            hub.leave(room, page)
        return ws

    async def _serve(self, ws: web.WebSocketResponse, page: Page, room: str) -> None:
        """Send what the hub queues for the page; answer what the page sends."""
        grant = page.grant
        offer(page.queue, json.dumps({"type": "hello", "role": grant.role, "name": grant.name}))
        state = visible(self._hub.state(room), page.school)
        offer(page.queue, json.dumps(state))
        writer = asyncio.ensure_future(_write(ws, page.queue))
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    reply = _reply(self._hub, page, room, msg.data)
                    if reply is not None:
                        offer(page.queue, json.dumps(reply))
                elif msg.type == WSMsgType.ERROR:  # over MAX_MESSAGE_BYTES: aiohttp closes
                    metrics.count_limited("message_bytes")
                if page.refused > MAX_REFUSED:
                    metrics.count_limited("page_socket_closed")
                    await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"too many messages")
                    break
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer

    def routes(self) -> list[web.AbstractRouteDef]:
        return [web.get("/api/rooms/{room}/events", self.socket)]


def _reply(hub: EventHub, page: Page, room: str, data: str) -> dict[str, Any] | None:
    """Apply one page message; the reply is an ack, a pong or an error naming the problem.
    A flood is told once that it is refused, not once per message (None: no reply)."""
    try:
        hub.take_turn(page)
    except TooManyRequests as error:
        return {"type": "error", "error": str(error)} if page.refused == 1 else None
    try:
        reply = hub.receive(page, room, json.loads(data))
    except ValueError:  # JSONDecodeError is a ValueError
        return {"type": "error", "error": "message is not JSON"}
    except RecursionError:
        metrics.count_limited("message_nesting")
        return {"type": "error", "error": "message nested too deeply"}
    except KetangError as error:
        return {"type": "error", "error": status_of(error)[1]}
    return reply or {"type": "ok"}


async def _write(ws: web.WebSocketResponse, queue: asyncio.Queue[str]) -> None:
    with contextlib.suppress(ConnectionError):
        while not ws.closed:
            await ws.send_str(await queue.get())
