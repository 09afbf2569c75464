"""The room model: who publishes what, who watches, and which feed each down track carries.

Pure: methods check the invariants, change the graph and return events; the runtime applies
the events to aiortc objects. Nothing here knows about sockets, tasks or clocks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from relay.core.errors import BadRequest, Conflict, NotFound

SOURCES = ("camera", "screen")
KINDS = ("audio", "video")
MAX_VIDEO_SLOTS = 2


@dataclass(frozen=True, slots=True)
class FeedKey:
    """One upstream track of a room: a source and a kind, e.g. camera video."""

    source: str
    kind: str


@dataclass(frozen=True, slots=True)
class SlotKey:
    """One down track of a classroom: audio, or a video slot whose index is its position among
    the offer's video m-lines (0 the camera slot, 1 the screen slot), wherever audio sits."""

    session: str
    kind: str
    index: int = 0


@dataclass(frozen=True, slots=True)
class LessonStarted:
    room: str


@dataclass(frozen=True, slots=True)
class LessonEnded:
    room: str


@dataclass(frozen=True, slots=True)
class SourceStarted:
    room: str
    source: str
    session: str
    teacher: str
    kinds: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SourceEnded:
    room: str
    source: str
    session: str


@dataclass(frozen=True, slots=True)
class ClassroomJoined:
    room: str
    session: str
    name: str


@dataclass(frozen=True, slots=True)
class ClassroomLeft:
    room: str
    session: str
    name: str


@dataclass(frozen=True, slots=True)
class FeedAssigned:
    """A down track should now carry `feed` (None: nothing) from its next keyframe on."""

    slot: SlotKey
    feed: FeedKey | None


Event = (
    LessonStarted
    | LessonEnded
    | SourceStarted
    | SourceEnded
    | ClassroomJoined
    | ClassroomLeft
    | FeedAssigned
)


@dataclass(slots=True)
class Publisher:
    session: str
    source: str
    teacher: str
    kinds: frozenset[str]


@dataclass(slots=True)
class Classroom:
    session: str
    name: str
    slots: tuple[SlotKey, ...]


@dataclass(slots=True)
class Room:
    """One live lesson: at most one publisher per source, any number of classrooms."""

    name: str
    publishers: dict[str, Publisher] = field(default_factory=dict)
    classrooms: dict[str, Classroom] = field(default_factory=dict)
    assignments: dict[SlotKey, FeedKey] = field(default_factory=dict)

    @property
    def live(self) -> bool:
        """A lesson is live while any source is published."""
        return bool(self.publishers)

    def feeds(self) -> frozenset[FeedKey]:
        """Upstream tracks currently published."""
        return frozenset(FeedKey(p.source, k) for p in self.publishers.values() for k in p.kinds)

    def publish(
        self, session: str, source: str, teacher: str, kinds: frozenset[str]
    ) -> list[Event]:
        """Add a publisher; 409 if the source is taken (the runtime evicts dead ones first)."""
        if source not in SOURCES:
            raise BadRequest(f"unknown source {source!r}: use camera or screen")
        if not kinds or not kinds <= set(KINDS):
            raise BadRequest("a publication needs audio and/or video")
        if source in self.publishers:
            raise Conflict(f"room {self.name!r} already has a live {source} publisher")
        events: list[Event] = [] if self.live else [LessonStarted(self.name)]
        self.publishers[source] = Publisher(session, source, teacher, kinds)
        events.append(SourceStarted(self.name, source, session, teacher, tuple(sorted(kinds))))
        return events + self._reassign()

    def unpublish(self, session: str) -> list[Event]:
        """Remove a publisher by session id; 404 if unknown."""
        publisher = self.publisher_by_session(session)
        del self.publishers[publisher.source]
        events: list[Event] = [SourceEnded(self.name, publisher.source, session)]
        events += self._reassign()
        if not self.live:
            events.append(LessonEnded(self.name))
        return events

    def publisher_by_session(self, session: str) -> Publisher:
        """The publisher with that session id, or 404."""
        for publisher in self.publishers.values():
            if publisher.session == session:
                return publisher
        raise NotFound(f"no publish session {session!r} in room {self.name!r}")

    def join(self, session: str, name: str, kinds: tuple[str, ...]) -> list[Event]:
        """Add a classroom with one down track per m-line kind; it may join before the lesson."""
        slots = classroom_slots(session, kinds)
        self.classrooms[session] = Classroom(session, name, slots)
        return [ClassroomJoined(self.name, session, name), *self._reassign()]

    def leave(self, session: str) -> list[Event]:
        """Remove a classroom by session id; 404 if unknown."""
        classroom = self.classrooms.pop(session, None)
        if classroom is None:
            raise NotFound(f"no play session {session!r} in room {self.name!r}")
        for slot in classroom.slots:
            self.assignments.pop(slot, None)
        return [ClassroomLeft(self.name, session, classroom.name)]

    def _reassign(self) -> list[Event]:
        """Recompute every down track's feed and report the ones that changed."""
        live = self.feeds()
        events: list[Event] = []
        for classroom in self.classrooms.values():
            video_slots = sum(1 for s in classroom.slots if s.kind == "video")
            for slot in classroom.slots:
                feed = choose_feed(slot, video_slots, live)
                if self.assignments.get(slot) != feed:
                    events.append(FeedAssigned(slot, feed))
                    if feed is None:
                        self.assignments.pop(slot, None)
                    else:
                        self.assignments[slot] = feed
        return events


def classroom_slots(session: str, kinds: tuple[str, ...]) -> tuple[SlotKey, ...]:
    """A classroom's down tracks in m-line order, each indexed among the m-lines of its kind."""
    if not kinds or not set(kinds) <= set(KINDS):
        raise BadRequest("a classroom needs audio and/or video m-lines, nothing else")
    if kinds.count("audio") > 1:
        raise BadRequest("at most one audio m-line is supported")
    if kinds.count("video") > MAX_VIDEO_SLOTS:
        raise BadRequest(f"at most {MAX_VIDEO_SLOTS} video m-lines are supported")
    return tuple(SlotKey(session, kind, kinds[:i].count(kind)) for i, kind in enumerate(kinds))


def choose_feed(slot: SlotKey, video_slots: int, live: frozenset[FeedKey]) -> FeedKey | None:
    """Which upstream track a down track carries, by the rules classrooms rely on.

    Audio: the camera's microphone, else the screen share's audio. One video slot: the screen
    share while one is live (slides matter more than the teacher's face), else the camera.
    Two video slots: camera on the first, screen share on the second.
    """
    if slot.kind == "audio":
        preference = [FeedKey("camera", "audio"), FeedKey("screen", "audio")]
    elif video_slots == 1:
        preference = [FeedKey("screen", "video"), FeedKey("camera", "video")]
    else:
        preference = [FeedKey(SOURCES[slot.index], "video")]
    return next((feed for feed in preference if feed in live), None)
