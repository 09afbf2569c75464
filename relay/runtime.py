"""The thin shell around the pure room model: applies its events to peer connections.

One `RoomRuntime` per live room. Room methods (relay.core.model) decide; this module creates
and closes sessions, points down tracks at upstreams, and forwards events to listeners (the
event stream, metrics). Negotiation awaits happen *before* the model is touched, and every
model change plus its application is synchronous, so concurrent joins need no lock.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from typing import Any

from relay.config import MediaConfig
from relay.core import model
from relay.core.ladder import parse_ladder
from relay.core.model import Event, FeedAssigned, FeedKey, SlotKey, SourceEnded
from relay.errors import Conflict, NotFound
from relay.rtc.sdp import OfferShape
from relay.rtc.session import PlaySession, PublishSession, Session, close_quietly
from relay.rtc.upstream import Upstream

logger = logging.getLogger(__name__)

# A publisher that sent no media for this long is considered gone when the teacher publishes
# again: a reconnecting browser must not be locked out by its own dead connection.
STALE_PUBLISHER_SECONDS = 3.0

EventListener = Callable[[Event], None]


def new_session_id() -> str:
    """Unguessable id: it is part of the resource URL that DELETE acts on."""
    return secrets.token_urlsafe(12)


class RoomRuntime:
    """Live sessions of one room and the wiring between them."""

    def __init__(
        self,
        name: str,
        media: MediaConfig,
        listeners: list[EventListener],
        on_empty: Callable[[str], None],
    ) -> None:
        self.name = name
        self._on_empty = on_empty
        self.media = media
        self.renditions = parse_ladder(media.ladder, media.still_fps)
        self.model = model.Room(name)
        self.publishers: dict[str, PublishSession] = {}
        self.players: dict[str, PlaySession] = {}
        self.upstreams: dict[FeedKey, Upstream] = {}
        self._listeners = listeners
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def empty(self) -> bool:
        return not self.publishers and not self.players

    async def publish(
        self, source: str, teacher: str, offer: str, shape: OfferShape
    ) -> tuple[str, str]:
        """Start a teacher publication; returns (session id, SDP answer)."""
        await self._evict_stale(source)
        session = PublishSession(self.name, new_session_id(), teacher, source, self._on_dead)
        try:
            answer = await session.start(offer, shape.kinds, self.media, self.renditions)
            events = self.model.publish(session.id, source, teacher, shape.kinds)
        except BaseException:
            await close_quietly(session)
            raise
        self.publishers[session.id] = session
        self.upstreams.update(session.upstreams)
        self._apply(events)
        return session.id, answer

    async def play(
        self, classroom: str, offer: str, shape: OfferShape, cap: str | None = None
    ) -> tuple[str, str]:
        """Start a classroom playback, its video at most at layer `cap`; returns (session id,
        SDP answer)."""
        session = PlaySession(self.name, new_session_id(), classroom, self._on_dead)
        slots = (SlotKey(session.id, "audio"),) * shape.audio + tuple(
            SlotKey(session.id, "video", i) for i in range(shape.video)
        )
        try:
            answer = await session.start(offer, slots, self.media, self.renditions, cap)
            events = self.model.join(session.id, classroom, bool(shape.audio), shape.video)
        except BaseException:
            await close_quietly(session)
            raise
        self.players[session.id] = session
        self._apply(events)
        return session.id, answer

    async def end(self, session_id: str) -> None:
        """End a publication or playback by id; 404 if unknown."""
        session: Session | None = self.publishers.pop(session_id, None)
        if session is not None:
            self._apply(self.model.unpublish(session_id))
        else:
            session = self.players.pop(session_id, None)
            if session is None:
                raise NotFound(f"no session {session_id!r} in room {self.name!r}")
            self._apply(self.model.leave(session_id))
        await close_quietly(session)
        if self.empty:
            self._on_empty(self.name)

    async def close(self) -> None:
        """End every session (shutdown)."""
        for session_id in [*self.publishers, *self.players]:
            await self.end(session_id)
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def source_bitrate(self, source: str) -> int:
        """Bits per second the teacher sends on one source, all its tracks together."""
        return sum(u.bitrate for key, u in self.upstreams.items() if key.source == source)

    def owns(self, session_id: str, kind: str) -> bool:
        """True when the session exists and is of that kind ("whip" or "whep")."""
        return session_id in (self.publishers if kind == "whip" else self.players)

    async def _evict_stale(self, source: str) -> None:
        """Free the source if its publisher is dead or silent; else 409."""
        current = self.model.publishers.get(source)
        if current is None:
            return
        session = self.publishers[current.session]
        silent_for = asyncio.get_running_loop().time() - session.last_sign_of_life()
        if silent_for < STALE_PUBLISHER_SECONDS:
            raise Conflict(f"room {self.name!r} already has a live {source} publisher")
        logger.info("room %s: replacing silent %s publisher %s", self.name, source, session.id)
        await self.end(session.id)

    def _on_dead(self, session_id: str) -> None:
        """A peer connection failed or closed: end its session in the background."""
        task = asyncio.ensure_future(self._end_if_present(session_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _end_if_present(self, session_id: str) -> None:
        if session_id in self.publishers or session_id in self.players:
            await self.end(session_id)

    def _apply(self, events: list[Event]) -> None:
        """Act on the model's events, then tell the listeners."""
        for event in events:
            if isinstance(event, FeedAssigned):
                self._assign(event)
            elif isinstance(event, SourceEnded):
                for kind in model.KINDS:
                    self.upstreams.pop(FeedKey(event.source, kind), None)
            for listener in self._listeners:
                listener(event)

    def _assign(self, event: FeedAssigned) -> None:
        """Point one classroom down track at the upstream now carrying its feed."""
        player = self.players.get(event.slot.session)
        if player is not None:
            player.assign(event.slot, self.upstreams.get(event.feed) if event.feed else None)
