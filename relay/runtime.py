"""One live room and everything about it, in one object: `RoomRuntime`.

The pure room model (relay.core.model) decides who publishes and which feed each classroom's
down track carries; this shell creates and closes the sessions, points down tracks at
upstreams, and owns what else a room has: the lesson the teacher describes, the teacher's
uplink report, each classroom page's quality report, the lesson's recording and quality
history, and the reconnect grace that keeps a lesson open while its teacher is away.
Everything outside reads it through one `snapshot(now)` (relay.core.snapshot).

Negotiation awaits happen *before* the model is touched, and every model change plus its
application is synchronous, so concurrent joins need no lock.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable, Collection, Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from monitoring import metrics
from monitoring.quality import LessonQuality, QualitySample
from recorder.recorder import LessonRecording, Recorder
from relay.config import IceConfig, LimitsConfig, MediaConfig, RecordingConfig
from relay.core import model
from relay.core.errors import BadRequest, Conflict, NotFound
from relay.core.limits import Liveness, expired
from relay.core.model import Event, FeedAssigned, FeedKey, SlotKey
from relay.core.snapshot import ClassroomView, Lesson, Recording, RoomSnapshot, SourceView
from relay.rtc import hooks
from relay.rtc.remote import RungPulls
from relay.rtc.sdp import OfferShape, advertise
from relay.rtc.session import (
    PlaySession,
    PublishSession,
    PullSession,
    RungPullSession,
    Session,
    close_quietly,
)
from relay.rtc.upstream import Upstream
from relay.sessions import EndedSessions, SessionBook, Ticket

logger = logging.getLogger(__name__)

# A publisher that sent no media for this long is considered gone when the teacher publishes
# again: a reconnecting browser must not be locked out by its own dead connection.
STALE_PUBLISHER_SECONDS = 3.0

EventListener = Callable[[Event], None]
Clock = Callable[[], float]
# An edge's WHEP request to a room's origin: our offer and the rung wanted (None: the source)
# in, (answer, sources live there) out.
Exchange = Callable[[str, str | None], Awaitable[tuple[str, frozenset[str]]]]


@dataclass(frozen=True, slots=True)
class RoomServices:
    """What every room of a process shares: its settings, the recorder, who hears its events
    and the clocks (loop time for timing, wall time only for what people read)."""

    media: MediaConfig
    recording: RecordingConfig
    limits: LimitsConfig
    ice: IceConfig
    recorder: Recorder
    ended: EndedSessions  # sessions that ended lately, across rooms, for a late DELETE
    listeners: list[EventListener]  # shared: the event hub joins once it exists
    clock: Clock
    wall: Clock
    sockets: hooks.HostSockets | None  # the one media socket's; None: a socket per connection

    def records(self, room: str) -> bool:
        """Whether the room's media is recorded; its quality history is kept either way."""
        skip = {r.strip() for r in self.recording.record_skip_rooms.split(",")}
        return self.recording.record and room not in skip


def new_session_id() -> str:
    """Unguessable id: it is part of the resource URL that DELETE acts on."""
    return secrets.token_urlsafe(12)


class RoomRuntime:
    """One room: its live sessions, their wiring, and the lesson they make."""

    def __init__(self, name: str, services: RoomServices, on_idle: Callable[[str], None]) -> None:
        self.name = name
        self.services = services
        self.model = model.Room(name)
        self.publishers: dict[str, PublishSession] = {}
        self.players: dict[str, PlaySession] = {}
        self.upstreams: dict[FeedKey, Upstream] = {}
        self.lesson = Lesson()
        self.uplink: dict[str, float] = {}
        self.watchers = 0  # pages whose event stream follows this room
        self.book = SessionBook(name, services.limits, services.ended)  # who may act on which
        self._qoe: dict[str, dict[str, float]] = {}  # session -> its page's last report
        self._recording: LessonRecording | None = None
        self._quality = LessonQuality()
        self._grace: asyncio.TimerHandle | None = None
        self._on_idle = on_idle
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def idle(self) -> bool:
        """Nothing keeps the room: no session, no lesson open, no page watching."""
        return not self.active and not self.watchers

    @property
    def active(self) -> bool:
        """A session is open, or a lesson is (a teacher may be reconnecting)."""
        return bool(self.publishers or self.players or self._recording)

    # sessions

    async def publish(
        self, source: str, teacher: str, offer: str, shape: OfferShape
    ) -> tuple[str, str]:
        """Start a teacher publication; returns (session id, SDP answer)."""
        await self._evict_stale(source)
        session = PublishSession(
            self.name, new_session_id(), teacher, source, self._on_dead, self.services.sockets
        )
        media = self.services.media
        try:
            answer = await session.start(offer, shape.kinds_in_order, media, media.renditions)
            events = self.model.publish(session.id, source, teacher, shape.kinds)
        except BaseException:
            await close_quietly(session)
            raise
        self.publishers[session.id] = session
        self.upstreams.update(session.upstreams)
        self._apply(events)
        return session.id, self._advertised(answer)

    async def pull(self, origin: str, exchange: Exchange) -> str:
        """Take the lesson from its origin node (this node is an edge): `exchange(offer)`
        returns the origin's answer and the sources live there. The pull publishes them here,
        so classrooms of this node play them as they would a teacher's; it is never recorded
        here (the origin records). Returns the pull's session id."""
        media = self.services.media
        session = PullSession(
            self.name, new_session_id(), origin, "camera", self._on_dead, self.services.sockets
        )
        rungs = RungPulls(lambda rung: self._pull_rung(origin, exchange, rung, rungs))
        try:
            offer = await session.offer(media, media.renditions, rungs)
            answer, live = await exchange(offer, None)
            await session.accept(answer)
            events = self.model.publish(session.id, "camera", origin, PullSession.CAMERA_KINDS)
        except BaseException:
            await close_quietly(session)
            raise
        self.publishers[session.id] = session
        self.upstreams.update(session.upstreams)
        self._apply(events)
        self.pulled_sources(session.id, live)
        return session.id

    async def _pull_rung(
        self, origin: str, exchange: Exchange, rung: str, rungs: RungPulls
    ) -> RungPullSession:
        """One rendition rung from the origin, for this edge's classrooms on it."""
        session = RungPullSession(
            self.name,
            new_session_id(),
            origin,
            "camera",
            lambda _: rungs.lost(rung),
            self.services.sockets,
        )
        try:
            offer = await session.offer(self.services.media, (), None)
            answer, _ = await exchange(offer, rung)
            await session.accept(answer)
        except BaseException:
            await close_quietly(session)
            raise
        return session

    def pulled_sources(self, session_id: str, live: Collection[str]) -> None:
        """The origin's screen share started or ended: publish or end it here too (the
        pull carries it on its second video track all along)."""
        session = self.publishers.get(session_id)
        if not isinstance(session, PullSession):
            return
        screen_id = PullSession.screen_session(session_id)
        current = self.model.publishers.get("screen")
        if "screen" in live and current is None:
            feed = FeedKey("screen", "video")
            self.upstreams[feed] = session.upstreams[feed]
            self._apply(self.model.publish(screen_id, "screen", session.name, frozenset({"video"})))
        elif "screen" not in live and current is not None and current.session == screen_id:
            self._apply(self.model.unpublish(screen_id))

    @property
    def pulling(self) -> bool:
        """The lesson comes from another node (this node is an edge of the room)."""
        return any(isinstance(p, PullSession) for p in self.publishers.values())

    @property
    def watched(self) -> bool:
        """Classrooms of this node play the room (other nodes' pulls do not count)."""
        return any(not p.node for p in self.players.values())

    @property
    def teaching(self) -> bool:
        """A teacher publishes here (this node is the room's origin)."""
        return any(not isinstance(p, PullSession) for p in self.publishers.values())

    async def play(
        self,
        classroom: str,
        offer: str,
        shape: OfferShape,
        cap: str | None = None,
        node: bool = False,
    ) -> tuple[str, str]:
        """Start a classroom playback, its video at most at layer `cap`; returns (session id,
        SDP answer). Another node's pull (`node`) always gets the source: it makes its own
        renditions for its classrooms."""
        session = PlaySession(
            self.name, new_session_id(), classroom, self._on_dead, self.services.sockets
        )
        session.node = node
        media = self.services.media
        # another node pulls the source (its lesson), or one rung it takes from us (`cap`)
        renditions = () if node and cap is None else media.renditions
        try:
            # slots in m-line order; a video slot's index counts video m-lines only
            slots: tuple[SlotKey, ...] = model.classroom_slots(session.id, shape.kinds_in_order)
            answer = await session.start(offer, slots, media, renditions, cap)
            events = self.model.join(session.id, classroom, shape.kinds_in_order)
        except BaseException:
            await close_quietly(session)
            raise
        self.players[session.id] = session
        self._apply(events)
        return session.id, self._advertised(answer)

    def _advertised(self, answer: str) -> str:
        """The answer with the relay's public address, when it is behind 1:1 NAT."""
        ice = self.services.ice
        return advertise(answer, ice.public_ip, ice.keep_private_ip)

    async def end(self, session_id: str) -> None:
        """End a publication or playback by id; 404 if unknown."""
        session: Session | None = self.publishers.get(session_id)
        if session is not None:
            self.pulled_sources(session_id, ())  # a pull's screen ends with it
            del self.publishers[session_id]
            self._apply(self.model.unpublish(session_id))
        else:
            session = self.players.pop(session_id, None)
            if session is None:
                raise NotFound(f"no session {session_id!r} in room {self.name!r}")
            self._qoe.pop(session_id, None)
            self._apply(self.model.leave(session_id))
        self.book.forget(session_id)
        await close_quietly(session)
        self._release_if_idle()

    def admit(self, session_id: str, kind: str, owner: str) -> Ticket:
        """Record who created a new session; from now on the sweep watches its liveness."""
        session = self.session(session_id)
        heard = hooks.watch_inbound(session.pc, self.services.clock)
        return self.book.admit(session_id, kind, owner, self.services.clock(), heard)

    def sweep(self, now: float) -> None:
        """End sessions that never connected in time, and peers that went silent."""
        limits = self.services.limits
        for session_id, ticket in self.book.items():
            session = self.publishers.get(session_id) or self.players.get(session_id)
            if session is None:
                continue
            connected = session.pc.connectionState == "connected"
            life = Liveness(ticket.created, connected, ticket.heard.at)
            reason = expired(now, life, limits.setup_seconds, limits.silence_seconds)
            if reason is not None:
                logger.info(
                    "room %s: ending %s session %s (%s)", self.name, ticket.kind, session_id, reason
                )
                metrics.count_session_expired(ticket.kind, reason)
                self._on_dead(session_id)

    def session(self, session_id: str) -> Session:
        """A live session by id; 404 if unknown."""
        session = self.publishers.get(session_id) or self.players.get(session_id)
        if session is None:
            raise NotFound(f"no session {session_id!r} in room {self.name!r}")
        return session

    async def close(self) -> None:
        """End every session and close the lesson now (shutdown)."""
        for session_id in [*self.publishers, *self.players]:
            await self.end(session_id)
        self._close_lesson()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # what pages report

    def set_lesson(self, lesson: Lesson) -> None:
        """The teacher described the lesson (title, subject, grade, school)."""
        self.lesson = lesson

    def report_uplink(self, stats: Mapping[str, float]) -> None:
        """The teacher page's measurement of its own uplink."""
        self.uplink = dict(stats)

    def report_qoe(self, session_id: str, classroom: str, stats: Mapping[str, float]) -> None:
        """A classroom page's report about its own session, never another school's."""
        player = self.players.get(session_id)
        if player is None or player.name != classroom:
            raise BadRequest(
                f"no session {session_id!r} of classroom {classroom!r} in room {self.name!r}"
            )
        self._qoe[session_id] = dict(stats)

    # reading

    def snapshot(self, now: float) -> RoomSnapshot:
        """The room as metrics, pages, the admin API and the quality history see it."""
        sources = tuple(
            SourceView(p.source, p.teacher, tuple(sorted(p.kinds)), self._bitrate(p.source))
            for p in self.model.publishers.values()
        )
        return RoomSnapshot(
            room=self.name,
            live=self.model.live,
            lesson=self.lesson,
            sources=sources,
            classrooms=tuple(self._classrooms(now)),
            publishers=len(self.publishers),
            uplink=dict(self.uplink),
            recording=self._recording_state(),
        )

    def _recording_state(self) -> Recording:
        recording = self._recording
        if recording is None or not self.services.records(self.name):
            return Recording("off")
        problem = recording.problem
        return Recording("failing", problem) if problem else Recording("on")

    def _classrooms(self, now: float) -> Iterator[ClassroomView]:
        seen: set[str] = set()
        for session_id, player in self.players.items():
            if player.node:  # another node's pull: its classrooms are listed by that node
                continue
            # two connections with one name (a reloaded page) must not share a label set
            label = player.name if player.name not in seen else f"{player.name} ({session_id[:6]})"
            seen.add(label)
            rate = player.rate
            link = rate.view(now) if rate is not None else None
            yield ClassroomView(
                session=session_id,
                name=player.name,
                label=label,
                state=player.pc.connectionState,
                layers=dict(link.layers) if link else {},
                estimate=link.estimate if link else 0.0,
                sent=link.sent if link else 0.0,
                loss=link.loss if link else 0.0,
                rtt=link.rtt if link else 0.0,
                jitter=rate.jitter if rate else 0.0,
                nacks=rate.nacks if rate else 0,
                plis=sum(t.plis for t in player.tracks.values()),
                qoe=dict(self._qoe.get(session_id, {})),
            )

    def _bitrate(self, source: str) -> int:
        """Bits per second the teacher sends on one source, all its tracks together."""
        return sum(u.bitrate for key, u in self.upstreams.items() if key.source == source)

    def sample_quality(self, now: float) -> None:
        """One quality sample of every connected classroom while a lesson is live."""
        if self._recording is None or self._grace is not None:
            return
        for classroom in self.snapshot(now).classrooms:
            if classroom.connected:
                sample = QualitySample(
                    estimate=classroom.estimate,
                    loss=classroom.loss,
                    layer=classroom.main_layer,
                    freeze_seconds=classroom.qoe.get("totalFreezesDuration", 0.0),
                )
                self._quality.add(classroom.name, sample)

    # lesson lifecycle

    def _lesson_started(self, teacher: str) -> None:
        """The first source went live: a new lesson, or the same one after a reconnect."""
        if self._grace is not None:
            self._grace.cancel()
            self._grace = None
        if self._recording is None:
            # an edge keeps its classrooms' quality history; the origin records the media
            records = self.services.records(self.name) and not self.pulling
            self._recording = self.services.recorder.open(
                self.name, teacher, records, self.services.clock()
            )
            self._quality = LessonQuality()

    def _source_started(self, event: model.SourceStarted) -> None:
        """Subscribe the recording to the new source's tracks, starting at a keyframe."""
        if self._recording is None:
            return
        for kind in event.kinds:
            upstream = self.upstreams.get(FeedKey(event.source, kind))
            writer = self._recording.track(event.source, kind)
            if upstream is not None and writer is not None:
                upstream.subscribe(writer)
                upstream.request_keyframe()

    def _lesson_ended(self) -> None:
        """The last source ended: keep the lesson open for a reconnecting teacher."""
        loop = asyncio.get_running_loop()
        self._grace = loop.call_later(self.services.recording.reconnect_grace, self._grace_over)

    def _grace_over(self) -> None:
        self._grace = None
        self._close_lesson()
        self._release_if_idle()

    def _close_lesson(self) -> None:
        """The lesson is over: its recording and quality history go to the library."""
        if self._grace is not None:
            self._grace.cancel()
            self._grace = None
        recording, self._recording = self._recording, None
        if recording is not None:
            recording.finish(asdict(self.lesson), self._quality.summary())

    # internals

    async def _evict_stale(self, source: str) -> None:
        """Free the source if its publisher is dead or silent; else 409."""
        current = self.model.publishers.get(source)
        if current is None:
            return
        session = self.publishers[current.session]
        if isinstance(session, PullSession):  # the teacher moved here: this node is the origin
            logger.info("room %s: a teacher publishes here, ending the pull", self.name)
            await self.end(session.id)
            return
        silent_for = self.services.clock() - session.last_sign_of_life()
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

    def _release_if_idle(self) -> None:
        if self.idle:
            self._on_idle(self.name)

    def _apply(self, events: list[Event]) -> None:
        """Act on the model's events, then tell the listeners."""
        for event in events:
            self._act(event)
            for listener in self.services.listeners:
                listener(event)

    def _act(self, event: Event) -> None:
        if isinstance(event, FeedAssigned):
            player = self.players.get(event.slot.session)
            if player is not None:
                player.assign(event.slot, self.upstreams.get(event.feed) if event.feed else None)
        elif isinstance(event, model.SourceStarted):
            self._lesson_started(event.teacher)
            self._source_started(event)
        elif isinstance(event, model.SourceEnded):
            for kind in model.KINDS:
                self.upstreams.pop(FeedKey(event.source, kind), None)
        elif isinstance(event, model.LessonEnded):
            self._lesson_ended()
